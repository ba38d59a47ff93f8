//! virtio-balloon driver (device type 5) over any `virtio-drivers` [`Transport`]: the device's `num_pages` is the
//! balloon size the host wants, the driver gives pages (inflateq) and takes them back (deflateq) through libos's
//! one balloon mechanism (`libos::mem::balloon`, never below its floor), writes `actual` after each change, and
//! answers the stats virtqueue with the memory figures when the device hands its buffer back. A configuration
//! change interrupt (or a used buffer) wakes the driver's task through the device's [`IrqSlot`].
//! Source: virtio 1.2 §5.5 (traditional memory balloon device): §5.5.3 feature bits, §5.5.4 configuration,
//! §5.5.5 initialisation, §5.5.6 operation, §5.5.6.3 memory statistics.
//!
//! [`session`] is the protocol (which pages, which queue, what `actual` is), [`wire`] the formats; this file lends
//! the buffers to the virtqueues. One inflate or deflate buffer is in flight at a time (as Linux's `tell_host`
//! waits for each), so deflated pages are the guest's again only once the device used the buffer:
//! `VIRTIO_BALLOON_F_MUST_TELL_HOST` holds whether negotiated or not. `VIRTIO_BALLOON_F_DEFLATE_ON_OOM` is
//! accepted and noted: the guest never runs out of memory through the balloon, whose floor keeps free memory
//! for the network stack and the apps. Free page hinting and reporting are not negotiated.

pub mod session;
pub mod wire;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::task::Poll;
use libos::mem::balloon::{BalloonOps, PAGE_SIZE};
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::{DeviceStatus, Transport};
use virtio_drivers::{Error as VirtioError, Hal};

use super::init::{self, StartError};
use super::net::{IrqAck, F_VERSION_1};
use crate::irq::IrqSlot;
pub use session::{Direction, Session, SessionError, Totals};
use wire::{config, QUEUE_DEFLATE, QUEUE_INFLATE, QUEUE_STATS};

/// Descriptors per virtqueue: one buffer is in flight per queue at a time.
pub const QUEUE_SIZE: usize = 8;

/// Features the driver accepts (§5.5.3): the stats virtqueue, MUST_TELL_HOST (always honoured), DEFLATE_ON_OOM
/// (noted), `VIRTIO_F_VERSION_1`.
pub const DRIVER_FEATURES: u64 = wire::F_MUST_TELL_HOST | wire::F_STATS_VQ | wire::F_DEFLATE_ON_OOM | F_VERSION_1;

/// Ops handled in one poll before the task yields to others (the network stack keeps its share of the CPU).
const OPS_PER_POLL: usize = 16;

/// Why the virtio-balloon device failed (at start-up, or later for a protocol error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BalloonError {
    /// A start-up step every virtio driver shares failed (features, virtqueues, interrupt).
    Start(StartError),
    /// `virtio-drivers` refused an operation after the virtqueues were set up (configuration access, adding a
    /// buffer).
    Virtio {
        /// Device name.
        device: String,
        /// What was being done, e.g. "writing actual".
        what: &'static str,
        /// The `virtio-drivers` error.
        error: VirtioError,
    },
    /// The device broke the protocol (a used id the driver did not lend, a used buffer nothing was in flight
    /// for) or gave a page frame number beyond le32; the driver stops.
    Protocol {
        /// Device name.
        device: String,
        /// The virtqueue's name (inflateq, deflateq, statsq).
        queue: &'static str,
        /// What happened.
        detail: String,
    },
}

impl From<StartError> for BalloonError {
    fn from(e: StartError) -> Self {
        Self::Start(e)
    }
}

impl fmt::Display for BalloonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Start(e) => write!(f, "{e}"),
            Self::Virtio { device, what, error } => write!(f, "{device}: {what}: {error}"),
            Self::Protocol { device, queue, detail } => write!(f, "{device}: {queue}: {detail}"),
        }
    }
}

/// Names of the virtio-balloon feature bits in `bits` (§5.5.3), e.g. "STATS_VQ,VERSION_1".
pub fn feature_names(bits: u64) -> String {
    super::feature_list(bits, wire::FEATURE_NAMES)
}

/// A buffer lent to a virtqueue: its descriptor head and bytes, kept until the device uses it.
struct Lent {
    token: u16,
    buf: Vec<u8>,
}

/// A virtio-balloon device: its transport, virtqueues and protocol state.
pub struct VirtioBalloon<H: Hal, T: Transport> {
    name: String,
    transport: T,
    features: u64,
    inflateq: VirtQueue<H, QUEUE_SIZE>,
    deflateq: VirtQueue<H, QUEUE_SIZE>,
    statsq: Option<VirtQueue<H, QUEUE_SIZE>>,
    /// The inflate or deflate buffer in flight (the session knows which).
    pending: Option<Lent>,
    /// The stats buffer the device holds.
    stats: Option<Lent>,
    session: Session,
    /// The totals when the driver last logged reaching the device's size (one line per change).
    logged: Totals,
    /// When the first buffer towards the current size went out (ns since boot), for the log's rate.
    busy_since: Option<u64>,
    ack: IrqAck,
    irq: &'static IrqSlot,
}

impl<H: Hal, T: Transport> VirtioBalloon<H, T> {
    /// Initialises the device (virtio 1.2 §3.1.1, §5.5.5): reset, features, inflateq and deflateq (and statsq with
    /// `VIRTIO_BALLOON_F_STATS_VQ`), `setup_irq` (between queue setup and `DRIVER_OK`), `DRIVER_OK`, then the
    /// first stats buffer with the figures of `balloon`. `name` names the device in logs and errors. Errors:
    /// [`BalloonError`]; the device is left FAILED.
    pub fn new(
        mut transport: T,
        name: String,
        irq: &'static IrqSlot,
        ack: IrqAck,
        balloon: &dyn BalloonOps,
        setup_irq: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<Self, BalloonError> {
        let features = init::negotiate_features(&mut transport, &name, |f| f & DRIVER_FEATURES, feature_names)?;
        let with_stats = features & wire::F_STATS_VQ != 0;
        let queues = [(QUEUE_INFLATE, QUEUE_SIZE), (QUEUE_DEFLATE, QUEUE_SIZE), (QUEUE_STATS, QUEUE_SIZE)];
        init::check_queue_sizes(&mut transport, &name, &queues[..if with_stats { 3 } else { 2 }])?;
        let inflateq = init::new_queue(&mut transport, &name, QUEUE_INFLATE, "inflateq setup")?;
        let deflateq = init::new_queue(&mut transport, &name, QUEUE_DEFLATE, "deflateq setup")?;
        let statsq = match with_stats {
            true => Some(init::new_queue(&mut transport, &name, QUEUE_STATS, "statsq setup")?),
            false => None,
        };
        init::setup_interrupt(&mut transport, &name, setup_irq)?;
        let mut dev = VirtioBalloon {
            name,
            transport,
            features,
            inflateq,
            deflateq,
            statsq,
            pending: None,
            stats: None,
            session: Session::new(),
            logged: Totals::default(),
            busy_since: None,
            ack,
            irq,
        };
        dev.transport.finish_init();
        // The balloon starts empty: `actual` 0 whatever an earlier driver left (§5.5.6.2).
        dev.write_actual()?;
        // The first stats buffer goes in at once; the device hands it back when it wants figures (§5.5.6.3).
        dev.post_stats(balloon)?;
        Ok(dev)
    }

    /// The negotiated features.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// The protocol state (pages held, totals).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The device's boot log line: name, features, queues, the size the device wants now.
    pub fn describe(&self) -> String {
        let num_pages = self.read_num_pages().unwrap_or(0);
        format!(
            "{} features {} queues inflateq,deflateq{} ({QUEUE_SIZE} descriptors) num_pages {num_pages} ({} MiB)",
            self.name,
            feature_names(self.features),
            if self.statsq.is_some() { ",statsq" } else { "" },
            (u64::from(num_pages) * PAGE_SIZE) >> 20
        )
    }

    fn read_num_pages(&self) -> Result<u32, BalloonError> {
        self.transport.read_config_space::<u32>(config::NUM_PAGES.start).map_err(|error| BalloonError::Virtio {
            device: self.name.clone(),
            what: "reading num_pages",
            error,
        })
    }

    fn write_actual(&mut self) -> Result<(), BalloonError> {
        let actual = self.session.actual();
        self.transport.write_config_space::<u32>(config::ACTUAL.start, actual).map_err(|error| BalloonError::Virtio {
            device: self.name.clone(),
            what: "writing actual",
            error,
        })
    }

    fn protocol(&self, queue: &'static str, detail: impl fmt::Display) -> BalloonError {
        BalloonError::Protocol { device: self.name.clone(), queue, detail: format!("{detail}") }
    }

    /// Lends a fresh stats buffer with the figures of `balloon` to statsq (no-op without it).
    fn post_stats(&mut self, balloon: &dyn BalloonOps) -> Result<(), BalloonError> {
        let Some(q) = self.statsq.as_mut() else { return Ok(()) };
        let buf = Session::stats(balloon);
        // SAFETY: `buf` is kept in `self.stats` (same address and length) until `pop_used` with this token.
        let token = unsafe { q.add(&[&buf[..]], &mut []) }.map_err(|error| BalloonError::Virtio {
            device: self.name.clone(),
            what: "adding the statsq buffer",
            error,
        })?;
        let notify = q.should_notify();
        self.stats = Some(Lent { token, buf });
        if notify {
            self.transport.notify(QUEUE_STATS);
        }
        Ok(())
    }

    /// Takes back the stats buffer if the device used it (it wants figures) and lends a fresh one.
    fn reap_stats(&mut self, balloon: &dyn BalloonOps) -> Result<bool, BalloonError> {
        let Some(q) = self.statsq.as_mut() else { return Ok(false) };
        match reclaim(q, &mut self.stats) {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(detail) => return Err(self.protocol("statsq", detail)),
        }
        self.post_stats(balloon)?;
        Ok(true)
    }

    /// Takes back the inflate or deflate buffer if the device used it, completes it and writes `actual`.
    fn reap_pending(&mut self, balloon: &mut dyn BalloonOps) -> Result<bool, BalloonError> {
        let Some(direction) = self.session.in_flight() else { return Ok(false) };
        let qname = direction.queue_name();
        let q = match direction {
            Direction::Inflate => &mut self.inflateq,
            Direction::Deflate => &mut self.deflateq,
        };
        match reclaim(q, &mut self.pending) {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(detail) => return Err(self.protocol(qname, detail)),
        }
        let before = self.session.actual();
        let actual = self.session.completed(direction.queue(), balloon).map_err(|e| self.protocol(qname, e))?;
        self.write_actual()?;
        log::debug!("{}: {qname} buffer used; actual {before} -> {actual} pages", self.name);
        Ok(true)
    }

    /// Sends the next inflate or deflate buffer towards `num_pages`, if any.
    fn submit(&mut self, num_pages: u32, balloon: &mut dyn BalloonOps) -> Result<bool, BalloonError> {
        let sub = match self.session.next(num_pages, balloon) {
            Ok(Some(s)) => s,
            Ok(None) => return Ok(false),
            Err(e) => return Err(self.protocol("inflateq", e)),
        };
        let (q, queue) = match sub.direction {
            Direction::Inflate => (&mut self.inflateq, QUEUE_INFLATE),
            Direction::Deflate => (&mut self.deflateq, QUEUE_DEFLATE),
        };
        let buf = sub.pfns;
        // SAFETY: `buf` is kept in `self.pending` (same address and length) until `pop_used` with this token.
        match unsafe { q.add(&[&buf[..]], &mut []) } {
            Ok(token) => {
                self.busy_since.get_or_insert_with(libos::time::uptime_ns);
                let notify = q.should_notify();
                self.pending = Some(Lent { token, buf });
                if notify {
                    self.transport.notify(queue);
                }
                Ok(true)
            }
            Err(error) => {
                self.session.not_submitted(balloon);
                let what = match sub.direction {
                    Direction::Inflate => "adding an inflateq buffer",
                    Direction::Deflate => "adding a deflateq buffer",
                };
                Err(BalloonError::Virtio { device: self.name.clone(), what, error })
            }
        }
    }

    /// One round of work: acknowledges the interrupt (edge-triggered virtio-mmio), answers a stats request,
    /// completes the buffer the device used, and sends the next one towards `num_pages`; up to a few buffers
    /// while the device uses them at once. Returns whether more work may be ready now (poll again soon).
    /// Errors: a protocol violation or a failed configuration access; the driver stops.
    pub fn poll_once(&mut self, balloon: &mut dyn BalloonOps) -> Result<bool, BalloonError> {
        if self.ack == IrqAck::Task {
            // Acknowledge before looking: a change after this raises a new edge.
            self.transport.ack_interrupt();
        }
        self.reap_stats(balloon)?;
        for _ in 0..OPS_PER_POLL {
            let reaped = self.reap_pending(balloon)?;
            let num_pages = self.read_num_pages()?;
            let sent = self.submit(num_pages, balloon)?;
            if !reaped && !sent {
                let t = self.session.totals();
                if self.session.in_flight().is_none() && t != self.logged {
                    if self.session.actual() == num_pages {
                        self.log_reached(num_pages, balloon);
                    } else if t.short != self.logged.short {
                        // Stopped short (the session logged why): the next change is timed on its own.
                        self.logged = t;
                        self.busy_since = None;
                    }
                }
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn log_reached(&mut self, num_pages: u32, balloon: &dyn BalloonOps) {
        let s = balloon.stats();
        let t = self.session.totals();
        let moved = (t.inflated + t.deflated) - (self.logged.inflated + self.logged.deflated);
        let us = (libos::time::uptime_ns().saturating_sub(self.busy_since.take().unwrap_or(0)) / 1000).max(1);
        log::info!(
            "{}: balloon at {num_pages} pages ({} MiB) as the device asked, {} MiB moved in {} ms ({} MiB/s); {} MiB \
             free, {} MiB total",
            self.name,
            (u64::from(num_pages) * PAGE_SIZE) >> 20,
            (moved * PAGE_SIZE) >> 20,
            us / 1000,
            (moved * PAGE_SIZE * 1_000_000 / us) >> 20,
            s.free_bytes >> 20,
            s.total_bytes >> 20
        );
        self.logged = t;
    }

    /// Serves the device until it breaks the protocol: each interrupt (configuration change or used buffer)
    /// wakes the task, which runs [`VirtioBalloon::poll_once`] with `balloon`. Returns the error that stopped it.
    pub async fn run(mut self, mut balloon: impl BalloonOps) -> BalloonError {
        core::future::poll_fn(|cx| {
            self.irq.set_waker(cx.waker());
            match self.poll_once(&mut balloon) {
                Err(e) => Poll::Ready(e),
                Ok(more) => {
                    if more {
                        cx.waker().wake_by_ref();
                    }
                    Poll::Pending
                }
            }
        })
        .await
    }
}

/// Takes `lent` back from `q` if the device used it (`lent` is `None` afterwards); returns whether it did.
/// Errors: the used ring names another id (out of range, or never lent), or virtio-drivers refused to pop it.
fn reclaim<H: Hal>(q: &mut VirtQueue<H, QUEUE_SIZE>, lent: &mut Option<Lent>) -> Result<bool, String> {
    let Some(used) = q.peek_used() else { return Ok(false) };
    let Some(l) = lent.take() else { return Err(format!("used id {used} while no buffer was lent")) };
    if used != l.token {
        let want = l.token;
        *lent = Some(l);
        return Err(format!("used id {used}, the lent buffer is id {want}"));
    }
    // SAFETY: the buffer added under this token (in `post_stats` or `submit`), same address and length.
    if let Err(e) = unsafe { q.pop_used(l.token, &[&l.buf[..]], &mut []) } {
        // The device may still read it: never free it.
        core::mem::forget(l.buf);
        return Err(format!("popping used id {used}: {e}"));
    }
    Ok(true)
}

impl<H: Hal, T: Transport> Drop for VirtioBalloon<H, T> {
    fn drop(&mut self) {
        // Reset first: the device must stop using the rings and buffers before they are freed.
        self.transport.set_status(DeviceStatus::empty());
    }
}

#[cfg(test)]
mod tests;
