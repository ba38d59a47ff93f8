//! The capability list: a chain of structures in configuration space from the Capabilities Pointer, each
//! starting with its ID and the offset of the next. The walk is bounded, so a looping or corrupt list ends.
//! Source: PCI Local Bus Specification 3.0 §6.7 (capabilities list), Appendix H (capability IDs).
#![forbid(unsafe_code)]

use super::config::{reg, ConfigAccess, STATUS_CAPABILITIES};
use super::Bdf;
use core::fmt;

/// Capability ID of MSI (PCI 3.0 §6.8.1).
pub const CAP_ID_MSI: u8 = 0x05;
/// Capability ID of vendor-specific capabilities (virtio's structures, virtio 1.2 §4.1.4).
pub const CAP_ID_VENDOR: u8 = 0x09;
/// Capability ID of the PCI Express capability.
pub const CAP_ID_PCI_EXPRESS: u8 = 0x10;
/// Capability ID of MSI-X (PCI 3.0 §6.8.2).
pub const CAP_ID_MSIX: u8 = 0x11;

/// The first byte after the standard header, where capabilities may start.
const FIRST: u16 = 0x40;
/// Most capabilities a 256-byte space can hold (4 bytes each after the header): the loop bound.
const MAX_CAPS: usize = (0x100 - FIRST as usize) / 4;

/// A malformed capability, or one that does not fit its use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapError {
    /// A BAR indicator above 5.
    BadBar {
        /// The BAR Indicator Register (BIR) value read.
        bir: u8,
    },
    /// The structure does not fit in its BAR.
    OutOfBar {
        /// Offset of the structure in the BAR (bytes).
        offset: u64,
        /// Length of the structure (bytes).
        len: u64,
        /// Size of the BAR (bytes).
        bar_size: u64,
    },
    /// The capability is shorter than its fixed layout.
    TooShort {
        /// The capability's length (bytes).
        len: u8,
    },
    /// An MSI-X table of `entries` entries cannot hold the `need` messages asked for.
    TableTooSmall {
        /// MSI-X table entries (Table Size + 1).
        entries: u16,
        /// Vectors asked for.
        need: usize,
    },
}

impl fmt::Display for CapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadBar { bir } => write!(f, "capability names BAR {bir}, only 0..=5 exist"),
            Self::OutOfBar { offset, len, bar_size } => {
                write!(f, "structure at {offset:#x}+{len:#x} does not fit in its {bar_size:#x}-byte BAR")
            }
            Self::TooShort { len } => write!(f, "capability of {len} bytes is shorter than its layout"),
            Self::TableTooSmall { entries, need } => {
                write!(f, "MSI-X table of {entries} entries cannot hold {need} messages")
            }
        }
    }
}

/// One capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capability {
    /// Capability ID (`CAP_ID_*`).
    pub id: u8,
    /// Its offset in configuration space (bytes).
    pub offset: u16,
    /// Bits 31:16 of its first dword, whose meaning is the capability's: Message Control for MSI and MSI-X,
    /// length (7:0) and `cfg_type` (15:8) for a virtio vendor capability.
    pub header: u16,
}

/// An iterator over the capabilities of one function.
pub struct Capabilities<'a, C: ConfigAccess + ?Sized> {
    cfg: &'a C,
    bdf: Bdf,
    next: u16,
    left: usize,
}

/// The capabilities of `bdf`, in list order; none when the Status register does not announce a list. The walk
/// stops at a pointer into the header (below 0x40) and after as many entries as fit in the space.
pub fn capabilities<C: ConfigAccess + ?Sized>(cfg: &C, bdf: Bdf) -> Capabilities<'_, C> {
    let status = (cfg.read(bdf, reg::COMMAND_STATUS) >> 16) as u16;
    let next = if status != u16::MAX && status & STATUS_CAPABILITIES != 0 {
        (cfg.read(bdf, reg::CAPABILITIES) & 0xfc) as u16
    } else {
        0
    };
    Capabilities { cfg, bdf, next, left: MAX_CAPS }
}

impl<C: ConfigAccess + ?Sized> Iterator for Capabilities<'_, C> {
    type Item = Capability;

    fn next(&mut self) -> Option<Capability> {
        if self.next < FIRST || self.left == 0 {
            return None;
        }
        self.left -= 1;
        let offset = self.next;
        let dword = self.cfg.read(self.bdf, offset);
        self.next = ((dword >> 8) & 0xfc) as u16;
        Some(Capability { id: dword as u8, offset, header: (dword >> 16) as u16 })
    }
}

/// The first capability of `bdf` with ID `id`.
pub fn find<C: ConfigAccess + ?Sized>(cfg: &C, bdf: Bdf, id: u8) -> Option<Capability> {
    capabilities(cfg, bdf).find(|c| c.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::config::fake::FakeConfig;
    use alloc::vec::Vec;

    fn f() -> Bdf {
        Bdf::new(0, 2, 0).unwrap()
    }

    fn with_list(entries: &[(u16, u32)]) -> FakeConfig {
        let mut c = FakeConfig::default();
        c.function(f(), 0x1af4, 0x1041, 0x0200_0001, 0);
        c.set(f(), reg::COMMAND_STATUS, u32::from(STATUS_CAPABILITIES) << 16);
        c.set(f(), reg::CAPABILITIES, u32::from(entries.first().map_or(0, |e| e.0)));
        for &(at, dword) in entries {
            c.set(f(), at, dword);
        }
        c
    }

    #[test]
    fn walks_qemu_virtio_list() {
        // QEMU virtio-net-pci (modern): MSI-X at 0x98, then vendor capabilities 0x84, 0x70, 0x60, 0x50, 0x40.
        let c = with_list(&[
            (0x98, 0x0002_8411),
            (0x84, 0x0514_7009),
            (0x70, 0x0410_6009),
            (0x60, 0x0310_5009),
            (0x50, 0x0110_4009),
            (0x40, 0x0210_0009),
        ]);
        let ids: Vec<_> = capabilities(&c, f()).map(|c| (c.id, c.offset)).collect();
        assert_eq!(ids, [(0x11, 0x98), (9, 0x84), (9, 0x70), (9, 0x60), (9, 0x50), (9, 0x40)]);
        assert_eq!(find(&c, f(), CAP_ID_MSIX), Some(Capability { id: 0x11, offset: 0x98, header: 2 }));
        assert_eq!(find(&c, f(), CAP_ID_VENDOR).map(|c| c.header), Some(0x0514));
        assert_eq!(find(&c, f(), CAP_ID_MSI), None);
    }

    #[test]
    fn loops_and_bad_pointers_end() {
        let c = with_list(&[(0x40, 0x0000_4005)]); // points at itself
        assert_eq!(capabilities(&c, f()).count(), MAX_CAPS);
        let c = with_list(&[(0x50, 0x0000_1005)]); // next pointer into the header
        assert_eq!(capabilities(&c, f()).count(), 1);
        let mut c = with_list(&[(0x50, 0x0000_0005)]);
        c.set(f(), reg::COMMAND_STATUS, 0); // no Capabilities List bit
        assert_eq!(capabilities(&c, f()).count(), 0);
        assert_eq!(capabilities(&FakeConfig::default(), f()).count(), 0, "absent function");
    }
}
