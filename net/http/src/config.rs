//! Limits of one connection ([`Config`]): how much of a request it buffers and how many responses it queues.

/// Header fields `httparse` can hold per request; a request with more is answered 431 (RFC 6585 §5).
pub const MAX_HEADER_FIELDS: usize = 32;

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
    /// Responses queued but not yet fully written before [`crate::Connection::receive`] stops taking pipelined
    /// requests; default 16. Values below 1 act as 1.
    pub max_pending_responses: usize,
}

impl Config {
    /// The defaults: 8 KiB head, 1 MiB body, 16 queued responses.
    pub const DEFAULT: Config =
        Config { max_header_bytes: 8 * 1024, max_body_bytes: 1024 * 1024, max_pending_responses: 16 };
}

impl Default for Config {
    fn default() -> Self {
        Self::DEFAULT
    }
}
