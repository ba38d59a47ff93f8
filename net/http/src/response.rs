//! A handler's answer ([`Response`]) and its content: bytes in memory or streamed from a [`Source`] while it is
//! written.

use crate::status::Status;
use alloc::borrow::Cow;
use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// `Content-Type` of plain-text answers (RFC 9110 §8.3, RFC 2046 §4.1.3).
pub(crate) const TEXT: &str = "text/plain; charset=utf-8";

/// A [`Source`] could not produce the content it announced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceError {
    /// What failed, e.g. the filesystem's error text.
    pub detail: String,
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

/// Response content produced while it is written, a buffer at a time, so a large file or `/bytes/N` never sits
/// in memory whole.
pub trait Source: Send {
    /// Fills the start of `buf` with the next content bytes and returns how many (`1..=buf.len()` while content
    /// remains; `buf` is never empty). Returning 0 or an error before the announced length was produced aborts
    /// the response: the connection closes ([`crate::Connection::take_content_error`] says why).
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, SourceError>;
}

/// Response content: bytes in memory, or `len` bytes streamed from a [`Source`].
pub enum Content {
    /// Content held in memory.
    Bytes(Vec<u8>),
    /// `len` bytes (the `Content-Length`) read from `source` while the response is written.
    Stream {
        /// Content length, bytes.
        len: u64,
        /// Where the bytes come from.
        source: Box<dyn Source>,
    },
}

impl Content {
    /// Content length, bytes.
    pub fn len(&self) -> u64 {
        match self {
            Content::Bytes(bytes) => bytes.len() as u64,
            Content::Stream { len, .. } => *len,
        }
    }

    /// Whether the content is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Content::Bytes(bytes) => write!(f, "Bytes({} bytes)", bytes.len()),
            Content::Stream { len, .. } => write!(f, "Stream({len} bytes)"),
        }
    }
}

/// A handler's answer. The connection adds `Server`, `Content-Length` and `Connection` itself, and drops the
/// content for HEAD (RFC 9110 §9.3.2) and for 1xx/204/304 (which carry no `Content-Type` or `Content-Length`).
#[derive(Debug)]
pub struct Response {
    /// Status code; a handler answers with 200..=599 (1xx is the connection's own business).
    pub status: Status,
    /// `Content-Type` value (RFC 9110 §8.3), e.g. `text/plain; charset=utf-8`.
    pub content_type: Cow<'static, str>,
    /// More header fields, in order: a token name (RFC 9110 §5.1) and a value without control characters
    /// other than HTAB (RFC 9110 §5.5). `Content-Length`, `Content-Type`, `Transfer-Encoding`, `Connection` and
    /// `Server` are set by the connection and may not appear here. A response breaking these rules is replaced
    /// by 500 Internal Server Error.
    pub headers: Vec<(Cow<'static, str>, String)>,
    /// The content.
    pub content: Content,
    /// Last response on the connection: it says `Connection: close`, and the connection reads no more requests
    /// and closes once it is written (RFC 9112 §9.6). From [`crate::Handler::check`] it is sent at once and the
    /// request's body is never read. Default false.
    pub close: bool,
    /// For an answer from [`crate::Handler::check`] to a client waiting for `100 Continue` (RFC 9110 §10.1.1):
    /// true sends `100 Continue`, reads and drops the body, then this response, and the connection stays open
    /// (for answers that do not depend on the body); false (the default) sends this response at once and closes
    /// the connection rather than wait for a body that may never come. Ignored elsewhere.
    pub after_body: bool,
}

impl Response {
    /// A response with `content` of type `content_type` and no extra header fields.
    pub fn new(status: Status, content_type: impl Into<Cow<'static, str>>, content: Content) -> Response {
        Response {
            status,
            content_type: content_type.into(),
            headers: Vec::new(),
            content,
            close: false,
            after_body: false,
        }
    }

    /// A response whose content is `text` as `text/plain; charset=utf-8`.
    pub fn text(status: Status, text: impl Into<String>) -> Response {
        Response::new(status, TEXT, Content::Bytes(text.into().into_bytes()))
    }

    /// A response without content, e.g. 204 No Content.
    pub fn empty(status: Status) -> Response {
        Response::new(status, TEXT, Content::Bytes(Vec::new()))
    }

    /// Adds header field `name: value`.
    pub fn with_header(mut self, name: impl Into<Cow<'static, str>>, value: impl Into<String>) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Makes this the last response on the connection ([`Response::close`]).
    pub fn closing(mut self) -> Response {
        self.close = true;
        self
    }

    /// Sends this answer from [`crate::Handler::check`] after the request body, as if
    /// [`crate::Handler::respond`] had given it ([`Response::after_body`]).
    pub fn after_body(mut self) -> Response {
        self.after_body = true;
        self
    }
}
