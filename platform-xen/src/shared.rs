//! Memory shared with Xen or a backend domain, one 4 KiB page at a time: the shared-info page, grant-table
//! frames, the xenstore and console rings, device rings and granted buffers. The other side writes this memory
//! at any time, so it is only touched through atomics and volatile copies here, never through plain references;
//! every other module works on these accessors (the `GuestMemory` idea of rust-vmm).
//! Source: Xen `xen/include/public/io/ring.h` (barriers: `xen_mb`/`xen_wmb`), Intel SDM Vol. 3A §8.2 (x86
//! memory ordering: only store→load needs a fence).
#![allow(unsafe_code)]

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8};
use libos::mem::dma::{DmaAllocError, DmaRegion};

/// Page size of the shared memory (bytes); grants and ring pages are whole pages.
pub const PAGE_SIZE: usize = 4096;

/// One 4 KiB page shared with another domain or with Xen. Owns the memory unless it was adopted from a frame
/// Xen placed in the physmap (xenstore/console rings), which lives for the whole run.
pub struct SharedPage {
    ptr: NonNull<u8>,
    frame: u64,
    _region: Option<DmaRegion>,
}

// SAFETY: the page is accessed only through atomics and volatile copies, which are sound from any thread.
unsafe impl Send for SharedPage {}
// SAFETY: as above.
unsafe impl Sync for SharedPage {}

impl core::fmt::Debug for SharedPage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "SharedPage({:#x})", self.paddr())
    }
}

impl SharedPage {
    /// A fresh zeroed page from the heap (page-aligned DMA memory). Errors: out of memory.
    pub fn new() -> Result<Self, DmaAllocError> {
        let region = DmaRegion::new(1)?;
        let ptr = region.as_ptr();
        Ok(Self { ptr, frame: frame_of(ptr), _region: Some(region) })
    }

    /// Adopts the page at guest-physical `paddr` (e.g. the xenstore ring from `HVM_PARAM_STORE_PFN`).
    ///
    /// # Safety
    /// `paddr` must be 4 KiB aligned, identity mapped for the rest of the run, and used by nothing else in
    /// this program (no allocator owns it).
    pub unsafe fn adopt(paddr: u64) -> Self {
        // The heap must never hand out a page Xen writes on its own (it would be two things at once).
        debug_assert!(!libos::mem::heap_contains(paddr), "adopted page {paddr:#x} lies in the heap");
        // SAFETY: the caller promises a mapped, page-aligned, non-null address.
        let ptr = unsafe { NonNull::new_unchecked(libos::mem::dma::phys_to_virt(paddr) as *mut u8) };
        Self { ptr, frame: frame_of(ptr), _region: None }
    }

    /// Guest-physical address (bytes).
    pub fn paddr(&self) -> u64 {
        libos::mem::dma::virt_to_phys(self.ptr.as_ptr() as usize)
    }

    /// Guest frame number (`paddr / 4096`), what grants and `XENMEM_add_to_physmap` take. In host tests, where
    /// heap addresses lie far above any guest's RAM, a small made-up number unique to the page.
    pub fn frame(&self) -> u64 {
        self.frame
    }

    /// Pointer to byte `off` of a `size`-byte, `size`-aligned field. Offsets are computed by this crate from
    /// validated values; one out of range is a bug in the caller, reported like a slice index out of range.
    fn field(&self, off: usize, size: usize) -> *mut u8 {
        assert!(off.is_multiple_of(size) && off + size <= PAGE_SIZE, "shared page field {off}+{size} out of range");
        // SAFETY: in bounds of the page, checked above.
        unsafe { self.ptr.as_ptr().add(off) }
    }

    /// The byte at `off`.
    pub fn u8_at(&self, off: usize) -> &AtomicU8 {
        // SAFETY: `field` checked bounds; the page lives as long as `self`; atomics tolerate concurrent writers.
        unsafe { AtomicU8::from_ptr(self.field(off, 1)) }
    }

    /// The little-endian u16 at `off` (2-byte aligned).
    pub fn u16_at(&self, off: usize) -> &AtomicU16 {
        // SAFETY: as in `u8_at`; `field` checked the alignment.
        unsafe { AtomicU16::from_ptr(self.field(off, 2).cast()) }
    }

    /// The little-endian u32 at `off` (4-byte aligned).
    pub fn u32_at(&self, off: usize) -> &AtomicU32 {
        // SAFETY: as in `u16_at`.
        unsafe { AtomicU32::from_ptr(self.field(off, 4).cast()) }
    }

    /// The little-endian u64 at `off` (8-byte aligned).
    pub fn u64_at(&self, off: usize) -> &AtomicU64 {
        // SAFETY: as in `u16_at`.
        unsafe { AtomicU64::from_ptr(self.field(off, 8).cast()) }
    }

    fn check_range(off: usize, len: usize) {
        assert!(off.checked_add(len).is_some_and(|end| end <= PAGE_SIZE), "shared page range {off}+{len} out of range");
    }

    /// Copies `buf.len()` bytes starting at `off` out of the page (volatile reads, each byte read exactly once:
    /// the other side may be writing; what we got is what we validate and use — never read twice). Aligned
    /// 8-byte words where the range allows, single bytes at its ends (a granted 4 KiB buffer is 512 reads).
    pub fn read(&self, off: usize, buf: &mut [u8]) {
        Self::check_range(off, buf.len());
        let (head, words, tail) = Self::split(off, buf.len());
        for i in (0..head).chain(tail..buf.len()) {
            // SAFETY: `off + i` is inside the page (range checked above); volatile so each byte is read exactly once.
            buf[i] = unsafe { core::ptr::read_volatile(self.ptr.as_ptr().add(off + i)) };
        }
        for (i, chunk) in (head..).step_by(8).zip(buf[head..head + words * 8].chunks_exact_mut(8)) {
            // SAFETY: in bounds (checked above); `split` made `off + i` a multiple of 8 and the page is
            // page-aligned, so the word is aligned.
            let w = unsafe { core::ptr::read_volatile(self.ptr.as_ptr().add(off + i).cast::<u64>()) };
            chunk.copy_from_slice(&w.to_ne_bytes());
        }
    }

    /// Copies `data` into the page at `off` (volatile; aligned 8-byte words where the range allows, as in
    /// [`read`](Self::read)).
    pub fn write(&self, off: usize, data: &[u8]) {
        Self::check_range(off, data.len());
        let (head, words, tail) = Self::split(off, data.len());
        for i in (0..head).chain(tail..data.len()) {
            // SAFETY: `off + i` is inside the page (range checked above); a single-byte volatile write.
            unsafe { core::ptr::write_volatile(self.ptr.as_ptr().add(off + i), data[i]) };
        }
        for (i, chunk) in (head..).step_by(8).zip(data[head..head + words * 8].chunks_exact(8)) {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            let w = u64::from_ne_bytes(w);
            // SAFETY: in bounds (checked above); aligned as in `read`.
            unsafe { core::ptr::write_volatile(self.ptr.as_ptr().add(off + i).cast::<u64>(), w) };
        }
    }

    /// Splits the range of `len` bytes at `off` into `(head, words, tail)`: bytes `..head` before the first
    /// 8-byte boundary of the page, `words` aligned words from `head`, bytes `tail..` after them.
    fn split(off: usize, len: usize) -> (usize, usize, usize) {
        let head = ((8 - off % 8) % 8).min(len);
        let words = (len - head) / 8;
        (head, words, head + words * 8)
    }

    /// Sets `len` bytes at `off` to `byte`.
    pub fn fill(&self, off: usize, len: usize, byte: u8) {
        Self::check_range(off, len);
        for i in 0..len {
            // SAFETY: in bounds (checked above).
            unsafe { core::ptr::write_volatile(self.ptr.as_ptr().add(off + i), byte) };
        }
    }
}

#[cfg(target_os = "none")]
fn frame_of(ptr: NonNull<u8>) -> u64 {
    libos::mem::dma::virt_to_phys(ptr.as_ptr() as usize) / PAGE_SIZE as u64
}

#[cfg(not(target_os = "none"))]
fn frame_of(_ptr: NonNull<u8>) -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0x100);
    NEXT.fetch_add(1, core::sync::atomic::Ordering::Relaxed)
}

/// Full barrier (`xen_mb`): orders our earlier stores before our later loads (x86 `mfence`).
pub fn mb() {
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
}

/// Write barrier (`xen_wmb`): the other side sees our earlier stores before our later ones.
pub fn wmb() {
    core::sync::atomic::fence(core::sync::atomic::Ordering::Release);
}

/// Read barrier (`xen_rmb`): our later loads happen after our earlier ones.
pub fn rmb() {
    core::sync::atomic::fence(core::sync::atomic::Ordering::Acquire);
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::Ordering;

    #[test]
    fn fields_and_copies() {
        let p = SharedPage::new().expect("page");
        assert_eq!(p.paddr() % 4096, 0);
        assert!(p.frame() < 1 << 32);
        p.u32_at(8).store(0x1122_3344, Ordering::Relaxed);
        let mut b = [0u8; 4];
        p.read(8, &mut b);
        assert_eq!(b, [0x44, 0x33, 0x22, 0x11]);
        p.write(4094, &[7, 8]);
        assert_eq!(p.u16_at(4094).load(Ordering::Relaxed), 0x0807);
        p.fill(0, 16, 0xff);
        assert_eq!(p.u64_at(0).load(Ordering::Relaxed), u64::MAX);
        assert_eq!(p.u8_at(16).load(Ordering::Relaxed), 0);
    }

    #[test]
    fn copies_at_any_offset_and_length_round_trip() {
        let p = SharedPage::new().expect("page");
        for off in (0..24).chain(4070..4096) {
            for len in (0..=40).filter(|len| off + len <= PAGE_SIZE) {
                p.fill(0, PAGE_SIZE, 0xee);
                let data: Vec<u8> = (0..len).map(|i| (i * 7 + off) as u8).collect();
                p.write(off, &data);
                let mut back = vec![0u8; len];
                p.read(off, &mut back);
                assert_eq!(back, data, "{off}+{len}");
                // Exactly the range changed, byte for byte as the byte accessors see it.
                for at in off.saturating_sub(9)..(off + len + 9).min(PAGE_SIZE) {
                    let want = if (off..off + len).contains(&at) { data[at - off] } else { 0xee };
                    assert_eq!(p.u8_at(at).load(Ordering::Relaxed), want, "{off}+{len} byte {at}");
                }
            }
        }
        let whole: Vec<u8> = (0..PAGE_SIZE).map(|i| (i % 253) as u8).collect();
        p.write(0, &whole);
        let mut back = vec![0u8; PAGE_SIZE];
        p.read(0, &mut back);
        assert_eq!(back, whole);
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn out_of_range_range_panics() {
        let p = SharedPage::new().expect("page");
        p.write(4095, &[1, 2]);
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn misaligned_field_panics() {
        let p = SharedPage::new().expect("page");
        p.u32_at(2);
    }
}
