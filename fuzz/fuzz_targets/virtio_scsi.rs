//! virtio-scsi responses as the driver sees them (`drivers::virtio::scsi`, virtio 1.2 §5.6.6): a
//! `virtio_scsi_resp_cmd` with fuzzer-chosen sense buffer size, data length and used length goes through
//! `check_response` and then `outcome` for a command; the device configuration, request header and event
//! layouts are decoded from the same bytes. Invariants: no panic; an accepted response never claims more sense
//! bytes than the buffer or more data than was lent; a completed READ/WRITE moved exactly what it asked for;
//! parse → emit → parse round-trips (response, request header, event, configuration, LUN field).
#![no_main]

use drivers::scsi::Command;
use drivers::virtio::scsi::wire::{
    lun_field, parse_lun_field, response, ConfigRepr, EventRepr, ReqRepr, RespRepr, REQ_HEADER, RESP_HEADER,
};
use drivers::virtio::scsi::{check_response, outcome, Outcome};
use libfuzzer_sys::fuzz_target;
use zirvium_fuzz::Input;

fuzz_target!(|data: &[u8]| {
    layouts(data);
    answer(&mut Input::new(data));
});

fn layouts(data: &[u8]) {
    if let Some(r) = RespRepr::parse(data) {
        let sense = &data[RESP_HEADER..];
        let mut out = vec![0u8; data.len()];
        r.emit(&mut out, sense);
        assert_eq!(out, data, "response emit did not reproduce its bytes");
        assert_eq!(RespRepr::parse(&out), Some(r));
    }
    if let Some(e) = EventRepr::parse(data) {
        assert_eq!(EventRepr::parse(&e.to_bytes()), Some(e), "event round trip");
        let _ = e.to_string();
    }
    if let Some(c) = ConfigRepr::parse(data) {
        assert_eq!(ConfigRepr::parse(&c.to_bytes()), Some(c), "configuration round trip");
    }
    if let Ok(r) = ReqRepr::parse(data) {
        let mut out = vec![0u8; REQ_HEADER + r.cdb.len()];
        r.emit(&mut out);
        assert_eq!(ReqRepr::parse(&out), Ok(r), "request header round trip");
    }
    if let Some(raw) = data.first_chunk::<8>() {
        if let Some((target, lun)) = parse_lun_field(*raw) {
            assert_eq!(parse_lun_field(lun_field(target, lun)), Some((target, lun)), "LUN field round trip");
        }
    }
}

fn answer(input: &mut Input<'_>) {
    let sense_size = input.below(97);
    let data_len = input.below(1 << 14);
    let used = input.u32() % (1 << 15);
    let retries = u32::from(input.u8() % 8);
    let command = match input.u8() % 4 {
        0 => Command::Read16 { lba: 8, blocks: (data_len / 512) as u32, fua: false },
        1 => Command::Write16 { lba: 8, blocks: (data_len / 512) as u32, fua: true },
        2 => Command::Inquiry { evpd: false, page_code: 0, allocation_length: data_len as u16 },
        _ => Command::SYNCHRONIZE_ALL,
    };
    let mut resp = vec![0u8; RESP_HEADER + sense_size];
    let b = input.bytes(resp.len());
    resp[..b.len()].copy_from_slice(b);
    let a = match check_response(&resp, data_len, used) {
        Ok(a) => a,
        Err(why) => {
            assert!(!why.is_empty());
            return;
        }
    };
    assert!(used as usize <= resp.len() + data_len && used as usize >= RESP_HEADER);
    assert!(a.sense.len() <= sense_size && a.transferred <= data_len);
    assert!(response::name(a.response).is_some());
    let o = outcome(&command, &a, data_len, retries);
    match &o {
        Outcome::Done(n) => {
            assert!(*n <= data_len);
            if matches!(command, Command::Read16 { .. } | Command::Write16 { .. }) {
                assert_eq!(*n, data_len, "a short READ/WRITE reported done");
            }
        }
        Outcome::Short { transferred, expected } => assert!(transferred != expected),
        Outcome::Response(r) => assert_ne!(*r, response::OK),
        Outcome::Retry(_) | Outcome::Scsi(_) => {}
    }
    let _ = o.to_string();
}
