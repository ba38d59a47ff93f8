//! SCSI command descriptor blocks: the checked view [`Cdb`] (operation code, and the fields of the commands the
//! block drivers issue) and the owned [`Command`] with `parse`/`emit`. Multi-byte fields are big-endian.
//! Source: SPC-5 §4.2 (CDB formats, operation code groups), §6.6 INQUIRY, §6.29 REPORT LUNS, §6.39 REQUEST
//! SENSE, §6.47 TEST UNIT READY; SBC-4 §5.16 READ(16), §5.20 READ CAPACITY(16), §5.26–5.27 SYNCHRONIZE
//! CACHE(10)/(16), §5.40 WRITE(16).
#![forbid(unsafe_code)]

use core::fmt;
use libos::wire::write_u8;
use libos::wire::{read_u16_be, read_u32_be, read_u64_be, read_u8, write_u16_be, write_u32_be, write_u64_be};

/// Operation codes (SPC-5 Annex D, SBC-4 Table 14).
pub mod opcode {
    /// TEST UNIT READY.
    pub const TEST_UNIT_READY: u8 = 0x00;
    /// REQUEST SENSE.
    pub const REQUEST_SENSE: u8 = 0x03;
    /// INQUIRY.
    pub const INQUIRY: u8 = 0x12;
    /// SYNCHRONIZE CACHE(10).
    pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
    /// READ(16).
    pub const READ_16: u8 = 0x88;
    /// WRITE(16).
    pub const WRITE_16: u8 = 0x8A;
    /// SYNCHRONIZE CACHE(16).
    pub const SYNCHRONIZE_CACHE_16: u8 = 0x91;
    /// SERVICE ACTION IN(16); service action 0x10 is READ CAPACITY(16).
    pub const SERVICE_ACTION_IN_16: u8 = 0x9E;
    /// REPORT LUNS.
    pub const REPORT_LUNS: u8 = 0xA0;
}

/// SERVICE ACTION IN(16) service action READ CAPACITY(16) (SBC-4 §5.20.1).
pub const SA_READ_CAPACITY_16: u8 = 0x10;
/// Longest CDB built here (bytes).
pub const MAX_LEN: usize = 16;

mod field {
    use libos::wire::Field;

    pub const OPERATION_CODE: Field = 0..1;
    /// Byte 1: EVPD (INQUIRY), DESC (REQUEST SENSE), FUA (READ/WRITE(16)), IMMED (SYNCHRONIZE CACHE), service
    /// action (SERVICE ACTION IN(16), low 5 bits).
    pub const FLAGS: Field = 1..2;
    /// INQUIRY PAGE CODE; REPORT LUNS SELECT REPORT.
    pub const PAGE_CODE: Field = 2..3;
    /// INQUIRY ALLOCATION LENGTH.
    pub const INQUIRY_ALLOC: Field = 3..5;
    /// REQUEST SENSE ALLOCATION LENGTH.
    pub const SENSE_ALLOC: Field = 4..5;
    /// REPORT LUNS ALLOCATION LENGTH.
    pub const REPORT_LUNS_ALLOC: Field = 6..10;
    /// LOGICAL BLOCK ADDRESS of the 16-byte commands.
    pub const LBA_16: Field = 2..10;
    /// TRANSFER LENGTH / NUMBER OF LOGICAL BLOCKS / ALLOCATION LENGTH of the 16-byte commands.
    pub const LENGTH_16: Field = 10..14;
    /// SYNCHRONIZE CACHE(10) LOGICAL BLOCK ADDRESS.
    pub const LBA_10: Field = 2..6;
    /// SYNCHRONIZE CACHE(10) NUMBER OF LOGICAL BLOCKS.
    pub const BLOCKS_10: Field = 7..9;
}

/// Byte 1 bit 0 of INQUIRY: EVPD.
const EVPD: u8 = 0x01;
/// Byte 1 bit 3 of READ(16)/WRITE(16): FUA.
const FUA: u8 = 0x08;
/// Byte 1 bit 1 of SYNCHRONIZE CACHE: IMMED.
const IMMED: u8 = 0x02;

/// The CDB length of an operation code, from its group code (bits 7..5; SPC-5 §4.2.5.1): 6, 10, 12 or 16
/// bytes; `None` for the reserved group 3 (variable length) and the vendor-specific groups 6 and 7.
pub fn cdb_len(opcode: u8) -> Option<usize> {
    match opcode >> 5 {
        0 => Some(6),
        1 | 2 => Some(10),
        4 => Some(16),
        5 => Some(12),
        _ => None,
    }
}

/// Why bytes are not a CDB this module knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CdbError {
    /// Fewer bytes than the operation code's group needs (`need`), or none at all.
    Short {
        /// Bytes given.
        len: usize,
        /// Bytes the operation code's group needs (6, 10, 12 or 16; 1 when none were given).
        need: usize,
    },
    /// An operation code (and service action) this module does not build.
    Unknown {
        /// OPERATION CODE (byte 0).
        opcode: u8,
        /// SERVICE ACTION (byte 1 bits 4..0), whatever the operation code.
        service_action: u8,
    },
}

impl fmt::Display for CdbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Short { len, need } => write!(f, "CDB of {len} bytes, needs {need}"),
            Self::Unknown { opcode, service_action } => {
                write!(f, "unknown operation code {opcode:#04x} (service action {service_action:#04x})")
            }
        }
    }
}

/// A checked view of a CDB: [`Cdb::new_checked`] proves the buffer holds the whole CDB its operation code's
/// group names, so no accessor of that length can panic.
#[derive(Debug, Clone, Copy)]
pub struct Cdb<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Cdb<T> {
    /// Wraps `buffer` without checks (accessors may panic on a short buffer).
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self, CdbError> {
        let c = Self::new_unchecked(buffer);
        c.check_len()?;
        Ok(c)
    }

    /// Errors: [`CdbError::Short`] when the buffer is empty or shorter than its group's CDB length (a group
    /// without a fixed length counts as 16 bytes).
    pub fn check_len(&self) -> Result<(), CdbError> {
        let b = self.buffer.as_ref();
        let need = b.first().map_or(1, |&op| cdb_len(op).unwrap_or(MAX_LEN));
        if b.len() < need {
            return Err(CdbError::Short { len: b.len(), need });
        }
        Ok(())
    }

    /// OPERATION CODE.
    pub fn operation_code(&self) -> u8 {
        read_u8(self.buffer.as_ref(), field::OPERATION_CODE)
    }

    /// Byte 1 (flags, or the service action in its low 5 bits).
    pub fn flags(&self) -> u8 {
        read_u8(self.buffer.as_ref(), field::FLAGS)
    }

    /// The SERVICE ACTION of SERVICE ACTION IN(16) (byte 1, bits 4..0).
    pub fn service_action(&self) -> u8 {
        self.flags() & 0x1f
    }

    /// LOGICAL BLOCK ADDRESS of a 16-byte CDB.
    pub fn lba16(&self) -> u64 {
        read_u64_be(self.buffer.as_ref(), field::LBA_16)
    }

    /// Bytes 10..14 of a 16-byte CDB: TRANSFER LENGTH (blocks), NUMBER OF LOGICAL BLOCKS or ALLOCATION LENGTH.
    pub fn length16(&self) -> u32 {
        read_u32_be(self.buffer.as_ref(), field::LENGTH_16)
    }

    /// The bytes of the CDB (its group's length).
    pub fn as_bytes(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[..cdb_len(self.operation_code()).unwrap_or(MAX_LEN).min(b.len())]
    }
}

/// The commands the block drivers issue, as values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// TEST UNIT READY: whether the medium is ready; also how a pending UNIT ATTENTION is collected.
    TestUnitReady,
    /// REQUEST SENSE returning up to `allocation_length` bytes of fixed-format sense data.
    RequestSense {
        /// ALLOCATION LENGTH (byte 4): most bytes of sense data returned.
        allocation_length: u8,
    },
    /// INQUIRY: standard data (`evpd` false, page 0) or a vital product data page.
    Inquiry {
        /// EVPD (byte 1 bit 0): return the vital product data page `page_code` instead of standard data.
        evpd: bool,
        /// PAGE CODE (byte 2): the VPD page asked for (0 when `evpd` is false).
        page_code: u8,
        /// ALLOCATION LENGTH (bytes 3..5): most bytes of data returned.
        allocation_length: u16,
    },
    /// REPORT LUNS with SELECT REPORT `select_report` (0: the logical units addressable).
    ReportLuns {
        /// SELECT REPORT (byte 2): which logical units are listed.
        select_report: u8,
        /// ALLOCATION LENGTH (bytes 6..10): most bytes of LUN list returned.
        allocation_length: u32,
    },
    /// READ CAPACITY(16).
    ReadCapacity16 {
        /// ALLOCATION LENGTH (bytes 10..14): most bytes of capacity data returned.
        allocation_length: u32,
    },
    /// READ(16) of `blocks` logical blocks at `lba`.
    Read16 {
        /// LOGICAL BLOCK ADDRESS (bytes 2..10) of the first block.
        lba: u64,
        /// TRANSFER LENGTH (bytes 10..14), in logical blocks.
        blocks: u32,
        /// FUA (byte 1 bit 3): read from the medium, not a cache.
        fua: bool,
    },
    /// WRITE(16) of `blocks` logical blocks at `lba`; `fua` forces them to the medium before completion.
    Write16 {
        /// LOGICAL BLOCK ADDRESS (bytes 2..10) of the first block.
        lba: u64,
        /// TRANSFER LENGTH (bytes 10..14), in logical blocks.
        blocks: u32,
        /// FUA (byte 1 bit 3): write to the medium before completing.
        fua: bool,
    },
    /// SYNCHRONIZE CACHE(10) of `blocks` blocks at `lba` (0 blocks: to the end of the medium).
    SynchronizeCache10 {
        /// LOGICAL BLOCK ADDRESS (bytes 2..6) of the first block.
        lba: u32,
        /// NUMBER OF LOGICAL BLOCKS (bytes 7..9); 0: to the end of the medium.
        blocks: u16,
        /// IMMED (byte 1 bit 1): complete once the CDB is checked, before the cache is written.
        immed: bool,
    },
    /// SYNCHRONIZE CACHE(16) of `blocks` blocks at `lba` (0 blocks: to the end of the medium).
    SynchronizeCache16 {
        /// LOGICAL BLOCK ADDRESS (bytes 2..10) of the first block.
        lba: u64,
        /// NUMBER OF LOGICAL BLOCKS (bytes 10..14); 0: to the end of the medium.
        blocks: u32,
        /// IMMED (byte 1 bit 1): complete once the CDB is checked, before the cache is written.
        immed: bool,
    },
}

/// A CDB as bytes: up to [`MAX_LEN`] of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CdbBytes {
    bytes: [u8; MAX_LEN],
    len: usize,
}

impl CdbBytes {
    /// The CDB.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Command {
    /// The whole-medium SYNCHRONIZE CACHE(10) storvsc and the virtio-scsi driver issue for a flush.
    pub const SYNCHRONIZE_ALL: Command = Command::SynchronizeCache10 { lba: 0, blocks: 0, immed: false };

    /// The operation code.
    pub fn opcode(&self) -> u8 {
        match self {
            Self::TestUnitReady => opcode::TEST_UNIT_READY,
            Self::RequestSense { .. } => opcode::REQUEST_SENSE,
            Self::Inquiry { .. } => opcode::INQUIRY,
            Self::ReportLuns { .. } => opcode::REPORT_LUNS,
            Self::ReadCapacity16 { .. } => opcode::SERVICE_ACTION_IN_16,
            Self::Read16 { .. } => opcode::READ_16,
            Self::Write16 { .. } => opcode::WRITE_16,
            Self::SynchronizeCache10 { .. } => opcode::SYNCHRONIZE_CACHE_10,
            Self::SynchronizeCache16 { .. } => opcode::SYNCHRONIZE_CACHE_16,
        }
    }

    /// The CDB's length (bytes): 6, 10, 12 or 16.
    pub fn len(&self) -> usize {
        // Every opcode above is in a fixed-length group.
        cdb_len(self.opcode()).unwrap_or(MAX_LEN)
    }

    /// Always false: a CDB has at least its operation code.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The command's name as the standards write it, e.g. "READ(16)".
    pub fn name(&self) -> &'static str {
        match self {
            Self::TestUnitReady => "TEST UNIT READY",
            Self::RequestSense { .. } => "REQUEST SENSE",
            Self::Inquiry { .. } => "INQUIRY",
            Self::ReportLuns { .. } => "REPORT LUNS",
            Self::ReadCapacity16 { .. } => "READ CAPACITY(16)",
            Self::Read16 { .. } => "READ(16)",
            Self::Write16 { .. } => "WRITE(16)",
            Self::SynchronizeCache10 { .. } => "SYNCHRONIZE CACHE(10)",
            Self::SynchronizeCache16 { .. } => "SYNCHRONIZE CACHE(16)",
        }
    }

    /// The first logical block the command addresses (READ/WRITE/SYNCHRONIZE CACHE), for error reports.
    pub fn lba(&self) -> Option<u64> {
        match *self {
            Self::Read16 { lba, .. } | Self::Write16 { lba, .. } | Self::SynchronizeCache16 { lba, .. } => Some(lba),
            Self::SynchronizeCache10 { lba, .. } => Some(u64::from(lba)),
            _ => None,
        }
    }

    /// Parses a CDB. Errors: [`CdbError::Short`], [`CdbError::Unknown`].
    pub fn parse(c: &Cdb<&[u8]>) -> Result<Self, CdbError> {
        c.check_len()?;
        let b = c.buffer;
        let flags = c.flags();
        Ok(match c.operation_code() {
            opcode::TEST_UNIT_READY => Self::TestUnitReady,
            opcode::REQUEST_SENSE => Self::RequestSense { allocation_length: read_u8(b, field::SENSE_ALLOC) },
            opcode::INQUIRY => Self::Inquiry {
                evpd: flags & EVPD != 0,
                page_code: read_u8(b, field::PAGE_CODE),
                allocation_length: read_u16_be(b, field::INQUIRY_ALLOC),
            },
            opcode::REPORT_LUNS => Self::ReportLuns {
                select_report: read_u8(b, field::PAGE_CODE),
                allocation_length: read_u32_be(b, field::REPORT_LUNS_ALLOC),
            },
            opcode::SERVICE_ACTION_IN_16 if c.service_action() == SA_READ_CAPACITY_16 => {
                Self::ReadCapacity16 { allocation_length: c.length16() }
            }
            opcode::READ_16 => Self::Read16 { lba: c.lba16(), blocks: c.length16(), fua: flags & FUA != 0 },
            opcode::WRITE_16 => Self::Write16 { lba: c.lba16(), blocks: c.length16(), fua: flags & FUA != 0 },
            opcode::SYNCHRONIZE_CACHE_10 => Self::SynchronizeCache10 {
                lba: read_u32_be(b, field::LBA_10),
                blocks: read_u16_be(b, field::BLOCKS_10),
                immed: flags & IMMED != 0,
            },
            opcode::SYNCHRONIZE_CACHE_16 => {
                Self::SynchronizeCache16 { lba: c.lba16(), blocks: c.length16(), immed: flags & IMMED != 0 }
            }
            op => return Err(CdbError::Unknown { opcode: op, service_action: c.service_action() }),
        })
    }

    /// Writes the CDB into the first [`len`](Self::len) bytes of `b` (the rest untouched); `b` must hold them.
    pub fn emit(&self, b: &mut [u8]) {
        let b = &mut b[..self.len()];
        b.fill(0);
        write_u8(b, field::OPERATION_CODE, self.opcode());
        let flag = |on: bool, bit: u8| if on { bit } else { 0 };
        match *self {
            Self::TestUnitReady => {}
            Self::RequestSense { allocation_length } => write_u8(b, field::SENSE_ALLOC, allocation_length),
            Self::Inquiry { evpd, page_code, allocation_length } => {
                write_u8(b, field::FLAGS, flag(evpd, EVPD));
                write_u8(b, field::PAGE_CODE, page_code);
                write_u16_be(b, field::INQUIRY_ALLOC, allocation_length);
            }
            Self::ReportLuns { select_report, allocation_length } => {
                write_u8(b, field::PAGE_CODE, select_report);
                write_u32_be(b, field::REPORT_LUNS_ALLOC, allocation_length);
            }
            Self::ReadCapacity16 { allocation_length } => {
                write_u8(b, field::FLAGS, SA_READ_CAPACITY_16);
                write_u32_be(b, field::LENGTH_16, allocation_length);
            }
            Self::Read16 { lba, blocks, fua } | Self::Write16 { lba, blocks, fua } => {
                write_u8(b, field::FLAGS, flag(fua, FUA));
                write_u64_be(b, field::LBA_16, lba);
                write_u32_be(b, field::LENGTH_16, blocks);
            }
            Self::SynchronizeCache10 { lba, blocks, immed } => {
                write_u8(b, field::FLAGS, flag(immed, IMMED));
                write_u32_be(b, field::LBA_10, lba);
                write_u16_be(b, field::BLOCKS_10, blocks);
            }
            Self::SynchronizeCache16 { lba, blocks, immed } => {
                write_u8(b, field::FLAGS, flag(immed, IMMED));
                write_u64_be(b, field::LBA_16, lba);
                write_u32_be(b, field::LENGTH_16, blocks);
            }
        }
    }

    /// The CDB's bytes.
    pub fn to_bytes(&self) -> CdbBytes {
        let mut bytes = [0u8; MAX_LEN];
        self.emit(&mut bytes);
        CdbBytes { bytes, len: self.len() }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Read16 { lba, blocks, .. } | Self::Write16 { lba, blocks, .. } => {
                write!(f, "{} of {blocks} blocks at LBA {lba}", self.name())
            }
            _ => f.write_str(self.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(c: Command) -> CdbBytes {
        let b = c.to_bytes();
        assert_eq!(b.as_slice().len(), c.len(), "{c:?}");
        assert_eq!(Command::parse(&Cdb::new_checked(b.as_slice()).unwrap()), Ok(c), "{c:?}");
        b
    }

    #[test]
    fn layouts_match_spc_and_sbc() {
        let b = round_trip(Command::Read16 { lba: 0x0102_0304_0506_0708, blocks: 0x10, fua: false });
        assert_eq!(b.as_slice(), [0x88, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0x10, 0, 0]);
        let b = round_trip(Command::Write16 { lba: 5, blocks: 2, fua: true });
        assert_eq!(&b.as_slice()[..2], [0x8A, 0x08]);
        assert_eq!(&b.as_slice()[2..14], [0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 2]);
        let b = round_trip(Command::ReadCapacity16 { allocation_length: 32 });
        assert_eq!(b.as_slice(), [0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0]);
        let b = round_trip(Command::Inquiry { evpd: true, page_code: 0x80, allocation_length: 0x1ff });
        assert_eq!(b.as_slice(), [0x12, 1, 0x80, 1, 0xff, 0]);
        let b = round_trip(Command::ReportLuns { select_report: 0, allocation_length: 0x1008 });
        assert_eq!(b.as_slice(), [0xA0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0x08, 0, 0]);
        let b = round_trip(Command::SYNCHRONIZE_ALL);
        assert_eq!(b.as_slice(), [0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let b = round_trip(Command::SynchronizeCache16 { lba: 9, blocks: 3, immed: true });
        assert_eq!((b.as_slice()[0], b.as_slice()[1], b.as_slice()[9], b.as_slice()[13]), (0x91, 2, 9, 3));
        assert_eq!(round_trip(Command::TestUnitReady).as_slice(), [0; 6]);
        assert_eq!(round_trip(Command::RequestSense { allocation_length: 18 }).as_slice(), [3, 0, 0, 0, 18, 0]);
        round_trip(Command::SynchronizeCache10 { lba: 7, blocks: 8, immed: true });
    }

    #[test]
    fn short_and_unknown_cdbs_are_errors() {
        assert_eq!(Cdb::new_checked(&[0x88u8, 0, 0][..]).err(), Some(CdbError::Short { len: 3, need: 16 }));
        assert_eq!(Cdb::new_checked(&[][..]).err(), Some(CdbError::Short { len: 0, need: 1 }));
        let mut b = [0u8; 16];
        b[0] = 0x9E;
        b[1] = 0x11;
        let e = Command::parse(&Cdb::new_checked(&b[..]).unwrap()).unwrap_err();
        assert_eq!(e, CdbError::Unknown { opcode: 0x9E, service_action: 0x11 });
        assert_eq!(e.to_string(), "unknown operation code 0x9e (service action 0x11)");
        b[0] = 0xC0; // vendor specific group: counted as 16 bytes
        assert!(Cdb::new_checked(&b[..15]).is_err());
        assert_eq!(cdb_len(0x12), Some(6));
        assert_eq!(cdb_len(0x35), Some(10));
        assert_eq!(cdb_len(0x7F), None);
    }

    #[test]
    fn names_and_addresses() {
        let r = Command::Read16 { lba: 17, blocks: 8, fua: false };
        assert_eq!(r.to_string(), "READ(16) of 8 blocks at LBA 17");
        assert_eq!(r.lba(), Some(17));
        assert_eq!(Command::SYNCHRONIZE_ALL.to_string(), "SYNCHRONIZE CACHE(10)");
        assert_eq!(Command::SYNCHRONIZE_ALL.lba(), Some(0));
        assert_eq!(Command::TestUnitReady.lba(), None);
        let bytes = r.to_bytes();
        let v = Cdb::new_checked(bytes.as_slice()).unwrap();
        assert_eq!((v.lba16(), v.length16(), v.as_bytes().len()), (17, 8, 16));
    }
}
