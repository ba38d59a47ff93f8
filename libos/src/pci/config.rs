//! Configuration space: the access trait every PCI routine goes through ([`ConfigAccess`]), the header's
//! register offsets and command bits, and where a register lives under each configuration mechanism
//! ([`ConfigSpace`]: port I/O through 0xCF8/0xCFC, or ECAM memory from an ACPI MCFG window). The hardware
//! accesses themselves are in `hw.rs`; everything here is host-tested.
//! Source: PCI Local Bus Specification 3.0 §3.2.2.3.2 (configuration mechanism #1), §6.1 (header layout),
//! §6.2.2 (Command register); PCI Express Base 4.0 §7.2.2 (ECAM address mapping).
#![forbid(unsafe_code)]

use super::Bdf;
use crate::acpi::EcamWindow;

/// Register offsets of the configuration header (bytes; dword registers hold several fields).
pub mod reg {
    /// Vendor ID (15:0), Device ID (31:16).
    pub const ID: u16 = 0x00;
    /// Command (15:0), Status (31:16).
    pub const COMMAND_STATUS: u16 = 0x04;
    /// Revision ID (7:0), Class Code (31:8).
    pub const CLASS: u16 = 0x08;
    /// Cache Line Size, Latency Timer, Header Type (23:16), BIST.
    pub const HEADER: u16 = 0x0c;
    /// Base Address Register 0; BAR n is at `BAR0 + 4 n`.
    pub const BAR0: u16 = 0x10;
    /// Type 1 (bridge): primary (7:0), secondary (15:8) and subordinate (23:16) bus numbers.
    pub const BUS_NUMBERS: u16 = 0x18;
    /// Capabilities Pointer (7:0).
    pub const CAPABILITIES: u16 = 0x34;
    /// Interrupt Line (7:0), Interrupt Pin (15:8).
    pub const INTERRUPT: u16 = 0x3c;
}

/// Command register bits (PCI 3.0 §6.2.2).
pub mod command {
    /// I/O Space: respond to I/O BARs.
    pub const IO_SPACE: u16 = 1 << 0;
    /// Memory Space: respond to memory BARs.
    pub const MEMORY_SPACE: u16 = 1 << 1;
    /// Bus Master: the function may issue DMA (and MSI/MSI-X writes).
    pub const BUS_MASTER: u16 = 1 << 2;
    /// Interrupt Disable: the function does not assert INTx.
    pub const INTX_DISABLE: u16 = 1 << 10;
}

/// Status register bit: Capabilities List (PCI 3.0 §6.2.3).
pub const STATUS_CAPABILITIES: u16 = 1 << 4;

/// Reads and writes configuration registers.
pub trait ConfigAccess {
    /// The dword at `offset` (bytes; the low two bits are ignored) of `bdf`'s configuration space; all ones
    /// when no function answers or the offset is outside the space the mechanism reaches.
    fn read(&self, bdf: Bdf, offset: u16) -> u32;
    /// Writes the dword at `offset` (low two bits ignored); dropped when no function answers.
    fn write(&mut self, bdf: Bdf, offset: u16, value: u32);

    /// The 16-bit register at `offset` (bytes, 2-aligned) from its dword.
    fn read16(&self, bdf: Bdf, offset: u16) -> u16 {
        (self.read(bdf, offset) >> (8 * (offset & 2))) as u16
    }

    /// Writes the 16-bit register at `offset` (2-aligned) with a read-modify-write of its dword. Not for
    /// dwords whose other half has write-1-to-clear bits (the Status register): use [`set_command`].
    fn write16(&mut self, bdf: Bdf, offset: u16, value: u16) {
        let shift = 8 * (offset & 2);
        let old = self.read(bdf, offset) & !(0xffff << shift);
        self.write(bdf, offset, old | (u32::from(value) << shift));
    }
}

/// The Command register of `bdf`.
pub fn command<C: ConfigAccess + ?Sized>(cfg: &C, bdf: Bdf) -> u16 {
    cfg.read(bdf, reg::COMMAND_STATUS) as u16
}

/// Writes the Command register of `bdf`, writing 0 to the Status half (its error bits are write-1-to-clear).
pub fn set_command<C: ConfigAccess + ?Sized>(cfg: &mut C, bdf: Bdf, value: u16) {
    cfg.write(bdf, reg::COMMAND_STATUS, u32::from(value));
}

/// Where a configuration register is accessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// Write this value to CONFIG_ADDRESS (0xCF8), then access CONFIG_DATA (0xCFC).
    Port(u32),
    /// Access the dword at this physical address.
    Memory(u64),
}

/// CONFIG_ADDRESS port of configuration mechanism #1.
pub const CONFIG_ADDRESS: u16 = 0xCF8;
/// CONFIG_DATA port of configuration mechanism #1.
pub const CONFIG_DATA: u16 = 0xCFC;

/// The configuration mechanism in use: port I/O, or ECAM through a window the PCI scan found in MCFG and
/// checked is mapped (only `libos::pci` makes an ECAM one, so every access lands in configuration space).
/// Stateless apart from the window, hence `Copy`: every holder reaches the same configuration space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigSpace {
    ecam: Option<EcamWindow>,
}

impl ConfigSpace {
    /// Mechanism #1: 256 bytes per function through CONFIG_ADDRESS/CONFIG_DATA.
    pub const PORT_IO: Self = Self { ecam: None };

    /// ECAM (4 KiB per function) through `w`, which the caller has checked is identity mapped uncached.
    #[cfg_attr(not(target_os = "none"), allow(dead_code))] // made by the scan, on the bare target only
    pub(super) fn ecam(w: EcamWindow) -> Self {
        Self { ecam: Some(w) }
    }

    /// The ECAM window, `None` for port I/O.
    pub fn ecam_window(&self) -> Option<EcamWindow> {
        self.ecam
    }

    /// Where the dword at `offset` of `bdf` is, or `None` when the mechanism does not reach it (an offset
    /// past 256 bytes through ports or 4 KiB through ECAM, a bus outside the ECAM window).
    pub fn locate(&self, bdf: Bdf, offset: u16) -> Option<Location> {
        match &self.ecam {
            None => port_address(bdf, offset).map(Location::Port),
            Some(w) => ecam_address(w, bdf, offset).map(Location::Memory),
        }
    }
}

/// The CONFIG_ADDRESS value for the dword at `offset` of `bdf`: enable bit, bus, device, function, register.
/// `None` past the 256 bytes mechanism #1 reaches.
pub fn port_address(bdf: Bdf, offset: u16) -> Option<u32> {
    (offset < 0x100).then(|| {
        0x8000_0000
            | (u32::from(bdf.bus()) << 16)
            | (u32::from(bdf.device()) << 11)
            | (u32::from(bdf.function()) << 8)
            | u32::from(offset & 0xfc)
    })
}

/// The physical address of the dword at `offset` of `bdf` in ECAM window `w`: `base + (bus << 20 | device <<
/// 15 | function << 12 | offset)`. `None` past 4 KiB or for a bus the window does not decode.
pub fn ecam_address(w: &EcamWindow, bdf: Bdf, offset: u16) -> Option<u64> {
    let bus = bdf.bus();
    (offset < 0x1000 && (w.start_bus..=w.end_bus).contains(&bus)).then(|| {
        w.base
            + ((u64::from(bus) << 20)
                | (u64::from(bdf.device()) << 15)
                | (u64::from(bdf.function()) << 12)
                | u64::from(offset & 0xffc))
    })
}

#[cfg(test)]
pub(crate) mod fake {
    //! A configuration space model for host tests: a map of dwords per function, with per-register
    //! write masks (read-only bits keep their value, as hardware does), BAR sizing behaviour from the masks,
    //! and a log of writes.

    use super::*;
    use alloc::collections::BTreeMap;
    use alloc::vec::Vec;

    /// `b:d.f`, for tests (panics on an invalid address).
    pub fn bdf(b: u8, d: u8, f: u8) -> Bdf {
        Bdf::new(b, d, f).expect("a valid test address")
    }

    /// Dwords of every present function; absent functions and registers read as all ones / 0.
    #[derive(Default)]
    pub struct FakeConfig {
        pub regs: BTreeMap<(Bdf, u16), u32>,
        /// Writable bits per register; registers without an entry are fully writable.
        pub masks: BTreeMap<(Bdf, u16), u32>,
        /// Every write, in order.
        pub writes: Vec<(Bdf, u16, u32)>,
    }

    impl FakeConfig {
        /// Adds a function with its ID and class dwords and header type byte.
        pub fn function(&mut self, bdf: Bdf, vendor: u16, device: u16, class: u32, header: u8) {
            self.regs.insert((bdf, reg::ID), u32::from(vendor) | u32::from(device) << 16);
            self.regs.insert((bdf, reg::CLASS), class);
            self.regs.insert((bdf, reg::HEADER), u32::from(header) << 16);
        }

        /// Sets a register (and keeps the function present).
        pub fn set(&mut self, bdf: Bdf, offset: u16, value: u32) {
            self.regs.insert((bdf, offset), value);
        }

        /// Makes only `mask`'s bits of a register writable.
        pub fn mask(&mut self, bdf: Bdf, offset: u16, mask: u32) {
            self.masks.insert((bdf, offset), mask);
        }

        /// A register's value (0 when never written).
        pub fn get(&self, bdf: Bdf, offset: u16) -> u32 {
            self.regs.get(&(bdf, offset)).copied().unwrap_or(0)
        }

        fn present(&self, bdf: Bdf) -> bool {
            self.regs.contains_key(&(bdf, reg::ID))
        }
    }

    impl ConfigAccess for FakeConfig {
        fn read(&self, bdf: Bdf, offset: u16) -> u32 {
            if !self.present(bdf) {
                return u32::MAX;
            }
            self.get(bdf, offset & !3)
        }

        fn write(&mut self, bdf: Bdf, offset: u16, value: u32) {
            let offset = offset & !3;
            self.writes.push((bdf, offset, value));
            if !self.present(bdf) {
                return;
            }
            let mask = self.masks.get(&(bdf, offset)).copied().unwrap_or(u32::MAX);
            let old = self.get(bdf, offset);
            self.regs.insert((bdf, offset), (old & !mask) | (value & mask));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::bdf;
    use super::*;

    #[test]
    fn port_addresses() {
        assert_eq!(port_address(bdf(0, 0, 0), 0), Some(0x8000_0000));
        assert_eq!(port_address(bdf(1, 3, 2), 0x3e), Some(0x8001_1a3c), "dword aligned");
        assert_eq!(port_address(bdf(0xff, 31, 7), 0xfc), Some(0x80ff_fffc));
        assert_eq!(port_address(bdf(0, 0, 0), 0x100), None, "extended space needs ECAM");
    }

    #[test]
    fn ecam_addresses() {
        let w = EcamWindow { base: 0xB000_0000, segment: 0, start_bus: 0, end_bus: 0x3f };
        assert_eq!(ecam_address(&w, bdf(0, 1, 0), 0x10), Some(0xB000_8010));
        assert_eq!(
            ecam_address(&w, bdf(2, 31, 7), 0xffe),
            Some(0xB000_0000 + (2 << 20) + (31 << 15) + (7 << 12) + 0xffc)
        );
        assert_eq!(ecam_address(&w, bdf(0x40, 0, 0), 0), None, "bus beyond end_bus");
        assert_eq!(ecam_address(&w, bdf(0, 0, 0), 0x1000), None);
        let high = EcamWindow { start_bus: 1, ..w };
        assert_eq!(ecam_address(&high, bdf(0, 0, 0), 0), None, "bus below start_bus");
        assert_eq!(ConfigSpace::ecam(w).locate(bdf(0, 1, 0), 4), Some(Location::Memory(0xB000_8004)));
        assert_eq!(ConfigSpace::PORT_IO.locate(bdf(0, 1, 0), 4), Some(Location::Port(0x8000_0804)));
    }

    #[test]
    fn sixteen_bit_registers() {
        let mut c = fake::FakeConfig::default();
        let f = bdf(0, 1, 0);
        c.function(f, 0x1af4, 0x1041, 0x0200_0001, 0);
        c.set(f, reg::INTERRUPT, 0x0000_010b);
        assert_eq!(c.read16(f, reg::ID), 0x1af4);
        assert_eq!(c.read16(f, reg::ID + 2), 0x1041);
        c.write16(f, reg::INTERRUPT, 0x0105);
        assert_eq!(c.get(f, reg::INTERRUPT), 0x0000_0105);
        c.write16(f, reg::INTERRUPT + 2, 0xabcd);
        assert_eq!(c.get(f, reg::INTERRUPT), 0xabcd_0105);
        c.set(f, reg::COMMAND_STATUS, 0x0010_0003);
        assert_eq!(command(&c, f), 3);
        set_command(&mut c, f, 7);
        assert_eq!(c.get(f, reg::COMMAND_STATUS), 7, "status half written as 0 (write-1-to-clear bits)");
    }
}
