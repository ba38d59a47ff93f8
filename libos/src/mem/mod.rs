//! Physical memory: the free ranges left by the boot memory map after the image, boot modules and the low
//! 1 MiB are taken out ([`FreeRanges`], pure and host-tested), a frame allocator over them for page tables,
//! the `talc` heap over everything left (all free RAM, not a fixed arena), final page tables
//! (`paging`, W^X and guard pages), DMA allocations for device rings and buffers (`dma`), and the memory
//! balloon the hypervisors' drivers inflate and deflate (`balloon`).

pub mod balloon;
pub mod dma;
pub mod frames;
#[cfg(target_os = "none")]
pub mod heap;
#[cfg(target_os = "none")]
pub mod paging;

pub use frames::{FrameAllocator, FreeRanges, PAGE_SIZE};

use core::sync::atomic::{AtomicU64, Ordering};

const MAX_GUARDS: usize = 8;
static GUARD_PAGES: [AtomicU64; MAX_GUARDS] = [const { AtomicU64::new(u64::MAX) }; MAX_GUARDS];

/// Records a 4 KiB guard page (bytes address, page-aligned) so fault reports can name stack overflows.
pub fn add_guard_page(addr: u64) {
    for g in &GUARD_PAGES {
        if g.compare_exchange(u64::MAX, addr & !0xfff, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            return;
        }
    }
}

/// Whether `addr` falls in a recorded guard page.
pub fn is_guard_page(addr: u64) -> bool {
    GUARD_PAGES.iter().any(|g| {
        let base = g.load(Ordering::Acquire);
        base != u64::MAX && addr >= base && addr < base + PAGE_SIZE
    })
}
