//! `struct virtio_net_hdr` (virtio 1.2 §5.1.6): the header before every frame on the virtqueues — checksum
//! offload (`flags`, `csum_start`, `csum_offset`), segmentation offload (`gso_type`, `hdr_len`, `gso_size`)
//! and, with mergeable receive buffers or a modern device, `num_buffers`. A checked view plus an owned
//! [`NetHdrRepr`]; received headers are the device's word and are checked before use.
#![forbid(unsafe_code)]

use libos::wire::{read_u16, read_u8, write_u16, write_u8};

mod field {
    use libos::wire::Field;
    pub const FLAGS: Field = 0..1;
    pub const GSO_TYPE: Field = 1..2;
    pub const HDR_LEN: Field = 2..4;
    pub const GSO_SIZE: Field = 4..6;
    pub const CSUM_START: Field = 6..8;
    pub const CSUM_OFFSET: Field = 8..10;
    pub const NUM_BUFFERS: Field = 10..12;
}

/// Length without `num_buffers` (legacy devices without `VIRTIO_NET_F_MRG_RXBUF`), bytes.
pub const LEN_LEGACY: usize = 10;
/// Length with `num_buffers` (bytes).
pub const LEN: usize = 12;

/// `flags`: the device (transmit) or driver (receive) must complete the checksum at `csum_start +
/// csum_offset`, summing from `csum_start` to the end (`VIRTIO_NET_HDR_F_NEEDS_CSUM`).
pub const F_NEEDS_CSUM: u8 = 1;
/// `flags`, receive only: the device validated the checksum (`VIRTIO_NET_HDR_F_DATA_VALID`).
pub const F_DATA_VALID: u8 = 2;
/// `gso_type`: not a GSO frame.
pub const GSO_NONE: u8 = 0;
/// `gso_type`: TCP over IPv4.
pub const GSO_TCPV4: u8 = 1;
/// `gso_type`: UDP (fragmentation offload).
pub const GSO_UDP: u8 = 3;
/// `gso_type`: TCP over IPv6.
pub const GSO_TCPV6: u8 = 4;
/// `gso_type` bit: the TCP segments carry ECN (CWR set on the first).
pub const GSO_ECN: u8 = 0x80;

/// Errors of [`NetHdr::new_checked`] and [`NetHdrRepr::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HdrError {
    /// The buffer is shorter than the header (bytes).
    Short {
        /// Buffer length.
        len: usize,
        /// Header length needed.
        need: usize,
    },
    /// `gso_type` is none of NONE, TCPV4, UDP, TCPV6 (with or without the ECN bit).
    GsoType(u8),
    /// `NEEDS_CSUM` names a checksum field outside the frame: `csum_start + csum_offset + 2 > frame_len`.
    CsumRange {
        /// `csum_start`.
        start: u16,
        /// `csum_offset`.
        offset: u16,
        /// Frame length (bytes, without the header).
        frame_len: usize,
    },
    /// `num_buffers` is 0 or more than the receive queue holds.
    NumBuffers(u16),
}

impl core::fmt::Display for HdrError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Short { len, need } => write!(f, "virtio_net_hdr of {len} bytes, need {need}"),
            Self::GsoType(t) => write!(f, "virtio_net_hdr gso_type {t:#x} unknown"),
            Self::CsumRange { start, offset, frame_len } => {
                write!(f, "virtio_net_hdr csum_start {start} + csum_offset {offset} beyond the {frame_len}-byte frame")
            }
            Self::NumBuffers(n) => write!(f, "virtio_net_hdr num_buffers {n} outside 1..=queue size"),
        }
    }
}

/// A view of a `virtio_net_hdr` with `num_buffers` (12 bytes).
#[derive(Debug, Clone, Copy)]
pub struct NetHdr<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> NetHdr<T> {
    /// A view without a length check; accessors may panic on a short buffer.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// A view of a buffer of at least [`LEN`] bytes. Errors: [`HdrError::Short`].
    pub fn new_checked(buffer: T) -> Result<Self, HdrError> {
        let h = Self::new_unchecked(buffer);
        h.check_len()?;
        Ok(h)
    }

    /// Errors with [`HdrError::Short`] unless the buffer holds [`LEN`] bytes.
    pub fn check_len(&self) -> Result<(), HdrError> {
        let len = self.buffer.as_ref().len();
        if len < LEN {
            return Err(HdrError::Short { len, need: LEN });
        }
        Ok(())
    }

    /// `flags` (`F_NEEDS_CSUM`, `F_DATA_VALID`).
    pub fn flags(&self) -> u8 {
        read_u8(self.buffer.as_ref(), field::FLAGS)
    }
    /// `gso_type` (`GSO_*`, maybe with `GSO_ECN`).
    pub fn gso_type(&self) -> u8 {
        read_u8(self.buffer.as_ref(), field::GSO_TYPE)
    }
    /// `hdr_len`: bytes of Ethernet, IP and TCP headers of a GSO frame.
    pub fn hdr_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::HDR_LEN)
    }
    /// `gso_size`: payload bytes per segment (MSS) of a GSO frame.
    pub fn gso_size(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::GSO_SIZE)
    }
    /// `csum_start`: offset of the first byte summed.
    pub fn csum_start(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CSUM_START)
    }
    /// `csum_offset`: offset of the checksum field from `csum_start`.
    pub fn csum_offset(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CSUM_OFFSET)
    }
    /// `num_buffers`: receive buffers this frame spans (mergeable receive buffers).
    pub fn num_buffers(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::NUM_BUFFERS)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> NetHdr<T> {
    /// Sets `flags` (`F_NEEDS_CSUM`, `F_DATA_VALID`).
    pub fn set_flags(&mut self, v: u8) {
        write_u8(self.buffer.as_mut(), field::FLAGS, v)
    }
    /// Sets `gso_type` (`GSO_*`, maybe with `GSO_ECN`).
    pub fn set_gso_type(&mut self, v: u8) {
        write_u8(self.buffer.as_mut(), field::GSO_TYPE, v)
    }
    /// Sets `hdr_len`: bytes of Ethernet, IP and TCP headers of a GSO frame.
    pub fn set_hdr_len(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::HDR_LEN, v)
    }
    /// Sets `gso_size`: payload bytes per segment (MSS) of a GSO frame.
    pub fn set_gso_size(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::GSO_SIZE, v)
    }
    /// Sets `csum_start`: offset of the first byte summed.
    pub fn set_csum_start(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::CSUM_START, v)
    }
    /// Sets `csum_offset`: offset of the checksum field from `csum_start`.
    pub fn set_csum_offset(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::CSUM_OFFSET, v)
    }
    /// Sets `num_buffers`: receive buffers this frame spans (mergeable receive buffers).
    pub fn set_num_buffers(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::NUM_BUFFERS, v)
    }
}

/// An owned, checked `virtio_net_hdr`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetHdrRepr {
    /// `flags` (`F_NEEDS_CSUM`, `F_DATA_VALID`).
    pub flags: u8,
    /// `gso_type` (`GSO_*`, maybe with `GSO_ECN`).
    pub gso_type: u8,
    /// `hdr_len`: bytes of Ethernet, IP and TCP headers of a GSO frame.
    pub hdr_len: u16,
    /// `gso_size`: payload bytes per segment (MSS) of a GSO frame.
    pub gso_size: u16,
    /// `csum_start`: offset of the first byte summed.
    pub csum_start: u16,
    /// `csum_offset`: offset of the checksum field from `csum_start`.
    pub csum_offset: u16,
    /// `num_buffers`: receive buffers this frame spans (mergeable receive buffers).
    pub num_buffers: u16,
}

impl NetHdrRepr {
    /// Reads a received header for a frame of `frame_len` bytes on a receive queue of `queue_size`
    /// buffers. `NEEDS_CSUM` and `gso_type` are checked (§5.1.6.4: the driver may trust neither blindly);
    /// `hdr_len`/`gso_size` are hints on receive and are not. Errors: [`HdrError`].
    pub fn parse<T: AsRef<[u8]>>(h: &NetHdr<T>, frame_len: usize, queue_size: usize) -> Result<Self, HdrError> {
        h.check_len()?;
        let r = Self {
            flags: h.flags(),
            gso_type: h.gso_type(),
            hdr_len: h.hdr_len(),
            gso_size: h.gso_size(),
            csum_start: h.csum_start(),
            csum_offset: h.csum_offset(),
            num_buffers: h.num_buffers(),
        };
        if !matches!(r.gso_type & !GSO_ECN, GSO_NONE | GSO_TCPV4 | GSO_UDP | GSO_TCPV6) {
            return Err(HdrError::GsoType(r.gso_type));
        }
        let end = usize::from(r.csum_start) + usize::from(r.csum_offset) + 2;
        if r.flags & F_NEEDS_CSUM != 0 && end > frame_len {
            return Err(HdrError::CsumRange { start: r.csum_start, offset: r.csum_offset, frame_len });
        }
        if r.num_buffers == 0 || usize::from(r.num_buffers) > queue_size {
            return Err(HdrError::NumBuffers(r.num_buffers));
        }
        Ok(r)
    }

    /// Whether the frame's TCP/UDP checksum needs no check: validated by the device, or never computed
    /// because the frame comes from the host's own stack (`NEEDS_CSUM`, as Linux treats CHECKSUM_PARTIAL).
    pub fn checksum_valid(&self) -> bool {
        self.flags & (F_NEEDS_CSUM | F_DATA_VALID) != 0
    }

    /// Writes the header into `buf` (at least `len` bytes: [`LEN`] or [`LEN_LEGACY`]; a legacy header has no
    /// `num_buffers`).
    pub fn emit(&self, buf: &mut [u8], len: usize) {
        let mut h = NetHdr::new_unchecked(&mut buf[..]);
        h.set_flags(self.flags);
        h.set_gso_type(self.gso_type);
        h.set_hdr_len(self.hdr_len);
        h.set_gso_size(self.gso_size);
        h.set_csum_start(self.csum_start);
        h.set_csum_offset(self.csum_offset);
        if len >= LEN {
            h.set_num_buffers(self.num_buffers);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let r = NetHdrRepr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1460,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 3,
        };
        let mut b = [0u8; LEN];
        r.emit(&mut b, LEN);
        assert_eq!(b, [1, 1, 54, 0, 0xb4, 0x05, 34, 0, 16, 0, 3, 0]);
        assert_eq!(NetHdrRepr::parse(&NetHdr::new_checked(&b[..]).unwrap(), 100, 256), Ok(r));
        assert!(r.checksum_valid());
        let mut legacy = [0xaau8; LEN];
        r.emit(&mut legacy, LEN_LEGACY);
        assert_eq!(legacy[10..], [0xaa, 0xaa], "a legacy header has no num_buffers");
    }

    #[test]
    fn hostile_headers_are_refused() {
        let view = |b: &[u8; LEN]| NetHdr::new_unchecked(*b);
        assert_eq!(NetHdr::new_checked(&[0u8; 11][..]).unwrap_err(), HdrError::Short { len: 11, need: 12 });
        let mut b = [0u8; LEN];
        b[10] = 1;
        b[1] = 2; // GSO type 2 does not exist
        assert_eq!(NetHdrRepr::parse(&view(&b), 100, 256), Err(HdrError::GsoType(2)));
        b[1] = GSO_TCPV4 | GSO_ECN;
        assert!(NetHdrRepr::parse(&view(&b), 100, 256).is_ok());
        b[0] = F_NEEDS_CSUM;
        b[6] = 90;
        b[8] = 16; // 90 + 16 + 2 > 100
        assert_eq!(
            NetHdrRepr::parse(&view(&b), 100, 256),
            Err(HdrError::CsumRange { start: 90, offset: 16, frame_len: 100 })
        );
        b[0] = F_DATA_VALID; // the range only matters with NEEDS_CSUM
        assert!(NetHdrRepr::parse(&view(&b), 100, 256).unwrap().checksum_valid());
        b[10] = 0;
        assert_eq!(NetHdrRepr::parse(&view(&b), 100, 256), Err(HdrError::NumBuffers(0)));
        b[10] = 0;
        b[11] = 1; // 256
        assert!(NetHdrRepr::parse(&view(&b), 100, 256).is_ok());
        b[10] = 1; // 257
        assert_eq!(NetHdrRepr::parse(&view(&b), 100, 256), Err(HdrError::NumBuffers(257)));
    }
}
