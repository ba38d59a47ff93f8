//! Hyper-V Dynamic Memory protocol messages (`platform_hyperv::dm::wire`, Linux `drivers/hv/hv_balloon.c`
//! `struct dm_header` and the `dm_*` messages) as the guest receives them in VMBus packet payloads, and the
//! packed page ranges (`union dm_mem_page_range`) inside them. Invariants: no panic; a decoded message emits
//! (its size fits a u16) with its type and length, and decoding the emitted bytes gives the same transaction
//! id and message; unpack → pack → unpack round-trips a page range.
#![no_main]

use libfuzzer_sys::fuzz_target;
use platform_hyperv::dm::wire::{decode, pack_range, unpack_range, Header};

fuzz_target!(|data: &[u8]| {
    match decode(data) {
        Ok((trans_id, m)) => {
            let h = Header::new_checked(data).expect("decoded, so the header is whole");
            assert_eq!(m.msgtype(), h.msgtype());
            let out = m.emit(trans_id).unwrap_or_else(|| panic!("{m:?} decoded but does not emit"));
            assert_eq!(out.len(), m.buffer_len());
            let again = decode(&out).unwrap_or_else(|e| panic!("{m:?} emitted undecodable bytes: {e}"));
            assert_eq!(again, (trans_id, m), "decode -> emit -> decode changed the message");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    for chunk in data.chunks_exact(8) {
        let r = unpack_range(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        let packed = pack_range(&r).expect("an unpacked range packs");
        assert_eq!(unpack_range(packed), r);
    }
});
