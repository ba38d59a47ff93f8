//! The host's network back end (netvsp): NVSP negotiation (exact-match version), NDIS configuration and version,
//! receive buffer (one section of 1728-byte sub-allocations, as Windows hosts use) and send buffer (6144-byte
//! sections), RNDIS INITIALIZE / QUERY / SET, and the data path in both directions with checksum offload. Written
//! from `drivers/net/hyperv/hyperv_net.h` and `include/linux/rndis.h`.

use crate::backend::{pkt, Backend, GuestPacket, Io, PageList};
use crate::bytes::{rd16, rd32, wr32};
use crate::wire::Wire;
use crate::HostConfig;

const RECV_SECTION: u32 = 1728;
const SEND_SECTION: u32 = 6144;
const NVSP_INIT: u32 = 1;
const NVSP_INIT_COMPLETE: u32 = 2;
const NVSP_SEND_NDIS_VER: u32 = 100;
const NVSP_SEND_RECV_BUF: u32 = 101;
const NVSP_SEND_RECV_BUF_COMPLETE: u32 = 102;
const NVSP_SEND_SEND_BUF: u32 = 104;
const NVSP_SEND_SEND_BUF_COMPLETE: u32 = 105;
const NVSP_SEND_RNDIS_PKT: u32 = 107;
const NVSP_SEND_RNDIS_PKT_COMPLETE: u32 = 108;
const NVSP_SEND_NDIS_CONFIG: u32 = 125;
const NVSP_SEND_INDIRECTION_TABLE: u32 = 134;
const NVSP_SUCCESS: u32 = 1;
const NVSP_FAIL: u32 = 2;
const V2: u32 = 0x30002;
const V5: u32 = 0x50000;
const RNDIS_PACKET: u32 = 1;
const RNDIS_INIT: u32 = 2;
const RNDIS_QUERY: u32 = 4;
const RNDIS_SET: u32 = 5;
const RNDIS_INDICATE: u32 = 7;
const RNDIS_KEEPALIVE: u32 = 8;
const RNDIS_C: u32 = 0x8000_0000;
const RNDIS_NOT_SUPPORTED: u32 = 0xC000_00BB;
const MEDIA_CONNECT: u32 = 0x4001_000B;
const OID_PERMANENT_ADDRESS: u32 = 0x0101_0101;
const OID_MEDIA_CONNECT_STATUS: u32 = 0x0001_0114;
const OID_PACKET_FILTER: u32 = 0x0001_010E;
const OID_OFFLOAD_PARAMETERS: u32 = 0xFC01_020C;
const OID_OFFLOAD_CAPS: u32 = 0xFC01_020D;
const TID_XFER: u64 = 0x7876_0000_0000_0000;

pub(crate) struct NetVsp {
    version: u32,
    send_buffer_ok: bool,
    offload_offered: bool,
    mac: [u8; 6],
    wire: Wire,
    negotiated: Option<u32>,
    ndis_config: bool,
    recv: Option<PageList>,
    recv_free: Vec<u32>,
    send: Option<PageList>,
    filter: u32,
    offload_tx: bool,
    pending_frames: std::collections::VecDeque<Vec<u8>>,
    table_sent: bool,
}

impl NetVsp {
    pub fn new(cfg: &HostConfig, wire: Wire) -> Self {
        Self {
            version: cfg.nvsp_version,
            send_buffer_ok: cfg.send_buffer,
            offload_offered: cfg.checksum_offload,
            mac: cfg.mac,
            wire,
            negotiated: None,
            ndis_config: false,
            recv: None,
            recv_free: Vec::new(),
            send: None,
            filter: 0,
            offload_tx: false,
            pending_frames: Default::default(),
            table_sent: false,
        }
    }

    fn nvsp(ty: u32, fields: &[u32]) -> Vec<u8> {
        let mut b = vec![0u8; 40.max(4 + 4 * fields.len())];
        wr32(&mut b, 0, ty);
        for (i, f) in fields.iter().enumerate() {
            wr32(&mut b, 4 + 4 * i, *f);
        }
        b
    }

    /// Puts an RNDIS message into a free receive section and sends it as a transfer-page packet.
    fn send_rndis(&mut self, io: &mut Io, msg: &[u8], control: bool) -> bool {
        let Some(recv) = &self.recv else { return false };
        if msg.len() > RECV_SECTION as usize {
            io.events.push(format!("netvsp: RNDIS message of {} bytes too large", msg.len()));
            return true;
        }
        let Some(s) = self.recv_free.pop() else { return false };
        let off = s * RECV_SECTION;
        if !recv.write(io.mem, off as usize, msg) {
            io.events.push("netvsp: receive buffer write failed".into());
            return true;
        }
        let carrier = Self::nvsp(NVSP_SEND_RNDIS_PKT, &[u32::from(control), 0xFFFF_FFFF, 0]);
        io.out.push(pkt::xfer(TID_XFER | u64::from(s), 0xcafe, &[(off, msg.len() as u32)], &carrier));
        true
    }

    fn rndis_control(&mut self, io: &mut Io, m: &[u8]) {
        if m.len() < 12 {
            io.events.push("netvsp: short RNDIS control message".into());
            return;
        }
        let ty = rd32(m, 0);
        let req_id = rd32(m, 8);
        let reply = match ty {
            RNDIS_INIT => {
                io.events.push("netvsp: RNDIS initialize".into());
                let mut r = vec![0u8; 52];
                for (i, v) in [RNDIS_INIT | RNDIS_C, 52, req_id, 0, 1, 0, 1, 0, 8, 0x4000, 3, 0, 0].iter().enumerate() {
                    wr32(&mut r, i * 4, *v);
                }
                r
            }
            RNDIS_QUERY if m.len() >= 28 => {
                let oid = rd32(m, 12);
                let (status, info) = match oid {
                    OID_PERMANENT_ADDRESS => (0, self.mac.to_vec()),
                    OID_MEDIA_CONNECT_STATUS => (0, 0u32.to_le_bytes().to_vec()),
                    OID_OFFLOAD_CAPS if self.offload_offered && self.negotiated.is_some_and(|v| v >= V5) => {
                        let inlen = rd32(m, 16) as usize;
                        let inoff = rd32(m, 20) as usize;
                        let hdr = m.get(8 + inoff..8 + inoff + inlen.min(4)).unwrap_or(&[]);
                        if hdr.len() < 4 || hdr[0] != 0xa7 {
                            io.events
                                .push("netvsp: offload caps query without an NDIS_OBJECT_TYPE_OFFLOAD header".into());
                            (RNDIS_NOT_SUPPORTED, vec![])
                        } else {
                            let size = (rd16(hdr, 2) as usize).max(112);
                            let mut c = vec![0u8; size];
                            c[0] = 0xa7;
                            c[1] = hdr[1];
                            c[2..4].copy_from_slice(&(size as u16).to_le_bytes());
                            wr32(&mut c, 4, 2); // ip4_txenc: 802.3
                            wr32(&mut c, 8, 0x010 | 0x004 | 0x040); // ip4_txcsum: TCP4, TCP4OPT, UDP4
                            wr32(&mut c, 16, 0x010 | 0x004 | 0x040); // ip4_rxcsum
                            (0, c)
                        }
                    }
                    _ => (RNDIS_NOT_SUPPORTED, vec![]),
                };
                io.events.push(format!("netvsp: RNDIS query {oid:#x} -> {status:#x}"));
                let mut r = vec![0u8; 24 + info.len()];
                for (i, v) in [
                    RNDIS_QUERY | RNDIS_C,
                    r.len() as u32,
                    req_id,
                    status,
                    info.len() as u32,
                    if info.is_empty() { 0 } else { 16 },
                ]
                .iter()
                .enumerate()
                {
                    wr32(&mut r, i * 4, *v);
                }
                r[24..].copy_from_slice(&info);
                r
            }
            RNDIS_SET if m.len() >= 28 => {
                let oid = rd32(m, 12);
                let len = rd32(m, 16) as usize;
                let off = 8 + rd32(m, 20) as usize;
                let info = m.get(off..off + len).unwrap_or(&[]);
                let status = match oid {
                    OID_PACKET_FILTER if info.len() >= 4 => {
                        self.filter = rd32(info, 0);
                        0
                    }
                    OID_OFFLOAD_PARAMETERS if info.len() >= 7 && info[0] == 0x80 => {
                        self.offload_tx = info[5] == 4 || info[5] == 2;
                        0
                    }
                    _ => RNDIS_NOT_SUPPORTED,
                };
                io.events.push(format!("netvsp: RNDIS set {oid:#x} -> {status:#x}"));
                let mut r = vec![0u8; 16];
                for (i, v) in [RNDIS_SET | RNDIS_C, 16, req_id, status].iter().enumerate() {
                    wr32(&mut r, i * 4, *v);
                }
                r
            }
            RNDIS_KEEPALIVE => {
                let mut r = vec![0u8; 16];
                for (i, v) in [RNDIS_KEEPALIVE | RNDIS_C, 16, req_id, 0].iter().enumerate() {
                    wr32(&mut r, i * 4, *v);
                }
                r
            }
            other => {
                io.events.push(format!("netvsp: unexpected RNDIS message {other:#x}"));
                return;
            }
        };
        if !self.send_rndis(io, &reply, true) {
            io.events.push("netvsp: no receive section for a control reply".into());
        }
        if ty == RNDIS_SET && self.filter != 0 {
            let mut ind = vec![0u8; 20];
            for (i, v) in [RNDIS_INDICATE, 20, MEDIA_CONNECT, 0, 0].iter().enumerate() {
                wr32(&mut ind, i * 4, *v);
            }
            self.send_rndis(io, &ind, true);
        }
    }

    fn rndis_data(&mut self, io: &mut Io, m: &[u8]) {
        if m.len() < 44 {
            io.events.push("netvsp: short RNDIS packet".into());
            return;
        }
        let msg_len = rd32(m, 4) as usize;
        let off = 8 + rd32(m, 8) as usize;
        let len = rd32(m, 12) as usize;
        if msg_len > m.len() || off + len > msg_len {
            io.events.push(format!("netvsp: RNDIS packet data {len} bytes at {off} outside {msg_len}"));
            return;
        }
        let mut frame = m[off..off + len].to_vec();
        let ppi_off = 8 + rd32(m, 28) as usize;
        let ppi_len = rd32(m, 32) as usize;
        let mut pos = ppi_off;
        while ppi_len != 0 && pos + 16 <= ppi_off + ppi_len && pos + 16 <= m.len() {
            let size = rd32(m, pos) as usize;
            if rd32(m, pos + 4) == 0 {
                let info = rd32(m, pos + rd32(m, pos + 8) as usize);
                if !self.offload_tx {
                    io.events.push("netvsp: checksum PPI without offload enabled".into());
                } else {
                    fill_checksum(&mut frame, info);
                }
            }
            if size < 12 {
                break;
            }
            pos += size;
        }
        self.wire.push_to_host(frame);
    }

    fn rndis(&mut self, io: &mut Io, m: &[u8], channel_type: u32) {
        if m.len() < 8 {
            return;
        }
        if rd32(m, 0) == RNDIS_PACKET {
            if channel_type != 0 {
                io.events.push("netvsp: data packet on the control channel type".into());
            }
            self.rndis_data(io, m);
        } else {
            self.rndis_control(io, m);
        }
    }
}

/// Fills the TCP/UDP checksum an `ndis_tcp_ip_checksum_info` transmit request asks for (IPv4 pseudo header,
/// RFC 793 / RFC 768).
fn fill_checksum(frame: &mut [u8], info: u32) {
    if info & 1 == 0 || frame.len() < 34 {
        return;
    }
    let l4 = ((info >> 16) & 0x3ff) as usize;
    let ip = &frame[14..];
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let ihl = (ip[0] & 0xf) as usize * 4;
    if l4 != 14 + ihl || 14 + total > frame.len() || total < ihl {
        return;
    }
    let (field, proto) = if info & 4 != 0 {
        (16, 6u8)
    } else if info & 8 != 0 {
        (6, 17u8)
    } else {
        return;
    };
    let seg_len = total - ihl;
    if seg_len < field + 2 {
        return;
    }
    frame[l4 + field] = 0;
    frame[l4 + field + 1] = 0;
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    add(&frame[26..34]);
    add(&[0, proto]);
    add(&(seg_len as u16).to_be_bytes());
    add(&frame[l4..l4 + seg_len]);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let mut c = !(sum as u16);
    if proto == 17 && c == 0 {
        c = 0xffff;
    }
    frame[l4 + field..l4 + field + 2].copy_from_slice(&c.to_be_bytes());
}

impl Backend for NetVsp {
    fn opened(&mut self, io: &mut Io) {
        io.events.push("netvsp: channel open".into());
    }

    fn packet(&mut self, io: &mut Io, p: &GuestPacket) {
        if p.ty == pkt::COMP {
            if p.payload.len() >= 8
                && rd32(p.payload, 0) == NVSP_SEND_RNDIS_PKT_COMPLETE
                && p.tid & 0xffff_0000_0000_0000 == TID_XFER
            {
                self.recv_free.push((p.tid & 0xffff_ffff) as u32);
            } else {
                io.events.push(format!("netvsp: unexpected completion {:#x}", p.tid));
            }
            return;
        }
        if p.payload.len() < 4 {
            io.events.push("netvsp: short NVSP message".into());
            return;
        }
        let ty = rd32(p.payload, 0);
        let f = |i: usize| if p.payload.len() >= 8 + 4 * i { rd32(p.payload, 4 + 4 * i) } else { 0 };
        match ty {
            NVSP_INIT => {
                let (min, max) = (f(0), f(1));
                let ok = min <= self.version && self.version <= max && min == max;
                io.events.push(format!("netvsp: NVSP init {min:#x} -> {}", if ok { "accepted" } else { "refused" }));
                if ok {
                    self.negotiated = Some(self.version);
                }
                let status = if ok { NVSP_SUCCESS } else { NVSP_FAIL };
                io.out.push(pkt::comp(
                    p.tid,
                    &Self::nvsp(NVSP_INIT_COMPLETE, &[if ok { self.version } else { 0 }, 34, status]),
                ));
            }
            NVSP_SEND_NDIS_CONFIG => {
                if self.negotiated.is_none_or(|v| v < V2) {
                    io.events.push("netvsp: ERROR NDIS config before NVSP 3.2".into());
                }
                if self.recv.is_some() {
                    io.events.push("netvsp: ERROR NDIS config after the receive buffer".into());
                }
                self.ndis_config = true;
                io.events.push(format!("netvsp: NDIS config mtu {}", f(0)));
            }
            NVSP_SEND_NDIS_VER => io.events.push(format!("netvsp: NDIS version {}.{}", f(0), f(1))),
            NVSP_SEND_RECV_BUF => {
                let gpadl = f(0);
                if self.negotiated.is_some_and(|v| v >= V2) && !self.ndis_config {
                    io.events.push("netvsp: ERROR receive buffer before the NDIS config".into());
                }
                let status = match io.gpadls.get(&gpadl) {
                    Some(pl) if p.payload.len() >= 10 && rd16(p.payload, 8) == 0xcafe => {
                        let count = pl.len as u32 / RECV_SECTION;
                        self.recv = Some(pl.clone());
                        self.recv_free = (0..count).rev().collect();
                        io.events.push(format!("netvsp: receive buffer {} bytes, {count} sections", pl.len));
                        let mut m = Self::nvsp(
                            NVSP_SEND_RECV_BUF_COMPLETE,
                            &[NVSP_SUCCESS, 1, 0, RECV_SECTION, count, count * RECV_SECTION],
                        );
                        m.resize(40, 0);
                        io.out.push(pkt::comp(p.tid, &m));
                        return;
                    }
                    _ => NVSP_FAIL,
                };
                io.out.push(pkt::comp(p.tid, &Self::nvsp(NVSP_SEND_RECV_BUF_COMPLETE, &[status, 0])));
            }
            NVSP_SEND_SEND_BUF => {
                let gpadl = f(0);
                let reply = match io.gpadls.get(&gpadl) {
                    Some(pl) if self.send_buffer_ok => {
                        self.send = Some(pl.clone());
                        io.events.push(format!("netvsp: send buffer {} bytes", pl.len));
                        [NVSP_SUCCESS, SEND_SECTION]
                    }
                    _ => {
                        io.events.push("netvsp: send buffer refused".into());
                        [NVSP_FAIL, 0]
                    }
                };
                io.out.push(pkt::comp(p.tid, &Self::nvsp(NVSP_SEND_SEND_BUF_COMPLETE, &reply)));
            }
            NVSP_SEND_RNDIS_PKT => {
                let (channel_type, index, size) = (f(0), f(1), f(2));
                let msg = if index != 0xFFFF_FFFF {
                    let mut b = vec![0u8; size as usize];
                    let ok = size <= SEND_SECTION
                        && self.send.as_ref().is_some_and(|s| s.read(io.mem, (index * SEND_SECTION) as usize, &mut b));
                    if !ok {
                        io.events.push(format!("netvsp: bad send section {index} size {size}"));
                        return;
                    }
                    b
                } else {
                    let mut b = Vec::new();
                    for (len, off, pfns) in p.gpa_ranges() {
                        let pl = PageList { pfns, offset: off as usize, len: len as usize };
                        let mut part = vec![0u8; len as usize];
                        if !pl.read(io.mem, 0, &mut part) {
                            io.events.push("netvsp: unreadable GPA range".into());
                            return;
                        }
                        b.extend_from_slice(&part);
                    }
                    b
                };
                self.rndis(io, &msg, channel_type);
                io.out.push(pkt::comp(p.tid, &Self::nvsp(NVSP_SEND_RNDIS_PKT_COMPLETE, &[NVSP_SUCCESS])));
            }
            other => io.events.push(format!("netvsp: unexpected NVSP message {other}")),
        }
    }

    fn poll(&mut self, io: &mut Io) {
        if self.recv.is_some() && !self.table_sent && self.negotiated.is_some_and(|v| v >= V5) {
            // Unsolicited, as hosts with vRSS send it: the guest must tolerate it.
            let mut m = Self::nvsp(NVSP_SEND_INDIRECTION_TABLE, &[16, 12]);
            m.resize(12 + 64, 0);
            io.out.push(pkt::inband(0, 0, &m));
            self.table_sent = true;
        }
        if self.filter == 0 {
            // No frames before the guest set a packet filter; keep them.
            while let Some(f) = self.wire.take_for_guest() {
                self.pending_frames.push_back(f);
            }
            return;
        }
        while let Some(f) = self.wire.take_for_guest() {
            self.pending_frames.push_back(f);
        }
        while let Some(f) = self.pending_frames.pop_front() {
            let mut m = vec![0u8; 44 + f.len()];
            wr32(&mut m, 0, RNDIS_PACKET);
            let total = m.len() as u32;
            wr32(&mut m, 4, total);
            wr32(&mut m, 8, 36);
            wr32(&mut m, 12, f.len() as u32);
            m[44..].copy_from_slice(&f);
            if !self.send_rndis(io, &m, false) {
                self.pending_frames.push_front(f);
                break;
            }
        }
    }
}
