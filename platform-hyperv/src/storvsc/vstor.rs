//! The storvsc wire format: `struct vstor_packet` (operation, flags, status, then a union of `vmscsi_request`,
//! `vmstorage_channel_properties` and `vmstorage_protocol_version`), little-endian and packed, and the SCSI
//! commands the block driver issues. Source: Linux `drivers/scsi/storvsc_drv.c` (protocol definitions at the top,
//! `storvsc_channel_init`, `storvsc_do_io`), SCSI Block Commands (SBC-4) §5.16 READ(16), §5.20 READ CAPACITY(16),
//! §5.26 SYNCHRONIZE CACHE(10), §5.40 WRITE(16), and SPC-5 §4.4.2 (fixed-format sense data).

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// `VSTOR_OPERATION_*`.
pub mod op {
    /// Completion of a request.
    pub const COMPLETE_IO: u32 = 1;
    /// The host removes the device.
    pub const REMOVE_DEVICE: u32 = 2;
    /// A SCSI request block.
    pub const EXECUTE_SRB: u32 = 3;
    /// Start of the initialisation sequence.
    pub const BEGIN_INITIALIZATION: u32 = 7;
    /// End of the initialisation sequence.
    pub const END_INITIALIZATION: u32 = 8;
    /// Protocol version proposal.
    pub const QUERY_PROTOCOL_VERSION: u32 = 9;
    /// Channel properties query.
    pub const QUERY_PROPERTIES: u32 = 10;
    /// The host asks the guest to rescan the bus.
    pub const ENUMERATE_BUS: u32 = 11;
}

/// `REQUEST_COMPLETION_FLAG`: the host answers with a completion.
pub const REQUEST_COMPLETION_FLAG: u32 = 1;

/// Storage protocol versions (`VMSTOR_PROTO_VERSION(major, minor)` = `major << 8 | minor`), newest first.
pub mod version {
    /// 6.0, Windows 8.1 / Server 2012 R2.
    pub const WIN8_1: u16 = 0x0600;
    /// 5.1, Windows 8 / Server 2012: the win8 SRB extension (64-byte packets, 20-byte sense).
    pub const WIN8: u16 = 0x0501;
    /// 4.2, Windows 7 / Server 2008 R2.
    pub const WIN7: u16 = 0x0402;
    /// 2.0, Windows Server 2008.
    pub const WIN6: u16 = 0x0200;
    /// Versions proposed, newest first.
    pub const ALL: [u16; 4] = [WIN8_1, WIN8, WIN7, WIN6];

    /// `major.minor` text.
    pub fn display(v: u16) -> alloc::string::String {
        alloc::format!("{}.{}", v >> 8, v & 0xff)
    }
}

/// `vstor_packet` size from protocol 5.1 (bytes).
pub const PACKET_LEN_WIN8: usize = 64;
/// `vstor_packet` size before 5.1: without the 16-byte win8 extension (`vmscsi_size_delta`).
pub const PACKET_LEN_PRE_WIN8: usize = 48;
/// Sense buffer from 5.1 (`STORVSC_SENSE_BUFFER_SIZE`).
pub const SENSE_LEN_WIN8: u8 = 0x14;
/// Sense buffer before 5.1 (`PRE_WIN8_STORVSC_SENSE_BUFFER_SIZE`).
pub const SENSE_LEN_PRE_WIN8: u8 = 0x12;

/// `vmscsi_request.data_in`.
pub mod data_in {
    /// Data to the device.
    pub const WRITE: u8 = 0;
    /// Data from the device.
    pub const READ: u8 = 1;
    /// No data.
    pub const UNKNOWN: u8 = 2;
}

/// SRB flags (win8 extension).
pub mod srb_flags {
    /// SRB_FLAGS_DISABLE_SYNCH_TRANSFER (Linux sets it on every request).
    pub const DISABLE_SYNCH_TRANSFER: u32 = 0x8;
    /// SRB_FLAGS_DATA_IN.
    pub const DATA_IN: u32 = 0x40;
    /// SRB_FLAGS_DATA_OUT.
    pub const DATA_OUT: u32 = 0x80;
}

/// SRB status (low 6 bits) `SRB_STATUS_SUCCESS`.
pub const SRB_STATUS_SUCCESS: u8 = 0x01;
/// SRB status `SRB_STATUS_ERROR`.
pub const SRB_STATUS_ERROR: u8 = 0x04;
/// SCSI status GOOD.
pub const SCSI_GOOD: u8 = 0;
/// SCSI status CHECK CONDITION.
pub const SCSI_CHECK_CONDITION: u8 = 2;

/// A SCSI request block (`vmscsi_request`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srb {
    /// SRB status (completion).
    pub srb_status: u8,
    /// SCSI status (completion).
    pub scsi_status: u8,
    /// Port, path, target, LUN.
    pub port: u8,
    /// Path id.
    pub path_id: u8,
    /// Target id.
    pub target_id: u8,
    /// LUN.
    pub lun: u8,
    /// CDB length (bytes).
    pub cdb_length: u8,
    /// Sense buffer length (bytes).
    pub sense_info_length: u8,
    /// [`data_in`] direction.
    pub data_in: u8,
    /// Bytes to transfer (request) or transferred (completion).
    pub data_transfer_length: u32,
    /// CDB (request) or sense data (completion), 20 bytes.
    pub cdb_or_sense: [u8; 20],
    /// SRB flags (win8 extension; ignored before 5.1).
    pub srb_flags: u32,
}

/// A parsed `vstor_packet`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VstorPacket {
    /// [`op`] code.
    pub operation: u32,
    /// Flags ([`REQUEST_COMPLETION_FLAG`]).
    pub flags: u32,
    /// Status (0 = success).
    pub status: u32,
    /// The payload.
    pub body: Body,
}

/// The union part of a `vstor_packet`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Nothing meaningful (BEGIN/END_INITIALIZATION, plain completions).
    None,
    /// `vmstorage_protocol_version`.
    Version { major_minor: u16, revision: u16 },
    /// `vmstorage_channel_properties`.
    Properties { max_channel_cnt: u16, flags: u32, max_transfer_bytes: u32 },
    /// `vmscsi_request`.
    Srb(Srb),
}

/// Why a packet is malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VstorError {
    /// Bytes present.
    pub len: usize,
    /// Bytes needed.
    pub need: usize,
}

impl fmt::Display for VstorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vstor packet of {} bytes, needs {}", self.len, self.need)
    }
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

impl VstorPacket {
    /// Parses a packet; `body` says which union member to read (`Srb` needs the pre-win8 36 bytes at least).
    /// Errors: [`VstorError`].
    pub fn parse(b: &[u8], body: BodyKind) -> Result<Self, VstorError> {
        let need = match body {
            BodyKind::None => 12,
            BodyKind::Version => 16,
            BodyKind::Properties => 12 + 24,
            BodyKind::Srb => PACKET_LEN_PRE_WIN8,
        };
        if b.len() < need {
            return Err(VstorError { len: b.len(), need });
        }
        let body = match body {
            BodyKind::None => Body::None,
            BodyKind::Version => Body::Version {
                major_minor: u16::from_le_bytes([b[12], b[13]]),
                revision: u16::from_le_bytes([b[14], b[15]]),
            },
            BodyKind::Properties => Body::Properties {
                max_channel_cnt: u16::from_le_bytes([b[16], b[17]]),
                flags: u32_at(b, 20),
                max_transfer_bytes: u32_at(b, 24),
            },
            BodyKind::Srb => {
                let mut cdb = [0u8; 20];
                cdb.copy_from_slice(&b[28..48]);
                Body::Srb(Srb {
                    srb_status: b[14],
                    scsi_status: b[15],
                    port: b[16],
                    path_id: b[17],
                    target_id: b[18],
                    lun: b[19],
                    cdb_length: b[20],
                    sense_info_length: b[21],
                    data_in: b[22],
                    data_transfer_length: u32_at(b, 24),
                    cdb_or_sense: cdb,
                    srb_flags: if b.len() >= PACKET_LEN_WIN8 { u32_at(b, 52) } else { 0 },
                })
            }
        };
        Ok(Self { operation: u32_at(b, 0), flags: u32_at(b, 4), status: u32_at(b, 8), body })
    }

    /// Encodes the packet in `len` bytes (64 from protocol 5.1, 48 before).
    pub fn emit(&self, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len.max(PACKET_LEN_PRE_WIN8)];
        b[0..4].copy_from_slice(&self.operation.to_le_bytes());
        b[4..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..12].copy_from_slice(&self.status.to_le_bytes());
        match &self.body {
            Body::None => {}
            Body::Version { major_minor, revision } => {
                b[12..14].copy_from_slice(&major_minor.to_le_bytes());
                b[14..16].copy_from_slice(&revision.to_le_bytes());
            }
            Body::Properties { max_channel_cnt, flags, max_transfer_bytes } => {
                b[16..18].copy_from_slice(&max_channel_cnt.to_le_bytes());
                b[20..24].copy_from_slice(&flags.to_le_bytes());
                b[24..28].copy_from_slice(&max_transfer_bytes.to_le_bytes());
            }
            Body::Srb(s) => {
                // `length` = sizeof(vmscsi_request) minus the win8 extension when it is absent.
                let srb_len = (len.max(PACKET_LEN_PRE_WIN8) - 12) as u16;
                b[12..14].copy_from_slice(&srb_len.to_le_bytes());
                b[14] = s.srb_status;
                b[15] = s.scsi_status;
                b[16] = s.port;
                b[17] = s.path_id;
                b[18] = s.target_id;
                b[19] = s.lun;
                b[20] = s.cdb_length;
                b[21] = s.sense_info_length;
                b[22] = s.data_in;
                b[24..28].copy_from_slice(&s.data_transfer_length.to_le_bytes());
                b[28..48].copy_from_slice(&s.cdb_or_sense);
                if b.len() >= PACKET_LEN_WIN8 {
                    b[52..56].copy_from_slice(&s.srb_flags.to_le_bytes());
                }
            }
        }
        b
    }
}

/// Which union member a parse reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// Header only.
    None,
    /// Protocol version.
    Version,
    /// Channel properties.
    Properties,
    /// SCSI request block.
    Srb,
}

/// SCSI operation codes used here.
pub mod scsi {
    /// READ(16).
    pub const READ_16: u8 = 0x88;
    /// WRITE(16).
    pub const WRITE_16: u8 = 0x8A;
    /// SYNCHRONIZE CACHE(10).
    pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
    /// SERVICE ACTION IN(16), with service action 0x10 = READ CAPACITY(16).
    pub const SERVICE_ACTION_IN_16: u8 = 0x9E;
    /// READ CAPACITY(16) service action.
    pub const SA_READ_CAPACITY_16: u8 = 0x10;
    /// Sense key UNIT ATTENTION.
    pub const SENSE_UNIT_ATTENTION: u8 = 0x6;
}

/// A READ(16) or WRITE(16) CDB for `blocks` blocks at `lba` (SBC-4 §5.16, §5.40).
pub fn rw16(write: bool, lba: u64, blocks: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = if write { scsi::WRITE_16 } else { scsi::READ_16 };
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// A READ CAPACITY(16) CDB returning up to `alloc_len` bytes (SBC-4 §5.20).
pub fn read_capacity16(alloc_len: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = scsi::SERVICE_ACTION_IN_16;
    c[1] = scsi::SA_READ_CAPACITY_16;
    c[10..14].copy_from_slice(&alloc_len.to_be_bytes());
    c
}

/// A SYNCHRONIZE CACHE(10) CDB for the whole medium (LBA 0, 0 blocks = to the end; SBC-4 §5.26).
pub fn synchronize_cache10() -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = scsi::SYNCHRONIZE_CACHE_10;
    c
}

/// READ CAPACITY(16) parameter data: `(last LBA + 1, logical block length)`. `None` when shorter than 12 bytes or
/// the block length is 0.
pub fn parse_capacity16(d: &[u8]) -> Option<(u64, u32)> {
    if d.len() < 12 {
        return None;
    }
    let last = u64::from_be_bytes(d[0..8].try_into().ok()?);
    let bl = u32::from_be_bytes(d[8..12].try_into().ok()?);
    if bl == 0 {
        return None;
    }
    Some((last.checked_add(1)?, bl))
}

/// `(sense key, ASC, ASCQ)` of fixed-format sense data (SPC-5 §4.4.3), when valid.
pub fn sense_key(sense: &[u8]) -> Option<(u8, u8, u8)> {
    if sense.len() >= 14 && matches!(sense[0] & 0x7f, 0x70 | 0x71) {
        Some((sense[2] & 0xf, sense[12], sense[13]))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srb_layout_matches_storvsc() {
        let mut cdb = [0u8; 20];
        cdb[..16].copy_from_slice(&rw16(false, 0x1122_3344_5566, 8));
        let p = VstorPacket {
            operation: op::EXECUTE_SRB,
            flags: REQUEST_COMPLETION_FLAG,
            status: 0,
            body: Body::Srb(Srb {
                srb_status: 0,
                scsi_status: 0,
                port: 0,
                path_id: 0,
                target_id: 0,
                lun: 0,
                cdb_length: 16,
                sense_info_length: SENSE_LEN_WIN8,
                data_in: data_in::READ,
                data_transfer_length: 4096,
                cdb_or_sense: cdb,
                srb_flags: srb_flags::DATA_IN | srb_flags::DISABLE_SYNCH_TRANSFER,
            }),
        };
        let b = p.emit(PACKET_LEN_WIN8);
        assert_eq!(b.len(), 64);
        assert_eq!(u16::from_le_bytes([b[12], b[13]]), 52, "sizeof(struct vmscsi_request)");
        assert_eq!(b[20], 16);
        assert_eq!(b[28], scsi::READ_16);
        assert_eq!(u32::from_le_bytes(b[24..28].try_into().unwrap()), 4096);
        assert_eq!(VstorPacket::parse(&b, BodyKind::Srb), Ok(p.clone()));
        let old = p.emit(PACKET_LEN_PRE_WIN8);
        assert_eq!(old.len(), 48);
        assert_eq!(u16::from_le_bytes([old[12], old[13]]), 36);
        assert!(matches!(VstorPacket::parse(&old, BodyKind::Srb).unwrap().body, Body::Srb(Srb { srb_flags: 0, .. })));
    }

    #[test]
    fn init_packets_round_trip() {
        let v = VstorPacket {
            operation: op::QUERY_PROTOCOL_VERSION,
            flags: 1,
            status: 0,
            body: Body::Version { major_minor: version::WIN8_1, revision: 0 },
        };
        assert_eq!(VstorPacket::parse(&v.emit(64), BodyKind::Version), Ok(v));
        let p = VstorPacket {
            operation: op::COMPLETE_IO,
            flags: 0,
            status: 0,
            body: Body::Properties { max_channel_cnt: 1, flags: 0, max_transfer_bytes: 0x20_0000 },
        };
        assert_eq!(VstorPacket::parse(&p.emit(48), BodyKind::Properties), Ok(p));
        assert_eq!(VstorPacket::parse(&[0; 10], BodyKind::None), Err(VstorError { len: 10, need: 12 }));
        assert_eq!(version::display(version::WIN7), "4.2");
    }

    #[test]
    fn cdbs_and_capacity() {
        let c = rw16(true, 5, 2);
        assert_eq!(c[0], 0x8A);
        assert_eq!(&c[2..10], &[0, 0, 0, 0, 0, 0, 0, 5]);
        assert_eq!(&c[10..14], &[0, 0, 0, 2]);
        assert_eq!(read_capacity16(32)[..2], [0x9E, 0x10]);
        assert_eq!(synchronize_cache10()[0], 0x35);
        let mut d = [0u8; 32];
        d[7] = 99;
        d[10] = 2;
        assert_eq!(parse_capacity16(&d), Some((100, 512)));
        d[10] = 0;
        assert_eq!(parse_capacity16(&d), None);
        let mut s = [0u8; 18];
        s[0] = 0x70;
        s[2] = 0x6;
        s[12] = 0x29;
        assert_eq!(sense_key(&s), Some((6, 0x29, 0)));
        assert_eq!(sense_key(&[0; 18]), None);
    }
}
