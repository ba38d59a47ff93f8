//! Virtio devices on KVM/QEMU: virtio-mmio windows from the command line (microvm, Firecracker) and
//! virtio-pci functions found by PCI enumeration (pc, q35), driven through `virtio-drivers` transports and
//! virtqueues with our own virtio-net and virtio-blk drivers on top. Source: virtio 1.2 §4.1 (virtio over
//! PCI), §4.2 (virtio over MMIO), §5.1 (network device), §5.2 (block device).
//!
//! Pure parts (argument, ACPI, capability and BAR parsing, buffer bookkeeping, the drivers themselves) build
//! and are unit-tested on the host; the hardware edge (HAL, configuration space, interrupts) only for the
//! bare target.

pub mod acpi;
pub mod bars;
pub mod blk;
pub mod caps;
pub mod csum;
pub mod irq;
pub mod mmio_arg;
pub mod net;
pub mod pool;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(target_os = "none")]
mod hal;
#[cfg(target_os = "none")]
mod mmio;
#[cfg(target_os = "none")]
mod pci;

#[cfg(target_os = "none")]
pub use init::init;

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
        other => alloc::format!("virtio-{other:?}").to_lowercase(),
    }
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

/// Logs the one line per NIC: what [`net::VirtioNet::describe`] says, plus transport and interrupt mode.
#[cfg(target_os = "none")]
fn log_nic<H: virtio_drivers::Hal, T: virtio_drivers::transport::Transport, const QS: usize>(
    dev: &net::VirtioNet<H, T, QS>,
    transport: &str,
    irq: &str,
) {
    log::info!("{} transport {transport} irq {irq}", dev.describe());
}

#[cfg(target_os = "none")]
mod init {
    use alloc::string::String;
    use alloc::vec::Vec;
    use libos::bootinfo::BootInfo;
    use libos::cmdline::Cmdline;
    use libos::platform::PlatformError;

    /// Brings up every virtio device: the virtio-mmio windows named on the command line, then virtio-pci
    /// functions on the PCI bus (if there is one). NICs are registered with `libos::dev::register_net`, disks
    /// with `libos::dev::register_block`. Returns feature strings for the boot log (e.g. "virtio-mmio",
    /// "virtio-pci (MSI-X)", "virtio-blk (1 disk)").
    /// Errors: a malformed `virtio_mmio.device=` token. A device that fails to start is logged and
    /// skipped, so one broken device does not stop the boot.
    pub fn init(boot: &BootInfo, cmdline: &Cmdline) -> Result<Vec<String>, PlatformError> {
        let mut features = Vec::new();
        let disks_before = libos::dev::block_devices().len();
        features.extend(super::mmio::init(cmdline)?);
        features.extend(super::pci::init(boot, cmdline.virtio_mmio.is_empty()));
        let disks = libos::dev::block_devices().len() - disks_before;
        if disks > 0 {
            features.push(alloc::format!("virtio-blk ({disks} disk{})", if disks == 1 { "" } else { "s" }));
        }
        Ok(features)
    }
}
