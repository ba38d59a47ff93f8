//! Free physical ranges from the boot memory map, and a frame allocator over them.
//! Pure logic (no memory is touched), unit-tested on the host.

use crate::bootinfo::{BootInfo, RegionKind};
use core::fmt;

/// Page size (bytes).
pub const PAGE_SIZE: u64 = 4096;
/// Most free ranges tracked.
pub const MAX_RANGES: usize = 64;
/// Memory below this (bytes) is never used: BIOS data, the PVH start info, real-mode leftovers.
pub const LOW_MEMORY_END: u64 = 0x10_0000;

/// Errors of the frame allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// No free range has `pages` contiguous pages left.
    OutOfMemory {
        /// Contiguous 4 KiB pages asked for.
        pages: u64,
    },
    /// More free ranges than [`MAX_RANGES`] after carving.
    TooManyRanges,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfMemory { pages } => write!(f, "out of physical memory: no {pages} contiguous free pages"),
            Self::TooManyRanges => write!(f, "memory map too fragmented: more than {MAX_RANGES} free ranges"),
        }
    }
}

/// Page-aligned free ranges `[start, end)` (bytes), sorted, non-overlapping.
#[derive(Clone)]
pub struct FreeRanges {
    ranges: [(u64, u64); MAX_RANGES],
    count: usize,
}

impl FreeRanges {
    /// The RAM of `boot`, page-aligned inward, minus the low 1 MiB and minus every `reserved` range
    /// (`[start, end)` bytes: the kernel image, modules, the command line...). Errors: too fragmented.
    pub fn new(boot: &BootInfo, reserved: &[(u64, u64)]) -> Result<Self, FrameError> {
        let mut fr = FreeRanges { ranges: [(0, 0); MAX_RANGES], count: 0 };
        for r in boot.regions().iter().filter(|r| r.kind == RegionKind::Ram) {
            let start = align_up(r.start.max(LOW_MEMORY_END));
            let end = r.end() & !(PAGE_SIZE - 1);
            if start < end {
                fr.push(start, end)?;
            }
        }
        fr.sort();
        for &(s, e) in reserved {
            fr.remove(s & !(PAGE_SIZE - 1), align_up(e))?;
        }
        Ok(fr)
    }

    fn push(&mut self, s: u64, e: u64) -> Result<(), FrameError> {
        if self.count == MAX_RANGES {
            return Err(FrameError::TooManyRanges);
        }
        self.ranges[self.count] = (s, e);
        self.count += 1;
        Ok(())
    }

    fn sort(&mut self) {
        self.ranges[..self.count].sort_unstable();
        // Merge overlaps a sloppy map may contain.
        let mut w = 0;
        for i in 0..self.count {
            let (s, e) = self.ranges[i];
            if w > 0 && s <= self.ranges[w - 1].1 {
                self.ranges[w - 1].1 = self.ranges[w - 1].1.max(e);
            } else {
                self.ranges[w] = (s, e);
                w += 1;
            }
        }
        self.count = w;
    }

    /// Takes `[s, e)` out of the free ranges.
    pub fn remove(&mut self, s: u64, e: u64) -> Result<(), FrameError> {
        let mut out = FreeRanges { ranges: [(0, 0); MAX_RANGES], count: 0 };
        for &(a, b) in self.ranges() {
            if e <= a || s >= b {
                out.push(a, b)?;
                continue;
            }
            if a < s {
                out.push(a, s)?;
            }
            if e < b {
                out.push(e, b)?;
            }
        }
        *self = out;
        Ok(())
    }

    /// The ranges.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges[..self.count]
    }

    /// Total free bytes.
    pub fn total(&self) -> u64 {
        self.ranges().iter().map(|(s, e)| e - s).sum()
    }
}

fn align_up(x: u64) -> u64 {
    x.saturating_add(PAGE_SIZE - 1) & !(PAGE_SIZE - 1)
}

/// Hands out page frames from the top of the lowest free range upward-compatible order; the heap takes
/// whatever is left (see [`FrameAllocator::into_ranges`]).
pub struct FrameAllocator {
    free: FreeRanges,
}

impl FrameAllocator {
    /// An allocator over `free`.
    pub fn new(free: FreeRanges) -> Self {
        Self { free }
    }

    /// Allocates `pages` contiguous 4 KiB frames, returning the physical address (bytes). The memory is not
    /// zeroed. Errors: [`FrameError::OutOfMemory`].
    pub fn alloc(&mut self, pages: u64) -> Result<u64, FrameError> {
        let bytes = pages * PAGE_SIZE;
        for i in 0..self.free.count {
            let (s, e) = self.free.ranges[i];
            if e - s >= bytes {
                self.free.ranges[i].0 = s + bytes;
                return Ok(s);
            }
        }
        Err(FrameError::OutOfMemory { pages })
    }

    /// The free ranges left, for the heap.
    pub fn into_ranges(self) -> FreeRanges {
        self.free
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootinfo::{BootProtocol, MemoryRegion};

    fn boot(regions: &[(u64, u64, RegionKind)]) -> BootInfo {
        let mut b = BootInfo::new(BootProtocol::Pvh { start_info: 0, version: 1 });
        for &(start, len, kind) in regions {
            b.push_region(MemoryRegion { start, len, kind }).unwrap();
        }
        b
    }

    #[test]
    fn carves_low_memory_image_and_modules() {
        let b = boot(&[
            (0, 0x9fc00, RegionKind::Ram),
            (0x9fc00, 0x400, RegionKind::Reserved),
            (0x100000, 0x3f00000, RegionKind::Ram),
        ]);
        let fr = FreeRanges::new(&b, &[(0x100000, 0x123456), (0x3000000, 0x3000800)]).unwrap();
        assert_eq!(fr.ranges(), &[(0x124000, 0x3000000), (0x3001000, 0x4000000)]);
        assert_eq!(fr.total(), (0x3000000 - 0x124000) + (0x4000000 - 0x3001000));
    }

    #[test]
    fn merges_overlaps_and_ignores_reserved_kinds() {
        let b = boot(&[
            (0x200000, 0x100000, RegionKind::Ram),
            (0x280000, 0x100000, RegionKind::Ram),
            (0x400000, 0x1000, RegionKind::AcpiNvs),
        ]);
        let fr = FreeRanges::new(&b, &[]).unwrap();
        assert_eq!(fr.ranges(), &[(0x200000, 0x380000)]);
    }

    #[test]
    fn allocator_hands_out_contiguous_frames_then_fails() {
        let b = boot(&[(0x100000, 0x3000, RegionKind::Ram), (0x200000, 0x1000, RegionKind::Ram)]);
        let mut fa = FrameAllocator::new(FreeRanges::new(&b, &[]).unwrap());
        assert_eq!(fa.alloc(2), Ok(0x100000));
        assert_eq!(fa.alloc(2), Err(FrameError::OutOfMemory { pages: 2 }));
        assert_eq!(fa.alloc(1), Ok(0x102000));
        assert_eq!(fa.alloc(1), Ok(0x200000));
        assert!(fa.alloc(1).is_err());
    }
}
