//! The kernel heap: `talc` over every free RAM range left after page tables were allocated. The lock masks
//! interrupts, so an interrupt handler that allocates cannot deadlock against the code it interrupted.
#![allow(unsafe_code)]

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{null_mut, NonNull};
use spin::Mutex;
use talc::base::Talc;
use talc::source::Manual;
use talc::DefaultBinning;

struct Heap(Mutex<Talc<Manual, DefaultBinning>>);

#[global_allocator]
static HEAP: Heap = Heap(Mutex::new(Talc::new(Manual)));

// SAFETY: every path locks the allocator with interrupts masked; talc upholds GlobalAlloc's contract.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        crate::arch_without_interrupts(|| {
            // SAFETY: forwarded GlobalAlloc contract.
            unsafe { self.0.lock().allocate(layout) }.map_or(null_mut(), NonNull::as_ptr)
        })
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded GlobalAlloc contract.
        crate::arch_without_interrupts(|| unsafe { self.0.lock().deallocate(ptr, layout) })
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let grown = crate::arch_without_interrupts(|| {
            // SAFETY: forwarded GlobalAlloc contract; `new_size` is non-zero per that contract.
            unsafe { self.0.lock().try_realloc_in_place(ptr, layout, new_size) }
        });
        if grown {
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
        unsafe { HEAP.0.lock().claim(start as *mut u8, (end - start) as usize) }.is_some()
    })
}
