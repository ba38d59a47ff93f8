//! HTTP/1.1 server core of `httpd`: a sans-I/O connection state machine (RFC 9112 message syntax and framing,
//! RFC 9110 semantics).
//!
//! [`Connection`] never touches a socket or a clock. The async glue feeds it the bytes read from a TCP stream with
//! [`Connection::receive`] and writes out whatever [`Connection::poll_output`] puts into its buffer:
//!
//! ```text
//! let mut conn = Connection::with_handler(&config, &app);  // or Connection::new(&config): built-in routes only
//! loop {
//!     let n = socket.read(&mut rx).await;          // n == 0 (FIN): conn.receive_eof()
//!     let mut off = 0;
//!     loop {
//!         let r = conn.receive(&rx[off..n], &ctx);  // ctx: platform, root message, uptime, counters
//!         off += r.consumed;
//!         stats.requests += r.requests;
//!         while conn.has_output() {
//!             let m = conn.poll_output(&mut tx);    // m <= tx.len(), never more
//!             socket.write_all(&tx[..m]).await;
//!         }
//!         if conn.wants_close() { return; }         // all queued output written: close the socket
//!         if off == n { break; }                    // else the response queue was full: offer the rest again
//!     }
//! }
//! ```
//!
//! Behaviour:
//! - Requests are parsed with `httparse` into at most [`MAX_HEADER_FIELDS`] header fields; more is 431. The request
//!   head must fit in [`Config::max_header_bytes`]: a longer request-line is 414, a longer field section is 431.
//! - Methods: GET and HEAD on the built-in routes. A method RFC 9110 §9 defines (POST, PUT, DELETE, ...) or PATCH
//!   on a built-in route is 405 with `Allow: GET, HEAD` (a handler decides for its routes); a well-formed method
//!   nobody defines (including lower-case `get`, methods are case-sensitive) is 501 (RFC 9110 §9.1); a method that
//!   is not a token is 400.
//! - Built-in routes: `/` HTML page, `/health` JSON, `/bytes/N` N bytes where byte i is `(i % 251) as u8` (a prime
//!   period so that shifted or dropped bytes show up). The query string is ignored for routing. Any other path
//!   goes to the app's [`Handler`] (404 without one): [`Handler::check`] sees the head and may answer at once,
//!   else the body is buffered (at most [`Config::max_body_bytes`]) and [`Handler::respond`] answers with a
//!   [`Response`]: status, content type, extra header fields, and content in memory or streamed from a
//!   [`Source`] (a file) while it is written.
//! - Message body framing (RFC 9112 §6.3): `Content-Length` (identical repeated values are accepted, differing ones
//!   are 400) or `Transfer-Encoding: chunked`, which is decoded strictly (CRLF line endings, RFC 9112 §7.1);
//!   trailer fields are dropped. Both headers together is 400 (request smuggling defence); a transfer coding
//!   other than chunked is 501; chunked not last is 400; Transfer-Encoding in HTTP/1.0 is 400. A body larger than
//!   [`Config::max_body_bytes`] is 413. Bodies of built-in routes are read and dropped; a handler's is buffered
//!   (503 if memory runs out, and the connection stays usable).
//! - `Expect: 100-continue` on a request with a body gets an interim `100 Continue` before the body is read
//!   (RFC 9110 §10.1.1); any other expectation is 417.
//! - Persistence (RFC 9112 §9.3): HTTP/1.1 keeps the connection open unless `Connection: close`; HTTP/1.0 closes
//!   unless `Connection: keep-alive` (then the response says `Connection: keep-alive`). Pipelined requests are
//!   answered in order. After every error response ([`Error`]: 400, 408, 413, 414, 417, 431, 501, 505) the
//!   connection closes and says `Connection: close`; 404 and 405 keep it open.
//! - Every response is HTTP/1.1 with `Server: zirvium`, `Content-Type` and `Content-Length` (neither on 204,
//!   RFC 9110 §8.6); no `Date` (the server has no trustworthy clock, RFC 9110 §6.6.1). HEAD answers carry the
//!   same header fields as GET and no content (RFC 9110 §9.3.2).
//! - Memory per connection is bounded: at most `max_header_bytes` of a partial request head are buffered, a
//!   body only for a handler and at most `max_body_bytes`, at most [`Config::max_pending_responses`] responses
//!   are queued, and `/bytes/N` and [`Content::Stream`] content is produced while it is written, so a 64 MiB
//!   response costs no more than a small one.

#![forbid(unsafe_code)]

use alloc::borrow::Cow;
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write as _};

/// Header fields `httparse` can hold per request; a request with more is answered 431 (RFC 6585 §5).
pub const MAX_HEADER_FIELDS: usize = 32;

/// Value of the `Server` header field of every response (RFC 9110 §10.2.4).
const SERVER: &str = "zirvium";

/// Methods every route supports, as sent in `Allow` (RFC 9110 §10.2.1).
const ALLOW: &str = "GET, HEAD";

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

/// Limits of one connection. All sizes are in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Largest request head (leading empty lines, request-line, header fields and the empty line that ends them),
    /// bytes; default 8 KiB. Longer request-line: 414 URI Too Long (RFC 9110 §15.5.15); longer field section:
    /// 431 Request Header Fields Too Large (RFC 6585 §5). Also bounds a chunked body's trailer section and each
    /// chunk-size line. This is the most a connection buffers. Values below 1 act as 1.
    pub max_header_bytes: usize,
    /// Largest request body (sum of chunk sizes for chunked bodies), bytes; default 1 MiB. More: 413 Content Too
    /// Large (RFC 9110 §15.5.14), sent before any of the body is read when Content-Length announces it.
    pub max_body_bytes: u64,
    /// Largest N accepted by `/bytes/N`, bytes; default 64 MiB. More: 400 Bad Request naming the limit.
    pub max_bytes_response: u64,
    /// Responses queued but not yet fully written before [`Connection::receive`] stops taking pipelined requests;
    /// default 16. Values below 1 act as 1.
    pub max_pending_responses: usize,
}

impl Config {
    /// The defaults: 8 KiB head, 1 MiB body, 64 MiB `/bytes/N`, 16 queued responses.
    pub const DEFAULT: Config = Config {
        max_header_bytes: 8 * 1024,
        max_body_bytes: 1024 * 1024,
        max_bytes_response: 64 * 1024 * 1024,
        max_pending_responses: 16,
    };
}

impl Default for Config {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What the pages show, passed in by the glue with every [`Connection::receive`] call (this module reads no
/// clocks and keeps no global counters).
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// Platform name shown on `/` and in `/health`, e.g. `"kvm"` (from the boot log's `platform:` line).
    pub platform: &'a str,
    /// Free text shown on `/` (HTML-escaped).
    pub root_message: &'a str,
    /// Time since boot, milliseconds, reported by `/health`.
    pub uptime_ms: u64,
    /// Requests the server answered before this `receive` call, all connections. `/health` reports this plus the
    /// requests this call answered up to and including itself, so it counts itself.
    pub requests: u64,
    /// Connections accepted so far (including this one), reported by `/health`.
    pub connections: u64,
}

/// Result of one [`Connection::receive`] call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Bytes of the input taken, `<= data.len()`. Fewer than offered means the response queue is full
    /// ([`Config::max_pending_responses`]): write out [`Connection::poll_output`], then offer `data[consumed..]`
    /// again. Once all output is written the next call takes at least one byte.
    pub consumed: usize,
    /// Requests answered (responses queued, error responses included) during this call; add to the server total.
    pub requests: u64,
    /// The request error this call answered with an error response, if any (for the log). The connection then
    /// closes once the response is written.
    pub error: Option<Error>,
}

/// A request the server refuses; each maps to the error response sent before the connection closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The request-line or a header field breaks RFC 9112 §3 / §5 syntax (httparse's finding). 400.
    Syntax(httparse::Error),
    /// The request names an HTTP version other than 1.0 / 1.1 (RFC 9110 §6.2). 505.
    UnsupportedVersion,
    /// The request-line did not end within `limit` bytes (RFC 9112 §3). 414.
    RequestLineTooLong {
        /// [`Config::max_header_bytes`].
        limit: usize,
    },
    /// The request head did not end within `limit` bytes, or a chunked trailer section is longer (RFC 6585 §5). 431.
    HeaderSectionTooLarge {
        /// [`Config::max_header_bytes`].
        limit: usize,
    },
    /// More than `limit` header fields (RFC 6585 §5). 431.
    TooManyHeaderFields {
        /// [`MAX_HEADER_FIELDS`].
        limit: usize,
    },
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2). 400.
    MissingHost,
    /// More than one `Host` field (RFC 9112 §3.2). 400.
    DuplicateHost,
    /// The request-target is none of origin-form, absolute-form, or `*` with OPTIONS (RFC 9112 §3.2). 400.
    InvalidTarget,
    /// A well-formed method this server does not know (RFC 9110 §9.1). 501.
    UnknownMethod,
    /// `Content-Length` is not `1*DIGIT` (RFC 9110 §8.6). 400.
    InvalidContentLength,
    /// Several `Content-Length` values that differ (RFC 9112 §6.3 item 5). 400.
    ConflictingContentLength,
    /// Both `Content-Length` and `Transfer-Encoding` (RFC 9112 §6.3 item 3, request smuggling). 400.
    ContentLengthWithTransferEncoding,
    /// `Transfer-Encoding` in an HTTP/1.0 request (RFC 9112 §6.1). 400.
    TransferEncodingInHttp10,
    /// `Transfer-Encoding` whose last coding is not a single `chunked` (RFC 9112 §6.3 item 4). 400.
    ChunkedNotFinal,
    /// A transfer coding other than `chunked`, e.g. `gzip, chunked` (RFC 9112 §6.1). 501.
    UnsupportedTransferCoding,
    /// A chunked body that breaks the RFC 9112 §7.1 grammar; `reason` says where. 400.
    InvalidChunk {
        /// What was wrong, e.g. "chunk-size is not hexadecimal".
        reason: &'static str,
    },
    /// The body is longer than `limit` bytes (RFC 9110 §15.5.14). 413.
    BodyTooLarge {
        /// [`Config::max_body_bytes`].
        limit: u64,
    },
    /// An `Expect` value other than `100-continue` (RFC 9110 §10.1.1). 417.
    UnsupportedExpectation,
    /// `/bytes/N` where N is not a decimal number of bytes that fits in 64 bits. 400.
    InvalidBytesLength {
        /// [`Config::max_bytes_response`].
        max: u64,
    },
    /// `/bytes/N` with N above `max`. 400.
    BytesLengthTooLarge {
        /// N from the request-target, bytes.
        requested: u64,
        /// [`Config::max_bytes_response`].
        max: u64,
    },
    /// The idle timeout hit while a request was incomplete ([`Connection::timeout`], RFC 9110 §15.5.9). 408.
    Timeout,
}

impl Error {
    /// The response status code this error is answered with (RFC 9110 §15).
    pub fn status_code(&self) -> u16 {
        self.status().code()
    }

    /// The response status this error is answered with (RFC 9110 §15).
    pub fn status(&self) -> Status {
        match self {
            Error::Syntax(_)
            | Error::MissingHost
            | Error::DuplicateHost
            | Error::InvalidTarget
            | Error::InvalidContentLength
            | Error::ConflictingContentLength
            | Error::ContentLengthWithTransferEncoding
            | Error::TransferEncodingInHttp10
            | Error::ChunkedNotFinal
            | Error::InvalidChunk { .. }
            | Error::InvalidBytesLength { .. }
            | Error::BytesLengthTooLarge { .. } => Status::BAD_REQUEST,
            Error::UnsupportedVersion => Status::HTTP_VERSION_NOT_SUPPORTED,
            Error::RequestLineTooLong { .. } => Status::URI_TOO_LONG,
            Error::HeaderSectionTooLarge { .. } | Error::TooManyHeaderFields { .. } => {
                Status::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            Error::UnknownMethod | Error::UnsupportedTransferCoding => Status::NOT_IMPLEMENTED,
            Error::BodyTooLarge { .. } => Status::CONTENT_TOO_LARGE,
            Error::UnsupportedExpectation => Status::EXPECTATION_FAILED,
            Error::Timeout => Status::REQUEST_TIMEOUT,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Syntax(e) => {
                write!(f, "malformed request ({e}): request-line or header field breaks RFC 9112 §3/§5")
            }
            Error::UnsupportedVersion => {
                f.write_str("unsupported HTTP version: this server speaks HTTP/1.0 and HTTP/1.1")
            }
            Error::RequestLineTooLong { limit } => {
                write!(f, "request-line longer than {limit} bytes (max_header_bytes): shorten the request-target")
            }
            Error::HeaderSectionTooLarge { limit } => {
                write!(
                    f,
                    "request header section longer than {limit} bytes (max_header_bytes): send fewer or shorter fields"
                )
            }
            Error::TooManyHeaderFields { limit } => write!(f, "more than {limit} header fields in the request"),
            Error::MissingHost => f.write_str("HTTP/1.1 request without a Host header field (RFC 9112 §3.2)"),
            Error::DuplicateHost => f.write_str("more than one Host header field (RFC 9112 §3.2)"),
            Error::InvalidTarget => f.write_str(
                "request-target must be \"/path\", \"http://host/path\" or \"*\" with OPTIONS (RFC 9112 §3.2)",
            ),
            Error::UnknownMethod => f.write_str("method not implemented: this server implements GET and HEAD"),
            Error::InvalidContentLength => f.write_str("Content-Length is not a decimal number (RFC 9110 §8.6)"),
            Error::ConflictingContentLength => f.write_str("Content-Length header fields disagree (RFC 9112 §6.3)"),
            Error::ContentLengthWithTransferEncoding => {
                f.write_str("both Content-Length and Transfer-Encoding: send only one (RFC 9112 §6.3)")
            }
            Error::TransferEncodingInHttp10 => f.write_str("Transfer-Encoding in an HTTP/1.0 request (RFC 9112 §6.1)"),
            Error::ChunkedNotFinal => {
                f.write_str("Transfer-Encoding must end with exactly one \"chunked\" coding (RFC 9112 §6.3)")
            }
            Error::UnsupportedTransferCoding => {
                f.write_str("transfer codings other than \"chunked\" are not implemented (RFC 9112 §6.1)")
            }
            Error::InvalidChunk { reason } => write!(f, "malformed chunked body: {reason} (RFC 9112 §7.1)"),
            Error::BodyTooLarge { limit } => write!(f, "request body longer than {limit} bytes (max_body_bytes)"),
            Error::UnsupportedExpectation => f.write_str("the only supported expectation is \"100-continue\""),
            Error::InvalidBytesLength { max } => {
                write!(f, "/bytes/N needs N as a decimal number of bytes from 0 to {max}, e.g. /bytes/1024")
            }
            Error::BytesLengthTooLarge { requested, max } => {
                write!(f, "/bytes/{requested} asks for more than the maximum of {max} bytes (max_bytes_response)")
            }
            Error::Timeout => f.write_str("request not completed before the idle timeout"),
        }
    }
}

/// A response status code (RFC 9110 §15), 100..=599, with the reason phrases of the codes this crate names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Status(u16);

impl Status {
    /// 100 Continue (RFC 9110 §15.2.1).
    pub const CONTINUE: Status = Status(100);
    /// 200 OK (RFC 9110 §15.3.1).
    pub const OK: Status = Status(200);
    /// 201 Created (RFC 9110 §15.3.2).
    pub const CREATED: Status = Status(201);
    /// 204 No Content (RFC 9110 §15.3.5): sent without `Content-Type`, `Content-Length` or content.
    pub const NO_CONTENT: Status = Status(204);
    /// 206 Partial Content (RFC 9110 §15.3.7).
    pub const PARTIAL_CONTENT: Status = Status(206);
    /// 301 Moved Permanently (RFC 9110 §15.4.2).
    pub const MOVED_PERMANENTLY: Status = Status(301);
    /// 400 Bad Request (RFC 9110 §15.5.1).
    pub const BAD_REQUEST: Status = Status(400);
    /// 403 Forbidden (RFC 9110 §15.5.4).
    pub const FORBIDDEN: Status = Status(403);
    /// 404 Not Found (RFC 9110 §15.5.5).
    pub const NOT_FOUND: Status = Status(404);
    /// 405 Method Not Allowed (RFC 9110 §15.5.6); send `Allow` with it.
    pub const METHOD_NOT_ALLOWED: Status = Status(405);
    /// 408 Request Timeout (RFC 9110 §15.5.9).
    pub const REQUEST_TIMEOUT: Status = Status(408);
    /// 409 Conflict (RFC 9110 §15.5.10).
    pub const CONFLICT: Status = Status(409);
    /// 413 Content Too Large (RFC 9110 §15.5.14).
    pub const CONTENT_TOO_LARGE: Status = Status(413);
    /// 414 URI Too Long (RFC 9110 §15.5.15).
    pub const URI_TOO_LONG: Status = Status(414);
    /// 416 Range Not Satisfiable (RFC 9110 §15.5.17); send `Content-Range: bytes */LENGTH` with it.
    pub const RANGE_NOT_SATISFIABLE: Status = Status(416);
    /// 417 Expectation Failed (RFC 9110 §15.5.18).
    pub const EXPECTATION_FAILED: Status = Status(417);
    /// 431 Request Header Fields Too Large (RFC 6585 §5).
    pub const REQUEST_HEADER_FIELDS_TOO_LARGE: Status = Status(431);
    /// 500 Internal Server Error (RFC 9110 §15.6.1).
    pub const INTERNAL_SERVER_ERROR: Status = Status(500);
    /// 501 Not Implemented (RFC 9110 §15.6.2).
    pub const NOT_IMPLEMENTED: Status = Status(501);
    /// 503 Service Unavailable (RFC 9110 §15.6.4).
    pub const SERVICE_UNAVAILABLE: Status = Status(503);
    /// 505 HTTP Version Not Supported (RFC 9110 §15.6.6).
    pub const HTTP_VERSION_NOT_SUPPORTED: Status = Status(505);
    /// 507 Insufficient Storage (RFC 4918 §11.5).
    pub const INSUFFICIENT_STORAGE: Status = Status(507);

    /// The status with this three-digit code; `None` outside 100..=599 (RFC 9110 §15).
    pub const fn from_code(code: u16) -> Option<Status> {
        if code >= 100 && code <= 599 {
            Some(Status(code))
        } else {
            None
        }
    }

    /// The three-digit code.
    pub const fn code(self) -> u16 {
        self.0
    }

    /// The reason phrase (RFC 9110 §15); empty for codes this crate does not name (RFC 9112 §4 allows that).
    pub fn reason(self) -> &'static str {
        match self.0 {
            100 => "Continue",
            200 => "OK",
            201 => "Created",
            204 => "No Content",
            206 => "Partial Content",
            301 => "Moved Permanently",
            304 => "Not Modified",
            400 => "Bad Request",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            409 => "Conflict",
            413 => "Content Too Large",
            414 => "URI Too Long",
            416 => "Range Not Satisfiable",
            417 => "Expectation Failed",
            431 => "Request Header Fields Too Large",
            500 => "Internal Server Error",
            501 => "Not Implemented",
            503 => "Service Unavailable",
            505 => "HTTP Version Not Supported",
            507 => "Insufficient Storage",
            _ => "",
        }
    }

    /// Whether a response with this status carries no content and no `Content-Length`: 1xx, 204 (RFC 9110 §8.6)
    /// and 304 (RFC 9110 §15.4.5).
    fn without_content(self) -> bool {
        self.0 < 200 || self.0 == 204 || self.0 == 304
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0, self.reason())
    }
}

/// What the connection says about persistence in a response (RFC 9112 §9.3, §9.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Persistence {
    /// HTTP/1.1 default: no `Connection` field.
    KeepAlive,
    /// HTTP/1.0 client asked for `keep-alive`: say `Connection: keep-alive`.
    KeepAlive10,
    /// Last response on this connection: say `Connection: close`.
    Close,
}

/// The answer chosen for a parsed request head.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Reply {
    Root,
    Health,
    Bytes(u64),
    MethodNotAllowed,
    /// `OPTIONS *`: server-wide capabilities (RFC 9110 §9.3.7).
    Options,
    /// A route the connection does not own: the app's [`Handler`] answers (404 without one).
    App(Box<AppHead>),
}

/// The parts of a request head a [`Handler`] sees, kept until the body has been read.
#[derive(Clone, Debug, PartialEq, Eq)]
struct AppHead {
    method: String,
    path: String,
    query: Option<String>,
    /// Header fields in the order received: name as sent, raw value.
    headers: Vec<(String, Vec<u8>)>,
}

impl AppHead {
    fn request<'a>(&'a self, body: &'a [u8]) -> Request<'a> {
        Request { method: &self.method, path: &self.path, query: self.query.as_deref(), headers: &self.headers, body }
    }
}

/// Message body framing of a request (RFC 9112 §6.3).
#[derive(Clone, Debug, PartialEq, Eq)]
enum BodyFraming {
    /// `remaining` body bytes follow (Content-Length).
    Length { remaining: u64 },
    /// Chunked transfer coding (RFC 9112 §7.1).
    Chunked(ChunkedDecoder),
}

impl BodyFraming {
    /// Takes body bytes from `input`, handing the content (chunk data, without framing) to `sink`; returns bytes
    /// taken and whether the body is complete.
    fn consume(&mut self, input: &[u8], config: &Config, sink: impl FnMut(&[u8])) -> Result<(usize, bool), Error> {
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

/// Where the chunked decoder is in the RFC 9112 §7.1 grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    /// In `chunk-size` (hex digits).
    Size,
    /// In `chunk-ext` (or BWS before it), until CR.
    Extension,
    /// Saw the CR ending the chunk-size line, LF next.
    SizeLf,
    /// In `chunk-data`.
    Data,
    /// After `chunk-data`, CR next.
    DataCr,
    /// After `chunk-data` CR, LF next.
    DataLf,
    /// At the start of a trailer field line or the final CRLF.
    TrailerStart,
    /// Inside a trailer field line, until CR.
    Trailer,
    /// Saw the CR ending a trailer line, LF next.
    TrailerLf,
    /// Saw the CR of the final empty line, LF next.
    EndLf,
}

/// Streaming decoder that validates a chunked body and yields its chunk data (RFC 9112 §7.1). Line endings must
/// be CRLF: bare LF is rejected because lenient chunk parsing is what request smuggling exploits.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ChunkedDecoder {
    state: ChunkState,
    /// Value of the chunk-size being read.
    size: u64,
    /// Hex digits of `size` read so far.
    digits: u32,
    /// Bytes of the current chunk-size line so far.
    line_len: usize,
    /// Bytes of `chunk-data` left in the current chunk.
    remaining: u64,
    /// Sum of chunk sizes so far.
    total: u64,
    /// Bytes of the trailer section so far.
    trailer_len: usize,
}

impl ChunkedDecoder {
    fn new() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size,
            size: 0,
            digits: 0,
            line_len: 0,
            remaining: 0,
            total: 0,
            trailer_len: 0,
        }
    }

    /// Consumes chunked-body bytes, handing chunk data to `sink`; returns bytes taken and whether the last chunk
    /// and trailer section ended. Trailer fields are validated and dropped.
    fn consume(&mut self, input: &[u8], config: &Config, mut sink: impl FnMut(&[u8])) -> Result<(usize, bool), Error> {
        let bad = |reason| Err(Error::InvalidChunk { reason });
        let mut i = 0;
        while i < input.len() {
            if self.state == ChunkState::Data {
                let n = usize::try_from(self.remaining).map_or(input.len() - i, |r| r.min(input.len() - i));
                sink(&input[i..i + n]);
                i += n;
                self.remaining -= n as u64;
                if self.remaining == 0 {
                    self.state = ChunkState::DataCr;
                }
                continue;
            }
            let b = input[i];
            i += 1;
            match self.state {
                ChunkState::Size | ChunkState::Extension | ChunkState::SizeLf => {
                    self.line_len += 1;
                    if self.line_len > config.max_header_bytes {
                        return bad("chunk-size line longer than max_header_bytes");
                    }
                }
                ChunkState::TrailerStart | ChunkState::Trailer | ChunkState::TrailerLf | ChunkState::EndLf => {
                    self.trailer_len += 1;
                    if self.trailer_len > config.max_header_bytes {
                        return Err(Error::HeaderSectionTooLarge { limit: config.max_header_bytes });
                    }
                }
                _ => {}
            }
            match self.state {
                ChunkState::Size => match (b as char).to_digit(16) {
                    Some(d) if self.digits < 16 => {
                        self.size = (self.size << 4) | u64::from(d);
                        self.digits += 1;
                    }
                    Some(_) => return bad("chunk-size does not fit in 64 bits"),
                    None if self.digits == 0 => return bad("chunk-size is not hexadecimal"),
                    None => match b {
                        b';' | b' ' | b'\t' => self.state = ChunkState::Extension,
                        b'\r' => self.state = ChunkState::SizeLf,
                        _ => return bad("unexpected byte after chunk-size"),
                    },
                },
                ChunkState::Extension => match b {
                    b'\r' => self.state = ChunkState::SizeLf,
                    b'\t' | 0x20..=0x7e | 0x80..=0xff => {}
                    _ => return bad("control character in chunk extension"),
                },
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        return bad("chunk-size line not ended by CRLF");
                    }
                    self.total = self.total.saturating_add(self.size);
                    if self.total > config.max_body_bytes {
                        return Err(Error::BodyTooLarge { limit: config.max_body_bytes });
                    }
                    self.remaining = self.size;
                    self.state = if self.size == 0 { ChunkState::TrailerStart } else { ChunkState::Data };
                    self.size = 0;
                    self.digits = 0;
                    self.line_len = 0;
                }
                ChunkState::DataCr => {
                    if b != b'\r' {
                        return bad("chunk-data longer than its chunk-size");
                    }
                    self.state = ChunkState::DataLf;
                }
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return bad("chunk-data not followed by CRLF");
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::TrailerStart => match b {
                    b'\r' => self.state = ChunkState::EndLf,
                    b'\t' | 0x20..=0x7e | 0x80..=0xff => self.state = ChunkState::Trailer,
                    _ => return bad("control character in trailer section"),
                },
                ChunkState::Trailer => match b {
                    b'\r' => self.state = ChunkState::TrailerLf,
                    b'\t' | 0x20..=0x7e | 0x80..=0xff => {}
                    _ => return bad("control character in trailer section"),
                },
                ChunkState::TrailerLf => {
                    if b != b'\n' {
                        return bad("trailer field line not ended by CRLF");
                    }
                    self.state = ChunkState::TrailerStart;
                }
                ChunkState::EndLf => {
                    if b != b'\n' {
                        return bad("chunked body not ended by CRLF");
                    }
                    return Ok((i, true));
                }
                ChunkState::Data => {}
            }
        }
        Ok((i, false))
    }
}

/// A parsed request head, reduced to what the answer needs.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Head {
    /// The method was HEAD: answer without content (RFC 9110 §9.3.2).
    head_only: bool,
    persistence: Persistence,
    /// `None`: no body (RFC 9112 §6.3 item 7).
    body: Option<BodyFraming>,
    /// Send `100 Continue` before reading the body (RFC 9110 §10.1.1).
    expect_continue: bool,
    reply: Reply,
}

/// A request refused while parsing its head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rejection {
    error: Error,
    /// The method was HEAD, so the error response carries no content.
    head_only: bool,
}

impl From<Error> for Rejection {
    fn from(error: Error) -> Self {
        Rejection { error, head_only: false }
    }
}

/// Methods defined by RFC 9110 §9 and PATCH (RFC 5789): known, so 405 rather than 501 on our routes.
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
fn parse_request(buf: &[u8], config: &Config) -> Result<Option<(usize, Head)>, Rejection> {
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

    let mut reply = choose_reply(method, target, config).map_err(reject)?;
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

/// True if the request-line's last word reads `HTTP/<digit>` with a major version other than 1, so httparse's
/// version error means 505 rather than 400 (RFC 9110 §6.2).
fn names_other_version(buf: &[u8]) -> bool {
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(buf.len());
    let line = buf[start..].split(|&b| b == b'\r' || b == b'\n').next().unwrap_or_default();
    let version = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    matches!(version, [b'H', b'T', b'T', b'P', b'/', major, ..] if major.is_ascii_digit() && *major != b'1')
}

/// The error for a request head that did not end within `limit` bytes: 414 while the request-line is still
/// open, else 431.
fn oversized_head(buf: &[u8], limit: usize) -> Error {
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

/// Routes the request-target (RFC 9112 §3.2) for `method`: the built-in routes `/`, `/health` and `/bytes/N`,
/// else [`Reply::App`]. The query string is ignored for routing.
fn choose_reply(method: &str, target: &str, config: &Config) -> Result<Reply, Error> {
    if target == "*" {
        return if method == "OPTIONS" { Ok(Reply::Options) } else { Err(Error::InvalidTarget) };
    }
    let (path, query) = split_target(target)?;
    let length = match path {
        "/" => None,
        "/health" => None,
        _ => match path.strip_prefix("/bytes/") {
            Some(n) => Some(n),
            None => {
                return Ok(Reply::App(Box::new(AppHead {
                    method: String::from(method),
                    path: String::from(path),
                    query: query.map(String::from),
                    headers: Vec::new(),
                })))
            }
        },
    };
    if method != "GET" && method != "HEAD" {
        return Ok(Reply::MethodNotAllowed);
    }
    let Some(length) = length else {
        return Ok(if path == "/" { Reply::Root } else { Reply::Health });
    };
    let max = config.max_bytes_response;
    let requested =
        parse_decimal(length.as_bytes()).filter(|&n| n != u64::MAX).ok_or(Error::InvalidBytesLength { max })?;
    if requested > max {
        return Err(Error::BytesLengthTooLarge { requested, max });
    }
    Ok(Reply::Bytes(requested))
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
    /// the response: the connection closes ([`Connection::take_content_error`] says why).
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, SourceError>;
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

/// A request for a route the connection does not own (anything but `/`, `/health` and `/bytes/N`), as a
/// [`Handler`] sees it.
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
}

impl Response {
    /// A response with `content` of type `content_type` and no extra header fields.
    pub fn new(status: Status, content_type: impl Into<Cow<'static, str>>, content: Content) -> Response {
        Response { status, content_type: content_type.into(), headers: Vec::new(), content }
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
}

/// An app's answers for the routes the connection does not own. The connection calls it synchronously from
/// [`Connection::receive`], in request order; it is shared by all connections (`&self`, `Sync`).
pub trait Handler: Sync {
    /// Looks at a request head before its body is read (`request.body` is empty). `Some(response)` answers at
    /// once: the body is then read and dropped, or, when the client waits for `100 Continue`, not read at all
    /// and the connection closes after the response (RFC 9110 §10.1.1). `None` (the default): the body is
    /// buffered, up to [`Config::max_body_bytes`] (413 beyond), and [`Handler::respond`] answers.
    fn check(&self, request: &Request<'_>) -> Option<Response> {
        let _ = request;
        None
    }

    /// Answers a request whose body (if any) has been read completely into `request.body`.
    fn respond(&self, request: &Request<'_>) -> Response;
}

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
struct Stream {
    source: Box<dyn Source>,
    len: u64,
    sent: u64,
}

/// One queued response: `data` (status line, header fields, and in-memory content), then `stream`.
struct Output {
    data: Vec<u8>,
    data_sent: usize,
    stream: Option<Stream>,
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

/// Methods the built-in routes support, as sent in `Allow` (RFC 9110 §10.2.1).
const ALLOW_FIELD: [(&str, &str); 1] = [("Allow", ALLOW)];

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
    fn new(
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
                Content::Stream { len, source } => stream = Some(Stream { source, len, sent: 0 }),
            }
        }
        Output { data, data_sent: 0, stream }
    }

    /// A handler's response, checked (see [`Response`]); a response breaking the rules becomes 500.
    fn from_response(response: Response, head_only: bool, persistence: Persistence) -> Output {
        let Response { status, content_type, headers, content } = response;
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
    fn interim_continue() -> Output {
        let status = Status::CONTINUE;
        let data = format!("HTTP/1.1 {} {}\r\n\r\n", status.code(), status.reason()).into_bytes();
        Output { data, data_sent: 0, stream: None }
    }

    /// The error response for `error`: a one-line plain-text reason and `Connection: close`.
    fn error(error: &Error, head_only: bool) -> Output {
        let text = format!("{error}\n").into_bytes();
        Output::new(error.status(), TEXT, &[], Content::Bytes(text), head_only, Persistence::Close)
    }

    fn is_done(&self) -> bool {
        self.data_sent == self.data.len() && self.stream.as_ref().is_none_or(|s| s.sent == s.len)
    }

    /// Copies the next bytes into `out`; returns how many, or how many and the content's failure.
    fn write(&mut self, out: &mut [u8]) -> Result<usize, (usize, ContentError)> {
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

/// Fills `out` with the `/bytes/N` pattern starting at content offset `offset`: byte i is `(i % 251) as u8`.
fn fill_pattern(out: &mut [u8], offset: u64) {
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

const TEXT: &str = "text/plain; charset=utf-8";

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

/// One HTTP/1.1 server connection, sans I/O (see the module docs for the driving loop).
pub struct Connection<'h> {
    config: Config,
    state: State<'h>,
    /// A partial request head, `< config.max_header_bytes` bytes. Besides this only a [`Handler`]'s request
    /// body is ever buffered.
    input: Vec<u8>,
    /// Responses in the order their requests arrived (RFC 9112 §9.3.2).
    output: VecDeque<Output>,
    /// Answers the routes the connection does not own; `None`: they are 404.
    handler: Option<&'h dyn Handler>,
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
            .field("handler", &self.handler.is_some())
            .finish()
    }
}

impl Connection<'static> {
    /// A new connection that waits for its first request and answers only the built-in routes (other paths are
    /// 404). `config`'s limits are copied; zero limits act as 1.
    pub fn new(config: &Config) -> Connection<'static> {
        Connection::build(config, None)
    }
}

impl<'h> Connection<'h> {
    /// A new connection whose routes other than `/`, `/health` and `/bytes/N` are answered by `handler`.
    pub fn with_handler(config: &Config, handler: &'h dyn Handler) -> Connection<'h> {
        Connection::build(config, Some(handler))
    }

    fn build(config: &Config, handler: Option<&'h dyn Handler>) -> Connection<'h> {
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
    /// bytes arriving after that are taken and dropped. `ctx` supplies what `/` and `/health` show. The
    /// [`Handler`] is called from here.
    pub fn receive(&mut self, data: &[u8], ctx: &Context<'_>) -> Received {
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
                            self.start(head, ctx, &mut rx);
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
    /// is read here, a buffer at a time. If a [`Source`] fails, what it produced so far is returned, the rest of
    /// the queue is dropped and the connection closes: the client sees a response shorter than its
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

    /// Why the connection stopped writing a response's content (a [`Source`] failed), once; for the log.
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
        self.output.push_back(Output::error(&error, head_only));
        self.input.clear();
        self.state = State::Closed;
        rx.requests += 1;
        rx.error = Some(error);
    }

    /// Begins answering a parsed request: a built-in response is built now, a handler's once the body is read;
    /// either is queued when the body (if any) has been read.
    fn start(&mut self, head: Head, ctx: &Context<'_>, rx: &mut Received) {
        let Head { head_only, persistence, body, expect_continue, reply } = head;
        let ready = |status, content_type, extra: &[(&str, &str)], content| {
            Pending::Ready(Output::new(status, content_type, extra, content, head_only, persistence))
        };
        let pending = match reply {
            Reply::Root => ready(Status::OK, "text/html; charset=utf-8", &[], root_page(ctx)),
            Reply::Health => {
                let json = health_json(ctx, ctx.requests.saturating_add(rx.requests).saturating_add(1));
                ready(Status::OK, "application/json", &[], json)
            }
            Reply::Bytes(n) => {
                let content = Content::Stream { len: n, source: Box::new(Pattern { offset: 0 }) };
                ready(Status::OK, "application/octet-stream", &[], content)
            }
            Reply::MethodNotAllowed => {
                let text = b"method not allowed: this resource supports GET and HEAD\n".to_vec();
                ready(Status::METHOD_NOT_ALLOWED, TEXT, &ALLOW_FIELD, Content::Bytes(text))
            }
            Reply::Options => ready(Status::OK, TEXT, &ALLOW_FIELD, Content::Bytes(Vec::new())),
            Reply::App(app) => match self.handler {
                None => {
                    let text = b"not found: the routes are /, /health and /bytes/N\n".to_vec();
                    ready(Status::NOT_FOUND, TEXT, &[], Content::Bytes(text))
                }
                Some(handler) => match handler.check(&app.request(&[])) {
                    Some(response) if expect_continue => {
                        // RFC 9110 §10.1.1: the client has not sent the body yet; answer now and close rather
                        // than read a body that may never come.
                        let output = Output::from_response(response, head_only, Persistence::Close);
                        self.finish(output, Persistence::Close, rx);
                        return;
                    }
                    Some(response) => Pending::Ready(Output::from_response(response, head_only, persistence)),
                    None => Pending::App(app, handler),
                },
            },
        };
        match body {
            None => {
                let output = Self::complete(pending, BodyBuffer::default(), head_only, persistence);
                self.finish(output, persistence, rx);
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
            self.finish(output, persistence, rx);
        }
    }

    fn finish(&mut self, response: Output, persistence: Persistence, rx: &mut Received) {
        self.output.push_back(response);
        rx.requests += 1;
        self.state = if persistence == Persistence::Close { State::Closed } else { State::Head };
    }
}

/// The `/` page: title "Zirvium", the root message and the platform, HTML-escaped.
fn root_page(ctx: &Context<'_>) -> Content {
    let mut page = String::with_capacity(256 + ctx.root_message.len());
    page.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>Zirvium</title></head>\n");
    page.push_str("<body>\n<h1>Zirvium</h1>\n<p>");
    push_html_escaped(&mut page, ctx.root_message);
    page.push_str("</p>\n<p>Platform: ");
    push_html_escaped(&mut page, ctx.platform);
    page.push_str("</p>\n</body>\n</html>\n");
    Content::Bytes(page.into_bytes())
}

/// The `/health` document:
/// `{"status":"ok","uptime_ms":N,"platform":"kvm","requests":N,"connections":N}`.
fn health_json(ctx: &Context<'_>, requests: u64) -> Content {
    let mut json = String::with_capacity(128);
    json.push_str("{\"status\":\"ok\",\"uptime_ms\":");
    // fmt::Write for String never fails.
    let _ = write!(json, "{}", ctx.uptime_ms);
    json.push_str(",\"platform\":");
    push_json_string(&mut json, ctx.platform);
    let _ = write!(json, ",\"requests\":{requests},\"connections\":{}}}", ctx.connections);
    Content::Bytes(json.into_bytes())
}

/// Test helpers shared with the other modules' tests: drive a connection, parse its output.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    const MESSAGE: &str = "Hello <from> Zirvium & friends";

    pub(crate) fn ctx(requests: u64) -> Context<'static> {
        Context { platform: "kvm", root_message: MESSAGE, uptime_ms: 1234, requests, connections: 7 }
    }

    /// What one connection produced for a whole input.
    #[derive(Debug, Default, PartialEq, Eq)]
    struct Run {
        out: Vec<u8>,
        requests: u64,
        errors: Vec<Error>,
        closed: bool,
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
    fn drive(conn: &mut Connection, input: &[u8], pieces: &[usize], out_len: usize, run: &mut Run) {
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
                let r = conn.receive(&chunk[off..], &ctx(run.requests));
                assert!(r.consumed <= chunk.len() - off);
                // Output is always drained before the call, so the call must make progress.
                assert!(r.consumed > 0, "receive took nothing with an empty output queue");
                off += r.consumed;
                run.requests += r.requests;
                run.errors.extend(r.error);
                assert!(conn.input.len() < conn.config.max_header_bytes);
                drain(conn, &mut buf, &mut run.out);
            }
        }
        run.closed = conn.wants_close();
    }

    fn run_with(config: &Config, input: &[u8], pieces: &[usize], out_len: usize) -> Run {
        let mut conn = Connection::new(config);
        let mut run = Run::default();
        drive(&mut conn, input, pieces, out_len, &mut run);
        run
    }

    fn feed(input: &[u8]) -> Run {
        run_with(&Config::default(), input, &[usize::MAX], 4096)
    }

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
    fn exchange(input: &str) -> (Vec<Response>, Run) {
        let run = feed(input.as_bytes());
        (parse_responses(&run.out, &[]), run)
    }

    /// Asserts a single error response with `status` that closes the connection.
    fn assert_error(input: &[u8], status: u16, error: Error) {
        let run = feed(input);
        let responses = parse_responses(&run.out, &[]);
        assert_eq!(responses.len(), 1, "{:?}", String::from_utf8_lossy(&run.out));
        assert_eq!(responses[0].status, status, "{}", responses[0].text());
        assert_eq!(responses[0].header("connection"), Some("close"));
        assert_eq!(responses[0].text(), format!("{error}\n"));
        assert_eq!(run.errors, vec![error]);
        assert!(run.closed);
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
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
            r#"{"status":"ok","uptime_ms":1234,"platform":"kvm","requests":1,"connections":7}"#
        );
    }

    #[test]
    fn health_counts_itself_and_earlier_pipelined_requests() {
        let input = format!("{}{}{}", get("/"), get("/nope"), get("/health"));
        let mut conn = Connection::new(&Config::default());
        let r = conn.receive(input.as_bytes(), &ctx(40));
        assert_eq!(r.requests, 3);
        let mut out = Vec::new();
        drain(&mut conn, &mut [0u8; 512], &mut out);
        let responses = parse_responses(&out, &[]);
        assert!(responses[2].text().contains(r#""requests":43,"#), "{}", responses[2].text());
    }

    #[test]
    fn health_escapes_platform_as_json() {
        let c = Context { platform: "a\"b\\c\n", ..ctx(0) };
        let mut conn = Connection::new(&Config::default());
        conn.receive(get("/health").as_bytes(), &c);
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
        let n = Config::DEFAULT.max_bytes_response;
        let mut conn = Connection::new(&Config::default());
        conn.receive(get(&format!("/bytes/{n}")).as_bytes(), &ctx(0));
        let queued = conn.output.front().expect("response queued");
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
        let config = Config { max_bytes_response: 1000, ..Config::default() };
        let ok = run_with(&config, get("/bytes/1000").as_bytes(), &[usize::MAX], 64);
        assert_eq!(parse_responses(&ok.out, &[])[0].body, pattern(1000));
        let run = run_with(&config, get("/bytes/1001").as_bytes(), &[usize::MAX], 64);
        let responses = parse_responses(&run.out, &[]);
        assert_eq!(responses[0].status, 400);
        assert!(responses[0].text().contains("1000"), "message names the limit: {}", responses[0].text());
        assert_eq!(run.errors, vec![Error::BytesLengthTooLarge { requested: 1001, max: 1000 }]);
    }

    #[test]
    fn bytes_above_default_max_is_400() {
        let n = Config::DEFAULT.max_bytes_response + 1;
        let max = Config::DEFAULT.max_bytes_response;
        assert_error(get(&format!("/bytes/{n}")).as_bytes(), 400, Error::BytesLengthTooLarge { requested: n, max });
    }

    #[test]
    fn bytes_with_non_numeric_length_is_400() {
        let max = Config::DEFAULT.max_bytes_response;
        for path in ["/bytes/abc", "/bytes/", "/bytes/-1", "/bytes/+1", "/bytes/1x", "/bytes/1/2", "/bytes/%31"] {
            assert_error(get(path).as_bytes(), 400, Error::InvalidBytesLength { max });
        }
        assert_error(get("/bytes/99999999999999999999999").as_bytes(), 400, Error::InvalidBytesLength { max });
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
    fn head_error_response_has_no_content() {
        let run = feed(b"HEAD /bytes/x HTTP/1.1\r\nHost: test\r\n\r\n");
        let responses = parse_responses(&run.out, &[true]);
        assert_eq!(responses.len(), 1);
        assert_eq!(responses[0].status, 400);
        assert!(responses[0].body.is_empty());
        assert!(run.out.ends_with(b"\r\n\r\n"));
    }

    #[test]
    fn keep_alive_serves_100_requests_on_one_connection() {
        let mut conn = Connection::new(&Config::default());
        let mut buf = [0u8; 1500];
        for i in 0..100u64 {
            let request = get(&format!("/bytes/{i}"));
            let r = conn.receive(request.as_bytes(), &ctx(i));
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
        let mut conn = Connection::new(&Config::default());
        let r = conn.receive(input.as_bytes(), &ctx(0));
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
            let mut conn = Connection::new(&Config::default());
            let mut split = Run::default();
            drive(&mut conn, &input[..cut], &[usize::MAX], 64, &mut split);
            drive(&mut conn, &input[cut..], &[usize::MAX], 64, &mut split);
            assert_eq!(split, whole, "split at byte {cut}");
        }
    }

    #[test]
    fn partial_request_waits_for_more_bytes() {
        let mut conn = Connection::new(&Config::default());
        let r = conn.receive(b"GET /health HTTP/1.1\r\nHost: te", &ctx(0));
        assert_eq!((r.consumed, r.requests), (30, 0));
        assert!(!conn.has_output() && !conn.is_idle() && !conn.wants_close());
        let r = conn.receive(b"st\r\n\r\n", &ctx(0));
        assert_eq!((r.consumed, r.requests), (6, 1));
        assert!(conn.has_output());
    }

    #[test]
    fn full_response_queue_pushes_back_and_resumes() {
        let config = Config { max_pending_responses: 2, ..Config::default() };
        let input: String = (0..5).map(|i| get(&format!("/bytes/{i}"))).collect();
        let mut conn = Connection::new(&config);
        let r = conn.receive(input.as_bytes(), &ctx(0));
        assert_eq!(r.requests, 2);
        assert_eq!(r.consumed, get("/bytes/0").len() * 2);
        let again = conn.receive(&input.as_bytes()[r.consumed..], &ctx(0));
        assert_eq!(again, Received::default(), "nothing taken while the queue is full");
        // The glue drives the rest; all five are answered in order.
        let run = run_with(&config, input.as_bytes(), &[usize::MAX], 16);
        let bodies: Vec<Vec<u8>> = parse_responses(&run.out, &[]).into_iter().map(|r| r.body).collect();
        assert_eq!(bodies, (0..5).map(pattern).collect::<Vec<_>>());
    }

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
    fn chunked_body_is_decoded_and_dropped() {
        let body = "5\r\nhello\r\n1a; name=\"v\" ; x\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nA: 1\r\nB: 2\r\n\r\n";
        let input =
            format!("GET /bytes/4 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n{body}{}", get("/bytes/1"));
        let whole = feed(input.as_bytes());
        let bodies: Vec<Vec<u8>> = parse_responses(&whole.out, &[]).into_iter().map(|r| r.body).collect();
        assert_eq!(bodies, [pattern(4), pattern(1)]);
        assert!(!whole.closed);
        assert_eq!(run_with(&Config::default(), input.as_bytes(), &[1], 5), whole);
    }

    #[test]
    fn malformed_chunked_body_is_400() {
        let cases: [(&str, &str); 9] = [
            ("x\r\n", "chunk-size is not hexadecimal"),
            ("\r\n", "chunk-size is not hexadecimal"),
            ("5\nhello\r\n0\r\n\r\n", "unexpected byte after chunk-size"),
            ("5\r\nhello!\r\n0\r\n\r\n", "chunk-data longer than its chunk-size"),
            ("5\r\nhello\r0\r\n\r\n", "chunk-data not followed by CRLF"),
            ("5;a\x01\r\n", "control character in chunk extension"),
            ("11111111111111111\r\n", "chunk-size does not fit in 64 bits"),
            ("0\r\nA: 1\rx\r\n\r\n", "trailer field line not ended by CRLF"),
            ("0\r\nA: 1\n\r\n", "control character in trailer section"),
        ];
        for (body, reason) in cases {
            let input = format!("GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
            assert_error(input.as_bytes(), 400, Error::InvalidChunk { reason });
        }
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
    fn input_buffer_stays_bounded_under_a_flood() {
        let flood = vec![b'a'; 1 << 20];
        let run = run_with(&Config::default(), &flood, &[1000], 64);
        assert_eq!(run.errors, vec![Error::RequestLineTooLong { limit: Config::DEFAULT.max_header_bytes }]);
        assert!(run.closed);
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
        let mut conn = Connection::new(&Config::default());
        let r = conn.receive(input.as_bytes(), &ctx(0));
        assert_eq!((r.consumed, r.requests), (input.len(), 1));
        assert!(!conn.wants_close(), "the response is still queued");
        let mut out = Vec::new();
        drain(&mut conn, &mut [0u8; 64], &mut out);
        let responses = parse_responses(&out, &[]);
        assert_eq!(responses.len(), 1);
        assert_eq!(responses[0].header("connection"), Some("close"));
        assert!(conn.wants_close());
        let r = conn.receive(get("/").as_bytes(), &ctx(0));
        assert_eq!((r.requests, conn.has_output()), (0, false), "nothing is read after close");
    }

    #[test]
    fn expect_100_continue_gets_interim_response() {
        let input = "POST /bytes/1 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
        let mut conn = Connection::new(&Config::default());
        conn.receive(input.as_bytes(), &ctx(0));
        let mut out = Vec::new();
        drain(&mut conn, &mut [0u8; 64], &mut out);
        assert_eq!(out, b"HTTP/1.1 100 Continue\r\n\r\n");
        conn.receive(b"ok", &ctx(0));
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
        let mut conn = Connection::new(&Config::default());
        assert!(conn.is_idle());
        assert_eq!(conn.timeout(), None);
        assert!(conn.wants_close() && !conn.has_output());

        let mut conn = Connection::new(&Config::default());
        conn.receive(b"GET / HT", &ctx(0));
        assert!(!conn.is_idle());
        assert_eq!(conn.timeout(), Some(Error::Timeout));
        let mut out = Vec::new();
        drain(&mut conn, &mut [0u8; 64], &mut out);
        let responses = parse_responses(&out, &[]);
        assert_eq!((responses[0].status, responses[0].header("connection")), (408, Some("close")));
        assert!(conn.wants_close());

        let mut conn = Connection::new(&Config::default());
        conn.receive(format!("{}GET /par", get("/bytes/5")).as_bytes(), &ctx(0));
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
        let mut conn = Connection::new(&Config::default());
        conn.receive(input.as_bytes(), &ctx(0));
        assert_eq!(conn.poll_output(&mut []), 0);
        assert!(conn.has_output());
    }

    #[test]
    fn zero_limits_do_not_stall() {
        let config = Config { max_header_bytes: 0, max_pending_responses: 0, ..Config::default() };
        let run = run_with(&config, get("/").as_bytes(), &[usize::MAX], 64);
        assert_eq!(run.errors, vec![Error::RequestLineTooLong { limit: 1 }]);
    }

    #[test]
    fn every_error_has_an_error_status_and_text() {
        let errors = [
            Error::Syntax(httparse::Error::Token),
            Error::UnsupportedVersion,
            Error::RequestLineTooLong { limit: 1 },
            Error::HeaderSectionTooLarge { limit: 1 },
            Error::TooManyHeaderFields { limit: 1 },
            Error::MissingHost,
            Error::DuplicateHost,
            Error::InvalidTarget,
            Error::UnknownMethod,
            Error::InvalidContentLength,
            Error::ConflictingContentLength,
            Error::ContentLengthWithTransferEncoding,
            Error::TransferEncodingInHttp10,
            Error::ChunkedNotFinal,
            Error::UnsupportedTransferCoding,
            Error::InvalidChunk { reason: "r" },
            Error::BodyTooLarge { limit: 1 },
            Error::UnsupportedExpectation,
            Error::InvalidBytesLength { max: 1 },
            Error::BytesLengthTooLarge { requested: 2, max: 1 },
            Error::Timeout,
        ];
        for error in errors {
            assert!((400..600).contains(&error.status_code()), "{error:?}");
            assert!(error.to_string().len() > 10, "{error:?}");
        }
    }

    /// xorshift64 (Marsaglia 2003): deterministic pseudo-random numbers for the fuzz tests.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
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

    #[test]
    fn status_codes_and_reasons() {
        assert_eq!(Status::from_code(99), None);
        assert_eq!(Status::from_code(600), None);
        assert_eq!(Status::from_code(507), Some(Status::INSUFFICIENT_STORAGE));
        assert_eq!(Status::INSUFFICIENT_STORAGE.to_string(), "507 Insufficient Storage");
        assert_eq!(Status::from_code(299).map(|s| s.reason()), Some(""));
        assert!(Status::NO_CONTENT.without_content() && Status::CONTINUE.without_content());
        assert!(!Status::OK.without_content());
    }

    /// What `respond` saw: method, path, query, header names, body.
    type Seen = (String, String, Option<String>, Vec<String>, Vec<u8>);

    /// A handler for the tests: records what it sees and answers by path.
    #[derive(Default)]
    struct TestApp {
        /// One entry per `respond` call.
        seen: std::sync::Mutex<Vec<Seen>>,
        checks: std::sync::atomic::AtomicUsize,
        /// Largest buffer a streamed source was asked to fill.
        largest_read: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    /// `/stream/N` content: the `/bytes/N` pattern, recording the largest read.
    struct Counted {
        offset: u64,
        largest: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Source for Counted {
        fn read(&mut self, buf: &mut [u8]) -> Result<usize, SourceError> {
            self.largest.fetch_max(buf.len(), std::sync::atomic::Ordering::Relaxed);
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
        fn check(&self, request: &Request<'_>) -> Option<super::Response> {
            self.checks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            assert!(request.body.is_empty(), "check sees no body");
            (request.path == "/early").then(|| super::Response::text(Status::BAD_REQUEST, "refused early\n"))
        }

        fn respond(&self, request: &Request<'_>) -> super::Response {
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
                return super::Response::new(Status::OK, "application/octet-stream", Content::Stream { len, source });
            }
            match request.path {
                "/echo" => {
                    super::Response::new(Status::CREATED, "application/x-echo", Content::Bytes(request.body.to_vec()))
                        .with_header("X-Method", request.method)
                        .with_header("X-Host", String::from_utf8_lossy(request.header("host").unwrap_or(b"?")))
                }
                "/empty" => super::Response::empty(Status::NO_CONTENT).with_header("X-Done", "yes"),
                "/storage" => super::Response::text(Status::INSUFFICIENT_STORAGE, "full\n"),
                "/bad-value" => super::Response::text(Status::OK, "x").with_header("X-Bad", "a\r\nInjected: yes"),
                "/bad-name" => super::Response::text(Status::OK, "x").with_header("Bad Name", "v"),
                "/reserved" => super::Response::text(Status::OK, "x").with_header("content-length", "1"),
                "/bad-type" => super::Response::new(Status::OK, "text/html\n", Content::Bytes(Vec::new())),
                "/interim" => super::Response::empty(Status::CONTINUE),
                "/fail" => super::Response::new(
                    Status::OK,
                    "application/octet-stream",
                    Content::Stream { len: 10_000, source: Box::new(Breaks { good: 3000, fail: true }) },
                ),
                "/short" => super::Response::new(
                    Status::OK,
                    "application/octet-stream",
                    Content::Stream { len: 100, source: Box::new(Breaks { good: 50, fail: false }) },
                ),
                _ => super::Response::text(Status::NOT_FOUND, "no such thing\n"),
            }
        }
    }

    fn run_app(app: &TestApp, config: &Config, input: &[u8], pieces: &[usize], out_len: usize) -> Run {
        let mut conn = Connection::with_handler(config, app);
        let mut run = Run::default();
        drive(&mut conn, input, pieces, out_len, &mut run);
        run
    }

    fn app_exchange(app: &TestApp, input: &[u8]) -> (Vec<Response>, Run) {
        let run = run_app(app, &Config::default(), input, &[usize::MAX], 4096);
        (parse_responses(&run.out, &[]), run)
    }

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
    fn built_in_routes_win_over_the_handler() {
        let app = TestApp::default();
        let input = format!("{}{}{}POST / HTTP/1.1\r\nHost: x\r\n\r\n", get("/"), get("/health"), get("/bytes/3"));
        let (responses, _) = app_exchange(&app, input.as_bytes());
        assert_eq!(responses.iter().map(|r| r.status).collect::<Vec<_>>(), [200, 200, 200, 405]);
        assert_eq!(responses[2].body, pattern(3));
        assert!(app.seen.lock().unwrap().is_empty());
        assert_eq!(app.checks.load(std::sync::atomic::Ordering::Relaxed), 0);
        // Other paths go to the handler, including ones that only look like built-in routes.
        for path in ["/nope", "/health/", "/bytes", "//"] {
            let (responses, _) = app_exchange(&app, get(path).as_bytes());
            assert_eq!((responses[0].status, responses[0].text()), (404, "no such thing\n"), "{path}");
        }
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
    fn streamed_content_is_read_a_buffer_at_a_time() {
        let app = TestApp::default();
        let n = 1 << 20;
        let mut conn = Connection::with_handler(&Config::default(), &app);
        conn.receive(get(&format!("/stream/{n}")).as_bytes(), &ctx(0));
        let queued = conn.output.front().expect("response queued");
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
            conn.receive(input.as_bytes(), &ctx(0));
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
}
