//! The HTTP/1.1 connection state machine (`zirvium_http::Connection`) fed an arbitrary byte stream: once whole
//! and once split at fuzzer-chosen points with a small output buffer. Invariants: no panic; `receive` takes at
//! most what it is given and always makes progress once output is drained; the buffered head stays below its
//! limit; `poll_output` never writes past its buffer; the output is a well-formed sequence of HTTP/1.1
//! responses, one final response per request answered, ending with `Connection: close` after an error; and the
//! two splits give exactly the same responses, requests and errors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zirvium_fuzz::http::{check_responses, run};
use zirvium_fuzz::{Input, XorShift};
use zirvium_http::Config;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let limits = input.u8();
    let seed = input.u64() | 1;
    let stream = input.rest();
    // Small limits half of the time so the 413/414/431 and back-pressure paths are reachable.
    let config = if limits & 1 == 0 {
        Config::default()
    } else {
        Config {
            max_header_bytes: 16 + usize::from(limits >> 1) * 4,
            max_body_bytes: u64::from(limits >> 2) * 8,
            max_pending_responses: usize::from(limits >> 5),
        }
    };
    let whole = run(&config, stream, || usize::MAX, 4096);
    check_responses(&whole.out, whole.requests, !whole.errors.is_empty());
    assert!(whole.errors.len() <= 1, "at most one error response: {:?}", whole.errors);
    let mut rng = XorShift(seed);
    let max_piece = 1 + rng.below(64);
    let out_len = 1 + rng.below(100);
    let split = run(&config, stream, || 1 + rng.below(max_piece), out_len);
    assert_eq!(split, whole, "the same stream split differently gave different results");
});
