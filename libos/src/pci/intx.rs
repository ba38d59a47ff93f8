//! INTx: the legacy interrupt pin a function asserts (level-triggered, active low) and the Interrupt Line the
//! firmware wrote. The line is the GSI to route through the I/O APIC: right on pc (PIIX routes PIRQs to ISA
//! IRQs = GSIs 0..15) and, as measured, on QEMU 10's q35 too; in general q35's ICH9 PIRQs are GSIs 16..23
//! named only by ACPI `_PRT` (AML), which Zirvium does not interpret — MSI-X is the normal path there.
//! Source: PCI Local Bus Specification 3.0 §6.2.4 (Interrupt Line, Interrupt Pin), §2.2.6 (INTx# signals).
#![forbid(unsafe_code)]

use super::config::{reg, ConfigAccess};
use super::Bdf;
use core::fmt;

/// A function's INTx wiring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intx {
    /// Interrupt Pin: 1 = INTA# .. 4 = INTD#.
    pub pin: u8,
    /// Interrupt Line as the firmware set it: the GSI on x86.
    pub line: u8,
}

/// A function without a usable INTx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoIntx {
    /// The function.
    pub bdf: Bdf,
    /// Its Interrupt Pin (0 = uses no INTx pin).
    pub pin: u8,
    /// Its Interrupt Line (0xFF = not connected, or not set by the firmware).
    pub line: u8,
}

impl fmt::Display for NoIntx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pci {}: no INTx (pin {}, line {})", self.bdf, self.pin, self.line)
    }
}

impl Intx {
    /// Reads the Interrupt Pin and Line of `bdf`. Errors: [`NoIntx`] for pin 0 (none), a pin above 4, or line
    /// 0xFF (unknown).
    pub fn read<C: ConfigAccess + ?Sized>(cfg: &C, bdf: Bdf) -> Result<Self, NoIntx> {
        let r = cfg.read(bdf, reg::INTERRUPT);
        let (line, pin) = (r as u8, (r >> 8) as u8);
        if !(1..=4).contains(&pin) || line == 0xff {
            return Err(NoIntx { bdf, pin, line });
        }
        Ok(Self { pin, line })
    }

    /// The pin's name: 'A' for INTA# .. 'D' for INTD#.
    pub fn pin_name(&self) -> char {
        char::from(b'A' + self.pin.saturating_sub(1).min(3))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::config::fake::FakeConfig;

    #[test]
    fn reads_pin_and_line() {
        let f = Bdf::new(0, 3, 0).unwrap();
        let mut c = FakeConfig::default();
        c.function(f, 0x1af4, 0x1000, 0x0200_0000, 0);
        c.set(f, reg::INTERRUPT, 0x0000_010b);
        let i = Intx::read(&c, f).unwrap();
        assert_eq!((i, i.pin_name()), (Intx { pin: 1, line: 11 }, 'A'));
        c.set(f, reg::INTERRUPT, 0x0000_00ff);
        assert_eq!(Intx::read(&c, f), Err(NoIntx { bdf: f, pin: 0, line: 0xff }));
        c.set(f, reg::INTERRUPT, 0x0000_04ff);
        assert!(Intx::read(&c, f).is_err(), "line not set");
        c.set(f, reg::INTERRUPT, 0x0000_050a);
        assert!(Intx::read(&c, f).is_err(), "pin beyond INTD#");
    }
}
