//! virtio-balloon's protocol as a sans-I/O state machine: from the device's `num_pages` and the pages the driver
//! has given (`actual`), the next inflateq or deflateq buffer, one in flight at a time; its completion updates
//! `actual` (which the driver then writes to the configuration space) and, for a deflate, gives the pages back to
//! the guest. Pages come from and go back to the libos balloon ([`BalloonOps`]), which never takes free memory
//! below its floor: a `num_pages` beyond what can be freed gets what can, one log line, and no retry until the
//! device asks for another size. Source: virtio 1.2 §5.5.6 (device operation), §5.5.6.1 (deflating),
//! §5.5.6.2 (`actual`); Linux `drivers/virtio/virtio_balloon.c` (`fill_balloon`, `leak_balloon`, `tell_host`).
#![forbid(unsafe_code)]

use super::wire::{self, PfnTooLarge, QUEUE_DEFLATE, QUEUE_INFLATE};
use alloc::vec::Vec;
use core::fmt;
use libos::mem::balloon::{BalloonOps, PageRange, PAGE_SIZE};

/// Page frame numbers per inflateq/deflateq buffer: one 4 KiB page of le32 (4 MiB of guest memory). Linux sends
/// 256 per buffer; a larger buffer means fewer round trips for the same memory.
pub const PFNS_PER_BUFFER: u64 = 1024;

/// What a buffer in flight does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Pages to the device (inflateq).
    Inflate,
    /// Pages back from the device (deflateq).
    Deflate,
}

impl Direction {
    /// The virtqueue this direction uses.
    pub fn queue(self) -> u16 {
        match self {
            Direction::Inflate => QUEUE_INFLATE,
            Direction::Deflate => QUEUE_DEFLATE,
        }
    }

    /// The queue's name in the specification.
    pub fn queue_name(self) -> &'static str {
        match self {
            Direction::Inflate => "inflateq",
            Direction::Deflate => "deflateq",
        }
    }
}

/// A buffer for the device: the direction (its queue) and the le32 page frame numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submit {
    /// Inflate or deflate.
    pub direction: Direction,
    /// The buffer's bytes (4 per page).
    pub pfns: Vec<u8>,
}

/// A protocol error: the device used a buffer the driver did not make available.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionError {
    /// A used buffer on `queue` while nothing (or something on the other queue) was in flight.
    UnexpectedUsed {
        /// The virtqueue index (0 inflateq, 1 deflateq).
        queue: u16,
    },
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::UnexpectedUsed { queue } => {
                write!(f, "used buffer on virtqueue {queue} while the driver had none in flight there")
            }
        }
    }
}

/// Totals of the balloon traffic, for logs and the figures (pages).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Pages given to the device (inflateq buffers used).
    pub inflated: u64,
    /// Pages taken back (deflateq buffers used).
    pub deflated: u64,
    /// Times a `num_pages` could not be reached because of the floor.
    pub short: u64,
}

/// The driver's protocol state. See the module docs.
#[derive(Debug, Default)]
pub struct Session {
    actual: u32,
    in_flight: Option<(Direction, Vec<PageRange>)>,
    /// The `num_pages` the driver stopped short of (at the floor), so it does not retry until it changes.
    short_of: Option<u32>,
    totals: Totals,
}

fn pages(ranges: &[PageRange]) -> u64 {
    ranges.iter().map(|r| r.count).sum()
}

impl Session {
    /// A session with an empty balloon.
    pub fn new() -> Self {
        Self::default()
    }

    /// Pages the device holds: the value for `actual`.
    pub fn actual(&self) -> u32 {
        self.actual
    }

    /// The traffic so far.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// Whether a buffer is in flight (on which queue).
    pub fn in_flight(&self) -> Option<Direction> {
        self.in_flight.as_ref().map(|(d, _)| *d)
    }

    /// The next buffer towards `num_pages`, or `None`: one is in flight, the balloon is at the size, or it stopped
    /// short of this size at the floor. Inflating takes pages from `balloon` now (they are not touched again
    /// until the device returns them); deflating chooses pages and gives them back at [`Session::completed`].
    /// Errors: a page frame number beyond le32 (the pages go back to the guest at once).
    pub fn next(&mut self, num_pages: u32, balloon: &mut dyn BalloonOps) -> Result<Option<Submit>, PfnTooLarge> {
        if self.in_flight.is_some() || num_pages == self.actual {
            return Ok(None);
        }
        if self.short_of.is_some_and(|s| s != num_pages) {
            self.short_of = None;
        }
        if self.short_of.is_some() {
            return Ok(None);
        }
        let (direction, ranges) = if num_pages > self.actual {
            let want = u64::from(num_pages - self.actual).min(PFNS_PER_BUFFER);
            (Direction::Inflate, balloon.inflate(want))
        } else {
            let want = u64::from(self.actual - num_pages).min(PFNS_PER_BUFFER);
            (Direction::Deflate, balloon.choose_deflate(want))
        };
        if ranges.is_empty() {
            self.stop_short(num_pages, direction, balloon);
            return Ok(None);
        }
        let pfns = match wire::pfn_array(&ranges) {
            Ok(p) => p,
            Err(e) => {
                if direction == Direction::Inflate {
                    balloon.deflate_ranges(&ranges);
                }
                return Err(e);
            }
        };
        self.in_flight = Some((direction, ranges));
        Ok(Some(Submit { direction, pfns }))
    }

    fn stop_short(&mut self, num_pages: u32, direction: Direction, balloon: &dyn BalloonOps) {
        self.short_of = Some(num_pages);
        self.totals.short += 1;
        let mib = |p: u64| (p * PAGE_SIZE) >> 20;
        let s = balloon.stats();
        match direction {
            Direction::Inflate => log::info!(
                "virtio-balloon: device asks for {num_pages} pages ({} MiB), gave {} ({} MiB): the rest would take \
                 free memory below the floor of {} MiB",
                mib(u64::from(num_pages)),
                self.actual,
                mib(u64::from(self.actual)),
                s.floor_bytes >> 20
            ),
            Direction::Deflate => log::warn!(
                "virtio-balloon: device asks for {num_pages} pages, the driver holds {} but the balloon has none left \
                 to take back",
                self.actual
            ),
        }
    }

    /// The device used the buffer in flight on `queue`: an inflate's pages are the device's, a deflate's go back
    /// to the guest (only now, so `VIRTIO_BALLOON_F_MUST_TELL_HOST` holds whether negotiated or not, §5.5.6.1).
    /// Returns the new `actual` to write. Errors: nothing was in flight on `queue`.
    pub fn completed(&mut self, queue: u16, balloon: &mut dyn BalloonOps) -> Result<u32, SessionError> {
        match self.in_flight.take() {
            Some((d, ranges)) if d.queue() == queue => {
                let n = pages(&ranges);
                match d {
                    Direction::Inflate => {
                        self.actual = self.actual.saturating_add(n as u32);
                        self.totals.inflated += n;
                    }
                    Direction::Deflate => {
                        let back = balloon.deflate_ranges(&ranges);
                        if back.foreign > 0 {
                            log::warn!(
                                "virtio-balloon: {} deflated pages were not ballooned; left alone",
                                back.foreign
                            );
                        }
                        self.actual = self.actual.saturating_sub(n as u32);
                        self.totals.deflated += n;
                    }
                }
                Ok(self.actual)
            }
            other => {
                self.in_flight = other;
                Err(SessionError::UnexpectedUsed { queue })
            }
        }
    }

    /// The virtqueue refused the buffer [`Session::next`] returned: an inflate's pages go back to the guest (the
    /// device never saw them), a deflate's stay ballooned.
    pub fn not_submitted(&mut self, balloon: &mut dyn BalloonOps) {
        if let Some((Direction::Inflate, ranges)) = self.in_flight.take() {
            balloon.deflate_ranges(&ranges);
        }
    }

    /// The stats virtqueue buffer for the memory figures now: free, total (less what is ballooned) and available
    /// memory, bytes (§5.5.6.3).
    pub fn stats(balloon: &dyn BalloonOps) -> Vec<u8> {
        let s = balloon.stats();
        wire::stats_buffer(&[
            (wire::tag::MEMFREE, s.free_bytes),
            (wire::tag::MEMTOT, s.total_bytes.saturating_sub(s.ballooned_bytes)),
            (wire::tag::AVAIL, s.free_bytes),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libos::mem::balloon::model::ModelHeap;
    use libos::mem::balloon::Balloon;

    /// A 64 MiB guest (heap from 4 MiB) with an 8 MiB floor.
    fn guest() -> Balloon<ModelHeap> {
        Balloon::new(ModelHeap::new(0x400, 16384), 8 << 20)
    }

    /// Runs the session to `num_pages`, the device using each buffer at once; returns the buffers sent.
    fn settle(s: &mut Session, b: &mut Balloon<ModelHeap>, num_pages: u32) -> Vec<Submit> {
        let mut sent = Vec::new();
        while let Some(sub) = s.next(num_pages, b).unwrap() {
            s.completed(sub.direction.queue(), b).unwrap();
            sent.push(sub);
        }
        sent
    }

    #[test]
    fn inflates_and_deflates_in_buffers_of_one_page() {
        let (mut s, mut b) = (Session::new(), guest());
        let sent = settle(&mut s, &mut b, 8192);
        assert_eq!(sent.len(), 8);
        assert!(sent.iter().all(|x| x.direction == Direction::Inflate && x.pfns.len() == 4096));
        assert_eq!((s.actual(), b.ballooned_pages()), (8192, 8192));
        let sent = settle(&mut s, &mut b, 0);
        assert_eq!(sent.len(), 8);
        assert_eq!((s.actual(), b.ballooned_pages()), (0, 0));
        assert!(b.source().allocs.is_empty(), "every chunk is back in the heap");
        assert_eq!(s.totals(), Totals { inflated: 8192, deflated: 8192, short: 0 });
    }

    #[test]
    fn a_size_beyond_ram_stops_at_the_floor_once() {
        let (mut s, mut b) = (Session::new(), guest());
        settle(&mut s, &mut b, u32::MAX);
        assert_eq!(u64::from(s.actual()), 16384 - (8 << 20) / PAGE_SIZE);
        assert_eq!(b.stats().free_bytes, 8 << 20);
        assert_eq!(s.totals().short, 1);
        assert_eq!(s.next(u32::MAX, &mut b), Ok(None), "no retry for the same size");
        assert_eq!(s.totals().short, 1);
        // A new size is worked on again: down to 100 pages.
        settle(&mut s, &mut b, 100);
        assert_eq!((s.actual(), b.ballooned_pages()), (100, 100));
    }

    #[test]
    fn deflated_pages_return_only_when_the_device_used_the_buffer() {
        let (mut s, mut b) = (Session::new(), guest());
        settle(&mut s, &mut b, 2048);
        let sub = s.next(0, &mut b).unwrap().unwrap();
        assert_eq!((sub.direction, sub.pfns.len()), (Direction::Deflate, 4096));
        assert_eq!(b.ballooned_pages(), 2048, "still ballooned while the buffer is in flight");
        assert_eq!(s.next(0, &mut b), Ok(None), "one buffer in flight");
        assert_eq!(s.completed(QUEUE_INFLATE, &mut b), Err(SessionError::UnexpectedUsed { queue: QUEUE_INFLATE }));
        assert_eq!(s.completed(QUEUE_DEFLATE, &mut b), Ok(1024));
        assert_eq!(b.ballooned_pages(), 1024);
        assert_eq!(s.completed(QUEUE_DEFLATE, &mut b), Err(SessionError::UnexpectedUsed { queue: QUEUE_DEFLATE }));
    }

    #[test]
    fn a_refused_inflate_gives_its_pages_back() {
        let (mut s, mut b) = (Session::new(), guest());
        assert!(s.next(10, &mut b).unwrap().is_some());
        assert_eq!(b.ballooned_pages(), 10);
        s.not_submitted(&mut b);
        assert_eq!((s.actual(), b.ballooned_pages(), s.in_flight()), (0, 0, None));
    }

    #[test]
    fn stats_report_free_total_and_available() {
        let (mut s, mut b) = (Session::new(), guest());
        settle(&mut s, &mut b, 1024);
        let buf = Session::stats(&b);
        let val = |i: usize| u64::from_le_bytes(buf[i * 10 + 2..i * 10 + 10].try_into().unwrap());
        assert_eq!(buf.len(), 30);
        assert_eq!((buf[0], val(0)), (wire::tag::MEMFREE as u8, (16384 - 1024) * PAGE_SIZE));
        assert_eq!((buf[10], val(1)), (wire::tag::MEMTOT as u8, (16384 - 1024) * PAGE_SIZE));
        assert_eq!(buf[20], wire::tag::AVAIL as u8);
    }
}
