//! Zirvium's HTTP/1.1 server: a sans-I/O connection engine (RFC 9112 message syntax and framing, RFC 9110
//! semantics) that knows no routes and hands every request to an app [`Handler`]; handlers for static files
//! ([`files`]) and the demo routes ([`demo`]: `/`, `/health`, `/bytes/N`); the app arguments every HTTP appliance
//! shares ([`settings`]); the one accept loop and connection driver they all run ([`server`]); and its 503 answer
//! while memory is low ([`shed`]).
//!
//! [`Connection`] never touches a socket or a clock. [`server::serve_connection`] feeds it the bytes read from a
//! TCP stream with [`Connection::receive`] and writes out whatever [`Connection::poll_output`] puts into its
//! buffer:
//!
//! ```text
//! let mut conn = Connection::with_handler(&config, &app);
//! loop {
//!     let n = socket.read(&mut rx).await;          // n == 0 (FIN): conn.receive_eof()
//!     let mut off = 0;
//!     loop {
//!         let r = conn.receive(&rx[off..n]);        // calls the handler for each complete request
//!         off += r.consumed;
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
//! - Methods: a method RFC 9110 §9 defines (GET, HEAD, POST, PUT, DELETE, ...) or PATCH goes to the handler,
//!   which decides (405 with `Allow` on routes without it); a well-formed method nobody defines (including
//!   lower-case `get`, methods are case-sensitive) is 501 (RFC 9110 §9.1); a method that is not a token is 400.
//! - Routing is the handler's: the connection answers only `OPTIONS *` (200 with `Allow: GET, HEAD`). Every
//!   path goes to the [`Handler`]: [`Handler::check`] sees the head and may answer at once, else the body is
//!   buffered (at most [`Config::max_body_bytes`]) and [`Handler::respond`] answers with a [`Response`]: status,
//!   content type, extra header fields, and content in memory or streamed from a [`Source`] (a file) while it
//!   is written.
//! - Message body framing (RFC 9112 §6.3): `Content-Length` (identical repeated values are accepted, differing ones
//!   are 400) or `Transfer-Encoding: chunked`, which is decoded strictly (CRLF line endings, RFC 9112 §7.1);
//!   trailer fields are dropped. Both headers together is 400 (request smuggling defence); a transfer coding
//!   other than chunked is 501; chunked not last is 400; Transfer-Encoding in HTTP/1.0 is 400. A body larger than
//!   [`Config::max_body_bytes`] is 413. The body of a request answered from its head is read and dropped; one
//!   for [`Handler::respond`] is buffered (503 if memory runs out, and the connection stays usable).
//! - `Expect: 100-continue` on a request with a body gets an interim `100 Continue` before the body is read
//!   (RFC 9110 §10.1.1), unless [`Handler::check`] answers first; any other expectation is 417.
//! - Persistence (RFC 9112 §9.3): HTTP/1.1 keeps the connection open unless `Connection: close`; HTTP/1.0 closes
//!   unless `Connection: keep-alive` (then the response says `Connection: keep-alive`). Pipelined requests are
//!   answered in order. After every error response ([`Error`]: 400, 408, 413, 414, 417, 431, 501, 505) and every
//!   [`Response::close`] answer the connection closes and says `Connection: close`.
//! - Every response is HTTP/1.1 with `Server: zirvium`, `Content-Type` and `Content-Length` (neither on 204,
//!   RFC 9110 §8.6); no `Date` (the server has no trustworthy clock, RFC 9110 §6.6.1). HEAD answers carry the
//!   same header fields as GET and no content (RFC 9110 §9.3.2).
//! - Memory per connection is bounded: at most `max_header_bytes` of a partial request head are buffered, a
//!   body only for [`Handler::respond`] and at most `max_body_bytes`, at most [`Config::max_pending_responses`]
//!   responses are queued, and [`Content::Stream`] content (files, `/bytes/N`) is produced while it is written,
//!   so a 64 MiB response costs no more than a small one.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

mod chunked;
mod config;
mod connection;
pub mod demo;
mod error;
pub mod files;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod handler;
mod output;
mod request;
mod response;
pub mod server;
pub mod settings;
pub mod shed;
mod status;
#[cfg(test)]
mod testing;
#[cfg(feature = "vfs")]
pub mod vfs;

pub use config::{Config, MAX_HEADER_FIELDS};
pub use connection::{Connection, Received};
pub use error::Error;
pub use handler::{Handler, Request};
pub use output::ContentError;
pub use response::{Content, Response, Source, SourceError};
pub use server::{run, serve, serve_connection, Transport};
pub use settings::{parse_args, parse_number, ArgError, Settings};
pub use status::Status;
