//! Driver-owned DMA memory with safe accessors: [`DmaBuffer`], page-aligned zeroed memory (libos
//! [`DmaRegion`], identity mapped so its address is what the device is given) that a device reads and writes
//! while the driver keeps it alive. Rings the device writes concurrently (an NVMe completion queue) are read
//! with volatile accesses ([`DmaBuffer::read_u32`]); bounce buffers, which the device touches only while a
//! command owns them, are lent as slices between commands.
//!
//! This is the one module of the block drivers that turns a DMA address into Rust memory.

use core::sync::atomic::{fence, Ordering};
use libos::mem::dma::{DmaAllocError, DmaRegion};

/// Bytes per page of DMA memory (and the NVMe memory page size the driver programs).
pub const PAGE: usize = 4096;

/// Page-aligned, zeroed DMA memory of a whole number of pages, freed on drop.
pub struct DmaBuffer {
    region: DmaRegion,
}

impl DmaBuffer {
    /// At least `bytes` bytes (rounded up to whole pages; at least one page). Errors: out of memory.
    pub fn new(bytes: usize) -> Result<Self, DmaAllocError> {
        Ok(Self { region: DmaRegion::new(bytes.div_ceil(PAGE).max(1))? })
    }

    /// The address the device is given (bytes; page aligned).
    pub fn paddr(&self) -> u64 {
        self.region.paddr()
    }

    /// Length (bytes, whole pages).
    pub fn len(&self) -> usize {
        self.region.len()
    }

    /// Always false: at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The memory as bytes. Only while the device does not own it (no command in flight uses it).
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the region is `len()` initialised (zeroed at allocation) bytes owned by `self`, alive for the
        // borrow; the driver lends it to the device only between submission and completion, never while a
        // slice is out (the block engine borrows buffers of free or completed slots only).
        unsafe { core::slice::from_raw_parts(self.region.as_ptr().as_ptr(), self.len()) }
    }

    /// The memory as mutable bytes; as [`as_slice`](Self::as_slice).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; `&mut self` makes this the only reference.
        unsafe { core::slice::from_raw_parts_mut(self.region.as_ptr().as_ptr(), self.len()) }
    }

    /// Writes `bytes` at `offset` with volatile stores, then a release fence so the device sees them before a
    /// later doorbell write. Out-of-range parts are not written: `false` (callers compute offsets from queue
    /// indices below the queue size, so this does not happen).
    pub fn write(&self, offset: usize, bytes: &[u8]) -> bool {
        if offset.checked_add(bytes.len()).is_none_or(|end| end > self.len()) {
            return false;
        }
        let base = self.region.as_ptr().as_ptr();
        for (i, &b) in bytes.iter().enumerate() {
            // SAFETY: `offset + i < len()` (checked above): inside the region, which `self` keeps alive.
            unsafe { core::ptr::write_volatile(base.add(offset + i), b) };
        }
        fence(Ordering::Release);
        true
    }

    /// The little-endian `u32` at `offset` (4-byte aligned), read with a volatile load followed by an acquire
    /// fence, so later reads see what the device wrote before it; `None` out of range or misaligned.
    pub fn read_u32(&self, offset: usize) -> Option<u32> {
        if !offset.is_multiple_of(4) || offset.checked_add(4).is_none_or(|end| end > self.len()) {
            return None;
        }
        // SAFETY: in range and 4-byte aligned (the region is page aligned); plain memory the device may write
        // concurrently, hence volatile.
        let v = unsafe { core::ptr::read_volatile(self.region.as_ptr().as_ptr().add(offset) as *const u32) };
        fence(Ordering::Acquire);
        Some(u32::from_le(v))
    }

    /// Copies `out.len()` bytes from `offset` with volatile loads (a structure the device wrote); `false` and
    /// nothing copied when out of range.
    pub fn read(&self, offset: usize, out: &mut [u8]) -> bool {
        if offset.checked_add(out.len()).is_none_or(|end| end > self.len()) {
            return false;
        }
        let base = self.region.as_ptr().as_ptr();
        for (i, o) in out.iter_mut().enumerate() {
            // SAFETY: `offset + i < len()` (checked above).
            *o = unsafe { core::ptr::read_volatile(base.add(offset + i)) };
        }
        fence(Ordering::Acquire);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_accessors() {
        let mut b = DmaBuffer::new(100).unwrap();
        assert_eq!(b.len(), PAGE);
        assert_eq!(b.paddr() % PAGE as u64, 0);
        assert!(b.write(8, &[1, 2, 3, 4]));
        assert_eq!(b.read_u32(8), Some(0x0403_0201));
        assert_eq!(b.read_u32(9), None, "misaligned");
        assert_eq!(b.read_u32(PAGE - 2), None);
        assert!(!b.write(PAGE - 1, &[0, 0]));
        assert!(!b.write(usize::MAX, &[0]));
        let mut out = [0u8; 4];
        assert!(b.read(8, &mut out));
        assert_eq!(out, [1, 2, 3, 4]);
        assert!(!b.read(PAGE - 3, &mut out));
        b.as_mut_slice()[0] = 9;
        assert_eq!(b.as_slice()[0], 9);
        assert_eq!(DmaBuffer::new(0).unwrap().len(), PAGE);
    }
}
