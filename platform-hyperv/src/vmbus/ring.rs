//! VMBus ring buffers: one page of control fields (`struct hv_ring_buffer`: `write_index` u32 at 0, `read_index` at
//! 4, `interrupt_mask` at 8, `pending_send_sz` at 12, `feature_bits` at 64) followed by the data area, in which
//! packets (8-byte aligned) are each followed by an 8-byte trailer holding the packet's start index in bits 63:32.
//! Source: Linux `include/linux/hyperv.h` and `drivers/hv/ring_buffer.c` (`hv_ringbuffer_write`,
//! `hv_pkt_iter_first`, `hv_pkt_iter_close`, `hv_signal_on_write`).
//!
//! The guest owns the write index of its outbound ring and the read index of its inbound ring; it never trusts the
//! other side's copy of its own index and checks every index, length and offset the host controls before using it:
//! a bad value is a [`RingError::Hostile`] naming the ring, field and value, never an access outside the ring.
#![forbid(unsafe_code)]

use super::packet::{Descriptor, DescriptorView, Packet, DESC_LEN};
use crate::mem::{full_barrier, MemError, Region, PAGE_SIZE};
use alloc::vec;
use core::fmt;

/// Offset of `write_index` in the control page.
pub const WRITE_INDEX: usize = 0;
/// Offset of `read_index`.
pub const READ_INDEX: usize = 4;
/// Offset of `interrupt_mask`: non-zero while the reader does not want interrupts.
pub const INTERRUPT_MASK: usize = 8;
/// Offset of `pending_send_sz`: bytes the blocked writer waits for.
pub const PENDING_SEND_SZ: usize = 12;
/// Offset of `feature_bits` (bit 0 `feat_pending_send_sz`).
pub const FEATURE_BITS: usize = 64;
/// Size of the per-packet trailer (`VMBUS_PKT_TRAILER`, bytes).
pub const TRAILER_LEN: usize = 8;

/// Which direction a ring carries, for errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Guest to host ("outbound", upstream).
    Outbound,
    /// Host to guest ("inbound", downstream).
    Inbound,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Outbound => "outbound",
            Self::Inbound => "inbound",
        })
    }
}

/// Why a ring operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingError {
    /// The host wrote a value no correct host writes: `field` is `value`, the limit is `limit`. The channel is
    /// unusable from here on.
    Hostile {
        /// The ring: inbound (host to guest) or outbound.
        dir: Direction,
        /// The field, e.g. "write_index".
        field: &'static str,
        /// Its value.
        value: u64,
        /// The bound it broke, e.g. the ring's data size (bytes).
        limit: u64,
    },
    /// Not enough room for a packet of `need` bytes (`avail` free); retry after the host reads.
    Full {
        /// Bytes the packet needs, its 8-byte trailer included.
        need: usize,
        /// Bytes free in the ring.
        avail: usize,
    },
    /// The packet is larger than the ring could ever hold.
    TooLarge {
        /// Bytes of the packet (without the trailer).
        len: usize,
        /// Largest packet the ring can take (bytes): its data size less the trailer and one free slot.
        max: usize,
    },
    /// Shared memory access failed (a bug: offsets are checked first).
    Memory(MemError),
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hostile { dir, field, value, limit } => {
                write!(f, "{dir} ring: host wrote {field} = {value:#x}, outside the valid range (limit {limit:#x})")
            }
            Self::Full { need, avail } => write!(f, "ring full: packet needs {need} bytes, {avail} free"),
            Self::TooLarge { len, max } => write!(f, "packet of {len} bytes exceeds the ring's {max}-byte maximum"),
            Self::Memory(e) => write!(f, "ring memory: {e}"),
        }
    }
}

impl From<MemError> for RingError {
    fn from(e: MemError) -> Self {
        Self::Memory(e)
    }
}

/// The common part of both rings: the control page at `base` in `region`, `data_size` bytes of data after it.
#[derive(Debug, Clone)]
struct RingMem {
    region: Region,
    base: usize,
    data_size: u32,
    dir: Direction,
}

impl RingMem {
    fn new(region: Region, base: usize, pages: usize, dir: Direction) -> Result<Self, RingError> {
        if pages < 2 || base.checked_add(pages * PAGE_SIZE).is_none_or(|end| end > region.len()) {
            return Err(RingError::Memory(MemError::OutOfBounds {
                offset: base,
                len: pages * PAGE_SIZE,
                size: region.len(),
            }));
        }
        Ok(Self { region, base, data_size: ((pages - 1) * PAGE_SIZE) as u32, dir })
    }

    fn ctl(&self, off: usize) -> usize {
        self.base + off
    }

    fn data(&self) -> usize {
        self.base + PAGE_SIZE
    }

    /// Loads an index the host controls and checks it: inside the data area and 8-byte aligned.
    fn checked_index(&self, off: usize, field: &'static str) -> Result<u32, RingError> {
        let v = self.region.load_u32(self.ctl(off))?;
        if v >= self.data_size || v % 8 != 0 {
            return Err(RingError::Hostile { dir: self.dir, field, value: v.into(), limit: self.data_size.into() });
        }
        Ok(v)
    }

    fn copy_out(&self, pos: u32, buf: &mut [u8]) -> Result<(), RingError> {
        let first = ((self.data_size - pos) as usize).min(buf.len());
        self.region.read(self.data() + pos as usize, &mut buf[..first])?;
        if first < buf.len() {
            self.region.read(self.data(), &mut buf[first..])?;
        }
        Ok(())
    }

    fn copy_in(&self, pos: u32, data: &[u8]) -> Result<u32, RingError> {
        let first = ((self.data_size - pos) as usize).min(data.len());
        self.region.write(self.data() + pos as usize, &data[..first])?;
        if first < data.len() {
            self.region.write(self.data(), &data[first..])?;
        }
        Ok(((pos as usize + data.len()) % self.data_size as usize) as u32)
    }
}

/// Bytes between `from` and `to` going forward around a ring of `size`.
fn distance(from: u32, to: u32, size: u32) -> u32 {
    if to >= from {
        to - from
    } else {
        size - from + to
    }
}

/// The guest-to-host ring: the guest writes packets and the write index.
#[derive(Debug)]
pub struct OutRing {
    mem: RingMem,
    write: u32,
}

impl OutRing {
    /// Initialises the ring of `pages` pages (control page included) at byte `base` of `region`: zero indices,
    /// `feat_pending_send_sz` set (Linux `hv_ringbuffer_init`). Errors: the pages do not fit the region.
    pub fn init(region: Region, base: usize, pages: usize) -> Result<Self, RingError> {
        let mem = RingMem::new(region, base, pages, Direction::Outbound)?;
        mem.region.zero(base, PAGE_SIZE)?;
        mem.region.store_u32(mem.ctl(FEATURE_BITS), 1)?;
        Ok(Self { mem, write: 0 })
    }

    /// Data area size (bytes).
    pub fn data_size(&self) -> usize {
        self.mem.data_size as usize
    }

    /// Writes one packet made of `parts` (their total must be a multiple of 8) and its trailer, then publishes the
    /// write index. Returns whether the host must be signalled: only when the ring went from empty to non-empty and
    /// the host has not masked interrupts (`hv_signal_on_write`). Errors: [`RingError::Full`] (the caller sets
    /// [`OutRing::set_pending_send_size`] and waits), [`RingError::TooLarge`], [`RingError::Hostile`] for a bad
    /// host read index.
    pub fn write(&mut self, parts: &[&[u8]]) -> Result<bool, RingError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let total = len + TRAILER_LEN;
        if !len.is_multiple_of(8) || total >= self.data_size() {
            return Err(RingError::TooLarge { len, max: self.data_size().saturating_sub(TRAILER_LEN + 8) });
        }
        let read = self.mem.checked_index(READ_INDEX, "read_index")?;
        let used = distance(read, self.write, self.mem.data_size);
        let avail = self.data_size() - used as usize;
        // Exactly full would look empty (read == write): keep at least one slot free.
        if avail <= total {
            return Err(RingError::Full { need: total, avail });
        }
        let old = self.write;
        let mut pos = old;
        for p in parts {
            pos = self.mem.copy_in(pos, p)?;
        }
        pos = self.mem.copy_in(pos, &(u64::from(old) << 32).to_le_bytes())?;
        // The packet must be visible before the index that publishes it.
        full_barrier();
        self.mem.region.store_u32(self.mem.ctl(WRITE_INDEX), pos)?;
        self.write = pos;
        // Signal decision after publishing: mask first, then the host's read index.
        full_barrier();
        if self.mem.region.load_u32(self.mem.ctl(INTERRUPT_MASK))? != 0 {
            return Ok(false);
        }
        Ok(self.mem.region.load_u32(self.mem.ctl(READ_INDEX))? == old)
    }

    /// Tells the host how many bytes the guest waits for (0 = not waiting): a host that honours
    /// `feat_pending_send_sz` signals once that much is free.
    pub fn set_pending_send_size(&self, bytes: u32) -> Result<(), RingError> {
        self.mem.region.store_u32(self.mem.ctl(PENDING_SEND_SZ), bytes)?;
        full_barrier();
        Ok(())
    }

    /// Free bytes now (`hv_get_bytes_to_write`). Errors: a hostile read index.
    pub fn free_bytes(&self) -> Result<usize, RingError> {
        let read = self.mem.checked_index(READ_INDEX, "read_index")?;
        Ok(self.data_size() - distance(read, self.write, self.mem.data_size) as usize)
    }
}

/// The host-to-guest ring: the guest reads packets and publishes the read index.
#[derive(Debug)]
pub struct InRing {
    mem: RingMem,
    /// Private read position (`priv_read_index`), published by [`InRing::commit`].
    read: u32,
    /// Read index as last published.
    published: u32,
}

impl InRing {
    /// Initialises the ring of `pages` pages at byte `base` of `region` (zeroed control page). Errors: the pages
    /// do not fit the region.
    pub fn init(region: Region, base: usize, pages: usize) -> Result<Self, RingError> {
        let mem = RingMem::new(region, base, pages, Direction::Inbound)?;
        mem.region.zero(base, PAGE_SIZE)?;
        Ok(Self { mem, read: 0, published: 0 })
    }

    /// Data area size (bytes).
    pub fn data_size(&self) -> usize {
        self.mem.data_size as usize
    }

    /// Copies out the next packet without consuming it; `None` when the ring is empty. Every host-controlled
    /// value is checked: the write index (inside the data area, 8-aligned), the bytes available (whole packets of
    /// at least a descriptor and trailer), `len8` (at least a descriptor, at most what is available) and
    /// `offset8` (between the descriptor's end and `len8`). Errors: [`RingError::Hostile`].
    pub fn peek(&self) -> Result<Option<Packet>, RingError> {
        let write = self.mem.checked_index(WRITE_INDEX, "write_index")?;
        let avail = distance(self.read, write, self.mem.data_size) as usize;
        if avail == 0 {
            return Ok(None);
        }
        let dir = self.mem.dir;
        if avail < DESC_LEN + TRAILER_LEN {
            return Err(RingError::Hostile {
                dir,
                field: "bytes available",
                value: avail as u64,
                limit: (DESC_LEN + TRAILER_LEN) as u64,
            });
        }
        let mut d = [0u8; DESC_LEN];
        self.mem.copy_out(self.read, &mut d)?;
        let desc = Descriptor::parse(&DescriptorView::new_unchecked(&d[..]));
        let len = desc.len8 as usize * 8;
        let off = desc.offset8 as usize * 8;
        if len < DESC_LEN || len + TRAILER_LEN > avail {
            return Err(RingError::Hostile {
                dir,
                field: "packet len8*8",
                value: len as u64,
                limit: (avail - TRAILER_LEN) as u64,
            });
        }
        if off < DESC_LEN || off > len {
            return Err(RingError::Hostile { dir, field: "packet offset8*8", value: off as u64, limit: len as u64 });
        }
        let mut raw = vec![0u8; len];
        self.mem.copy_out(self.read, &mut raw)?;
        // The copy is what counts: re-check it (the host may have changed the ring meanwhile).
        let p = Packet::new_checked(raw).map_err(|_| RingError::Hostile {
            dir,
            field: "packet header (changed while read)",
            value: desc.len8.into(),
            limit: (len / 8) as u64,
        })?;
        Ok(Some(p))
    }

    /// Consumes the packet [`InRing::peek`] returned (advances the private read position).
    pub fn consume(&mut self, p: &Packet) {
        let step = p.raw.len() + TRAILER_LEN;
        self.read = ((self.read as usize + step) % self.data_size()) as u32;
    }

    /// Copies out and consumes the next packet. Errors: as [`InRing::peek`].
    pub fn read(&mut self) -> Result<Option<Packet>, RingError> {
        let p = self.peek()?;
        if let Some(p) = &p {
            self.consume(p);
        }
        Ok(p)
    }

    /// Publishes the read position and decides whether the host, blocked on a full ring, must be signalled
    /// (`hv_pkt_iter_close`): only when it set `feat_pending_send_sz` and `pending_send_sz`, and this read moved
    /// the free space from at most `pending_send_sz` to more than it. Errors: a hostile write index.
    pub fn commit(&mut self) -> Result<bool, RingError> {
        if self.read == self.published {
            return Ok(false);
        }
        let start = self.published;
        // All reads of packet data happen before the host may overwrite it.
        full_barrier();
        self.mem.region.store_u32(self.mem.ctl(READ_INDEX), self.read)?;
        self.published = self.read;
        if self.mem.region.load_u32(self.mem.ctl(FEATURE_BITS))? & 1 == 0 {
            return Ok(false);
        }
        full_barrier();
        let pending = self.mem.region.load_u32(self.mem.ctl(PENDING_SEND_SZ))?;
        if pending == 0 {
            return Ok(false);
        }
        let write = self.mem.checked_index(WRITE_INDEX, "write_index")?;
        let free = self.mem.data_size - distance(self.read, write, self.mem.data_size);
        let bytes_read = distance(start, self.read, self.mem.data_size);
        // Already enough room before this read: the host was not blocked on us.
        if free.saturating_sub(bytes_read) > pending {
            return Ok(false);
        }
        Ok(free > pending)
    }

    /// Whether the ring holds unread data (after checking the write index).
    pub fn has_data(&self) -> Result<bool, RingError> {
        Ok(self.mem.checked_index(WRITE_INDEX, "write_index")? != self.read)
    }
}

/// The host's side of a ring pair, for test peers written against the same layout: reads the guest's outbound
/// ring and writes the inbound one exactly as a VMBus host does (including `interrupt_mask` while draining and
/// `pending_send_sz` when blocked). A test-only host model: built for unit tests and with the `host-model`
/// feature (which `hyperv-peer` enables).
#[cfg(any(test, feature = "host-model"))]
pub mod host_side {
    use super::*;
    use alloc::vec::Vec;

    /// Host view of one ring.
    #[derive(Debug, Clone)]
    pub struct HostRing {
        mem: RingMem,
    }

    impl HostRing {
        /// The ring of `pages` pages at byte `base` of `region`.
        pub fn new(region: Region, base: usize, pages: usize, dir: Direction) -> Result<Self, RingError> {
            Ok(Self { mem: RingMem::new(region, base, pages, dir)? })
        }

        /// Reads all complete packets the guest published (as raw bytes, descriptor first), advancing the read
        /// index. Errors: [`RingError::Hostile`] when the guest wrote garbage.
        pub fn drain(&self) -> Result<Vec<Vec<u8>>, RingError> {
            let m = &self.mem;
            let mut read = m.checked_index(READ_INDEX, "read_index")?;
            let mut out = Vec::new();
            loop {
                let write = m.checked_index(WRITE_INDEX, "write_index")?;
                let avail = distance(read, write, m.data_size) as usize;
                if avail == 0 {
                    break;
                }
                let mut d = [0u8; DESC_LEN];
                m.copy_out(read, &mut d)?;
                let len = DescriptorView::new_unchecked(&d[..]).len8() as usize * 8;
                if len < DESC_LEN || len + TRAILER_LEN > avail {
                    return Err(RingError::Hostile {
                        dir: m.dir,
                        field: "guest packet len8*8",
                        value: len as u64,
                        limit: avail as u64,
                    });
                }
                let mut raw = vec![0u8; len];
                m.copy_out(read, &mut raw)?;
                out.push(raw);
                read = ((read as usize + len + TRAILER_LEN) % m.data_size as usize) as u32;
            }
            full_barrier();
            m.region.store_u32(m.ctl(READ_INDEX), read)?;
            Ok(out)
        }

        /// Sets the ring's interrupt mask (the host masks while draining the guest's outbound ring).
        pub fn set_interrupt_mask(&self, masked: bool) -> Result<(), RingError> {
            self.mem.region.store_u32(self.mem.ctl(INTERRUPT_MASK), u32::from(masked))?;
            full_barrier();
            Ok(())
        }

        /// Writes one packet; returns whether the guest must be signalled (empty → non-empty and the guest has not
        /// masked interrupts). Errors: [`RingError::Full`] (after which the host sets `pending_send_sz`).
        pub fn write(&self, packet: &[u8]) -> Result<bool, RingError> {
            let m = &self.mem;
            let read = m.checked_index(READ_INDEX, "read_index")?;
            let write = m.checked_index(WRITE_INDEX, "write_index")?;
            let total = packet.len() + TRAILER_LEN;
            let avail = m.data_size as usize - distance(read, write, m.data_size) as usize;
            if avail <= total {
                m.region.store_u32(m.ctl(PENDING_SEND_SZ), total as u32)?;
                return Err(RingError::Full { need: total, avail });
            }
            let mut pos = m.copy_in(write, packet)?;
            pos = m.copy_in(pos, &(u64::from(write) << 32).to_le_bytes())?;
            full_barrier();
            m.region.store_u32(m.ctl(WRITE_INDEX), pos)?;
            m.region.store_u32(m.ctl(PENDING_SEND_SZ), 0)?;
            full_barrier();
            if m.region.load_u32(m.ctl(INTERRUPT_MASK))? != 0 {
                return Ok(false);
            }
            Ok(m.region.load_u32(m.ctl(READ_INDEX))? == write)
        }

        /// Sets `feat_pending_send_sz` on this (host-written) ring, as Windows hosts do.
        pub fn set_pending_send_feature(&self) -> Result<(), RingError> {
            Ok(self.mem.region.store_u32(self.mem.ctl(FEATURE_BITS), 1)?)
        }

        /// Stores a raw control field (for tests that play a hostile host).
        pub fn poke(&self, field_offset: usize, value: u32) -> Result<(), RingError> {
            Ok(self.mem.region.store_u32(self.mem.ctl(field_offset), value)?)
        }

        /// Loads a raw control field.
        pub fn peek_field(&self, field_offset: usize) -> Result<u32, RingError> {
            Ok(self.mem.region.load_u32(self.mem.ctl(field_offset))?)
        }

        /// Writes raw bytes into the data area at `pos` (for hostile-host tests).
        pub fn poke_data(&self, pos: u32, data: &[u8]) -> Result<(), RingError> {
            self.mem.copy_in(pos % self.mem.data_size, data).map(|_| ())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::host_side::HostRing;
    use super::*;
    use crate::mem::host::HostMemory;
    use crate::mem::Dma;
    use crate::vmbus::packet::inband;

    fn pair(pages: usize) -> (Region, OutRing, InRing, HostRing, HostRing) {
        let mem = HostMemory::new();
        let r = mem.alloc(2 * pages).unwrap();
        let out = OutRing::init(r.clone(), 0, pages).unwrap();
        let inr = InRing::init(r.clone(), pages * PAGE_SIZE, pages).unwrap();
        let h_out = HostRing::new(r.clone(), 0, pages, Direction::Outbound).unwrap();
        let h_in = HostRing::new(r.clone(), pages * PAGE_SIZE, pages, Direction::Inbound).unwrap();
        (r, out, inr, h_out, h_in)
    }

    #[test]
    fn guest_to_host_packets_and_signal_on_empty_to_non_empty() {
        let (r, mut out, _, h_out, _) = pair(2);
        assert_eq!(r.load_u32(FEATURE_BITS).unwrap(), 1, "feat_pending_send_sz set by the guest");
        let p = inband(1, 0, &[1; 16]).unwrap();
        assert!(out.write(&[&p]).unwrap(), "empty → non-empty signals");
        assert!(!out.write(&[&p]).unwrap(), "already non-empty: no signal");
        let got = h_out.drain().unwrap();
        assert_eq!(got, vec![p.clone(), p.clone()]);
        h_out.set_interrupt_mask(true).unwrap();
        assert!(!out.write(&[&p]).unwrap(), "masked host: no signal");
        // Trailer holds the packet's start index in the high half.
        let start = 2 * (p.len() + TRAILER_LEN);
        assert_eq!(r.read_u64(PAGE_SIZE + start + p.len()).unwrap(), (start as u64) << 32);
    }

    #[test]
    fn wraparound_and_full() {
        let (_, mut out, _, h_out, _) = pair(2);
        let p = inband(1, 0, &[7; 1000]).unwrap(); // 1016 bytes + 8 trailer
        let mut n = 0;
        loop {
            match out.write(&[&p]) {
                Ok(_) => n += 1,
                Err(RingError::Full { need, avail }) => {
                    assert_eq!(need, 1024);
                    assert!(avail <= 1024);
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(n, 3, "4096-byte data area holds three 1024-byte packets with one slot kept free");
        assert_eq!(h_out.drain().unwrap().len(), 3);
        for _ in 0..10 {
            out.write(&[&p]).unwrap();
            assert_eq!(h_out.drain().unwrap(), vec![p.clone()]);
        }
        assert!(matches!(out.write(&[&vec![0; 8192]]), Err(RingError::TooLarge { .. })));
    }

    #[test]
    fn host_to_guest_read_and_pending_send_signal() {
        let (_, _, mut inr, _, h_in) = pair(2);
        h_in.set_pending_send_feature().unwrap();
        assert_eq!(inr.read().unwrap(), None);
        let p = inband(9, 0, &[3; 2000]).unwrap(); // 2016 + 8
        assert!(h_in.write(&p).unwrap());
        assert!(h_in.write(&p).is_ok());
        assert!(matches!(h_in.write(&p), Err(RingError::Full { .. })), "host now waits with pending_send_sz");
        let got = inr.read().unwrap().unwrap();
        assert_eq!(got.raw, p);
        assert!(inr.commit().unwrap(), "freeing enough for the blocked host signals it");
        assert!(h_in.write(&p).is_ok());
        assert!(inr.read().unwrap().is_some());
        assert!(!inr.commit().unwrap(), "host not blocked: no signal");
        assert!(inr.read().unwrap().is_some());
        assert_eq!(inr.read().unwrap(), None);
    }

    #[test]
    fn hostile_write_index_is_rejected() {
        let (_, _, inr, _, h_in) = pair(2);
        h_in.poke(WRITE_INDEX, 0x10_0000).unwrap();
        let e = inr.peek().unwrap_err();
        assert_eq!(
            e,
            RingError::Hostile { dir: Direction::Inbound, field: "write_index", value: 0x10_0000, limit: 4096 }
        );
        assert!(e.to_string().contains("inbound ring: host wrote write_index = 0x100000"), "{e}");
        h_in.poke(WRITE_INDEX, 12).unwrap();
        assert!(matches!(inr.peek(), Err(RingError::Hostile { field: "write_index", value: 12, .. })), "misaligned");
    }

    #[test]
    fn hostile_lengths_and_offsets_are_rejected() {
        let (_, _, inr, _, h_in) = pair(2);
        let mut p = inband(1, 0, &[0; 8]).unwrap();
        p[4..6].copy_from_slice(&500u16.to_le_bytes()); // len8*8 = 4000 > available
        h_in.poke_data(0, &p).unwrap();
        h_in.poke(WRITE_INDEX, (p.len() + TRAILER_LEN) as u32).unwrap();
        assert!(matches!(inr.peek(), Err(RingError::Hostile { field: "packet len8*8", value: 4000, .. })));
        p[4..6].copy_from_slice(&3u16.to_le_bytes());
        p[2..4].copy_from_slice(&9u16.to_le_bytes()); // offset past the end
        h_in.poke_data(0, &p).unwrap();
        assert!(matches!(inr.peek(), Err(RingError::Hostile { field: "packet offset8*8", value: 72, .. })));
        p[2..4].copy_from_slice(&1u16.to_le_bytes()); // offset inside the descriptor
        h_in.poke_data(0, &p).unwrap();
        assert!(matches!(inr.peek(), Err(RingError::Hostile { field: "packet offset8*8", value: 8, .. })));
        h_in.poke(WRITE_INDEX, 8).unwrap(); // less than one descriptor available
        assert!(matches!(inr.peek(), Err(RingError::Hostile { field: "bytes available", .. })));
    }

    #[test]
    fn hostile_read_index_on_the_outbound_ring() {
        let (_, mut out, _, h_out, _) = pair(2);
        h_out.poke(READ_INDEX, 0xffff_fff8).unwrap();
        let p = inband(1, 0, &[0; 8]).unwrap();
        assert!(matches!(
            out.write(&[&p]),
            Err(RingError::Hostile { dir: Direction::Outbound, field: "read_index", .. })
        ));
    }
}
