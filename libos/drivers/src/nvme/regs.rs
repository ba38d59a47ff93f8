//! NVMe controller registers (the memory-mapped properties of BAR0): offsets, the decoded Controller
//! Capabilities ([`Cap`]), the Controller Configuration ([`Cc`]) the driver writes, Controller Status bits, the
//! Admin Queue Attributes, the doorbells at `1000h + (2y + k) × (4 << CAP.DSTRD)`, and the [`Registers`] seam
//! between the driver and either the BAR (bare target) or a device model (host tests).
//! Source: NVMe Base Specification 2.0 §3.1.3 (controller properties: CAP §3.1.3.1, VS §3.1.3.2, INTMS/INTMC
//! §3.1.3.3–3.1.3.4, CC §3.1.3.5, CSTS §3.1.3.6, AQA/ASQ/ACQ §3.1.3.8–3.1.3.10); NVMe over PCIe Transport 1.0
//! §3.1.2 (doorbell registers).
#![forbid(unsafe_code)]

use core::fmt;

/// Controller Capabilities (64 bits).
pub const CAP: usize = 0x00;
/// Version.
pub const VS: usize = 0x08;
/// Interrupt Mask Set.
pub const INTMS: usize = 0x0C;
/// Interrupt Mask Clear.
pub const INTMC: usize = 0x10;
/// Controller Configuration.
pub const CC: usize = 0x14;
/// Controller Status.
pub const CSTS: usize = 0x1C;
/// Admin Queue Attributes.
pub const AQA: usize = 0x24;
/// Admin Submission Queue Base Address (64 bits).
pub const ASQ: usize = 0x28;
/// Admin Completion Queue Base Address (64 bits).
pub const ACQ: usize = 0x30;
/// The first doorbell (admin submission queue tail).
pub const DOORBELLS: usize = 0x1000;
/// Bytes of BAR0 the driver touches beyond the doorbells' start for queue pairs 0 and 1 at stride 0; the BAR
/// must hold at least the doorbells of the queues in use ([`doorbell`]).
pub const MIN_BAR: usize = DOORBELLS + 16;

/// CSTS.RDY: the controller is ready to process commands.
pub const CSTS_RDY: u32 = 1 << 0;
/// CSTS.CFS: controller fatal status.
pub const CSTS_CFS: u32 = 1 << 1;

/// Register access of one controller: 32-bit properties at byte offsets of BAR0 (64-bit ones as two halves,
/// low first, which every NVMe controller accepts for CAP, ASQ and ACQ).
pub trait Registers: Send {
    /// The 32-bit register at `offset`.
    fn read32(&self, offset: usize) -> u32;

    /// Writes the 32-bit register at `offset`.
    fn write32(&mut self, offset: usize, value: u32);

    /// The 64-bit register at `offset`, as two 32-bit reads.
    fn read64(&self, offset: usize) -> u64 {
        u64::from(self.read32(offset)) | u64::from(self.read32(offset + 4)) << 32
    }

    /// Writes the 64-bit register at `offset`, low half first.
    fn write64(&mut self, offset: usize, value: u64) {
        self.write32(offset, value as u32);
        self.write32(offset + 4, (value >> 32) as u32);
    }
}

/// Which doorbell of queue `qid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doorbell {
    /// The submission queue's tail doorbell (SQyTDBL).
    SubmissionTail,
    /// The completion queue's head doorbell (CQyHDBL).
    CompletionHead,
}

/// Offset of a doorbell: `1000h + (2 × qid + k) × (4 << dstrd)`, k = 0 for SQyTDBL and 1 for CQyHDBL.
pub fn doorbell(qid: u16, which: Doorbell, dstrd: u8) -> usize {
    let k = match which {
        Doorbell::SubmissionTail => 0,
        Doorbell::CompletionHead => 1,
    };
    DOORBELLS + (2 * usize::from(qid) + k) * (4usize << dstrd)
}

/// Controller Capabilities, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    /// MQES: largest queue size the controller supports, in entries (the field plus one).
    pub max_queue_entries: u32,
    /// CQR: queues must be physically contiguous.
    pub contiguous_queues_required: bool,
    /// TO: worst-case time for CSTS.RDY to change after CC.EN does, in 500 ms units.
    pub timeout_500ms: u8,
    /// DSTRD: doorbell stride exponent (stride `4 << dstrd` bytes).
    pub doorbell_stride: u8,
    /// CSS: command sets supported (bit 0 NVM, bit 6 I/O command sets, bit 7 admin only).
    pub command_sets: u8,
    /// MPSMIN: smallest memory page size, `2 ^ (12 + mpsmin)` bytes.
    pub mps_min: u8,
    /// MPSMAX: largest memory page size, `2 ^ (12 + mpsmax)` bytes.
    pub mps_max: u8,
}

impl Cap {
    /// CSS bit 0: the NVM command set.
    pub const CSS_NVM: u8 = 1 << 0;
    /// CSS bit 6: one or more I/O command sets (select with CC.CSS = 110b).
    pub const CSS_IO_SETS: u8 = 1 << 6;
    /// CSS bit 7: no I/O command set (an administrative controller).
    pub const CSS_ADMIN_ONLY: u8 = 1 << 7;

    /// Decodes the CAP value.
    pub fn decode(v: u64) -> Self {
        Self {
            max_queue_entries: (v & 0xffff) as u32 + 1,
            contiguous_queues_required: v >> 16 & 1 != 0,
            timeout_500ms: (v >> 24) as u8,
            doorbell_stride: (v >> 32 & 0xf) as u8,
            command_sets: (v >> 37) as u8,
            mps_min: (v >> 48 & 0xf) as u8,
            mps_max: (v >> 52 & 0xf) as u8,
        }
    }

    /// The value [`decode`](Self::decode) reads this from (for device models).
    pub fn encode(&self) -> u64 {
        u64::from(self.max_queue_entries.saturating_sub(1) & 0xffff)
            | u64::from(self.contiguous_queues_required) << 16
            | u64::from(self.timeout_500ms) << 24
            | u64::from(self.doorbell_stride & 0xf) << 32
            | u64::from(self.command_sets) << 37
            | u64::from(self.mps_min & 0xf) << 48
            | u64::from(self.mps_max & 0xf) << 52
    }

    /// CAP.TO in milliseconds.
    pub fn timeout_ms(&self) -> u64 {
        u64::from(self.timeout_500ms) * 500
    }

    /// The CC.CSS value to program (§3.5.1 step 3): 111b when only admin commands exist (no I/O possible),
    /// 110b with I/O command sets, else 000b for the NVM command set; `None` when the NVM command set is
    /// not offered at all.
    pub fn command_set_selection(&self) -> Option<u8> {
        if self.command_sets & Self::CSS_ADMIN_ONLY != 0 {
            None
        } else if self.command_sets & Self::CSS_IO_SETS != 0 {
            Some(0b110)
        } else if self.command_sets & Self::CSS_NVM != 0 {
            Some(0b000)
        } else {
            None
        }
    }
}

/// Controller Configuration, as the driver writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cc {
    /// EN.
    pub enable: bool,
    /// CSS: I/O command set selected.
    pub command_set: u8,
    /// MPS: host memory page size `2 ^ (12 + mps)`.
    pub mps: u8,
    /// IOSQES: I/O submission queue entry size `2 ^ n` bytes (6: 64).
    pub iosqes: u8,
    /// IOCQES: I/O completion queue entry size `2 ^ n` bytes (4: 16).
    pub iocqes: u8,
}

impl Cc {
    /// The register value (AMS 000b round robin, SHN 00b no shutdown).
    pub fn encode(&self) -> u32 {
        u32::from(self.enable)
            | u32::from(self.command_set & 7) << 4
            | u32::from(self.mps & 0xf) << 7
            | u32::from(self.iosqes & 0xf) << 16
            | u32::from(self.iocqes & 0xf) << 20
    }

    /// Decodes a register value (for device models).
    pub fn decode(v: u32) -> Self {
        Self {
            enable: v & 1 != 0,
            command_set: (v >> 4 & 7) as u8,
            mps: (v >> 7 & 0xf) as u8,
            iosqes: (v >> 16 & 0xf) as u8,
            iocqes: (v >> 20 & 0xf) as u8,
        }
    }
}

/// The AQA value for admin queues of `sq` and `cq` entries (both 2..=4096; the fields are 0-based).
pub fn aqa(sq: u16, cq: u16) -> u32 {
    u32::from(sq.saturating_sub(1) & 0xfff) | u32::from(cq.saturating_sub(1) & 0xfff) << 16
}

/// The NVMe version of a VS value, e.g. "1.4" or "2.0.1".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version(pub u32);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (major, minor, tertiary) = (self.0 >> 16, self.0 >> 8 & 0xff, self.0 & 0xff);
        write!(f, "{major}.{minor}")?;
        if tertiary != 0 {
            write!(f, ".{tertiary}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_round_trip_and_qemu_value() {
        // QEMU 10's nvme: MQES 7ffh, CQR, TO 15 (7.5 s), DSTRD 0, CSS NVM | I/O sets, MPSMIN 0, MPSMAX 4.
        let c = Cap::decode(0x0040_0820_0f01_07ff);
        assert_eq!(c.max_queue_entries, 2048);
        assert!(c.contiguous_queues_required);
        assert_eq!((c.timeout_500ms, c.timeout_ms(), c.doorbell_stride), (15, 7500, 0));
        assert_eq!((c.command_sets, c.mps_min, c.mps_max), (0x41, 0, 4));
        assert_eq!(c.command_set_selection(), Some(0b110));
        assert_eq!(Cap::decode(c.encode()), c);
        let nvm_only = Cap { command_sets: Cap::CSS_NVM, ..c };
        assert_eq!(nvm_only.command_set_selection(), Some(0));
        assert_eq!(Cap { command_sets: 0x81, ..c }.command_set_selection(), None);
        assert_eq!(Cap { command_sets: 0, ..c }.command_set_selection(), None);
    }

    #[test]
    fn cc_doorbells_aqa_version() {
        let cc = Cc { enable: true, command_set: 0b110, mps: 0, iosqes: 6, iocqes: 4 };
        assert_eq!(cc.encode(), 0x0046_0061);
        assert_eq!(Cc::decode(cc.encode()), cc);
        assert_eq!(doorbell(0, Doorbell::SubmissionTail, 0), 0x1000);
        assert_eq!(doorbell(0, Doorbell::CompletionHead, 0), 0x1004);
        assert_eq!(doorbell(1, Doorbell::SubmissionTail, 0), 0x1008);
        assert_eq!(doorbell(1, Doorbell::CompletionHead, 2), 0x1000 + 3 * 16);
        assert_eq!(aqa(32, 32), 0x001f_001f);
        assert_eq!(Version(0x0001_0400).to_string(), "1.4");
        assert_eq!(Version(0x0002_0001).to_string(), "2.0.1");
    }
}
