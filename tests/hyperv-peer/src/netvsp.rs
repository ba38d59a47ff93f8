//! The host's network back end (netvsp): NVSP negotiation (exact-match version), NDIS configuration and version,
//! receive buffer (one section of 1728-byte sub-allocations, as Windows hosts use) and send buffer (6144-byte
//! sections), RNDIS INITIALIZE / QUERY / SET, and the data path in both directions with checksum offload (verdicts
//! on received frames) and IPv4 large send offload v2 (segmented here as a NIC would: every segment `mss` bytes
//! but the last, IP length/ID/checksum and TCP sequence/checksum made right, FIN/PSH on the last only). Written
//! from `drivers/net/hyperv/hyperv_net.h` (`ndis_offload`, `ndis_offload_params`, `ndis_tcp_lso_info`,
//! `ndis_tcp_ip_checksum_info`), `include/linux/rndis.h`, RFC 791 / RFC 793.

use crate::backend::{pkt, Backend, GuestPacket, Io, PageList};
use crate::bytes::{rd16, rd32, wr32};
use crate::wire::Wire;
use crate::{HostConfig, LSO_MAX_SIZE};

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
const PPI_CHECKSUM: u32 = 0;
const PPI_LARGESEND: u32 = 2;

pub(crate) struct NetVsp {
    version: u32,
    send_buffer_ok: bool,
    offload_offered: bool,
    lso_offered: bool,
    mac: [u8; 6],
    wire: Wire,
    negotiated: Option<u32>,
    ndis_config: bool,
    recv: Option<PageList>,
    recv_free: Vec<u32>,
    send: Option<PageList>,
    filter: u32,
    offload_tx: bool,
    offload_rx: bool,
    lso: bool,
    pending_frames: std::collections::VecDeque<Vec<u8>>,
    table_sent: bool,
}

impl NetVsp {
    pub fn new(cfg: &HostConfig, wire: Wire) -> Self {
        Self {
            version: cfg.nvsp_version,
            send_buffer_ok: cfg.send_buffer,
            offload_offered: cfg.checksum_offload,
            lso_offered: cfg.checksum_offload && cfg.large_send_offload,
            mac: cfg.mac,
            wire,
            negotiated: None,
            ndis_config: false,
            recv: None,
            recv_free: Vec::new(),
            send: None,
            filter: 0,
            offload_tx: false,
            offload_rx: false,
            lso: false,
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
                            if self.lso_offered {
                                wr32(&mut c, 80, 2); // lsov2.ip4_encap: 802.3
                                wr32(&mut c, 84, LSO_MAX_SIZE); // lsov2.ip4_maxsz
                                wr32(&mut c, 88, 2); // lsov2.ip4_minsg
                            }
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
                        self.offload_rx = info[5] == 4 || info[5] == 3;
                        // lso_v2_ipv4: 0 no change, 1 disabled, 2 enabled.
                        match info.get(11).copied().unwrap_or(0) {
                            2 if !self.lso_offered => {
                                io.events.push("netvsp: ERROR LSOv2 enabled but not offered".into())
                            }
                            2 => self.lso = true,
                            1 => self.lso = false,
                            _ => {}
                        }
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
        let mut large_send = None;
        while ppi_len != 0 && pos + 16 <= ppi_off + ppi_len && pos + 16 <= m.len() {
            let size = rd32(m, pos) as usize;
            let info = rd32(m, pos + rd32(m, pos + 8) as usize);
            match rd32(m, pos + 4) {
                PPI_CHECKSUM if !self.offload_tx => {
                    io.events.push("netvsp: checksum PPI without offload enabled".into())
                }
                PPI_CHECKSUM => fill_checksum(&mut frame, info),
                PPI_LARGESEND if !self.lso => {
                    io.events.push("netvsp: ERROR large send PPI without LSOv2 enabled".into())
                }
                PPI_LARGESEND => large_send = Some(info),
                _ => {}
            }
            if size < 12 {
                break;
            }
            pos += size;
        }
        let Some(info) = large_send else {
            self.wire.push_to_host(frame);
            return;
        };
        match segment_lso_v2(&frame, info) {
            Ok(segments) => {
                io.events.push(format!("netvsp: large send of {} bytes in {} segments", frame.len(), segments.len()));
                for s in segments {
                    self.wire.push_to_host(s);
                }
            }
            Err(e) => io.events.push(format!("netvsp: ERROR large send: {e}")),
        }
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

/// The `ndis_tcp_ip_checksum_info` receive verdict on a TCP or UDP over IPv4 frame (`tcp_checksum_succeeded`
/// bit 3 / `udp_checksum_succeeded` bit 4, or `*_failed` bits 0 / 1), `None` for other frames.
fn checksum_verdict(frame: &[u8]) -> Option<u32> {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let l4 = 14 + (frame[14] & 0xf) as usize * 4;
    let (tx_bit, ok, failed) = match frame[23] {
        6 => (4, 1 << 3, 1 << 0),
        17 => (8, 1 << 4, 1 << 1),
        _ => return None,
    };
    let mut recomputed = frame.to_vec();
    fill_checksum(&mut recomputed, 1 | tx_bit | (l4 as u32) << 16);
    Some(if recomputed == frame { ok } else { failed })
}

/// Cuts an IPv4 large send (`ndis_tcp_lso_info.lso_v2_transmit`: `mss` bits 19:0, `tcp_header_offset` bits 29:20,
/// `type` bit 30 = V2, `ip_version` bit 31 = IPv4 0) into segments as a NIC does. The request must be as Linux
/// netvsc makes it: IPv4 total length 0, the TCP checksum field holding the pseudo-header sum without the TCP
/// length, at least two segments.
fn segment_lso_v2(frame: &[u8], info: u32) -> Result<Vec<Vec<u8>>, String> {
    let mss = (info & 0xf_ffff) as usize;
    let l4 = ((info >> 20) & 0x3ff) as usize;
    if info & (1 << 30) == 0 || info & (1 << 31) != 0 {
        return Err(format!("lso info {info:#x} is not an IPv4 LSOv2 request"));
    }
    if frame.len() < 54 || frame[12..14] != [0x08, 0x00] || frame[23] != 6 {
        return Err("not TCP over IPv4".into());
    }
    let ihl = (frame[14] & 0xf) as usize * 4;
    if l4 != 14 + ihl {
        return Err(format!("TCP header offset {l4}, the IPv4 header ends at {}", 14 + ihl));
    }
    if frame[16..18] != [0, 0] {
        return Err("IPv4 total length not zero".into());
    }
    let thl = (frame[l4 + 12] >> 4) as usize * 4;
    let hdr = l4 + thl;
    if thl < 20 || hdr >= frame.len() || mss == 0 {
        return Err(format!("TCP header of {thl} bytes, mss {mss}, frame {} bytes", frame.len()));
    }
    let mut pseudo: u32 = 6;
    for c in frame[26..34].chunks(2) {
        pseudo += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while pseudo >> 16 != 0 {
        pseudo = (pseudo & 0xffff) + (pseudo >> 16);
    }
    let field = u16::from_be_bytes([frame[l4 + 16], frame[l4 + 17]]);
    if u32::from(field) != pseudo {
        return Err(format!("TCP checksum field {field:#x}, not the pseudo-header sum {pseudo:#x} without length"));
    }
    let payload = &frame[hdr..];
    if payload.len() <= mss {
        return Err(format!("{} payload bytes with mss {mss}: fewer than two segments", payload.len()));
    }
    let seq = u32::from_be_bytes([frame[l4 + 4], frame[l4 + 5], frame[l4 + 6], frame[l4 + 7]]);
    let id = u16::from_be_bytes([frame[18], frame[19]]);
    let mut out = Vec::new();
    for (i, chunk) in payload.chunks(mss).enumerate() {
        let last = hdr + (i + 1) * mss >= frame.len();
        let mut s = frame[..hdr].to_vec();
        s.extend_from_slice(chunk);
        s[16..18].copy_from_slice(&((ihl + thl + chunk.len()) as u16).to_be_bytes());
        s[18..20].copy_from_slice(&id.wrapping_add(i as u16).to_be_bytes());
        s[24..26].fill(0);
        let mut sum: u32 = 0;
        for c in s[14..14 + ihl].chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        s[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        s[l4 + 4..l4 + 8].copy_from_slice(&seq.wrapping_add((i * mss) as u32).to_be_bytes());
        if !last {
            s[l4 + 13] &= !0x09; // FIN and PSH on the last segment only
        }
        fill_checksum(&mut s, 1 | 4 | (l4 as u32) << 16);
        out.push(s);
    }
    Ok(out)
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
            // With receive checksum offload, TCP/UDP over IPv4 frames carry the verdict of a check made here.
            let verdict = if self.offload_rx { checksum_verdict(&f) } else { None };
            let ppi = if verdict.is_some() { 16 } else { 0 };
            let mut m = vec![0u8; 44 + ppi + f.len()];
            wr32(&mut m, 0, RNDIS_PACKET);
            let total = m.len() as u32;
            wr32(&mut m, 4, total);
            wr32(&mut m, 8, 36 + ppi as u32);
            wr32(&mut m, 12, f.len() as u32);
            if let Some(v) = verdict {
                wr32(&mut m, 28, 36); // per_pkt_info_offset
                wr32(&mut m, 32, 16); // per_pkt_info_len
                for (i, x) in [16, PPI_CHECKSUM, 12, v].iter().enumerate() {
                    wr32(&mut m, 44 + 4 * i, *x);
                }
            }
            m[44 + ppi..].copy_from_slice(&f);
            if !self.send_rndis(io, &m, false) {
                self.pending_frames.push_front(f);
                break;
            }
        }
    }
}
