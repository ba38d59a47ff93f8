//! The app's side of a connection: the [`Request`] a [`Handler`] sees and the hook it answers through.

use crate::response::Response;
use crate::status::Status;
use alloc::string::String;
use alloc::vec::Vec;

/// A request as a [`Handler`] sees it: every request-target but `OPTIONS *`, once its head parsed cleanly.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The method, case-sensitive (RFC 9110 §9.1), one RFC 9110 §9 defines or PATCH (others are 501 before a
    /// handler sees them).
    pub method: &'a str,
    /// The request-target's path as sent (still percent-encoded, RFC 3986 §2.1), starting with `/`; for
    /// absolute-form the path after the authority (RFC 9112 §3.2.2).
    pub path: &'a str,
    /// The query after `?` (RFC 3986 §3.4), if any.
    pub query: Option<&'a str>,
    /// Header fields in the order received: name as sent, raw value (RFC 9110 §5).
    pub headers: &'a [(String, Vec<u8>)],
    /// The complete request content, framing removed (empty without a body, and in [`Handler::check`]).
    pub body: &'a [u8],
}

impl<'a> Request<'a> {
    /// The value of the first header field named `name` (compared case-insensitively, RFC 9110 §5.1),
    /// whitespace-trimmed.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim_ascii())
    }

    /// How many header fields are named `name` (case-insensitively).
    pub fn header_count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).count()
    }
}

/// An app's answers: the connection owns no routes and hands every request to its handler. The connection
/// calls it synchronously from [`crate::Connection::receive`], in request order; it is shared by all
/// connections (`&self`, `Sync`).
pub trait Handler: Sync {
    /// Looks at a request head before its body is read (`request.body` is empty). `Some(response)` answers at
    /// once: the body is then read and dropped, or, when the client waits for `100 Continue`, not read at all
    /// and the connection closes after the response (RFC 9110 §10.1.1) unless the response asks to be sent
    /// [`Response::after_body`]. A [`Response::close`] answer is sent at once and the body is never read.
    /// `None` (the default): the body is buffered, up to [`crate::Config::max_body_bytes`] (413 beyond), and
    /// [`Handler::respond`] answers.
    fn check(&self, request: &Request<'_>) -> Option<Response> {
        let _ = request;
        None
    }

    /// Answers a request whose body (if any) has been read completely into `request.body`.
    fn respond(&self, request: &Request<'_>) -> Response;

    /// Called once for every final response the connection queues, with its status, in order and before the
    /// next request reaches [`Handler::check`]: the handler's own answers and the connection's (error
    /// responses, `OPTIONS *`, 503 when a body finds no memory, 500 for an invalid answer). Not called for
    /// `100 Continue` or the 408 of [`crate::Connection::timeout`]. For counters such as `/health`'s request
    /// count; the default does nothing.
    fn answered(&self, status: Status) {
        let _ = status;
    }
}

/// A shared reference answers as the handler it points to.
impl<H: Handler + ?Sized> Handler for &H {
    fn check(&self, request: &Request<'_>) -> Option<Response> {
        (**self).check(request)
    }

    fn respond(&self, request: &Request<'_>) -> Response {
        (**self).respond(request)
    }

    fn answered(&self, status: Status) {
        (**self).answered(status)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{app_exchange, get, parse_responses, run_app, TestApp, XorShift};
    use crate::{Config, Error};
    use alloc::format;
    use alloc::string::String;
    use alloc::vec::Vec;

    #[test]
    fn handler_gets_method_path_query_headers_and_whole_body() {
        let app = TestApp::default();
        let mut input =
            b"PUT /echo?x=1&y HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nContent-Length: 11\r\n\r\nhello world".to_vec();
        input.extend_from_slice(b"POST http://example.com/echo HTTP/1.1\r\nHost: example.com\r\n");
        input.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n3;e=1\r\nabc\r\n2\r\nde\r\n0\r\nT: x\r\n\r\n");
        input.extend_from_slice(get("/echo").as_bytes());
        let (responses, run) = app_exchange(&app, &input);
        assert_eq!(responses.iter().map(|r| r.status).collect::<Vec<_>>(), [201, 201, 201]);
        assert_eq!(responses[0].body, b"hello world");
        assert_eq!(responses[0].header("content-type"), Some("application/x-echo"));
        assert_eq!(responses[0].header("x-method"), Some("PUT"));
        assert_eq!(responses[0].header("x-host"), Some("h"));
        assert_eq!(responses[1].body, b"abcde", "chunk data without framing or trailers");
        assert_eq!(responses[2].body, b"");
        assert_eq!(responses[2].header("x-method"), Some("GET"));
        let seen = app.seen.lock().unwrap();
        assert_eq!(seen[0].2.as_deref(), Some("x=1&y"));
        assert_eq!(seen[0].3, ["Host", "X-A", "Content-Length"]);
        assert_eq!((seen[1].0.as_str(), seen[1].1.as_str(), seen[1].2.as_deref()), ("POST", "/echo", None));
        assert_eq!((run.requests, run.closed), (3, false));
        // However the input is split, the handler sees the same bodies and the output is the same.
        let app2 = TestApp::default();
        assert_eq!(run_app(&app2, &Config::default(), &input, &[1], 3), run);
        assert_eq!(*app2.seen.lock().unwrap(), *seen);
    }

    #[test]
    fn handler_body_over_the_limit_is_413_and_never_reaches_it() {
        let app = TestApp::default();
        let config = Config { max_body_bytes: 10, ..Config::default() };
        let input = b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world";
        let run = run_app(&app, &config, input, &[usize::MAX], 64);
        assert_eq!(parse_responses(&run.out, &[])[0].status, 413);
        assert_eq!(run.errors, vec![Error::BodyTooLarge { limit: 10 }]);
        let input = b"PUT /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                      6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n";
        let run = run_app(&app, &config, input, &[3], 64);
        assert_eq!(run.errors, vec![Error::BodyTooLarge { limit: 10 }]);
        assert!(app.seen.lock().unwrap().is_empty());
        // Exactly the limit is accepted.
        let input = b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhelloworld";
        let run = run_app(&app, &config, input, &[usize::MAX], 64);
        assert_eq!(parse_responses(&run.out, &[])[0].body, b"helloworld");
    }

    #[test]
    fn handler_check_answers_before_the_body() {
        let app = TestApp::default();
        let mut input = b"PUT /early HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello".to_vec();
        input.extend_from_slice(get("/echo").as_bytes());
        let (responses, run) = app_exchange(&app, &input);
        assert_eq!(responses.iter().map(|r| r.status).collect::<Vec<_>>(), [400, 201]);
        assert_eq!(responses[0].text(), "refused early\n");
        assert!(!run.closed, "the body was read and dropped; the connection goes on");
        assert_eq!(app.seen.lock().unwrap().len(), 1, "respond only for /echo");

        // A client waiting for 100 Continue gets the final answer instead, and the connection closes.
        let input = b"PUT /early HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
        let (responses, run) = app_exchange(&app, input);
        assert_eq!(responses.iter().map(|r| r.status).collect::<Vec<_>>(), [400]);
        assert_eq!(responses[0].header("connection"), Some("close"));
        assert!(run.closed);
        // Without an early answer, 100 Continue comes first.
        let input = b"PUT /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok";
        let (responses, _) = app_exchange(&app, input);
        assert_eq!(responses.iter().map(|r| r.status).collect::<Vec<_>>(), [100, 201]);
        assert_eq!(responses[1].body, b"ok");
    }

    #[test]
    fn handler_responses_get_framing_and_persistence_from_the_connection() {
        let app = TestApp::default();
        let input = format!(
            "{}{}HEAD /stream/300 HTTP/1.1\r\nHost: x\r\n\r\nGET /storage HTTP/1.0\r\n\r\n",
            get("/empty"),
            get("/missing")
        );
        let run = run_app(&app, &Config::default(), input.as_bytes(), &[usize::MAX], 64);
        let responses = parse_responses(&run.out, &[false, false, true]);
        assert_eq!(responses.iter().map(|r| r.status).collect::<Vec<_>>(), [204, 404, 200, 507]);
        assert_eq!(responses[0].header("content-type"), None);
        assert_eq!(responses[0].header("x-done"), Some("yes"));
        assert_eq!(responses[2].header("content-length"), Some("300"), "HEAD keeps the length");
        assert!(responses[2].body.is_empty());
        assert_eq!(responses[3].header("connection"), Some("close"), "HTTP/1.0 without keep-alive");
        assert!(run.out.starts_with(b"HTTP/1.1 204 No Content\r\nServer: zirvium\r\nX-Done: yes\r\n\r\nHTTP/1.1 404"));
        assert!(run.closed);
    }

    #[test]
    fn invalid_handler_responses_become_500() {
        let app = TestApp::default();
        for path in ["/bad-value", "/bad-name", "/reserved", "/bad-type", "/interim"] {
            let (responses, run) = app_exchange(&app, get(path).as_bytes());
            assert_eq!(responses.len(), 1, "{path}");
            assert_eq!(responses[0].status, 500, "{path}");
            assert!(responses[0].text().contains("invalid"), "{path}: {}", responses[0].text());
            assert!(!String::from_utf8_lossy(&run.out).contains("Injected"));
            assert!(!run.closed);
        }
    }

    #[test]
    fn fuzz_random_input_with_a_handler_ignores_splits() {
        const FRAGMENTS: [&[u8]; 14] = [
            b"GET ",
            b"PUT ",
            b"HEAD ",
            b"/echo",
            b"/early",
            b"/stream/700",
            b"/empty",
            b" HTTP/1.1\r\nHost: x\r\n",
            b"Content-Length: 3\r\n",
            b"Transfer-Encoding: chunked\r\n",
            b"Expect: 100-continue\r\n",
            b"\r\n",
            b"3\r\nabc\r\n0\r\n\r\n",
            b"xyz",
        ];
        let mut rng = XorShift(0x1234_5678_9abc_def1);
        let config = Config { max_header_bytes: 256, max_body_bytes: 64, ..Config::default() };
        for _ in 0..500 {
            let mut input = Vec::new();
            for _ in 0..rng.below(40) {
                input.extend_from_slice(FRAGMENTS[rng.below(FRAGMENTS.len())]);
            }
            let app = TestApp::default();
            let whole = run_app(&app, &config, &input, &[usize::MAX], 1 + rng.below(300));
            let pieces: Vec<usize> = (0..5).map(|_| 1 + rng.below(20)).collect();
            let app2 = TestApp::default();
            assert_eq!(run_app(&app2, &config, &input, &pieces, 1 + rng.below(40)), whole, "input {input:?}");
            assert_eq!(*app2.seen.lock().unwrap(), *app.seen.lock().unwrap());
        }
    }
}
