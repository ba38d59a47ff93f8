//! The HTTP parsers on their own: the request-head parser (`parse_head`, httparse plus RFC 9112 framing rules),
//! the strict chunked decoder fed whole and a byte at a time, and the static-file helpers (`resolve_path`,
//! `choose_range`). Invariants: no panic; a complete head's length is within the input and the same with extra
//! bytes appended; the decoder takes at most what it is given, gives the same data and result however the
//! input is split, and never yields more data than the chunk sizes allow (`max_body_bytes`); resolved paths
//! are normalised and absolute; a chosen range lies inside the representation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zirvium_fuzz::Input;
use zirvium_http::files::{choose_range, resolve_path, RangeChoice};
use zirvium_http::fuzzing::{parse_head, Chunked};
use zirvium_http::{Config, Error};

/// Decodes `body` fed in pieces of `piece` bytes: (data, bytes taken in total, done, error).
fn decode(body: &[u8], config: &Config, piece: usize) -> (Vec<u8>, usize, bool, Option<Error>) {
    let mut decoder = Chunked::new();
    let mut data = Vec::new();
    let mut taken = 0;
    for part in body.chunks(piece) {
        let mut off = 0;
        while off < part.len() {
            match decoder.consume(&part[off..], config, |d| data.extend_from_slice(d)) {
                Ok((n, done)) => {
                    assert!(n <= part.len() - off);
                    taken += n;
                    off += n;
                    if done {
                        return (data, taken, true, None);
                    }
                    assert!(n > 0, "the decoder took nothing and is not done");
                }
                // Bytes taken before an error are not reported (the connection closes): count none.
                Err(e) => return (data, 0, false, Some(e)),
            }
        }
    }
    (data, taken, false, None)
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let selector = input.u8();
    let config =
        Config { max_header_bytes: 64 + usize::from(selector) * 32, max_body_bytes: 4096, ..Config::default() };
    let rest = input.rest();

    // Request head.
    if let Ok(Some(len)) = parse_head(rest, &config) {
        assert!(len <= rest.len());
        let mut longer = rest.to_vec();
        longer.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(parse_head(&longer, &config), Ok(Some(len)), "bytes after a complete head changed it");
    }

    // Chunked body.
    let whole = decode(rest, &config, usize::MAX);
    assert!(whole.0.len() as u64 <= config.max_body_bytes, "decoded more than max_body_bytes");
    assert!(whole.1 <= rest.len());
    let bytewise = decode(rest, &config, 1);
    assert_eq!(bytewise, whole, "the chunked decoder depends on how its input is split");

    // Static-file helpers.
    if let Ok(text) = std::str::from_utf8(rest) {
        if let Ok(p) = resolve_path(text) {
            assert!(p.path.starts_with('/'));
            assert!(p.path == "/" || !p.path[1..].split('/').any(|c| c.is_empty() || c == "." || c == ".."), "{p:?}");
        }
    }
    let len = u64::from(selector) * 3;
    match choose_range(rest, len) {
        RangeChoice::Partial { first, last } => assert!(first <= last && last < len, "{first}-{last} of {len}"),
        RangeChoice::Full | RangeChoice::Unsatisfiable => {}
    }
});
