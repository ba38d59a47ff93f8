//! `virtio_drivers::Hal` over libos memory: DMA regions are libos [`DmaRegion`]s (zeroed, page aligned,
//! identity mapped so guest-physical = virtual), shared buffers need no bounce (no IOMMU, no
//! `VIRTIO_F_ACCESS_PLATFORM`), MMIO is identity mapped. Source: virtio-drivers 0.13 `Hal` contract.

use alloc::vec::Vec;
use core::ptr::NonNull;
use libos::mem::dma::{virt_to_phys, DmaRegion};
use spin::Mutex;
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

/// The HAL type parameter of every virtio-drivers object in this crate.
pub struct VirtioHal;

/// Regions handed to virtio-drivers, kept here so `dma_dealloc` frees them through their owner.
static REGIONS: Mutex<Vec<DmaRegion>> = Mutex::new(Vec::new());

// SAFETY: `dma_alloc` returns zeroed, page-aligned memory owned by REGIONS until `dma_dealloc` (no alias);
// `mmio_phys_to_virt` returns the identity mapping libos set up for the 32-bit hole and that the virtio-pci
// probe adds (`libos::pci::Device::memory_bar`) for every virtio structure's BAR before the transport is
// built; `share` returns the identity physical address of memory the caller keeps alive.
unsafe impl Hal for VirtioHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        match DmaRegion::new(pages) {
            Ok(r) => {
                let out = (r.paddr(), r.as_ptr());
                REGIONS.lock().push(r);
                out
            }
            Err(e) => {
                log::error!("virtio: {e}");
                // virtio-drivers treats physical address 0 as allocation failure.
                (0, NonNull::dangling())
            }
        }
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, _vaddr: NonNull<u8>, _pages: usize) -> i32 {
        let mut regions = REGIONS.lock();
        match regions.iter().position(|r| r.paddr() == paddr) {
            Some(i) => {
                drop(regions.swap_remove(i));
                0
            }
            None => -1,
        }
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        // Identity mapped (see the SAFETY comment on the impl). Physical address 0 is never an MMIO BAR
        // that virtio-drivers maps (it rejects unassigned BARs), so the pointer is non-null.
        NonNull::new(paddr as usize as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        virt_to_phys(buffer.as_ptr() as *mut u8 as usize)
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}
