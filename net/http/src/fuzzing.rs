//! Entry points for the fuzz targets (`fuzz/`, feature `fuzzing`): the crate's private parsers, unchanged,
//! behind thin public wrappers. Not part of the server's API.

use crate::chunked::ChunkedDecoder;
use crate::config::Config;
use crate::connection::Connection;
use crate::error::Error;
use crate::request::parse_request;

/// Parses the request head at the start of `buf` (RFC 9112 §2-§6, as [`Connection::receive`] does). `Ok(None)`:
/// incomplete; `Ok(Some(len))`: the head is `buf[..len]`. Errors: the error the connection would answer with.
pub fn parse_head(buf: &[u8], config: &Config) -> Result<Option<usize>, Error> {
    match parse_request(buf, config) {
        Ok(Some((len, _))) => Ok(Some(len)),
        Ok(None) => Ok(None),
        Err(rejection) => Err(rejection.error),
    }
}

/// The strict streaming decoder of chunked request bodies (RFC 9112 §7.1) the connection uses.
#[derive(Clone, Debug)]
pub struct Chunked(ChunkedDecoder);

impl Chunked {
    /// A decoder at the start of a chunked body.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Chunked {
        Chunked(ChunkedDecoder::new())
    }

    /// Consumes chunked-body bytes, handing chunk data to `sink`; returns bytes taken (`<= input.len()`) and
    /// whether the body ended. Errors: [`Error::InvalidChunk`], [`Error::BodyTooLarge`],
    /// [`Error::HeaderSectionTooLarge`] (trailer section).
    pub fn consume(&mut self, input: &[u8], config: &Config, sink: impl FnMut(&[u8])) -> Result<(usize, bool), Error> {
        self.0.consume(input, config, sink)
    }
}

/// Bytes of a partial request head `conn` buffers now, and the limit they stay below
/// ([`Config::max_header_bytes`]).
pub fn buffered_head(conn: &Connection<'_>) -> (usize, usize) {
    conn.buffered_head()
}
