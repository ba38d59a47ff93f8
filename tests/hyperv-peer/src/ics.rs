//! The host side of the integration services: version negotiation on open, heartbeats, shutdown requests, time
//! samples and KVP enumeration of the guest's auto pool plus GET_IP_INFO. Written from `include/linux/hyperv.h`
//! (`icmsg_hdr`, `icmsg_negotiate`, ...), `include/uapi/linux/hyperv.h` (`hv_kvp_msg`) and `hv_util.c`.

use crate::backend::{pkt, Backend, GuestPacket, Io};
use crate::bytes::{rd16, rd32, rd64, wr16, wr32, wr64};
use crate::{lock, HostConfig};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HDR: usize = 28;
const FLAG_TRANSACTION: u8 = 1;
const FLAG_REQUEST: u8 = 2;
const FLAG_RESPONSE: u8 = 4;
const HV_S_CONT: u32 = 0x8007_0103;
const WLTIMEDELTA: u64 = 116_444_736_000_000_000;
/// Size of a KVP message buffer: the IC headers plus `struct hv_kvp_msg` (7430 bytes).
const KVP_MSG: usize = HDR + 4 + 7426;

/// Which service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Heartbeat,
    Shutdown,
    Timesync,
    Kvp,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Heartbeat => "heartbeat",
            Kind::Shutdown => "shutdown",
            Kind::Timesync => "timesync",
            Kind::Kvp => "kvp",
        }
    }

    /// Service versions the host offers (oldest first, as hosts list them).
    fn versions(self) -> &'static [(u16, u16)] {
        match self {
            Kind::Heartbeat => &[(1, 0), (3, 0)],
            Kind::Shutdown => &[(1, 0), (3, 0), (3, 1), (3, 2)],
            Kind::Timesync => &[(1, 0), (3, 0), (4, 0)],
            Kind::Kvp => &[(1, 0), (3, 0), (4, 0), (5, 0)],
        }
    }
}

/// What the services saw.
#[derive(Debug, Default)]
pub struct IcState {
    /// Negotiated `(framework, service)` versions by service name, `major << 16 | minor`.
    pub negotiated: BTreeMap<String, (u32, u32)>,
    /// Heartbeats answered with sequence + 1.
    pub heartbeats: u64,
    /// A shutdown to send (`shutdown_msg_data.flags`).
    pub shutdown_request: Option<u32>,
    /// The guest's status for the shutdown request.
    pub shutdown_status: Option<u32>,
    /// Time samples answered.
    pub time_samples: u64,
    /// KVP auto-pool key/values the guest reported.
    pub kvp: BTreeMap<String, String>,
    /// Start a new enumeration.
    pub kvp_refresh: bool,
    /// Enumerations completed.
    pub kvp_rounds: u64,
    /// IPv4 address from GET_IP_INFO.
    pub ip_info: Option<String>,
    /// Protocol errors seen.
    pub errors: Vec<String>,
}

fn utf16(s: &[u8]) -> String {
    let u: Vec<u16> = s.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|&x| x != 0).collect();
    String::from_utf16_lossy(&u)
}

pub(crate) struct IcHost {
    kind: Kind,
    state: Arc<Mutex<IcState>>,
    every: Duration,
    negotiated: Option<u32>,
    outstanding: Option<(u64, u16, u64)>,
    next_tid: u64,
    last_heartbeat: Option<Instant>,
    seq: u64,
    time_sent: bool,
    kvp_index: Option<u32>,
    kvp_ip_asked: bool,
    kvp_started: bool,
}

impl IcHost {
    pub fn new(kind: Kind, cfg: &HostConfig, state: Arc<Mutex<IcState>>) -> Self {
        Self {
            kind,
            state,
            every: cfg.heartbeat_every,
            negotiated: None,
            outstanding: None,
            next_tid: 1,
            last_heartbeat: None,
            seq: 1000,
            time_sent: false,
            kvp_index: None,
            kvp_ip_asked: false,
            kvp_started: false,
        }
    }

    fn message(&self, msgtype: u16, body: usize) -> Vec<u8> {
        let mut b = vec![0u8; HDR + body];
        wr32(&mut b, 4, (HDR - 8 + body) as u32);
        let (fmaj, smaj, smin) = match self.negotiated {
            Some(v) => (3u16, (v >> 16) as u16, v as u16),
            None => (1, 1, 0),
        };
        wr16(&mut b, 8, fmaj);
        wr16(&mut b, 12, msgtype);
        wr16(&mut b, 14, smaj);
        wr16(&mut b, 16, smin);
        wr16(&mut b, 18, body as u16);
        b[25] = FLAG_TRANSACTION | FLAG_REQUEST;
        b
    }

    fn send(&mut self, io: &mut Io, msg: Vec<u8>, msgtype: u16, extra: u64) {
        let tid = self.next_tid;
        self.next_tid += 1;
        self.outstanding = Some((tid, msgtype, extra));
        io.out.push(pkt::inband(tid, 0, &msg));
    }

    fn negotiate(&mut self, io: &mut Io) {
        let fw = [(1u16, 0u16), (3, 0)];
        let srv = self.kind.versions();
        let mut m = self.message(0, 8 + 4 * (fw.len() + srv.len()));
        wr16(&mut m, HDR, fw.len() as u16);
        wr16(&mut m, HDR + 2, srv.len() as u16);
        for (i, (a, b)) in fw.iter().chain(srv.iter()).enumerate() {
            wr16(&mut m, HDR + 8 + i * 4, *a);
            wr16(&mut m, HDR + 10 + i * 4, *b);
        }
        self.send(io, m, 0, 0);
    }

    fn kvp_enumerate(&mut self, io: &mut Io, index: u32) {
        let mut m = self.message(2, KVP_MSG - HDR);
        m[HDR] = 3; // KVP_OP_ENUMERATE
        m[HDR + 1] = 2; // KVP_POOL_AUTO
        wr32(&mut m, HDR + 4, index);
        self.kvp_index = Some(index);
        self.send(io, m, 2, u64::from(index));
    }

    fn kvp_get_ip(&mut self, io: &mut Io) {
        let mut m = self.message(2, KVP_MSG - HDR);
        m[HDR] = 4; // KVP_OP_GET_IP_INFO
        for (i, u) in "00:15:5D:12:34:56".encode_utf16().enumerate() {
            wr16(&mut m, HDR + 4 + i * 2, u);
        }
        self.kvp_ip_asked = true;
        self.send(io, m, 2, u64::MAX);
    }

    fn response(&mut self, io: &mut Io, p: &GuestPacket) {
        let b = p.payload;
        let name = self.kind.name();
        let Some((tid, msgtype, extra)) = self.outstanding else {
            lock(&self.state).errors.push(format!("{name}: response without a request"));
            return;
        };
        if p.tid != tid || b.len() < HDR || rd16(b, 12) != msgtype || b[25] != FLAG_TRANSACTION | FLAG_RESPONSE {
            lock(&self.state).errors.push(format!("{name}: bad response (tid {:#x}, {} bytes)", p.tid, b.len()));
            return;
        }
        self.outstanding = None;
        let status = rd32(b, 20);
        let mut st = lock(&self.state);
        match msgtype {
            0 => {
                if b.len() < HDR + 16 || rd16(b, HDR) != 1 || rd16(b, HDR + 2) != 1 {
                    st.errors.push(format!("{name}: no common version"));
                    return;
                }
                let fw = (u32::from(rd16(b, HDR + 8)) << 16) | u32::from(rd16(b, HDR + 10));
                let sv = (u32::from(rd16(b, HDR + 12)) << 16) | u32::from(rd16(b, HDR + 14));
                st.negotiated.insert(name.to_string(), (fw, sv));
                self.negotiated = Some(sv);
                io.events.push(format!(
                    "ic {name}: negotiated framework {}.{} service {}.{}",
                    fw >> 16,
                    fw & 0xffff,
                    sv >> 16,
                    sv & 0xffff
                ));
            }
            1 => {
                if b.len() >= HDR + 8 && rd64(b, HDR) == extra + 1 {
                    st.heartbeats += 1;
                } else {
                    st.errors.push("heartbeat: sequence not incremented".into());
                }
            }
            3 => {
                st.shutdown_status = Some(status);
                io.events.push(format!("ic shutdown: guest answered {status:#x}"));
            }
            4 => st.time_samples += 1,
            2 if extra == u64::MAX && status == 0 && b.len() >= HDR + 4 + 258 + 64 => {
                st.ip_info = Some(utf16(&b[HDR + 4 + 258..HDR + 4 + 258 + 2048.min(b.len() - HDR - 262)]));
            }
            2 if extra == u64::MAX => {}
            2 => {
                drop(st);
                if status == HV_S_CONT || status != 0 {
                    self.kvp_index = None;
                    let mut st = lock(&self.state);
                    st.kvp_rounds += 1;
                    drop(st);
                    if !self.kvp_ip_asked {
                        self.kvp_get_ip(io);
                    }
                    return;
                }
                if b.len() < HDR + 8 + 12 + 512 + 2048 {
                    lock(&self.state).errors.push("kvp: short enumerate response".into());
                    return;
                }
                let base = HDR + 8;
                let ks = rd32(b, base + 4) as usize;
                let vs = rd32(b, base + 8) as usize;
                let key = utf16(&b[base + 12..base + 12 + ks.min(512)]);
                let value = utf16(&b[base + 12 + 512..base + 12 + 512 + vs.min(2048)]);
                lock(&self.state).kvp.insert(key, value);
                self.kvp_enumerate(io, extra as u32 + 1);
            }
            _ => {}
        }
    }
}

impl Backend for IcHost {
    fn opened(&mut self, io: &mut Io) {
        self.negotiate(io);
    }

    fn packet(&mut self, io: &mut Io, p: &GuestPacket) {
        if p.ty != pkt::INBAND {
            lock(&self.state).errors.push(format!("{}: packet type {}", self.kind.name(), p.ty));
            return;
        }
        self.response(io, p);
    }

    fn poll(&mut self, io: &mut Io) {
        if self.negotiated.is_none() || self.outstanding.is_some() {
            return;
        }
        match self.kind {
            Kind::Heartbeat => {
                if self.last_heartbeat.is_none_or(|t| io.now.duration_since(t) >= self.every) {
                    self.last_heartbeat = Some(io.now);
                    self.seq += 10;
                    let mut m = self.message(1, 40);
                    wr64(&mut m, HDR, self.seq);
                    let seq = self.seq;
                    self.send(io, m, 1, seq);
                }
            }
            Kind::Shutdown => {
                let req = lock(&self.state).shutdown_request.take();
                if let Some(flags) = req {
                    let mut m = self.message(3, 12 + 2048);
                    wr32(&mut m, HDR + 4, 30);
                    wr32(&mut m, HDR + 8, flags);
                    for (i, c) in b"Shutdown requested by the test host".iter().enumerate() {
                        m[HDR + 12 + i] = *c;
                    }
                    io.events.push(format!("ic shutdown: request flags {flags}"));
                    self.send(io, m, 3, 0);
                }
            }
            Kind::Timesync => {
                if !self.time_sent {
                    self.time_sent = true;
                    let v4 = self.negotiated.is_some_and(|v| v >= 4 << 16);
                    let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                    let host = WLTIMEDELTA + (unix.as_nanos() / 100) as u64;
                    let mut m = self.message(4, if v4 { 24 } else { 32 });
                    wr64(&mut m, HDR, host);
                    if v4 {
                        wr64(&mut m, HDR + 8, io.start.elapsed().as_nanos() as u64 / 100);
                        m[HDR + 16] = 1; // ICTIMESYNCFLAG_SYNC
                    } else {
                        m[HDR + 24] = 1;
                    }
                    self.send(io, m, 4, 0);
                }
            }
            Kind::Kvp => {
                let refresh = std::mem::take(&mut lock(&self.state).kvp_refresh);
                if !self.kvp_started || refresh {
                    self.kvp_started = true;
                    self.kvp_ip_asked = false;
                    self.kvp_enumerate(io, 0);
                }
            }
        }
    }
}
