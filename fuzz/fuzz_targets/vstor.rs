//! vstor packets (`platform_hyperv::storvsc::vstor`, Linux `drivers/scsi/storvsc_drv.c` `vstor_packet`) as the
//! host completes them, and the SCSI data storvsc decodes from them (READ CAPACITY (16) data, sense data).
//! Invariants: no panic; for every union member parse → emit → parse round-trips; sense and capacity decoders
//! never panic and reject short buffers; READ/WRITE (16) CDBs round-trip their LBA.
#![no_main]

use libfuzzer_sys::fuzz_target;
use platform_hyperv::storvsc::vstor::{
    parse_capacity16, rw16, rw16_lba, sense_key, BodyKind, VstorPacket, VstorView, PACKET_LEN_PRE_WIN8, PACKET_LEN_WIN8,
};

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
    if let Some((blocks, block_len)) = parse_capacity16(data) {
        let _ = blocks.checked_mul(u64::from(block_len));
        assert!(data.len() >= 12);
    }
    let _ = sense_key(data);
    let _ = rw16_lba(data);
    if data.len() >= 12 {
        let lba = u64::from_le_bytes(data[..8].try_into().unwrap());
        let blocks = u32::from_le_bytes(data[8..12].try_into().unwrap());
        assert_eq!(rw16_lba(&rw16(data[0] & 1 == 1, lba, blocks)), Some(lba));
    }
});
