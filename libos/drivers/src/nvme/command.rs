//! NVMe submission queue entries: the 64-byte checked view [`Sqe`] and the owned [`Submission`] of the commands
//! the driver issues — admin Identify, Set Features, Create I/O Completion/Submission Queue; NVM Read, Write,
//! Flush — each with its [`CommandId`] and PRP entries. Little-endian.
//! Source: NVMe Base 2.0 §4.1 (submission queue entry, command dword 0, PRP entries), §5.4 / §5.5 (Create I/O
//! Completion / Submission Queue), §5.17 (Identify), §5.27 (Set Features; Number of Queues is feature 07h),
//! §7.1 (Flush); NVM Command Set 1.0 §3.2 (Read and Write: SLBA in CDW10–11, NLB and FUA in CDW12).
#![forbid(unsafe_code)]

use core::fmt;
use libos::wire::{read_u16, read_u32, read_u64, read_u8, write_u16, write_u32, write_u64, write_u8};

/// Bytes of a submission queue entry (CC.IOSQES = 6).
pub const SQE_LEN: usize = 64;

mod field {
    use libos::wire::Field;
    /// Command Dword 0: OPC.
    pub const OPCODE: Field = 0..1;
    /// Command Dword 0: FUSE (bits 1..0), PSDT (bits 7..6; 00b = PRPs).
    pub const FLAGS: Field = 1..2;
    /// Command Dword 0: CID.
    pub const CID: Field = 2..4;
    pub const NSID: Field = 4..8;
    pub const PRP1: Field = 24..32;
    pub const PRP2: Field = 32..40;
    /// Command dwords 10..=15 start here, 4 bytes each.
    pub const CDW10: usize = 40;
}

/// Admin command opcodes (Base 2.0 §5, admin command set).
pub mod admin {
    /// Create I/O Submission Queue.
    pub const CREATE_IO_SQ: u8 = 0x01;
    /// Create I/O Completion Queue.
    pub const CREATE_IO_CQ: u8 = 0x05;
    /// Identify.
    pub const IDENTIFY: u8 = 0x06;
    /// Set Features.
    pub const SET_FEATURES: u8 = 0x09;
}

/// I/O opcodes of the NVM command set (Flush is common to all I/O command sets, Base 2.0 §7.1).
pub mod nvm {
    /// Flush.
    pub const FLUSH: u8 = 0x00;
    /// Write.
    pub const WRITE: u8 = 0x01;
    /// Read.
    pub const READ: u8 = 0x02;
}

/// Identify CNS values (Base 2.0 §5.17.1).
pub mod cns {
    /// Identify Namespace data structure for the NVM command set (NSID given).
    pub const NAMESPACE: u8 = 0x00;
    /// Identify Controller data structure.
    pub const CONTROLLER: u8 = 0x01;
    /// Active Namespace ID list (NSIDs above the one given, ascending).
    pub const ACTIVE_NAMESPACES: u8 = 0x02;
}

/// Feature identifier Number of Queues (Base 2.0 §5.27.1.5).
pub const FEATURE_NUMBER_OF_QUEUES: u8 = 0x07;
/// Bytes of data every Identify returns.
pub const IDENTIFY_LEN: usize = 4096;
/// Largest number of blocks one Read or Write moves (NLB is 16 bits, 0-based).
pub const MAX_BLOCKS: u32 = 1 << 16;

/// Read/Write CDW12 bit 30: Force Unit Access.
const FUA: u32 = 1 << 30;
/// Create I/O CQ/SQ CDW11 bit 0: physically contiguous.
const PC: u32 = 1 << 0;
/// Create I/O CQ CDW11 bit 1: interrupts enabled.
const IEN: u32 = 1 << 1;

/// A command identifier: unique among the commands outstanding on one submission queue (Base 2.0 §4.1,
/// CDW0.CID). The I/O queue makes them from its request slot and a generation, so a stale or forged completion
/// does not match the command now in that slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommandId(pub u16);

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#06x}", self.0)
    }
}

/// A checked view of a submission queue entry.
#[derive(Debug, Clone, Copy)]
pub struct Sqe<T: AsRef<[u8]>> {
    buffer: T,
}

/// A buffer shorter than one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShortEntry {
    /// Bytes present.
    pub len: usize,
    /// Bytes needed.
    pub need: usize,
}

impl fmt::Display for ShortEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "queue entry of {} bytes, needs {}", self.len, self.need)
    }
}

impl<T: AsRef<[u8]>> Sqe<T> {
    /// Wraps `buffer` without checks.
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after checking it holds [`SQE_LEN`] bytes. Errors: [`ShortEntry`].
    pub fn new_checked(buffer: T) -> Result<Self, ShortEntry> {
        let len = buffer.as_ref().len();
        if len < SQE_LEN {
            return Err(ShortEntry { len, need: SQE_LEN });
        }
        Ok(Self { buffer })
    }

    /// OPC.
    pub fn opcode(&self) -> u8 {
        read_u8(self.buffer.as_ref(), field::OPCODE)
    }

    /// FUSE and PSDT.
    pub fn flags(&self) -> u8 {
        read_u8(self.buffer.as_ref(), field::FLAGS)
    }

    /// CID.
    pub fn cid(&self) -> CommandId {
        CommandId(read_u16(self.buffer.as_ref(), field::CID))
    }

    /// NSID.
    pub fn nsid(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::NSID)
    }

    /// PRP Entry 1.
    pub fn prp1(&self) -> u64 {
        read_u64(self.buffer.as_ref(), field::PRP1)
    }

    /// PRP Entry 2 (or the PRP list pointer).
    pub fn prp2(&self) -> u64 {
        read_u64(self.buffer.as_ref(), field::PRP2)
    }

    /// Command dword `n` (10..=15).
    pub fn cdw(&self, n: usize) -> u32 {
        let at = field::CDW10 + 4 * (n.clamp(10, 15) - 10);
        read_u32(self.buffer.as_ref(), at..at + 4)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Sqe<T> {
    fn set_cdw(&mut self, n: usize, v: u32) {
        let at = field::CDW10 + 4 * (n.clamp(10, 15) - 10);
        write_u32(self.buffer.as_mut(), at..at + 4, v);
    }
}

/// The commands the driver issues, as values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Identify data structure `cns` (for namespace `nsid` where it applies); 4096 bytes of data.
    Identify {
        /// Controller or Namespace Structure (CDW10.CNS): which data structure is returned.
        cns: u8,
        /// Namespace Identifier (NSID) the structure describes; 0 where the CNS names none.
        nsid: u32,
    },
    /// Set Features `fid` to `value` (CDW11).
    SetFeatures {
        /// Feature Identifier (CDW10.FID).
        fid: u8,
        /// The feature-specific value written to CDW11.
        value: u32,
    },
    /// Create I/O Completion Queue `qid` of `entries`, physically contiguous, interrupting on MSI-X entry /
    /// vector `vector` when `interrupts`.
    CreateIoCq {
        /// Queue Identifier (CDW10.QID) of the new completion queue (1 or more).
        qid: u16,
        /// Queue size in entries (CDW10.QSIZE carries this minus one, 0's based).
        entries: u16,
        /// Interrupt Vector (CDW11.IV): the MSI-X table entry (or MSI vector) the queue interrupts on.
        vector: u16,
        /// Interrupts Enabled (CDW11.IEN).
        interrupts: bool,
    },
    /// Create I/O Submission Queue `qid` of `entries`, physically contiguous, completing to `cqid`.
    CreateIoSq {
        /// Queue Identifier (CDW10.QID) of the new submission queue (1 or more).
        qid: u16,
        /// Queue size in entries (CDW10.QSIZE carries this minus one, 0's based).
        entries: u16,
        /// Completion Queue Identifier (CDW11.CQID) its completions are posted to.
        cqid: u16,
    },
    /// Read `blocks` (1..=65536) logical blocks at `slba` of namespace `nsid`.
    Read {
        /// Namespace Identifier (NSID) of the namespace read from.
        nsid: u32,
        /// Starting LBA (SLBA, CDW10–11), in logical blocks of the namespace's format.
        slba: u64,
        /// Number of logical blocks (CDW12.NLB carries this minus one, 0's based).
        blocks: u32,
        /// Force Unit Access (CDW12.FUA): the data is read from non-volatile media, not a cache.
        fua: bool,
    },
    /// Write `blocks` (1..=65536) logical blocks at `slba` of namespace `nsid`.
    Write {
        /// Namespace Identifier (NSID) of the namespace written to.
        nsid: u32,
        /// Starting LBA (SLBA, CDW10–11), in logical blocks of the namespace's format.
        slba: u64,
        /// Number of logical blocks (CDW12.NLB carries this minus one, 0's based).
        blocks: u32,
        /// Force Unit Access (CDW12.FUA): the data reaches non-volatile media before completion.
        fua: bool,
    },
    /// Flush namespace `nsid`'s volatile write cache.
    Flush {
        /// Namespace Identifier (NSID) whose volatile write cache is flushed.
        nsid: u32,
    },
}

/// Which opcode space an entry belongs to: the admin queue's or an I/O queue's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// Admin submission queue (queue 0).
    Admin,
    /// I/O submission queue of the NVM command set.
    Io,
}

/// Why an entry is not a command this module knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than 64 bytes.
    Short(ShortEntry),
    /// An opcode (in `space`) not built here, or a CNS/FID not built here.
    Unknown {
        /// The opcode space the entry was parsed in (admin or I/O).
        space: Space,
        /// The entry's Opcode (CDW0.OPC).
        opcode: u8,
    },
}

impl Command {
    /// The opcode.
    pub fn opcode(&self) -> u8 {
        match self {
            Self::Identify { .. } => admin::IDENTIFY,
            Self::SetFeatures { .. } => admin::SET_FEATURES,
            Self::CreateIoCq { .. } => admin::CREATE_IO_CQ,
            Self::CreateIoSq { .. } => admin::CREATE_IO_SQ,
            Self::Read { .. } => nvm::READ,
            Self::Write { .. } => nvm::WRITE,
            Self::Flush { .. } => nvm::FLUSH,
        }
    }

    /// Its opcode space.
    pub fn space(&self) -> Space {
        match self {
            Self::Read { .. } | Self::Write { .. } | Self::Flush { .. } => Space::Io,
            _ => Space::Admin,
        }
    }

    /// The NSID field (0 where none applies).
    pub fn nsid(&self) -> u32 {
        match *self {
            Self::Identify { nsid, .. } | Self::Read { nsid, .. } | Self::Write { nsid, .. } | Self::Flush { nsid } => {
                nsid
            }
            _ => 0,
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Identify { cns, nsid } => write!(f, "Identify (CNS {cns:02x}h, NSID {nsid})"),
            Self::SetFeatures { fid, value } => write!(f, "Set Features (FID {fid:02x}h, value {value:#x})"),
            Self::CreateIoCq { qid, entries, .. } => {
                write!(f, "Create I/O Completion Queue {qid} of {entries} entries")
            }
            Self::CreateIoSq { qid, entries, .. } => {
                write!(f, "Create I/O Submission Queue {qid} of {entries} entries")
            }
            Self::Read { nsid, slba, blocks, .. } => write!(f, "Read of {blocks} blocks at LBA {slba} (NSID {nsid})"),
            Self::Write { nsid, slba, blocks, .. } => write!(f, "Write of {blocks} blocks at LBA {slba} (NSID {nsid})"),
            Self::Flush { nsid } => write!(f, "Flush (NSID {nsid})"),
        }
    }
}

/// A submission queue entry: the command, its identifier and data pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submission {
    /// CID.
    pub cid: CommandId,
    /// The command.
    pub command: Command,
    /// PRP Entry 1: the data's (or queue's) first address.
    pub prp1: u64,
    /// PRP Entry 2: the second page, or the PRP list's address, or 0.
    pub prp2: u64,
}

impl Submission {
    /// Writes the entry into `e` (all 64 bytes: unused fields zero, PSDT 00b for PRPs, no fusing).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, e: &mut Sqe<T>) {
        let b = e.buffer.as_mut();
        b[..SQE_LEN].fill(0);
        write_u8(b, field::OPCODE, self.command.opcode());
        write_u16(b, field::CID, self.cid.0);
        write_u32(b, field::NSID, self.command.nsid());
        write_u64(b, field::PRP1, self.prp1);
        write_u64(b, field::PRP2, self.prp2);
        match self.command {
            Command::Identify { cns, .. } => e.set_cdw(10, u32::from(cns)),
            Command::SetFeatures { fid, value } => {
                e.set_cdw(10, u32::from(fid));
                e.set_cdw(11, value);
            }
            Command::CreateIoCq { qid, entries, vector, interrupts } => {
                e.set_cdw(10, u32::from(entries.saturating_sub(1)) << 16 | u32::from(qid));
                e.set_cdw(11, u32::from(vector) << 16 | if interrupts { IEN } else { 0 } | PC);
            }
            Command::CreateIoSq { qid, entries, cqid } => {
                e.set_cdw(10, u32::from(entries.saturating_sub(1)) << 16 | u32::from(qid));
                e.set_cdw(11, u32::from(cqid) << 16 | PC);
            }
            Command::Read { slba, blocks, fua, .. } | Command::Write { slba, blocks, fua, .. } => {
                e.set_cdw(10, slba as u32);
                e.set_cdw(11, (slba >> 32) as u32);
                e.set_cdw(12, (blocks.clamp(1, MAX_BLOCKS) - 1) | if fua { FUA } else { 0 });
            }
            Command::Flush { .. } => {}
        }
    }

    /// The entry as bytes.
    pub fn to_bytes(&self) -> [u8; SQE_LEN] {
        let mut b = [0u8; SQE_LEN];
        self.emit(&mut Sqe::new_unchecked(&mut b[..]));
        b
    }

    /// Decodes an entry of opcode space `space` (a device model's view). Errors: [`ParseError`].
    pub fn parse(e: &Sqe<&[u8]>, space: Space) -> Result<Self, ParseError> {
        Sqe::new_checked(e.buffer).map_err(ParseError::Short)?;
        let (c10, c11, c12) = (e.cdw(10), e.cdw(11), e.cdw(12));
        let nsid = e.nsid();
        let unknown = ParseError::Unknown { space, opcode: e.opcode() };
        let command = match (space, e.opcode()) {
            (Space::Admin, admin::IDENTIFY) => Command::Identify { cns: c10 as u8, nsid },
            (Space::Admin, admin::SET_FEATURES) => Command::SetFeatures { fid: c10 as u8, value: c11 },
            (Space::Admin, admin::CREATE_IO_CQ) => Command::CreateIoCq {
                qid: c10 as u16,
                entries: (c10 >> 16) as u16 + 1,
                vector: (c11 >> 16) as u16,
                interrupts: c11 & IEN != 0,
            },
            (Space::Admin, admin::CREATE_IO_SQ) => {
                Command::CreateIoSq { qid: c10 as u16, entries: (c10 >> 16) as u16 + 1, cqid: (c11 >> 16) as u16 }
            }
            (Space::Io, nvm::READ | nvm::WRITE) => {
                let slba = u64::from(c10) | u64::from(c11) << 32;
                let (blocks, fua) = ((c12 & 0xffff) + 1, c12 & FUA != 0);
                if e.opcode() == nvm::READ {
                    Command::Read { nsid, slba, blocks, fua }
                } else {
                    Command::Write { nsid, slba, blocks, fua }
                }
            }
            (Space::Io, nvm::FLUSH) => Command::Flush { nsid },
            _ => return Err(unknown),
        };
        Ok(Self { cid: e.cid(), command, prp1: e.prp1(), prp2: e.prp2() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(s: Submission) -> [u8; SQE_LEN] {
        let b = s.to_bytes();
        assert_eq!(Submission::parse(&Sqe::new_unchecked(&b[..]), s.command.space()), Ok(s));
        b
    }

    #[test]
    fn io_commands() {
        let s = Submission {
            cid: CommandId(0x1234),
            command: Command::Write { nsid: 1, slba: 0x1_0000_0002, blocks: 8, fua: true },
            prp1: 0x10_0000,
            prp2: 0x10_1000,
        };
        let b = round_trip(s);
        assert_eq!(&b[..8], &[0x01, 0, 0x34, 0x12, 1, 0, 0, 0]);
        assert_eq!(&b[24..40], &[0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0x10, 0x10, 0, 0, 0, 0, 0]);
        assert_eq!(&b[40..52], &[2, 0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0x40]);
        let r = Submission { command: Command::Read { nsid: 2, slba: 5, blocks: MAX_BLOCKS, fua: false }, ..s };
        assert_eq!(&round_trip(r)[48..52], &[0xff, 0xff, 0, 0]);
        round_trip(Submission { command: Command::Flush { nsid: 1 }, prp1: 0, prp2: 0, ..s });
        assert_eq!(r.command.to_string(), "Read of 65536 blocks at LBA 5 (NSID 2)");
    }

    #[test]
    fn admin_commands() {
        let base = Submission { cid: CommandId(7), command: Command::Flush { nsid: 0 }, prp1: 0x2000, prp2: 0 };
        let b = round_trip(Submission { command: Command::Identify { cns: cns::CONTROLLER, nsid: 0 }, ..base });
        assert_eq!((b[0], b[40]), (0x06, 0x01));
        let b = round_trip(Submission {
            command: Command::CreateIoCq { qid: 1, entries: 64, vector: 0, interrupts: true },
            ..base
        });
        assert_eq!(&b[40..48], &[1, 0, 63, 0, 3, 0, 0, 0]);
        let b = round_trip(Submission { command: Command::CreateIoSq { qid: 1, entries: 64, cqid: 1 }, ..base });
        assert_eq!(&b[40..48], &[1, 0, 63, 0, 1, 0, 1, 0]);
        let b = round_trip(Submission {
            command: Command::SetFeatures { fid: FEATURE_NUMBER_OF_QUEUES, value: 0 },
            ..base
        });
        assert_eq!((b[0], b[40]), (0x09, 0x07));
        let mut odd = base.to_bytes();
        odd[0] = 0x7f;
        assert_eq!(
            Submission::parse(&Sqe::new_unchecked(&odd[..]), Space::Admin),
            Err(ParseError::Unknown { space: Space::Admin, opcode: 0x7f })
        );
        assert_eq!(
            Submission::parse(&Sqe::new_unchecked(&odd[..63]), Space::Io),
            Err(ParseError::Short(ShortEntry { len: 63, need: 64 }))
        );
        assert_eq!(CommandId(0x81).to_string(), "0x0081");
    }
}
