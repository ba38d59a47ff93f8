//! Checks shared by the boot information targets (`pvh_start_info`, `multiboot2`): the free physical ranges and
//! the frame allocator built from a [`BootInfo`] (`libos::mem::frames`), as `libos::start` builds them.

use libos::bootinfo::{BootInfo, RegionKind};
use libos::mem::frames::{FrameAllocator, FreeRanges, LOW_MEMORY_END, PAGE_SIZE};

/// Builds the free ranges and a frame allocator from `boot` with an image at 1 MiB, the modules and the loader's
/// structure reserved, and asserts: free ranges are page-aligned, sorted, disjoint, inside RAM, above 1 MiB and outside every reserved
/// range; allocations come from free ranges, never overlap, and no page is lost or invented.
pub fn check_boot_memory(boot: &BootInfo) {
    // What boot reserves: an image at 1 MiB, the modules, the loader's structure (Multiboot2's MBI).
    let mut reserved = vec![(LOW_MEMORY_END, 2 * LOW_MEMORY_END)];
    for m in boot.modules() {
        reserved.push((m.start, m.start.saturating_add(m.len)));
    }
    reserved.extend(boot.loader_data());
    let free = match FreeRanges::new(boot, &reserved) {
        Ok(free) => free,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let ram = |s: u64, e: u64| {
        boot.regions().iter().any(|r| r.kind == RegionKind::Ram && r.start <= s && e <= r.end())
            || ram_union_covers(boot, s, e)
    };
    let mut last_end = 0;
    for &(s, e) in free.ranges() {
        assert!(s % PAGE_SIZE == 0 && e % PAGE_SIZE == 0, "unaligned free range {s:#x}..{e:#x}");
        assert!(s < e && s >= last_end, "free ranges unsorted or overlapping: {:x?}", free.ranges());
        assert!(s >= LOW_MEMORY_END, "free range below 1 MiB");
        assert!(ram(s, e), "free range {s:#x}..{e:#x} outside RAM");
        for &(rs, re) in &reserved {
            assert!(e <= rs || s >= re, "free range {s:#x}..{e:#x} overlaps reserved {rs:#x}..{re:#x}");
        }
        last_end = e;
    }
    let total = free.total();
    let mut frames = FrameAllocator::new(free.clone());
    let mut taken: Vec<(u64, u64)> = Vec::new();
    for pages in [1u64, 16, 1, 256, 3] {
        let Ok(at) = frames.alloc(pages) else { continue };
        let end = at + pages * PAGE_SIZE;
        assert!(free.ranges().iter().any(|&(s, e)| s <= at && end <= e), "allocation outside the free ranges");
        assert!(taken.iter().all(|&(s, e)| end <= s || at >= e), "allocations overlap");
        taken.push((at, end));
    }
    let left = frames.into_ranges().total();
    assert_eq!(left + taken.iter().map(|(s, e)| e - s).sum::<u64>(), total, "pages lost or invented");
}

/// Whether `[s, e)` is covered by the union of the RAM regions (overlapping regions are merged).
fn ram_union_covers(boot: &BootInfo, s: u64, e: u64) -> bool {
    let mut pos = s;
    loop {
        let next = boot
            .regions()
            .iter()
            .filter(|r| r.kind == RegionKind::Ram && r.start <= pos && r.end() > pos)
            .map(|r| r.end())
            .max();
        match next {
            Some(end) if end >= e => return true,
            Some(end) => pos = end,
            None => return false,
        }
    }
}
