//! The xenstore wire format and ring (`platform_xen::xenstore`: `struct xsd_sockmsg` messages, the byte-stream
//! `Decoder`, the `xenstore_domain_interface` response ring; xen/include/public/io/xs_wire.h) fed by a daemon
//! that may lie. Invariants: no panic; a parsed message round-trips (parse → emit → parse, same length);
//! string lists re-encode to themselves; the decoder yields the same messages however the stream is split;
//! through the ring with honest indices the guest reads exactly the stream, and with hostile `rsp_prod` it
//! gets an error or at most what it asked for.
#![no_main]

use libfuzzer_sys::fuzz_target;
use platform_xen::shared::SharedPage;
use platform_xen::xenstore::ring::{XsRing, RING_SIZE};
use platform_xen::xenstore::wire::{Decoder, Message, WireError, HEADER_LEN};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use zirvium_fuzz::Input;

/// `rsp_prod` in `struct xenstore_domain_interface` (after the two 1 KiB rings, `req_cons`, `req_prod`, `rsp_cons`).
const RSP_PROD: usize = 2 * RING_SIZE + 12;

/// Decodes `stream` pushed in pieces of `piece` bytes; stops at the first error.
fn decode(stream: &[u8], piece: usize) -> (Vec<Message>, Option<WireError>) {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    for part in stream.chunks(piece) {
        d.push(part);
        loop {
            match d.next_message() {
                Ok(Some(m)) => out.push(m),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fn check_message(m: &Message) {
    let mut e = Vec::new();
    m.emit(&mut e);
    assert_eq!(e.len(), HEADER_LEN + m.payload.len());
    let (m2, used) = Message::parse(&e).expect("emitted message parses").expect("complete");
    assert_eq!((&m2, used), (m, e.len()), "parse -> emit -> parse changed the message");
    let _ = m.text();
    if let Ok(strings) = m.strings() {
        let mut joined = Vec::new();
        for s in &strings {
            joined.extend_from_slice(s.as_bytes());
            joined.push(0);
        }
        assert_eq!(joined, m.payload, "a string list does not re-encode to itself");
    }
    let _ = m.watch_event();
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let piece = 1 + input.below(40);
    let hostile = input.u8();
    let stream = input.rest();

    if let Ok(Some((m, used))) = Message::parse(stream) {
        assert!(used <= stream.len());
        check_message(&m);
    }
    let whole = decode(stream, usize::MAX);
    for m in &whole.0 {
        check_message(m);
    }
    assert_eq!(decode(stream, piece), whole, "the decoder depends on how the stream is split");

    // The same stream through the response ring, written by an honest daemon as space allows.
    let page = Arc::new(SharedPage::new().expect("page"));
    let mut ring = XsRing::new(page.clone());
    let mut prod = 0u32;
    let mut fed = 0usize;
    let mut got = Vec::new();
    let mut buf = vec![0u8; piece];
    let mut rsp_cons = 0u32;
    while got.len() < stream.len() {
        while fed < stream.len() && (prod.wrapping_sub(rsp_cons) as usize) < RING_SIZE {
            page.write(RING_SIZE + (prod as usize & (RING_SIZE - 1)), &stream[fed..fed + 1]);
            prod = prod.wrapping_add(1);
            fed += 1;
        }
        page.u32_at(RSP_PROD).store(prod, Ordering::Release);
        let n = ring.read(&mut buf).expect("honest indices");
        assert!(n > 0 && n <= buf.len());
        got.extend_from_slice(&buf[..n]);
        rsp_cons = rsp_cons.wrapping_add(n as u32);
    }
    assert_eq!(got, stream, "the ring changed the stream");

    // A daemon that publishes an arbitrary producer index.
    if hostile & 1 == 1 {
        page.u32_at(RSP_PROD)
            .store(u32::from_le_bytes([hostile, hostile >> 1, 0, hostile >> 7]) << 3, Ordering::Release);
        match ring.read(&mut buf) {
            Ok(n) => assert!(n <= buf.len()),
            Err(e) => {
                let _ = e.to_string();
            }
        }
        let _ = ring.write(b"request");
    }
});
