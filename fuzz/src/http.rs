//! The HTTP side of the fuzz targets: a handler with every kind of answer (the demo routes, an echo app, early
//! answers, closing answers, streamed content and static files with byte ranges over an in-memory tree), a
//! driver that feeds a [`Connection`] the way `server::serve_connection` does while checking its contract, and
//! a checker that the output is a well-formed sequence of HTTP/1.1 responses.

use std::collections::HashSet;
use zirvium_http::demo::{Context, Demo};
use zirvium_http::files::{self, FileReader, FileTree, Node, StaticFiles};
use zirvium_http::Status;
use zirvium_http::{fuzzing, Config, Connection, Content, Error, Handler, Request, Response, Source, SourceError};

/// Largest `/bytes/N` and `/stream/N` served, bytes (keeps runs fast).
pub const MAX_STREAM: u64 = 64 * 1024;

struct MemReader {
    data: &'static [u8],
    pos: usize,
}

impl FileReader for MemReader {
    fn seek(&mut self, offset: u64) -> Result<(), SourceError> {
        self.pos = usize::try_from(offset).unwrap_or(usize::MAX).min(self.data.len());
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, SourceError> {
        let n = buf.len().min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A small read-only site; `open` asserts the path contract of [`FileTree::open`] (normalised, absolute).
pub struct MemTree;

const FILES: [(&str, &[u8]); 5] = [
    ("/index.html", b"<p>index</p>\n"),
    ("/a.txt", b"0123456789abcdefghijklmnopqrstuvwxyz"),
    ("/docs/index.html", b"<p>docs</p>\n"),
    ("/docs/empty.bin", b""),
    ("/secret/key", b"hidden"),
];

impl FileTree for MemTree {
    fn open(&self, path: &str) -> Result<Node, files::Error> {
        assert!(path.starts_with('/'), "FileTree::open got a relative path {path:?}");
        assert!(
            path == "/" || !path[1..].split('/').any(|c| c.is_empty() || c == "." || c == ".."),
            "FileTree::open got a path that is not normalised: {path:?}"
        );
        if let Some((_, data)) = FILES.iter().find(|(p, _)| *p == path) {
            return Ok(Node::File { len: data.len() as u64, reader: Box::new(MemReader { data, pos: 0 }) });
        }
        let prefix = if path == "/" { String::from("/") } else { format!("{path}/") };
        if FILES.iter().any(|(p, _)| p.starts_with(&prefix)) {
            Ok(Node::Dir)
        } else {
            Err(files::Error::NotFound)
        }
    }
}

/// `/stream/N` content: byte i is `i as u8`.
struct Counter(u64);

impl Source for Counter {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, SourceError> {
        for b in buf.iter_mut() {
            *b = self.0 as u8;
            self.0 += 1;
        }
        Ok(buf.len())
    }
}

/// The app behind the demo routes: `/echo` (the body back, 201), `/early` (400 from the head), `/after` (403
/// after the body), `/close` (200 that closes), `/empty` (204), `/stream/N` (N streamed bytes), `/bad` (an
/// invalid header the connection must turn into 500); anything else is a static file.
pub struct FuzzApp {
    files: StaticFiles<MemTree>,
}

impl Handler for FuzzApp {
    fn check(&self, request: &Request<'_>) -> Option<Response> {
        assert!(request.body.is_empty(), "check sees no body");
        match request.path {
            "/early" => Some(Response::text(Status::BAD_REQUEST, "refused early\n")),
            "/after" => Some(Response::text(Status::FORBIDDEN, "refused after the body\n").after_body()),
            "/close" => Some(Response::text(Status::OK, "bye\n").closing()),
            _ => None,
        }
    }

    fn respond(&self, request: &Request<'_>) -> Response {
        if let Some(n) = request.path.strip_prefix("/stream/") {
            let len = n.parse::<u64>().unwrap_or(0).min(MAX_STREAM);
            return Response::new(
                Status::OK,
                "application/octet-stream",
                Content::Stream { len, source: Box::new(Counter(0)) },
            );
        }
        match request.path {
            "/echo" => Response::new(Status::CREATED, "application/x-echo", Content::Bytes(request.body.to_vec()))
                .with_header("X-Method", request.method)
                .with_header("X-Query", request.query.unwrap_or("")),
            "/empty" => Response::empty(Status::NO_CONTENT),
            "/bad" => Response::text(Status::OK, "x").with_header("X-Bad", String::from_utf8_lossy(request.body)),
            _ => self.files.serve(request),
        }
    }
}

fn context() -> Context<'static> {
    Context { platform: "fuzz", uptime_ms: 1, connections: 1, memory: Default::default() }
}

/// A fresh handler: the demo routes in front of [`FuzzApp`], fixed context values.
pub fn handler() -> Demo<FuzzApp> {
    let files = StaticFiles::new(MemTree).hide("/secret");
    Demo::new("fuzz <&>", FuzzApp { files }).with_context(context).with_max_bytes_response(MAX_STREAM)
}

/// What one connection produced for a whole input.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Run {
    pub out: Vec<u8>,
    pub requests: u64,
    pub errors: Vec<Error>,
    pub closed: bool,
}

fn drain(conn: &mut Connection<'_>, buf: &mut [u8], out: &mut Vec<u8>) {
    loop {
        let n = conn.poll_output(buf);
        assert!(n <= buf.len(), "poll_output wrote {n} bytes into a {}-byte buffer", buf.len());
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert!(!conn.has_output(), "poll_output returned 0 with output queued");
}

/// Feeds `input` in pieces of `piece()` bytes as the server's driver does, draining output through an
/// `out_len`-byte buffer after every call, then the end of the stream; checks the contract on the way.
pub fn run(config: &Config, input: &[u8], mut piece: impl FnMut() -> usize, out_len: usize) -> Run {
    let handler = handler();
    let mut conn = Connection::with_handler(config, &handler);
    let mut run = Run::default();
    let mut buf = vec![0u8; out_len.max(1)];
    let mut pos = 0;
    while pos < input.len() && !conn.wants_close() {
        let n = piece().clamp(1, input.len() - pos);
        let chunk = &input[pos..pos + n];
        pos += n;
        let mut off = 0;
        while off < chunk.len() {
            let r = conn.receive(&chunk[off..]);
            assert!(r.consumed <= chunk.len() - off, "receive took more than it was given");
            assert!(r.consumed > 0, "receive took nothing with an empty output queue");
            off += r.consumed;
            run.requests += r.requests;
            run.errors.extend(r.error);
            let (buffered, limit) = fuzzing::buffered_head(&conn);
            assert!(buffered < limit, "buffered {buffered} head bytes, limit {limit}");
            drain(&mut conn, &mut buf, &mut run.out);
            if conn.wants_close() {
                break;
            }
        }
    }
    conn.receive_eof();
    drain(&mut conn, &mut buf, &mut run.out);
    run.closed = conn.wants_close();
    assert!(conn.take_content_error().is_none(), "the fuzz app's content never fails");
    run
}

/// One parsed response head.
struct Head {
    status: u16,
    len: usize,
    content_length: Option<usize>,
    close: bool,
}

/// Parses and checks the response head at the start of `out`; `Err` says what is wrong with it.
fn parse_head(out: &[u8]) -> Result<Head, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    let len = match parsed.parse(out) {
        Ok(httparse::Status::Complete(len)) => len,
        other => return Err(format!("bad response head {other:?}")),
    };
    if parsed.version != Some(1) {
        return Err(String::from("not HTTP/1.1"));
    }
    let status = parsed.code.unwrap_or(0);
    let field = |name: &str| parsed.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
    if status >= 200 && field("server") != Some(&b"zirvium"[..]) {
        return Err(format!("status {status} without Server: zirvium"));
    }
    let content_length = match field("content-length") {
        None => None,
        Some(v) => Some(
            std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or_else(|| String::from("Content-Length is not a number"))?,
        ),
    };
    let bodiless = status < 200 || status == 204 || status == 304;
    if content_length.is_none() != bodiless || field("content-type").is_none() != bodiless {
        return Err(format!("status {status}: Content-Length/Content-Type must be there exactly when content may be"));
    }
    if field("transfer-encoding").is_some() {
        return Err(String::from("a chunked response"));
    }
    let close = field("connection").is_some_and(|v| v.eq_ignore_ascii_case(b"close"));
    Ok(Head { status, len, content_length, close })
}

/// Checks that `out` is a sequence of well-formed responses with `finals` final (status >= 200) ones, nothing
/// after one that says `Connection: close`, and the last saying it when `must_close`. A response to HEAD
/// carries no content although its `Content-Length` says how much GET would, so each response's content is
/// either its `Content-Length` or nothing; every reading that fits is tried.
pub fn check_responses(out: &[u8], finals: u64, must_close: bool) {
    // Depth-first over (position, finals so far, last final said close); each state is visited once.
    let mut seen = HashSet::new();
    let mut stack = vec![(0usize, 0u64, false)];
    let mut problem = String::from("no response");
    while let Some((pos, count, closed)) = stack.pop() {
        if !seen.insert((pos, count, closed)) {
            continue;
        }
        if pos == out.len() {
            if count == finals && (closed || !must_close) {
                return;
            }
            problem = format!("{count} final responses, close {closed}");
            continue;
        }
        if closed {
            problem = String::from("a response after Connection: close");
            continue;
        }
        let head = match parse_head(&out[pos..]) {
            Ok(head) => head,
            Err(e) => {
                problem = format!("at byte {pos}: {e}");
                continue;
            }
        };
        let start = pos + head.len;
        let (count, closed) = if head.status >= 200 { (count + 1, head.close) } else { (count, closed) };
        let fits = |at: usize| at == out.len() || (at < out.len() && out[at..].starts_with(b"HTTP/1.1 "));
        if let Some(len) = head.content_length {
            if start.checked_add(len).is_some_and(fits) {
                stack.push((start + len, count, closed));
            }
        }
        if fits(start) {
            stack.push((start, count, closed));
        }
    }
    panic!(
        "output is not {finals} well-formed responses{} ({problem}): {:?}",
        if must_close { " ending with Connection: close" } else { "" },
        String::from_utf8_lossy(&out[..out.len().min(2000)])
    );
}
