//! NVMe completion queue entries: the 16-byte checked view [`Cqe`], the owned [`Completion`] (command specific
//! DW0, SQ head pointer, SQ identifier, command identifier, phase tag, status) and the [`Status`] field decoded
//! into its type and code with the names the specification gives them.
//! Source: NVMe Base 2.0 §4.2.1 (completion queue entry), §4.2.3 (Status field: SCT, SC, CRD, M, DNR),
//! §4.2.3.1 (generic command status values), §4.2.3.2 (command specific), §4.2.3.3 (media and data integrity
//! errors); NVM Command Set 1.0 §3.1.2 (NVM command set status values: LBA Out of Range and the like).
#![forbid(unsafe_code)]

use super::command::CommandId;
use core::fmt;
use libos::wire::{read_u16, read_u32, write_u16, write_u32};

/// Bytes of a completion queue entry (CC.IOCQES = 4).
pub const CQE_LEN: usize = 16;

mod field {
    use libos::wire::Field;
    /// Dword 0: command specific.
    pub const DW0: Field = 0..4;
    /// Dword 2: SQ Head Pointer.
    pub const SQHD: Field = 8..10;
    /// Dword 2: SQ Identifier.
    pub const SQID: Field = 10..12;
    /// Dword 3: Command Identifier.
    pub const CID: Field = 12..14;
    /// Dword 3: Phase Tag (bit 0) and Status (bits 15..1).
    pub const STATUS: Field = 14..16;
}

/// Status Code Type values.
pub mod sct {
    /// Generic Command Status.
    pub const GENERIC: u8 = 0;
    /// Command Specific Status.
    pub const COMMAND_SPECIFIC: u8 = 1;
    /// Media and Data Integrity Errors.
    pub const MEDIA: u8 = 2;
    /// Path Related Status.
    pub const PATH: u8 = 3;
    /// Vendor Specific.
    pub const VENDOR: u8 = 7;
}

/// The Status field of a completion (bits 15..1 of dword 3's upper half).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// SCT: Status Code Type.
    pub sct: u8,
    /// SC: Status Code.
    pub sc: u8,
    /// CRD: Command Retry Delay index.
    pub crd: u8,
    /// M: more status information in the Error Information log page.
    pub more: bool,
    /// DNR: do not retry.
    pub dnr: bool,
}

impl Status {
    /// Successful Completion.
    pub const SUCCESS: Self = Self { sct: 0, sc: 0, crd: 0, more: false, dnr: false };

    /// Decodes the 15-bit Status field (the 16-bit half without the phase tag, shifted down).
    pub fn decode(field: u16) -> Self {
        Self {
            sc: field as u8,
            sct: (field >> 8 & 7) as u8,
            crd: (field >> 11 & 3) as u8,
            more: field >> 13 & 1 != 0,
            dnr: field >> 14 & 1 != 0,
        }
    }

    /// The 15-bit Status field.
    pub fn encode(&self) -> u16 {
        u16::from(self.sc)
            | u16::from(self.sct & 7) << 8
            | u16::from(self.crd & 3) << 11
            | u16::from(self.more) << 13
            | u16::from(self.dnr) << 14
    }

    /// A status of type `sct`, code `sc`, with DNR set (what a device model reports for a failed command).
    pub const fn error(sct: u8, sc: u8) -> Self {
        Self { sct, sc, crd: 0, more: false, dnr: true }
    }

    /// Whether the command succeeded (SCT 0, SC 0).
    pub fn is_success(&self) -> bool {
        self.sct == sct::GENERIC && self.sc == 0
    }

    /// The status's name, `None` for codes not listed here.
    pub fn name(&self) -> Option<&'static str> {
        Some(match (self.sct, self.sc) {
            (sct::GENERIC, 0x00) => "Successful Completion",
            (sct::GENERIC, 0x01) => "Invalid Command Opcode",
            (sct::GENERIC, 0x02) => "Invalid Field in Command",
            (sct::GENERIC, 0x03) => "Command ID Conflict",
            (sct::GENERIC, 0x04) => "Data Transfer Error",
            (sct::GENERIC, 0x05) => "Commands Aborted due to Power Loss Notification",
            (sct::GENERIC, 0x06) => "Internal Error",
            (sct::GENERIC, 0x07) => "Command Abort Requested",
            (sct::GENERIC, 0x08) => "Command Aborted due to SQ Deletion",
            (sct::GENERIC, 0x0B) => "Invalid Namespace or Format",
            (sct::GENERIC, 0x0C) => "Command Sequence Error",
            (sct::GENERIC, 0x13) => "PRP Offset Invalid",
            (sct::GENERIC, 0x80) => "LBA Out of Range",
            (sct::GENERIC, 0x81) => "Capacity Exceeded",
            (sct::GENERIC, 0x82) => "Namespace Not Ready",
            (sct::GENERIC, 0x83) => "Reservation Conflict",
            (sct::COMMAND_SPECIFIC, 0x00) => "Completion Queue Invalid",
            (sct::COMMAND_SPECIFIC, 0x01) => "Invalid Queue Identifier",
            (sct::COMMAND_SPECIFIC, 0x02) => "Invalid Queue Size",
            (sct::COMMAND_SPECIFIC, 0x08) => "Invalid Interrupt Vector",
            (sct::COMMAND_SPECIFIC, 0x80) => "Conflicting Attributes",
            (sct::COMMAND_SPECIFIC, 0x82) => "Attempted Write to Read Only Range",
            (sct::MEDIA, 0x80) => "Write Fault",
            (sct::MEDIA, 0x81) => "Unrecovered Read Error",
            (sct::MEDIA, 0x82) => "End-to-end Guard Check Error",
            (sct::MEDIA, 0x85) => "Compare Failure",
            (sct::MEDIA, 0x86) => "Access Denied",
            (sct::MEDIA, 0x87) => "Deallocated or Unwritten Logical Block",
            _ => return None,
        })
    }

    /// The type's name.
    pub fn type_name(&self) -> &'static str {
        match self.sct {
            sct::GENERIC => "Generic Command Status",
            sct::COMMAND_SPECIFIC => "Command Specific Status",
            sct::MEDIA => "Media and Data Integrity Error",
            sct::PATH => "Path Related Status",
            sct::VENDOR => "Vendor Specific",
            _ => "reserved status code type",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}")?,
            None => write!(f, "{} {:#04x}", self.type_name(), self.sc)?,
        }
        write!(f, " (SCT {:x}h SC {:02x}h{})", self.sct, self.sc, if self.dnr { ", do not retry" } else { "" })
    }
}

/// A checked view of a completion queue entry.
#[derive(Debug, Clone, Copy)]
pub struct Cqe<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Cqe<T> {
    /// Wraps `buffer` without checks.
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after checking it holds [`CQE_LEN`] bytes. Errors: the length found.
    pub fn new_checked(buffer: T) -> Result<Self, usize> {
        match buffer.as_ref().len() {
            n if n < CQE_LEN => Err(n),
            _ => Ok(Self { buffer }),
        }
    }

    /// Dword 0 (command specific).
    pub fn dw0(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::DW0)
    }

    /// SQ Head Pointer.
    pub fn sq_head(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SQHD)
    }

    /// SQ Identifier.
    pub fn sq_id(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SQID)
    }

    /// Command Identifier.
    pub fn cid(&self) -> CommandId {
        CommandId(read_u16(self.buffer.as_ref(), field::CID))
    }

    /// Phase Tag.
    pub fn phase(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::STATUS) & 1 != 0
    }

    /// Status.
    pub fn status(&self) -> Status {
        Status::decode(read_u16(self.buffer.as_ref(), field::STATUS) >> 1)
    }
}

/// A completion queue entry, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// Dword 0 (command specific, e.g. the queues allocated by Number of Queues).
    pub dw0: u32,
    /// SQ Head Pointer: the submission queue entry the controller fetches next.
    pub sq_head: u16,
    /// SQ Identifier of the command's submission queue.
    pub sq_id: u16,
    /// The command's identifier.
    pub cid: CommandId,
    /// Phase Tag.
    pub phase: bool,
    /// Status.
    pub status: Status,
}

impl Completion {
    /// Decodes an entry.
    pub fn parse<T: AsRef<[u8]>>(e: &Cqe<T>) -> Self {
        Self {
            dw0: e.dw0(),
            sq_head: e.sq_head(),
            sq_id: e.sq_id(),
            cid: e.cid(),
            phase: e.phase(),
            status: e.status(),
        }
    }

    /// The entry as bytes (dword 1 reserved, zero).
    pub fn to_bytes(&self) -> [u8; CQE_LEN] {
        let mut b = [0u8; CQE_LEN];
        write_u32(&mut b, field::DW0, self.dw0);
        write_u16(&mut b, field::SQHD, self.sq_head);
        write_u16(&mut b, field::SQID, self.sq_id);
        write_u16(&mut b, field::CID, self.cid.0);
        write_u16(&mut b, field::STATUS, self.status.encode() << 1 | u16::from(self.phase));
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_layout_and_round_trip() {
        let c = Completion {
            dw0: 0x0003_0003,
            sq_head: 5,
            sq_id: 1,
            cid: CommandId(0x0102),
            phase: true,
            status: Status::error(sct::GENERIC, 0x80),
        };
        let b = c.to_bytes();
        assert_eq!(b, [3, 0, 3, 0, 0, 0, 0, 0, 5, 0, 1, 0, 2, 1, 0x01, 0x81]);
        assert_eq!(Completion::parse(&Cqe::new_checked(&b[..]).unwrap()), c);
        assert_eq!(Cqe::new_checked(&b[..15]).err(), Some(15));
    }

    #[test]
    fn status_names() {
        assert!(Status::SUCCESS.is_success());
        assert_eq!(Status::decode(Status::SUCCESS.encode()), Status::SUCCESS);
        let lba = Status::error(sct::GENERIC, 0x80);
        assert_eq!(lba.to_string(), "LBA Out of Range (SCT 0h SC 80h, do not retry)");
        let s = Status { sct: sct::MEDIA, sc: 0x81, crd: 1, more: true, dnr: false };
        assert_eq!(Status::decode(s.encode()), s);
        assert_eq!(s.to_string(), "Unrecovered Read Error (SCT 2h SC 81h)");
        assert_eq!(Status::error(sct::VENDOR, 0xC4).to_string(), "Vendor Specific 0xc4 (SCT 7h SC c4h, do not retry)");
        assert_eq!(Status::error(5, 1).type_name(), "reserved status code type");
        assert!(!Status::error(sct::COMMAND_SPECIFIC, 0).is_success());
    }
}
