//! Virtio devices on any platform: virtio-mmio windows named on the command line (microvm, Firecracker) and
//! virtio-pci functions handed over by `libos::pci`'s scan, driven through `virtio-drivers` transports and
//! virtqueues with our own virtio-net, virtio-blk, virtio-scsi and virtio-balloon drivers on top. Source: virtio
//! 1.2 §4.1 (virtio over PCI), §4.2 (virtio over MMIO), §5.1 (network device), §5.2 (block device), §5.5
//! (traditional memory balloon device), §5.6 (SCSI host).
//!
//! Pure parts (the `virtio_mmio.device=` argument, capability parsing, buffer bookkeeping, the drivers
//! themselves) build and are unit-tested on the host; the hardware edge (HAL, register access, device start)
//! only for the bare target.

// virtqueue `add`/`pop_used`: the driver lends its page frame number and stats buffers to the device.
#[allow(unsafe_code)]
pub mod balloon;
// virtqueue `add`/`pop_used`: the driver lends its request buffers to the device.
#[allow(unsafe_code)]
pub mod blk;
// The `virtio_drivers::Hal` implementation over libos memory.
#[cfg(target_os = "none")]
#[allow(unsafe_code)]
mod hal;
pub mod init;
// virtqueue `add`/`pop_used`: the driver lends its frame buffers to the device.
#[allow(unsafe_code)]
pub mod net;
pub mod pool;
// virtqueue `add`/`pop_used`: the driver lends its request and event buffers to the device.
#[allow(unsafe_code)]
pub mod scsi;
// The test HAL and the device model's ring accesses (host tests, and the fuzz targets through feature `testing`).
#[cfg(any(test, feature = "testing"))]
#[allow(unsafe_code)]
pub mod testing;
pub mod transport;

#[cfg(target_os = "none")]
pub use transport::mmio;
pub use transport::pci;

use core::sync::atomic::{AtomicUsize, Ordering};

/// The usual short name of a virtio device type ("virtio-net", "virtio-blk", ...), for logs.
pub fn virtio_name(t: virtio_drivers::transport::DeviceType) -> alloc::string::String {
    use virtio_drivers::transport::DeviceType;
    match t {
        DeviceType::Network => "virtio-net".into(),
        DeviceType::Block => "virtio-blk".into(),
        DeviceType::Console => "virtio-console".into(),
        DeviceType::EntropySource => "virtio-rng".into(),
        DeviceType::MemoryBalloon | DeviceType::MemoryBallooning => "virtio-balloon".into(),
        DeviceType::Socket => "virtio-vsock".into(),
        DeviceType::ScsiHost => "virtio-scsi".into(),
        other => alloc::format!("virtio-{other:?}").to_lowercase(),
    }
}

/// Whether this crate has a driver for virtio devices of type `t` (virtio-net, virtio-blk, virtio-scsi,
/// virtio-balloon).
pub fn has_driver(t: virtio_drivers::transport::DeviceType) -> bool {
    use virtio_drivers::transport::DeviceType;
    (cfg!(feature = "net") && matches!(t, DeviceType::Network))
        || (cfg!(feature = "block") && matches!(t, DeviceType::Block | DeviceType::ScsiHost))
        || matches!(t, DeviceType::MemoryBalloon)
}

/// Names of the feature bits in `bits` that `table` knows, comma-separated from bit 0 up; unknown bits as
/// `bitN` (e.g. "SEG_MAX,BLK_SIZE,FLUSH,VERSION_1,bit40"). `table` pairs each bit mask with its name from the
/// device's feature-bit section (virtio 1.2 §5.1.3, §5.2.3) or the reserved bits (§6).
pub fn feature_list(bits: u64, table: &[(u64, &str)]) -> alloc::string::String {
    let name = |i: u32| match table.iter().find(|(b, _)| *b == 1 << i) {
        Some((_, n)) => alloc::string::String::from(*n),
        None => alloc::format!("bit{i}"),
    };
    (0..64).filter(|i| bits & (1 << i) != 0).map(name).collect::<alloc::vec::Vec<_>>().join(",")
}

/// Disks the virtio-blk driver has registered.
static DISKS: AtomicUsize = AtomicUsize::new(0);

/// The boot log's feature string for the virtio-blk disks started, e.g. `"virtio-blk (1 disk)"`; `None`
/// before the first.
pub fn disk_summary() -> Option<alloc::string::String> {
    let n = DISKS.load(Ordering::Relaxed);
    (n > 0).then(|| alloc::format!("virtio-blk ({n} disk{})", if n == 1 { "" } else { "s" }))
}

#[cfg(target_os = "none")]
pub(crate) use start::start;

#[cfg(target_os = "none")]
// Without `net` and `block` no device type has a driver: `start` only names the device it refuses.
#[cfg_attr(not(any(feature = "net", feature = "block")), allow(unused, unreachable_code))]
mod start {
    use super::balloon::VirtioBalloon;
    use super::hal::VirtioHal;
    use super::net::IrqAck;
    use super::virtio_name;
    use crate::irq::IrqSlot;
    use alloc::format;
    use alloc::string::String;
    use virtio_drivers::transport::{DeviceType, Transport};

    /// Descriptors per virtqueue of every device started at boot.
    const QUEUE_SIZE: usize = 256;

    /// Starts the virtio-net, virtio-blk, virtio-scsi or virtio-balloon driver on `transport` (by its device type)
    /// as `name` (the balloon's task spawned over the kernel heap's balloon),
    /// interrupting through `slot`; `setup_irq` runs between queue setup and `DRIVER_OK` and returns how the
    /// interrupt is delivered (e.g. "MSI-X entry 0 -> vector 0x30"). Logs the device's one line — its
    /// description, then `transport {how} irq {...}` — and registers it with `libos::dev`.
    /// Errors: another device type, or the driver's start-up error, as text naming the device.
    pub(crate) fn start<T: Transport + Send + 'static>(
        transport: T,
        name: String,
        how: &str,
        slot: &'static IrqSlot,
        ack: IrqAck,
        setup_irq: &mut dyn FnMut() -> Result<String, String>,
    ) -> Result<(), String> {
        let mut irq = String::new();
        let mut setup = || setup_irq().map(|how| irq = how);
        match transport.device_type() {
            #[cfg(feature = "block")]
            DeviceType::Block => {
                let dev =
                    super::blk::VirtioBlk::<VirtioHal, T, QUEUE_SIZE>::new(transport, name, slot, ack, &mut setup)
                        .map_err(|e| format!("{e}"))?;
                log::info!("{} transport {how} irq {irq}", dev.describe());
                libos::dev::register_block(dev);
                super::DISKS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            }
            #[cfg(feature = "block")]
            DeviceType::ScsiHost => {
                let dev = super::scsi::VirtioScsi::<VirtioHal, T, QUEUE_SIZE>::new(
                    transport,
                    name,
                    slot,
                    ack,
                    libos::time::uptime_ns,
                    &mut setup,
                )
                .map_err(|e| format!("{e}"))?;
                super::scsi::register(&dev, how, &irq);
            }
            #[cfg(feature = "net")]
            DeviceType::Network => {
                let dev =
                    super::net::VirtioNet::<VirtioHal, T, QUEUE_SIZE>::new(transport, name, slot, ack, &mut setup)
                        .map_err(|e| format!("{e}"))?;
                log::info!("{} transport {how} irq {irq}", dev.describe());
                libos::dev::register_net(alloc::boxed::Box::new(dev));
            }
            DeviceType::MemoryBalloon => {
                use libos::mem::balloon::global::KernelBalloon;
                let dev = VirtioBalloon::<VirtioHal, T>::new(transport, name, slot, ack, &KernelBalloon, &mut setup)
                    .map_err(|e| format!("{e}"))?;
                log::info!("{} transport {how} irq {irq}", dev.describe());
                libos::task::spawn(async move {
                    let e = dev.run(KernelBalloon).await;
                    log::warn!("{e}; ballooning stopped");
                });
            }
            other => return Err(format!("{name}: no driver for {}", virtio_name(other))),
        }
        Ok(())
    }
}
