//! Device drivers Zirvium finds on any platform, laid out by bus and class: [`virtio`] (the PCI and MMIO
//! transports, virtio-net, virtio-blk, virtio-scsi), [`nvme`] (NVMe over PCIe), the SCSI command set shared by
//! SCSI hosts ([`scsi`]: virtio-scsi here, storvsc in `platform-hyperv`), and what the disk drivers share: the
//! request engine that makes NVMe namespaces and SCSI logical units `BlockDevice`s ([`block`]), driver-owned DMA
//! memory ([`dma`]) and interrupt slots ([`irq`]). virtio-balloon (`virtio/balloon.rs`) goes here too;
//! hypervisor-specific devices (Xen's netfront and blkfront, Hyper-V's VMBus devices) stay in their platform
//! crates.
//!
//! One place decides which drivers start: `zirvium`'s `boot.rs` lists the PCI drivers for `libos::pci`'s
//! driver table and starts the virtio-mmio devices the command line names, after the platform's own `init`.
//! Drivers are generic over their hardware seam (virtio-drivers' `Hal` and `Transport`, NVMe's register
//! window) and host-tested against device models; `unsafe` is denied but in the modules that touch hardware or
//! lend memory to a device, each block with a `SAFETY` comment.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

extern crate alloc;

pub mod block;
// Driver-owned DMA memory: the only place a device address becomes Rust memory.
#[allow(unsafe_code)]
pub mod dma;
// The interrupt handler reads a virtio-pci ISR status byte.
#[allow(unsafe_code)]
pub mod irq;
pub mod nvme;
pub mod scsi;
pub mod virtio;
