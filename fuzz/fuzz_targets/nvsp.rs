//! NVSP messages (`platform_hyperv::netvsc::nvsp`, Linux `drivers/net/hyperv/hyperv_net.h` `nvsp_message`) as
//! the host sends them in netvsc packets. Invariants: no panic; parse → emit → parse round-trips and emit is
//! stable; the checked view agrees with the parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use platform_hyperv::netvsc::nvsp::{Message, NvspMessage};

fuzz_target!(|data: &[u8]| {
    let view = Message::new_checked(data);
    match NvspMessage::parse(data) {
        Ok(m) => {
            assert!(view.is_ok());
            let e = m.emit();
            assert_eq!(e.len(), m.buffer_len());
            let m2 = NvspMessage::parse(&e).unwrap_or_else(|err| panic!("{m:?} emitted unparsable: {err}"));
            assert_eq!(m2, m, "parse -> emit -> parse changed the message");
            assert_eq!(m2.emit(), e);
        }
        Err(e) => {
            assert!(view.is_err());
            let _ = e.to_string();
        }
    }
});
