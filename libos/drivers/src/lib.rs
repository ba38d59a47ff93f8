//! Device drivers Zirvium finds on any platform, laid out by bus and class: [`virtio`] (the PCI and MMIO
//! transports, virtio-net, virtio-blk). NVMe (`nvme/`), virtio-scsi and virtio-balloon (`virtio/scsi.rs`,
//! `virtio/balloon.rs`) and the SCSI command set shared by SCSI hosts (`scsi/`) go here too; hypervisor-specific
//! devices (Xen's netfront and blkfront, Hyper-V's VMBus devices) stay in their platform crates.
//!
//! One place decides which drivers start: `zirvium`'s `boot.rs` lists the PCI drivers for `libos::pci`'s
//! driver table and starts the virtio-mmio devices the command line names, after the platform's own `init`.
//! Drivers are generic over virtio-drivers' `Hal` and `Transport` and host-tested against device models;
//! `unsafe` is denied but in the modules that touch hardware or lend memory to a device, each block with a
//! `SAFETY` comment.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

extern crate alloc;

pub mod virtio;
