//! The guest's side of the Dynamic Memory protocol as a sans-I/O state machine: version negotiation (2.0, then
//! 1.0, then 0.3, the last marked `is_last_attempt`), the capabilities report (balloon only: no hot-add, no
//! hot-remove), then the host's requests: balloon up (give pages, in responses of at most [`MAX_MESSAGE`] bytes
//! each), balloon down (take the named pages back, answer after the last request of the transaction), hot-add and
//! hot-remove (declined), plus periodic status reports unless the host suppresses them. Every message the host
//! sends gets the answer the protocol defines; malformed or unexpected ones a log line (and still an answer when
//! the host waits for one). Source: Linux `drivers/hv/hv_balloon.c` (`balloon_up`, `balloon_down`,
//! `hot_add_req`, `post_status`, `balloon_connect_vsp`), QEMU `hw/hyperv/hv-balloon.c`.
#![forbid(unsafe_code)]

use super::wire::{caps, caps_response, decode, msgtype, version, DmMessage, RANGE_MAX_PAGES};
use alloc::vec::Vec;
use core::fmt;
use libos::mem::balloon::{Balloon, Deflated, MemStats, PageRange, PageSource, PAGE_SIZE};

/// The largest message the guest sends (bytes): one page, as Linux's balloon responses (510 ranges).
pub const MAX_MESSAGE: usize = 4096;

/// Page ranges per balloon response: `(MAX_MESSAGE - 16) / 8`.
pub const RANGES_PER_RESPONSE: usize = (MAX_MESSAGE - 16) / 8;

/// What the driver does with memory: the libos balloon (the kernel heap's on the bare target).
pub trait BalloonOps {
    /// Gives up to `pages` pages to the host; returns what was given (see `Balloon::inflate`).
    fn inflate(&mut self, pages: u64) -> Vec<PageRange>;
    /// Takes back the pages of `ranges` the host returns (see `Balloon::deflate_ranges`).
    fn deflate_ranges(&mut self, ranges: &[PageRange]) -> Deflated;
    /// The memory figures now.
    fn stats(&self) -> MemStats;
}

impl<S: PageSource> BalloonOps for Balloon<S> {
    fn inflate(&mut self, pages: u64) -> Vec<PageRange> {
        Balloon::inflate(self, pages)
    }
    fn deflate_ranges(&mut self, ranges: &[PageRange]) -> Deflated {
        Balloon::deflate_ranges(self, ranges)
    }
    fn stats(&self) -> MemStats {
        Balloon::stats(self)
    }
}

/// Where the session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the answer to the version request of [`version::ALL`]`[index]`.
    Version {
        /// Index of the version asked for.
        index: usize,
    },
    /// Waiting for the answer to the capabilities report.
    Capabilities,
    /// Serving the host's requests; `status_reports` unless the host suppressed them.
    Running {
        /// Whether periodic status reports are sent.
        status_reports: bool,
    },
    /// The host accepted no version, or refused the capabilities: the guest stops the service (the protocol's
    /// rule).
    Stopped(Stop),
}

/// Why the session stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The host refused every version.
    NoVersion,
    /// The host refused the capabilities.
    CapabilitiesRefused,
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::NoVersion => write!(f, "the host accepted none of the Dynamic Memory versions 2.0, 1.0, 0.3"),
            Stop::CapabilitiesRefused => write!(f, "the host refused the guest's Dynamic Memory capabilities"),
        }
    }
}

/// Totals of the balloon traffic, for logs and the figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Pages the host asked for in balloon requests.
    pub asked: u64,
    /// Pages given in balloon responses.
    pub given: u64,
    /// Pages the host returned (unballoon) that were ballooned.
    pub returned: u64,
    /// Pages the host named that were not ballooned.
    pub foreign: u64,
    /// Messages dropped as malformed.
    pub malformed: u64,
}

/// One message for the host: the VMBus packet's transaction id and the message's bytes.
pub type Outgoing = (u32, Vec<u8>);

/// The guest's protocol state. See the module docs.
#[derive(Debug)]
pub struct Session {
    phase: Phase,
    next_trans_id: u32,
    version: u32,
    /// Pages returned in the current unballoon transaction.
    unballooning: Deflated,
    totals: Totals,
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

impl Session {
    /// A session before the first version request.
    pub fn new() -> Self {
        Session {
            phase: Phase::Version { index: 0 },
            next_trans_id: 0,
            version: 0,
            unballooning: Deflated::default(),
            totals: Totals::default(),
        }
    }

    /// Where the session is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The negotiated version (`major << 16 | minor`), 0 before.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The traffic so far.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    fn trans_id(&mut self) -> u32 {
        self.next_trans_id = self.next_trans_id.wrapping_add(1);
        self.next_trans_id
    }

    /// A guest-initiated message with a new transaction id.
    fn request(&mut self, m: &DmMessage) -> Outgoing {
        let id = self.trans_id();
        (id, emit(m, id))
    }

    fn version_request(&mut self, index: usize) -> Outgoing {
        self.phase = Phase::Version { index };
        let last_attempt = index + 1 == version::ALL.len();
        self.request(&DmMessage::VersionRequest { version: version::ALL[index], last_attempt })
    }

    /// The first message: the version request for 2.0.
    pub fn start(&mut self) -> Outgoing {
        self.version_request(0)
    }

    /// Handles one packet payload from the host and returns the messages to send in reply (in order), using
    /// `balloon` for balloon requests and returned pages.
    pub fn on_packet(&mut self, payload: &[u8], balloon: &mut dyn BalloonOps) -> Vec<Outgoing> {
        let (trans_id, msg) = match decode(payload) {
            Ok(m) => m,
            Err(e) => {
                self.totals.malformed += 1;
                log::warn!("dm: dropping a malformed message from the host: {e}");
                return Vec::new();
            }
        };
        match (self.phase, msg) {
            (Phase::Version { index }, DmMessage::VersionResponse { accepted: true }) => {
                self.version = version::ALL[index];
                self.phase = Phase::Capabilities;
                let floor_pages = balloon.stats().floor_bytes / PAGE_SIZE;
                // Balloon only: hot-add and hot-remove stay clear, so the host never adds or removes memory.
                let report = DmMessage::CapabilitiesReport {
                    caps: caps::BALLOON,
                    min_page_count: floor_pages,
                    max_page_number: u64::MAX,
                };
                alloc::vec![self.request(&report)]
            }
            (Phase::Version { index }, DmMessage::VersionResponse { accepted: false }) => {
                log::debug!("dm: host refused version {}", version::display(version::ALL[index]));
                if index + 1 < version::ALL.len() {
                    alloc::vec![self.version_request(index + 1)]
                } else {
                    self.phase = Phase::Stopped(Stop::NoVersion);
                    log::warn!("dm: {}; no ballooning", Stop::NoVersion);
                    Vec::new()
                }
            }
            (Phase::Capabilities, DmMessage::CapabilitiesResponse { flags }) => {
                if flags & caps_response::ACCEPTED == 0 {
                    self.phase = Phase::Stopped(Stop::CapabilitiesRefused);
                    log::warn!("dm: {}; no ballooning", Stop::CapabilitiesRefused);
                } else {
                    let status_reports = flags & caps_response::SUPPRESS_PRESSURE_REPORTS == 0;
                    self.phase = Phase::Running { status_reports };
                }
                Vec::new()
            }
            (_, DmMessage::BalloonRequest { num_pages }) => self.balloon_up(trans_id, num_pages, balloon),
            (_, DmMessage::UnballoonRequest { more_pages, ranges }) => {
                self.balloon_down(trans_id, more_pages, &ranges, balloon)
            }
            (_, DmMessage::HotAddRequest { range, .. }) => {
                // Linux's rule: 0 pages with result 1 is a permanent failure, so the host stops offering; the
                // capabilities said no hot-add in the first place.
                log::warn!("dm: declining the host's hot-add of {range} (the guest does not hot-add memory)");
                alloc::vec![(trans_id, emit(&DmMessage::HotAddResponse { page_count: 0, result: 1 }, trans_id))]
            }
            (_, DmMessage::HotRemoveRequest { page_count, .. }) => {
                log::warn!("dm: declining the host's hot-remove of {page_count} pages (not in the capabilities)");
                let r = DmMessage::HotRemoveResponse { result: 0, more_pages: false, ranges: Vec::new() };
                alloc::vec![(trans_id, emit(&r, trans_id))]
            }
            (_, DmMessage::Info { info }) => {
                log::debug!("dm: host information message of {} bytes", info.len());
                Vec::new()
            }
            (_, DmMessage::Error) => {
                log::warn!("dm: the host reported a protocol error (DM_ERROR, transaction {trans_id})");
                Vec::new()
            }
            (phase, m) => {
                self.totals.malformed += 1;
                log::warn!("dm: unexpected {} from the host in phase {phase:?}; ignored", msg_name(m.msgtype()));
                Vec::new()
            }
        }
    }

    /// Balloon up: gives what the balloon can (never below its floor) and answers in as many responses as the
    /// ranges need, the last with `more_pages` clear. A response with no range tells the host the guest is at its
    /// minimum.
    fn balloon_up(&mut self, trans_id: u32, num_pages: u32, balloon: &mut dyn BalloonOps) -> Vec<Outgoing> {
        let asked = u64::from(num_pages);
        let ranges = if matches!(self.phase, Phase::Running { .. }) {
            split(balloon.inflate(asked))
        } else {
            log::warn!("dm: balloon request for {asked} pages before the capabilities were accepted; giving none");
            Vec::new()
        };
        let given: u64 = ranges.iter().map(|r| r.count).sum();
        self.totals.asked += asked;
        self.totals.given += given;
        let s = balloon.stats();
        if given < asked {
            log::info!(
                "dm: host asked for {asked} pages ({} MiB), gave {given} ({} MiB): the rest would take free memory below the floor of {} MiB",
                (asked * PAGE_SIZE) >> 20,
                (given * PAGE_SIZE) >> 20,
                s.floor_bytes >> 20
            );
        } else {
            log::info!(
                "dm: gave {given} pages ({} MiB) to the host; {} MiB ballooned",
                (given * PAGE_SIZE) >> 20,
                s.ballooned_bytes >> 20
            );
        }
        let chunks: Vec<&[PageRange]> =
            if ranges.is_empty() { alloc::vec![&[][..]] } else { ranges.chunks(RANGES_PER_RESPONSE).collect() };
        let n = chunks.len();
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let m = DmMessage::BalloonResponse { more_pages: i + 1 < n, ranges: c.to_vec() };
                (trans_id, emit(&m, trans_id))
            })
            .collect()
    }

    /// Balloon down: takes back the ballooned pages of `ranges` (pages that are not ballooned are logged and left
    /// alone) and, after the transaction's last request, answers with DM_UNBALLOON_RESPONSE.
    fn balloon_down(
        &mut self,
        trans_id: u32,
        more_pages: bool,
        ranges: &[PageRange],
        balloon: &mut dyn BalloonOps,
    ) -> Vec<Outgoing> {
        let d = balloon.deflate_ranges(ranges);
        self.unballooning.returned += d.returned;
        self.unballooning.foreign += d.foreign;
        self.totals.returned += d.returned;
        self.totals.foreign += d.foreign;
        if d.foreign > 0 {
            log::warn!("dm: the host returned {} pages that were not ballooned; left alone", d.foreign);
        }
        if more_pages {
            return Vec::new();
        }
        let t = core::mem::take(&mut self.unballooning);
        log::info!(
            "dm: host returned {} pages ({} MiB); {} MiB ballooned",
            t.returned,
            (t.returned * PAGE_SIZE) >> 20,
            balloon.stats().ballooned_bytes >> 20
        );
        alloc::vec![(trans_id, emit(&DmMessage::UnballoonResponse, trans_id))]
    }

    /// The periodic status report (pages): `num_avail` free, `num_committed` in use plus ballooned plus the floor
    /// (Linux's `get_pages_committed`: the host sizes the guest by it). `None` before the session runs or when the
    /// host suppressed reports.
    pub fn status_report(&mut self, balloon: &dyn BalloonOps) -> Option<Outgoing> {
        if self.phase != (Phase::Running { status_reports: true }) {
            return None;
        }
        let s = balloon.stats();
        let pages = |b: u64| b / PAGE_SIZE;
        let m = DmMessage::StatusReport {
            num_avail: pages(s.free_bytes),
            num_committed: pages(s.used_bytes()) + pages(s.ballooned_bytes) + pages(s.floor_bytes),
            page_file_size: 0,
            zero_free: 0,
            page_file_writes: 0,
            io_diff: 0,
        };
        Some(self.request(&m))
    }
}

/// Encodes a message the session built: every one fits (responses hold at most [`RANGES_PER_RESPONSE`] ranges,
/// each split to the 24-bit count by [`split`], and frame numbers of this guest's RAM fit 40 bits), so the empty
/// fallback is never sent.
fn emit(m: &DmMessage, trans_id: u32) -> Vec<u8> {
    m.emit(trans_id).unwrap_or_default()
}

/// `ranges` with every range longer than a `dm_mem_page_range` holds split.
fn split(ranges: Vec<PageRange>) -> Vec<PageRange> {
    let mut out = Vec::with_capacity(ranges.len());
    for r in ranges {
        let mut at = r.start;
        let mut left = r.count;
        while left > 0 {
            let n = left.min(RANGE_MAX_PAGES);
            out.push(PageRange { start: at, count: n });
            at += n;
            left -= n;
        }
    }
    out
}

/// A name for a message type, for logs.
pub fn msg_name(t: u16) -> &'static str {
    match t {
        msgtype::ERROR => "DM_ERROR",
        msgtype::VERSION_REQUEST => "DM_VERSION_REQUEST",
        msgtype::VERSION_RESPONSE => "DM_VERSION_RESPONSE",
        msgtype::CAPABILITIES_REPORT => "DM_CAPABILITIES_REPORT",
        msgtype::CAPABILITIES_RESPONSE => "DM_CAPABILITIES_RESPONSE",
        msgtype::STATUS_REPORT => "DM_STATUS_REPORT",
        msgtype::BALLOON_REQUEST => "DM_BALLOON_REQUEST",
        msgtype::BALLOON_RESPONSE => "DM_BALLOON_RESPONSE",
        msgtype::UNBALLOON_REQUEST => "DM_UNBALLOON_REQUEST",
        msgtype::UNBALLOON_RESPONSE => "DM_UNBALLOON_RESPONSE",
        msgtype::HOT_ADD_REQUEST => "DM_MEM_HOT_ADD_REQUEST",
        msgtype::HOT_ADD_RESPONSE => "DM_MEM_HOT_ADD_RESPONSE",
        msgtype::INFO_MESSAGE => "DM_INFO_MESSAGE",
        msgtype::HOT_REMOVE_REQUEST => "DM_MEM_HOT_REMOVE_REQUEST",
        msgtype::HOT_REMOVE_RESPONSE => "DM_MEM_HOT_REMOVE_RESPONSE",
        _ => "an unknown message",
    }
}
