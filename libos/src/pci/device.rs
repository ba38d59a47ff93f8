//! What a driver's probe gets: one found function with its configuration space, and the operations drivers
//! need on it — command bits, capabilities, memory BARs (mapped when above 4 GiB), MSI-X and MSI with messages
//! for libos vectors, INTx through the I/O APIC. Hardware operations exist on the bare target only.
#![forbid(unsafe_code)]

use super::bar::DecodeError;
use super::caps::CapError;
use super::intx::NoIntx;
use super::{Bdf, ConfigSpace, Function};
use alloc::string::String;
use core::fmt;

/// Why an operation on a function failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PciError {
    /// A BAR could not be decoded.
    Bar(DecodeError),
    /// BAR `index` is not implemented.
    BarNotImplemented {
        /// The function.
        bdf: Bdf,
        /// BAR index (0..6).
        index: u8,
    },
    /// Memory BAR `index` has no address (the firmware and the scan left it unassigned).
    BarUnassigned {
        /// The function.
        bdf: Bdf,
        /// BAR index (0..6).
        index: u8,
    },
    /// BAR `index` is an I/O BAR where a memory BAR was expected.
    BarIsIo {
        /// The function.
        bdf: Bdf,
        /// BAR index (0..6).
        index: u8,
    },
    /// BAR `index` lies above 4 GiB and could not be mapped.
    BarMap {
        /// The function.
        bdf: Bdf,
        /// BAR index (0..6).
        index: u8,
        /// Why the mapping failed (the paging `MapError` as text).
        detail: String,
    },
    /// The function has no `what` capability ("MSI-X", "MSI").
    NoCapability {
        /// The function.
        bdf: Bdf,
        /// The capability looked for ("MSI-X", "MSI").
        what: &'static str,
    },
    /// The `what` capability is malformed or does not fit.
    Capability {
        /// The function.
        bdf: Bdf,
        /// The capability ("MSI-X", "MSI").
        what: &'static str,
        /// What is wrong with it.
        error: CapError,
    },
    /// No usable INTx.
    Intx(NoIntx),
    /// The INTx line is not an I/O APIC input.
    Gsi {
        /// The function.
        bdf: Bdf,
        /// The Interrupt Line register's value, taken as a GSI.
        gsi: u32,
        /// Number of inputs (redirection entries) of the I/O APIC.
        pins: u32,
    },
}

impl fmt::Display for PciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bar(e) => write!(f, "{e}"),
            Self::BarNotImplemented { bdf, index } => write!(f, "pci {bdf}: BAR{index} is not implemented"),
            Self::BarUnassigned { bdf, index } => write!(f, "pci {bdf}: BAR{index} is not assigned"),
            Self::BarIsIo { bdf, index } => write!(f, "pci {bdf}: BAR{index} is an I/O BAR, expected memory"),
            Self::BarMap { bdf, index, detail } => write!(f, "pci {bdf}: BAR{index}: {detail}"),
            Self::NoCapability { bdf, what } => write!(f, "pci {bdf}: no {what} capability"),
            Self::Capability { bdf, what, error } => write!(f, "pci {bdf}: {what}: {error}"),
            Self::Intx(e) => write!(f, "{e}"),
            Self::Gsi { bdf, gsi, pins } => {
                write!(f, "pci {bdf}: INTx line {gsi} is not on the I/O APIC (it has {pins} pins)")
            }
        }
    }
}

impl From<DecodeError> for PciError {
    fn from(e: DecodeError) -> Self {
        Self::Bar(e)
    }
}

/// A memory BAR of a probed function: assigned, decoded from configuration space and mapped uncached. Only
/// `Device::memory_bar` makes one, so its range is a device's register space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBar {
    index: u8,
    address: u64,
    size: u64,
}

impl MemoryBar {
    /// The BAR's index (0..6).
    pub fn index(&self) -> u8 {
        self.index
    }

    /// Physical (= virtual, identity mapped) address (bytes).
    pub fn address(&self) -> u64 {
        self.address
    }

    /// Size (bytes, a power of two).
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// One function handed to a driver's probe.
#[derive(Debug)]
pub struct Device {
    function: Function,
    cfg: ConfigSpace,
}

impl Device {
    /// The function `function`, reached through `cfg`.
    pub fn new(function: Function, cfg: ConfigSpace) -> Self {
        Self { function, cfg }
    }

    /// Identification from enumeration.
    pub fn function(&self) -> &Function {
        &self.function
    }

    /// Its address.
    pub fn bdf(&self) -> Bdf {
        self.function.bdf
    }

    /// The configuration mechanism (for drivers that hand configuration access to a library, e.g.
    /// virtio-drivers' `PciRoot`).
    pub fn config_space(&self) -> ConfigSpace {
        self.cfg
    }
}

#[cfg(target_os = "none")]
mod hw_ops {
    use super::*;
    use crate::arch::x86_64::{apic, ioapic};
    use crate::pci::caps::{self, Capabilities, CAP_ID_MSI, CAP_ID_MSIX};
    use crate::pci::config::{self as config, ConfigAccess};
    use crate::pci::intx::Intx;
    use crate::pci::msi::{self, MsiCap, MsiMessage};
    use crate::pci::msix::{self, MsixCap};
    use crate::pci::{bar, hw, Bar};
    use alloc::format;

    const FOUR_GIB: u64 = 1 << 32;

    fn message(vector: u8) -> MsiMessage {
        let (address, data) = apic::msi_message(vector);
        MsiMessage { address, data }
    }

    impl Device {
        /// The dword at `offset` of the function's configuration space.
        pub fn read(&self, offset: u16) -> u32 {
            self.cfg.read(self.bdf(), offset)
        }

        /// Writes the dword at `offset` of the function's configuration space.
        pub fn write(&mut self, offset: u16, value: u32) {
            self.cfg.write(self.bdf(), offset, value)
        }

        /// Sets `bits` (`config::command::*`, e.g. memory space and bus master) in the Command register.
        pub fn enable(&mut self, bits: u16) {
            let bdf = self.bdf();
            let cmd = config::command(&self.cfg, bdf);
            config::set_command(&mut self.cfg, bdf, cmd | bits);
        }

        /// The function's capabilities.
        pub fn capabilities(&self) -> Capabilities<'_, ConfigSpace> {
            caps::capabilities(&self.cfg, self.bdf())
        }

        /// Memory BAR `index`: decoded, assigned, mapped (BARs above 4 GiB get an uncached mapping).
        /// Errors: [`PciError`] for a missing, unassigned, I/O or unmappable BAR.
        pub fn memory_bar(&mut self, index: u8) -> Result<MemoryBar, PciError> {
            let bdf = self.bdf();
            match bar::probe(&mut self.cfg, bdf, index, self.function.header.bars())? {
                Some(Bar::Memory { address: 0, .. }) => Err(PciError::BarUnassigned { bdf, index }),
                Some(Bar::Memory { address, size, .. }) => {
                    if address.saturating_add(size) > FOUR_GIB {
                        crate::mem::paging::map_mmio(address & !0xfff, (address & 0xfff) + size)
                            .map_err(|e| PciError::BarMap { bdf, index, detail: format!("{e}") })?;
                    }
                    Ok(MemoryBar { index, address, size })
                }
                Some(Bar::Io { .. }) => Err(PciError::BarIsIo { bdf, index }),
                None => Err(PciError::BarNotImplemented { bdf, index }),
            }
        }

        /// Enables MSI-X with entry `i` delivering `vectors[i]` to this CPU, the other entries masked. Returns
        /// the capability's offset (for [`disable_msix`](Self::disable_msix)).
        /// Errors: [`PciError::NoCapability`] without MSI-X; a malformed capability, a table outside its
        /// BAR or too small, a bad BAR.
        pub fn enable_msix(&mut self, vectors: &[u8]) -> Result<u16, PciError> {
            let bdf = self.bdf();
            let what = "MSI-X";
            let cap = caps::find(&self.cfg, bdf, CAP_ID_MSIX).ok_or(PciError::NoCapability { bdf, what })?;
            let m = MsixCap::read(&self.cfg, bdf, &cap).map_err(|error| PciError::Capability { bdf, what, error })?;
            let table = self.memory_bar(m.table_bar)?;
            m.check_fits(table.size).map_err(|error| PciError::Capability { bdf, what, error })?;
            let messages: alloc::vec::Vec<_> = vectors.iter().map(|&v| message(v)).collect();
            let base = u64::from(m.table_offset);
            msix::enable(&mut self.cfg, bdf, cap.offset, &m, &messages, &mut |at, v| {
                hw::write_bar32(&table, base + u64::from(at), v)
            })
            .map_err(|error| PciError::Capability { bdf, what, error })?;
            Ok(cap.offset)
        }

        /// Disables MSI-X (capability at `cap_offset`, from [`enable_msix`](Self::enable_msix)).
        pub fn disable_msix(&mut self, cap_offset: u16) {
            let bdf = self.bdf();
            msix::disable(&mut self.cfg, bdf, cap_offset);
        }

        /// Enables MSI with its single message delivering `vector` to this CPU.
        /// Errors: [`PciError::NoCapability`] without MSI.
        pub fn enable_msi(&mut self, vector: u8) -> Result<(), PciError> {
            let bdf = self.bdf();
            let cap = caps::find(&self.cfg, bdf, CAP_ID_MSI).ok_or(PciError::NoCapability { bdf, what: "MSI" })?;
            msi::enable(&mut self.cfg, bdf, &MsiCap::decode(&cap), message(vector));
            Ok(())
        }

        /// Routes the function's INTx line through the I/O APIC to `vector` (level, active low) and clears
        /// Interrupt Disable. Returns the wiring. Errors: no usable INTx, a line the I/O APIC lacks.
        pub fn route_intx(&mut self, vector: u8) -> Result<Intx, PciError> {
            let bdf = self.bdf();
            let intx = Intx::read(&self.cfg, bdf).map_err(PciError::Intx)?;
            let gsi = u32::from(intx.line);
            ioapic::route(gsi, vector, ioapic::Trigger::LevelLow).map_err(|e| PciError::Gsi {
                bdf,
                gsi,
                pins: e.pins,
            })?;
            let cmd = config::command(&self.cfg, bdf);
            config::set_command(&mut self.cfg, bdf, cmd & !config::command::INTX_DISABLE);
            Ok(intx)
        }
    }
}
