//! Why a request is refused ([`Error`]): each maps to the error response sent before the connection closes.

use crate::status::Status;
use core::fmt;

/// A request the server refuses; each maps to the error response sent before the connection closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The request-line or a header field breaks RFC 9112 §3 / §5 syntax (httparse's finding). 400.
    Syntax(httparse::Error),
    /// The request names an HTTP version other than 1.0 / 1.1 (RFC 9110 §6.2). 505.
    UnsupportedVersion,
    /// The request-line did not end within `limit` bytes (RFC 9112 §3). 414.
    RequestLineTooLong {
        /// [`crate::Config::max_header_bytes`].
        limit: usize,
    },
    /// The request head did not end within `limit` bytes, or a chunked trailer section is longer (RFC 6585 §5). 431.
    HeaderSectionTooLarge {
        /// [`crate::Config::max_header_bytes`].
        limit: usize,
    },
    /// More than `limit` header fields (RFC 6585 §5). 431.
    TooManyHeaderFields {
        /// [`crate::MAX_HEADER_FIELDS`].
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
        /// [`crate::Config::max_body_bytes`].
        limit: u64,
    },
    /// An `Expect` value other than `100-continue` (RFC 9110 §10.1.1). 417.
    UnsupportedExpectation,
    /// The idle timeout hit while a request was incomplete ([`crate::Connection::timeout`], RFC 9110 §15.5.9). 408.
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
            | Error::InvalidChunk { .. } => Status::BAD_REQUEST,
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
            Error::Timeout => f.write_str("request not completed before the idle timeout"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

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
            Error::Timeout,
        ];
        for error in errors {
            assert!((400..600).contains(&error.status_code()), "{error:?}");
            assert!(error.to_string().len() > 10, "{error:?}");
        }
    }
}
