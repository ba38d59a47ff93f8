//! virtio-mmio devices named by `virtio_mmio.device=` on the command line (QEMU microvm with `acpi=off`,
//! Firecracker): transport through virtio-drivers' `MmioTransport` (legacy v1 and modern v2 register
//! layouts), interrupt line routed edge-triggered through the I/O APIC. Source: virtio 1.2 §4.2.2 (MMIO
//! register layout), §4.2.4 (legacy interface).

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::ptr::NonNull;
use libos::arch::x86_64::{idt, ioapic};
use libos::cmdline::Cmdline;
use libos::platform::PlatformError;
use virtio_drivers::transport::mmio::{MmioTransport, MmioVersion, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, Transport};

use super::blk::VirtioBlk;
use super::hal::VirtioHal;
use super::irq;
use super::mmio_arg::{self, MmioSlot};
use super::net::{IrqAck, VirtioNet};

/// Starts every device on the command line. Returns `["virtio-mmio"]` when at least one NIC or disk started.
/// Errors: a malformed token (boot error: the command line is wrong). Devices that fail are logged.
pub fn init(cmdline: &Cmdline) -> Result<Vec<String>, PlatformError> {
    let slots = cmdline
        .virtio_mmio
        .iter()
        .map(|t| mmio_arg::parse(t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PlatformError { platform: "kvm", detail: format!("{e}") })?;
    let mut started = 0;
    for slot in slots {
        match start(slot) {
            Ok(true) => started += 1,
            Ok(false) => {}
            Err(e) => log::error!("virtio-mmio@{:#x}: {e}", slot.base),
        }
    }
    Ok(if started > 0 { alloc::vec![String::from("virtio-mmio")] } else { Vec::new() })
}

/// Starts the device in `slot` (virtio-net or virtio-blk); `Ok(false)` for an empty slot or a device type
/// without a driver.
fn start(slot: MmioSlot) -> Result<bool, String> {
    // microvm's windows sit in the 32-bit MMIO hole, identity mapped uncached by libos; others are mapped.
    libos::mem::paging::map_mmio(slot.base & !0xfff, (slot.base & 0xfff) + slot.size).map_err(|e| format!("{e}"))?;
    let header = NonNull::new(slot.base as usize as *mut VirtIOHeader).ok_or("window at address 0")?;
    let size = usize::try_from(slot.size).map_err(|_| "window too large")?;
    // SAFETY: the command line names this window as a virtio-mmio register block of `size` bytes; it is
    // mapped uncached above and nothing else in the kernel touches it.
    let transport = match unsafe { MmioTransport::new(header, size) } {
        Ok(t) => t,
        // Device ID 0 is a placeholder slot with no device behind it (§4.2.2).
        Err(virtio_drivers::transport::mmio::MmioError::InvalidDeviceID(_)) => return Ok(false),
        Err(e) => return Err(format!("{e}")),
    };
    let version = match transport.version() {
        MmioVersion::Legacy => "v1 legacy",
        MmioVersion::Modern => "v2",
    };
    let kind = transport.device_type();
    if !matches!(kind, DeviceType::Network | DeviceType::Block) {
        let what = super::virtio_name(kind);
        log::info!("virtio-mmio@{:#x}: {what} ({version}), no driver: skipped", slot.base);
        return Ok(false);
    }
    let name = format!("{}@mmio:{:#x}", super::virtio_name(kind), slot.base);
    let slot_irq = irq::claim().ok_or("no free interrupt slot")?;
    let vector = idt::allocate_vector(irq::handler).map_err(|e| format!("{e}"))?;
    slot_irq.bind(vector, 0);
    let mut route = || ioapic::route(slot.gsi, vector, ioapic::Trigger::Edge).map_err(|e| format!("{e}"));
    let irq_mode = format!("gsi {} edge -> vector {vector:#x}", slot.gsi);
    if kind == DeviceType::Block {
        let dev = VirtioBlk::<VirtioHal, _, 256>::new(transport, name, slot_irq, IrqAck::Task, &mut route)
            .map_err(|e| format!("{e}"))?;
        log::info!("{} transport {version} irq {irq_mode}", dev.describe());
        libos::dev::register_block(dev);
        return Ok(true);
    }
    let dev = VirtioNet::<VirtioHal, _, 256>::new(transport, name, slot_irq, IrqAck::Task, &mut route)
        .map_err(|e| format!("{e}"))?;
    super::log_nic(&dev, version, &irq_mode);
    libos::dev::register_net(Box::new(dev));
    Ok(true)
}
