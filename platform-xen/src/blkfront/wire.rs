//! blkif wire formats (x86_64 layout): the ring requests `blkif_request` (direct, up to 11 segments in the slot)
//! and `blkif_request_indirect` (segments in separately granted pages), the 8-byte `blkif_request_segment` (in
//! a direct request and in indirect pages), and `blkif_response`. Each is a checked view over bytes
//! ([`Request`], [`Segment`], [`Response`]) with an owned form that parses and emits it ([`RequestRepr`],
//! [`SegmentRepr`], [`ResponseRepr`]).
//! Source: Xen `xen/include/public/io/blkif.h` (`struct blkif_request`, `struct blkif_request_indirect`,
//! `struct blkif_request_segment`, `struct blkif_response`, `BLKIF_OP_*`, `BLKIF_RSP_*`,
//! `BLKIF_MAX_SEGMENTS_PER_REQUEST`, `BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST`).
#![forbid(unsafe_code)]

use crate::gnttab::GrantRef;
use crate::ring::slot::{self, ShortBuffer, SlotLayout, SlotView};
use crate::shared::PAGE_SIZE;
use alloc::vec::Vec;
use libos::wire::{read_u16, read_u32, read_u64, read_u8, write_u16, write_u32, write_u64, write_u8, Field};

/// Ring slot size (`blkif_request`, 112 bytes on x86_64; the response is smaller).
pub const SLOT: usize = 112;
/// Size of `struct blkif_request_segment` (bytes).
pub const SEGMENT_LEN: usize = 8;
/// Size of `struct blkif_response` (bytes).
pub const RESPONSE_LEN: usize = 16;
/// `BLKIF_OP_READ`.
pub const OP_READ: u8 = 0;
/// `BLKIF_OP_WRITE`.
pub const OP_WRITE: u8 = 1;
/// `BLKIF_OP_WRITE_BARRIER`.
pub const OP_WRITE_BARRIER: u8 = 2;
/// `BLKIF_OP_FLUSH_DISKCACHE`.
pub const OP_FLUSH_DISKCACHE: u8 = 3;
/// `BLKIF_OP_INDIRECT`.
pub const OP_INDIRECT: u8 = 6;
/// `BLKIF_MAX_SEGMENTS_PER_REQUEST`.
pub const MAX_SEGMENTS: usize = 11;
/// `BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST`.
pub const MAX_INDIRECT_PAGES: usize = 8;
/// Segments per indirect page (`PAGE_SIZE / sizeof(blkif_request_segment)`).
pub const SEGMENTS_PER_INDIRECT_PAGE: usize = PAGE_SIZE / SEGMENT_LEN;
/// `BLKIF_RSP_OKAY`.
pub const RSP_OKAY: i16 = 0;
/// `BLKIF_RSP_ERROR`.
pub const RSP_ERROR: i16 = -1;
/// `BLKIF_RSP_EOPNOTSUPP`.
pub const RSP_EOPNOTSUPP: i16 = -2;

/// Byte ranges of the blkif structures.
mod field {
    use libos::wire::Field;

    // struct blkif_request (and the fields blkif_request_indirect shares with it).
    pub const OPERATION: Field = 0..1;
    pub const NR_SEGMENTS: Field = 1..2;
    pub const HANDLE: Field = 2..4;
    pub const ID: Field = 8..16;
    pub const SECTOR_NUMBER: Field = 16..24;
    /// `seg[0]`; `seg[i]` follows at `i * SEGMENT_LEN`.
    pub const SEG: usize = 24;

    // struct blkif_request_indirect.
    pub const INDIRECT_OP: Field = 1..2;
    pub const INDIRECT_NR_SEGMENTS: Field = 2..4;
    pub const INDIRECT_HANDLE: Field = 24..26;
    /// `indirect_grefs[0]`; `indirect_grefs[i]` follows at `i * 4`.
    pub const INDIRECT_GREFS: usize = 28;

    // struct blkif_request_segment.
    pub const GREF: Field = 0..4;
    pub const FIRST_SECT: Field = 4..5;
    pub const LAST_SECT: Field = 5..6;

    // struct blkif_response.
    pub const RSP_ID: Field = 0..8;
    pub const RSP_OPERATION: Field = 8..9;
    pub const RSP_STATUS: Field = 10..12;
}

/// `seg[i]` of a direct request.
fn seg(i: usize) -> Field {
    let at = field::SEG + i * SEGMENT_LEN;
    at..at + SEGMENT_LEN
}

/// `indirect_grefs[i]` of an indirect request.
fn indirect_gref(i: usize) -> Field {
    let at = field::INDIRECT_GREFS + i * 4;
    at..at + 4
}

/// `struct blkif_request` (a [`SlotLayout`]).
#[derive(Clone, Copy, Debug)]
pub enum BlkifRequest {}

impl SlotLayout for BlkifRequest {
    const NAME: &'static str = "blkif_request";
    const LEN: usize = SLOT;
}

/// A checked view of a request slot: `struct blkif_request` or, when [`operation`](Self::operation) is
/// [`OP_INDIRECT`], `struct blkif_request_indirect`.
pub type Request<T> = SlotView<BlkifRequest, T>;

impl<T: AsRef<[u8]>> Request<T> {
    /// `operation` (`BLKIF_OP_*`).
    pub fn operation(&self) -> u8 {
        read_u8(self.bytes(), field::OPERATION)
    }
    /// Direct: `nr_segments`.
    pub fn nr_segments(&self) -> u8 {
        read_u8(self.bytes(), field::NR_SEGMENTS)
    }
    /// Direct: `handle` (the vdev).
    pub fn handle(&self) -> u16 {
        read_u16(self.bytes(), field::HANDLE)
    }
    /// `id`, echoed in the response.
    pub fn id(&self) -> u64 {
        read_u64(self.bytes(), field::ID)
    }
    /// `sector_number` (512-byte units).
    pub fn sector_number(&self) -> u64 {
        read_u64(self.bytes(), field::SECTOR_NUMBER)
    }
    /// Direct: `seg[i]` (`i` below [`MAX_SEGMENTS`]).
    pub fn segment(&self, i: usize) -> Segment<&[u8]> {
        Segment::new_unchecked(&self.bytes()[seg(i)])
    }
    /// Indirect: `indirect_op`, the operation the segments carry.
    pub fn indirect_op(&self) -> u8 {
        read_u8(self.bytes(), field::INDIRECT_OP)
    }
    /// Indirect: `nr_segments`.
    pub fn indirect_nr_segments(&self) -> u16 {
        read_u16(self.bytes(), field::INDIRECT_NR_SEGMENTS)
    }
    /// Indirect: `handle`.
    pub fn indirect_handle(&self) -> u16 {
        read_u16(self.bytes(), field::INDIRECT_HANDLE)
    }
    /// Indirect: `indirect_grefs[i]` (`i` below [`MAX_INDIRECT_PAGES`]).
    pub fn indirect_gref(&self, i: usize) -> GrantRef {
        GrantRef(read_u32(self.bytes(), indirect_gref(i)))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Request<T> {
    /// Sets `operation`.
    pub fn set_operation(&mut self, v: u8) {
        write_u8(self.bytes_mut(), field::OPERATION, v);
    }
    /// Direct: sets `nr_segments`.
    pub fn set_nr_segments(&mut self, v: u8) {
        write_u8(self.bytes_mut(), field::NR_SEGMENTS, v);
    }
    /// Direct: sets `handle`.
    pub fn set_handle(&mut self, v: u16) {
        write_u16(self.bytes_mut(), field::HANDLE, v);
    }
    /// Sets `id`.
    pub fn set_id(&mut self, v: u64) {
        write_u64(self.bytes_mut(), field::ID, v);
    }
    /// Sets `sector_number`.
    pub fn set_sector_number(&mut self, v: u64) {
        write_u64(self.bytes_mut(), field::SECTOR_NUMBER, v);
    }
    /// Direct: `seg[i]` for writing (`i` below [`MAX_SEGMENTS`]).
    pub fn segment_mut(&mut self, i: usize) -> Segment<&mut [u8]> {
        Segment::new_unchecked(&mut self.bytes_mut()[seg(i)])
    }
    /// Indirect: sets `indirect_op`.
    pub fn set_indirect_op(&mut self, v: u8) {
        write_u8(self.bytes_mut(), field::INDIRECT_OP, v);
    }
    /// Indirect: sets `nr_segments`.
    pub fn set_indirect_nr_segments(&mut self, v: u16) {
        write_u16(self.bytes_mut(), field::INDIRECT_NR_SEGMENTS, v);
    }
    /// Indirect: sets `handle`.
    pub fn set_indirect_handle(&mut self, v: u16) {
        write_u16(self.bytes_mut(), field::INDIRECT_HANDLE, v);
    }
    /// Indirect: sets `indirect_grefs[i]`.
    pub fn set_indirect_gref(&mut self, i: usize, v: GrantRef) {
        write_u32(self.bytes_mut(), indirect_gref(i), v.0);
    }
}

/// `struct blkif_request_segment` (a [`SlotLayout`]).
#[derive(Clone, Copy, Debug)]
pub enum BlkifRequestSegment {}

impl SlotLayout for BlkifRequestSegment {
    const NAME: &'static str = "blkif_request_segment";
    const LEN: usize = SEGMENT_LEN;
}

/// A checked view of a `struct blkif_request_segment`: one page of a transfer.
pub type Segment<T> = SlotView<BlkifRequestSegment, T>;

impl<T: AsRef<[u8]>> Segment<T> {
    /// `gref`: the grant of the page.
    pub fn gref(&self) -> GrantRef {
        GrantRef(read_u32(self.bytes(), field::GREF))
    }
    /// `first_sect`: first 512-byte sector in the page.
    pub fn first_sect(&self) -> u8 {
        read_u8(self.bytes(), field::FIRST_SECT)
    }
    /// `last_sect`: last 512-byte sector in the page, inclusive.
    pub fn last_sect(&self) -> u8 {
        read_u8(self.bytes(), field::LAST_SECT)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Segment<T> {
    /// Sets `gref`.
    pub fn set_gref(&mut self, v: GrantRef) {
        write_u32(self.bytes_mut(), field::GREF, v.0);
    }
    /// Sets `first_sect`.
    pub fn set_first_sect(&mut self, v: u8) {
        write_u8(self.bytes_mut(), field::FIRST_SECT, v);
    }
    /// Sets `last_sect`.
    pub fn set_last_sect(&mut self, v: u8) {
        write_u8(self.bytes_mut(), field::LAST_SECT, v);
    }
}

/// `struct blkif_response` (a [`SlotLayout`]).
#[derive(Clone, Copy, Debug)]
pub enum BlkifResponse {}

impl SlotLayout for BlkifResponse {
    const NAME: &'static str = "blkif_response";
    const LEN: usize = RESPONSE_LEN;
}

/// A checked view of a `struct blkif_response` (at the start of a ring slot).
pub type Response<T> = SlotView<BlkifResponse, T>;

impl<T: AsRef<[u8]>> Response<T> {
    /// `id` of the request answered.
    pub fn id(&self) -> u64 {
        read_u64(self.bytes(), field::RSP_ID)
    }
    /// `operation` of the request answered.
    pub fn operation(&self) -> u8 {
        read_u8(self.bytes(), field::RSP_OPERATION)
    }
    /// `status` (`BLKIF_RSP_*`).
    pub fn status(&self) -> i16 {
        read_u16(self.bytes(), field::RSP_STATUS) as i16
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Response<T> {
    /// Sets `id`.
    pub fn set_id(&mut self, v: u64) {
        write_u64(self.bytes_mut(), field::RSP_ID, v);
    }
    /// Sets `operation`.
    pub fn set_operation(&mut self, v: u8) {
        write_u8(self.bytes_mut(), field::RSP_OPERATION, v);
    }
    /// Sets `status`.
    pub fn set_status(&mut self, v: i16) {
        write_u16(self.bytes_mut(), field::RSP_STATUS, v as u16);
    }
}

/// One page of a transfer, sectors `first_sect..=last_sect` (512-byte units in the page).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentRepr {
    /// Grant of the page.
    pub gref: GrantRef,
    /// First 512-byte sector in the page (0..=7).
    pub first_sect: u8,
    /// Last 512-byte sector in the page, inclusive (0..=7).
    pub last_sect: u8,
}

impl SegmentRepr {
    /// Reads a segment. Errors: [`ShortBuffer`].
    pub fn parse<T: AsRef<[u8]>>(s: &Segment<T>) -> Result<Self, ShortBuffer> {
        s.check_len()?;
        Ok(Self { gref: s.gref(), first_sect: s.first_sect(), last_sect: s.last_sect() })
    }

    /// Writes the segment into `s` (at least [`SEGMENT_LEN`] bytes).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, s: &mut Segment<T>) {
        s.set_gref(self.gref);
        s.set_first_sect(self.first_sect);
        s.set_last_sect(self.last_sect);
    }

    /// The 8-byte wire form (for an indirect page).
    pub fn to_bytes(&self) -> [u8; SEGMENT_LEN] {
        slot::to_bytes(|s| self.emit(s))
    }
}

/// A request as it goes on the ring: direct (`struct blkif_request`) or indirect (`struct blkif_request_indirect`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestRepr {
    /// Read, write, flush or barrier with up to 11 segments in the slot.
    Direct {
        /// `BLKIF_OP_*`.
        operation: u8,
        /// Device handle.
        handle: u16,
        /// Echoed in the response.
        id: u64,
        /// First 512-byte sector.
        sector: u64,
        /// Segments (at most [`MAX_SEGMENTS`]).
        segments: Vec<SegmentRepr>,
    },
    /// Read or write whose segments sit in separately granted indirect pages.
    Indirect {
        /// `BLKIF_OP_READ` or `BLKIF_OP_WRITE`.
        indirect_op: u8,
        /// Segment count.
        nr_segments: u16,
        /// Echoed in the response.
        id: u64,
        /// First 512-byte sector.
        sector: u64,
        /// Device handle.
        handle: u16,
        /// Grants of the indirect pages (at most [`MAX_INDIRECT_PAGES`]).
        indirect_grefs: Vec<GrantRef>,
    },
}

impl RequestRepr {
    /// Reads a request (backend peers). A direct segment count above [`MAX_SEGMENTS`] is clamped to it, and an
    /// indirect request lists the grants of the pages its `nr_segments` need, at most [`MAX_INDIRECT_PAGES`].
    /// Errors: [`ShortBuffer`].
    pub fn parse<T: AsRef<[u8]>>(r: &Request<T>) -> Result<Self, ShortBuffer> {
        r.check_len()?;
        Ok(if r.operation() == OP_INDIRECT {
            let nr_segments = r.indirect_nr_segments();
            let pages = usize::from(nr_segments).div_ceil(SEGMENTS_PER_INDIRECT_PAGE).min(MAX_INDIRECT_PAGES);
            Self::Indirect {
                indirect_op: r.indirect_op(),
                nr_segments,
                id: r.id(),
                sector: r.sector_number(),
                handle: r.indirect_handle(),
                indirect_grefs: (0..pages).map(|i| r.indirect_gref(i)).collect(),
            }
        } else {
            let n = usize::from(r.nr_segments()).min(MAX_SEGMENTS);
            Self::Direct {
                operation: r.operation(),
                handle: r.handle(),
                id: r.id(),
                sector: r.sector_number(),
                // The view is checked and i < MAX_SEGMENTS: each segment lies inside the slot.
                segments: (0..n).map(|i| SegmentRepr::parse(&r.segment(i))).collect::<Result<_, _>>()?,
            }
        })
    }

    /// Writes the request into `r` (a zeroed slot of at least [`SLOT`] bytes; padding is left as is). Segments
    /// beyond [`MAX_SEGMENTS`] and indirect grants beyond [`MAX_INDIRECT_PAGES`] are not written.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, r: &mut Request<T>) {
        match self {
            Self::Direct { operation, handle, id, sector, segments } => {
                let n = segments.len().min(MAX_SEGMENTS);
                r.set_operation(*operation);
                r.set_nr_segments(n as u8);
                r.set_handle(*handle);
                r.set_id(*id);
                r.set_sector_number(*sector);
                for (i, s) in segments.iter().take(n).enumerate() {
                    s.emit(&mut r.segment_mut(i));
                }
            }
            Self::Indirect { indirect_op, nr_segments, id, sector, handle, indirect_grefs } => {
                r.set_operation(OP_INDIRECT);
                r.set_indirect_op(*indirect_op);
                r.set_indirect_nr_segments(*nr_segments);
                r.set_id(*id);
                r.set_sector_number(*sector);
                r.set_indirect_handle(*handle);
                for (i, g) in indirect_grefs.iter().take(MAX_INDIRECT_PAGES).enumerate() {
                    r.set_indirect_gref(i, *g);
                }
            }
        }
    }

    /// The wire form in a ring slot.
    pub fn to_bytes(&self) -> [u8; SLOT] {
        slot::to_bytes(|r| self.emit(r))
    }
}

/// A response to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseRepr {
    /// The request's id.
    pub id: u64,
    /// The request's operation.
    pub operation: u8,
    /// `BLKIF_RSP_*`.
    pub status: i16,
}

impl ResponseRepr {
    /// Reads a response (a slot copied out of the ring). Errors: [`ShortBuffer`].
    pub fn parse<T: AsRef<[u8]>>(r: &Response<T>) -> Result<Self, ShortBuffer> {
        r.check_len()?;
        Ok(Self { id: r.id(), operation: r.operation(), status: r.status() })
    }

    /// Writes the response into `r` (backend peers).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, r: &mut Response<T>) {
        r.set_id(self.id);
        r.set_operation(self.operation);
        r.set_status(self.status);
    }

    /// The 16-byte wire form (backend peers).
    pub fn to_bytes(&self) -> [u8; RESPONSE_LEN] {
        slot::to_bytes(|r| self.emit(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn direct_request_round_trip() {
        let d = RequestRepr::Direct {
            operation: OP_WRITE,
            handle: 0xca00,
            id: 7,
            sector: 1 << 40,
            segments: vec![
                SegmentRepr { gref: GrantRef(9), first_sect: 0, last_sect: 7 },
                SegmentRepr { gref: GrantRef(10), first_sect: 2, last_sect: 3 },
            ],
        };
        let b = d.to_bytes();
        assert_eq!((b[0], b[1]), (OP_WRITE, 2));
        assert_eq!(b[2..4], [0x00, 0xca]);
        assert_eq!(b[8..16], 7u64.to_le_bytes());
        assert_eq!(b[16..24], (1u64 << 40).to_le_bytes());
        assert_eq!(b[24..32], [9, 0, 0, 0, 0, 7, 0, 0]);
        assert_eq!(RequestRepr::parse(&Request::new_checked(&b[..]).expect("slot")), Ok(d));
    }

    #[test]
    fn indirect_request_round_trip() {
        let i = RequestRepr::Indirect {
            indirect_op: OP_READ,
            nr_segments: 32,
            id: 3,
            sector: 8,
            handle: 1,
            indirect_grefs: vec![GrantRef(77)],
        };
        let b = i.to_bytes();
        assert_eq!((b[0], b[1], b[2]), (OP_INDIRECT, OP_READ, 32));
        assert_eq!(b[24..26], [1, 0]);
        assert_eq!(b[28..32], 77u32.to_le_bytes());
        assert_eq!(RequestRepr::parse(&Request::new_checked(&b[..]).expect("slot")), Ok(i));
    }

    #[test]
    fn hostile_counts_are_clamped() {
        let mut b = [0u8; SLOT];
        let mut r = Request::new_unchecked(&mut b[..]);
        r.set_operation(OP_READ);
        r.set_nr_segments(200);
        let Ok(RequestRepr::Direct { segments, .. }) = RequestRepr::parse(&Request::new_unchecked(&b[..])) else {
            panic!("direct")
        };
        assert_eq!(segments.len(), MAX_SEGMENTS);
        let mut r = Request::new_unchecked(&mut b[..]);
        r.set_operation(OP_INDIRECT);
        r.set_indirect_nr_segments(u16::MAX);
        let Ok(RequestRepr::Indirect { indirect_grefs, .. }) = RequestRepr::parse(&Request::new_unchecked(&b[..]))
        else {
            panic!("indirect")
        };
        assert_eq!(indirect_grefs.len(), MAX_INDIRECT_PAGES);
    }

    #[test]
    fn segment_and_response_round_trip() {
        let s = SegmentRepr { gref: GrantRef(0x0102_0304), first_sect: 1, last_sect: 6 };
        assert_eq!(s.to_bytes(), [4, 3, 2, 1, 1, 6, 0, 0]);
        assert_eq!(SegmentRepr::parse(&Segment::new_unchecked(&s.to_bytes()[..])), Ok(s));
        let r = ResponseRepr { id: 31, operation: OP_FLUSH_DISKCACHE, status: RSP_EOPNOTSUPP };
        let mut slot = [0u8; SLOT];
        slot[..RESPONSE_LEN].copy_from_slice(&r.to_bytes());
        assert_eq!(slot[10..12], [0xfe, 0xff]);
        assert_eq!(ResponseRepr::parse(&Response::new_checked(&slot[..]).expect("slot")), Ok(r));
    }

    #[test]
    fn short_buffers_are_refused() {
        let b = [0u8; SLOT];
        assert_eq!(
            Request::new_checked(&b[..SLOT - 1]).err(),
            Some(ShortBuffer { what: "blkif_request", len: SLOT - 1, need: SLOT })
        );
        assert!(Segment::new_checked(&b[..7]).is_err());
        assert!(SegmentRepr::parse(&Segment::new_unchecked(&b[..7])).is_err());
        assert_eq!(
            ResponseRepr::parse(&Response::new_unchecked(&b[..15])),
            Err(ShortBuffer { what: "blkif_response", len: 15, need: RESPONSE_LEN })
        );
    }
}
