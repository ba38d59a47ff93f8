//! Base Address Registers: decoding (memory, 32- or 64-bit, prefetchable; or I/O), sizing by writing all ones
//! and reading back with the function's decoding turned off meanwhile, and programming a new address.
//! Source: PCI Local Bus Specification 3.0 §6.2.5.1 (BAR layout, sizing), §6.2.2 (Command register).
#![forbid(unsafe_code)]

use super::config::{self, command, reg, ConfigAccess};
use super::Bdf;
use core::fmt;

/// Width of a memory BAR's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    /// One register, below 4 GiB (type 00b; also the legacy below-1-MiB type 01b).
    Bits32,
    /// Two registers, anywhere in 64-bit space (type 10b).
    Bits64,
}

/// A decoded, implemented BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bar {
    /// Memory space: `size` bytes (a power of two) at `address` (0 = not assigned).
    Memory {
        /// Base physical address (bytes; 0 = not assigned).
        address: u64,
        /// Size in bytes (a power of two).
        size: u64,
        /// Whether the BAR is 32- or 64-bit (64-bit BARs take two registers).
        width: Width,
        /// The Prefetchable bit (bit 3).
        prefetchable: bool,
    },
    /// I/O space: `size` ports at `port`.
    Io {
        /// First I/O port.
        port: u32,
        /// Number of I/O ports (a power of two).
        size: u32,
    },
}

/// A BAR that cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The header has no BAR `index` (6 in a type 0 header, 2 in a bridge's).
    NoSuchBar {
        /// The function.
        bdf: Bdf,
        /// BAR index asked for.
        index: u8,
    },
    /// A 64-bit BAR in the header's last slot has no register for its upper half.
    MissingUpperHalf {
        /// The function.
        bdf: Bdf,
        /// Index of the 64-bit BAR's lower half.
        index: u8,
    },
    /// Memory type 11b, which PCI 3.0 reserves.
    ReservedType {
        /// The function.
        bdf: Bdf,
        /// BAR index (0..6).
        index: u8,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSuchBar { bdf, index } => write!(f, "pci {bdf}: no BAR{index} in this header"),
            Self::MissingUpperHalf { bdf, index } => {
                write!(f, "pci {bdf} BAR{index}: 64-bit BAR in the last slot has no upper half")
            }
            Self::ReservedType { bdf, index } => write!(f, "pci {bdf} BAR{index}: reserved memory type 11b"),
        }
    }
}

const IO: u32 = 1;
const MEMORY_TYPE_64: u32 = 0b10 << 1;
const MEMORY_TYPE_RESERVED: u32 = 0b11 << 1;
const PREFETCHABLE: u32 = 1 << 3;

fn offset(index: u8) -> u16 {
    reg::BAR0 + 4 * u16::from(index)
}

/// Sizes and decodes BAR `index` of `bdf`, a function whose header has `bars` BARs. `None` when the BAR is not
/// implemented (reads back 0). Memory and I/O decoding are off while the BAR holds all ones, then restored
/// with the BAR's value. Errors: [`DecodeError`] (the registers are restored first).
pub fn probe<C: ConfigAccess + ?Sized>(cfg: &mut C, bdf: Bdf, index: u8, bars: u8) -> Result<Option<Bar>, DecodeError> {
    if index >= bars {
        return Err(DecodeError::NoSuchBar { bdf, index });
    }
    let at = offset(index);
    let cmd = command(cfg, bdf);
    let decoding = cmd & (command::IO_SPACE | command::MEMORY_SPACE);
    if decoding != 0 {
        config::set_command(cfg, bdf, cmd & !decoding);
    }
    let low = cfg.read(bdf, at);
    cfg.write(bdf, at, u32::MAX);
    let low_mask = cfg.read(bdf, at);
    cfg.write(bdf, at, low);
    let wide = low & IO == 0 && low & MEMORY_TYPE_RESERVED == MEMORY_TYPE_64;
    let high = if wide && index + 1 < bars {
        let high = cfg.read(bdf, at + 4);
        cfg.write(bdf, at + 4, u32::MAX);
        let high_mask = cfg.read(bdf, at + 4);
        cfg.write(bdf, at + 4, high);
        Some((high, high_mask))
    } else {
        None
    };
    if decoding != 0 {
        config::set_command(cfg, bdf, cmd);
    }
    decode(bdf, index, low, low_mask, high)
}

/// Decodes a BAR from its value `low` and its read-back after writing all ones `low_mask`; `high` is the
/// upper register's `(value, read-back)` for a 64-bit BAR.
fn decode(bdf: Bdf, index: u8, low: u32, low_mask: u32, high: Option<(u32, u32)>) -> Result<Option<Bar>, DecodeError> {
    if low & IO != 0 {
        let mut m = low_mask & !0b11;
        if m == 0 {
            return Ok(None);
        }
        // Functions decoding 16-bit I/O addresses may hardwire the upper half to 0.
        if m & 0xffff_0000 == 0 {
            m |= 0xffff_0000;
        }
        return Ok(Some(Bar::Io { port: low & !0b11, size: (!m).wrapping_add(1) }));
    }
    let prefetchable = low & PREFETCHABLE != 0;
    match low & MEMORY_TYPE_RESERVED {
        MEMORY_TYPE_RESERVED => Err(DecodeError::ReservedType { bdf, index }),
        MEMORY_TYPE_64 => {
            let (high, high_mask) = high.ok_or(DecodeError::MissingUpperHalf { bdf, index })?;
            let m = u64::from(high_mask) << 32 | u64::from(low_mask & !0xf);
            if m == 0 {
                return Ok(None);
            }
            let address = u64::from(high) << 32 | u64::from(low & !0xf);
            Ok(Some(Bar::Memory { address, size: (!m).wrapping_add(1), width: Width::Bits64, prefetchable }))
        }
        _ => {
            let m = low_mask & !0xf;
            if m == 0 {
                return Ok(None);
            }
            let size = u64::from((!m).wrapping_add(1));
            Ok(Some(Bar::Memory { address: u64::from(low & !0xf), size, width: Width::Bits32, prefetchable }))
        }
    }
}

/// Every BAR of `bdf` (a header with `bars` BARs), indexed by register: a 64-bit BAR fills its own slot and
/// leaves the next (its upper half) `None`. Errors: the first [`DecodeError`].
pub fn probe_all<C: ConfigAccess + ?Sized>(cfg: &mut C, bdf: Bdf, bars: u8) -> Result<[Option<Bar>; 6], DecodeError> {
    let mut out = [None; 6];
    let mut index = 0;
    while index < bars.min(6) {
        let bar = probe(cfg, bdf, index, bars)?;
        out[usize::from(index)] = bar;
        index += match bar {
            Some(Bar::Memory { width: Width::Bits64, .. }) => 2,
            _ => 1,
        };
    }
    Ok(out)
}

/// Programs memory BAR `index` (of `width`) of `bdf` with `address`, which must be aligned to the BAR's size
/// (and below 4 GiB for a 32-bit BAR: the upper bits are dropped).
pub fn set_memory_address<C: ConfigAccess + ?Sized>(cfg: &mut C, bdf: Bdf, index: u8, width: Width, address: u64) {
    let at = offset(index);
    cfg.write(bdf, at, address as u32);
    if width == Width::Bits64 {
        cfg.write(bdf, at + 4, (address >> 32) as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::config::fake::FakeConfig;

    /// QEMU's virtio-net-pci (transitional): BAR0 I/O 32 ports, BAR1 32-bit memory 4 KiB (MSI-X), BAR4/5 a
    /// 64-bit prefetchable 16 KiB memory BAR (the virtio structures).
    fn virtio_net() -> (FakeConfig, Bdf) {
        let f = Bdf::new(0, 3, 0).unwrap();
        let mut c = FakeConfig::default();
        c.function(f, 0x1af4, 0x1000, 0x0200_0000, 0);
        c.set(f, reg::COMMAND_STATUS, 0x0010_0007);
        for (i, value, mask) in [
            (0, 0xc001, 0xffe0),
            (1, 0xfebd_1000, 0xffff_f000),
            (2, 0, 0),
            (3, 0, 0),
            (4, 0xfe80_000c, 0xffff_c000),
            (5, 0, 0xffff_ffff),
        ] {
            c.set(f, offset(i), value);
            c.mask(f, offset(i), mask);
        }
        (c, f)
    }

    #[test]
    fn decodes_qemu_virtio_bars_and_restores_registers() {
        let (mut c, f) = virtio_net();
        let bars = probe_all(&mut c, f, 6).unwrap();
        assert_eq!(bars[0], Some(Bar::Io { port: 0xc000, size: 32 }));
        assert_eq!(
            bars[1],
            Some(Bar::Memory { address: 0xfebd_1000, size: 0x1000, width: Width::Bits32, prefetchable: false })
        );
        assert_eq!((bars[2], bars[3], bars[5]), (None, None, None));
        assert_eq!(
            bars[4],
            Some(Bar::Memory { address: 0xfe80_0000, size: 0x4000, width: Width::Bits64, prefetchable: true })
        );
        assert_eq!(c.get(f, offset(4)), 0xfe80_000c, "value restored");
        assert_eq!(c.get(f, offset(5)), 0);
        assert_eq!(c.get(f, reg::COMMAND_STATUS) & 0xffff, 7, "decoding restored");
        let first = c.writes[0];
        assert_eq!((first.1, first.2 & 3), (reg::COMMAND_STATUS, 0), "decoding off before sizing");
    }

    #[test]
    fn assigns_addresses() {
        let (mut c, f) = virtio_net();
        set_memory_address(&mut c, f, 4, Width::Bits64, 0x1_2340_0000);
        assert_eq!(
            probe(&mut c, f, 4, 6).unwrap(),
            Some(Bar::Memory { address: 0x1_2340_0000, size: 0x4000, width: Width::Bits64, prefetchable: true })
        );
        set_memory_address(&mut c, f, 1, Width::Bits32, 0xc000_0000);
        assert!(matches!(probe(&mut c, f, 1, 6), Ok(Some(Bar::Memory { address: 0xc000_0000, .. }))));
    }

    #[test]
    fn bad_bars() {
        let (mut c, f) = virtio_net();
        assert_eq!(probe(&mut c, f, 6, 6), Err(DecodeError::NoSuchBar { bdf: f, index: 6 }));
        assert_eq!(probe(&mut c, f, 2, 2), Err(DecodeError::NoSuchBar { bdf: f, index: 2 }), "bridges have 2");
        c.set(f, offset(5), 0x4);
        c.mask(f, offset(5), 0xffff_f000);
        assert_eq!(probe(&mut c, f, 5, 6), Err(DecodeError::MissingUpperHalf { bdf: f, index: 5 }));
        c.set(f, offset(2), 0x6);
        c.mask(f, offset(2), 0xffff_f000);
        assert_eq!(probe(&mut c, f, 2, 6), Err(DecodeError::ReservedType { bdf: f, index: 2 }));
        assert_eq!(c.get(f, offset(2)), 6, "restored even on error");
    }
}
