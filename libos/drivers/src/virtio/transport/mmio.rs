//! virtio-mmio devices named by `virtio_mmio.device=` on the command line (QEMU microvm with `acpi=off`,
//! Firecracker): transport through virtio-drivers' `MmioTransport` (legacy v1 and modern v2 register
//! layouts), interrupt line routed edge-triggered through the I/O APIC. Source: virtio 1.2 §4.2.2 (MMIO
//! register layout), §4.2.4 (legacy interface).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::ptr::NonNull;
use libos::arch::x86_64::{idt, ioapic};
use libos::cmdline::Cmdline;
use virtio_drivers::transport::mmio::{MmioTransport, MmioVersion, VirtIOHeader};
use virtio_drivers::transport::Transport;

use super::mmio_arg::{self, MmioArgError, MmioSlot};
use crate::irq;
use crate::virtio::net::IrqAck;
use crate::virtio::{has_driver, virtio_name};

/// Starts every device on the command line. Returns `["virtio-mmio"]` when at least one NIC or disk started.
/// Errors: a malformed token (a boot error: the command line is wrong). Devices that fail are logged.
pub fn start(cmdline: &Cmdline) -> Result<Vec<String>, MmioArgError> {
    let slots = cmdline.virtio_mmio.iter().map(|t| mmio_arg::parse(t)).collect::<Result<Vec<_>, _>>()?;
    let mut started = 0;
    for slot in slots {
        match start_slot(slot) {
            Ok(true) => started += 1,
            Ok(false) => {}
            Err(e) => log::error!("virtio-mmio@{:#x}: {e}", slot.base),
        }
    }
    Ok(if started > 0 { alloc::vec![String::from("virtio-mmio")] } else { Vec::new() })
}

/// Starts the device in `slot` (virtio-net, virtio-blk or virtio-scsi); `Ok(false)` for an empty slot or a device type
/// without a driver.
fn start_slot(slot: MmioSlot) -> Result<bool, String> {
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
    if !has_driver(kind) {
        let what = virtio_name(kind);
        log::info!("virtio-mmio@{:#x}: {what} ({version}), no driver: skipped", slot.base);
        return Ok(false);
    }
    let name = format!("{}@mmio:{:#x}", virtio_name(kind), slot.base);
    let slot_irq = irq::claim().ok_or("no free interrupt slot")?;
    let vector = idt::allocate_vector(irq::handler).map_err(|e| format!("{e}"))?;
    slot_irq.bind(vector, None);
    let how = format!("{version} (vendor {:#x})", transport.vendor_id());
    crate::virtio::start(transport, name, &how, slot_irq, IrqAck::Task, &mut || {
        ioapic::route(slot.gsi, vector, ioapic::Trigger::Edge).map_err(|e| format!("{e}"))?;
        Ok(format!("gsi {} edge -> vector {vector:#x}", slot.gsi))
    })?;
    Ok(true)
}
