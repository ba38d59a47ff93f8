//! The Hyper-V Dynamic Memory session (`platform_hyperv::dm::session::Session`, the guest side of Linux
//! `drivers/hv/hv_balloon.c`'s protocol) fed arbitrary host packets, over a model heap (`ModelHeap`, which panics
//! on a free of memory not allocated or freed twice). The first byte: bit 0 first brings the session to Running
//! against the host model (`DmHost`), so the fuzzed packets reach balloon and unballoon handling; bit 1 asks for a
//! status report after every packet. The rest: packets, each a little-endian u16 length and that many bytes.
//!
//! Invariants: no panic; every message the guest sends decodes; the balloon holds exactly the pages the session
//! says it gave minus those taken back (`Totals::given - returned`), and never more than the heap; after a full
//! deflate the heap holds no balloon allocation (no page lost).
#![no_main]

use libfuzzer_sys::fuzz_target;
use libos::mem::balloon::model::ModelHeap;
use libos::mem::balloon::{Balloon, PAGE_SIZE};
use platform_hyperv::dm::host_model::DmHost;
use platform_hyperv::dm::session::Session;
use platform_hyperv::dm::wire::{decode, version};

/// An 8 MiB guest (heap from frame 0x400) with a 1 MiB floor: small, so a fuzzed balloon request for billions
/// of pages costs little per execution.
const HEAP_PAGES: u64 = 2048;
const FLOOR_BYTES: u64 = 1 << 20;

/// Checks what the guest sent and what the balloon holds.
fn check(out: &[(u32, Vec<u8>)], s: &Session, b: &Balloon<ModelHeap>) {
    for (id, bytes) in out {
        let (trans_id, m) = decode(bytes).unwrap_or_else(|e| panic!("the guest sent an undecodable message: {e}"));
        assert_eq!(trans_id, *id, "{m:?}: the packet's transaction id differs from the message's");
    }
    let t = s.totals();
    let st = b.stats();
    assert_eq!(st.ballooned_bytes / PAGE_SIZE, t.given - t.returned, "balloon and session disagree: {t:?}");
    assert!(st.ballooned_bytes <= st.total_bytes);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else { return };
    let mut b = Balloon::new(ModelHeap::new(0x400, HEAP_PAGES), FLOOR_BYTES);
    let mut s = Session::new();
    let (id, first) = s.start();
    check(&[(id, first.clone())], &s, &b);
    if mode & 1 != 0 {
        let mut host = DmHost::new(&version::ALL, 0x400..0x400 + HEAP_PAGES);
        let mut to_guest = host.receive(&first);
        while !to_guest.is_empty() {
            let mut to_host = Vec::new();
            for m in to_guest.drain(..) {
                let out = s.on_packet(&m, &mut b);
                check(&out, &s, &b);
                to_host.extend(out.into_iter().map(|(_, bytes)| bytes));
            }
            for m in to_host {
                to_guest.extend(host.receive(&m));
            }
        }
    }
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let (packet, tail) = rest[2..].split_at(len);
        rest = tail;
        let out = s.on_packet(packet, &mut b);
        check(&out, &s, &b);
        if mode & 2 != 0 {
            if let Some(report) = s.status_report(&b) {
                check(&[report], &s, &b);
            }
        }
    }
    // Everything the host still holds comes back: the heap has no balloon allocation left.
    let all = b.choose_deflate(u64::MAX);
    b.deflate_ranges(&all);
    assert_eq!(b.stats().ballooned_bytes, 0);
    assert!(b.source().allocs.is_empty(), "pages lost: {:?}", b.source().allocs);
});
