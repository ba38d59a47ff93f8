//! Responses on the wire (RFC 9112 §4 status-line, §5 field lines, §6 framing): [`Output`] serialises a
//! response's head and copies it, then its content, into the caller's buffers.

use crate::error::Error;
use crate::request::Persistence;
use crate::response::{Content, Response, Source, SourceError, TEXT};
use crate::status::Status;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write as _};

/// Value of the `Server` header field of every response (RFC 9110 §10.2.4).
const SERVER: &str = "zirvium";

/// Response content that failed while it was written: the connection stopped writing and closes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentError {
    /// Content bytes written before the failure.
    pub sent: u64,
    /// Content length announced in `Content-Length`, bytes.
    pub len: u64,
    /// Why: the source's error, or "content ended early".
    pub source: SourceError,
}

impl fmt::Display for ContentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "response content failed after {} of {} bytes: {}", self.sent, self.len, self.source)
    }
}

/// Streamed content of a queued response.
pub(crate) struct Streamed {
    source: Box<dyn Source>,
    /// Content length, bytes.
    pub(crate) len: u64,
    sent: u64,
}

/// One queued response: `data` (status line, header fields, and in-memory content), then `stream`.
pub(crate) struct Output {
    /// Its status, for [`crate::Handler::answered`].
    pub(crate) status: Status,
    /// It says `Connection: close`: the last response on the connection.
    pub(crate) last: bool,
    pub(crate) data: Vec<u8>,
    data_sent: usize,
    pub(crate) stream: Option<Streamed>,
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Output")
            .field("data", &self.data.len())
            .field("data_sent", &self.data_sent)
            .field("stream", &self.stream.as_ref().map(|s| (s.sent, s.len)))
            .finish()
    }
}

/// Whether `name` is a field name a handler may send: a token (RFC 9110 §5.6.2) that the connection does not set.
fn valid_field_name(name: &str) -> bool {
    let token = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    let reserved = ["content-length", "content-type", "transfer-encoding", "connection", "server"];
    token && !reserved.iter().any(|r| name.eq_ignore_ascii_case(r))
}

/// Whether `value` is a field value (RFC 9110 §5.5): no control characters but HTAB, no leading or trailing
/// whitespace.
fn valid_field_value(value: &str) -> bool {
    value.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f)) && value.trim_ascii() == value
}

impl Output {
    /// Serialises a response (RFC 9112 §4 status-line, §5 field lines). `head_only` drops the content but keeps
    /// its `Content-Length` (RFC 9110 §8.6); 1xx/204/304 have neither content nor `Content-Type`/`Content-Length`.
    pub(crate) fn new(
        status: Status,
        content_type: &str,
        extra: &[(&str, &str)],
        content: Content,
        head_only: bool,
        persistence: Persistence,
    ) -> Output {
        let mut head = String::with_capacity(192);
        // fmt::Write for String never fails.
        let _ = write!(head, "HTTP/1.1 {} {}\r\nServer: {SERVER}\r\n", status.code(), status.reason());
        if !status.without_content() {
            let _ = write!(head, "Content-Type: {content_type}\r\nContent-Length: {}\r\n", content.len());
        }
        for (name, value) in extra {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        match persistence {
            Persistence::KeepAlive => {}
            Persistence::KeepAlive10 => head.push_str("Connection: keep-alive\r\n"),
            Persistence::Close => head.push_str("Connection: close\r\n"),
        }
        head.push_str("\r\n");
        let mut data = head.into_bytes();
        let mut stream = None;
        if !head_only && !status.without_content() {
            match content {
                Content::Bytes(bytes) => data.extend_from_slice(&bytes),
                Content::Stream { len, source } => stream = Some(Streamed { source, len, sent: 0 }),
            }
        }
        Output { status, last: persistence == Persistence::Close, data, data_sent: 0, stream }
    }

    /// A handler's response, checked (see [`Response`]); a response breaking the rules becomes 500. A
    /// [`Response::close`] response is the connection's last whatever `persistence` says.
    pub(crate) fn from_response(response: Response, head_only: bool, persistence: Persistence) -> Output {
        let Response { status, content_type, headers, content, close, after_body: _ } = response;
        let persistence = if close { Persistence::Close } else { persistence };
        let problem = if status.code() < 200 {
            Some(format!("status {} is not a final status", status.code()))
        } else if !valid_field_value(&content_type) {
            Some(format!("Content-Type {content_type:?} is not a valid field value"))
        } else {
            headers.iter().find_map(|(name, value)| {
                if !valid_field_name(name) {
                    Some(format!("header field name {name:?} is not allowed"))
                } else if !valid_field_value(value) {
                    Some(format!("header field {name} has an invalid value {value:?}"))
                } else {
                    None
                }
            })
        };
        if let Some(problem) = problem {
            log::error!("http: handler response replaced by 500: {problem}");
            // The details (which may hold request data) go to the log only.
            let text = String::from("internal server error: the app produced an invalid response (see the log)\n");
            return Output::new(
                Status::INTERNAL_SERVER_ERROR,
                TEXT,
                &[],
                Content::Bytes(text.into_bytes()),
                head_only,
                persistence,
            );
        }
        let extra: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_ref(), v.as_str())).collect();
        Output::new(status, &content_type, &extra, content, head_only, persistence)
    }

    /// `100 Continue` (RFC 9110 §15.2.1): a status-line and no fields.
    pub(crate) fn interim_continue() -> Output {
        let status = Status::CONTINUE;
        let data = format!("HTTP/1.1 {} {}\r\n\r\n", status.code(), status.reason()).into_bytes();
        Output { status, last: false, data, data_sent: 0, stream: None }
    }

    /// The error response for `error`: a one-line plain-text reason and `Connection: close`.
    pub(crate) fn error(error: &Error, head_only: bool) -> Output {
        let text = format!("{error}\n").into_bytes();
        Output::new(error.status(), TEXT, &[], Content::Bytes(text), head_only, Persistence::Close)
    }

    pub(crate) fn is_done(&self) -> bool {
        self.data_sent == self.data.len() && self.stream.as_ref().is_none_or(|s| s.sent == s.len)
    }

    /// Copies the next bytes into `out`; returns how many, or how many and the content's failure.
    pub(crate) fn write(&mut self, out: &mut [u8]) -> Result<usize, (usize, ContentError)> {
        let data = &self.data[self.data_sent..];
        let n = data.len().min(out.len());
        out[..n].copy_from_slice(&data[..n]);
        self.data_sent += n;
        let Some(stream) = &mut self.stream else { return Ok(n) };
        let out = &mut out[n..];
        let left = stream.len - stream.sent;
        let m = usize::try_from(left).map_or(out.len(), |left| left.min(out.len()));
        if m == 0 {
            return Ok(n);
        }
        let failure = match stream.source.read(&mut out[..m]) {
            Ok(got) if got > 0 && got <= m => {
                stream.sent += got as u64;
                return Ok(n + got);
            }
            Ok(0) => SourceError { detail: String::from("content ended early") },
            Ok(got) => SourceError { detail: format!("source returned {got} bytes for a {m}-byte buffer") },
            Err(e) => e,
        };
        Err((n, ContentError { sent: stream.sent, len: stream.len, source: failure }))
    }
}
