//! VMBus packets as they sit in a ring buffer: the 16-byte `vmpacket_descriptor` (type, data offset and total
//! length in 8-byte units, flags, transaction id), followed by type-specific headers (transfer-page ranges,
//! GPA-direct ranges) and the payload at `offset8 * 8`. Source: Linux `include/linux/hyperv.h`
//! (`struct vmpacket_descriptor`, `vmtransfer_page_packet_header`, `vmdata_gpa_direct`, `enum vmbus_packet_type`).

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// Size of `vmpacket_descriptor` (bytes).
pub const DESC_LEN: usize = 16;
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
    Truncated { what: &'static str, len: usize, need: usize },
    /// `offset8 * 8` lies outside `[16, len8 * 8]` or `len8 * 8` exceeds the bytes read.
    BadOffset { offset: usize, len: usize },
    /// A header field has an impossible value.
    BadField { field: &'static str, value: u64 },
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
    /// Parses the first 16 bytes of `b` (length checked by the caller).
    pub fn parse(b: &[u8; DESC_LEN]) -> Self {
        Self {
            ty: u16::from_le_bytes([b[0], b[1]]),
            offset8: u16::from_le_bytes([b[2], b[3]]),
            len8: u16::from_le_bytes([b[4], b[5]]),
            flags: u16::from_le_bytes([b[6], b[7]]),
            trans_id: u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
        }
    }

    /// Encodes the descriptor.
    pub fn emit(&self) -> [u8; DESC_LEN] {
        let mut b = [0u8; DESC_LEN];
        b[0..2].copy_from_slice(&self.ty.to_le_bytes());
        b[2..4].copy_from_slice(&self.offset8.to_le_bytes());
        b[4..6].copy_from_slice(&self.len8.to_le_bytes());
        b[6..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..16].copy_from_slice(&self.trans_id.to_le_bytes());
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
        if raw.len() < DESC_LEN {
            return Err(PacketError::Truncated { what: "descriptor", len: raw.len(), need: DESC_LEN });
        }
        let mut d = [0u8; DESC_LEN];
        d.copy_from_slice(&raw[..DESC_LEN]);
        let desc = Descriptor::parse(&d);
        let len = desc.len8 as usize * 8;
        let off = desc.offset8 as usize * 8;
        if len != raw.len() || off < DESC_LEN || off > len {
            return Err(PacketError::BadOffset { offset: off, len: raw.len() });
        }
        Ok(Self { desc, raw })
    }

    /// The payload: bytes from `offset8 * 8` to the end (may include trailing padding).
    pub fn payload(&self) -> &[u8] {
        &self.raw[self.desc.offset8 as usize * 8..]
    }

    /// The transfer-page ranges of a `VM_PKT_DATA_USING_XFER_PAGES` packet (`vmtransfer_page_packet_header`):
    /// `(xfer_pageset_id, [(byte_offset, byte_count)])`. Errors: [`PacketError`] when the ranges do not fit before
    /// the payload offset.
    pub fn transfer_ranges(&self) -> Result<(u16, Vec<(u32, u32)>), PacketError> {
        let b = &self.raw;
        let off = self.desc.offset8 as usize * 8;
        if off < 24 {
            return Err(PacketError::Truncated { what: "transfer page header", len: off, need: 24 });
        }
        let set = u16::from_le_bytes([b[16], b[17]]);
        let count = u32::from_le_bytes([b[20], b[21], b[22], b[23]]) as usize;
        let need = count.checked_mul(8).and_then(|n| n.checked_add(24)).unwrap_or(usize::MAX);
        if need > off {
            return Err(PacketError::BadField { field: "range_cnt", value: count as u64 });
        }
        let ranges = (0..count)
            .map(|i| {
                let p = 24 + i * 8;
                let byte_count = u32::from_le_bytes([b[p], b[p + 1], b[p + 2], b[p + 3]]);
                let byte_offset = u32::from_le_bytes([b[p + 4], b[p + 5], b[p + 6], b[p + 7]]);
                (byte_offset, byte_count)
            })
            .collect();
        Ok((set, ranges))
    }

    /// The GPA ranges of a `VM_PKT_DATA_USING_GPA_DIRECT` packet (`vmdata_gpa_direct`): each `(len, offset, pfns)`.
    /// Errors: [`PacketError`] when a range's PFN list runs past the payload offset.
    pub fn gpa_ranges(&self) -> Result<Vec<GpaRange>, PacketError> {
        let b = &self.raw;
        let off = self.desc.offset8 as usize * 8;
        if off < 24 {
            return Err(PacketError::Truncated { what: "gpa direct header", len: off, need: 24 });
        }
        let count = u32::from_le_bytes([b[20], b[21], b[22], b[23]]) as usize;
        let mut pos = 24;
        let mut out = Vec::new();
        for _ in 0..count {
            if pos + 8 > off {
                return Err(PacketError::BadField { field: "rangecount", value: count as u64 });
            }
            let len = u32::from_le_bytes([b[pos], b[pos + 1], b[pos + 2], b[pos + 3]]);
            let offset = u32::from_le_bytes([b[pos + 4], b[pos + 5], b[pos + 6], b[pos + 7]]);
            let pages = GpaRange::pages_for(offset, len);
            pos += 8;
            if pos + pages * 8 > off {
                return Err(PacketError::BadField { field: "gpa range length", value: len.into() });
            }
            let pfns = (0..pages)
                .map(|i| {
                    let p = pos + i * 8;
                    let mut x = [0u8; 8];
                    x.copy_from_slice(&b[p..p + 8]);
                    u64::from_le_bytes(x)
                })
                .collect();
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
    let mut hdr = Vec::new();
    hdr.extend_from_slice(&0u32.to_le_bytes());
    hdr.extend_from_slice(&(ranges.len() as u32).to_le_bytes());
    for r in ranges {
        hdr.extend_from_slice(&r.len.to_le_bytes());
        hdr.extend_from_slice(&r.offset.to_le_bytes());
        for p in &r.pfns {
            hdr.extend_from_slice(&p.to_le_bytes());
        }
    }
    build(ty::DATA_USING_GPA_DIRECT, trans_id, flags, &hdr, payload)
}

/// Builds a `VM_PKT_DATA_USING_XFER_PAGES` packet (what a host sends; used by test peers): set id, ranges as
/// `(byte_offset, byte_count)`, then `payload`.
pub fn transfer_pages(trans_id: u64, flags: u16, set: u16, ranges: &[(u32, u32)], payload: &[u8]) -> Option<Vec<u8>> {
    let mut hdr = Vec::new();
    hdr.extend_from_slice(&set.to_le_bytes());
    hdr.push(0);
    hdr.push(0);
    hdr.extend_from_slice(&(ranges.len() as u32).to_le_bytes());
    for (off, count) in ranges {
        hdr.extend_from_slice(&count.to_le_bytes());
        hdr.extend_from_slice(&off.to_le_bytes());
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
    fn bad_offsets_are_rejected() {
        let mut p = inband(1, 0, &[0; 8]).unwrap();
        p[2] = 1; // offset8 = 1: inside the descriptor
        assert!(matches!(Packet::new_checked(p.clone()), Err(PacketError::BadOffset { offset: 8, .. })));
        p[2] = 200;
        assert!(matches!(Packet::new_checked(p.clone()), Err(PacketError::BadOffset { .. })));
        assert!(Packet::new_checked(vec![0; 8]).is_err());
    }
}
