//! The demo routes every Zirvium HTTP appliance serves, as a [`Handler`] in front of the app's own: `/` (an HTML
//! page with the root message and the platform), `/health` (JSON: uptime, platform, requests, connections) and
//! `/bytes/N` (N bytes where byte i is `(i % 251) as u8`, a prime period so that shifted or dropped bytes show
//! up, produced while it is written).
//!
//! The routes answer GET and HEAD from the request head; other methods are 405 with `Allow: GET, HEAD`. A body
//! sent with them is read and dropped (after `100 Continue` when the client asks for it). `/bytes/N` with N not
//! a decimal number, or above [`Demo::with_max_bytes_response`]'s limit (64 MiB by default), is 400 naming the
//! limit, and the connection closes. The query string is ignored. Every other path goes to the fallback handler
//! (`httpd`: static files; `kv`: `/kv/<key>`; [`NotFound`] for none).

use crate::handler::{Handler, Request};
use crate::response::{Content, Response, Source, SourceError};
use crate::status::Status;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use core::fmt::{self, Write as _};
use core::sync::atomic::{AtomicU64, Ordering};

/// Methods the demo routes support, as sent in `Allow` (RFC 9110 §10.2.1).
const ALLOW: &str = "GET, HEAD";

/// Largest N `/bytes/N` serves by default, bytes (64 MiB).
pub const DEFAULT_MAX_BYTES_RESPONSE: u64 = 64 * 1024 * 1024;

/// Period of the `/bytes/N` pattern: byte i of the content is `(i % PATTERN_PERIOD) as u8`.
const PATTERN_PERIOD: usize = 251;

/// One period of the `/bytes/N` pattern, copied into output buffers.
const PATTERN: [u8; PATTERN_PERIOD] = {
    let mut table = [0u8; PATTERN_PERIOD];
    let mut i = 0;
    while i < PATTERN_PERIOD {
        table[i] = i as u8;
        i += 1;
    }
    table
};

/// What `/` and `/health` show about the server besides the root message and the request count; read at every
/// request from [`Demo::with_context`]'s function.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// Platform name shown on `/` and in `/health`, e.g. `"kvm"` (from the boot log's `platform:` line).
    pub platform: &'a str,
    /// Time since boot, milliseconds, reported by `/health`.
    pub uptime_ms: u64,
    /// Connections open now (including the asking one), reported by `/health`.
    pub connections: u64,
    /// The guest's memory figures (total, free, ballooned), reported by `/health`.
    pub memory: libos::mem::balloon::MemStats,
}

/// Why `/bytes/N` is refused: 400, and the connection closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BytesError {
    /// N is not a decimal number of bytes that fits in 64 bits.
    InvalidLength {
        /// The largest N served ([`Demo::with_max_bytes_response`]), bytes.
        max: u64,
    },
    /// N is above `max`.
    LengthTooLarge {
        /// N from the request-target, bytes.
        requested: u64,
        /// The largest N served ([`Demo::with_max_bytes_response`]), bytes.
        max: u64,
    },
}

impl fmt::Display for BytesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BytesError::InvalidLength { max } => {
                write!(f, "/bytes/N needs N as a decimal number of bytes from 0 to {max}, e.g. /bytes/1024")
            }
            BytesError::LengthTooLarge { requested, max } => {
                write!(f, "/bytes/{requested} asks for more than the maximum of {max} bytes (max_bytes_response)")
            }
        }
    }
}

/// The demo routes in front of `fallback`, which answers every other path. One value serves all connections:
/// it counts the requests they answer for `/health` through [`Handler::answered`].
pub struct Demo<H> {
    /// Shown on `/` (HTML-escaped).
    message: String,
    /// Largest N of `/bytes/N`, bytes.
    max_bytes_response: u64,
    /// Reads what `/` and `/health` show.
    context: fn() -> Context<'static>,
    /// Final responses queued so far, all connections (including error responses).
    requests: AtomicU64,
    fallback: H,
}

impl<H: Handler> Demo<H> {
    /// The demo routes with `message` on `/`, then `fallback`. The context is the server's
    /// ([`crate::server::context`]: platform, uptime, open connections); `/bytes/N` serves up to
    /// [`DEFAULT_MAX_BYTES_RESPONSE`].
    pub fn new(message: impl Into<String>, fallback: H) -> Demo<H> {
        Demo {
            message: message.into(),
            max_bytes_response: DEFAULT_MAX_BYTES_RESPONSE,
            context: crate::server::context,
            requests: AtomicU64::new(0),
            fallback,
        }
    }

    /// Reads what `/` and `/health` show from `context` instead (tests, a server with its own counters).
    pub fn with_context(mut self, context: fn() -> Context<'static>) -> Demo<H> {
        self.context = context;
        self
    }

    /// Serves `/bytes/N` up to `max` bytes; more is 400 naming the limit.
    pub fn with_max_bytes_response(mut self, max: u64) -> Demo<H> {
        self.max_bytes_response = max;
        self
    }

    /// The handler behind the demo routes.
    pub fn fallback(&self) -> &H {
        &self.fallback
    }

    /// The answer for a demo route, from the head alone; `None` for other paths.
    fn route(&self, request: &Request<'_>) -> Option<Response> {
        let length = match request.path {
            "/" | "/health" => None,
            path => Some(path.strip_prefix("/bytes/")?),
        };
        if request.method != "GET" && request.method != "HEAD" {
            let text = "method not allowed: this resource supports GET and HEAD\n";
            return Some(Response::text(Status::METHOD_NOT_ALLOWED, text).with_header("Allow", ALLOW).after_body());
        }
        let response = match length {
            None if request.path == "/" => {
                Response::new(Status::OK, "text/html; charset=utf-8", root_page(&self.message, &(self.context)()))
            }
            // This request is answered after those counted so far.
            None => {
                let requests = self.requests.load(Ordering::Relaxed).saturating_add(1);
                Response::new(Status::OK, "application/json", health_json(&(self.context)(), requests))
            }
            Some(length) => match self.bytes_length(length) {
                Ok(len) => {
                    let content = Content::Stream { len, source: Box::new(Pattern { offset: 0 }) };
                    Response::new(Status::OK, "application/octet-stream", content)
                }
                Err(e) => return Some(Response::text(Status::BAD_REQUEST, format!("{e}\n")).closing()),
            },
        };
        Some(response.after_body())
    }

    /// N of `/bytes/N`. Errors: [`BytesError`].
    fn bytes_length(&self, n: &str) -> Result<u64, BytesError> {
        let max = self.max_bytes_response;
        let requested = crate::request::parse_decimal(n.as_bytes())
            .filter(|&n| n != u64::MAX)
            .ok_or(BytesError::InvalidLength { max })?;
        if requested > max {
            return Err(BytesError::LengthTooLarge { requested, max });
        }
        Ok(requested)
    }
}

impl<H: Handler> Handler for Demo<H> {
    /// The demo routes answer from the head; other paths are the fallback's.
    fn check(&self, request: &Request<'_>) -> Option<Response> {
        self.route(request).or_else(|| self.fallback.check(request))
    }

    fn respond(&self, request: &Request<'_>) -> Response {
        self.route(request).unwrap_or_else(|| self.fallback.respond(request))
    }

    fn answered(&self, status: Status) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.fallback.answered(status);
    }
}

/// The fallback of a [`Demo`] without routes of its own: every other path is 404 naming the demo routes.
#[derive(Clone, Copy, Debug, Default)]
pub struct NotFound;

impl Handler for NotFound {
    /// Answers from the head; a body is read and dropped.
    fn check(&self, request: &Request<'_>) -> Option<Response> {
        Some(self.respond(request))
    }

    fn respond(&self, _request: &Request<'_>) -> Response {
        Response::text(Status::NOT_FOUND, "not found: the routes are /, /health and /bytes/N\n").after_body()
    }
}

/// The `/bytes/N` content: byte i is `(i % 251) as u8`, generated on the fly.
struct Pattern {
    offset: u64,
}

impl Source for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, SourceError> {
        fill_pattern(buf, self.offset);
        self.offset += buf.len() as u64;
        Ok(buf.len())
    }
}

/// Fills `out` with the `/bytes/N` pattern starting at content offset `offset`: byte i is `(i % 251) as u8`.
pub(crate) fn fill_pattern(out: &mut [u8], offset: u64) {
    let mut start = (offset % PATTERN_PERIOD as u64) as usize;
    for piece in out.chunks_mut(PATTERN_PERIOD) {
        // Each piece is at most one period long: copy the tail of the period, then wrap to its head.
        let first = piece.len().min(PATTERN_PERIOD - start);
        piece[..first].copy_from_slice(&PATTERN[start..start + first]);
        let rest = piece.len() - first;
        piece[first..].copy_from_slice(&PATTERN[..rest]);
        start = (start + piece.len()) % PATTERN_PERIOD;
    }
}

/// The `/` page: title "Zirvium", the root message and the platform, HTML-escaped.
fn root_page(message: &str, ctx: &Context<'_>) -> Content {
    let mut page = String::with_capacity(256 + message.len());
    page.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>Zirvium</title></head>\n");
    page.push_str("<body>\n<h1>Zirvium</h1>\n<p>");
    push_html_escaped(&mut page, message);
    page.push_str("</p>\n<p>Platform: ");
    push_html_escaped(&mut page, ctx.platform);
    page.push_str("</p>\n</body>\n</html>\n");
    Content::Bytes(page.into_bytes())
}

/// The `/health` document: `{"status":"ok","uptime_ms":N,"platform":"kvm","requests":N,"connections":N,
/// "memory":{"total_bytes":N,"free_bytes":N,"ballooned_bytes":N}}` (memory as [`libos::mem::balloon::MemStats`]).
fn health_json(ctx: &Context<'_>, requests: u64) -> Content {
    let mut json = String::with_capacity(192);
    json.push_str("{\"status\":\"ok\",\"uptime_ms\":");
    // fmt::Write for String never fails.
    let _ = write!(json, "{}", ctx.uptime_ms);
    json.push_str(",\"platform\":");
    push_json_string(&mut json, ctx.platform);
    let _ = write!(json, ",\"requests\":{requests},\"connections\":{}", ctx.connections);
    let m = &ctx.memory;
    let _ = write!(
        json,
        ",\"memory\":{{\"total_bytes\":{},\"free_bytes\":{},\"ballooned_bytes\":{}}}}}",
        m.total_bytes, m.free_bytes, m.ballooned_bytes
    );
    Content::Bytes(json.into_bytes())
}

/// Appends `text` with `& < > " '` escaped for HTML text and attribute values.
fn push_html_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
}

/// Appends `text` as a JSON string literal (RFC 8259 §7).
fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            _ => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{
        app_exchange, drain, exchange, feed, get, parse_responses, pattern, run_handler, run_with, test_context,
        test_demo, TestApp, MESSAGE,
    };
    use crate::{Config, Connection};
    use alloc::string::ToString;
    use alloc::vec;
    use alloc::vec::Vec;

    /// Asserts that `input` to `handler` gets one 400 naming `error` that closes the connection: byte for byte
    /// what the connection sends for its own request errors.
    fn assert_bytes_error(handler: &dyn Handler, input: &[u8], error: BytesError) {
        let run = run_handler(handler, &Config::default(), input, &[usize::MAX], 4096);
        let responses = parse_responses(&run.out, &[]);
        assert_eq!(responses.len(), 1, "{:?}", String::from_utf8_lossy(&run.out));
        assert_eq!(responses[0].status, 400, "{}", responses[0].text());
        assert_eq!(responses[0].header("connection"), Some("close"));
        let text = format!("{error}\n");
        assert_eq!(responses[0].text(), text);
        let head = "HTTP/1.1 400 Bad Request\r\nServer: zirvium\r\nContent-Type: text/plain; charset=utf-8\r\n";
        let expected = format!("{head}Content-Length: {}\r\nConnection: close\r\n\r\n{text}", text.len());
        assert_eq!(String::from_utf8_lossy(&run.out), expected);
        assert_eq!(run.requests, 1);
        assert!(run.closed);
    }

    #[test]
    fn bytes_errors_name_the_limit() {
        let errors = [BytesError::InvalidLength { max: 1 }, BytesError::LengthTooLarge { requested: 2, max: 1 }];
        for error in errors {
            assert!(error.to_string().len() > 10, "{error:?}");
            assert!(error.to_string().contains(" 1 ") || error.to_string().contains("to 1,"), "{error}");
        }
    }

    #[test]
    fn root_page_shows_title_message_and_platform() {
        let (responses, run) = exchange(&get("/"));
        assert_eq!(responses.len(), 1);
        let page = &responses[0];
        assert_eq!(page.status, 200);
        assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
        assert!(page.text().contains("<title>Zirvium</title>"));
        assert!(page.text().contains("Hello &lt;from&gt; Zirvium &amp; friends"));
        assert!(page.text().contains("Platform: kvm"));
        assert_eq!(page.header("connection"), None);
        assert!(!run.closed);
        assert_eq!(run.requests, 1);
    }

    #[test]
    fn health_reports_context_values() {
        let (responses, _) = exchange(&get("/health"));
        assert_eq!(responses[0].status, 200);
        assert_eq!(responses[0].header("content-type"), Some("application/json"));
        assert_eq!(
            responses[0].text(),
            concat!(
                r#"{"status":"ok","uptime_ms":1234,"platform":"kvm","requests":1,"connections":7,"#,
                r#""memory":{"total_bytes":134217728,"free_bytes":100663296,"ballooned_bytes":33554432}}"#
            )
        );
    }

    #[test]
    fn health_counts_itself_and_earlier_pipelined_requests() {
        let input = format!("{}{}{}", get("/"), get("/nope"), get("/health"));
        let demo = test_demo();
        let mut conn = Connection::with_handler(&Config::default(), &demo);
        demo.requests.store(40, Ordering::Relaxed);
        let r = conn.receive(input.as_bytes());
        assert_eq!(r.requests, 3);
        let mut out = Vec::new();
        drain(&mut conn, &mut [0u8; 512], &mut out);
        let responses = parse_responses(&out, &[]);
        assert!(responses[2].text().contains(r#""requests":43,"#), "{}", responses[2].text());
    }

    #[test]
    fn health_escapes_platform_as_json() {
        let demo = Demo::new(MESSAGE, NotFound).with_context(|| Context { platform: "a\"b\\c\n", ..test_context() });
        let mut conn = Connection::with_handler(&Config::default(), &demo);
        conn.receive(get("/health").as_bytes());
        let mut out = Vec::new();
        drain(&mut conn, &mut [0u8; 512], &mut out);
        let responses = parse_responses(&out, &[]);
        assert!(responses[0].text().contains(r#""platform":"a\"b\\c\u000a","#), "{}", responses[0].text());
    }

    #[test]
    fn bytes_content_is_the_pattern_byte_for_byte() {
        for n in [0usize, 1, 250, 251, 252, 1_000_000] {
            let input = get(&format!("/bytes/{n}"));
            for out_len in [7, 4096] {
                let run = run_with(&Config::default(), input.as_bytes(), &[usize::MAX], out_len);
                let responses = parse_responses(&run.out, &[]);
                assert_eq!(responses.len(), 1);
                assert_eq!(responses[0].status, 200);
                assert_eq!(responses[0].header("content-type"), Some("application/octet-stream"));
                assert_eq!(responses[0].header("content-length"), Some(n.to_string().as_str()));
                assert!(responses[0].body == pattern(n), "pattern mismatch for n={n} out_len={out_len}");
            }
        }
    }

    #[test]
    fn fill_pattern_matches_formula_at_any_offset() {
        for offset in [0u64, 1, 250, 251, 502, 1_000_003, u64::MAX - 600] {
            for len in [0usize, 1, 250, 251, 252, 600] {
                let mut buf = vec![0u8; len];
                fill_pattern(&mut buf, offset);
                let expected: Vec<u8> = (0..len as u64).map(|i| ((offset + i) % 251) as u8).collect();
                assert_eq!(buf, expected, "offset {offset} len {len}");
            }
        }
    }

    #[test]
    fn large_bytes_response_is_streamed_not_materialised() {
        let n = DEFAULT_MAX_BYTES_RESPONSE;
        let demo = test_demo();
        let mut conn = Connection::with_handler(&Config::default(), &demo);
        conn.receive(get(&format!("/bytes/{n}")).as_bytes());
        let queued = conn.front_output().expect("response queued");
        assert!(queued.data.len() < 256, "head only in memory, got {} bytes", queued.data.len());
        assert_eq!(queued.stream.as_ref().map(|s| s.len), Some(n));
        let mut buf = vec![0u8; 16 * 1024];
        let mut head = Vec::new();
        let mut offset = 0u64;
        loop {
            let got = conn.poll_output(&mut buf);
            if got == 0 {
                break;
            }
            let mut chunk = &buf[..got];
            if !head.ends_with(b"\r\n\r\n") {
                let end = chunk.windows(4).position(|w| w == b"\r\n\r\n").expect("head fits the first buffer") + 4;
                head.extend_from_slice(&chunk[..end]);
                chunk = &chunk[end..];
            }
            for (i, &b) in chunk.iter().enumerate() {
                assert_eq!(b, ((offset + i as u64) % 251) as u8);
            }
            offset += chunk.len() as u64;
        }
        assert_eq!(offset, n);
        assert!(String::from_utf8_lossy(&head).contains(&format!("Content-Length: {n}\r\n")));
        assert!(conn.is_idle());
    }

    #[test]
    fn bytes_limit_is_configurable() {
        let demo = test_demo().with_max_bytes_response(1000);
        let config = Config::default();
        let ok = run_handler(&demo, &config, get("/bytes/1000").as_bytes(), &[usize::MAX], 64);
        assert_eq!(parse_responses(&ok.out, &[])[0].body, pattern(1000));
        let run = run_handler(&demo, &config, get("/bytes/1001").as_bytes(), &[usize::MAX], 64);
        let responses = parse_responses(&run.out, &[]);
        assert_eq!(responses[0].status, 400);
        assert!(responses[0].text().contains("1000"), "message names the limit: {}", responses[0].text());
        assert_bytes_error(
            &demo,
            get("/bytes/1001").as_bytes(),
            BytesError::LengthTooLarge { requested: 1001, max: 1000 },
        );
    }

    #[test]
    fn bytes_above_default_max_is_400() {
        let n = DEFAULT_MAX_BYTES_RESPONSE + 1;
        let max = DEFAULT_MAX_BYTES_RESPONSE;
        assert_bytes_error(
            &test_demo(),
            get(&format!("/bytes/{n}")).as_bytes(),
            BytesError::LengthTooLarge { requested: n, max },
        );
    }

    #[test]
    fn bytes_with_non_numeric_length_is_400() {
        let max = DEFAULT_MAX_BYTES_RESPONSE;
        for path in ["/bytes/abc", "/bytes/", "/bytes/-1", "/bytes/+1", "/bytes/1x", "/bytes/1/2", "/bytes/%31"] {
            assert_bytes_error(&test_demo(), get(path).as_bytes(), BytesError::InvalidLength { max });
        }
        assert_bytes_error(
            &test_demo(),
            get("/bytes/99999999999999999999999").as_bytes(),
            BytesError::InvalidLength { max },
        );
        // Answered from the head: a body announced after it is never waited for, nor 100 Continue sent.
        let input = b"GET /bytes/x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
        assert_bytes_error(&test_demo(), input, BytesError::InvalidLength { max });
        let input = b"GET /bytes/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n";
        assert_bytes_error(&test_demo(), input, BytesError::InvalidLength { max });
    }

    #[test]
    fn head_error_response_has_no_content() {
        let run = feed(b"HEAD /bytes/x HTTP/1.1\r\nHost: test\r\n\r\n");
        let responses = parse_responses(&run.out, &[true]);
        assert_eq!(responses.len(), 1);
        assert_eq!(responses[0].status, 400);
        assert!(responses[0].body.is_empty());
        assert!(run.out.ends_with(b"\r\n\r\n"));
    }

    #[test]
    fn other_methods_on_known_routes_are_405_with_allow() {
        for (method, path) in
            [("POST", "/"), ("PUT", "/health"), ("DELETE", "/bytes/5"), ("OPTIONS", "/"), ("PATCH", "/bytes/x")]
        {
            let run = feed(format!("{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
            let responses = parse_responses(&run.out, &[]);
            assert_eq!(responses[0].status, 405, "{method} {path}");
            assert_eq!(responses[0].header("allow"), Some("GET, HEAD"));
            assert!(!run.closed, "405 keeps the connection");
        }
    }

    #[test]
    fn unknown_path_is_404() {
        for path in ["/nope", "/health/", "/bytes", "/index.html", "//"] {
            let (responses, run) = exchange(&get(path));
            assert_eq!(responses[0].status, 404, "{path}");
            assert!(!run.closed);
        }
        let (responses, _) = exchange("POST /nope HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(responses[0].status, 404);
    }

    #[test]
    fn built_in_routes_win_over_the_handler() {
        let app = TestApp::default();
        let input = format!("{}{}{}POST / HTTP/1.1\r\nHost: x\r\n\r\n", get("/"), get("/health"), get("/bytes/3"));
        let (responses, _) = app_exchange(&app, input.as_bytes());
        assert_eq!(responses.iter().map(|r| r.status).collect::<Vec<_>>(), [200, 200, 200, 405]);
        assert_eq!(responses[2].body, pattern(3));
        assert!(app.seen.lock().unwrap().is_empty());
        assert_eq!(app.checks.load(Ordering::Relaxed), 0);
        // Other paths go to the handler, including ones that only look like built-in routes.
        for path in ["/nope", "/health/", "/bytes", "//"] {
            let (responses, _) = app_exchange(&app, get(path).as_bytes());
            assert_eq!((responses[0].status, responses[0].text()), (404, "no such thing\n"), "{path}");
        }
    }
}
