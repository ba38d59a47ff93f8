//! Hyper-V Dynamic Memory (the `hv_balloon` device, VMBus class `525074dc-8985-46e2-8057-a307dc18a502`): the
//! host balloons the guest up and down through libos's balloon (`libos::mem::balloon`) and the guest reports its
//! memory pressure. [`wire`] is the message codec, [`session`] the sans-I/O protocol state, this file the driver
//! that runs it over the VMBus channel: the handshake at bring-up ([`DynamicMemory::connect`]), then a task
//! answering the host's requests and sending a status report every second ([`DynamicMemory::run`]).
//! Source: Linux `drivers/hv/hv_balloon.c`; QEMU `hw/hyperv/hv-balloon.c` is the host tested against.
#![forbid(unsafe_code)]

#[cfg(any(test, feature = "host-model"))]
pub mod host_model;
pub mod session;
pub mod wire;

use crate::vmbus::channel::Channel;
use crate::vmbus::packet;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::Poll;
use libos::time::Duration;
pub use session::{BalloonOps, Phase, Session, Stop};

/// Ring pages per direction of the channel (control page included): a 4 KiB balloon response and a few status
/// reports fit the three data pages.
pub const RING_PAGES: usize = 4;

/// Interval of the status reports (Linux posts one per second).
pub const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// Why the driver stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The channel failed (ring, rescind, hypercall).
    Channel(crate::vmbus::Error),
    /// The protocol ended: no common version, or capabilities refused.
    Stopped(Stop),
    /// The host did not answer the handshake within the time.
    Timeout {
        /// Milliseconds waited.
        ms: u64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Channel(e) => write!(f, "dynamic memory: {e}"),
            Self::Stopped(s) => write!(f, "dynamic memory: {s}"),
            Self::Timeout { ms } => write!(f, "dynamic memory: no answer to the handshake within {ms} ms"),
        }
    }
}

impl From<crate::vmbus::Error> for Error {
    fn from(e: crate::vmbus::Error) -> Self {
        Self::Channel(e)
    }
}

/// The driver: the open channel and the protocol state.
pub struct DynamicMemory {
    ch: Channel,
    session: Session,
}

impl DynamicMemory {
    /// Runs the handshake on the open channel `ch` (version negotiation, capabilities; `balloon` gives the floor
    /// for the report), waiting at most `timeout`. Errors: the host refused, the channel failed, no answer.
    pub async fn connect(ch: Channel, balloon: &mut dyn BalloonOps, timeout: Duration) -> Result<Self, Error> {
        let mut dm = DynamicMemory { ch, session: Session::new() };
        let first = dm.session.start();
        dm.send(&[first]).await?;
        let handshake = async {
            loop {
                match dm.session.phase() {
                    Phase::Running { .. } => return Ok(()),
                    Phase::Stopped(s) => return Err(Error::Stopped(s)),
                    _ => {}
                }
                let p = dm.ch.recv().await?;
                let out = dm.handle(&p, balloon);
                dm.send(&out).await?;
            }
        };
        match libos::time::timeout(timeout, handshake).await {
            Ok(r) => r.map(|()| dm),
            Err(_) => Err(Error::Timeout { ms: timeout.as_millis() as u64 }),
        }
    }

    /// The negotiated protocol version (`major << 16 | minor`).
    pub fn version(&self) -> u32 {
        self.session.version()
    }

    /// Whether the host wants status reports.
    pub fn status_reports(&self) -> bool {
        self.session.phase() == (Phase::Running { status_reports: true })
    }

    async fn send(&self, out: &[session::Outgoing]) -> Result<(), Error> {
        for (trans_id, bytes) in out {
            self.ch.send_inband_wait(u64::from(*trans_id), bytes, false).await?;
        }
        Ok(())
    }

    /// Handles one packet from the host (in-band data is a protocol message; anything else is logged) and returns
    /// the answers to send.
    fn handle(&mut self, p: &packet::Packet, balloon: &mut dyn BalloonOps) -> Vec<session::Outgoing> {
        if p.desc.ty != packet::ty::DATA_INBAND {
            log::debug!("dm: ignoring a packet of type {} from the host", p.desc.ty);
            return Vec::new();
        }
        self.session.on_packet(p.payload(), balloon)
    }

    /// Serves the host until the channel fails: answers its requests with `balloon` and sends a status report
    /// every [`STATUS_INTERVAL`] while the host wants them. Returns why it stopped.
    pub async fn run(mut self, mut balloon: impl BalloonOps + Send) -> Error {
        let mut tick = libos::time::sleep(STATUS_INTERVAL);
        loop {
            enum Event {
                Packet(Result<packet::Packet, crate::vmbus::Error>),
                Tick,
            }
            let ev = core::future::poll_fn(|cx| {
                if let Poll::Ready(r) = self.ch.poll_recv(cx) {
                    return Poll::Ready(Event::Packet(r));
                }
                match Pin::new(&mut tick).poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Event::Tick),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await;
            let out = match ev {
                Event::Packet(Ok(p)) => self.handle(&p, &mut balloon),
                Event::Packet(Err(e)) => return Error::Channel(e),
                Event::Tick => {
                    tick.reset(libos::time::Instant::now() + STATUS_INTERVAL);
                    self.session.status_report(&balloon).into_iter().collect()
                }
            };
            if let Err(e) = self.send(&out).await {
                return e;
            }
        }
    }
}

/// The kernel heap's balloon (`libos::mem::balloon::global`) as the driver's [`BalloonOps`].
#[cfg(target_os = "none")]
pub use libos::mem::balloon::global::KernelBalloon;

#[cfg(test)]
mod tests {
    use super::host_model::{DmHost, HostPhase};
    use super::session::{Session, RANGES_PER_RESPONSE};
    use super::wire::{caps, version};
    use super::*;
    use libos::mem::balloon::model::ModelHeap;
    use libos::mem::balloon::{Balloon, PAGE_SIZE};

    /// A 128 MiB guest (heap from 4 MiB) with a 16 MiB floor.
    fn guest() -> Balloon<ModelHeap> {
        Balloon::new(ModelHeap::new(0x400, 32768), 16 << 20)
    }

    /// Delivers `msgs` from the host to the session, and the session's answers to the host, until both are quiet.
    fn exchange(host: &mut DmHost, s: &mut Session, b: &mut Balloon<ModelHeap>, msgs: Vec<Vec<u8>>) {
        let mut to_guest = msgs;
        while !to_guest.is_empty() {
            let mut to_host = Vec::new();
            for m in to_guest.drain(..) {
                to_host.extend(s.on_packet(&m, b).into_iter().map(|(_, bytes)| bytes));
            }
            for m in to_host {
                to_guest.extend(host.receive(&m));
            }
        }
    }

    /// A session brought to Running against `host`.
    fn connected(host: &mut DmHost, b: &mut Balloon<ModelHeap>) -> Session {
        let mut s = Session::new();
        let (_, first) = s.start();
        let answers = host.receive(&first);
        exchange(host, &mut s, b, answers);
        s
    }

    #[test]
    fn negotiates_the_newest_version_the_host_accepts() {
        let mut b = guest();
        // A host speaking 1.0 only: 2.0 is refused, 1.0 taken; the capabilities say balloon, no hot-add.
        let mut host = DmHost::new(&[version::WIN8], 0x400..0x400 + 32768);
        let s = connected(&mut host, &mut b);
        assert_eq!(s.phase(), Phase::Running { status_reports: true });
        assert_eq!(s.version(), version::WIN8);
        assert_eq!(host.phase, HostPhase::Idle);
        let (c, min_pages, max_pfn) = host.guest_caps.unwrap();
        assert_eq!((c, min_pages, max_pfn), (caps::BALLOON, (16 << 20) / PAGE_SIZE, u64::MAX));
        assert!(!host.last_attempt_seen, "1.0 is not the last version offered");
        // QEMU's hv-balloon accepts 0.3 to 2.0: 2.0 at once.
        let mut qemu = DmHost::new(&[version::WIN7, version::WIN8, version::WIN10], 0x400..0x400 + 32768);
        assert_eq!(connected(&mut qemu, &mut b).version(), version::WIN10);
    }

    #[test]
    fn no_common_version_or_refused_capabilities_stop_the_service() {
        let mut b = guest();
        let mut host = DmHost::new(&[], 0..0);
        let s = connected(&mut host, &mut b);
        assert_eq!(s.phase(), Phase::Stopped(Stop::NoVersion));
        assert!(host.last_attempt_seen, "0.3 goes out marked as the last attempt");
        let mut refusing = DmHost::new(&[version::WIN10], 0..0);
        refusing.accept_caps = false;
        let mut s = connected(&mut refusing, &mut b);
        assert_eq!(s.phase(), Phase::Stopped(Stop::CapabilitiesRefused));
        assert_eq!(s.status_report(&b), None);
    }

    #[test]
    fn balloon_down_and_back_up_with_status_reports() {
        let mut b = guest();
        let mut host = DmHost::new(&[version::WIN10], 0x400..0x400 + 32768);
        let mut s = connected(&mut host, &mut b);
        // 32 MiB out.
        let req = host.balloon(8192);
        exchange(&mut host, &mut s, &mut b, alloc::vec![req]);
        assert_eq!(host.held.len(), 8192);
        assert_eq!(host.phase, HostPhase::Idle, "one response with more_pages clear");
        assert_eq!(b.stats().ballooned_bytes, 32 << 20);
        let (_, report) = s.status_report(&b).unwrap();
        host.receive(&report);
        let (avail, committed) = *host.reports.last().unwrap();
        assert_eq!(avail, b.stats().free_bytes / PAGE_SIZE);
        assert_eq!(committed, b.stats().used_bytes() / PAGE_SIZE + 8192 + (16 << 20) / PAGE_SIZE);
        // Back in, as QEMU does it: one range per request, the last one answered.
        let reqs = host.unballoon(8192);
        exchange(&mut host, &mut s, &mut b, reqs);
        assert_eq!(host.unballoon_responses, 1);
        assert_eq!(b.stats().ballooned_bytes, 0);
        assert!(b.source().used_pages() == 0, "every chunk is back in the heap");
        let t = s.totals();
        assert_eq!((t.asked, t.given, t.returned, t.foreign, t.malformed), (8192, 8192, 8192, 0, 0));
    }

    #[test]
    fn a_request_beyond_the_floor_gives_what_it_can() {
        let mut b = guest();
        let mut host = DmHost::new(&[version::WIN10], 0x400..0x400 + 32768);
        let mut s = connected(&mut host, &mut b);
        // More pages than exist: everything above the 16 MiB floor, in several responses.
        let req = host.balloon(u32::MAX);
        exchange(&mut host, &mut s, &mut b, alloc::vec![req]);
        assert_eq!(host.held.len() as u64, 32768 - (16 << 20) / PAGE_SIZE);
        assert_eq!(b.stats().free_bytes, 16 << 20);
        // At the floor: one response with no range (the host's "at minimum size").
        let req = host.balloon(1);
        exchange(&mut host, &mut s, &mut b, alloc::vec![req]);
        assert_eq!((host.balloon_responses, host.phase), (1, HostPhase::Idle));
    }

    #[test]
    fn many_ranges_go_out_in_several_responses() {
        // A heap fragmented to single free pages: every range is one page.
        let mut heap = ModelHeap::new(0x400, 4096);
        for p in (0x400..0x400 + 4096).step_by(2) {
            heap.hold(p);
        }
        let mut b = Balloon::new(heap, 0);
        let mut host = DmHost::new(&[version::WIN10], 0x400..0x400 + 4096);
        let mut s = connected(&mut host, &mut b);
        let req = host.balloon(1500);
        exchange(&mut host, &mut s, &mut b, alloc::vec![req]);
        assert_eq!(host.held.len(), 1500);
        assert_eq!(host.balloon_responses, 1500usize.div_ceil(RANGES_PER_RESPONSE));
    }

    #[test]
    fn hot_add_and_hot_remove_are_declined() {
        let mut b = guest();
        let mut host = DmHost::new(&[version::WIN10], 0x400..0x400 + 32768);
        let mut s = connected(&mut host, &mut b);
        let req = host.hot_add(0x100000, 32768);
        exchange(&mut host, &mut s, &mut b, alloc::vec![req]);
        assert_eq!(host.hot_add_responses, [(0, 1)], "0 pages, result 1: a permanent refusal");
        let out = s.on_packet(&host.raw(13, &[0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), &mut b);
        let (_, m) = &out[0];
        assert_eq!((m[0], m.len(), m[8]), (14, 24, 0), "hot-remove response with result 0");
    }

    #[test]
    fn bad_input_gets_a_log_line_and_never_a_double_free() {
        let mut b = guest();
        let mut host = DmHost::new(&[version::WIN10], 0x400..0x400 + 32768);
        let mut s = connected(&mut host, &mut b);
        let req = host.balloon(1024);
        exchange(&mut host, &mut s, &mut b, alloc::vec![req]);
        // Unknown type, a size past the packet, a range count past the message: dropped, no answer.
        assert!(s.on_packet(&host.raw(99, &[0; 8]), &mut b).is_empty());
        let mut past = host.raw(6, &[0; 8]);
        past[2] = 200;
        assert!(s.on_packet(&past, &mut b).is_empty());
        let mut ranges = host.raw(8, &[0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        ranges[2] = 24;
        assert!(s.on_packet(&ranges, &mut b).is_empty());
        assert!(s.on_packet(&[1, 2, 3], &mut b).is_empty());
        assert_eq!(s.totals().malformed, 4);
        // Pages that were never ballooned, and ballooned ones returned twice: left alone, still answered.
        let held: Vec<u64> = host.held.iter().copied().collect();
        let first = held[0];
        let reqs = host.unballoon_ranges(&[(0x10, 4), (first, 8), (first, 8)]);
        exchange(&mut host, &mut s, &mut b, reqs);
        assert_eq!(host.unballoon_responses, 1);
        assert_eq!((s.totals().returned, s.totals().foreign), (8, 4 + 8));
        assert_eq!(b.ballooned_pages(), 1024 - 8);
        // A balloon request before the handshake finished is answered with no pages.
        let mut early = Session::new();
        let _ = early.start();
        let out = early.on_packet(&host.raw(6, &[0, 1, 0, 0, 0, 0, 0, 0]), &mut b);
        assert_eq!(out.len(), 1);
        assert_eq!(&out[0].1[12..16], &[0, 0, 0, 0], "no ranges, more_pages clear");
    }

    #[test]
    fn suppressed_reports_are_not_sent() {
        let mut b = guest();
        let mut host = DmHost::new(&[version::WIN10], 0..1);
        host.suppress_reports = true;
        let mut s = connected(&mut host, &mut b);
        assert_eq!(s.phase(), Phase::Running { status_reports: false });
        assert_eq!(s.status_report(&b), None);
    }
}
