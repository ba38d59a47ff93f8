//! Response status codes (RFC 9110 §15) and their reason phrases.

use core::fmt;

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
    pub(crate) fn without_content(self) -> bool {
        self.0 < 200 || self.0 == 204 || self.0 == 304
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0, self.reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

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
}
