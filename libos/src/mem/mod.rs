//! Physical memory: the free ranges left by the boot memory map after the image, boot modules and the low
//! 1 MiB are taken out ([`FreeRanges`], pure and host-tested), a frame allocator over them for page tables,
//! the `talc` heap over everything left (all free RAM, not a fixed arena), final page tables
//! (`paging`, W^X and guard pages), DMA allocations for device rings and buffers (`dma`), the memory
//! balloon the hypervisors' drivers inflate and deflate (`balloon`), and the heap's memory pressure (`pressure`).

pub mod balloon;
pub mod dma;
pub mod frames;
#[cfg(target_os = "none")]
pub mod heap;
#[cfg(target_os = "none")]
pub mod paging;
pub mod pressure;

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

/// Whether `addr` falls in a recorded guard page or a thread stack's guard page.
pub fn is_guard_page(addr: u64) -> bool {
    GUARD_PAGES.iter().any(|g| {
        let base = g.load(Ordering::Acquire);
        base != u64::MAX && addr >= base && addr < base + PAGE_SIZE
    }) || crate::thread::is_stack_guard(addr)
}

/// Whether `addr` lies in memory the kernel heap manages (always false on the host, which has no kernel heap).
/// Memory the hypervisor or a device owns outright (Xen's xenstore and console ring frames, in reserved regions of
/// the memory map) must not: the heap would hand it out again.
pub fn heap_contains(addr: u64) -> bool {
    #[cfg(target_os = "none")]
    return heap::contains(addr);
    #[cfg(not(target_os = "none"))]
    {
        let _ = addr;
        false
    }
}

/// The kernel heap's size (bytes): the free RAM after the image, less what a balloon gave the hypervisor. `None`
/// on the host, which has no kernel heap. For sizing caches and buffer sets as a share of the memory there is.
pub fn heap_bytes() -> Option<u64> {
    #[cfg(target_os = "none")]
    {
        let (ballooned, _) = balloon::global::held_bytes();
        Some(heap::stats().total_bytes.saturating_sub(ballooned))
    }
    #[cfg(not(target_os = "none"))]
    None
}

/// `len` zero bytes on the heap, or `None` when it cannot spare them: for buffers whose absence a caller can
/// survive (refuse a connection, post fewer receive buffers) instead of ending the VM with
/// [`crate::EXIT_OUT_OF_MEMORY`].
pub fn try_zeroed(len: usize) -> Option<alloc::vec::Vec<u8>> {
    let mut v = alloc::vec::Vec::new();
    v.try_reserve_exact(len).ok()?;
    v.resize(len, 0);
    Some(v)
}
