//! The storvsc wire format: `struct vstor_packet` (operation, flags, status, then a union of `vmscsi_request`,
//! `vmstorage_channel_properties` and `vmstorage_protocol_version`), little-endian and packed, and the SCSI
//! commands the block driver issues. Source: Linux `drivers/scsi/storvsc_drv.c` (protocol definitions at the top,
//! `storvsc_channel_init`, `storvsc_do_io`). The SCSI commands inside (CDBs, READ CAPACITY(16) data, sense data)
//! are `drivers::scsi`'s, shared with the virtio-scsi driver.
//!
//! [`VstorView`] is the checked view of a `vstor_packet` (field ranges in a private `mod field`), [`VstorPacket`]
//! its owned form.
#![forbid(unsafe_code)]

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use libos::wire::{read_u16, read_u32, read_u8, write_u16, write_u32, write_u8, Field};

mod field {
    use super::Field;

    /// `vstor_packet` header.
    pub const OPERATION: Field = 0..4;
    pub const FLAGS: Field = 4..8;
    pub const STATUS: Field = 8..12;

    /// `vmstorage_protocol_version` in the union.
    pub mod version {
        use super::Field;
        pub const MAJOR_MINOR: Field = 12..14;
        pub const REVISION: Field = 14..16;
    }

    /// `vmstorage_channel_properties` in the union (a reserved u32 first).
    pub mod properties {
        use super::Field;
        pub const MAX_CHANNEL_CNT: Field = 16..18;
        pub const FLAGS: Field = 20..24;
        pub const MAX_TRANSFER_BYTES: Field = 24..28;
        /// The structure's end (a reserved u64 follows `max_transfer_bytes`).
        pub const END: usize = 36;
    }

    /// `vmscsi_request` in the union, with the win8 extension from protocol 5.1.
    pub mod srb {
        use super::Field;
        pub const LENGTH: Field = 12..14;
        pub const SRB_STATUS: Field = 14..15;
        pub const SCSI_STATUS: Field = 15..16;
        pub const PORT_NUMBER: Field = 16..17;
        pub const PATH_ID: Field = 17..18;
        pub const TARGET_ID: Field = 18..19;
        pub const LUN: Field = 19..20;
        pub const CDB_LENGTH: Field = 20..21;
        pub const SENSE_INFO_LENGTH: Field = 21..22;
        pub const DATA_IN: Field = 22..23;
        pub const DATA_TRANSFER_LENGTH: Field = 24..28;
        /// `cdb[16]` / `sense_data[20]` union.
        pub const CDB_OR_SENSE: Field = 28..48;
        /// Win8 extension (`vmscsi_win8_extension`): `srb_flags` after a reserved u16, queue tag and action.
        pub const SRB_FLAGS: Field = 52..56;
    }
}

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
    Version {
        /// `major_minor`: major version in the high byte, minor in the low (e.g. [`version::WIN8_1`]).
        major_minor: u16,
        /// `revision` (the guest sends 0).
        revision: u16,
    },
    /// `vmstorage_channel_properties`.
    Properties {
        /// `max_channel_cnt`: sub-channels the host offers.
        max_channel_cnt: u16,
        /// `flags` (`STORAGE_CHANNEL_*`, e.g. multi-channel support).
        flags: u32,
        /// `max_transfer_bytes`: largest transfer of one request (bytes).
        max_transfer_bytes: u32,
    },
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

impl BodyKind {
    /// Bytes a packet with this union member needs (an SRB needs the pre-win8 layout at least).
    pub fn min_len(self) -> usize {
        match self {
            Self::None => field::STATUS.end,
            Self::Version => field::version::REVISION.end,
            Self::Properties => field::properties::END,
            Self::Srb => PACKET_LEN_PRE_WIN8,
        }
    }
}

/// A checked view of a `vstor_packet`: [`VstorView::new_checked`] proves the header and the chosen union member
/// (`BodyKind`) are inside the buffer.
#[derive(Debug, Clone, Copy)]
pub struct VstorView<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VstorView<T> {
    /// Wraps `buffer` without checks (accessors may panic on a short buffer).
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after checking it holds the header and union member `body`. Errors: [`VstorError`].
    pub fn new_checked(buffer: T, body: BodyKind) -> Result<Self, VstorError> {
        let (len, need) = (buffer.as_ref().len(), body.min_len());
        if len < need {
            return Err(VstorError { len, need });
        }
        Ok(Self::new_unchecked(buffer))
    }

    /// `operation` ([`op`]).
    pub fn operation(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::OPERATION)
    }

    /// `flags`.
    pub fn flags(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::FLAGS)
    }

    /// `status` (0 = success).
    pub fn status(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::STATUS)
    }

    /// Whether the buffer holds the win8 SRB extension (protocol ≥ 5.1 packets).
    pub fn has_win8_extension(&self) -> bool {
        self.buffer.as_ref().len() >= PACKET_LEN_WIN8
    }

    /// The whole packet.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl VstorPacket {
    /// Parses a packet; `body` says which union member to read (`Srb` needs the pre-win8 48 bytes at least).
    /// Errors: [`VstorError`].
    pub fn parse(b: &[u8], body: BodyKind) -> Result<Self, VstorError> {
        let v = VstorView::new_checked(b, body)?;
        let body = match body {
            BodyKind::None => Body::None,
            BodyKind::Version => Body::Version {
                major_minor: read_u16(b, field::version::MAJOR_MINOR),
                revision: read_u16(b, field::version::REVISION),
            },
            BodyKind::Properties => Body::Properties {
                max_channel_cnt: read_u16(b, field::properties::MAX_CHANNEL_CNT),
                flags: read_u32(b, field::properties::FLAGS),
                max_transfer_bytes: read_u32(b, field::properties::MAX_TRANSFER_BYTES),
            },
            BodyKind::Srb => {
                use field::srb::*;
                let mut cdb = [0u8; 20];
                cdb.copy_from_slice(&b[CDB_OR_SENSE]);
                Body::Srb(Srb {
                    srb_status: read_u8(b, SRB_STATUS),
                    scsi_status: read_u8(b, SCSI_STATUS),
                    port: read_u8(b, PORT_NUMBER),
                    path_id: read_u8(b, PATH_ID),
                    target_id: read_u8(b, TARGET_ID),
                    lun: read_u8(b, LUN),
                    cdb_length: read_u8(b, CDB_LENGTH),
                    sense_info_length: read_u8(b, SENSE_INFO_LENGTH),
                    data_in: read_u8(b, DATA_IN),
                    data_transfer_length: read_u32(b, DATA_TRANSFER_LENGTH),
                    cdb_or_sense: cdb,
                    srb_flags: if v.has_win8_extension() { read_u32(b, SRB_FLAGS) } else { 0 },
                })
            }
        };
        Ok(Self { operation: v.operation(), flags: v.flags(), status: v.status(), body })
    }

    /// Encodes the packet in `len` bytes (64 from protocol 5.1, 48 before).
    pub fn emit(&self, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len.max(PACKET_LEN_PRE_WIN8)];
        let b = &mut v[..];
        write_u32(b, field::OPERATION, self.operation);
        write_u32(b, field::FLAGS, self.flags);
        write_u32(b, field::STATUS, self.status);
        match &self.body {
            Body::None => {}
            Body::Version { major_minor, revision } => {
                write_u16(b, field::version::MAJOR_MINOR, *major_minor);
                write_u16(b, field::version::REVISION, *revision);
            }
            Body::Properties { max_channel_cnt, flags, max_transfer_bytes } => {
                write_u16(b, field::properties::MAX_CHANNEL_CNT, *max_channel_cnt);
                write_u32(b, field::properties::FLAGS, *flags);
                write_u32(b, field::properties::MAX_TRANSFER_BYTES, *max_transfer_bytes);
            }
            Body::Srb(s) => {
                use field::srb::*;
                // `length` = sizeof(vmscsi_request) minus the win8 extension when it is absent.
                let srb_len = (b.len() - LENGTH.start) as u16;
                write_u16(b, LENGTH, srb_len);
                write_u8(b, SRB_STATUS, s.srb_status);
                write_u8(b, SCSI_STATUS, s.scsi_status);
                write_u8(b, PORT_NUMBER, s.port);
                write_u8(b, PATH_ID, s.path_id);
                write_u8(b, TARGET_ID, s.target_id);
                write_u8(b, LUN, s.lun);
                write_u8(b, CDB_LENGTH, s.cdb_length);
                write_u8(b, SENSE_INFO_LENGTH, s.sense_info_length);
                write_u8(b, DATA_IN, s.data_in);
                write_u32(b, DATA_TRANSFER_LENGTH, s.data_transfer_length);
                b[CDB_OR_SENSE].copy_from_slice(&s.cdb_or_sense);
                if b.len() >= PACKET_LEN_WIN8 {
                    write_u32(b, SRB_FLAGS, s.srb_flags);
                }
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drivers::scsi::Command;

    #[test]
    fn srb_layout_matches_storvsc() {
        let mut cdb = [0u8; 20];
        Command::Read16 { lba: 0x1122_3344_5566, blocks: 8, fua: false }.emit(&mut cdb);
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
        assert_eq!(b[28], drivers::scsi::cdb::opcode::READ_16);
        assert_eq!(u32::from_le_bytes(b[24..28].try_into().unwrap()), 4096);
        assert_eq!(VstorPacket::parse(&b, BodyKind::Srb), Ok(p.clone()));
        assert_eq!(VstorPacket::parse(&b, BodyKind::Srb).unwrap().emit(PACKET_LEN_WIN8), b, "parse → emit");
        assert_eq!(VstorPacket::parse(&b[..47], BodyKind::Srb), Err(VstorError { len: 47, need: 48 }));
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
        assert_eq!(VstorPacket::parse(&p.emit(48), BodyKind::Properties), Ok(p.clone()));
        assert_eq!(VstorPacket::parse(&p.emit(48)[..35], BodyKind::Properties), Err(VstorError { len: 35, need: 36 }));
        assert_eq!(VstorPacket::parse(&[0; 15], BodyKind::Version), Err(VstorError { len: 15, need: 16 }));
        assert_eq!(VstorPacket::parse(&[0; 10], BodyKind::None), Err(VstorError { len: 10, need: 12 }));
        assert_eq!(version::display(version::WIN7), "4.2");
    }
}
