//! vstor packets (`platform_hyperv::storvsc::vstor`, Linux `drivers/scsi/storvsc_drv.c` `vstor_packet`) as the
//! host completes them. Invariants: no panic; for every union member parse → emit → parse round-trips. The SCSI
//! data inside them (sense, INQUIRY, READ CAPACITY) is the `scsi` target's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use platform_hyperv::storvsc::vstor::{BodyKind, VstorPacket, VstorView, PACKET_LEN_PRE_WIN8, PACKET_LEN_WIN8};

fuzz_target!(|data: &[u8]| {
    for kind in [BodyKind::None, BodyKind::Version, BodyKind::Properties, BodyKind::Srb] {
        let view = VstorView::new_checked(data, kind);
        match VstorPacket::parse(data, kind) {
            Ok(p) => {
                assert!(view.is_ok() && data.len() >= kind.min_len());
                let len = if data.len() >= PACKET_LEN_WIN8 { PACKET_LEN_WIN8 } else { PACKET_LEN_PRE_WIN8 };
                let e = p.emit(len);
                let p2 = VstorPacket::parse(&e, kind).unwrap_or_else(|err| panic!("{p:?} emitted unparsable: {err}"));
                assert_eq!(p2, p, "parse -> emit -> parse changed the packet");
            }
            Err(e) => {
                assert!(view.is_err());
                let _ = e.to_string();
            }
        }
    }
});
