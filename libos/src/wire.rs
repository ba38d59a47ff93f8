//! Little-endian field access for checked wire views, the one accessor module every codec uses.
//!
//! A codec follows smoltcp's `wire/` idiom: a view `Packet<T: AsRef<[u8]>>` with `new_unchecked`, `new_checked`
//! (whose `check_len` proves that no accessor can panic), field ranges in a private `mod field { pub const LEN:
//! Field = 4..8; }`, one getter (and for emitters a setter) per field built on the functions here, and an owned
//! `Repr` with `parse(&view)` / `emit(&mut view)`. All fields of the hypervisor and device ABIs Zirvium speaks
//! (VMBus, NVSP, RNDIS, vstor, Xen rings, ACPI, NVMe, virtio) are little-endian; SCSI CDBs are big-endian and
//! use the `_be` functions.
//!
//! The readers and writers index the buffer with the field's range: a range outside the buffer panics, which a
//! view's `check_len` rules out before any accessor runs.
#![forbid(unsafe_code)]

use core::fmt;
use core::ops::{Range, RangeFrom};

/// A fixed field: its byte range within the structure.
pub type Field = Range<usize>;
/// A variable-length tail: everything from an offset on.
pub type Rest = RangeFrom<usize>;

/// The `N` bytes of `f` as an array; `f` must be `N` bytes long and inside `b`.
fn array<const N: usize>(b: &[u8], f: Field) -> [u8; N] {
    let s = &b[f];
    core::array::from_fn(|i| s[i])
}

/// The byte at `f.start`.
pub fn read_u8(b: &[u8], f: Field) -> u8 {
    b[f.start]
}

/// A little-endian `u16` from the 2 bytes of `f`.
pub fn read_u16(b: &[u8], f: Field) -> u16 {
    u16::from_le_bytes(array(b, f))
}

/// A little-endian `u32` from the 4 bytes of `f`.
pub fn read_u32(b: &[u8], f: Field) -> u32 {
    u32::from_le_bytes(array(b, f))
}

/// A little-endian `u64` from the 8 bytes of `f`.
pub fn read_u64(b: &[u8], f: Field) -> u64 {
    u64::from_le_bytes(array(b, f))
}

/// A big-endian `u16` from the 2 bytes of `f` (SCSI CDBs and sense data).
pub fn read_u16_be(b: &[u8], f: Field) -> u16 {
    u16::from_be_bytes(array(b, f))
}

/// A big-endian `u32` from the 4 bytes of `f` (SCSI CDBs and sense data).
pub fn read_u32_be(b: &[u8], f: Field) -> u32 {
    u32::from_be_bytes(array(b, f))
}

/// A big-endian `u64` from the 8 bytes of `f` (SCSI CDBs and sense data).
pub fn read_u64_be(b: &[u8], f: Field) -> u64 {
    u64::from_be_bytes(array(b, f))
}

/// Writes `v` at `f.start`.
pub fn write_u8(b: &mut [u8], f: Field, v: u8) {
    b[f.start] = v;
}

/// Writes `v` little-endian into the 2 bytes of `f`.
pub fn write_u16(b: &mut [u8], f: Field, v: u16) {
    b[f].copy_from_slice(&v.to_le_bytes());
}

/// Writes `v` little-endian into the 4 bytes of `f`.
pub fn write_u32(b: &mut [u8], f: Field, v: u32) {
    b[f].copy_from_slice(&v.to_le_bytes());
}

/// Writes `v` little-endian into the 8 bytes of `f`.
pub fn write_u64(b: &mut [u8], f: Field, v: u64) {
    b[f].copy_from_slice(&v.to_le_bytes());
}

/// Writes `v` big-endian into the 2 bytes of `f`.
pub fn write_u16_be(b: &mut [u8], f: Field, v: u16) {
    b[f].copy_from_slice(&v.to_be_bytes());
}

/// Writes `v` big-endian into the 4 bytes of `f`.
pub fn write_u32_be(b: &mut [u8], f: Field, v: u32) {
    b[f].copy_from_slice(&v.to_be_bytes());
}

/// Writes `v` big-endian into the 8 bytes of `f`.
pub fn write_u64_be(b: &mut [u8], f: Field, v: u64) {
    b[f].copy_from_slice(&v.to_be_bytes());
}

/// The end of `f`, for `check_len`: the smallest buffer length that holds the field.
pub const fn end(f: Field) -> usize {
    f.end
}

/// A little-endian `u32` at byte `at` of `b`, `None` when `b` is too short: for unchecked input where a view
/// would be overkill (one field of a table header).
pub fn get_u32(b: &[u8], at: usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    (end <= b.len()).then(|| read_u32(b, at..end))
}

/// A little-endian `u64` at byte `at` of `b`, `None` when `b` is too short.
pub fn get_u64(b: &[u8], at: usize) -> Option<u64> {
    let end = at.checked_add(8)?;
    (end <= b.len()).then(|| read_u64(b, at..end))
}

/// A GUID in its 16-byte wire form: RFC 4122's fields with the first three little-endian — the Microsoft layout
/// VMBus (`guid_t`) and UEFI (Specification 2.10 Appendix A; GPT type and partition GUIDs) use.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Builds the wire form of `{d1-d2-d3-d4[0..2]-d4[2..8]}` (`GUID_INIT`: `d1`, `d2`, `d3` little-endian).
    pub const fn new(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Self {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Self([a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5], d4[6], d4[7]])
    }

    /// The wire bytes.
    pub fn bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for Guid {
    /// Lower-case registry form, e.g. `f8615163-df3e-46c5-913f-f2d2f965ed0e`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]]),
            b[8],
            b[9],
            b[10],
            b[11],
            b[12],
            b[13],
            b[14],
            b[15]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{self}}}")
    }
}

/// The 16 bytes of `f` as a [`Guid`]; `f` must be 16 bytes long and inside `b`.
pub fn read_guid(b: &[u8], f: Field) -> Guid {
    Guid(array(b, f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_both_byte_orders() {
        let mut b = [0u8; 16];
        write_u16(&mut b, 0..2, 0x1234);
        write_u32(&mut b, 2..6, 0xdead_beef);
        write_u64(&mut b, 6..14, 0x0102_0304_0506_0708);
        write_u8(&mut b, 14..15, 0xaa);
        assert_eq!(&b[..2], &[0x34, 0x12]);
        assert_eq!(read_u16(&b, 0..2), 0x1234);
        assert_eq!(read_u32(&b, 2..6), 0xdead_beef);
        assert_eq!(read_u64(&b, 6..14), 0x0102_0304_0506_0708);
        assert_eq!(read_u8(&b, 14..15), 0xaa);
        write_u32_be(&mut b, 0..4, 0x0a0b_0c0d);
        assert_eq!(&b[..4], &[0x0a, 0x0b, 0x0c, 0x0d]);
        assert_eq!(read_u32_be(&b, 0..4), 0x0a0b_0c0d);
        write_u16_be(&mut b, 4..6, 0x0102);
        assert_eq!(read_u16_be(&b, 4..6), 0x0102);
        write_u64_be(&mut b, 8..16, 7);
        assert_eq!(read_u64_be(&b, 8..16), 7);
    }

    #[test]
    fn guid_wire_order_and_text() {
        let g = Guid::new(0xc12a_7328, 0xf81f, 0x11d2, [0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b]);
        assert_eq!(&g.bytes()[..8], &[0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11]);
        assert_eq!(
            alloc::format!("{g} {g:?}"),
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93b {c12a7328-f81f-11d2-ba4b-00a0c93ec93b}"
        );
        let mut b = [0u8; 20];
        b[2..18].copy_from_slice(g.bytes());
        assert_eq!(read_guid(&b, 2..18), g);
    }

    #[test]
    fn get_refuses_short_buffers() {
        let b = [1u8, 0, 0, 0, 2, 0, 0];
        assert_eq!(get_u32(&b, 0), Some(1));
        assert_eq!(get_u32(&b, 4), None);
        assert_eq!(get_u32(&b, usize::MAX), None);
        assert_eq!(get_u64(&b, 0), None);
        assert_eq!(end(4..8), 8);
    }
}
