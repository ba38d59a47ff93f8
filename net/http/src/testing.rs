//! Test helpers shared by the modules' tests: drive a connection as the server does, parse its output, a demo
//! handler with fixed context values and a recording app handler.

use crate::demo::{fill_pattern, Context, Demo, NotFound};
use crate::{Config, Connection, Content, Error, Handler, Request, Source, SourceError, Status};
use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The root page's message in the tests (HTML-escaped on `/`).
pub(crate) const MESSAGE: &str = "Hello <from> Zirvium & friends";

/// The context values `/` and `/health` show in the tests.
pub(crate) fn test_context() -> Context<'static> {
    let memory = libos::mem::balloon::MemStats {
        total_bytes: 128 << 20,
        free_bytes: 96 << 20,
        ballooned_bytes: 32 << 20,
        floor_bytes: 16 << 20,
    };
    Context { platform: "kvm", uptime_ms: 1234, connections: 7, memory }
}

/// The demo routes with [`MESSAGE`] and [`test_context`], no other routes.
pub(crate) fn test_demo() -> Demo<NotFound> {
    Demo::new(MESSAGE, NotFound).with_context(test_context)
}

/// What one connection produced for a whole input.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) out: Vec<u8>,
    pub(crate) requests: u64,
    pub(crate) errors: Vec<Error>,
    pub(crate) closed: bool,
}

pub(crate) fn drain(conn: &mut Connection, buf: &mut [u8], out: &mut Vec<u8>) {
    loop {
        let n = conn.poll_output(buf);
        assert!(n <= buf.len(), "poll_output wrote {n} bytes into a {}-byte buffer", buf.len());
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert!(!conn.has_output());
}

/// Feeds `input` in the given piece sizes (cycled) like the glue does, draining output through an
/// `out_len`-byte buffer after every call, and checks the invariants on the way.
pub(crate) fn drive(conn: &mut Connection, input: &[u8], pieces: &[usize], out_len: usize, run: &mut Run) {
    let mut buf = vec![0u8; out_len];
    let mut pos = 0;
    let mut k = 0;
    while pos < input.len() {
        let piece = pieces[k % pieces.len()].max(1).min(input.len() - pos);
        k += 1;
        let chunk = &input[pos..pos + piece];
        pos += piece;
        let mut off = 0;
        while off < chunk.len() {
            let r = conn.receive(&chunk[off..]);
            assert!(r.consumed <= chunk.len() - off);
            // Output is always drained before the call, so the call must make progress.
            assert!(r.consumed > 0, "receive took nothing with an empty output queue");
            off += r.consumed;
            run.requests += r.requests;
            run.errors.extend(r.error);
            let (buffered, limit) = conn.buffered_head();
            assert!(buffered < limit);
            drain(conn, &mut buf, &mut run.out);
        }
    }
    run.closed = conn.wants_close();
}

/// [`drive`] on a new connection answered by `handler`.
pub(crate) fn run_handler(
    handler: &dyn Handler,
    config: &Config,
    input: &[u8],
    pieces: &[usize],
    out_len: usize,
) -> Run {
    let mut conn = Connection::with_handler(config, handler);
    let mut run = Run::default();
    drive(&mut conn, input, pieces, out_len, &mut run);
    run
}

/// [`drive`] on a new connection answered by a new [`demo`].
pub(crate) fn run_with(config: &Config, input: &[u8], pieces: &[usize], out_len: usize) -> Run {
    run_handler(&test_demo(), config, input, pieces, out_len)
}

pub(crate) fn feed(input: &[u8]) -> Run {
    run_with(&Config::default(), input, &[usize::MAX], 4096)
}

/// A response as the client parsed it.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Response {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub(crate) fn text(&self) -> &str {
        core::str::from_utf8(&self.body).expect("text body")
    }
}

/// Splits `out` into responses. `head[i]` says whether final response i answers HEAD (no content).
pub(crate) fn parse_responses(mut out: &[u8], head: &[bool]) -> Vec<Response> {
    let mut responses = Vec::new();
    while !out.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut parsed = httparse::Response::new(&mut headers);
        let len = match parsed.parse(out) {
            Ok(httparse::Status::Complete(len)) => len,
            other => panic!("bad response head {other:?}: {:?}", String::from_utf8_lossy(out)),
        };
        assert_eq!(parsed.version, Some(1), "responses are HTTP/1.1");
        let status = parsed.code.expect("status code");
        let headers: Vec<(String, String)> = parsed
            .headers
            .iter()
            .map(|h| (h.name.to_string(), String::from_utf8(h.value.to_vec()).expect("ascii field")))
            .collect();
        out = &out[len..];
        let mut response = Response { status, headers, body: Vec::new() };
        if status == 204 || status == 304 {
            assert_eq!(response.header("content-length"), None, "RFC 9110 §8.6: no Content-Length on {status}");
            assert_eq!(response.header("server"), Some("zirvium"));
        } else if status >= 200 {
            let length: usize = response.header("content-length").expect("Content-Length").parse().unwrap();
            let is_head = head.get(responses.iter().filter(|r: &&Response| r.status >= 200).count());
            if !is_head.copied().unwrap_or(false) {
                response.body = out[..length].to_vec();
                out = &out[length..];
            }
            assert_eq!(response.header("server"), Some("zirvium"));
            assert!(response.header("content-type").is_some());
        }
        responses.push(response);
    }
    responses
}

pub(crate) fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")
}

/// One request in, its responses out (no HEAD).
pub(crate) fn exchange(input: &str) -> (Vec<Response>, Run) {
    let run = feed(input.as_bytes());
    (parse_responses(&run.out, &[]), run)
}

/// Asserts a single error response with `status` that closes the connection.
pub(crate) fn assert_error(input: &[u8], status: u16, error: Error) {
    let run = feed(input);
    let responses = parse_responses(&run.out, &[]);
    assert_eq!(responses.len(), 1, "{:?}", String::from_utf8_lossy(&run.out));
    assert_eq!(responses[0].status, status, "{}", responses[0].text());
    assert_eq!(responses[0].header("connection"), Some("close"));
    assert_eq!(responses[0].text(), format!("{error}\n"));
    assert_eq!(run.errors, vec![error]);
    assert!(run.closed);
}

/// The `/bytes/N` content: byte i is `(i % 251) as u8`.
pub(crate) fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// xorshift64 (Marsaglia 2003): deterministic pseudo-random numbers for the fuzz tests.
pub(crate) struct XorShift(pub(crate) u64);

impl XorShift {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// What `respond` saw: method, path, query, header names, body.
pub(crate) type Seen = (String, String, Option<String>, Vec<String>, Vec<u8>);

/// A handler for the tests: records what it sees and answers by path.
#[derive(Default)]
pub(crate) struct TestApp {
    /// One entry per `respond` call.
    pub(crate) seen: Mutex<Vec<Seen>>,
    pub(crate) checks: AtomicUsize,
    /// Largest buffer a streamed source was asked to fill.
    pub(crate) largest_read: Arc<AtomicUsize>,
}

/// `/stream/N` content: the `/bytes/N` pattern, recording the largest read.
struct Counted {
    offset: u64,
    largest: Arc<AtomicUsize>,
}

impl Source for Counted {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, SourceError> {
        self.largest.fetch_max(buf.len(), Ordering::Relaxed);
        fill_pattern(buf, self.offset);
        self.offset += buf.len() as u64;
        Ok(buf.len())
    }
}

/// Gives `good` bytes of `b'x'`, then fails (or ends, with `fail: false`).
struct Breaks {
    good: usize,
    fail: bool,
}

impl Source for Breaks {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, SourceError> {
        if self.good == 0 {
            return if self.fail { Err(SourceError { detail: "disk on fire".into() }) } else { Ok(0) };
        }
        let n = buf.len().min(self.good);
        buf[..n].fill(b'x');
        self.good -= n;
        Ok(n)
    }
}

impl Handler for TestApp {
    fn check(&self, request: &Request<'_>) -> Option<crate::Response> {
        self.checks.fetch_add(1, Ordering::Relaxed);
        assert!(request.body.is_empty(), "check sees no body");
        (request.path == "/early").then(|| crate::Response::text(Status::BAD_REQUEST, "refused early\n"))
    }

    fn respond(&self, request: &Request<'_>) -> crate::Response {
        let names = request.headers.iter().map(|(n, _)| n.clone()).collect();
        self.seen.lock().unwrap().push((
            request.method.into(),
            request.path.into(),
            request.query.map(String::from),
            names,
            request.body.to_vec(),
        ));
        if let Some(n) = request.path.strip_prefix("/stream/") {
            let largest = self.largest_read.clone();
            let len = n.parse().unwrap();
            let source = Box::new(Counted { offset: 0, largest });
            return crate::Response::new(Status::OK, "application/octet-stream", Content::Stream { len, source });
        }
        match request.path {
            "/echo" => {
                crate::Response::new(Status::CREATED, "application/x-echo", Content::Bytes(request.body.to_vec()))
                    .with_header("X-Method", request.method)
                    .with_header("X-Host", String::from_utf8_lossy(request.header("host").unwrap_or(b"?")))
            }
            "/empty" => crate::Response::empty(Status::NO_CONTENT).with_header("X-Done", "yes"),
            "/storage" => crate::Response::text(Status::INSUFFICIENT_STORAGE, "full\n"),
            "/bad-value" => crate::Response::text(Status::OK, "x").with_header("X-Bad", "a\r\nInjected: yes"),
            "/bad-name" => crate::Response::text(Status::OK, "x").with_header("Bad Name", "v"),
            "/reserved" => crate::Response::text(Status::OK, "x").with_header("content-length", "1"),
            "/bad-type" => crate::Response::new(Status::OK, "text/html\n", Content::Bytes(Vec::new())),
            "/interim" => crate::Response::empty(Status::CONTINUE),
            "/fail" => crate::Response::new(
                Status::OK,
                "application/octet-stream",
                Content::Stream { len: 10_000, source: Box::new(Breaks { good: 3000, fail: true }) },
            ),
            "/short" => crate::Response::new(
                Status::OK,
                "application/octet-stream",
                Content::Stream { len: 100, source: Box::new(Breaks { good: 50, fail: false }) },
            ),
            _ => crate::Response::text(Status::NOT_FOUND, "no such thing\n"),
        }
    }
}

/// [`drive`] on a new connection answered by the demo routes in front of `app`, as httpd's handler stacks them.
pub(crate) fn run_app(app: &TestApp, config: &Config, input: &[u8], pieces: &[usize], out_len: usize) -> Run {
    let handler = Demo::new(MESSAGE, app).with_context(test_context);
    run_handler(&handler, config, input, pieces, out_len)
}

pub(crate) fn app_exchange(app: &TestApp, input: &[u8]) -> (Vec<Response>, Run) {
    let run = run_app(app, &Config::default(), input, &[usize::MAX], 4096);
    (parse_responses(&run.out, &[]), run)
}
