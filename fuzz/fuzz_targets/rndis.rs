//! RNDIS messages (`platform_hyperv::netvsc::rndis`, [MS-RNDIS] §2.2) as netvsc receives them: control
//! messages and `REMOTE_NDIS_PACKET_MSG` data messages with per-packet info. Invariants: no panic; control
//! messages round-trip (parse → emit → parse, emit stable); a data message's frame range and PPI values lie
//! inside the message; a header emitted for the parsed frame and PPIs parses back to the same frame length and
//! values; the offload-capability decoder never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use platform_hyperv::netvsc::rndis::{
    emit_packet_header, offload_caps_ip4_txcsum, packet_header_len, parse_packet, peek_msg_type, ppi, RndisMessage,
};

fuzz_target!(|data: &[u8]| {
    let _ = peek_msg_type(data);
    let _ = offload_caps_ip4_txcsum(data);
    match RndisMessage::parse(data) {
        Ok(m) => {
            let e = m.emit();
            let m2 = RndisMessage::parse(&e).unwrap_or_else(|err| panic!("{m:?} emitted unparsable: {err}"));
            assert_eq!(m2, m, "parse -> emit -> parse changed the message");
            assert_eq!(m2.emit(), e);
            let _ = m.req_id();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    if let Ok(info) = parse_packet(data) {
        assert!(info.data.start <= info.data.end && info.data.end <= info.msg_len && info.msg_len <= data.len());
        let frame = &data[info.data.clone()];
        let ppis: Vec<(u32, u32)> = [(ppi::TCPIP_CHKSUM, info.csum), (ppi::IEEE_8021Q, info.vlan)]
            .into_iter()
            .filter_map(|(t, v)| v.map(|v| (t, v)))
            .collect();
        let mut buf = vec![0u8; packet_header_len(ppis.len()) + frame.len()];
        let hdr = emit_packet_header(&mut buf, frame.len(), &ppis);
        buf[hdr..].copy_from_slice(frame);
        let back = parse_packet(&buf).expect("an emitted data message parses");
        assert_eq!(&buf[back.data.clone()], frame);
        assert_eq!((back.csum, back.vlan), (info.csum, info.vlan));
    }
});
