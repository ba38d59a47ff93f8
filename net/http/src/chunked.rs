//! The chunked transfer coding of request bodies (RFC 9112 §7.1): a strict streaming decoder.

use crate::config::Config;
use crate::error::Error;

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
pub(crate) struct ChunkedDecoder {
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
    pub(crate) fn new() -> Self {
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
    pub(crate) fn consume(
        &mut self,
        input: &[u8],
        config: &Config,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<(usize, bool), Error> {
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

#[cfg(test)]
mod tests {
    use crate::testing::{assert_error, feed, get, parse_responses, pattern, run_with};
    use crate::{Config, Error};
    use alloc::format;
    use alloc::vec::Vec;

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
}
