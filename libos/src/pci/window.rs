//! Placement of memory BARs the firmware left unassigned: a first-fit allocator over the 32-bit MMIO window
//! that skips every range already in use (other BARs, RAM, ECAM, the I/O APIC and LAPIC).
//! Source: PCI Local Bus Specification 3.0 §6.2.5.1 (BARs are naturally aligned powers of two, at least
//! 16 bytes for memory), QEMU's pc/q35 32-bit PCI hole (below the I/O APIC at 0xFEC0_0000).
#![forbid(unsafe_code)]

use alloc::vec::Vec;
use core::fmt;

/// Start of the window used for BARs the firmware did not assign (bytes).
pub const WINDOW_START: u64 = 0xC000_0000;
/// End (exclusive) of that window: the I/O APIC, HPET and LAPIC live from 0xFEC0_0000 up.
pub const WINDOW_END: u64 = 0xFEC0_0000;

/// A BAR that cannot be placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarError {
    /// Size is not a power of two or below 16 bytes (a broken sizing read-back).
    BadSize {
        /// The size read back (bytes).
        size: u64,
    },
    /// No free, naturally aligned hole of `size` bytes is left in the window.
    NoSpace {
        /// The BAR's size (bytes), which is also its alignment.
        size: u64,
    },
}

impl fmt::Display for BarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadSize { size } => write!(f, "BAR size {size:#x} is not a power of two of at least 16 bytes"),
            Self::NoSpace { size } => write!(
                f,
                "no free {size:#x}-byte hole left for a BAR in the MMIO window {WINDOW_START:#x}..{WINDOW_END:#x}"
            ),
        }
    }
}

/// First-fit allocator of naturally aligned ranges in `[start, end)`, avoiding reserved ranges.
#[derive(Debug, Clone)]
pub struct MmioWindow {
    start: u64,
    end: u64,
    /// Ranges in use, `[base, end)`.
    used: Vec<(u64, u64)>,
}

impl MmioWindow {
    /// An empty window `[start, end)` (bytes).
    pub fn new(start: u64, end: u64) -> Self {
        Self { start, end, used: Vec::new() }
    }

    /// Marks `[base, base + size)` as in use (an assigned BAR, RAM, a firmware region). Saturates at the
    /// top of the address space.
    pub fn reserve(&mut self, base: u64, size: u64) {
        if size > 0 {
            self.used.push((base, base.saturating_add(size)));
        }
    }

    /// Allocates `size` bytes aligned to `size` (and at least to 4 KiB so BARs never share a page).
    /// Errors: [`BarError`].
    pub fn alloc(&mut self, size: u64) -> Result<u64, BarError> {
        if size < 16 || !size.is_power_of_two() {
            return Err(BarError::BadSize { size });
        }
        let align = size.max(4096);
        let mut at = self.start.next_multiple_of(align);
        loop {
            let end = at.checked_add(size).filter(|&e| e <= self.end).ok_or(BarError::NoSpace { size })?;
            match self.used.iter().filter(|&&(b, e)| b < end && at < e).map(|&(_, e)| e).max() {
                Some(busy_end) => at = busy_end.checked_next_multiple_of(align).ok_or(BarError::NoSpace { size })?,
                None => {
                    self.used.push((at, end));
                    return Ok(at);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_alignment_and_page_granularity() {
        let mut w = MmioWindow::new(WINDOW_START, WINDOW_END);
        assert_eq!(w.alloc(0x4000), Ok(0xC000_0000));
        assert_eq!(w.alloc(0x20), Ok(0xC000_4000), "small BARs still get their own page");
        assert_eq!(w.alloc(0x10_0000), Ok(0xC010_0000), "1 MiB BAR aligned to 1 MiB");
        assert_eq!(w.alloc(0x1000), Ok(0xC000_5000), "first fit reuses the hole below");
    }

    #[test]
    fn skips_ranges_in_use() {
        let mut w = MmioWindow::new(WINDOW_START, WINDOW_END);
        w.reserve(0xC000_0000, 0x1000); // a BAR the firmware placed
        w.reserve(0xC000_2000, 0x1_0000); // straddles the next 64 KiB candidate
        assert_eq!(w.alloc(0x1000), Ok(0xC000_1000));
        assert_eq!(w.alloc(0x1_0000), Ok(0xC002_0000));
        w.reserve(0, 0xE000_0000); // pc machine with 3.5 GiB of low RAM
        assert_eq!(w.alloc(0x1000), Ok(0xE000_0000));
    }

    #[test]
    fn errors() {
        let mut w = MmioWindow::new(WINDOW_START, WINDOW_END);
        assert_eq!(w.alloc(0), Err(BarError::BadSize { size: 0 }));
        assert_eq!(w.alloc(0x3000), Err(BarError::BadSize { size: 0x3000 }));
        assert_eq!(w.alloc(8), Err(BarError::BadSize { size: 8 }));
        assert_eq!(w.alloc(0x8000_0000), Err(BarError::NoSpace { size: 0x8000_0000 }));
        let mut w = MmioWindow::new(0xFFFF_FFFF_FFFF_0000, u64::MAX);
        w.reserve(0xFFFF_FFFF_FFFF_0000, 0x1_0000);
        assert_eq!(w.alloc(0x1000), Err(BarError::NoSpace { size: 0x1000 }), "no overflow at the top");
        let mut w = MmioWindow::new(0x1000, 0x3000);
        assert_eq!(w.alloc(0x1000), Ok(0x1000));
        assert_eq!(w.alloc(0x1000), Ok(0x2000));
        assert_eq!(w.alloc(0x1000), Err(BarError::NoSpace { size: 0x1000 }));
    }
}
