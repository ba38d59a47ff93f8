//! Virtio transports: virtio-mmio devices named on the command line ([`mmio_arg`], and `mmio` on the bare
//! target) and virtio-pci functions from `libos::pci`'s scan ([`pci`]). Both end in `virtio::start`, which
//! starts the device's driver.

// `MmioTransport::new` over the register window the command line names.
#[cfg(target_os = "none")]
#[allow(unsafe_code)]
pub mod mmio;
pub mod mmio_arg;
pub mod pci;
