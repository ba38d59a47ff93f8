//! VMBus channel messages (`platform_hyperv::vmbus::msg`, the `vmbus_channel_*` structures of Linux
//! `include/linux/hyperv.h`) as the host sends them through the SynIC message page. Invariants: no panic;
//! a parsed message round-trips (parse → emit → parse gives the same message, and emit is stable); the
//! emitted length is `buffer_len`; GPADL message building never panics and its messages parse back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use platform_hyperv::vmbus::msg::{gpadl_messages, min_len, ChannelMessage, MessageView};
use platform_hyperv::vmbus::{GpadlHandle, RelId};

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = MessageView::new_checked(data) {
        assert!(data.len() >= min_len(v.msgtype()).unwrap_or(0));
    }
    match ChannelMessage::parse(data) {
        Ok(m) => {
            let e = m.emit();
            assert_eq!(e.len(), m.buffer_len());
            let m2 = ChannelMessage::parse(&e).unwrap_or_else(|err| panic!("{m:?} emitted unparsable: {err}"));
            assert_eq!(m2, m, "parse -> emit -> parse changed the message");
            assert_eq!(m2.emit(), e, "emit is not stable");
            assert_eq!(m.msgtype(), MessageView::new_checked(data).map(|v| v.msgtype()).unwrap_or(u32::MAX));
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    // GPADL messages over PFNs taken from the input.
    let pfns: Vec<u64> = data.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
    let byte_count = (pfns.len() * 4096) as u32;
    if let Ok(msgs) = gpadl_messages(RelId(7), GpadlHandle(0xE1E10), &pfns, byte_count) {
        let mut back = Vec::new();
        for m in &msgs {
            let e = m.emit();
            assert!(e.len() <= 240, "GPADL message of {} bytes exceeds the SynIC payload", e.len());
            match ChannelMessage::parse(&e).expect("GPADL message parses") {
                ChannelMessage::GpadlHeader(h) => back.extend(h.pfns),
                ChannelMessage::GpadlBody(b) => back.extend(b.pfns),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(back, pfns, "GPADL messages lost or changed PFNs");
    }
});
