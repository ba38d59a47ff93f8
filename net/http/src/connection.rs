//! One HTTP/1.1 server connection, sans I/O ([`Connection`]): request heads and bodies in, responses out, in
//! order, with keep-alive and pipelining (RFC 9112 §9).

use crate::config::Config;
use crate::error::Error;
use crate::handler::Handler;
use crate::output::{ContentError, Output};
use crate::request::{oversized_head, parse_request, AppHead, BodyFraming, Head, Persistence, Reply};
use crate::response::{Content, TEXT};
use crate::status::Status;
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;

/// Methods `OPTIONS *` announces in `Allow` (RFC 9110 §9.3.7, §10.2.1).
const ALLOW_FIELD: [(&str, &str); 1] = [("Allow", "GET, HEAD")];

/// Result of one [`Connection::receive`] call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Bytes of the input taken, `<= data.len()`. Fewer than offered means the response queue is full
    /// ([`Config::max_pending_responses`]): write out [`Connection::poll_output`], then offer `data[consumed..]`
    /// again. Once all output is written the next call takes at least one byte.
    pub consumed: usize,
    /// Requests answered (final responses queued, error responses included) during this call.
    pub requests: u64,
    /// The request error this call answered with an error response, if any (for the log). The connection then
    /// closes once the response is written.
    pub error: Option<Error>,
}

/// What answers a request once its body has been read.
enum Pending<'h> {
    /// A response built from the head alone; the body is read and dropped.
    Ready(Output),
    /// `handler` answers once the body is buffered.
    App(Box<AppHead>, &'h dyn Handler),
}

impl fmt::Debug for Pending<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pending::Ready(output) => f.debug_tuple("Ready").field(output).finish(),
            Pending::App(app, _) => f.debug_tuple("App").field(app).finish(),
        }
    }
}

/// A request body being buffered for a [`Handler`], at most [`Config::max_body_bytes`] (the framing enforces
/// that). Allocation failure drops the buffer and answers 503 when the body ends: the server keeps serving.
#[derive(Debug, Default)]
struct BodyBuffer {
    data: Vec<u8>,
    out_of_memory: bool,
}

impl BodyBuffer {
    /// A buffer with room for `hint` bytes when the allocator has them.
    fn with_hint(hint: u64) -> BodyBuffer {
        let mut buffer = BodyBuffer::default();
        if let Ok(hint) = usize::try_from(hint) {
            buffer.out_of_memory = buffer.data.try_reserve_exact(hint).is_err();
        }
        buffer
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.out_of_memory {
            return;
        }
        if self.data.try_reserve(bytes.len()).is_err() {
            self.out_of_memory = true;
            self.data = Vec::new();
            return;
        }
        self.data.extend_from_slice(bytes);
    }
}

/// Where the connection is between requests.
#[derive(Debug)]
enum State<'h> {
    /// Waiting for (the rest of) a request head; a partial one sits in `Connection::input`.
    Head,
    /// Reading a request body: dropped for [`Pending::Ready`], buffered in `buffer` for [`Pending::App`].
    Body { framing: BodyFraming, pending: Pending<'h>, buffer: BodyBuffer, persistence: Persistence, head_only: bool },
    /// No more requests will be read; queued output is still written.
    Closed,
}

/// One HTTP/1.1 server connection, sans I/O (see the crate docs for the driving loop).
pub struct Connection<'h> {
    config: Config,
    state: State<'h>,
    /// A partial request head, `< config.max_header_bytes` bytes. Besides this only a [`Handler`]'s request
    /// body is ever buffered.
    input: Vec<u8>,
    /// Responses in the order their requests arrived (RFC 9112 §9.3.2).
    output: VecDeque<Output>,
    /// Answers every request but `OPTIONS *`.
    handler: &'h dyn Handler,
    /// Why streamed content stopped, until [`Connection::take_content_error`].
    content_error: Option<ContentError>,
}

impl fmt::Debug for Connection<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("config", &self.config)
            .field("state", &self.state)
            .field("input", &self.input.len())
            .field("output", &self.output)
            .finish_non_exhaustive()
    }
}

impl<'h> Connection<'h> {
    /// A new connection that waits for its first request; `handler` answers every request but `OPTIONS *`.
    /// `config`'s limits are copied; zero limits act as 1.
    pub fn with_handler(config: &Config, handler: &'h dyn Handler) -> Connection<'h> {
        let mut config = *config;
        config.max_header_bytes = config.max_header_bytes.max(1);
        config.max_pending_responses = config.max_pending_responses.max(1);
        Connection {
            config,
            state: State::Head,
            input: Vec::new(),
            output: VecDeque::new(),
            handler,
            content_error: None,
        }
    }

    /// Takes bytes received from the peer, parses the requests in them and queues their responses, in order.
    /// Returns how many bytes were taken (see [`Received::consumed`]: fewer than `data.len()` only when the
    /// response queue is full), how many requests were answered, and the error answered, if any. Protocol errors
    /// are answered with an error response, after which the connection closes ([`Connection::wants_close`]);
    /// bytes arriving after that are taken and dropped. The [`Handler`] is called from here.
    pub fn receive(&mut self, data: &[u8]) -> Received {
        let mut rx = Received::default();
        let limit = self.config.max_header_bytes;
        loop {
            let rest = &data[rx.consumed..];
            match &mut self.state {
                State::Closed => {
                    // RFC 9112 §9.6: nothing after the last request is read.
                    self.input.clear();
                    rx.consumed = data.len();
                    return rx;
                }
                _ if rest.is_empty() => return rx,
                State::Body { framing, pending, buffer, .. } => {
                    let keep = matches!(pending, Pending::App(..));
                    let sink = |bytes: &[u8]| {
                        if keep {
                            buffer.push(bytes)
                        }
                    };
                    match framing.consume(rest, &self.config, sink) {
                        Ok((n, done)) => {
                            rx.consumed += n;
                            if done {
                                self.finish_body(&mut rx);
                            }
                        }
                        Err(error) => {
                            let head_only = matches!(self.state, State::Body { head_only: true, .. });
                            self.fail(error, head_only, &mut rx);
                        }
                    }
                }
                State::Head => {
                    if self.output.len() >= self.config.max_pending_responses {
                        return rx;
                    }
                    // Parse straight from `data`; only a partial head is copied into `input`, so complete
                    // pipelined requests that cannot be taken yet stay with the caller.
                    let buffered = self.input.len();
                    let take = rest.len().min(limit.saturating_sub(buffered));
                    let parsed = if buffered == 0 {
                        parse_request(&rest[..take], &self.config)
                    } else {
                        self.input.extend_from_slice(&rest[..take]);
                        parse_request(&self.input, &self.config)
                    };
                    match parsed {
                        Ok(Some((len, head))) => {
                            // len > buffered: the buffered bytes alone were an incomplete head.
                            rx.consumed += len.saturating_sub(buffered);
                            self.input.clear();
                            self.start(head, &mut rx);
                        }
                        Ok(None) if buffered + take >= limit => {
                            let error = if buffered == 0 {
                                oversized_head(&rest[..take], limit)
                            } else {
                                oversized_head(&self.input, limit)
                            };
                            self.fail(error, false, &mut rx);
                        }
                        Ok(None) => {
                            if buffered == 0 {
                                self.input.extend_from_slice(&rest[..take]);
                            }
                            rx.consumed += take;
                        }
                        Err(rejection) => self.fail(rejection.error, rejection.head_only, &mut rx),
                    }
                }
            }
        }
    }

    /// Fills `buf` with the next response bytes to send; returns how many (`<= buf.len()`, 0 when nothing is
    /// queued). Responses follow one another without gaps; streamed content ([`Content::Stream`], `/bytes/N`)
    /// is read here, a buffer at a time. If a [`crate::Source`] fails, what it produced so far is returned, the
    /// rest of the queue is dropped and the connection closes: the client sees a response shorter than its
    /// `Content-Length` ([`Connection::take_content_error`] says why).
    pub fn poll_output(&mut self, buf: &mut [u8]) -> usize {
        let mut written = 0;
        while written < buf.len() {
            let Some(front) = self.output.front_mut() else { break };
            match front.write(&mut buf[written..]) {
                Ok(n) => written += n,
                Err((n, error)) => {
                    written += n;
                    self.output.clear();
                    self.input.clear();
                    self.state = State::Closed;
                    self.content_error = Some(error);
                    break;
                }
            }
            if self.output.front().is_some_and(Output::is_done) {
                self.output.pop_front();
            }
        }
        written
    }

    /// Why the connection stopped writing a response's content (a [`crate::Source`] failed), once; for the log.
    pub fn take_content_error(&mut self) -> Option<ContentError> {
        self.content_error.take()
    }

    /// True while response bytes are queued for [`Connection::poll_output`].
    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// True once the connection must close: no more requests will be read (error, `Connection: close`, HTTP/1.0
    /// without keep-alive, end of input, timeout, failed content) and all queued output has been taken by
    /// `poll_output`.
    pub fn wants_close(&self) -> bool {
        matches!(self.state, State::Closed) && self.output.is_empty()
    }

    /// True between requests: no partial request buffered, no body being read, no output queued. The glue
    /// applies its idle (keep-alive) timeout while this holds.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Head) && self.input.is_empty() && self.output.is_empty()
    }

    /// True while part of a request head is buffered: the glue's header deadline runs (a client sending a
    /// head a byte at a time, "slowloris", must not hold the connection past it).
    pub fn reading_head(&self) -> bool {
        matches!(self.state, State::Head) && !self.input.is_empty()
    }

    /// The peer finished sending (TCP FIN): read nothing more, write what is queued, then close (RFC 9112 §9.6).
    /// An incomplete request is dropped.
    pub fn receive_eof(&mut self) {
        self.input.clear();
        self.state = State::Closed;
    }

    /// The glue's timeout expired. With a request half-received this queues 408 Request Timeout with
    /// `Connection: close` (RFC 9110 §15.5.9) and returns [`Error::Timeout`]; otherwise it closes quietly. Either
    /// way [`Connection::wants_close`] holds once the queue is written.
    pub fn timeout(&mut self) -> Option<Error> {
        let partial = match self.state {
            State::Head => !self.input.is_empty(),
            State::Body { .. } => true,
            State::Closed => false,
        };
        self.input.clear();
        self.state = State::Closed;
        if partial {
            self.output.push_back(Output::error(&Error::Timeout, false));
            Some(Error::Timeout)
        } else {
            None
        }
    }

    /// Answers `error` and stops reading (RFC 9112 §9.6: the framing can no longer be trusted).
    fn fail(&mut self, error: Error, head_only: bool, rx: &mut Received) {
        self.finish(Output::error(&error, head_only), rx);
        self.input.clear();
        rx.error = Some(error);
    }

    /// Begins answering a parsed request: the handler looks at the head and answers now or once the body is
    /// read; either answer is queued when the body (if any) has been read, unless it must go out at once.
    fn start(&mut self, head: Head, rx: &mut Received) {
        let Head { head_only, persistence, body, expect_continue, reply } = head;
        let pending = match reply {
            Reply::Options => {
                let content = Content::Bytes(Vec::new());
                Pending::Ready(Output::new(Status::OK, TEXT, &ALLOW_FIELD, content, head_only, persistence))
            }
            Reply::App(app) => match self.handler.check(&app.request(&[])) {
                Some(response) if response.close || (expect_continue && !response.after_body) => {
                    // RFC 9110 §10.1.1: the client may not have sent the body yet; answer now and close rather
                    // than read a body that may never come.
                    let output = Output::from_response(response, head_only, Persistence::Close);
                    self.finish(output, rx);
                    return;
                }
                Some(response) => Pending::Ready(Output::from_response(response, head_only, persistence)),
                None => Pending::App(app, self.handler),
            },
        };
        match body {
            None => {
                let output = Self::complete(pending, BodyBuffer::default(), head_only, persistence);
                self.finish(output, rx);
            }
            Some(framing) => {
                if expect_continue {
                    self.output.push_back(Output::interim_continue());
                }
                let buffer = match (&pending, &framing) {
                    (Pending::App(..), BodyFraming::Length { remaining }) => BodyBuffer::with_hint(*remaining),
                    _ => BodyBuffer::default(),
                };
                self.state = State::Body { framing, pending, buffer, persistence, head_only };
            }
        }
    }

    /// The response for `pending` once its body is in `buffer`: the handler is called here.
    fn complete(pending: Pending<'_>, buffer: BodyBuffer, head_only: bool, persistence: Persistence) -> Output {
        match pending {
            Pending::Ready(output) => output,
            Pending::App(..) if buffer.out_of_memory => {
                let text = b"service unavailable: no memory to buffer the request body; retry later\n".to_vec();
                Output::new(Status::SERVICE_UNAVAILABLE, TEXT, &[], Content::Bytes(text), head_only, persistence)
            }
            Pending::App(app, handler) => {
                Output::from_response(handler.respond(&app.request(&buffer.data)), head_only, persistence)
            }
        }
    }

    /// The body being read has ended: queue its response.
    fn finish_body(&mut self, rx: &mut Received) {
        if let State::Body { pending, buffer, persistence, head_only, .. } =
            core::mem::replace(&mut self.state, State::Head)
        {
            let output = Self::complete(pending, buffer, head_only, persistence);
            self.finish(output, rx);
        }
    }

    /// Queues the final response to the current request and tells the handler; after a `Connection: close`
    /// response nothing more is read.
    fn finish(&mut self, response: Output, rx: &mut Received) {
        self.handler.answered(response.status);
        self.state = if response.last { State::Closed } else { State::Head };
        self.output.push_back(response);
        rx.requests += 1;
    }
}

/// Test access to what the connection holds.
#[cfg(any(test, feature = "fuzzing"))]
impl Connection<'_> {
    /// Bytes of a partial request head buffered now, and the limit they stay below.
    pub(crate) fn buffered_head(&self) -> (usize, usize) {
        (self.input.len(), self.config.max_header_bytes)
    }
}

#[cfg(test)]
impl Connection<'_> {
    /// The response being written.
    pub(crate) fn front_output(&self) -> Option<&Output> {
        self.output.front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{
        assert_error, drain, drive, exchange, feed, get, parse_responses, pattern, run_with, test_demo, Run, TestApp,
        XorShift,
    };
    use alloc::format;
    use alloc::string::{String, ToString};
    use alloc::vec;

    fn pipeline() -> Vec<u8> {
        let mut input = get("/health").into_bytes();
        input.extend_from_slice(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\nhello");
        input.extend_from_slice(b"GET /bytes/600 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
        input.extend_from_slice(b"3;ext=1\r\nabc\r\n0\r\nTrailer: x\r\n\r\n");
        input.extend_from_slice(b"HEAD / HTTP/1.1\r\nHost: test\r\n\r\n");
        input.extend_from_slice(get("/nope").as_bytes());
        input.extend_from_slice(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        input.extend_from_slice(get("/ignored-after-close").as_bytes());
        input
    }

    #[test]
    fn head_has_get_headers_and_no_content() {
        for path in ["/", "/health", "/bytes/300", "/missing"] {
            let get_run = feed(get(path).as_bytes());
            let head_run = feed(format!("HEAD {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
            let get_response = &parse_responses(&get_run.out, &[])[0];
            let head_response = &parse_responses(&head_run.out, &[true])[0];
            assert_eq!(head_response.status, get_response.status);
            assert_eq!(head_response.headers, get_response.headers, "{path}");
            let head_len = head_run.out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            assert_eq!(head_run.out.len(), head_len, "HEAD {path} sent content");
        }
    }

    #[test]
    fn keep_alive_serves_100_requests_on_one_connection() {
        let demo = test_demo();
        let mut conn = Connection::with_handler(&Config::default(), &demo);
        let mut buf = [0u8; 1500];
        for i in 0..100u64 {
            let request = get(&format!("/bytes/{i}"));
            let r = conn.receive(request.as_bytes());
            assert_eq!((r.consumed, r.requests, r.error), (request.len(), 1, None));
            let mut out = Vec::new();
            drain(&mut conn, &mut buf, &mut out);
            let responses = parse_responses(&out, &[]);
            assert_eq!(responses.len(), 1);
            assert_eq!(responses[0].status, 200);
            assert_eq!(responses[0].body, pattern(i as usize));
            assert_eq!(responses[0].header("connection"), None);
            assert!(conn.is_idle() && !conn.wants_close());
        }
    }

    #[test]
    fn pipelined_requests_are_answered_in_order() {
        let run = feed(&pipeline());
        let responses = parse_responses(&run.out, &[false, false, false, true]);
        let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [200, 405, 200, 200, 404, 200]);
        assert!(responses[0].text().starts_with(r#"{"status":"ok""#));
        assert_eq!(responses[1].header("allow"), Some("GET, HEAD"));
        assert_eq!(responses[2].body, pattern(600));
        assert_eq!(responses[5].header("connection"), Some("close"));
        assert_eq!(run.requests, 6);
        assert!(run.closed);
    }

    #[test]
    fn three_pipelined_requests_in_one_buffer() {
        let input = format!("{}{}{}", get("/"), get("/health"), get("/bytes/3"));
        let demo = test_demo();
        let mut conn = Connection::with_handler(&Config::default(), &demo);
        let r = conn.receive(input.as_bytes());
        assert_eq!((r.consumed, r.requests), (input.len(), 3));
        let mut out = Vec::new();
        drain(&mut conn, &mut [0u8; 100], &mut out);
        let responses = parse_responses(&out, &[]);
        assert_eq!(responses.len(), 3);
        assert!(responses[0].text().contains("<title>Zirvium</title>"));
        assert!(responses[1].text().contains(r#""requests":2"#));
        assert_eq!(responses[2].body, [0, 1, 2]);
    }

    #[test]
    fn any_split_gives_identical_output() {
        let input = pipeline();
        let whole = feed(&input);
        let bytewise = run_with(&Config::default(), &input, &[1], 3);
        assert_eq!(bytewise, whole, "1 byte at a time");
        for cut in 0..=input.len() {
            let demo = test_demo();
            let mut conn = Connection::with_handler(&Config::default(), &demo);
            let mut split = Run::default();
            drive(&mut conn, &input[..cut], &[usize::MAX], 64, &mut split);
            drive(&mut conn, &input[cut..], &[usize::MAX], 64, &mut split);
            assert_eq!(split, whole, "split at byte {cut}");
        }
    }

    #[test]
    fn partial_request_waits_for_more_bytes() {
        let demo = test_demo();
        let mut conn = Connection::with_handler(&Config::default(), &demo);
        let r = conn.receive(b"GET /health HTTP/1.1\r\nHost: te");
        assert_eq!((r.consumed, r.requests), (30, 0));
        assert!(!conn.has_output() && !conn.is_idle() && !conn.wants_close());
        let r = conn.receive(b"st\r\n\r\n");
        assert_eq!((r.consumed, r.requests), (6, 1));
        assert!(conn.has_output());
    }

    #[test]
    fn full_response_queue_pushes_back_and_resumes() {
        let config = Config { max_pending_responses: 2, ..Config::default() };
        let input: String = (0..5).map(|i| get(&format!("/bytes/{i}"))).collect();
        let demo = test_demo();
        let mut conn = Connection::with_handler(&config, &demo);
        let r = conn.receive(input.as_bytes());
        assert_eq!(r.requests, 2);
        assert_eq!(r.consumed, get("/bytes/0").len() * 2);
        let again = conn.receive(&input.as_bytes()[r.consumed..]);
        assert_eq!(again, Received::default(), "nothing taken while the queue is full");
        // The glue drives the rest; all five are answered in order.
        let run = run_with(&config, input.as_bytes(), &[usize::MAX], 16);
        let bodies: Vec<Vec<u8>> = parse_responses(&run.out, &[]).into_iter().map(|r| r.body).collect();
        assert_eq!(bodies, (0..5).map(pattern).collect::<Vec<_>>());
    }

    #[test]
    fn input_buffer_stays_bounded_under_a_flood() {
        let flood = vec![b'a'; 1 << 20];
        let run = run_with(&Config::default(), &flood, &[1000], 64);
        assert_eq!(run.errors, vec![Error::RequestLineTooLong { limit: Config::DEFAULT.max_header_bytes }]);
        assert!(run.closed);
    }

    #[test]
    fn body_within_limit_is_consumed() {
        let limit = Config::DEFAULT.max_body_bytes as usize;
        let mut input = format!("GET /bytes/1 HTTP/1.1\r\nHost: x\r\nContent-Length: {limit}\r\n\r\n").into_bytes();
        input.resize(input.len() + limit, b'G');
        input.extend_from_slice(get("/bytes/2").as_bytes());
        let run = run_with(&Config::default(), &input, &[1460], 64);
        let bodies: Vec<Vec<u8>> = parse_responses(&run.out, &[]).into_iter().map(|r| r.body).collect();
        assert_eq!(bodies, [pattern(1), pattern(2)]);
    }

    #[test]
    fn http10_closes_unless_keep_alive() {
        let run = feed(b"GET /bytes/2 HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\n\r\n");
        let responses = parse_responses(&run.out, &[]);
        assert_eq!(responses.len(), 1);
        assert_eq!(responses[0].header("connection"), Some("close"));
        assert!(run.closed);

        let run = feed(b"GET /bytes/2 HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\nGET /bytes/1 HTTP/1.0\r\n\r\n");
        let responses = parse_responses(&run.out, &[]);
        assert_eq!(responses.len(), 2);
        assert_eq!(responses[0].header("connection"), Some("keep-alive"));
        assert_eq!(responses[1].header("connection"), Some("close"));
        assert!(run.closed);
    }

    #[test]
    fn connection_close_is_honoured() {
        let input = format!("GET / HTTP/1.1\r\nHost: x\r\nConnection: foo, close\r\n\r\n{}", get("/"));
        let demo = test_demo();
        let mut conn = Connection::with_handler(&Config::default(), &demo);
        let r = conn.receive(input.as_bytes());
        assert_eq!((r.consumed, r.requests), (input.len(), 1));
        assert!(!conn.wants_close(), "the response is still queued");
        let mut out = Vec::new();
        drain(&mut conn, &mut [0u8; 64], &mut out);
        let responses = parse_responses(&out, &[]);
        assert_eq!(responses.len(), 1);
        assert_eq!(responses[0].header("connection"), Some("close"));
        assert!(conn.wants_close());
        let r = conn.receive(get("/").as_bytes());
        assert_eq!((r.requests, conn.has_output()), (0, false), "nothing is read after close");
    }

    #[test]
    fn expect_100_continue_gets_interim_response() {
        let input = "POST /bytes/1 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
        let demo = test_demo();
        let mut conn = Connection::with_handler(&Config::default(), &demo);
        conn.receive(input.as_bytes());
        let mut out = Vec::new();
        drain(&mut conn, &mut [0u8; 64], &mut out);
        assert_eq!(out, b"HTTP/1.1 100 Continue\r\n\r\n");
        conn.receive(b"ok");
        drain(&mut conn, &mut [0u8; 64], &mut out);
        let statuses: Vec<u16> = parse_responses(&out, &[]).iter().map(|r| r.status).collect();
        assert_eq!(statuses, [100, 405]);
        // Without a body there is nothing to continue.
        let (responses, _) = exchange("GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n");
        assert_eq!(responses.iter().map(|r| r.status).collect::<Vec<_>>(), [200]);
        assert_error(b"GET / HTTP/1.1\r\nHost: x\r\nExpect: tea\r\n\r\n", 417, Error::UnsupportedExpectation);
    }

    #[test]
    fn idle_timeout_and_eof() {
        let demo = test_demo();
        let mut conn = Connection::with_handler(&Config::default(), &demo);
        assert!(conn.is_idle());
        assert_eq!(conn.timeout(), None);
        assert!(conn.wants_close() && !conn.has_output());

        let demo = test_demo();
        let mut conn = Connection::with_handler(&Config::default(), &demo);
        conn.receive(b"GET / HT");
        assert!(!conn.is_idle());
        assert_eq!(conn.timeout(), Some(Error::Timeout));
        let mut out = Vec::new();
        drain(&mut conn, &mut [0u8; 64], &mut out);
        let responses = parse_responses(&out, &[]);
        assert_eq!((responses[0].status, responses[0].header("connection")), (408, Some("close")));
        assert!(conn.wants_close());

        let demo = test_demo();
        let mut conn = Connection::with_handler(&Config::default(), &demo);
        conn.receive(format!("{}GET /par", get("/bytes/5")).as_bytes());
        conn.receive_eof();
        assert!(!conn.wants_close(), "queued response still to be written");
        let mut out = Vec::new();
        drain(&mut conn, &mut [0u8; 64], &mut out);
        assert_eq!(parse_responses(&out, &[]).len(), 1);
        assert!(conn.wants_close());
    }

    #[test]
    fn output_never_exceeds_the_buffer() {
        let input = format!("{}{}{}", get("/"), get("/health"), get("/bytes/1000"));
        let whole = feed(input.as_bytes());
        for out_len in 1..=17 {
            // `drain` asserts n <= buf.len() on every call.
            let small = run_with(&Config::default(), input.as_bytes(), &[usize::MAX], out_len);
            assert_eq!(small, whole, "out_len {out_len}");
        }
        let demo = test_demo();
        let mut conn = Connection::with_handler(&Config::default(), &demo);
        conn.receive(input.as_bytes());
        assert_eq!(conn.poll_output(&mut []), 0);
        assert!(conn.has_output());
    }

    #[test]
    fn zero_limits_do_not_stall() {
        let config = Config { max_header_bytes: 0, max_pending_responses: 0, ..Config::default() };
        let run = run_with(&config, get("/").as_bytes(), &[usize::MAX], 64);
        assert_eq!(run.errors, vec![Error::RequestLineTooLong { limit: 1 }]);
    }

    /// Random mixtures of request fragments and random bytes, fed whole, byte by byte and in random pieces: no
    /// panic, bounded buffering (checked in `drive`), and the same output however the input is split.
    #[test]
    fn fuzz_random_input_never_panics_and_ignores_splits() {
        const FRAGMENTS: [&[u8]; 24] = [
            b"GET ",
            b"HEAD ",
            b"POST ",
            b"/",
            b"/bytes/",
            b"/health",
            b"*",
            b" HTTP/1.1\r\n",
            b" HTTP/1.0\r\n",
            b"Host: x\r\n",
            b"Content-Length: ",
            b"Transfer-Encoding: chunked\r\n",
            b"Connection: close\r\n",
            b"Connection: keep-alive\r\n",
            b"Expect: 100-continue\r\n",
            b"\r\n",
            b"\r\n\r\n",
            b"0",
            b"7",
            b"12",
            b"a",
            b";x=y",
            b"\n",
            b"\r",
        ];
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let config = Config { max_header_bytes: 256, max_body_bytes: 4096, ..Config::default() };
        for _ in 0..1500 {
            let mut input = Vec::new();
            for _ in 0..rng.below(60) {
                if rng.below(4) == 0 {
                    input.push(rng.next() as u8);
                } else {
                    input.extend_from_slice(FRAGMENTS[rng.below(FRAGMENTS.len())]);
                }
            }
            let whole = run_with(&config, &input, &[usize::MAX], 1 + rng.below(300));
            assert!(whole.out.is_empty() || whole.out.starts_with(b"HTTP/1.1 "));
            let pieces: Vec<usize> = (0..5).map(|_| 1 + rng.below(20)).collect();
            assert_eq!(run_with(&config, &input, &pieces, 1 + rng.below(40)), whole, "input {input:?}");
            assert_eq!(run_with(&config, &input, &[1], 1), whole, "input {input:?}");
        }
    }

    /// Pure random bytes, including long runs, at the default limits.
    #[test]
    fn fuzz_random_bytes_never_panic() {
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        for _ in 0..300 {
            let len = rng.below(20_000);
            let input: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let pieces: Vec<usize> = (0..3).map(|_| 1 + rng.below(3000)).collect();
            let run = run_with(&Config::default(), &input, &pieces, 1 + rng.below(2000));
            // At most one error, and an error always closes the connection.
            assert!(run.errors.len() <= 1);
            assert!(run.errors.is_empty() || run.closed);
        }
    }

    #[test]
    fn streamed_content_is_read_a_buffer_at_a_time() {
        let app = TestApp::default();
        let n = 1 << 20;
        let mut conn = Connection::with_handler(&Config::default(), &app);
        conn.receive(get(&format!("/stream/{n}")).as_bytes());
        let queued = conn.front_output().expect("response queued");
        assert!(queued.data.len() < 256, "only the head is in memory");
        let mut out = Vec::new();
        drain(&mut conn, &mut [0u8; 4096], &mut out);
        let responses = parse_responses(&out, &[]);
        assert!(responses[0].body == pattern(n));
        assert!(app.largest_read.load(std::sync::atomic::Ordering::Relaxed) <= 4096);
        assert!(conn.is_idle());
    }

    #[test]
    fn failing_content_stops_the_response_and_closes() {
        let app = TestApp::default();
        for (path, sent, len, detail) in
            [("/fail", 3000, 10_000, "disk on fire"), ("/short", 50, 100, "content ended early")]
        {
            let mut conn = Connection::with_handler(&Config::default(), &app);
            let input = format!("{}{}", get(path), get("/echo"));
            conn.receive(input.as_bytes());
            let mut out = Vec::new();
            drain(&mut conn, &mut [0u8; 1000], &mut out);
            let head = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            assert_eq!(out.len() - head, sent, "{path}: the good part is sent, nothing after it");
            assert!(conn.wants_close(), "{path}");
            let error = conn.take_content_error().expect("the failure is reported");
            assert_eq!((error.sent, error.len, error.source.detail.as_str()), (sent as u64, len, detail));
            assert!(error.to_string().contains(detail));
            assert_eq!(conn.take_content_error(), None);
        }
    }

    #[test]
    fn body_buffer_out_of_memory_is_503_and_keeps_serving() {
        let mut buffer = BodyBuffer::with_hint(1 << 62);
        assert!(buffer.out_of_memory, "no allocator has 4 EiB");
        buffer.push(b"dropped");
        assert!(buffer.data.is_empty());
        let app = TestApp::default();
        let head = AppHead { method: "PUT".into(), path: "/echo".into(), query: None, headers: Vec::new() };
        let pending = Pending::App(Box::new(head), &app);
        let mut output = Connection::complete(pending, buffer, false, Persistence::KeepAlive);
        let mut out = vec![0u8; 512];
        let n = output.write(&mut out).unwrap();
        let responses = parse_responses(&out[..n], &[]);
        assert_eq!(responses[0].status, 503);
        assert_eq!(responses[0].header("connection"), None);
        assert!(app.seen.lock().unwrap().is_empty());
    }
}
