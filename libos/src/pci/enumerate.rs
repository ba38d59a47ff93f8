//! Bus enumeration: every function on bus 0 and, recursively, behind the PCI-to-PCI bridges the firmware
//! numbered (their secondary bus). Buses are not renumbered: an unnumbered bridge hides its bus.
//! Source: PCI Local Bus Specification 3.0 §6.2.1 (an absent function reads Vendor ID 0xFFFF; Header Type bit 7
//! marks a multi-function device), PCI-to-PCI Bridge Architecture 1.2 §3.2.5.3 (secondary bus number).
#![forbid(unsafe_code)]

use super::config::{reg, ConfigAccess};
use super::{Bdf, ClassCode, DeviceId, HeaderType, VendorId};
use alloc::vec::Vec;

/// A function found by enumeration: its address and the identification fields of its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Function {
    /// Where it is.
    pub bdf: Bdf,
    /// Vendor ID.
    pub vendor: VendorId,
    /// Device ID.
    pub device: DeviceId,
    /// Class Code.
    pub class: ClassCode,
    /// Revision ID.
    pub revision: u8,
    /// Header layout.
    pub header: HeaderType,
}

impl Function {
    /// Reads the identification of `bdf`; `None` when no function answers (Vendor ID 0xFFFF).
    pub fn read<C: ConfigAccess + ?Sized>(cfg: &C, bdf: Bdf) -> Option<Self> {
        let id = cfg.read(bdf, reg::ID);
        let vendor = VendorId(id as u16);
        if vendor == VendorId::NONE {
            return None;
        }
        let (class, revision) = ClassCode::from_register(cfg.read(bdf, reg::CLASS));
        let header = HeaderType::from_byte((cfg.read(bdf, reg::HEADER) >> 16) as u8);
        Some(Self { bdf, vendor, device: DeviceId((id >> 16) as u16), class, revision, header })
    }
}

/// Every function reachable from bus 0, in bus order of discovery, then device and function order.
pub fn enumerate<C: ConfigAccess + ?Sized>(cfg: &C) -> Vec<Function> {
    let mut out = Vec::new();
    scan_bus(cfg, 0, &mut Vec::new(), &mut out);
    out
}

/// Functions on `bus` and behind its bridges; `seen` stops loops through misprogrammed bridges.
fn scan_bus<C: ConfigAccess + ?Sized>(cfg: &C, bus: u8, seen: &mut Vec<u8>, out: &mut Vec<Function>) {
    if seen.contains(&bus) {
        return;
    }
    seen.push(bus);
    for device in 0..Bdf::DEVICES {
        let Some(f0) = Bdf::new(bus, device, 0) else { continue };
        if VendorId(cfg.read(f0, reg::ID) as u16) == VendorId::NONE {
            continue;
        }
        let multi = (cfg.read(f0, reg::HEADER) >> 16) & 0x80 != 0;
        for function in 0..if multi { Bdf::FUNCTIONS } else { 1 } {
            let Some(bdf) = Bdf::new(bus, device, function) else { continue };
            let Some(f) = Function::read(cfg, bdf) else { continue };
            out.push(f);
            if f.header == HeaderType::Bridge {
                let secondary = (cfg.read(bdf, reg::BUS_NUMBERS) >> 8) as u8;
                if secondary != 0 {
                    scan_bus(cfg, secondary, seen, out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::config::fake::{bdf, FakeConfig};

    #[test]
    fn no_bus_finds_nothing() {
        // A Xen PVH guest or microvm: every read returns all ones.
        assert_eq!(enumerate(&FakeConfig::default()), []);
    }

    #[test]
    fn q35_like_bus_with_a_bridge() {
        let mut c = FakeConfig::default();
        c.function(bdf(0, 0, 0), 0x8086, 0x29c0, 0x0600_0000, 0);
        c.function(bdf(0, 1, 0), 0x1af4, 0x1000, 0x0200_0000, 0);
        c.function(bdf(0, 2, 0), 0x1b36, 0x000c, 0x0604_0000, 1); // PCIe root port
        c.set(bdf(0, 2, 0), reg::BUS_NUMBERS, 0x0001_0100);
        c.function(bdf(1, 0, 0), 0x1af4, 0x1042, 0x0100_0001, 0);
        c.function(bdf(0, 0x1f, 0), 0x8086, 0x2918, 0x0601_0002, 0x80);
        c.function(bdf(0, 0x1f, 3), 0x8086, 0x2930, 0x0c05_0002, 0);
        // Function 2 of a single-function device must not be looked at.
        c.function(bdf(0, 1, 2), 0xdead, 0xbeef, 0, 0);
        let found: Vec<_> = enumerate(&c).iter().map(|f| f.bdf).collect();
        assert_eq!(found, [bdf(0, 0, 0), bdf(0, 1, 0), bdf(0, 2, 0), bdf(1, 0, 0), bdf(0, 0x1f, 0), bdf(0, 0x1f, 3)]);
        let blk = Function::read(&c, bdf(1, 0, 0)).unwrap();
        assert_eq!((blk.vendor, blk.device, blk.revision), (VendorId(0x1af4), DeviceId(0x1042), 1));
        assert_eq!(blk.class, ClassCode { class: 1, subclass: 0, prog_if: 0 });
        assert_eq!(blk.header, HeaderType::Standard);
    }

    #[test]
    fn bridge_loops_and_unnumbered_bridges_end() {
        let mut c = FakeConfig::default();
        c.function(bdf(0, 3, 0), 0x1b36, 1, 0x0604_0000, 1);
        c.set(bdf(0, 3, 0), reg::BUS_NUMBERS, 0x0000_0000); // not numbered by the firmware
        c.function(bdf(0, 4, 0), 0x1b36, 1, 0x0604_0000, 1);
        c.set(bdf(0, 4, 0), reg::BUS_NUMBERS, 0x0002_0200);
        c.function(bdf(2, 0, 0), 0x1b36, 1, 0x0604_0000, 1);
        c.set(bdf(2, 0, 0), reg::BUS_NUMBERS, 0x0002_0202); // points back at bus 2
        assert_eq!(enumerate(&c).len(), 3, "each bus scanned once");
    }
}
