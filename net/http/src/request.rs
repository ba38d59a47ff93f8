//! Request heads (RFC 9112 §2–§3, §5, §6): parsing with `httparse` into what the answer needs — method and
//! target for the handler, body framing, persistence, `Expect: 100-continue` — or the [`Error`] that refuses it.

use crate::chunked::ChunkedDecoder;
use crate::config::{Config, MAX_HEADER_FIELDS};
use crate::error::Error;
use crate::handler::Request;
use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

/// What the connection says about persistence in a response (RFC 9112 §9.3, §9.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Persistence {
    /// HTTP/1.1 default: no `Connection` field.
    KeepAlive,
    /// HTTP/1.0 client asked for `keep-alive`: say `Connection: keep-alive`.
    KeepAlive10,
    /// Last response on this connection: say `Connection: close`.
    Close,
}

/// The answer chosen for a parsed request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// `OPTIONS *`: server-wide capabilities (RFC 9110 §9.3.7).
    Options,
    /// Any path: the app's [`crate::Handler`] answers.
    App(Box<AppHead>),
}

/// The parts of a request head a [`crate::Handler`] sees, kept until the body has been read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AppHead {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    /// Header fields in the order received: name as sent, raw value.
    pub(crate) headers: Vec<(String, Vec<u8>)>,
}

impl AppHead {
    pub(crate) fn request<'a>(&'a self, body: &'a [u8]) -> Request<'a> {
        Request { method: &self.method, path: &self.path, query: self.query.as_deref(), headers: &self.headers, body }
    }
}

/// Message body framing of a request (RFC 9112 §6.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BodyFraming {
    /// `remaining` body bytes follow (Content-Length).
    Length { remaining: u64 },
    /// Chunked transfer coding (RFC 9112 §7.1).
    Chunked(ChunkedDecoder),
}

impl BodyFraming {
    /// Takes body bytes from `input`, handing the content (chunk data, without framing) to `sink`; returns bytes
    /// taken and whether the body is complete.
    pub(crate) fn consume(
        &mut self,
        input: &[u8],
        config: &Config,
        sink: impl FnMut(&[u8]),
    ) -> Result<(usize, bool), Error> {
        match self {
            BodyFraming::Length { remaining } => {
                let mut sink = sink;
                let n = usize::try_from(*remaining).map_or(input.len(), |r| r.min(input.len()));
                *remaining -= n as u64;
                sink(&input[..n]);
                Ok((n, *remaining == 0))
            }
            BodyFraming::Chunked(decoder) => decoder.consume(input, config, sink),
        }
    }
}

/// A parsed request head, reduced to what the answer needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Head {
    /// The method was HEAD: answer without content (RFC 9110 §9.3.2).
    pub(crate) head_only: bool,
    pub(crate) persistence: Persistence,
    /// `None`: no body (RFC 9112 §6.3 item 7).
    pub(crate) body: Option<BodyFraming>,
    /// Send `100 Continue` before reading the body (RFC 9110 §10.1.1).
    pub(crate) expect_continue: bool,
    pub(crate) reply: Reply,
}

/// A request refused while parsing its head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub(crate) error: Error,
    /// The method was HEAD, so the error response carries no content.
    pub(crate) head_only: bool,
}

impl From<Error> for Rejection {
    fn from(error: Error) -> Self {
        Rejection { error, head_only: false }
    }
}

/// Methods defined by RFC 9110 §9 and PATCH (RFC 5789): known, so the handler answers them (405 where a route
/// lacks them) rather than 501.
fn known_method(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "CONNECT" | "OPTIONS" | "TRACE" | "PATCH")
}

/// Splits a header field value into its comma-separated list elements, trimmed, empty ones dropped
/// (RFC 9110 §5.6.1).
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(|e| e.trim_ascii()).filter(|e| !e.is_empty())
}

/// Parses the request head at the start of `buf`. `Ok(None)`: incomplete, wait for more bytes.
/// `Ok(Some((len, request)))`: the head is `buf[..len]`.
pub(crate) fn parse_request(buf: &[u8], config: &Config) -> Result<Option<(usize, Head)>, Rejection> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADER_FIELDS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Error::TooManyHeaderFields { limit: MAX_HEADER_FIELDS }.into());
        }
        Err(httparse::Error::Version) if names_other_version(buf) => return Err(Error::UnsupportedVersion.into()),
        Err(e) => return Err(Error::Syntax(e).into()),
    };
    // httparse fills method, path and version before it reports Complete; the fallback is never taken.
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(Error::Syntax(httparse::Error::Token).into());
    };
    let head_only = method == "HEAD";
    let reject = |error| Rejection { error, head_only };
    if !known_method(method) {
        return Err(reject(Error::UnknownMethod));
    }
    let http10 = minor == 0;

    let mut hosts = 0usize;
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut chunked_count = 0usize;
    let mut chunked_last = false;
    let mut other_coding = false;
    let mut close = false;
    let mut keep_alive = false;
    let mut expect_continue = false;
    for field in req.headers.iter() {
        let name = field.name;
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("content-length") {
            // RFC 9110 §8.6: a list of identical values may be accepted as that value; anything else is invalid.
            let mut any = false;
            for element in field.value.split(|&b| b == b',').map(|e| e.trim_ascii()) {
                let value = parse_decimal(element).ok_or(reject(Error::InvalidContentLength))?;
                if content_length.is_some_and(|previous| previous != value) {
                    return Err(reject(Error::ConflictingContentLength));
                }
                content_length = Some(value);
                any = true;
            }
            if !any {
                return Err(reject(Error::InvalidContentLength));
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            for element in list_elements(field.value) {
                let coding = element.split(|&b| b == b';').next().unwrap_or(element).trim_ascii();
                chunked_last = coding.eq_ignore_ascii_case(b"chunked");
                if chunked_last {
                    chunked_count += 1;
                } else {
                    other_coding = true;
                }
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for option in list_elements(field.value) {
                close |= option.eq_ignore_ascii_case(b"close");
                keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("expect") {
            if field.value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                // RFC 9110 §10.1.1: an HTTP/1.0 client cannot handle 100 Continue.
                expect_continue = !http10;
            } else {
                return Err(reject(Error::UnsupportedExpectation));
            }
        }
    }

    if hosts > 1 {
        return Err(reject(Error::DuplicateHost));
    }
    if hosts == 0 && !http10 {
        return Err(reject(Error::MissingHost));
    }
    let body = if transfer_encoding {
        if http10 {
            return Err(reject(Error::TransferEncodingInHttp10));
        }
        if content_length.is_some() {
            return Err(reject(Error::ContentLengthWithTransferEncoding));
        }
        if !chunked_last || chunked_count != 1 {
            return Err(reject(Error::ChunkedNotFinal));
        }
        if other_coding {
            return Err(reject(Error::UnsupportedTransferCoding));
        }
        Some(BodyFraming::Chunked(ChunkedDecoder::new()))
    } else {
        match content_length {
            Some(n) if n > config.max_body_bytes => {
                return Err(reject(Error::BodyTooLarge { limit: config.max_body_bytes }));
            }
            Some(0) | None => None,
            Some(n) => Some(BodyFraming::Length { remaining: n }),
        }
    };

    let mut reply = choose_reply(method, target).map_err(reject)?;
    if let Reply::App(app) = &mut reply {
        app.headers = req.headers.iter().map(|field| (String::from(field.name), field.value.to_vec())).collect();
    }
    let persistence = if close || (http10 && !keep_alive) {
        Persistence::Close
    } else if http10 {
        Persistence::KeepAlive10
    } else {
        Persistence::KeepAlive
    };
    let expect_continue = expect_continue && body.is_some();
    Ok(Some((len, Head { head_only, persistence, body, expect_continue, reply })))
}

/// `1*DIGIT` as a number; values beyond u64 saturate (they are far over any limit). `None` if not digits.
pub(crate) fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |n, &d| n.saturating_mul(10).saturating_add(u64::from(d - b'0'))))
}

/// True if the request-line's HTTP-version (what follows its second space, RFC 9112 §3) reads `HTTP/<digit>` with
/// a major version other than 1, so httparse's version error means 505 rather than 400 (RFC 9110 §6.2). Only the
/// bytes up to the one httparse stopped at decide, so the answer does not depend on how much of the line has
/// arrived (the version token, not the line's last word: a line without CRLF yet may hold more words).
fn names_other_version(buf: &[u8]) -> bool {
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(buf.len());
    let line = buf[start..].split(|&b| b == b'\r' || b == b'\n').next().unwrap_or_default();
    let version = line.splitn(3, |&b| b == b' ').nth(2).unwrap_or_default();
    matches!(version, [b'H', b'T', b'T', b'P', b'/', major, ..] if major.is_ascii_digit() && *major != b'1')
}

/// The error for a request head that did not end within `limit` bytes: 414 while the request-line is still
/// open, else 431.
pub(crate) fn oversized_head(buf: &[u8], limit: usize) -> Error {
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(buf.len());
    if buf[start..].contains(&b'\n') {
        Error::HeaderSectionTooLarge { limit }
    } else {
        Error::RequestLineTooLong { limit }
    }
}

/// Splits a request-target (RFC 9112 §3.2) into its path and query. origin-form is taken as it is; for
/// absolute-form (RFC 9112 §3.2.2, which a server MUST accept) the path after the authority, `/` when empty.
/// Errors: [`Error::InvalidTarget`] for anything else (authority-form, `*`, ...).
fn split_target(target: &str) -> Result<(&str, Option<&str>), Error> {
    let origin = if target.starts_with('/') {
        target
    } else {
        let bytes = target.as_bytes();
        let scheme_len = if bytes.len() >= 7 && bytes[..7].eq_ignore_ascii_case(b"http://") {
            7
        } else if bytes.len() >= 8 && bytes[..8].eq_ignore_ascii_case(b"https://") {
            8
        } else {
            return Err(Error::InvalidTarget);
        };
        let rest = &target[scheme_len..];
        match rest.find(['/', '?']) {
            Some(i) => &rest[i..],
            None => "/",
        }
    };
    Ok(match origin.split_once('?') {
        Some(("", query)) => ("/", Some(query)),
        Some((path, query)) => (path, Some(query)),
        None => (origin, None),
    })
}

/// Routes the request-target (RFC 9112 §3.2) for `method`: `OPTIONS *` is the connection's own, every path goes
/// to the handler ([`Reply::App`]).
fn choose_reply(method: &str, target: &str) -> Result<Reply, Error> {
    if target == "*" {
        return if method == "OPTIONS" { Ok(Reply::Options) } else { Err(Error::InvalidTarget) };
    }
    let (path, query) = split_target(target)?;
    Ok(Reply::App(Box::new(AppHead {
        method: String::from(method),
        path: String::from(path),
        query: query.map(String::from),
        headers: Vec::new(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_error, exchange, feed, get, parse_responses, pattern, run_with};
    use alloc::format;
    use alloc::vec::Vec;

    #[test]
    fn garbage_is_400() {
        assert_error(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, Error::Syntax(httparse::Error::Token));
        assert_error(b"hello there\r\n\r\n", 400, Error::Syntax(httparse::Error::Token));
    }

    #[test]
    fn bad_request_line_is_400() {
        let token = Error::Syntax(httparse::Error::Token);
        assert_error(b"GET\r\nHost: x\r\n\r\n", 400, token);
        assert_error(b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400, token);
        assert_error(b"GET / HTTP/1.1 x\r\nHost: x\r\n\r\n", 400, Error::Syntax(httparse::Error::NewLine));
        assert_error(b"GET / FTP/1.1\r\nHost: x\r\n\r\n", 400, Error::Syntax(httparse::Error::Version));
        assert_error(b"GET / HTTP/1.x\r\nHost: x\r\n\r\n", 400, Error::Syntax(httparse::Error::Version));
        assert_error(b"GET /\r\n\r\n", 400, token);
        assert_error(b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400, token);
    }

    #[test]
    fn bad_header_name_is_400() {
        let name = Error::Syntax(httparse::Error::HeaderName);
        assert_error(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n", 400, name);
        assert_error(b"GET / HTTP/1.1\r\nHost: x\r\nBad(: y\r\n\r\n", 400, name);
        assert_error(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400, name);
        // obs-fold (RFC 9112 §5.2): rejected.
        assert_error(b"GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n c\r\n\r\n", 400, name);
        assert_error(
            b"GET / HTTP/1.1\r\nHost: x\r\nA: b\x01\r\n\r\n",
            400,
            Error::Syntax(httparse::Error::HeaderValue),
        );
    }

    #[test]
    fn unsupported_version_is_505() {
        assert_error(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, Error::UnsupportedVersion);
        assert_error(b"GET / HTTP/3", 505, Error::UnsupportedVersion);
        // Found by the http_connection fuzz target: a version token that is not HTTP/<digit> is 400 even when a
        // later word of a line without CRLF looks like one, so the answer does not depend on the segmentation.
        let input = b"PbTPAA HACPOST HO,STARangQ\x0eHost:o HTTP/0.\xf0";
        assert_error(input, 400, Error::Syntax(httparse::Error::Version));
        assert_eq!(run_with(&Config::default(), input, &[1], 7), feed(input), "byte by byte");
    }

    #[test]
    fn host_is_required_once_in_http11() {
        assert_error(b"GET / HTTP/1.1\r\n\r\n", 400, Error::MissingHost);
        assert_error(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 400, Error::DuplicateHost);
        let run = feed(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(parse_responses(&run.out, &[])[0].status, 200);
    }

    #[test]
    fn content_length_must_be_one_number() {
        let with = |fields: &str| format!("GET / HTTP/1.1\r\nHost: x\r\n{fields}\r\n\r\nabcde");
        assert_error(with("Content-Length: 5\r\nContent-Length: 6").as_bytes(), 400, Error::ConflictingContentLength);
        assert_error(with("Content-Length: 5, 6").as_bytes(), 400, Error::ConflictingContentLength);
        for bad in
            ["Content-Length: +5", "Content-Length: -1", "Content-Length: 5a", "Content-Length:", "Content-Length: 5,"]
        {
            assert_error(with(bad).as_bytes(), 400, Error::InvalidContentLength);
        }
        // Identical repeats are one value (RFC 9110 §8.6); the body is consumed and the connection stays open.
        for same in ["Content-Length: 5\r\nContent-Length: 5", "Content-Length: 5, 5"] {
            let input = format!("{}{}", with(same), get("/bytes/2"));
            let run = feed(input.as_bytes());
            let statuses: Vec<u16> = parse_responses(&run.out, &[]).iter().map(|r| r.status).collect();
            assert_eq!(statuses, [200, 200], "{same}");
            assert!(!run.closed);
        }
    }

    #[test]
    fn content_length_with_transfer_encoding_is_400() {
        let input = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_error(input, 400, Error::ContentLengthWithTransferEncoding);
        let input = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n";
        assert_error(input, 400, Error::ContentLengthWithTransferEncoding);
    }

    #[test]
    fn transfer_encoding_rules() {
        let with =
            |version: &str, te: &str| format!("POST / HTTP/{version}\r\nHost: x\r\nTransfer-Encoding: {te}\r\n\r\n");
        assert_error(with("1.0", "chunked").as_bytes(), 400, Error::TransferEncodingInHttp10);
        assert_error(with("1.1", "gzip").as_bytes(), 400, Error::ChunkedNotFinal);
        assert_error(with("1.1", "chunked, gzip").as_bytes(), 400, Error::ChunkedNotFinal);
        assert_error(with("1.1", "chunked, chunked").as_bytes(), 400, Error::ChunkedNotFinal);
        assert_error(with("1.1", "").as_bytes(), 400, Error::ChunkedNotFinal);
        assert_error(with("1.1", "gzip, chunked").as_bytes(), 501, Error::UnsupportedTransferCoding);
    }

    #[test]
    fn huge_headers_are_431() {
        let limit = Config::DEFAULT.max_header_bytes;
        let mut input = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        while input.len() <= limit {
            input.extend_from_slice(
                b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            );
        }
        // Not yet past 32 fields, so the byte limit is what trips.
        let mut few = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        few.resize(limit + 10, b'a');
        assert_error(&few, 431, Error::HeaderSectionTooLarge { limit });
        assert_error(&input, 431, Error::TooManyHeaderFields { limit: MAX_HEADER_FIELDS });
        // A head of exactly the limit is accepted; one byte more is not.
        let mut exact = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
        exact.resize(limit - 4, b'p');
        exact.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse_responses(&feed(&exact).out, &[])[0].status, 200);
        let mut over = exact[..exact.len() - 4].to_vec();
        over.extend_from_slice(b"p\r\n\r\n");
        assert_error(&over, 431, Error::HeaderSectionTooLarge { limit });
    }

    #[test]
    fn too_many_header_fields_is_431() {
        let mut input = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..MAX_HEADER_FIELDS {
            input.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        input.extend_from_slice(b"\r\n");
        assert_error(&input, 431, Error::TooManyHeaderFields { limit: MAX_HEADER_FIELDS });
    }

    #[test]
    fn long_request_line_is_414() {
        let limit = 100;
        let config = Config { max_header_bytes: limit, ..Config::default() };
        let input = get(&format!("/{}", "a".repeat(200)));
        let run = run_with(&config, input.as_bytes(), &[usize::MAX], 64);
        assert_eq!(parse_responses(&run.out, &[])[0].status, 414);
        assert_eq!(run.errors, vec![Error::RequestLineTooLong { limit }]);
        assert_eq!(run_with(&config, input.as_bytes(), &[1], 64), run);
    }

    #[test]
    fn huge_body_is_413_before_reading_it() {
        let limit = Config::DEFAULT.max_body_bytes;
        let input = format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", limit + 1);
        assert_error(input.as_bytes(), 413, Error::BodyTooLarge { limit });
        let input = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n";
        assert_error(input.as_bytes(), 413, Error::BodyTooLarge { limit });
        // Chunked: the size line that crosses the limit is refused.
        let config = Config { max_body_bytes: 10, ..Config::default() };
        let input = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n";
        let run = run_with(&config, input, &[usize::MAX], 64);
        assert_eq!(parse_responses(&run.out, &[])[0].status, 413);
        assert_eq!(run.errors, vec![Error::BodyTooLarge { limit: 10 }]);
    }

    #[test]
    fn unknown_method_is_501() {
        assert_error(b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n", 501, Error::UnknownMethod);
        assert_error(b"get / HTTP/1.1\r\nHost: x\r\n\r\n", 501, Error::UnknownMethod);
    }

    #[test]
    fn targets_route_by_path() {
        let (responses, _) = exchange(&get("/health?verbose=1"));
        assert!(responses[0].text().contains(r#""status":"ok""#));
        let (responses, _) = exchange("GET http://example.com/bytes/3 HTTP/1.1\r\nHost: example.com\r\n\r\n");
        assert_eq!(responses[0].body, pattern(3));
        let (responses, _) = exchange("GET HTTPS://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n");
        assert!(responses[0].text().contains("<title>Zirvium</title>"));
        let (responses, _) = exchange("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((responses[0].status, responses[0].header("allow")), (200, Some("GET, HEAD")));
        assert_error(b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400, Error::InvalidTarget);
        assert_error(b"CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n", 400, Error::InvalidTarget);
    }

    #[test]
    fn leading_empty_lines_are_ignored() {
        let (responses, _) = exchange(&format!("\r\n\r\n{}", get("/bytes/1")));
        assert_eq!(responses[0].body, pattern(1));
    }
}
