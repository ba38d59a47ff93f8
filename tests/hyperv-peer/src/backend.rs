//! What a device back end (netvsp, storvsp, the integration services) sees of the VMBus server: the packets of
//! its channel (`vmpacket_descriptor` and the GPA-direct and transfer-page headers, Linux
//! `include/linux/hyperv.h`), the guest buffers it reaches by PFN (GPADLs, GPA-direct ranges), and the [`Backend`]
//! trait the server calls when the guest opens the channel, sends a packet, or time passes.

use crate::bytes::{rd16, rd32, rd64};
use platform_hyperv::mem::host::HostMemory;
use std::collections::HashMap;
use std::time::Instant;

/// VMBus packet types.
pub(crate) mod pkt {
    use crate::bytes::{wr16, wr32, wr64};

    pub const INBAND: u16 = 6;
    pub const XFER_PAGES: u16 = 7;
    pub const GPA_DIRECT: u16 = 9;
    pub const COMP: u16 = 11;
    pub const COMPLETION_REQUESTED: u16 = 1;

    /// A packet: descriptor, `extra` header bytes, payload at the next 8-byte boundary, padded to 8.
    pub fn build(ty: u16, tid: u64, flags: u16, extra: &[u8], payload: &[u8]) -> Vec<u8> {
        let off = (16 + extra.len() + 7) & !7;
        let len = (off + payload.len() + 7) & !7;
        let mut b = vec![0u8; len];
        wr16(&mut b, 0, ty);
        wr16(&mut b, 2, (off / 8) as u16);
        wr16(&mut b, 4, (len / 8) as u16);
        wr16(&mut b, 6, flags);
        wr64(&mut b, 8, tid);
        b[16..16 + extra.len()].copy_from_slice(extra);
        b[off..off + payload.len()].copy_from_slice(payload);
        b
    }

    pub fn inband(tid: u64, flags: u16, payload: &[u8]) -> Vec<u8> {
        build(INBAND, tid, flags, &[], payload)
    }

    pub fn comp(tid: u64, payload: &[u8]) -> Vec<u8> {
        build(COMP, tid, 0, &[], payload)
    }

    /// A transfer-page packet: set id, ranges `(offset, count)`.
    pub fn xfer(tid: u64, set: u16, ranges: &[(u32, u32)], payload: &[u8]) -> Vec<u8> {
        let mut e = vec![0u8; 8 + 8 * ranges.len()];
        wr16(&mut e, 0, set);
        wr32(&mut e, 4, ranges.len() as u32);
        for (i, (off, n)) in ranges.iter().enumerate() {
            wr32(&mut e, 8 + i * 8, *n);
            wr32(&mut e, 12 + i * 8, *off);
        }
        build(XFER_PAGES, tid, COMPLETION_REQUESTED, &e, payload)
    }
}

/// A packet the guest sent, with the fields the back ends need.
pub(crate) struct GuestPacket<'a> {
    pub ty: u16,
    pub flags: u16,
    pub tid: u64,
    pub raw: &'a [u8],
    pub payload: &'a [u8],
}

impl<'a> GuestPacket<'a> {
    pub(crate) fn parse(raw: &'a [u8]) -> Option<Self> {
        if raw.len() < 16 {
            return None;
        }
        let off = rd16(raw, 2) as usize * 8;
        let len = rd16(raw, 4) as usize * 8;
        if off < 16 || off > len || len != raw.len() {
            return None;
        }
        Some(Self { ty: rd16(raw, 0), flags: rd16(raw, 6), tid: rd64(raw, 8), raw, payload: &raw[off..] })
    }

    /// GPA-direct ranges: `(len, offset, pfns)`.
    pub fn gpa_ranges(&self) -> Vec<(u32, u32, Vec<u64>)> {
        let mut out = Vec::new();
        if self.ty != pkt::GPA_DIRECT || self.raw.len() < 24 {
            return out;
        }
        let n = rd32(self.raw, 20) as usize;
        let mut pos = 24;
        for _ in 0..n {
            let len = rd32(self.raw, pos);
            let off = rd32(self.raw, pos + 4);
            let pages = ((off as usize % 4096) + len as usize).div_ceil(4096);
            pos += 8;
            let pfns = (0..pages).map(|i| rd64(self.raw, pos + i * 8)).collect();
            pos += pages * 8;
            out.push((len, off, pfns));
        }
        out
    }
}

/// A guest buffer the host reaches by page frame numbers (a GPADL or a GPA-direct range).
#[derive(Clone, Debug, Default)]
pub(crate) struct PageList {
    pub pfns: Vec<u64>,
    pub offset: usize,
    pub len: usize,
}

impl PageList {
    pub fn read(&self, mem: &HostMemory, at: usize, out: &mut [u8]) -> bool {
        self.chunks(at, out.len(), |gpa, range| mem.read_gpa(gpa, &mut out[range]).is_ok())
    }

    pub fn write(&self, mem: &HostMemory, at: usize, data: &[u8]) -> bool {
        self.chunks(at, data.len(), |gpa, range| mem.write_gpa(gpa, &data[range]).is_ok())
    }

    fn chunks(&self, at: usize, n: usize, mut f: impl FnMut(u64, std::ops::Range<usize>) -> bool) -> bool {
        if at + n > self.len {
            return false;
        }
        let mut done = 0;
        while done < n {
            let pos = self.offset + at + done;
            let page = pos / 4096;
            let in_page = pos % 4096;
            let k = (4096 - in_page).min(n - done);
            let Some(pfn) = self.pfns.get(page) else { return false };
            if !f(pfn * 4096 + in_page as u64, done..done + k) {
                return false;
            }
            done += k;
        }
        true
    }
}

/// What a device back end may do while handling a packet or polling.
pub(crate) struct Io<'a> {
    pub mem: &'a HostMemory,
    pub gpadls: &'a HashMap<u32, PageList>,
    /// Packets to send to the guest on this channel.
    pub out: Vec<Vec<u8>>,
    /// Event log lines.
    pub events: &'a mut Vec<String>,
    pub now: Instant,
    pub start: Instant,
}

/// A device back end on one channel.
pub(crate) trait Backend: Send {
    /// The guest opened the channel.
    fn opened(&mut self, io: &mut Io);
    /// A packet from the guest.
    fn packet(&mut self, io: &mut Io, p: &GuestPacket);
    /// Periodic work.
    fn poll(&mut self, io: &mut Io);
}
