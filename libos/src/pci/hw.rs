//! The hardware edge of `libos::pci`: configuration space through port I/O (mechanism #1, interrupts masked
//! between the address and data accesses) or ECAM loads and stores, and dword stores into a probed memory BAR
//! (the MSI-X table). Source: PCI Local Bus Specification 3.0 §3.2.2.3.2; PCI Express Base 4.0 §7.2.2.
#![allow(unsafe_code)]

use super::config::{ConfigAccess, Location, CONFIG_ADDRESS, CONFIG_DATA};
use super::{Bdf, ConfigSpace, MemoryBar};
use crate::arch::x86_64::cpu;

impl ConfigAccess for ConfigSpace {
    fn read(&self, bdf: Bdf, offset: u16) -> u32 {
        match self.locate(bdf, offset) {
            Some(Location::Port(a)) => cpu::without_interrupts(|| {
                cpu::outl(CONFIG_ADDRESS, a);
                cpu::inl(CONFIG_DATA)
            }),
            // SAFETY: `locate` only returns addresses inside the ECAM window MCFG declared, which the scan
            // checked is identity mapped uncached (below 4 GiB, or mapped with `map_mmio`); configuration
            // reads have no side effects on memory.
            Some(Location::Memory(a)) => unsafe { core::ptr::read_volatile(a as usize as *const u32) },
            None => u32::MAX,
        }
    }

    fn write(&mut self, bdf: Bdf, offset: u16, value: u32) {
        match self.locate(bdf, offset) {
            Some(Location::Port(a)) => cpu::without_interrupts(|| {
                cpu::outl(CONFIG_ADDRESS, a);
                cpu::outl(CONFIG_DATA, value);
            }),
            // SAFETY: as in `read`; the store goes to a function's configuration register.
            Some(Location::Memory(a)) => unsafe { core::ptr::write_volatile(a as usize as *mut u32, value) },
            None => {}
        }
    }
}

/// Stores `value` at `offset` bytes into `bar`; dropped (and logged) when the dword does not lie inside the BAR.
pub(super) fn write_bar32(bar: &MemoryBar, offset: u64, value: u32) {
    if offset & 3 != 0 || offset.checked_add(4).is_none_or(|end| end > bar.size()) {
        log::error!("pci: store at {offset:#x} outside BAR{} of {:#x} bytes dropped", bar.index(), bar.size());
        return;
    }
    let at = bar.address() + offset;
    // SAFETY: `bar` was decoded from the function's own configuration space and mapped uncached by
    // `Device::memory_bar` (the only maker of `MemoryBar`), and `offset..offset + 4` lies inside it: the
    // store reaches that function's registers, never RAM.
    unsafe { core::ptr::write_volatile(at as usize as *mut u32, value) };
}
