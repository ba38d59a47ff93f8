//! Shared memory between the guest and the Hyper-V host: page-aligned regions the guest allocates and hands to
//! the host by guest-physical address (SynIC message and event-flag pages, the reference TSC page, VMBus ring
//! buffers, GPADL data buffers). Source: Hyper-V TLFS §11 (SynIC overlay pages), `include/linux/hyperv.h`
//! (`struct hv_ring_buffer`, GPADLs).
//!
//! All protocol code touches shared memory only through [`Region`], which checks every offset and alignment, so a
//! value the host controls can at worst produce an [`MemError`], never an access outside the region. Two backends
//! implement [`SharedPages`]: the identity-mapped DMA heap on the bare target (`crate::hw`) and `host::HostMemory`
//! on the host, where a test peer plays the Hyper-V host against the same guest code.

use alloc::sync::Arc;
use core::fmt;

/// Size of a Hyper-V page (bytes); Hyper-V always uses 4 KiB pages (TLFS §2, `HV_HYP_PAGE_SIZE`).
pub const PAGE_SIZE: usize = 4096;

/// Why a shared-memory access or allocation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemError {
    /// `len` bytes at `offset` do not fit a region of `size` bytes.
    OutOfBounds {
        /// Offset of the access into the region (bytes).
        offset: usize,
        /// Length of the access (bytes).
        len: usize,
        /// Size of the region (bytes).
        size: usize,
    },
    /// An atomic access of `width` bytes at `offset` is not naturally aligned.
    Misaligned {
        /// Offset of the access into the region (bytes).
        offset: usize,
        /// Width of the access (bytes).
        width: usize,
    },
    /// No memory for `pages` more pages.
    NoMemory {
        /// 4 KiB pages asked for.
        pages: usize,
    },
}

impl fmt::Display for MemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfBounds { offset, len, size } => {
                write!(f, "{len} bytes at offset {offset:#x} exceed the {size:#x}-byte shared region")
            }
            Self::Misaligned { offset, width } => {
                write!(f, "{width}-byte atomic access at offset {offset:#x} is misaligned")
            }
            Self::NoMemory { pages } => write!(f, "cannot allocate {pages} pages of shared memory"),
        }
    }
}

/// Physically contiguous, page-aligned, zeroed pages shared with the host. Implementations check nothing: every
/// caller goes through [`Region`], which checks bounds and alignment before calling.
pub trait SharedPages: Send + Sync {
    /// Guest-physical address of the first byte (page aligned).
    fn gpa(&self) -> u64;
    /// Length (bytes, a multiple of [`PAGE_SIZE`]).
    fn len(&self) -> usize;
    /// Whether the pages hold no bytes (never, for real allocations).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copies `buf.len()` bytes at `offset` into `buf` (in bounds, checked by the caller).
    fn read(&self, offset: usize, buf: &mut [u8]);
    /// Copies `data` to `offset` (in bounds, checked by the caller).
    fn write(&self, offset: usize, data: &[u8]);
    /// Atomic 32-bit load with acquire ordering at a 4-aligned offset.
    fn load_u32(&self, offset: usize) -> u32;
    /// Atomic 32-bit store with release ordering at a 4-aligned offset.
    fn store_u32(&self, offset: usize, value: u32);
    /// Atomic 64-bit load with acquire ordering at an 8-aligned offset.
    fn load_u64(&self, offset: usize) -> u64;
    /// Atomic 64-bit swap (acquire-release) at an 8-aligned offset; returns the old value.
    fn swap_u64(&self, offset: usize, value: u64) -> u64;
    /// Atomic 64-bit OR (acquire-release) at an 8-aligned offset; returns the old value.
    fn fetch_or_u64(&self, offset: usize, value: u64) -> u64;
}

/// Allocates shared pages: the guest's DMA allocator.
pub trait Dma: Send + Sync {
    /// Allocates `pages` zeroed, physically contiguous pages. Errors: [`MemError::NoMemory`].
    fn alloc(&self, pages: usize) -> Result<Region, MemError>;
}

/// A full memory barrier (`virt_mb()` in Linux): orders the guest's stores before its following loads, as the
/// VMBus ring protocol needs between publishing an index and reading the other side's mask or index.
pub fn full_barrier() {
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
}

/// A checked window onto shared pages: every access is bounds- and alignment-checked.
#[derive(Clone)]
pub struct Region {
    pages: Arc<dyn SharedPages>,
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Region {{ gpa: {:#x}, len: {:#x} }}", self.gpa(), self.len())
    }
}

impl Region {
    /// Wraps pages from a backend.
    pub fn new(pages: Arc<dyn SharedPages>) -> Self {
        Self { pages }
    }

    /// Guest-physical address of the first byte.
    pub fn gpa(&self) -> u64 {
        self.pages.gpa()
    }

    /// Length (bytes).
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    /// Never true: regions hold at least one page.
    pub fn is_empty(&self) -> bool {
        self.pages.len() == 0
    }

    /// Number of 4 KiB pages.
    pub fn page_count(&self) -> usize {
        self.len() / PAGE_SIZE
    }

    /// Guest page frame number of page `i` (the unit of GPADL PFN lists).
    pub fn pfn(&self, i: usize) -> u64 {
        (self.gpa() >> 12) + i as u64
    }

    fn check(&self, offset: usize, len: usize) -> Result<(), MemError> {
        let size = self.len();
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(()),
            _ => Err(MemError::OutOfBounds { offset, len, size }),
        }
    }

    fn check_atomic(&self, offset: usize, width: usize) -> Result<(), MemError> {
        self.check(offset, width)?;
        if !offset.is_multiple_of(width) {
            return Err(MemError::Misaligned { offset, width });
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at `offset`. Errors: [`MemError::OutOfBounds`].
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), MemError> {
        self.check(offset, buf.len())?;
        self.pages.read(offset, buf);
        Ok(())
    }

    /// Writes `data` at `offset`. Errors: [`MemError::OutOfBounds`].
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<(), MemError> {
        self.check(offset, data.len())?;
        self.pages.write(offset, data);
        Ok(())
    }

    /// Fills `len` bytes at `offset` with zeros. Errors: [`MemError::OutOfBounds`].
    pub fn zero(&self, offset: usize, len: usize) -> Result<(), MemError> {
        self.check(offset, len)?;
        let zeros = [0u8; 256];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(zeros.len());
            self.pages.write(offset + done, &zeros[..n]);
            done += n;
        }
        Ok(())
    }

    /// Atomic acquire load of the little-endian u32 at `offset`. Errors: out of bounds or misaligned.
    pub fn load_u32(&self, offset: usize) -> Result<u32, MemError> {
        self.check_atomic(offset, 4)?;
        Ok(self.pages.load_u32(offset))
    }

    /// Atomic release store of a u32 at `offset`. Errors: out of bounds or misaligned.
    pub fn store_u32(&self, offset: usize, value: u32) -> Result<(), MemError> {
        self.check_atomic(offset, 4)?;
        self.pages.store_u32(offset, value);
        Ok(())
    }

    /// Atomic acquire load of the u64 at `offset`. Errors: out of bounds or misaligned.
    pub fn load_u64(&self, offset: usize) -> Result<u64, MemError> {
        self.check_atomic(offset, 8)?;
        Ok(self.pages.load_u64(offset))
    }

    /// Atomic swap of the u64 at `offset`, returning the old value. Errors: out of bounds or misaligned.
    pub fn swap_u64(&self, offset: usize, value: u64) -> Result<u64, MemError> {
        self.check_atomic(offset, 8)?;
        Ok(self.pages.swap_u64(offset, value))
    }

    /// Atomic OR into the u64 at `offset`, returning the old value. Errors: out of bounds or misaligned.
    pub fn fetch_or_u64(&self, offset: usize, value: u64) -> Result<u64, MemError> {
        self.check_atomic(offset, 8)?;
        Ok(self.pages.fetch_or_u64(offset, value))
    }

    /// Reads the little-endian u16 at `offset` (plain copy, not atomic).
    pub fn read_u16(&self, offset: usize) -> Result<u16, MemError> {
        let mut b = [0u8; 2];
        self.read(offset, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    /// Reads the little-endian u32 at `offset` (plain copy, not atomic).
    pub fn read_u32(&self, offset: usize) -> Result<u32, MemError> {
        let mut b = [0u8; 4];
        self.read(offset, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Reads the little-endian u64 at `offset` (plain copy, not atomic).
    pub fn read_u64(&self, offset: usize) -> Result<u64, MemError> {
        let mut b = [0u8; 8];
        self.read(offset, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes a little-endian u32 at `offset` (plain copy).
    pub fn write_u32(&self, offset: usize, value: u32) -> Result<(), MemError> {
        self.write(offset, &value.to_le_bytes())
    }

    /// Writes a little-endian u64 at `offset` (plain copy).
    pub fn write_u64(&self, offset: usize, value: u64) -> Result<(), MemError> {
        self.write(offset, &value.to_le_bytes())
    }
}

/// Host-side shared memory: a simulated guest-physical address space of atomic words, so a test peer on another
/// thread can play the Hyper-V host over exactly the bytes the guest code reads and writes. A test-only host
/// model: built for unit tests and with the `host-model` feature (which `hyperv-peer` enables).
#[cfg(any(test, feature = "host-model"))]
pub mod host {
    use super::{Dma, MemError, Region, SharedPages, PAGE_SIZE};
    use alloc::sync::Arc;
    use alloc::vec::Vec;
    use core::sync::atomic::{AtomicU64, Ordering};
    use spin::Mutex;

    /// First guest-physical address handed out (bytes); low memory stays unused so a zero GPA is always invalid.
    pub const FIRST_GPA: u64 = 0x100_0000;

    /// Pages of simulated guest memory: 64-bit atomic words; byte accesses read or mask whole words.
    pub struct HostPages {
        gpa: u64,
        words: Vec<AtomicU64>,
    }

    impl HostPages {
        fn byte_range_op(&self, offset: usize, len: usize, mut f: impl FnMut(usize, usize, usize)) {
            // f(word index, first byte in word, byte count) for each word touched.
            let mut pos = offset;
            let end = offset + len;
            while pos < end {
                let w = pos / 8;
                let first = pos % 8;
                let n = (8 - first).min(end - pos);
                f(w, first, n);
                pos += n;
            }
        }
    }

    impl SharedPages for HostPages {
        fn gpa(&self) -> u64 {
            self.gpa
        }
        fn len(&self) -> usize {
            self.words.len() * 8
        }
        fn read(&self, offset: usize, buf: &mut [u8]) {
            let mut out = 0;
            self.byte_range_op(offset, buf.len(), |w, first, n| {
                let bytes = self.words[w].load(Ordering::Acquire).to_le_bytes();
                buf[out..out + n].copy_from_slice(&bytes[first..first + n]);
                out += n;
            });
        }
        fn write(&self, offset: usize, data: &[u8]) {
            let mut inp = 0;
            self.byte_range_op(offset, data.len(), |w, first, n| {
                if n == 8 {
                    let v = u64::from_le_bytes(data[inp..inp + 8].try_into().unwrap_or([0; 8]));
                    self.words[w].store(v, Ordering::Release);
                } else {
                    let mut mask = [0u8; 8];
                    let mut bits = [0u8; 8];
                    mask[first..first + n].fill(0xff);
                    bits[first..first + n].copy_from_slice(&data[inp..inp + n]);
                    let mask = u64::from_le_bytes(mask);
                    let bits = u64::from_le_bytes(bits);
                    // Only this writer's bytes change; a concurrent writer of other bytes keeps its own.
                    let _ = self.words[w]
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| Some((old & !mask) | bits));
                }
                inp += n;
            });
        }
        fn load_u32(&self, offset: usize) -> u32 {
            let v = self.words[offset / 8].load(Ordering::Acquire);
            (v >> ((offset % 8) * 8)) as u32
        }
        fn store_u32(&self, offset: usize, value: u32) {
            self.write(offset, &value.to_le_bytes());
        }
        fn load_u64(&self, offset: usize) -> u64 {
            self.words[offset / 8].load(Ordering::Acquire)
        }
        fn swap_u64(&self, offset: usize, value: u64) -> u64 {
            self.words[offset / 8].swap(value, Ordering::AcqRel)
        }
        fn fetch_or_u64(&self, offset: usize, value: u64) -> u64 {
            self.words[offset / 8].fetch_or(value, Ordering::AcqRel)
        }
    }

    /// A simulated guest-physical address space: a bump allocator of [`HostPages`] that the host side can look up
    /// by guest-physical address, as the hypervisor and VMBus host do with the GPAs the guest gives them.
    #[derive(Default)]
    pub struct HostMemory {
        inner: Mutex<(u64, Vec<Arc<HostPages>>)>,
    }

    impl HostMemory {
        /// An empty address space.
        pub fn new() -> Arc<Self> {
            Arc::new(Self { inner: Mutex::new((FIRST_GPA, Vec::new())) })
        }

        /// The allocation containing `gpa`, as a region starting at that allocation's first page, and the offset of
        /// `gpa` in it. `None` when no allocation contains `gpa`.
        pub fn lookup(&self, gpa: u64) -> Option<(Region, usize)> {
            let g = self.inner.lock();
            g.1.iter().find(|p| gpa >= p.gpa && gpa < p.gpa + p.len() as u64).map(|p| {
                let off = (gpa - p.gpa) as usize;
                (Region::new(p.clone()), off)
            })
        }

        /// Reads `buf.len()` bytes at guest-physical `gpa`. Errors: [`MemError::OutOfBounds`] when the range is not
        /// inside one allocation.
        pub fn read_gpa(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
            let (r, off) =
                self.lookup(gpa).ok_or(MemError::OutOfBounds { offset: gpa as usize, len: buf.len(), size: 0 })?;
            r.read(off, buf)
        }

        /// Writes `data` at guest-physical `gpa`. Errors: as [`HostMemory::read_gpa`].
        pub fn write_gpa(&self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
            let (r, off) =
                self.lookup(gpa).ok_or(MemError::OutOfBounds { offset: gpa as usize, len: data.len(), size: 0 })?;
            r.write(off, data)
        }

        /// Pages allocated so far.
        pub fn allocated_pages(&self) -> usize {
            self.inner.lock().1.iter().map(|p| p.len() / PAGE_SIZE).sum()
        }
    }

    impl Dma for HostMemory {
        fn alloc(&self, pages: usize) -> Result<Region, MemError> {
            if pages == 0 || pages > 1 << 20 {
                return Err(MemError::NoMemory { pages });
            }
            let mut g = self.inner.lock();
            let gpa = g.0;
            // A one-page hole after every allocation: an overrun would not land in a neighbour.
            g.0 += ((pages + 1) * PAGE_SIZE) as u64;
            let words = (0..pages * PAGE_SIZE / 8).map(|_| AtomicU64::new(0)).collect();
            let p = Arc::new(HostPages { gpa, words });
            g.1.push(p.clone());
            Ok(Region::new(p))
        }
    }

    impl Dma for Arc<HostMemory> {
        fn alloc(&self, pages: usize) -> Result<Region, MemError> {
            (**self).alloc(pages)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::host::HostMemory;
    use super::*;

    #[test]
    fn region_checks_bounds_and_alignment() {
        let mem = HostMemory::new();
        let r = mem.alloc(1).unwrap();
        assert_eq!(r.len(), PAGE_SIZE);
        r.write(4090, &[1, 2, 3, 4, 5, 6]).unwrap();
        let mut b = [0u8; 6];
        r.read(4090, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4, 5, 6]);
        assert_eq!(r.write(4095, &[1, 2]), Err(MemError::OutOfBounds { offset: 4095, len: 2, size: 4096 }));
        assert_eq!(r.read(usize::MAX, &mut b), Err(MemError::OutOfBounds { offset: usize::MAX, len: 6, size: 4096 }));
        assert_eq!(r.load_u32(2), Err(MemError::Misaligned { offset: 2, width: 4 }));
        r.store_u32(8, 0xdead_beef).unwrap();
        assert_eq!(r.load_u32(8).unwrap(), 0xdead_beef);
        assert_eq!(r.read_u32(8).unwrap(), 0xdead_beef);
        assert_eq!(r.fetch_or_u64(16, 0b101).unwrap(), 0);
        assert_eq!(r.swap_u64(16, 0).unwrap(), 0b101);
        assert!(r.zero(0, 4096).is_ok());
        assert_eq!(r.load_u32(8).unwrap(), 0);
    }

    #[test]
    fn host_side_sees_guest_bytes_by_gpa() {
        let mem = HostMemory::new();
        let a = mem.alloc(2).unwrap();
        let b = mem.alloc(1).unwrap();
        assert_ne!(a.gpa(), b.gpa());
        a.write(4096 + 3, b"hello").unwrap();
        let mut out = [0u8; 5];
        mem.read_gpa(a.gpa() + 4096 + 3, &mut out).unwrap();
        assert_eq!(&out, b"hello");
        assert!(mem.read_gpa(a.gpa() + 8190, &mut out).is_err(), "must not run into the next allocation");
        assert!(mem.read_gpa(0, &mut out).is_err());
        assert_eq!(a.pfn(1), (a.gpa() >> 12) + 1);
    }
}
