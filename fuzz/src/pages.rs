//! A global allocator for the device targets that keeps freed 4 KiB page-aligned blocks for the next request
//! of that shape instead of handing them back to glibc: the Xen front-ends allocate (and zero) hundreds of
//! shared pages per input, and glibc's `memalign` path was a quarter of an execution. Everything else goes
//! to the system allocator. A reused page holds whatever its last owner wrote, as memory from `malloc` does;
//! `alloc_zeroed` zeroes it.

use std::alloc::{GlobalAlloc, Layout, System};

/// Pages kept at most (16 MiB).
const KEEP: usize = 4096;

/// The allocator: `#[global_allocator] static A: PageCache = PageCache::new();` in a target.
pub struct PageCache {
    free: spin::Mutex<([usize; KEEP], usize)>,
}

impl PageCache {
    /// An empty cache.
    pub const fn new() -> Self {
        Self { free: spin::Mutex::new(([0; KEEP], 0)) }
    }
}

impl Default for PageCache {
    fn default() -> Self {
        Self::new()
    }
}

fn is_page(layout: Layout) -> bool {
    layout.size() == 4096 && layout.align() == 4096
}

// SAFETY: page-shaped blocks come from `System` with that same layout and go back into the cache (or `System`)
// only through `dealloc` with that layout; everything else is passed straight through.
unsafe impl GlobalAlloc for PageCache {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_page(layout) {
            let mut free = self.free.lock();
            if free.1 > 0 {
                free.1 -= 1;
                return free.0[free.1] as *mut u8;
            }
        }
        // SAFETY: the caller's layout contract is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !is_page(layout) {
            // SAFETY: as in `alloc`.
            return unsafe { System.alloc_zeroed(layout) };
        }
        // SAFETY: as in `alloc`.
        let ptr = unsafe { self.alloc(layout) };
        if !ptr.is_null() {
            // SAFETY: `ptr` is a live block of `layout.size()` bytes.
            unsafe { ptr.write_bytes(0, layout.size()) };
        }
        ptr
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if is_page(layout) || (new_size == 4096 && layout.align() == 4096) {
            // SAFETY: the caller's contract; the default moves the block through `alloc` and `dealloc`.
            let new = unsafe { self.alloc(Layout::from_size_align_unchecked(new_size, layout.align())) };
            if !new.is_null() {
                // SAFETY: both blocks are live and at least this long.
                unsafe { std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
                // SAFETY: `ptr` was allocated with `layout` by this allocator.
                unsafe { self.dealloc(ptr, layout) };
            }
            return new;
        }
        // SAFETY: neither shape is a cached page, so `ptr` came from `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_page(layout) {
            let mut free = self.free.lock();
            if free.1 < KEEP {
                let n = free.1;
                free.0[n] = ptr as usize;
                free.1 += 1;
                return;
            }
        }
        // SAFETY: `ptr` came from `System` with this layout (cached pages did too).
        unsafe { System.dealloc(ptr, layout) }
    }
}
