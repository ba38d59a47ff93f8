//! The NVMe driver's hardware edge: the controller registers in BAR0 ([`Bar0`], volatile 32-bit accesses
//! checked against the BAR's size) and the PCI probe that `libos::pci`'s scan calls for class 01:08:02 —
//! memory space and bus mastering on, MSI-X entry 0 (INTx through the I/O APIC when MSI-X is missing or
//! unusable), the controller brought up, each namespace registered with `libos::dev` and logged.
//! Source: NVMe over PCIe Transport 1.0 §3.1 (BAR0/BAR1 register window, MSI-X and pin-based interrupts).

use super::regs::{self, Registers};
use super::{bring_up, describe_namespace, Controller, MATCHES};
use crate::irq;
use alloc::format;
use alloc::string::{String, ToString};
use libos::arch::x86_64::idt;
use libos::pci::config::command;
use libos::pci::{Bound, Device, Driver, Interrupts, MemoryBar, PciError};

/// The NVMe driver's entry in the PCI driver table.
pub static DRIVER: Driver = Driver { name: "nvme", matches: MATCHES, probe };

/// BAR0 of a probed NVMe function: its register window, mapped uncached by `libos::pci`.
pub struct Bar0 {
    bar: MemoryBar,
}

impl Bar0 {
    /// The address of the dword at `offset` if it lies inside the BAR.
    fn at(&self, offset: usize) -> Option<usize> {
        let end = (offset as u64).checked_add(4)?;
        (offset.is_multiple_of(4) && end <= self.bar.size()).then(|| (self.bar.address() + offset as u64) as usize)
    }
}

impl Registers for Bar0 {
    fn read32(&self, offset: usize) -> u32 {
        match self.at(offset) {
            // SAFETY: `bar` comes from `Device::memory_bar` (decoded from this function's configuration space,
            // mapped uncached) and the dword lies inside it: the load reads a controller register.
            Some(a) => unsafe { core::ptr::read_volatile(a as *const u32) },
            None => u32::MAX,
        }
    }

    fn write32(&mut self, offset: usize, value: u32) {
        match self.at(offset) {
            // SAFETY: as in `read32`; the store reaches a controller register, never RAM.
            Some(a) => unsafe { core::ptr::write_volatile(a as *mut u32, value) },
            None => {
                log::error!("nvme: register store at {offset:#x} outside BAR0 of {:#x} bytes dropped", self.bar.size())
            }
        }
    }
}

/// Starts an NVMe controller: logs one line for it and one per namespace, registers the namespaces.
fn probe(dev: &mut Device) -> Result<Bound, String> {
    let bdf = dev.bdf();
    let name = format!("nvme@pci:{bdf}");
    let err = |e: &dyn core::fmt::Display| format!("{name}: {e}");
    dev.enable(command::MEMORY_SPACE | command::BUS_MASTER);
    let bar = dev.memory_bar(0).map_err(|e| err(&e))?;
    let cap = regs::Cap::decode(Bar0 { bar }.read64(regs::CAP));
    // The doorbells of the admin queue and I/O queue 1 must lie inside BAR0.
    let need = regs::doorbell(1, regs::Doorbell::CompletionHead, cap.doorbell_stride) + 4;
    if (bar.size() as usize) < need {
        return Err(format!("{name}: BAR0 of {:#x} bytes does not hold the doorbells (needs {need:#x})", bar.size()));
    }
    let slot = irq::claim().ok_or_else(|| format!("{name}: no free interrupt slot"))?;
    let vector = idt::allocate_vector(irq::handler).map_err(|e| err(&e))?;
    let msix = match dev.enable_msix(&[vector]) {
        Ok(_) => true,
        Err(PciError::NoCapability { .. }) => false,
        Err(e) => {
            log::warn!("{name}: MSI-X unusable ({e}); using INTx");
            false
        }
    };
    // The controller is driven by polling until its I/O queue exists; interrupts only matter after that.
    let ctrl = Controller::start(Bar0 { bar }, name.clone(), libos::time::uptime_ns).map_err(|e| e.to_string())?;
    let started = bring_up(ctrl, 0).map_err(|e| e.to_string())?;
    // A completion reaped in the interrupt rings the CQ head doorbell, which also deasserts INTx.
    slot.bind(vector, None);
    let (interrupts, how) = if msix {
        (Interrupts::MsiX, format!("MSI-X entry 0 -> vector {vector:#x}"))
    } else {
        let intx = dev.route_intx(vector).map_err(|e| err(&e))?;
        (Interrupts::Intx, format!("INTx gsi {} level -> vector {vector:#x}", intx.line))
    };
    slot.set_waker(&started.queue.irq_waker());
    log::info!("{name}: {} irq {how}", started.describe());
    for (nsid, why) in &started.skipped {
        log::warn!("{name}/n{nsid}: skipped: {why}");
    }
    for d in &started.disks {
        log::info!("{}", describe_namespace(d));
        libos::dev::register_block(d.clone());
    }
    Ok(Bound { interrupts })
}
