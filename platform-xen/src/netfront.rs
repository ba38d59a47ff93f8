//! netfront: a Xen virtual NIC (`vif`) as a [`NetDevice`]. One TX and one RX ring of 256 slots on one event
//! channel; every ring slot owns one page, granted once for the device's lifetime (read-only for TX, writable
//! for RX: `request-rx-copy`, the backend copies frames in). Frames are copied out of RX pages into private
//! buffers before anyone looks at them, and every response field is checked first (no double fetch); a bad
//! response breaks the device with a [`DeviceError::Protocol`] naming device, ring and value.
//! Offloads: transmit checksums (`NETTXF_csum_blank`, the pseudo-header sum in the field, unless the backend
//! says `feature-no-csum-offload`), TCP segmentation (`feature-gso-tcpv4` with `feature-sg`: one packet of up
//! to 64 KiB over several slots, a GSO extra after the first), and on receive the `NETRXF_data_validated` /
//! `NETRXF_csum_blank` marks as [`RxFrame::checksum_valid`] and large packets the backend did not segment.
//! The ring structures' wire formats are in [`wire`].
//! Source: Xen `xen/include/public/io/netif.h` (xenstore keys
//! `tx-ring-ref`, `rx-ring-ref`, `event-channel`, `request-rx-copy`, `feature-rx-notify`, `feature-sg`,
//! `feature-no-csum-offload`, `feature-gso-tcpv4`, `mac`; guest transmit and receive wire formats, extra
//! info), `io/ring.h`.
#![forbid(unsafe_code)]

use crate::abi::DomId;
use crate::evtchn::{EventChannelOps, EvtchnPort};
use crate::gnttab::{GrantError, GrantRef, GrantTable};
use crate::ring::{ring_size, FrontRing};
use crate::shared::{SharedPage, PAGE_SIZE};
use crate::xenbus::{feature, Flavour, Frontend, Step, XenbusError};
use crate::xenstore::{XenStore, XsError};
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::task::Waker;
use libos::dev::{DeviceError, Gso, GsoKind, NetDevice, NetInfo, NetOffloads, RxFrame};
use libos::irq::WakeSlot;
use wire::{
    ExtraInfo, GsoExtraRepr, RxRequestRepr, RxResponse, RxResponseRepr, TxRequestRepr, TxResponse, TxResponseRepr,
    NETIF_RSP_NULL, NETIF_RSP_OKAY, NETRXF_CSUM_BLANK, NETRXF_DATA_VALIDATED, NETRXF_EXTRA_INFO, NETRXF_MORE_DATA,
    NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED, NETTXF_EXTRA_INFO, NETTXF_MORE_DATA, RX_SLOT, TX_SLOT,
    XEN_NETIF_EXTRA_FLAG_MORE, XEN_NETIF_GSO_TYPE_TCPV4, XEN_NETIF_MAX_TX_SIZE,
};

pub mod wire;

/// Slots per ring (256 for both).
pub const RING_SLOTS: usize = ring_size(TX_SLOT) as usize;
const _: () = assert!(ring_size(RX_SLOT) as usize == RING_SLOTS);

/// IP MTU (bytes); `mtu` is not negotiated here.
pub const MTU: usize = 1500;
/// Largest Ethernet frame sent: MTU + 14-byte header + one 802.1Q tag.
pub const MAX_FRAME: usize = MTU + 18;
/// Largest packet accepted from the backend across `more_data` fragments (`XEN_NETIF_MAX_TX_SIZE`).
pub const MAX_RX_PACKET: usize = XEN_NETIF_MAX_TX_SIZE;
/// TX slots a largest GSO packet takes: one page per fragment plus the GSO extra (18, which is also
/// `XEN_NETIF_NR_SLOTS_MIN`, the most every backend takes).
pub const MAX_GSO_SLOTS: usize = XEN_NETIF_MAX_TX_SIZE.div_ceil(PAGE_SIZE) + 1;

/// Why a netfront could not be brought up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetfrontError {
    /// Xenstore or xenbus handshake failure.
    Xenbus(XenbusError),
    /// Granting a page failed.
    Grant(GrantError),
    /// Out of memory for rings or buffers.
    NoMemory,
    /// The `mac` node is not six colon-separated hex bytes.
    BadMac(String),
    /// The backend lacks a feature we need.
    MissingFeature(&'static str),
    /// Event channel setup failed.
    Event(String),
}

impl From<XsError> for NetfrontError {
    fn from(e: XsError) -> Self {
        Self::Xenbus(XenbusError::Store(e))
    }
}
impl From<XenbusError> for NetfrontError {
    fn from(e: XenbusError) -> Self {
        Self::Xenbus(e)
    }
}
impl From<GrantError> for NetfrontError {
    fn from(e: GrantError) -> Self {
        Self::Grant(e)
    }
}

impl fmt::Display for NetfrontError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Xenbus(e) => write!(f, "{e}"),
            Self::Grant(e) => write!(f, "{e}"),
            Self::NoMemory => f.write_str("out of memory for rings and buffers"),
            Self::BadMac(v) => write!(f, "mac {v:?} is not six colon-separated hex bytes"),
            Self::MissingFeature(what) => write!(f, "backend does not offer {what}"),
            Self::Event(e) => write!(f, "event channel: {e}"),
        }
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6], NetfrontError> {
    let bad = || NetfrontError::BadMac(String::from(s));
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut mac {
        let p = parts.next().ok_or_else(bad)?;
        if p.len() != 2 {
            return Err(bad());
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(mac)
}

struct Buf {
    page: Arc<SharedPage>,
    gref: GrantRef,
}

/// The rings and granted buffers of one vif, before the backend connects.
pub struct NetRings {
    tx: FrontRing<TX_SLOT>,
    rx: FrontRing<RX_SLOT>,
    tx_ring_ref: GrantRef,
    rx_ring_ref: GrantRef,
    tx_bufs: Vec<Buf>,
    rx_bufs: Vec<Buf>,
}

impl NetRings {
    /// Allocates both rings and one page per slot, and grants them all to `backend` (buffers read-only for TX,
    /// writable for RX). Errors: [`NetfrontError::NoMemory`], [`NetfrontError::Grant`].
    pub fn new(grants: &GrantTable, backend: DomId) -> Result<Self, NetfrontError> {
        let page = || SharedPage::new().map(Arc::new).map_err(|_| NetfrontError::NoMemory);
        let tx = FrontRing::new(page()?);
        let rx = FrontRing::new(page()?);
        let tx_ring_ref = grants.grant(backend, tx.page().clone(), false)?;
        let rx_ring_ref = grants.grant(backend, rx.page().clone(), false)?;
        let mut tx_bufs = Vec::with_capacity(RING_SLOTS);
        let mut rx_bufs = Vec::with_capacity(RING_SLOTS);
        for _ in 0..RING_SLOTS {
            let p = page()?;
            tx_bufs.push(Buf { gref: grants.grant(backend, p.clone(), true)?, page: p });
            let p = page()?;
            rx_bufs.push(Buf { gref: grants.grant(backend, p.clone(), false)?, page: p });
        }
        Ok(Self { tx, rx, tx_ring_ref, rx_ring_ref, tx_bufs, rx_bufs })
    }

    /// The front-end nodes to publish (`io/netif.h`): ring grants, the event channel, receive by copy, RX
    /// notifications, scatter-gather receive, and receive offloads: packets may arrive with a blank checksum
    /// (`feature-no-csum-offload` 0) and as large TCP packets the backend did not segment (`feature-gso-tcpv4`).
    pub fn xenstore_pairs(&self, port: EvtchnPort) -> Vec<(&'static str, String)> {
        vec![
            ("tx-ring-ref", format!("{}", self.tx_ring_ref)),
            ("rx-ring-ref", format!("{}", self.rx_ring_ref)),
            ("event-channel", format!("{port}")),
            ("request-rx-copy", String::from("1")),
            ("feature-rx-notify", String::from("1")),
            ("feature-sg", String::from("1")),
            ("feature-no-csum-offload", String::from("0")),
            ("feature-gso-tcpv4", String::from("1")),
        ]
    }
}

/// Counters for diagnostics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Frames handed to the stack.
    pub rx_frames: u64,
    /// Responses with an error status or oversize packets dropped.
    pub rx_dropped: u64,
    /// Frames queued for transmission (a GSO packet counts once).
    pub tx_frames: u64,
    /// GSO packets among them.
    pub tx_gso_frames: u64,
    /// TX responses with an error status.
    pub tx_errors: u64,
    /// Event-channel notifications sent.
    pub notifies: u64,
}

/// A connected vif.
pub struct Netfront {
    info: NetInfo,
    tx: FrontRing<TX_SLOT>,
    rx: FrontRing<RX_SLOT>,
    tx_bufs: Vec<Buf>,
    rx_bufs: Vec<Buf>,
    /// TX ids (= TX buffer index) not in flight.
    tx_free: Vec<u16>,
    tx_in_flight: Vec<bool>,
    /// Extra-info slots queued after the request with this id (their `NETIF_RSP_NULL` responses follow its).
    tx_extras: Vec<u8>,
    /// `NETIF_RSP_NULL` responses due next (for the extras of the request last answered).
    tx_nulls_due: usize,
    /// Fragments of a packet spread over `more_data` responses.
    partial: Option<Vec<u8>>,
    /// Discarding the rest of an oversize packet.
    dropping: bool,
    /// The packet being gathered was marked `NETRXF_data_validated` or `NETRXF_csum_blank`.
    rx_validated: bool,
    /// Recycled frame buffers.
    pool: Vec<Vec<u8>>,
    scratch: Vec<u8>,
    events: Arc<dyn EventChannelOps>,
    port: EvtchnPort,
    slot: Option<&'static WakeSlot>,
    stats: NetStats,
    broken: Option<DeviceError>,
}

/// Frame buffers kept for reuse.
const POOL_MAX: usize = 64;

impl Netfront {
    /// A connected device over `rings`, notifying the backend on `port` through `events`; `slot` is the port's
    /// wake-up slot (`None` in tests); `offloads` as [`offloads`] made them from the backend's features. Posts
    /// every RX buffer and notifies the backend. Errors: the notification failed.
    pub fn start(
        name: String,
        mac: [u8; 6],
        rings: NetRings,
        offloads: NetOffloads,
        events: Arc<dyn EventChannelOps>,
        port: EvtchnPort,
        slot: Option<&'static WakeSlot>,
    ) -> Result<Self, DeviceError> {
        let NetRings { tx, rx, tx_bufs, rx_bufs, .. } = rings;
        let mut dev = Self {
            info: NetInfo { name, mac, mtu: MTU, offloads },
            tx,
            rx,
            tx_bufs,
            rx_bufs,
            tx_free: (0..RING_SLOTS as u16).rev().collect(),
            tx_in_flight: vec![false; RING_SLOTS],
            tx_extras: vec![0; RING_SLOTS],
            tx_nulls_due: 0,
            partial: None,
            dropping: false,
            rx_validated: false,
            pool: Vec::new(),
            scratch: Vec::with_capacity(MAX_FRAME),
            events,
            port,
            slot,
            stats: NetStats::default(),
            broken: None,
        };
        dev.flush()?;
        Ok(dev)
    }

    /// Counters.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    fn fail(&mut self, ring: &str, detail: String) -> DeviceError {
        let e = DeviceError::Protocol { device: self.info.name.clone(), detail: format!("{ring} ring: {detail}") };
        log::error!("{e}; device disabled");
        self.broken = Some(e.clone());
        e
    }

    fn check(&self) -> Result<(), DeviceError> {
        match &self.broken {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// The next RX response slot, copied out; `Ok(None)` when none is published (after re-arming `rsp_event`).
    fn next_rx_slot(&mut self) -> Result<Option<(u32, [u8; RX_SLOT])>, DeviceError> {
        loop {
            let cons = self.rx.rsp_cons();
            match self.rx.next_response() {
                Ok(Some(raw)) => return Ok(Some((cons, raw))),
                Ok(None) => match self.rx.final_check_for_responses() {
                    Ok(true) => continue,
                    Ok(false) => return Ok(None),
                    Err(e) => return Err(self.fail("rx", format!("{e}"))),
                },
                Err(e) => return Err(self.fail("rx", format!("{e}"))),
            }
        }
    }

    /// Skips the `netif_extra_info` slots following a response with `NETRXF_extra_info` (their buffers are
    /// simply posted again). The backend publishes a packet's slots together, so a missing one is an error.
    fn skip_extras(&mut self) -> Result<(), DeviceError> {
        for _ in 0..RING_SLOTS {
            let Some((_, raw)) = self.next_rx_slot()? else {
                return Err(self.fail("rx", String::from("extra-info slot announced but not published")));
            };
            // A copied-out RX slot always holds a whole netif_extra_info.
            if ExtraInfo::new_unchecked(&raw[..]).flags() & XEN_NETIF_EXTRA_FLAG_MORE == 0 {
                return Ok(());
            }
        }
        Err(self.fail("rx", String::from("endless chain of extra-info slots")))
    }

    /// Re-arms `rsp_event` so the next TX response raises an event (`RING_FINAL_CHECK_FOR_RESPONSES`,
    /// io/ring.h) and reclaims the responses that arrived meanwhile. Errors: a hostile response index (the
    /// device is then failed).
    fn arm_tx_completion(&mut self) -> Result<(), DeviceError> {
        match self.tx.final_check_for_responses() {
            Ok(true) => self.reclaim_tx(),
            Ok(false) => Ok(()),
            Err(e) => Err(self.fail("tx", format!("{e}"))),
        }
    }

    /// Reclaims TX slots the backend has completed.
    fn reclaim_tx(&mut self) -> Result<(), DeviceError> {
        loop {
            let raw = match self.tx.next_response() {
                Ok(Some(raw)) => raw,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.fail("tx", format!("{e}"))),
            };
            let r = match TxResponseRepr::parse(&TxResponse::new_unchecked(&raw[..])) {
                Ok(r) => r,
                Err(e) => return Err(self.fail("tx", format!("{e}"))),
            };
            if self.tx_nulls_due > 0 {
                // The response of an extra-info slot: no id (the extra overlays it), status NETIF_RSP_NULL.
                if r.status != NETIF_RSP_NULL {
                    return Err(self.fail("tx", format!("status {} for an extra-info slot", r.status)));
                }
                self.tx_nulls_due -= 1;
                continue;
            }
            let id = usize::from(r.id);
            if id >= RING_SLOTS || !self.tx_in_flight[id] {
                return Err(self.fail("tx", format!("response for id {} which is not in flight", r.id)));
            }
            if r.status >= NETIF_RSP_NULL {
                return Err(self.fail("tx", format!("status {} for a data request (id {})", r.status, r.id)));
            }
            if r.status < NETIF_RSP_OKAY {
                self.stats.tx_errors += 1;
            }
            self.tx_in_flight[id] = false;
            self.tx_nulls_due = usize::from(core::mem::take(&mut self.tx_extras[id]));
            self.tx_free.push(r.id);
        }
    }

    /// Reclaims completions and errors with [`DeviceError::Busy`] unless `ids` TX buffers and `slots` ring
    /// slots are free.
    fn tx_room(&mut self, ids: usize, slots: usize) -> Result<(), DeviceError> {
        self.check()?;
        self.reclaim_tx()?;
        if self.tx_free.len() < ids || (self.tx.free_requests() as usize) < slots {
            return Err(DeviceError::Busy { device: self.info.name.clone() });
        }
        Ok(())
    }

    /// Queues one request for `data` in the free TX buffer `id`'s page. The caller checked the room.
    fn queue_tx(&mut self, id: u16, data: &[u8], flags: u16, size: u16) {
        let buf = &self.tx_bufs[usize::from(id)];
        buf.page.write(0, data);
        let req = TxRequestRepr { gref: buf.gref, offset: 0, flags, id, size };
        // The caller checked a free slot, so queueing cannot fail.
        self.tx.queue_request(&req.to_bytes());
        self.tx_in_flight[usize::from(id)] = true;
    }
}

/// The offloads a netfront uses given the backend's `feature-no-csum-offload`, `feature-sg` and
/// `feature-gso-tcpv4` (`io/netif.h`: checksum offload is on unless the backend turns it off; GSO only when
/// offered, and only with scatter-gather, as a large packet spans several slots). Receive offloads are always
/// on: the frontend asks for them ([`NetRings::xenstore_pairs`]) and frames without a mark are checked by the
/// stack.
pub fn offloads(no_csum_offload: bool, sg: bool, gso_tcpv4: bool) -> NetOffloads {
    let tx_checksum = !no_csum_offload;
    let tso4 = tx_checksum && sg && gso_tcpv4;
    NetOffloads { rx_checksum: true, tx_checksum, tso4, rx_gso: true, gso_max_frame: XEN_NETIF_MAX_TX_SIZE }
}

impl NetDevice for Netfront {
    fn info(&self) -> &NetInfo {
        &self.info
    }

    fn receive(&mut self) -> Result<Option<RxFrame>, DeviceError> {
        self.check()?;
        loop {
            let Some((cons, raw)) = self.next_rx_slot()? else { return Ok(None) };
            let rsp = match RxResponseRepr::parse(&RxResponse::new_unchecked(&raw[..])) {
                Ok(r) => r,
                Err(e) => return Err(self.fail("rx", format!("{e}"))),
            };
            // Buffer i is posted at ring indices congruent to i (see `flush`), with id i.
            let idx = cons as usize % RING_SLOTS;
            if usize::from(rsp.id) != idx {
                return Err(self.fail("rx", format!("response id {} in slot {cons} (request id was {idx})", rsp.id)));
            }
            if rsp.flags & NETRXF_EXTRA_INFO != 0 {
                self.skip_extras()?;
            }
            let more = rsp.flags & NETRXF_MORE_DATA != 0;
            if self.partial.is_none() {
                // The first fragment's flags speak for the packet: a blank checksum comes from a local domain.
                self.rx_validated = rsp.flags & (NETRXF_DATA_VALIDATED | NETRXF_CSUM_BLANK) != 0;
            }
            if rsp.status < 0 {
                self.stats.rx_dropped += 1;
                self.partial = None;
                self.dropping = more;
                continue;
            }
            let (off, len) = (usize::from(rsp.offset), rsp.status as usize);
            if off + len > PAGE_SIZE {
                return Err(self.fail("rx", format!("fragment at offset {off} of {len} bytes crosses the page end")));
            }
            let mut buf = match self.partial.take() {
                Some(b) => b,
                None => {
                    let mut b = self.pool.pop().unwrap_or_default();
                    b.clear();
                    b
                }
            };
            if self.dropping || buf.len() + len > MAX_RX_PACKET {
                self.dropping = more;
                if !more {
                    self.stats.rx_dropped += 1;
                }
                buf.clear();
                if self.pool.len() < POOL_MAX {
                    self.pool.push(buf);
                }
                continue;
            }
            let start = buf.len();
            buf.resize(start + len, 0);
            self.rx_bufs[idx].page.read(off, &mut buf[start..]);
            if more {
                self.partial = Some(buf);
                continue;
            }
            if buf.is_empty() {
                self.stats.rx_dropped += 1;
                continue;
            }
            self.stats.rx_frames += 1;
            let len = buf.len();
            let checksum_valid = self.rx_validated;
            return Ok(Some(RxFrame { buf, offset: 0, len, token: 0, checksum_valid }));
        }
    }

    fn recycle(&mut self, frame: RxFrame) -> Result<(), DeviceError> {
        if self.pool.len() < POOL_MAX {
            self.pool.push(frame.buf);
        }
        Ok(())
    }

    fn can_transmit(&mut self) -> bool {
        if self.broken.is_some() || self.reclaim_tx().is_err() {
            return false;
        }
        !self.tx_free.is_empty() && self.tx.free_requests() > 0
    }

    /// With GSO, in units of the largest GSO packet ([`MAX_GSO_SLOTS`]): any frame queued may become one.
    /// Fewer than `want`: `rsp_event` is re-armed (`RING_FINAL_CHECK_FOR_RESPONSES`, io/ring.h) so the next
    /// TX response raises an event.
    fn transmit_slots(&mut self, want: usize) -> usize {
        if self.broken.is_some() || self.reclaim_tx().is_err() {
            return 0;
        }
        let slots = |d: &Self| {
            let free = d.tx_free.len().min(d.tx.free_requests() as usize);
            if d.info.offloads.tso4 {
                free / MAX_GSO_SLOTS
            } else {
                free
            }
        };
        if slots(self) < want && self.tx.outstanding() > 0 && self.arm_tx_completion().is_err() {
            return 0;
        }
        slots(self)
    }

    /// Sends `frame` as one packet over as many slots as it has pages, `NETTXF_csum_blank` with the
    /// pseudo-header sum in the TCP checksum field and a `XEN_NETIF_EXTRA_TYPE_GSO` extra after the first
    /// request (`io/netif.h`, guest transmit). Errors: [`DeviceError::TooLarge`] without `feature-gso-tcpv4` or
    /// beyond `XEN_NETIF_MAX_TX_SIZE`, [`DeviceError::Busy`], [`DeviceError::Protocol`] for a frame that is not
    /// TCP over IPv4.
    fn transmit_gso(&mut self, mut frame: Vec<u8>, gso: Gso) -> Result<(), (DeviceError, Vec<u8>)> {
        let GsoKind::TcpV4 = gso.kind;
        let len = frame.len();
        if !self.info.offloads.tso4 || len > XEN_NETIF_MAX_TX_SIZE {
            let max = if self.info.offloads.tso4 { XEN_NETIF_MAX_TX_SIZE } else { MAX_FRAME };
            return Err((DeviceError::TooLarge { device: self.info.name.clone(), len, max }, frame));
        }
        let pages = len.div_ceil(PAGE_SIZE);
        if let Err(e) = self.tx_room(pages, pages + 1) {
            return Err((e, frame));
        }
        if drivers::csum::prepare(&mut frame).is_none() {
            let detail = String::from("GSO frame is not TCP over IPv4");
            return Err((DeviceError::Protocol { device: self.info.name.clone(), detail }, frame));
        }
        for (i, chunk) in frame.chunks(PAGE_SIZE).enumerate() {
            let more = if i + 1 < pages { NETTXF_MORE_DATA } else { 0 };
            // Room for `pages` ids was checked above.
            let id = self.tx_free.pop().unwrap_or(0);
            if i == 0 {
                let flags = NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED | NETTXF_EXTRA_INFO | more;
                self.queue_tx(id, chunk, flags, len as u16);
                let extra =
                    GsoExtraRepr { size: gso.mss, gso_type: XEN_NETIF_GSO_TYPE_TCPV4, features: 0, more: false };
                self.tx.queue_request(&extra.to_bytes());
                self.tx_extras[usize::from(id)] = 1;
            } else {
                self.queue_tx(id, chunk, more, chunk.len() as u16);
            }
        }
        self.stats.tx_frames += 1;
        self.stats.tx_gso_frames += 1;
        Ok(())
    }

    fn transmit(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), DeviceError> {
        self.check()?;
        if len == 0 || len > MAX_FRAME {
            return Err(DeviceError::TooLarge { device: self.info.name.clone(), len, max: MAX_FRAME });
        }
        self.tx_room(1, 1)?;
        let mut scratch = core::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.resize(len, 0);
        fill(&mut scratch);
        let csum = self.info.offloads.tx_checksum && drivers::csum::prepare(&mut scratch).is_some();
        let flags = if csum { NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED } else { 0 };
        // Checked non-empty just above.
        let id = self.tx_free.pop().unwrap_or(0);
        self.queue_tx(id, &scratch, flags, len as u16);
        self.scratch = scratch;
        self.stats.tx_frames += 1;
        Ok(())
    }

    /// Reclaims TX completions, posts an RX buffer into every free RX slot (buffer i always at ring indices
    /// ≡ i mod 256: a slot is free exactly when the buffer's previous use was consumed), publishes both rings
    /// and notifies the backend once if either ring asks for it (`RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`).
    fn flush(&mut self) -> Result<(), DeviceError> {
        self.check()?;
        self.reclaim_tx()?;
        while self.rx.free_requests() > 0 {
            let idx = self.rx.req_prod_pvt() as usize % RING_SLOTS;
            let req = RxRequestRepr { id: idx as u16, gref: self.rx_bufs[idx].gref };
            self.rx.queue_request(&req.to_bytes());
        }
        let notify_rx = self.rx.push_requests();
        let notify_tx = self.tx.push_requests();
        if self.tx.outstanding() > 0 {
            // Ask for an event at the next TX completion so a full ring drains without polling.
            self.arm_tx_completion()?;
        }
        if notify_rx || notify_tx {
            self.stats.notifies += 1;
            self.events.send(self.port).map_err(|e| DeviceError::Io {
                device: self.info.name.clone(),
                detail: format!("EVTCHNOP_send on port {}: {e}", self.port),
            })?;
        }
        Ok(())
    }

    fn set_waker(&mut self, waker: &Waker) {
        if let Some(s) = self.slot {
            s.set_waker(waker);
        }
    }
}

/// Connects the vif at `device/vif/<id>`: waits for the backend to initialise, sets up rings, buffers and an
/// event channel (`listen` binds it to a wake-up slot), publishes the front-end nodes, waits for the backend to
/// connect and starts the device. Errors: [`NetfrontError`].
pub async fn connect(
    xs: &XenStore,
    grants: &GrantTable,
    events: Arc<dyn EventChannelOps>,
    id: &str,
    listen: &dyn Fn(EvtchnPort) -> Result<Option<&'static WakeSlot>, String>,
) -> Result<Netfront, NetfrontError> {
    let path = format!("device/vif/{id}");
    let mut fe = Frontend::open(xs, &path, Flavour::Net).await?;
    let mac = parse_mac(&fe.node("mac").await?)?;
    loop {
        if fe.next_step().await? == Step::Publish {
            break;
        }
    }
    if !feature(fe.backend_node("feature-rx-copy").await?.as_deref()) {
        return Err(NetfrontError::MissingFeature("feature-rx-copy"));
    }
    let rings = NetRings::new(grants, fe.backend_id)?;
    let port = events.alloc_unbound(fe.backend_id).map_err(|e| NetfrontError::Event(format!("{e}")))?;
    let slot = listen(port).map_err(NetfrontError::Event)?;
    fe.publish(&rings.xenstore_pairs(port)).await?;
    loop {
        if fe.next_step().await? == Step::Connected {
            break;
        }
    }
    let sg = feature(fe.backend_node("feature-sg").await?.as_deref());
    let no_csum = feature(fe.backend_node("feature-no-csum-offload").await?.as_deref());
    let gso = feature(fe.backend_node("feature-gso-tcpv4").await?.as_deref());
    let offloads = offloads(no_csum, sg, gso);
    let name = format!("xen-vif{id}");
    log::info!(
        "{name}: mac {}, backend {} (domain {}), event channel {port}, rings {}+{} slots, backend features: \
         rx-copy{}{}{}",
        MacText(mac),
        fe.backend,
        fe.backend_id,
        RING_SLOTS,
        RING_SLOTS,
        if sg { ", sg" } else { "" },
        if no_csum { ", no-csum-offload" } else { "" },
        if gso { ", gso-tcpv4" } else { "" }
    );
    fe.finish().await?;
    Netfront::start(name, mac, rings, offloads, events, port, slot).map_err(|e| NetfrontError::Event(format!("{e}")))
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub struct MacText(pub [u8; 6]);

impl fmt::Display for MacText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

#[cfg(test)]
mod tests;
