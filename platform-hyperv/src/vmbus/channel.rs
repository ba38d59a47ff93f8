//! An open VMBus channel: the guest-to-host and host-to-guest rings in one GPADL, packet send (in-band,
//! GPA-direct, completions) with host signalling on empty-to-non-empty transitions, packet receive with the
//! pending-send-size handshake, and wake-ups from the channel's event flag. Source: Linux `drivers/hv/channel.c`
//! (`vmbus_open`, `vmbus_sendpacket`, `vmbus_sendpacket_mpb_desc`, `vmbus_recvpacket_raw`) and
//! `drivers/hv/ring_buffer.c`.

use super::msg::Offer;
use super::packet::{self, GpaRange, Packet};
use super::ring::{InRing, OutRing, RingError};
use super::{ChannelEvents, Error, GpadlHandle, RelId, Vmbus};
use crate::mem::{Region, PAGE_SIZE};
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU32, Ordering};
use core::task::{Context, Poll, Waker};
use libos::irq::critical;
use spin::Mutex;

/// An open channel. `send_*` and `try_recv` take `&self`; the rings are behind locks taken with interrupts masked.
pub struct Channel {
    bus: Arc<Vmbus>,
    offer: Offer,
    region: Region,
    out: Mutex<OutRing>,
    inr: Mutex<InRing>,
    events: Arc<ChannelEvents>,
    gpadl: AtomicU32,
    broken: Mutex<Option<Error>>,
}

impl Channel {
    pub(super) fn new(
        bus: Arc<Vmbus>,
        offer: Offer,
        region: Region,
        send_pages: usize,
        recv_pages: usize,
        events: Arc<ChannelEvents>,
    ) -> Result<Self, RingError> {
        let out = OutRing::init(region.clone(), 0, send_pages)?;
        let inr = InRing::init(region.clone(), send_pages * PAGE_SIZE, recv_pages)?;
        Ok(Self {
            bus,
            offer,
            region,
            out: Mutex::new(out),
            inr: Mutex::new(inr),
            events,
            gpadl: AtomicU32::new(0),
            broken: Mutex::new(None),
        })
    }

    pub(super) fn set_gpadl(&self, g: GpadlHandle) {
        self.gpadl.store(g.0, Ordering::Release);
    }

    /// The ring GPADL handle.
    pub fn gpadl(&self) -> GpadlHandle {
        GpadlHandle(self.gpadl.load(Ordering::Acquire))
    }

    /// The channel's relid.
    pub fn relid(&self) -> RelId {
        self.offer.child_relid
    }

    /// The offer the channel was opened from.
    pub fn offer(&self) -> &Offer {
        &self.offer
    }

    /// The bus.
    pub fn bus(&self) -> &Arc<Vmbus> {
        &self.bus
    }

    /// The ring memory (for diagnostics and tests).
    pub fn ring_region(&self) -> &Region {
        &self.region
    }

    /// Whether the host rescinded the channel.
    pub fn is_rescinded(&self) -> bool {
        self.events.is_rescinded()
    }

    /// The first protocol error seen, if the channel is broken.
    pub fn broken(&self) -> Option<Error> {
        critical(|| self.broken.lock().clone())
    }

    fn check_usable(&self) -> Result<(), Error> {
        if self.is_rescinded() {
            return Err(Error::Rescinded { relid: self.relid() });
        }
        if let Some(e) = self.broken() {
            return Err(e);
        }
        Ok(())
    }

    fn fail(&self, error: RingError) -> Error {
        let relid = self.relid();
        let e = Error::Ring { relid, error };
        if matches!(e, Error::Ring { error: RingError::Hostile { .. }, .. }) {
            log::error!("{e}; channel {relid} is unusable from now on");
            critical(|| *self.broken.lock() = Some(e.clone()));
        }
        e
    }

    /// Writes one packet (already 8-byte padded) and signals the host when the ring went non-empty. Errors:
    /// [`Error::Ring`] with [`RingError::Full`] (retry after a completion), hostile indices, [`Error::Rescinded`].
    pub fn send_raw(&self, pkt: &[u8]) -> Result<(), Error> {
        self.check_usable()?;
        let signal = critical(|| self.out.lock().write(&[pkt])).map_err(|e| self.fail(e))?;
        if signal {
            self.bus.signal(&self.offer)?;
        }
        Ok(())
    }

    /// Sends an in-band packet with `payload`; `completion` asks the host for a completion packet.
    pub fn send_inband(&self, trans_id: u64, payload: &[u8], completion: bool) -> Result<(), Error> {
        let flags = if completion { packet::FLAG_COMPLETION_REQUESTED } else { 0 };
        let p = packet::inband(trans_id, flags, payload).ok_or(Error::Ring {
            relid: self.relid(),
            error: RingError::TooLarge { len: payload.len(), max: u16::MAX as usize * 8 },
        })?;
        self.send_raw(&p)
    }

    /// Sends a GPA-direct packet: `ranges` of guest memory the host reads or writes, plus `payload`; always asks
    /// for a completion.
    pub fn send_gpa_direct(&self, trans_id: u64, ranges: &[GpaRange], payload: &[u8]) -> Result<(), Error> {
        let p =
            packet::gpa_direct(trans_id, packet::FLAG_COMPLETION_REQUESTED, ranges, payload).ok_or(Error::Ring {
                relid: self.relid(),
                error: RingError::TooLarge { len: payload.len(), max: u16::MAX as usize * 8 },
            })?;
        self.send_raw(&p)
    }

    /// Sends a completion for the host's packet `trans_id`.
    pub fn send_completion(&self, trans_id: u64, payload: &[u8]) -> Result<(), Error> {
        let p = packet::completion(trans_id, payload).ok_or(Error::Ring {
            relid: self.relid(),
            error: RingError::TooLarge { len: payload.len(), max: u16::MAX as usize * 8 },
        })?;
        self.send_raw(&p)
    }

    /// Asks the host to signal when `bytes` are free in the outbound ring (0 = stop asking).
    pub fn set_pending_send_size(&self, bytes: u32) -> Result<(), Error> {
        critical(|| self.out.lock().set_pending_send_size(bytes)).map_err(|e| self.fail(e))
    }

    /// Takes the next packet from the host, if any, publishes the read index and signals a host blocked on a
    /// full ring. Errors: [`Error::Ring`] for hostile indices or lengths (the channel is then broken),
    /// [`Error::Rescinded`].
    pub fn try_recv(&self) -> Result<Option<Packet>, Error> {
        self.check_usable()?;
        let (p, signal) = critical(|| {
            let mut r = self.inr.lock();
            let p = r.read()?;
            let s = if p.is_some() { r.commit()? } else { false };
            Ok::<_, RingError>((p, s))
        })
        .map_err(|e| self.fail(e))?;
        if signal {
            self.bus.signal(&self.offer)?;
        }
        Ok(p)
    }

    /// Registers `waker` for the channel's next interrupt.
    pub fn register(&self, waker: &Waker) {
        self.events.wake.register(waker);
    }

    /// The channel's event state (its `wake` slot is woken by the channel's event flag), for drivers that poll
    /// their own state against the channel's interrupts with `WakeSlot::poll_until` while borrowing themselves
    /// mutably.
    pub fn events(&self) -> Arc<ChannelEvents> {
        self.events.clone()
    }

    /// Polls for a packet: returns it, or registers the task and re-checks (so a packet that arrived meanwhile is
    /// not missed).
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Result<Packet, Error>> {
        self.events.wake.poll_until(cx, || self.try_recv().transpose())
    }

    /// Waits for the next packet.
    pub async fn recv(&self) -> Result<Packet, Error> {
        core::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls a send that may find the outbound ring full: `attempt` writes one packet; on [`RingError::Full`] the
    /// channel asks the host to signal once that much is free (`pending_send_sz`), runs `on_full` (a driver routes
    /// completions that free space) and tries again after registering the task, so space freed in between is not
    /// missed. `map` turns channel errors into the caller's. Clears `pending_send_sz` once a retried send is done.
    pub fn poll_send<E>(
        &self,
        cx: &mut Context<'_>,
        mut attempt: impl FnMut() -> Result<(), Error>,
        mut on_full: impl FnMut() -> Result<(), E>,
        map: impl Fn(Error) -> E,
    ) -> Poll<Result<(), E>> {
        let mut asked = false;
        let r = self.events.wake.poll_until(cx, || match attempt() {
            Err(Error::Ring { error: RingError::Full { need, .. }, .. }) => {
                asked = true;
                if let Err(e) = self.set_pending_send_size(need as u32) {
                    return Some(Err(map(e)));
                }
                on_full().err().map(Err)
            }
            r => Some(r.map_err(&map)),
        });
        if asked && r.is_ready() {
            let _ = self.set_pending_send_size(0);
        }
        r
    }

    /// Sends an in-band packet, waiting (with pending-send-size) while the ring is full.
    pub async fn send_inband_wait(&self, trans_id: u64, payload: &[u8], completion: bool) -> Result<(), Error> {
        core::future::poll_fn(|cx| {
            self.poll_send(cx, || self.send_inband(trans_id, payload, completion), || Ok(()), |e| e)
        })
        .await
    }
}
