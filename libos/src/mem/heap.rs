//! The kernel heap: `talc` over every free RAM range left after page tables were allocated. The lock masks
//! interrupts, so an interrupt handler that allocates cannot deadlock against the code it interrupted. Counts the
//! bytes it manages and the bytes allocated ([`stats`]) and hands out page-aligned runs for the balloon
//! ([`alloc_pages`]).
#![allow(unsafe_code)]

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{null_mut, NonNull};
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;
use talc::base::Talc;
use talc::source::Manual;
use talc::DefaultBinning;

struct Heap(Mutex<Talc<Manual, DefaultBinning>>);

#[global_allocator]
static HEAP: Heap = Heap(Mutex::new(Talc::new(Manual)));

/// Bytes given to the heap ([`claim`]).
static CLAIMED: AtomicU64 = AtomicU64::new(0);
/// Bytes of live allocations (their layouts' sizes; talc's per-allocation overhead is not counted).
static ALLOCATED: AtomicU64 = AtomicU64::new(0);

// SAFETY: every path locks the allocator with interrupts masked; talc upholds GlobalAlloc's contract.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        crate::arch_without_interrupts(|| {
            // SAFETY: forwarded GlobalAlloc contract.
            let p = unsafe { self.0.lock().allocate(layout) }.map_or(null_mut(), NonNull::as_ptr);
            if !p.is_null() {
                ALLOCATED.fetch_add(layout.size() as u64, Ordering::Relaxed);
            }
            p
        })
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: forwarded GlobalAlloc contract.
        crate::arch_without_interrupts(|| unsafe { self.0.lock().deallocate(ptr, layout) })
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let grown = crate::arch_without_interrupts(|| {
            // SAFETY: forwarded GlobalAlloc contract; `new_size` is non-zero per that contract.
            unsafe { self.0.lock().try_realloc_in_place(ptr, layout, new_size) }
        });
        if grown {
            // A no-op for the count when shrinking in place lands on the same size.
            ALLOCATED.fetch_add(new_size as u64, Ordering::Relaxed);
            ALLOCATED.fetch_sub(layout.size() as u64, Ordering::Relaxed);
            return ptr;
        }
        // SAFETY: forwarded contract; copy the smaller of the two sizes, then free the old block.
        unsafe {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            let new = self.alloc(new_layout);
            if !new.is_null() {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

/// Gives `[start, end)` (bytes, identity mapped, unused by anything else) to the heap. Returns whether talc
/// accepted it (ranges too small for its metadata are refused).
///
/// # Safety
/// The range must be free RAM, mapped read-write, never used by anything else for the kernel's lifetime.
pub unsafe fn claim(start: u64, end: u64) -> bool {
    crate::arch_without_interrupts(|| {
        // SAFETY: forwarded to the caller.
        let ok = unsafe { HEAP.0.lock().claim(start as *mut u8, (end - start) as usize) }.is_some();
        if ok {
            CLAIMED.fetch_add(end - start, Ordering::Relaxed);
        }
        ok
    })
}

/// The heap's figures (bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes the heap manages (everything [`claim`] accepted).
    pub total_bytes: u64,
    /// Bytes of live allocations.
    pub allocated_bytes: u64,
}

/// The heap's figures now.
pub fn stats() -> HeapStats {
    HeapStats { total_bytes: CLAIMED.load(Ordering::Relaxed), allocated_bytes: ALLOCATED.load(Ordering::Relaxed) }
}

/// The page-aligned layout of a balloon run of `pages` pages (a power of two), aligned to its size.
fn pages_layout(pages: u64) -> Option<Layout> {
    let bytes = usize::try_from(pages.checked_mul(4096)?).ok()?;
    Layout::from_size_align(bytes, bytes).ok()
}

/// Allocates `pages` contiguous pages (a power of two) aligned to their size, for the balloon; returns the
/// physical (= virtual, identity mapped) address, or `None` when no such run is free. The memory is not touched.
pub fn alloc_pages(pages: u64) -> Option<u64> {
    let layout = pages_layout(pages)?;
    // SAFETY: a non-zero size (pages >= 1); the block is only given back through `free_pages` with this layout.
    let p = unsafe { HEAP.alloc(layout) };
    (!p.is_null()).then_some(p as u64)
}

/// Gives back a run [`alloc_pages`] returned for the same `pages`.
pub fn free_pages(addr: u64, pages: u64) {
    if let Some(layout) = pages_layout(pages) {
        // SAFETY: the balloon frees only runs `alloc_pages` returned, once, with the same page count (its chunk
        // map holds each run until then).
        unsafe { HEAP.dealloc(addr as *mut u8, layout) }
    }
}
