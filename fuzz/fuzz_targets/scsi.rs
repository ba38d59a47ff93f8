//! The SCSI command layer as the virtio-scsi and storvsc drivers see it (`drivers::scsi`): sense data of both
//! formats (SPC-5 §4.4), standard INQUIRY data (SPC-5 §6.7.2), READ CAPACITY (16) data (SBC-4 §5.20.2),
//! REPORT LUNS data and LUN addressing (SPC-5 §6.33, SAM-5 §4.7), the CDBs the drivers build, and the verdict
//! on a completed command (`judge`). Invariants: no panic; every decoder rejects short buffers with an error;
//! parse → emit → parse round-trips for each structure; an accepted capacity has 512..=65536-byte
//! power-of-two blocks and at least one block.
#![no_main]

use drivers::scsi::data::{CAPACITY16_LEN, CAPACITY16_MIN_LEN, INQUIRY_LEN, REPORT_LUNS_HEADER};
use drivers::scsi::sense::{asc_name, Sense};
use drivers::scsi::{
    judge, CapacityRepr, Cdb, Command, InquiryRepr, Lun, ReportLunsRepr, ScsiStatus, SenseKey, SenseRepr, Verdict,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sense(data);
    inquiry(data);
    capacity(data);
    report_luns(data);
    command(data);
    if let Some((&status, rest)) = data.split_first() {
        verdict(status, rest);
    }
});

fn sense(data: &[u8]) {
    if let Ok(v) = Sense::new_checked(data) {
        let _ = (v.response_code(), v.format(), v.deferred(), v.sense_key(), v.asc(), v.ascq(), v.information());
    }
    let Ok(s) = SenseRepr::from_bytes(data) else { return };
    let mut out = vec![0u8; s.buffer_len()];
    s.emit(&mut out);
    assert_eq!(SenseRepr::from_bytes(&out), Ok(s), "sense parse -> emit -> parse changed it");
    let _ = (s.to_string(), s.key.name(), asc_name(s.asc, s.ascq));
}

fn inquiry(data: &[u8]) {
    let Ok(i) = InquiryRepr::parse(data) else {
        assert!(data.len() < INQUIRY_LEN);
        return;
    };
    let mut out = [0u8; INQUIRY_LEN];
    i.emit(&mut out);
    assert_eq!(InquiryRepr::parse(&out).as_ref(), Ok(&i), "INQUIRY round trip");
    let _ = i.is_disk();
}

fn capacity(data: &[u8]) {
    let Ok(c) = CapacityRepr::parse(data) else {
        assert!(data.len() < CAPACITY16_MIN_LEN);
        return;
    };
    let mut out = [0u8; CAPACITY16_LEN];
    c.emit(&mut out);
    assert_eq!(CapacityRepr::parse(&out), Ok(c), "READ CAPACITY (16) round trip");
    match c.geometry() {
        Ok((blocks, block)) => {
            assert!(blocks > 0 && block.is_power_of_two() && (512..=65536).contains(&block));
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

fn report_luns(data: &[u8]) {
    let Ok(r) = ReportLunsRepr::parse(data) else {
        assert!(data.len() < REPORT_LUNS_HEADER);
        return;
    };
    let again = ReportLunsRepr::parse(&ReportLunsRepr::emit(&r.luns)).expect("emitted data has a header");
    assert_eq!((&again.luns, again.skipped, again.truncated), (&r.luns, 0, false), "REPORT LUNS round trip");
    for chunk in data.chunks_exact(8) {
        let raw: [u8; 8] = chunk.try_into().expect("8 bytes");
        if let Ok(l) = Lun::from_bytes(raw) {
            assert_eq!(Lun::from_bytes(l.to_bytes()), Ok(l), "LUN round trip");
            assert_eq!(Lun::new(l.get()), Some(l));
            let _ = (l.flat(), l.to_string());
        }
    }
}

fn command(data: &[u8]) {
    let Ok(c) = Cdb::new_checked(data) else { return };
    let Ok(cmd) = Command::parse(&c) else { return };
    let bytes = cmd.to_bytes();
    assert_eq!(bytes.as_slice().len(), cmd.len());
    let again = Command::parse(&Cdb::new_checked(bytes.as_slice()).expect("an emitted CDB is whole"));
    assert_eq!(again, Ok(cmd), "CDB parse -> emit -> parse changed it");
    let _ = (cmd.name(), cmd.lba(), cmd.to_string());
}

fn verdict(status: u8, sense: &[u8]) {
    let cmd = Command::Read16 { lba: 8, blocks: 8, fua: false };
    let status = ScsiStatus(status);
    let _ = (status.name(), status.to_string(), SenseKey(status.0).name());
    match judge(&cmd, status, sense, u32::from(sense.first().copied().unwrap_or(0) % 8)) {
        Verdict::Good => assert!(matches!(status, ScsiStatus::GOOD | ScsiStatus::CONDITION_MET)),
        Verdict::Retry { why } => assert!(!why.is_empty()),
        Verdict::Fail(e) => {
            let _ = (e.to_string(), e.sense_key(), e.to_block_error("sd0", 8).to_string());
        }
    }
}
