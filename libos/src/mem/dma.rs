//! DMA-able memory for device rings and buffers. libos identity-maps all RAM, so a buffer's guest-physical
//! address equals its virtual address; allocations come from the heap, page-aligned and zeroed.
#![allow(unsafe_code)]

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use core::fmt;
use core::ptr::NonNull;

/// A zeroed, page-aligned region shared with a device. Freed on drop.
pub struct DmaRegion {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the region is plain memory owned by this value; devices access it only by physical address.
unsafe impl Send for DmaRegion {}
// SAFETY: as above; shared references only allow reading the pointer/addresses.
unsafe impl Sync for DmaRegion {}

/// Error of [`DmaRegion::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaAllocError {
    /// Bytes asked for.
    pub bytes: usize,
}

impl fmt::Display for DmaAllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot allocate {} bytes of DMA memory", self.bytes)
    }
}

impl DmaRegion {
    /// Allocates `pages` 4 KiB pages, zeroed. Errors: out of memory (or zero pages).
    pub fn new(pages: usize) -> Result<Self, DmaAllocError> {
        let bytes = pages.checked_mul(4096).filter(|&b| b > 0).ok_or(DmaAllocError { bytes: 0 })?;
        let layout = Layout::from_size_align(bytes, 4096).map_err(|_| DmaAllocError { bytes })?;
        // SAFETY: layout has non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).ok_or(DmaAllocError { bytes })?;
        Ok(Self { ptr, layout })
    }

    /// Guest-physical address (bytes) to give the device.
    pub fn paddr(&self) -> u64 {
        virt_to_phys(self.ptr.as_ptr() as usize)
    }

    /// Pointer to the first byte.
    pub fn as_ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// Length (bytes).
    pub fn len(&self) -> usize {
        self.layout.size()
    }

    /// Always false (regions are at least one page).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Gives up ownership; the memory stays allocated for the device forever.
    pub fn leak(self) -> NonNull<u8> {
        let p = self.ptr;
        core::mem::forget(self);
        p
    }
}

impl Drop for DmaRegion {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// Guest-physical address of a kernel virtual address (identity map: the same number).
pub fn virt_to_phys(vaddr: usize) -> u64 {
    vaddr as u64
}

/// Kernel virtual address of a guest-physical address (identity map).
pub fn phys_to_virt(paddr: u64) -> usize {
    paddr as usize
}
