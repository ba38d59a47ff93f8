//! VMBus, the Hyper-V device bus, as Linux `drivers/hv/` (`connection.c`, `channel_mgmt.c`, `channel.c`) speaks
//! it: channel messages over the SynIC message slot of SINT 2 and HvPostMessage; InitiateContact with version
//! negotiation from 6.0 down to 2.4 (the host accepts only an exact match; from 5.0 on InitiateContact goes to
//! message connection 4 and later messages to the connection id of the version response); RequestOffers /
//! OfferChannel / AllOffersDelivered; GPADLs (GpadlHeader + GpadlBody) for ring and data buffers and their
//! teardown; OpenChannel / OpenResult; rescinds; and channel interrupts through the SIEFP event flags (VMBus ≥ 2.4
//! flags each channel by its relid) with HvSignalEvent towards the host.
//!
//! The protocol is driven by async tasks on libos's executor; the SynIC interrupt ([`InterruptLine::raise`]) only
//! scans event flags and wakes tasks. Everything reaches the hypervisor through [`HwAccess`] and shared memory
//! through [`Dma`], so the same code runs against the `hyperv` test peer on the host.

pub mod channel;
pub mod guid;
mod ids;
pub mod msg;
pub mod packet;
pub mod ring;

pub use ids::{GpadlHandle, RelId};

use crate::hv::{self, ConnectionId, Enlightenments, HvError, HvStatus, HwAccess, Synic};
use crate::mem::{Dma, MemError, Region};
use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use channel::Channel;
use core::fmt;
use core::future::Future;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use core::task::{Context, Poll};
use guid::Guid;
use libos::irq::{critical, WakeSlot};
use libos::time::Duration;
use msg::{version, ChannelMessage, InitiateContact, MsgError, Offer, OpenChannel, VMBUS_MESSAGE_SINT};
use spin::Mutex;

/// First GPADL handle the guest hands out (Linux `next_gpadl_handle` starts at 0xE1E10).
pub const FIRST_GPADL_HANDLE: GpadlHandle = GpadlHandle(0xE1E10);

/// Why a VMBus operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// An enlightenment (SynIC, hypercall page) is unusable.
    Hv(HvError),
    /// A hypercall returned an error status.
    Hypercall {
        /// The hypercall: "HvPostMessage" or "HvSignalEvent".
        call: &'static str,
        /// The result value's status (`HV_STATUS_*`).
        status: HvStatus,
    },
    /// The host answered none of the versions 6.0 … 2.4 with "supported".
    NoCommonVersion {
        /// Versions offered in CHANNELMSG_INITIATE_CONTACT.
        tried: usize,
    },
    /// No answer within the timeout.
    Timeout {
        /// The host message waited for, e.g. "AllOffersDelivered".
        what: &'static str,
        /// How long the guest waited (ms).
        ms: u64,
    },
    /// The host refused a request: `what` with the host's status code.
    HostRefused {
        /// The request, e.g. "GPADL creation" or "OpenChannel".
        what: &'static str,
        /// The channel's `child_relid`.
        relid: RelId,
        /// The host's status (`creation_status` or `status` of the reply; 0 = success).
        status: u32,
    },
    /// The host rescinded the channel.
    Rescinded {
        /// The channel's `child_relid`.
        relid: RelId,
    },
    /// A channel's ring broke the protocol (a hostile index or length) or is full.
    Ring {
        /// The channel's `child_relid`.
        relid: RelId,
        /// What the ring did wrong.
        error: ring::RingError,
    },
    /// A malformed packet on a channel.
    Packet {
        /// The channel's `child_relid`.
        relid: RelId,
        /// What is wrong with the packet.
        error: packet::PacketError,
    },
    /// A malformed channel message.
    Message(MsgError),
    /// Shared memory could not be allocated or accessed.
    Memory(MemError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hv(e) => write!(f, "vmbus: {e}"),
            Self::Hypercall { call, status } => write!(f, "vmbus: {call} failed: {status}"),
            Self::NoCommonVersion { tried } => {
                write!(f, "vmbus: the host accepted none of the {tried} protocol versions 6.0 … 2.4")
            }
            Self::Timeout { what, ms } => write!(f, "vmbus: no {what} from the host within {ms} ms"),
            Self::HostRefused { what, relid, status } => {
                write!(f, "vmbus: host refused {what} for channel {relid} (status {status:#x})")
            }
            Self::Rescinded { relid } => write!(f, "vmbus: channel {relid} was rescinded by the host"),
            Self::Ring { relid, error } => write!(f, "vmbus channel {relid}: {error}"),
            Self::Packet { relid, error } => write!(f, "vmbus channel {relid}: {error}"),
            Self::Message(e) => write!(f, "{e}"),
            Self::Memory(e) => write!(f, "vmbus: {e}"),
        }
    }
}

impl From<MemError> for Error {
    fn from(e: MemError) -> Self {
        Self::Memory(e)
    }
}

impl From<HvError> for Error {
    fn from(e: HvError) -> Self {
        Self::Hv(e)
    }
}

/// Tunables.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long to wait for each host response (version, GPADL, open).
    pub response_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self { response_timeout: Duration::from_secs(5) }
    }
}

/// The SynIC interrupt as the platform delivers it: the IDT handler of the SINT vector on the bare target, the
/// host model's "raise" on the host. [`InterruptLine::raise`] finds the bus attached to the line and lets it scan
/// the event flags and wake its tasks.
#[derive(Default)]
pub struct InterruptLine {
    vmbus: spin::Once<Weak<Vmbus>>,
    raised: AtomicU64,
}

impl InterruptLine {
    /// A line with no bus attached yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Delivers one interrupt (interrupt context on the bare target).
    pub fn raise(&self) {
        self.raised.fetch_add(1, Ordering::Relaxed);
        if let Some(v) = self.vmbus.get().and_then(Weak::upgrade) {
            v.on_interrupt();
        }
    }

    /// Interrupts delivered so far.
    pub fn count(&self) -> u64 {
        self.raised.load(Ordering::Relaxed)
    }
}

/// Per-channel event state shared with the interrupt handler.
pub struct ChannelEvents {
    /// Tasks waiting for the channel's ring (woken by the channel's event flag).
    pub wake: WakeSlot,
    rescinded: AtomicBool,
}

impl ChannelEvents {
    fn new() -> Arc<Self> {
        Arc::new(Self { wake: WakeSlot::new(), rescinded: AtomicBool::new(false) })
    }

    /// Whether the host rescinded the channel.
    pub fn is_rescinded(&self) -> bool {
        self.rescinded.load(Ordering::Acquire)
    }
}

#[derive(Default)]
struct State {
    inbox: VecDeque<ChannelMessage>,
    offers: Vec<Offer>,
    all_offers_delivered: bool,
    /// Rescinded relids not yet released.
    rescinded: Vec<RelId>,
    /// Relids whose offer arrived after AllOffersDelivered and nobody has looked at yet.
    late_offers: usize,
    next_gpadl: GpadlHandle,
    bad_messages: u64,
}

/// A VMBus connection: SynIC pages, the negotiated version and message connection, offers, and the channel
/// event registry.
pub struct Vmbus {
    hw: Arc<dyn HwAccess>,
    dma: Arc<dyn Dma>,
    synic: Synic,
    post_page: Region,
    int_page: Region,
    monitor_pages: [Region; 2],
    vp: u32,
    version: AtomicU32,
    msg_conn_id: AtomicU32,
    state: Mutex<State>,
    msg_waiters: WakeSlot,
    channels: Mutex<BTreeMap<RelId, Arc<ChannelEvents>>>,
    post_lock: Mutex<()>,
    cfg: Config,
}

impl Vmbus {
    /// Sets up the SynIC for VMBus (SIMP, SIEFP, SINT 2 on `vector`) and the pages InitiateContact names, and
    /// attaches the bus to `line`. Errors: missing privileges, MSRs the hypervisor refused, no memory.
    pub fn new(
        hw: Arc<dyn HwAccess>,
        dma: Arc<dyn Dma>,
        en: &Enlightenments,
        line: &InterruptLine,
        vector: u8,
        cfg: Config,
    ) -> Result<Arc<Self>, Error> {
        en.check_vmbus()?;
        let simp = dma.alloc(1)?;
        let siefp = dma.alloc(1)?;
        let synic = Synic::enable(&*hw, en, simp, siefp, VMBUS_MESSAGE_SINT, vector)?;
        let vp = hv::vp_index(&*hw, en);
        let bus = Arc::new(Self {
            post_page: dma.alloc(1)?,
            int_page: dma.alloc(1)?,
            monitor_pages: [dma.alloc(1)?, dma.alloc(1)?],
            hw,
            dma,
            synic,
            vp,
            version: AtomicU32::new(0),
            msg_conn_id: AtomicU32::new(msg::MESSAGE_CONNECTION_ID.0),
            state: Mutex::new(State { next_gpadl: FIRST_GPADL_HANDLE, ..State::default() }),
            msg_waiters: WakeSlot::new(),
            channels: Mutex::new(BTreeMap::new()),
            post_lock: Mutex::new(()),
            cfg,
        });
        line.vmbus.call_once(|| Arc::downgrade(&bus));
        Ok(bus)
    }

    /// The negotiated protocol version (`major << 16 | minor`), 0 before [`Vmbus::connect`].
    pub fn version(&self) -> u32 {
        self.version.load(Ordering::Acquire)
    }

    /// The message connection id in use.
    pub fn message_connection_id(&self) -> ConnectionId {
        ConnectionId(self.msg_conn_id.load(Ordering::Acquire))
    }

    /// The VP index messages and channel interrupts target.
    pub fn vp_index(&self) -> u32 {
        self.vp
    }

    /// The shared-memory allocator (drivers allocate their buffers from it).
    pub fn dma(&self) -> &Arc<dyn Dma> {
        &self.dma
    }

    /// The SynIC interrupt: scan SINT 2's event flags, wake each flagged channel, and wake the tasks waiting for
    /// channel messages. Runs in interrupt context on the bare target; takes no lock the tasks hold with
    /// interrupts enabled.
    pub fn on_interrupt(&self) {
        let chans = self.channels.lock();
        let r = self.synic.scan_event_flags(VMBUS_MESSAGE_SINT, |flag| {
            // Flag 0 is the message connection itself.
            if let Some(c) = chans.get(&RelId(flag)) {
                c.wake.wake();
            }
        });
        drop(chans);
        if let Err(e) = r {
            log::error!("vmbus: event flags page: {e}");
        }
        self.msg_waiters.wake();
    }

    /// Moves every message waiting in the SynIC slot into the inbox, acting on offers and rescinds at once.
    fn drain(&self) -> Result<(), Error> {
        critical(|| {
            let mut st = self.state.lock();
            while let Some(m) = self.synic.take_message(&*self.hw, VMBUS_MESSAGE_SINT)? {
                if m.message_type != msg::VMBUS_MESSAGE_TYPE {
                    log::debug!("vmbus: ignoring SynIC message type {:#x} on SINT 2", m.message_type);
                    continue;
                }
                match ChannelMessage::parse(&m.payload) {
                    Ok(ChannelMessage::OfferChannel(o)) => {
                        log::debug!(
                            "vmbus: offer relid {} {} ({}) instance {}",
                            o.child_relid,
                            guid::class_name(&o.if_type),
                            o.if_type,
                            o.if_instance
                        );
                        if st.all_offers_delivered {
                            st.late_offers += 1;
                        }
                        st.offers.retain(|x| x.child_relid != o.child_relid);
                        st.offers.push(o);
                    }
                    Ok(ChannelMessage::RescindOffer { child_relid }) => {
                        log::warn!("vmbus: host rescinded channel {child_relid}");
                        st.offers.retain(|x| x.child_relid != child_relid);
                        st.rescinded.push(child_relid);
                        if let Some(c) = self.channels.lock().get(&child_relid) {
                            c.rescinded.store(true, Ordering::Release);
                            c.wake.wake();
                        }
                    }
                    Ok(ChannelMessage::AllOffersDelivered) => st.all_offers_delivered = true,
                    Ok(other) => st.inbox.push_back(other),
                    Err(e) => {
                        st.bad_messages += 1;
                        log::warn!("vmbus: dropping malformed message: {e}");
                    }
                }
            }
            Ok(())
        })
    }

    /// One poll of a wait on the bus state: drains the message slot and runs `check` on the state, registering
    /// for the next SynIC interrupt between two tries so a message that arrives in between is not missed
    /// ([`WakeSlot::poll_until`]). Errors: the message slot could not be read.
    fn poll_state<T>(
        &self,
        cx: &mut Context<'_>,
        check: &mut impl FnMut(&mut State) -> Option<T>,
    ) -> Poll<Result<T, Error>> {
        self.msg_waiters.poll_until(cx, || match self.drain() {
            Ok(()) => critical(|| check(&mut self.state.lock())).map(Ok),
            Err(e) => Some(Err(e)),
        })
    }

    /// Waits (with the response timeout) until `check` finds what it wants in the bus state.
    async fn wait_state<T>(
        &self,
        what: &'static str,
        mut check: impl FnMut(&mut State) -> Option<T>,
    ) -> Result<T, Error> {
        let timeout = self.cfg.response_timeout;
        let fut = core::future::poll_fn(|cx| self.poll_state(cx, &mut check));
        libos::time::timeout(timeout, fut).await.unwrap_or(Err(Error::Timeout { what, ms: timeout.as_millis() as u64 }))
    }

    /// Waits for the first inbox message `pick` accepts, removing it.
    async fn wait_message<T>(
        &self,
        what: &'static str,
        mut pick: impl FnMut(&ChannelMessage) -> Option<T>,
    ) -> Result<T, Error> {
        self.wait_state(what, |st| {
            let i = st.inbox.iter().position(|m| pick(m).is_some())?;
            let m = st.inbox.remove(i)?;
            pick(&m)
        })
        .await
    }

    /// Posts a channel message to connection `conn` with HvPostMessage, retrying while the host's buffers are
    /// full (as Linux `vmbus_post_msg` does). Errors: [`Error::Hypercall`].
    async fn post_to(&self, conn: ConnectionId, m: &ChannelMessage) -> Result<(), Error> {
        let payload = m.emit();
        let mut delay_ms = 1;
        for attempt in 0..8 {
            let status = {
                let _g = self.post_lock.lock();
                hv::synic::post_message(&*self.hw, &self.post_page, conn, msg::VMBUS_MESSAGE_TYPE, &payload)?
            };
            match status {
                HvStatus::SUCCESS => return Ok(()),
                HvStatus::INSUFFICIENT_BUFFERS | HvStatus::INSUFFICIENT_MEMORY if attempt < 7 => {
                    libos::time::sleep(Duration::from_millis(delay_ms)).await;
                    delay_ms *= 2;
                }
                s => return Err(Error::Hypercall { call: "HvPostMessage", status: s }),
            }
        }
        Err(Error::Hypercall { call: "HvPostMessage", status: HvStatus::INSUFFICIENT_BUFFERS })
    }

    /// Posts to the negotiated message connection.
    pub async fn post(&self, m: &ChannelMessage) -> Result<(), Error> {
        self.post_to(self.message_connection_id(), m).await
    }

    /// Negotiates the protocol version (Linux `vmbus_connect`): InitiateContact with each version from 6.0 down to
    /// 2.4 until the host answers "supported". Returns the version. Errors: [`Error::NoCommonVersion`], timeouts,
    /// hypercall failures.
    pub async fn connect(&self) -> Result<u32, Error> {
        for &v in version::ALL.iter() {
            let modern = v >= version::WIN10_V5;
            let contact = ChannelMessage::InitiateContact(InitiateContact {
                version: v,
                target_vcpu: self.vp,
                // From 5.0 the union holds the message SINT (VTL 0); before, the interrupt page.
                interrupt_page_or_sint: if modern { u64::from(VMBUS_MESSAGE_SINT) } else { self.int_page.gpa() },
                monitor_page1: self.monitor_pages[0].gpa(),
                monitor_page2: self.monitor_pages[1].gpa(),
            });
            let conn = if modern { msg::MESSAGE_CONNECTION_ID_4 } else { msg::MESSAGE_CONNECTION_ID };
            match self.post_to(conn, &contact).await {
                Ok(()) => {}
                // Hosts before 5.0 have no connection 4: try the next version (Linux does the same).
                Err(Error::Hypercall { status: HvStatus::INVALID_CONNECTION_ID, .. }) if modern => continue,
                Err(e) => return Err(e),
            }
            let (ok, conn_id) = self
                .wait_message("version response", |m| match m {
                    ChannelMessage::VersionResponse { version_supported, msg_conn_id, .. } => {
                        Some((*version_supported, *msg_conn_id))
                    }
                    _ => None,
                })
                .await?;
            if ok {
                self.version.store(v, Ordering::Release);
                let id = if modern { conn_id } else { msg::MESSAGE_CONNECTION_ID };
                self.msg_conn_id.store(id.0, Ordering::Release);
                log::info!("vmbus: protocol version {} (message connection {id})", version::display(v));
                return Ok(v);
            }
            log::debug!("vmbus: host does not support version {}", version::display(v));
        }
        Err(Error::NoCommonVersion { tried: version::ALL.len() })
    }

    /// Asks for the channel offers and waits for AllOffersDelivered; returns the offers so far.
    pub async fn request_offers(&self) -> Result<Vec<Offer>, Error> {
        self.post(&ChannelMessage::RequestOffers).await?;
        self.wait_state("AllOffersDelivered", |st| st.all_offers_delivered.then_some(())).await?;
        Ok(self.offers())
    }

    /// The offers received so far (not rescinded).
    pub fn offers(&self) -> Vec<Offer> {
        critical(|| self.state.lock().offers.clone())
    }

    /// Waits up to `wait` for an offer of class `class` (hosts may offer a device after AllOffersDelivered, as the
    /// synthetic NIC often is). `None` when none came.
    pub async fn wait_for_offer(&self, class: Guid, wait: Duration) -> Option<Offer> {
        let find = |st: &mut State| st.offers.iter().find(|o| o.if_type == class).cloned();
        let fut = core::future::poll_fn(|cx| {
            // A message slot that cannot be read leaves the offers as they are: wait out the time.
            self.msg_waiters.poll_until(cx, || {
                let _ = self.drain();
                critical(|| find(&mut self.state.lock()))
            })
        });
        libos::time::timeout(wait, fut).await.ok()
    }

    /// Establishes a GPADL over all pages of `region` for channel `relid` (Linux `vmbus_establish_gpadl`): returns
    /// the handle. Errors: host refusal, timeouts, hypercall failures.
    pub async fn create_gpadl(&self, relid: RelId, region: &Region) -> Result<GpadlHandle, Error> {
        let handle = critical(|| {
            let mut st = self.state.lock();
            let h = st.next_gpadl;
            st.next_gpadl = GpadlHandle(h.0.wrapping_add(1));
            h
        });
        let pfns: Vec<u64> = (0..region.page_count()).map(|i| region.pfn(i)).collect();
        for m in msg::gpadl_messages(relid, handle, &pfns, region.len() as u32).map_err(Error::Message)? {
            self.post(&m).await?;
        }
        let status = self
            .wait_message("GPADL created", |m| match m {
                ChannelMessage::GpadlCreated { gpadl, status, .. } if *gpadl == handle => Some(*status),
                _ => None,
            })
            .await?;
        if status != 0 {
            return Err(Error::HostRefused { what: "GPADL creation", relid, status });
        }
        Ok(handle)
    }

    /// Tears down a GPADL (GpadlTeardown, then GpadlTorndown). A rescinded channel's GPADLs are gone already.
    pub async fn teardown_gpadl(&self, relid: RelId, gpadl: GpadlHandle) -> Result<(), Error> {
        if self.is_rescinded(relid) {
            return Ok(());
        }
        self.post(&ChannelMessage::GpadlTeardown { child_relid: relid, gpadl }).await?;
        self.wait_message("GPADL torn down", |m| {
            matches!(m, ChannelMessage::GpadlTorndown { gpadl: g } if *g == gpadl).then_some(())
        })
        .await
    }

    fn is_rescinded(&self, relid: RelId) -> bool {
        critical(|| self.state.lock().rescinded.contains(&relid))
    }

    /// Opens `offer`'s channel with rings of `send_pages` and `recv_pages` pages (control page included) in one
    /// GPADL (Linux `vmbus_open`). Errors: host refusal, timeouts, no memory.
    pub async fn open_channel(
        self: &Arc<Self>,
        offer: &Offer,
        send_pages: usize,
        recv_pages: usize,
    ) -> Result<Channel, Error> {
        let relid = offer.child_relid;
        let region = self.dma.alloc(send_pages + recv_pages)?;
        let events = ChannelEvents::new();
        let ch = Channel::new(self.clone(), offer.clone(), region.clone(), send_pages, recv_pages, events.clone())
            .map_err(|error| Error::Ring { relid, error })?;
        let gpadl = self.create_gpadl(relid, &region).await?;
        ch.set_gpadl(gpadl);
        critical(|| self.channels.lock().insert(relid, events));
        self.post(&ChannelMessage::OpenChannel(OpenChannel {
            child_relid: relid,
            open_id: relid.0,
            ring_gpadl: gpadl,
            target_vp: self.vp,
            downstream_page_offset: send_pages as u32,
            user_data: [0; msg::USER_DEFINED_LEN],
        }))
        .await?;
        let status = self
            .wait_message("open result", |m| match m {
                ChannelMessage::OpenResult { child_relid, status, .. } if *child_relid == relid => Some(*status),
                _ => None,
            })
            .await?;
        if status != 0 {
            critical(|| self.channels.lock().remove(&relid));
            return Err(Error::HostRefused { what: "OpenChannel", relid, status });
        }
        log::debug!("vmbus: opened channel {relid} ({}), gpadl {gpadl:#x}", guid::class_name(&offer.if_type));
        Ok(ch)
    }

    /// Closes a channel (CloseChannel, ring GPADL teardown) or, when the host rescinded it, just releases the relid
    /// (RelidReleased).
    pub async fn close_channel(&self, ch: &Channel) -> Result<(), Error> {
        let relid = ch.relid();
        critical(|| self.channels.lock().remove(&relid));
        if self.is_rescinded(relid) {
            return self.release_relid(relid).await;
        }
        self.post(&ChannelMessage::CloseChannel { child_relid: relid }).await?;
        self.teardown_gpadl(relid, ch.gpadl()).await
    }

    async fn release_relid(&self, relid: RelId) -> Result<(), Error> {
        critical(|| self.state.lock().rescinded.retain(|&r| r != relid));
        self.post(&ChannelMessage::RelidReleased { child_relid: relid }).await
    }

    /// Signals the host that channel `relid` has work (Linux `vmbus_set_event`): the relid bit in the interrupt
    /// page's send half unless the channel has a dedicated interrupt, then HvSignalEvent on its connection id.
    pub fn signal(&self, offer: &Offer) -> Result<(), Error> {
        if !offer.dedicated_interrupt {
            let bit = offer.child_relid.event_flag();
            let word = 2048 + (bit / 64) * 8;
            if word + 8 <= self.int_page.len() {
                self.int_page.fetch_or_u64(word, 1 << (bit % 64))?;
            }
        }
        let st = hv::synic::signal_event(&*self.hw, offer.connection_id, 0);
        if !st.is_success() {
            return Err(Error::Hypercall { call: "HvSignalEvent", status: st });
        }
        Ok(())
    }

    /// Handles what the host sends after bring-up: releases rescinded relids and logs late offers. Runs until
    /// the bus is dropped; spawn it once.
    pub fn run(self: Arc<Self>) -> impl Future<Output = ()> + Send + 'static {
        let weak = Arc::downgrade(&self);
        drop(self);
        async move {
            loop {
                let Some(bus) = weak.upgrade() else { return };
                let r = bus
                    .wait_state_forever(|st| {
                        if let Some(&r) = st.rescinded.first() {
                            return Some(Some(r));
                        }
                        if st.late_offers > 0 {
                            st.late_offers = 0;
                            return Some(None);
                        }
                        None
                    })
                    .await;
                match r {
                    Ok(Some(relid)) => {
                        // Give the device a moment to notice and stop touching the ring first.
                        libos::time::sleep(Duration::from_millis(10)).await;
                        if let Err(e) = bus.release_relid(relid).await {
                            log::warn!("vmbus: releasing rescinded channel {relid}: {e}");
                        }
                    }
                    Ok(None) => log::info!("vmbus: the host offered a device after start-up; it is not used"),
                    Err(e) => {
                        log::error!("vmbus: message handling stopped: {e}");
                        return;
                    }
                }
            }
        }
    }

    async fn wait_state_forever<T>(&self, mut check: impl FnMut(&mut State) -> Option<T>) -> Result<T, Error> {
        core::future::poll_fn(|cx| self.poll_state(cx, &mut check)).await
    }

    /// One line for the boot log.
    pub fn describe(&self) -> String {
        alloc::format!(
            "vmbus {} (message connection {}, vp {}), {} offers",
            version::display(self.version()),
            self.message_connection_id(),
            self.vp,
            self.offers().len()
        )
    }

    /// Malformed messages dropped so far.
    pub fn bad_messages(&self) -> u64 {
        critical(|| self.state.lock().bad_messages)
    }
}
