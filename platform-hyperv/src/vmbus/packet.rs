//! VMBus packets as they sit in a ring buffer: the 16-byte `vmpacket_descriptor` (type, data offset and total
//! length in 8-byte units, flags, transaction id), followed by type-specific headers (transfer-page ranges,
//! GPA-direct ranges) and the payload at `offset8 * 8`. Source: Linux `include/linux/hyperv.h`
//! (`struct vmpacket_descriptor`, `vmtransfer_page_packet_header`, `vmtransfer_page_range`, `vmdata_gpa_direct`,
//! `struct gpa_range`, `enum vmbus_packet_type`).
//!
//! [`DescriptorView`] is the checked view of the descriptor (field ranges in a private `mod field`),
//! [`Descriptor`] its owned form; [`Packet`] a whole packet copied out of a ring and checked, with accessors
//! for the type-specific headers.
#![forbid(unsafe_code)]

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use libos::wire::{read_u16, read_u32, read_u64, write_u16, write_u32, write_u64, Field};

mod field {
    use super::Field;

    /// `vmpacket_descriptor`.
    pub const TYPE: Field = 0..2;
    pub const OFFSET8: Field = 2..4;
    pub const LEN8: Field = 4..6;
    pub const FLAGS: Field = 6..8;
    pub const TRANS_ID: Field = 8..16;

    /// `vmtransfer_page_packet_header` after the descriptor (`sender_owns_set` and a reserved byte follow the id).
    pub const XFER_PAGESET_ID: Field = 16..18;
    /// `range_cnt` of a transfer-page packet, `rangecount` of a GPA-direct one (after a reserved u32).
    pub const RANGE_COUNT: Field = 20..24;
    /// Where the ranges of both packet types start.
    pub const RANGES: usize = 24;

    /// `vmtransfer_page_range`, relative to the range.
    pub const XFER_BYTE_COUNT: Field = 0..4;
    pub const XFER_BYTE_OFFSET: Field = 4..8;
    pub const XFER_RANGE_LEN: usize = 8;

    /// `gpa_range` header, relative to the range; the PFNs (u64 each) follow.
    pub const GPA_BYTE_COUNT: Field = 0..4;
    pub const GPA_BYTE_OFFSET: Field = 4..8;
    pub const GPA_PFNS: usize = 8;
}

/// Size of `vmpacket_descriptor` (bytes).
pub const DESC_LEN: usize = field::TRANS_ID.end;
/// `VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED`: the receiver must answer with a completion packet.
pub const FLAG_COMPLETION_REQUESTED: u16 = 1;

/// `enum vmbus_packet_type` values used here.
pub mod ty {
    /// VM_PKT_DATA_INBAND: payload in the ring.
    pub const DATA_INBAND: u16 = 0x6;
    /// VM_PKT_DATA_USING_XFER_PAGES: payload in a transfer page set (netvsc receive buffer ranges).
    pub const DATA_USING_XFER_PAGES: u16 = 0x7;
    /// VM_PKT_DATA_USING_GPA_DIRECT: payload plus guest page ranges the host reads or writes.
    pub const DATA_USING_GPA_DIRECT: u16 = 0x9;
    /// VM_PKT_COMP: completion of a packet that requested one.
    pub const COMP: u16 = 0xb;
}

/// Why a packet is malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PacketError {
    /// The packet is shorter than its headers claim (bytes).
    Truncated {
        /// The part that is short, e.g. "descriptor".
        what: &'static str,
        /// Bytes available.
        len: usize,
        /// Bytes that part needs.
        need: usize,
    },
    /// `offset8 * 8` lies outside `[16, len8 * 8]` or `len8 * 8` exceeds the bytes read.
    BadOffset {
        /// `offset8 * 8` (bytes).
        offset: usize,
        /// Bytes of the packet.
        len: usize,
    },
    /// A header field has an impossible value.
    BadField {
        /// The field, e.g. "range_cnt".
        field: &'static str,
        /// Its value.
        value: u64,
    },
}

impl fmt::Display for PacketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { what, len, need } => {
                write!(f, "vmbus packet: {what} needs {need} bytes, packet has {len}")
            }
            Self::BadOffset { offset, len } => {
                write!(f, "vmbus packet: data offset {offset} outside packet of {len} bytes")
            }
            Self::BadField { field, value } => write!(f, "vmbus packet: bad {field} {value:#x}"),
        }
    }
}

/// A checked view of a packet descriptor (`vmpacket_descriptor`) at the start of a buffer.
#[derive(Debug, Clone, Copy)]
pub struct DescriptorView<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> DescriptorView<T> {
    /// Wraps `buffer` without checks (accessors may panic on a short buffer).
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after checking it holds a descriptor. Errors: [`PacketError::Truncated`].
    pub fn new_checked(buffer: T) -> Result<Self, PacketError> {
        let len = buffer.as_ref().len();
        if len < DESC_LEN {
            return Err(PacketError::Truncated { what: "descriptor", len, need: DESC_LEN });
        }
        Ok(Self::new_unchecked(buffer))
    }

    /// `type` ([`ty`]).
    pub fn packet_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::TYPE)
    }

    /// `offset8`: where the payload starts (8-byte units).
    pub fn offset8(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::OFFSET8)
    }

    /// `len8`: the packet's length without the ring trailer (8-byte units).
    pub fn len8(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LEN8)
    }

    /// `flags`.
    pub fn flags(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::FLAGS)
    }

    /// `trans_id`.
    pub fn trans_id(&self) -> u64 {
        read_u64(self.buffer.as_ref(), field::TRANS_ID)
    }
}

/// A packet descriptor's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// Packet type ([`ty`]).
    pub ty: u16,
    /// Offset of the payload (8-byte units).
    pub offset8: u16,
    /// Total packet length without the 8-byte ring trailer (8-byte units).
    pub len8: u16,
    /// Flags ([`FLAG_COMPLETION_REQUESTED`]).
    pub flags: u16,
    /// Transaction id: echoed in the completion.
    pub trans_id: u64,
}

impl Descriptor {
    /// Reads the descriptor from a checked view.
    pub fn parse<T: AsRef<[u8]>>(v: &DescriptorView<T>) -> Self {
        Self { ty: v.packet_type(), offset8: v.offset8(), len8: v.len8(), flags: v.flags(), trans_id: v.trans_id() }
    }

    /// Encodes the descriptor.
    pub fn emit(&self) -> [u8; DESC_LEN] {
        let mut b = [0u8; DESC_LEN];
        write_u16(&mut b, field::TYPE, self.ty);
        write_u16(&mut b, field::OFFSET8, self.offset8);
        write_u16(&mut b, field::LEN8, self.len8);
        write_u16(&mut b, field::FLAGS, self.flags);
        write_u64(&mut b, field::TRANS_ID, self.trans_id);
        b
    }
}

/// A received packet, copied out of the ring (the host cannot change it after the checks).
#[derive(Clone, PartialEq, Eq)]
pub struct Packet {
    /// The descriptor.
    pub desc: Descriptor,
    /// The whole packet (`len8 * 8` bytes), descriptor included.
    pub raw: Vec<u8>,
}

impl fmt::Debug for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Packet {{ {:?}, {} bytes }}", self.desc, self.raw.len())
    }
}

impl Packet {
    /// Checks a packet read from a ring: `raw` holds `len8 * 8` bytes, the payload offset lies inside.
    /// Errors: [`PacketError`].
    pub fn new_checked(raw: Vec<u8>) -> Result<Self, PacketError> {
        let desc = Descriptor::parse(&DescriptorView::new_checked(&raw[..])?);
        let len = desc.len8 as usize * 8;
        let off = desc.offset8 as usize * 8;
        if len != raw.len() || off < DESC_LEN || off > len {
            return Err(PacketError::BadOffset { offset: off, len: raw.len() });
        }
        Ok(Self { desc, raw })
    }

    /// The payload: bytes from `offset8 * 8` to the end (may include trailing padding).
    pub fn payload(&self) -> &[u8] {
        &self.raw[self.payload_offset()..]
    }

    fn payload_offset(&self) -> usize {
        self.desc.offset8 as usize * 8
    }

    /// The bytes between the descriptor and the payload holding a type-specific header with ranges, after
    /// checking they hold the header up to the range count. Errors: [`PacketError::Truncated`].
    fn ranges_header(&self, what: &'static str) -> Result<&[u8], PacketError> {
        let off = self.payload_offset();
        if off < field::RANGES {
            return Err(PacketError::Truncated { what, len: off, need: field::RANGES });
        }
        Ok(&self.raw[..off])
    }

    /// The transfer-page ranges of a `VM_PKT_DATA_USING_XFER_PAGES` packet (`vmtransfer_page_packet_header`):
    /// `(xfer_pageset_id, [(byte_offset, byte_count)])`. Errors: [`PacketError`] when the ranges do not fit before
    /// the payload offset.
    pub fn transfer_ranges(&self) -> Result<(u16, Vec<(u32, u32)>), PacketError> {
        let b = self.ranges_header("transfer page header")?;
        let set = read_u16(b, field::XFER_PAGESET_ID);
        let count = read_u32(b, field::RANGE_COUNT) as usize;
        let need = count.checked_mul(field::XFER_RANGE_LEN).and_then(|n| n.checked_add(field::RANGES));
        if need.is_none_or(|n| n > b.len()) {
            return Err(PacketError::BadField { field: "range_cnt", value: count as u64 });
        }
        let ranges = b[field::RANGES..]
            .chunks_exact(field::XFER_RANGE_LEN)
            .take(count)
            .map(|r| (read_u32(r, field::XFER_BYTE_OFFSET), read_u32(r, field::XFER_BYTE_COUNT)))
            .collect();
        Ok((set, ranges))
    }

    /// The GPA ranges of a `VM_PKT_DATA_USING_GPA_DIRECT` packet (`vmdata_gpa_direct`): each `(len, offset, pfns)`.
    /// Errors: [`PacketError`] when a range's PFN list runs past the payload offset.
    pub fn gpa_ranges(&self) -> Result<Vec<GpaRange>, PacketError> {
        let b = self.ranges_header("gpa direct header")?;
        let count = read_u32(b, field::RANGE_COUNT) as usize;
        let mut pos = field::RANGES;
        let mut out = Vec::new();
        for _ in 0..count {
            if pos + field::GPA_PFNS > b.len() {
                return Err(PacketError::BadField { field: "rangecount", value: count as u64 });
            }
            let r = &b[pos..];
            let len = read_u32(r, field::GPA_BYTE_COUNT);
            let offset = read_u32(r, field::GPA_BYTE_OFFSET);
            let pages = GpaRange::pages_for(offset, len);
            pos += field::GPA_PFNS;
            if pos + pages * 8 > b.len() {
                return Err(PacketError::BadField { field: "gpa range length", value: len.into() });
            }
            let pfns = b[pos..pos + pages * 8].chunks_exact(8).map(|p| read_u64(p, 0..8)).collect();
            pos += pages * 8;
            out.push(GpaRange { len, offset, pfns });
        }
        Ok(out)
    }
}

/// A guest buffer described by page frame numbers (`gpa_range` / `hv_mpb_array`): `len` bytes starting `offset`
/// bytes into the first page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpaRange {
    /// Length (bytes).
    pub len: u32,
    /// Offset into the first page (bytes, < 4096).
    pub offset: u32,
    /// Page frame numbers.
    pub pfns: Vec<u64>,
}

impl GpaRange {
    /// Number of pages `len` bytes at `offset` touch.
    pub fn pages_for(offset: u32, len: u32) -> usize {
        ((u64::from(offset % 4096) + u64::from(len)).div_ceil(4096)) as usize
    }
}

fn round8(n: usize) -> usize {
    (n + 7) & !7
}

/// Builds an in-band packet (`VM_PKT_DATA_INBAND`) carrying `payload`, padded to 8 bytes. `None` when the packet
/// exceeds the 16-bit `len8` field (512 KiB).
pub fn inband(trans_id: u64, flags: u16, payload: &[u8]) -> Option<Vec<u8>> {
    build(ty::DATA_INBAND, trans_id, flags, &[], payload)
}

/// Builds a completion packet (`VM_PKT_COMP`) for `trans_id`.
pub fn completion(trans_id: u64, payload: &[u8]) -> Option<Vec<u8>> {
    build(ty::COMP, trans_id, 0, &[], payload)
}

/// Builds a `VM_PKT_DATA_USING_GPA_DIRECT` packet: descriptor, reserved u32, range count u32, the ranges, then
/// `payload` (Linux `vmbus_sendpacket_mpb_desc` / `vmbus_sendpacket_pagebuffer`).
pub fn gpa_direct(trans_id: u64, flags: u16, ranges: &[GpaRange], payload: &[u8]) -> Option<Vec<u8>> {
    let len = ranges.iter().map(|r| field::GPA_PFNS + 8 * r.pfns.len()).sum::<usize>();
    let mut hdr = vec![0u8; field::RANGES - DESC_LEN + len];
    let at = |f: Field| f.start - DESC_LEN..f.end - DESC_LEN;
    write_u32(&mut hdr, at(field::RANGE_COUNT), ranges.len() as u32);
    let mut pos = field::RANGES - DESC_LEN;
    for r in ranges {
        let d = &mut hdr[pos..];
        write_u32(d, field::GPA_BYTE_COUNT, r.len);
        write_u32(d, field::GPA_BYTE_OFFSET, r.offset);
        for (i, p) in r.pfns.iter().enumerate() {
            let o = field::GPA_PFNS + i * 8;
            write_u64(d, o..o + 8, *p);
        }
        pos += field::GPA_PFNS + 8 * r.pfns.len();
    }
    build(ty::DATA_USING_GPA_DIRECT, trans_id, flags, &hdr, payload)
}

/// Builds a `VM_PKT_DATA_USING_XFER_PAGES` packet (what a host sends, so built for tests and host models only): set
/// id, ranges as `(byte_offset, byte_count)`, then `payload`.
#[cfg(any(test, feature = "host-model"))]
pub fn transfer_pages(trans_id: u64, flags: u16, set: u16, ranges: &[(u32, u32)], payload: &[u8]) -> Option<Vec<u8>> {
    let mut hdr = vec![0u8; field::RANGES - DESC_LEN + ranges.len() * field::XFER_RANGE_LEN];
    let at = |f: Field| f.start - DESC_LEN..f.end - DESC_LEN;
    write_u16(&mut hdr, at(field::XFER_PAGESET_ID), set);
    write_u32(&mut hdr, at(field::RANGE_COUNT), ranges.len() as u32);
    for (i, (off, count)) in ranges.iter().enumerate() {
        let d = &mut hdr[field::RANGES - DESC_LEN + i * field::XFER_RANGE_LEN..];
        write_u32(d, field::XFER_BYTE_COUNT, *count);
        write_u32(d, field::XFER_BYTE_OFFSET, *off);
    }
    build(ty::DATA_USING_XFER_PAGES, trans_id, flags, &hdr, payload)
}

fn build(ty: u16, trans_id: u64, flags: u16, extra: &[u8], payload: &[u8]) -> Option<Vec<u8>> {
    let off = round8(DESC_LEN + extra.len());
    let len = round8(off + payload.len());
    let d =
        Descriptor { ty, offset8: u16::try_from(off / 8).ok()?, len8: u16::try_from(len / 8).ok()?, flags, trans_id };
    let mut b = vec![0u8; len];
    b[..DESC_LEN].copy_from_slice(&d.emit());
    b[DESC_LEN..DESC_LEN + extra.len()].copy_from_slice(extra);
    b[off..off + payload.len()].copy_from_slice(payload);
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inband_layout() {
        let p = inband(0x1234, FLAG_COMPLETION_REQUESTED, &[1, 2, 3]).unwrap();
        assert_eq!(p.len(), 24);
        assert_eq!(&p[..8], &[6, 0, 2, 0, 3, 0, 1, 0]);
        let pk = Packet::new_checked(p).unwrap();
        assert_eq!(pk.desc.trans_id, 0x1234);
        assert_eq!(&pk.payload()[..3], &[1, 2, 3]);
        assert!(inband(0, 0, &vec![0; 600 * 1024]).is_none());
    }

    #[test]
    fn gpa_direct_round_trip() {
        let r = GpaRange { len: 8192, offset: 0, pfns: vec![0x100, 0x101] };
        let p = gpa_direct(7, FLAG_COMPLETION_REQUESTED, core::slice::from_ref(&r), &[9; 20]).unwrap();
        let pk = Packet::new_checked(p).unwrap();
        assert_eq!(pk.desc.ty, ty::DATA_USING_GPA_DIRECT);
        assert_eq!(pk.desc.offset8 as usize * 8, 16 + 8 + 8 + 16);
        assert_eq!(pk.gpa_ranges().unwrap(), vec![r]);
        assert_eq!(&pk.payload()[..20], &[9; 20]);
        assert_eq!(GpaRange::pages_for(4095, 2), 2);
        assert_eq!(GpaRange::pages_for(0, 4096), 1);
    }

    #[test]
    fn transfer_ranges_round_trip_and_hostile_counts() {
        let p = transfer_pages(3, 0, 0xcafe, &[(0, 100), (4096, 60)], &[107, 0, 0, 0]).unwrap();
        let pk = Packet::new_checked(p.clone()).unwrap();
        assert_eq!(pk.transfer_ranges().unwrap(), (0xcafe, vec![(0, 100), (4096, 60)]));
        let mut bad = p;
        bad[20..24].copy_from_slice(&1000u32.to_le_bytes());
        let pk = Packet::new_checked(bad).unwrap();
        assert_eq!(pk.transfer_ranges(), Err(PacketError::BadField { field: "range_cnt", value: 1000 }));
    }

    #[test]
    fn descriptor_round_trips() {
        let d = Descriptor { ty: ty::COMP, offset8: 2, len8: 5, flags: 1, trans_id: 0x1122_3344_5566_7788 };
        let b = d.emit();
        assert_eq!(&b[..8], &[0xb, 0, 2, 0, 5, 0, 1, 0]);
        let v = DescriptorView::new_checked(&b[..]).unwrap();
        assert_eq!(Descriptor::parse(&v), d);
        assert_eq!(Descriptor::parse(&v).emit(), b);
        assert_eq!(
            DescriptorView::new_checked(&b[..15]).unwrap_err(),
            PacketError::Truncated { what: "descriptor", len: 15, need: 16 }
        );
    }

    #[test]
    fn hostile_gpa_ranges_are_rejected() {
        let r = GpaRange { len: 8192, offset: 0, pfns: vec![0x100, 0x101] };
        let p = gpa_direct(7, 0, core::slice::from_ref(&r), &[9; 8]).unwrap();
        let mut bad = p.clone();
        bad[20..24].copy_from_slice(&3u32.to_le_bytes()); // more ranges than the header holds
        let pk = Packet::new_checked(bad).unwrap();
        assert_eq!(pk.gpa_ranges(), Err(PacketError::BadField { field: "rangecount", value: 3 }));
        let mut bad = p;
        bad[24..28].copy_from_slice(&0x10_0000u32.to_le_bytes()); // a range longer than its PFN list
        let pk = Packet::new_checked(bad).unwrap();
        assert_eq!(pk.gpa_ranges(), Err(PacketError::BadField { field: "gpa range length", value: 0x10_0000 }));
        let short = Packet::new_checked(inband(1, 0, &[0; 8]).unwrap()).unwrap();
        assert!(matches!(short.gpa_ranges(), Err(PacketError::Truncated { .. })));
        assert!(matches!(short.transfer_ranges(), Err(PacketError::Truncated { .. })));
    }

    #[test]
    fn bad_offsets_are_rejected() {
        let mut p = inband(1, 0, &[0; 8]).unwrap();
        p[2] = 1; // offset8 = 1: inside the descriptor
        assert!(matches!(Packet::new_checked(p.clone()), Err(PacketError::BadOffset { offset: 8, .. })));
        p[2] = 200;
        assert!(matches!(Packet::new_checked(p.clone()), Err(PacketError::BadOffset { .. })));
        assert!(Packet::new_checked(vec![0; 8]).is_err());
    }
}
