//! The MCFG table: after the header and 8 reserved bytes, one 16-byte allocation per PCI Express ECAM window
//! (base address, PCI segment group, start and end bus). Source: PCI Firmware Specification 3.3 §4.1.2 (MCFG,
//! Table 4-3 "Memory mapped configuration space base address allocation structure").
#![forbid(unsafe_code)]

use super::sdt::HEADER_LEN;
use super::Malformed;
use crate::wire;
use alloc::vec::Vec;

/// Offset of the first allocation in the table: the header, then 8 reserved bytes.
pub const ALLOCATIONS_START: usize = HEADER_LEN + 8;
/// Length of one allocation (bytes).
pub const ALLOCATION_LEN: usize = 16;

mod field {
    use crate::wire::Field;
    pub const BASE_ADDRESS: Field = 0..8;
    pub const SEGMENT: Field = 8..10;
    pub const START_BUS: Field = 10..11;
    pub const END_BUS: Field = 11..12;
    pub const RESERVED: Field = 12..16;
}

/// A checked view of one allocation structure.
#[derive(Debug, Clone, Copy)]
pub struct Allocation<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Allocation<T> {
    /// Wraps `buffer` without checks (accessors may panic on a short buffer).
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let a = Self::new_unchecked(buffer);
        a.check_len()?;
        Ok(a)
    }

    /// Checks that the buffer holds [`ALLOCATION_LEN`] bytes. Errors: [`Malformed::Truncated`].
    pub fn check_len(&self) -> Result<(), Malformed> {
        let len = self.buffer.as_ref().len();
        if len < ALLOCATION_LEN {
            return Err(Malformed::Truncated { len, need: ALLOCATION_LEN });
        }
        Ok(())
    }

    /// Base address of the enhanced configuration mechanism: where bus 0's configuration space would be.
    pub fn base_address(&self) -> u64 {
        wire::read_u64(self.buffer.as_ref(), field::BASE_ADDRESS)
    }

    /// PCI segment group number.
    pub fn segment(&self) -> u16 {
        wire::read_u16(self.buffer.as_ref(), field::SEGMENT)
    }

    /// Start bus number decoded by this host bridge.
    pub fn start_bus(&self) -> u8 {
        wire::read_u8(self.buffer.as_ref(), field::START_BUS)
    }

    /// End bus number decoded by this host bridge.
    pub fn end_bus(&self) -> u8 {
        wire::read_u8(self.buffer.as_ref(), field::END_BUS)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Allocation<T> {
    /// Sets the base address.
    pub fn set_base_address(&mut self, v: u64) {
        wire::write_u64(self.buffer.as_mut(), field::BASE_ADDRESS, v);
    }

    /// Sets the segment group.
    pub fn set_segment(&mut self, v: u16) {
        wire::write_u16(self.buffer.as_mut(), field::SEGMENT, v);
    }

    /// Sets the start bus.
    pub fn set_start_bus(&mut self, v: u8) {
        wire::write_u8(self.buffer.as_mut(), field::START_BUS, v);
    }

    /// Sets the end bus.
    pub fn set_end_bus(&mut self, v: u8) {
        wire::write_u8(self.buffer.as_mut(), field::END_BUS, v);
    }

    /// Zeroes the reserved bytes.
    pub fn clear_reserved(&mut self) {
        self.buffer.as_mut()[field::RESERVED].fill(0);
    }
}

/// One ECAM window, an allocation's contents: configuration space of buses `start_bus..=end_bus` of
/// `segment` at `base + (bus << 20 | device << 15 | function << 12)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EcamWindow {
    /// Physical address of bus 0's configuration space (bytes), even when `start_bus` > 0.
    pub base: u64,
    /// PCI segment group.
    pub segment: u16,
    /// First bus decoded.
    pub start_bus: u8,
    /// Last bus decoded.
    pub end_bus: u8,
}

impl EcamWindow {
    /// Parses a checked allocation. Errors: [`Malformed::Truncated`].
    pub fn parse<T: AsRef<[u8]>>(a: &Allocation<T>) -> Result<Self, Malformed> {
        a.check_len()?;
        Ok(Self { base: a.base_address(), segment: a.segment(), start_bus: a.start_bus(), end_bus: a.end_bus() })
    }

    /// Writes the allocation into `a` ([`ALLOCATION_LEN`] bytes).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, a: &mut Allocation<T>) {
        a.set_base_address(self.base);
        a.set_segment(self.segment);
        a.set_start_bus(self.start_bus);
        a.set_end_bus(self.end_bus);
        a.clear_reserved();
    }

    /// Bytes of configuration space the window maps: 1 MiB per bus from bus 0 up to `end_bus` (the base
    /// names bus 0 whatever `start_bus` is).
    pub fn size(&self) -> u64 {
        (u64::from(self.end_bus) + 1) << 20
    }
}

/// The ECAM windows of a whole MCFG table (checked by the caller): its allocations after
/// [`ALLOCATIONS_START`], without those whose `end_bus` is below `start_bus`. A table too short for any
/// allocation has none.
pub fn parse_mcfg(t: &[u8]) -> Vec<EcamWindow> {
    t.get(ALLOCATIONS_START..)
        .unwrap_or(&[])
        .chunks_exact(ALLOCATION_LEN)
        .filter_map(|e| EcamWindow::parse(&Allocation::new_unchecked(e)).ok())
        .filter(|w| w.end_bus >= w.start_bus)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_round_trip_and_short_buffer() {
        let w = EcamWindow { base: 0xB000_0000, segment: 1, start_bus: 0, end_bus: 0xff };
        let mut b = [0xeeu8; ALLOCATION_LEN];
        w.emit(&mut Allocation::new_unchecked(&mut b[..]));
        assert_eq!(b, [0, 0, 0, 0xb0, 0, 0, 0, 0, 1, 0, 0, 0xff, 0, 0, 0, 0]);
        assert_eq!(EcamWindow::parse(&Allocation::new_checked(&b[..]).unwrap()), Ok(w));
        assert_eq!(w.size(), 256 << 20);
        assert_eq!(Allocation::new_checked(&b[..15]).err(), Some(Malformed::Truncated { len: 15, need: 16 }));
    }
}
