//! PCI for every platform: configuration space (port I/O or ECAM from ACPI MCFG), enumeration of bus 0 and
//! the buses behind firmware-numbered bridges, BAR decoding, sizing and placement, the capability list, MSI and
//! MSI-X programming with libos vectors, INTx through the I/O APIC, and the driver table that hands each
//! function to the first driver claiming it (`scan` at boot). Drivers (virtio-pci and NVMe today; vmxnet3,
//! PVSCSI next) live in the `drivers` crate and are listed in `zirvium`'s `boot.rs`.
//!
//! Everything but the hardware edge (`hw.rs`: port I/O, ECAM and BAR stores; the scan and the probe handle's
//! hardware operations) works over the [`ConfigAccess`] trait and is host-tested against a configuration space
//! model. Source: PCI Local Bus Specification 3.0 (§3.2.2.3.2 configuration mechanism #1, §6.1–6.2 header and
//! BARs, §6.7 capabilities, §6.8 MSI/MSI-X); PCI Express Base 4.0 §7.2.2 (ECAM); PCI-to-PCI Bridge
//! Architecture 1.2 §3.2.5.3 (bus numbers).

pub mod bar;
pub mod caps;
pub mod config;
mod device;
pub mod driver;
mod enumerate;
#[cfg(target_os = "none")]
mod hw;
mod id;
pub mod intx;
pub mod msi;
pub mod msix;
#[cfg(target_os = "none")]
mod scan;
pub mod window;

pub use bar::Bar;
pub use config::{ConfigAccess, ConfigSpace};
pub use device::{Device, MemoryBar, PciError};
pub use driver::{Bound, Driver, Interrupts, Match, Report};
pub use enumerate::{enumerate, Function};
pub use id::{Bdf, ClassCode, DeviceId, HeaderType, VendorId};
#[cfg(target_os = "none")]
pub use scan::scan;
