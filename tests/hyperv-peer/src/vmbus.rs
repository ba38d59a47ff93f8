//! The VMBus server half of the model, as the host's side of Linux `drivers/hv/` speaks it (channel messages in
//! `include/linux/hyperv.h`): InitiateContact with exact-match version negotiation (connection 4 and the message
//! connection id from 5.0), RequestOffers with the NIC offered late, GPADLs (header + bodies) and their teardown,
//! OpenChannel over the ring GPADL, CloseChannel, rescind and RelidReleased, and the channels' rings served to the
//! device back ends. Every encoding here is the model's own. Where QEMU's VMBus server (`hw/hyperv/vmbus.c`, a
//! real host the guest runs on nested) is stricter than the protocol text, the model is as strict: GPADLs are
//! whole pages from offset 0, rings have a data page, messages arrive padded to 8 bytes.

use crate::backend::{Backend, GuestPacket, Io, PageList};
use crate::bytes::{rd16, rd32, rd64, wr32};
use crate::hypervisor;
use crate::{relid, HostConfig, Shared, State};
use platform_hyperv::mem::host::HostMemory;
use platform_hyperv::vmbus::guid::{self, Guid};
use platform_hyperv::vmbus::ring::host_side::HostRing;
use platform_hyperv::vmbus::ring::{self, Direction};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

/// VMBus channel message types (`CHANNELMSG_*`).
pub(crate) mod msgtype {
    pub const OFFER: u32 = 1;
    pub const RESCIND: u32 = 2;
    pub const REQUEST_OFFERS: u32 = 3;
    pub const ALL_OFFERS_DELIVERED: u32 = 4;
    pub const OPEN: u32 = 5;
    pub const OPEN_RESULT: u32 = 6;
    pub const CLOSE: u32 = 7;
    pub const GPADL_HEADER: u32 = 8;
    pub const GPADL_BODY: u32 = 9;
    pub const GPADL_CREATED: u32 = 10;
    pub const GPADL_TEARDOWN: u32 = 11;
    pub const GPADL_TORNDOWN: u32 = 12;
    pub const RELID_RELEASED: u32 = 13;
    pub const INITIATE_CONTACT: u32 = 14;
    pub const VERSION_RESPONSE: u32 = 15;
    pub const UNLOAD: u32 = 16;
    pub const UNLOAD_RESPONSE: u32 = 17;
}

/// Connection id the host assigns for signalling channel `relid`.
pub(crate) fn connection_id(relid: u32) -> u32 {
    0x2000 + relid
}

/// The message connection id the host hands out in a 5.x version response.
pub const HOST_MSG_CONN_ID: u32 = 0x7;

/// One offered device: its class, instance, state, rings (once open) and back end.
pub(crate) struct Channel {
    class: Guid,
    instance: Guid,
    offered: bool,
    rescinded: bool,
    rings: Option<(HostRing, HostRing)>,
    backlog: VecDeque<Vec<u8>>,
    backend: Box<dyn Backend>,
}

impl Channel {
    /// A not yet offered channel of `class` for back end `backend`; the instance GUID encodes `relid`.
    pub fn new(relid: u32, class: Guid, backend: Box<dyn Backend>) -> Self {
        let mut inst = [0u8; 16];
        inst[0] = relid as u8;
        inst[15] = 0x5d;
        Self {
            class,
            instance: Guid(inst),
            offered: false,
            rescinded: false,
            rings: None,
            backlog: VecDeque::new(),
            backend,
        }
    }
}

/// The server's state: the negotiated version, what the guest posted and signalled, GPADLs and channels.
pub(crate) struct Server {
    /// The one version the host accepts.
    host_version: u32,
    version: Option<u32>,
    from_guest: VecDeque<(u32, Vec<u8>)>,
    signaled: Vec<u32>,
    offers_requested: bool,
    nic_due: Option<Instant>,
    gpadls: HashMap<u32, PageList>,
    gpadl_owner: HashMap<u32, u32>,
    partial: Option<(u32, u32, usize, PageList)>,
    channels: BTreeMap<u32, Channel>,
    released: Vec<u32>,
}

impl Server {
    /// A server for `cfg` with `channels` to offer.
    pub fn new(cfg: &HostConfig, channels: BTreeMap<u32, Channel>) -> Self {
        Self {
            host_version: cfg.vmbus_version,
            version: None,
            from_guest: VecDeque::new(),
            signaled: Vec::new(),
            offers_requested: false,
            nic_due: None,
            gpadls: HashMap::new(),
            gpadl_owner: HashMap::new(),
            partial: None,
            channels,
            released: Vec::new(),
        }
    }

    /// Whether a message posted to connection `conn` reaches the server: InitiateContact goes to connection 1 or,
    /// on hosts that speak VMBus 5.0 or later, 4; other messages to 1 before a 5.x version was negotiated and to
    /// [`HOST_MSG_CONN_ID`] after.
    pub fn message_port_open(&self, conn: u32, msg: &[u8]) -> bool {
        if rd32(msg, 0) == msgtype::INITIATE_CONTACT {
            // Connection 4 exists only on hosts that speak VMBus 5.0 or later.
            conn == 1 || (conn == 4 && self.host_version >= 5 << 16)
        } else {
            match self.version {
                Some(nv) if nv >= 5 << 16 => conn == HOST_MSG_CONN_ID,
                _ => conn == 1,
            }
        }
    }

    /// Queues a message the guest posted.
    pub fn posted(&mut self, conn: u32, msg: Vec<u8>) {
        self.from_guest.push_back((conn, msg));
    }

    /// The guest signalled connection `conn` (HvSignalEvent): marks its channel for service. `false` when no
    /// channel has that connection id.
    pub fn signaled(&mut self, conn: u32) -> bool {
        let Some(relid) = self.channels.keys().copied().find(|r| connection_id(*r) == conn) else { return false };
        if !self.signaled.contains(&relid) {
            self.signaled.push(relid);
        }
        true
    }

    /// Whether guest work is waiting (a posted message or a signalled channel).
    pub fn busy(&self) -> bool {
        !self.from_guest.is_empty() || !self.signaled.is_empty()
    }

    /// The negotiated version.
    pub fn version(&self) -> Option<u32> {
        self.version
    }

    /// Whether the guest released `relid` after a rescind.
    pub fn released(&self, relid: u32) -> bool {
        self.released.contains(&relid)
    }

    /// The guest-bound ring of `relid`, when the channel is open.
    pub fn inbound_ring(&self, relid: u32) -> Option<&HostRing> {
        self.channels.get(&relid).and_then(|c| c.rings.as_ref()).map(|(_, inr)| inr)
    }
}

/// Rescinds the channel `relid` (the device is removed): closes its rings and tells the guest.
pub(crate) fn rescind(st: &mut State, relid: u32) {
    if let Some(c) = st.bus.channels.get_mut(&relid) {
        c.rescinded = true;
        c.rings = None;
    }
    let mut m = vec![0u8; 12];
    wr32(&mut m, 0, msgtype::RESCIND);
    wr32(&mut m, 8, relid);
    st.events.push(format!("rescind {relid}"));
    st.hv.post(m);
}

/// One round of the server: handles posted messages, offers the NIC when due, serves signalled channels, polls
/// the back ends (when `poll`), and writes backlogged packets to the guest, setting the channels' event flags.
/// Returns whether the guest must be interrupted.
pub(crate) fn step(shared: &Shared, st: &mut State, poll: bool) -> bool {
    let mut interrupt = false;
    while let Some((_, msg)) = st.bus.from_guest.pop_front() {
        handle_message(shared, st, &msg);
    }
    if st.bus.nic_due.is_some_and(|t| Instant::now() >= t) {
        st.bus.nic_due = None;
        queue_offers(st, true);
    }
    let signaled = std::mem::take(&mut st.bus.signaled);
    for relid in signaled {
        service_channel(shared, st, relid);
    }
    let relids: Vec<u32> = st.bus.channels.keys().copied().collect();
    if poll {
        for &r in &relids {
            run_backend(shared, st, r, |b, io| b.poll(io));
        }
    }
    for r in relids {
        let signal = st.bus.channels.get_mut(&r).is_some_and(flush_backlog);
        if signal {
            st.hv.set_event_flag(&shared.mem, r);
            interrupt = true;
        }
    }
    interrupt
}

fn offer_message(relid: u32, c: &Channel) -> Vec<u8> {
    let mut m = vec![0u8; 196];
    wr32(&mut m, 0, msgtype::OFFER);
    m[8..24].copy_from_slice(&c.class.0);
    m[24..40].copy_from_slice(&c.instance.0);
    wr32(&mut m, 184, relid);
    wr32(&mut m, 192, connection_id(relid));
    m
}

fn queue_offers(st: &mut State, include_nic: bool) {
    let relids: Vec<u32> = st.bus.channels.keys().copied().collect();
    for r in relids {
        let c = &st.bus.channels[&r];
        if c.offered || c.rescinded || (r == relid::NIC && !include_nic) {
            continue;
        }
        let m = offer_message(r, c);
        st.hv.post(m);
        if let Some(c) = st.bus.channels.get_mut(&r) {
            c.offered = true;
        }
        st.events.push(format!("offer {r} {}", guid::class_name(&st.bus.channels[&r].class)));
    }
}

/// One guest channel message.
fn handle_message(shared: &Shared, st: &mut State, msg: &[u8]) {
    let ty = rd32(msg, 0);
    let need = |n: usize, st: &mut State| {
        if msg.len() < n {
            st.errors.push(format!("message type {ty}: {} bytes, needs {n}", msg.len()));
            false
        } else {
            true
        }
    };
    match ty {
        msgtype::INITIATE_CONTACT if need(40, st) => {
            let v = rd32(msg, 8);
            let ok = v == shared.cfg.vmbus_version;
            st.events.push(format!(
                "initiate contact {}.{} -> {}",
                v >> 16,
                v & 0xffff,
                if ok { "accepted" } else { "refused" }
            ));
            if ok {
                if v >= 5 << 16 && msg[16] != hypervisor::SINT as u8 {
                    st.errors.push(format!("InitiateContact names message SINT {}", msg[16]));
                }
                if v < 5 << 16 && rd64(msg, 16) == 0 {
                    st.errors.push("InitiateContact without an interrupt page".into());
                }
                if rd64(msg, 24) == 0 || rd64(msg, 32) == 0 {
                    st.errors.push("InitiateContact without monitor pages".into());
                }
                st.bus.version = Some(v);
            }
            let mut r = vec![0u8; 16];
            wr32(&mut r, 0, msgtype::VERSION_RESPONSE);
            r[8] = u8::from(ok);
            wr32(&mut r, 12, if ok && v >= 5 << 16 { HOST_MSG_CONN_ID } else { 0 });
            st.hv.post(r);
        }
        msgtype::REQUEST_OFFERS => {
            st.events.push("request offers".into());
            st.bus.offers_requested = true;
            queue_offers(st, false);
            let mut r = vec![0u8; 8];
            wr32(&mut r, 0, msgtype::ALL_OFFERS_DELIVERED);
            st.hv.post(r);
            st.events.push("all offers delivered".into());
            st.bus.nic_due = Some(Instant::now() + shared.cfg.nic_delay);
        }
        msgtype::GPADL_HEADER if need(28, st) => {
            let relid = rd32(msg, 8);
            let gpadl = rd32(msg, 12);
            let range_buflen = rd16(msg, 16) as usize;
            let count = rd16(msg, 18);
            let total = range_buflen.saturating_sub(8) / 8;
            if count != 1 {
                st.errors.push(format!("GPADL {gpadl:#x} with {count} ranges"));
            }
            let mut pl = PageList { pfns: Vec::new(), offset: rd32(msg, 24) as usize, len: rd32(msg, 20) as usize };
            // A real host (QEMU's hw/hyperv/vmbus.c handle_gpadl_header) ignores a GPADL that is not one range,
            // page aligned, whose byte count is its pages: the guest would wait for GpadlCreated forever.
            if pl.offset != 0 || pl.len != total * 4096 {
                st.errors.push(format!(
                    "GPADL {gpadl:#x}: byte_offset {} and byte_count {} do not describe {total} whole pages",
                    pl.offset, pl.len
                ));
                return;
            }
            let here = (msg.len() - 28) / 8;
            for i in 0..here.min(total) {
                pl.pfns.push(rd64(msg, 28 + i * 8));
            }
            st.bus.partial = Some((relid, gpadl, total, pl));
            finish_gpadl(st);
        }
        msgtype::GPADL_BODY if need(16, st) => {
            let gpadl = rd32(msg, 12);
            match st.bus.partial.as_mut() {
                Some((_, g, total, pl)) if *g == gpadl => {
                    let here = (msg.len() - 16) / 8;
                    for i in 0..here {
                        if pl.pfns.len() < *total {
                            pl.pfns.push(rd64(msg, 16 + i * 8));
                        }
                    }
                }
                _ => st.errors.push(format!("GPADL body for unknown handle {gpadl:#x}")),
            }
            finish_gpadl(st);
        }
        msgtype::GPADL_TEARDOWN if need(16, st) => {
            let gpadl = rd32(msg, 12);
            st.bus.gpadls.remove(&gpadl);
            st.bus.gpadl_owner.remove(&gpadl);
            st.events.push(format!("gpadl teardown {gpadl:#x}"));
            let mut r = vec![0u8; 12];
            wr32(&mut r, 0, msgtype::GPADL_TORNDOWN);
            wr32(&mut r, 8, gpadl);
            st.hv.post(r);
        }
        msgtype::OPEN if need(148, st) => {
            let relid = rd32(msg, 8);
            let gpadl = rd32(msg, 16);
            let down = rd32(msg, 24) as usize;
            let mut status = 0u32;
            let pl = st.bus.gpadls.get(&gpadl).cloned();
            match (st.bus.channels.get_mut(&relid), pl) {
                // Each ring needs its control page and at least one data page (QEMU's ringbufs_init).
                (Some(c), Some(pl)) if !c.rescinded && down >= 2 && down + 2 <= pl.pfns.len() => {
                    match ring_pair(&shared.mem, &pl, down) {
                        Some((out, inr)) => {
                            let _ = inr.set_pending_send_feature();
                            c.rings = Some((out, inr));
                        }
                        None => status = 0xC000_0001,
                    }
                }
                _ => status = 0xC000_0001,
            }
            st.events.push(format!("open {relid} -> {status:#x}"));
            let mut r = vec![0u8; 20];
            wr32(&mut r, 0, msgtype::OPEN_RESULT);
            wr32(&mut r, 8, relid);
            wr32(&mut r, 12, rd32(msg, 12));
            wr32(&mut r, 16, status);
            st.hv.post(r);
            if status == 0 {
                run_backend(shared, st, relid, |b, io| b.opened(io));
            }
        }
        msgtype::CLOSE if need(12, st) => {
            let relid = rd32(msg, 8);
            if let Some(c) = st.bus.channels.get_mut(&relid) {
                c.rings = None;
            }
            st.events.push(format!("close {relid}"));
        }
        msgtype::RELID_RELEASED if need(12, st) => {
            let relid = rd32(msg, 8);
            st.bus.released.push(relid);
            st.events.push(format!("relid released {relid}"));
        }
        msgtype::UNLOAD => {
            let mut r = vec![0u8; 8];
            wr32(&mut r, 0, msgtype::UNLOAD_RESPONSE);
            st.hv.post(r);
        }
        other => st.errors.push(format!("unexpected message type {other}")),
    }
}

/// Completes a GPADL whose PFNs have all arrived.
fn finish_gpadl(st: &mut State) {
    let done = matches!(&st.bus.partial, Some((_, _, total, pl)) if pl.pfns.len() >= *total);
    if !done {
        return;
    }
    let Some((relid, gpadl, _, pl)) = st.bus.partial.take() else { return };
    st.events.push(format!("gpadl created {gpadl:#x} relid {relid} pages {}", pl.pfns.len()));
    st.bus.gpadls.insert(gpadl, pl);
    st.bus.gpadl_owner.insert(gpadl, relid);
    let mut r = vec![0u8; 20];
    wr32(&mut r, 0, msgtype::GPADL_CREATED);
    wr32(&mut r, 8, relid);
    wr32(&mut r, 12, gpadl);
    st.hv.post(r);
}

/// The guest's rings inside the ring GPADL: its outbound ring in pages `0..down`, the inbound one after. The
/// rings are only usable when the GPADL's pages are contiguous in one allocation (they are: one DMA allocation).
fn ring_pair(mem: &HostMemory, pl: &PageList, down: usize) -> Option<(HostRing, HostRing)> {
    let first = pl.pfns[0];
    if pl.pfns.iter().enumerate().any(|(i, p)| *p != first + i as u64) {
        return None;
    }
    let (region, base) = mem.lookup(first * 4096)?;
    let out = HostRing::new(region.clone(), base, down, Direction::Outbound).ok()?;
    let inr = HostRing::new(region, base + down * 4096, pl.pfns.len() - down, Direction::Inbound).ok()?;
    Some((out, inr))
}

/// Runs `f` on the back end of `relid` and sends what it produced.
fn run_backend(shared: &Shared, st: &mut State, relid: u32, f: impl FnOnce(&mut dyn Backend, &mut Io)) {
    let State { bus: Server { channels, gpadls, .. }, events, .. } = st;
    let Some(c) = channels.get_mut(&relid) else { return };
    if c.rings.is_none() {
        return;
    }
    let mut io = Io { mem: &shared.mem, gpadls, out: Vec::new(), events, now: Instant::now(), start: shared.start };
    f(c.backend.as_mut(), &mut io);
    let out = std::mem::take(&mut io.out);
    c.backlog.extend(out);
}

/// Writes backlogged packets into the guest-bound ring; returns whether to signal the guest.
fn flush_backlog(c: &mut Channel) -> bool {
    let Some((_, inr)) = &c.rings else { return false };
    let mut signal = false;
    while let Some(p) = c.backlog.front() {
        match inr.write(p) {
            Ok(s) => {
                signal |= s;
                c.backlog.pop_front();
            }
            Err(ring::RingError::Full { .. }) => break,
            Err(_) => break,
        }
    }
    signal
}

/// Drains the guest's outbound ring of `relid` as a host does: interrupts masked while reading, then unmasked and
/// re-checked.
fn service_channel(shared: &Shared, st: &mut State, relid: u32) {
    loop {
        let Some((out, _)) = st.bus.channels.get(&relid).and_then(|c| c.rings.clone()) else { return };
        let _ = out.set_interrupt_mask(true);
        let pkts = match out.drain() {
            Ok(p) => p,
            Err(e) => {
                st.errors.push(format!("channel {relid}: {e}"));
                return;
            }
        };
        for raw in &pkts {
            match GuestPacket::parse(raw) {
                Some(p) => run_backend(shared, st, relid, |b, io| b.packet(io, &p)),
                None => st.errors.push(format!("channel {relid}: malformed packet of {} bytes", raw.len())),
            }
        }
        let _ = out.set_interrupt_mask(false);
        // A guest blocked on a full ring waits for a signal once space is free.
        let pending = out.peek_field(ring::PENDING_SEND_SZ).unwrap_or(0);
        if pending != 0 {
            st.hv.set_event_flag(&shared.mem, relid);
        }
        let more = out.peek_field(ring::WRITE_INDEX).ok() != out.peek_field(ring::READ_INDEX).ok();
        if pkts.is_empty() && !more {
            return;
        }
        if !more {
            return;
        }
    }
}
