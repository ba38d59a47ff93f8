//! A Dynamic Memory host written from the protocol description (Linux `drivers/hv/hv_balloon.c` comments, QEMU
//! `include/hw/hyperv/dynmem-proto.h`), with its own byte encoding, to test the guest's session against: version
//! acceptance from a configurable set, the capabilities answer, balloon and unballoon transactions over the pages
//! it holds, hot-add requests, and the status reports it received. It checks what a host checks: every page the
//! guest gives is guest RAM and not given twice, responses come in the order the protocol allows.
#![cfg(any(test, feature = "host-model"))]

use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use core::ops::Range;

fn rd16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn rd32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn rd64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// A message: header (type, size, trans_id) and `body` after it.
fn message(ty: u16, trans_id: u32, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&ty.to_le_bytes());
    m.extend_from_slice(&((8 + body.len()) as u16).to_le_bytes());
    m.extend_from_slice(&trans_id.to_le_bytes());
    m.extend_from_slice(body);
    m
}

/// The host's view of the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostPhase {
    /// Waiting for a version request.
    Version,
    /// Waiting for the capabilities.
    Capabilities,
    /// Idle: may send requests.
    Idle,
    /// Waiting for the balloon responses of a request for this many pages.
    Ballooning(u64),
    /// Waiting for the unballoon response.
    Unballooning,
    /// Waiting for a hot-add response.
    HotAdding,
}

/// The model host.
pub struct DmHost {
    /// Versions (`major << 16 | minor`) it accepts.
    pub accepts: Vec<u32>,
    /// Whether it accepts the capabilities.
    pub accept_caps: bool,
    /// Whether its capabilities answer suppresses the guest's status reports.
    pub suppress_reports: bool,
    /// Where the host is in the protocol.
    pub phase: HostPhase,
    /// The version it accepted (`major << 16 | minor`).
    pub version: Option<u32>,
    /// A version request marked as the guest's last attempt arrived.
    pub last_attempt_seen: bool,
    /// The guest's capabilities report: caps, min_page_cnt, max_page_number.
    pub guest_caps: Option<(u64, u64, u64)>,
    /// Frame numbers of guest RAM.
    pub ram: Range<u64>,
    /// Pages the guest gave and the host holds.
    pub held: BTreeSet<u64>,
    /// Status reports: (num_avail, num_committed).
    pub reports: Vec<(u64, u64)>,
    /// Hot-add responses: (page_count, result).
    pub hot_add_responses: Vec<(u32, u32)>,
    /// Unballoon responses received.
    pub unballoon_responses: usize,
    /// Balloon responses of the last transaction.
    pub balloon_responses: usize,
    given_now: u64,
    trans_id: u32,
}

/// Pages in the `count` ranges of a balloon response.
fn count_pages(m: &[u8], count: usize) -> u64 {
    (0..count).map(|i| rd64(m, 16 + 8 * i) >> 40).sum()
}

impl DmHost {
    /// A host accepting `accepts`, holding nothing, with guest RAM at frames `ram`.
    pub fn new(accepts: &[u32], ram: Range<u64>) -> Self {
        DmHost {
            accepts: accepts.to_vec(),
            accept_caps: true,
            suppress_reports: false,
            phase: HostPhase::Version,
            version: None,
            last_attempt_seen: false,
            guest_caps: None,
            ram,
            held: BTreeSet::new(),
            reports: Vec::new(),
            hot_add_responses: Vec::new(),
            unballoon_responses: 0,
            balloon_responses: 0,
            given_now: 0,
            trans_id: 100,
        }
    }

    /// Takes one guest message; returns the host's answers. Panics on what a real host would reject as a
    /// protocol violation (so the tests fail there).
    pub fn receive(&mut self, m: &[u8]) -> Vec<Vec<u8>> {
        let (ty, size, tid) = (rd16(m, 0), rd16(m, 2) as usize, rd32(m, 4));
        assert_eq!(size, m.len(), "size field of type {ty}");
        match ty {
            1 => {
                assert_eq!(self.phase, HostPhase::Version, "version request in {:?}", self.phase);
                let v = rd32(m, 8);
                self.last_attempt_seen |= rd32(m, 12) & 1 != 0;
                let ok = self.accepts.contains(&v);
                if ok {
                    self.version = Some(v);
                    self.phase = HostPhase::Capabilities;
                }
                let mut body = [0u8; 8];
                body[0] = u8::from(ok);
                alloc::vec![message(2, tid, &body)]
            }
            3 => {
                assert_eq!(self.phase, HostPhase::Capabilities, "capabilities in {:?}", self.phase);
                assert_eq!(size, 32);
                self.guest_caps = Some((rd64(m, 8), rd64(m, 16), rd64(m, 24)));
                let flags = u64::from(self.accept_caps) | (u64::from(self.suppress_reports) << 2);
                self.phase = if self.accept_caps { HostPhase::Idle } else { HostPhase::Version };
                alloc::vec![message(4, tid, &flags.to_le_bytes())]
            }
            5 => {
                assert_eq!(size, 48);
                assert!(!self.suppress_reports, "status report after the host suppressed them");
                self.reports.push((rd64(m, 8), rd64(m, 16)));
                Vec::new()
            }
            7 => {
                let HostPhase::Ballooning(asked) = self.phase else { panic!("balloon response in {:?}", self.phase) };
                let word = rd32(m, 12);
                let (more, count) = (word & 1 != 0, (word >> 1) as usize);
                assert_eq!(size, 16 + 8 * count, "balloon response size for {count} ranges");
                self.balloon_responses += 1;
                for i in 0..count {
                    let r = rd64(m, 16 + 8 * i);
                    let (start, n) = (r & ((1 << 40) - 1), r >> 40);
                    for p in start..start + n {
                        assert!(self.ram.contains(&p), "page {p:#x} is not guest RAM");
                        assert!(self.held.insert(p), "page {p:#x} given twice");
                    }
                }
                self.given_now += count_pages(m, count);
                assert!(self.given_now <= asked, "the guest gave {} pages for a request of {asked}", self.given_now);
                if !more {
                    self.phase = HostPhase::Idle;
                }
                Vec::new()
            }
            9 => {
                assert_eq!(self.phase, HostPhase::Unballooning, "unballoon response in {:?}", self.phase);
                self.unballoon_responses += 1;
                self.phase = HostPhase::Idle;
                Vec::new()
            }
            11 => {
                assert_eq!(self.phase, HostPhase::HotAdding);
                self.hot_add_responses.push((rd32(m, 8), rd32(m, 12)));
                self.phase = HostPhase::Idle;
                Vec::new()
            }
            other => panic!("the guest sent message type {other}"),
        }
    }

    fn next_id(&mut self) -> u32 {
        self.trans_id += 1;
        self.trans_id
    }

    /// DM_BALLOON_REQUEST for `pages`.
    pub fn balloon(&mut self, pages: u32) -> Vec<u8> {
        assert_eq!(self.phase, HostPhase::Idle);
        self.phase = HostPhase::Ballooning(u64::from(pages));
        self.balloon_responses = 0;
        self.given_now = 0;
        let id = self.next_id();
        let mut body = [0u8; 8];
        body[..4].copy_from_slice(&pages.to_le_bytes());
        message(6, id, &body)
    }

    /// DM_UNBALLOON_REQUESTs returning up to `pages` held pages (lowest first), one range per message as QEMU
    /// sends them, the last with `more_pages` clear.
    pub fn unballoon(&mut self, pages: u64) -> Vec<Vec<u8>> {
        assert_eq!(self.phase, HostPhase::Idle);
        let pfns: Vec<u64> = self.held.iter().copied().take(pages as usize).collect();
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for p in pfns {
            self.held.remove(&p);
            match ranges.last_mut() {
                Some((s, n)) if *s + *n == p => *n += 1,
                _ => ranges.push((p, 1)),
            }
        }
        self.unballoon_ranges(&ranges)
    }

    /// DM_UNBALLOON_REQUESTs for `ranges` (start, count) exactly, held or not.
    pub fn unballoon_ranges(&mut self, ranges: &[(u64, u64)]) -> Vec<Vec<u8>> {
        self.phase = HostPhase::Unballooning;
        let id = self.next_id();
        let n = ranges.len();
        ranges
            .iter()
            .enumerate()
            .map(|(i, &(s, c))| {
                let mut body = Vec::new();
                body.extend_from_slice(&u32::from(i + 1 < n).to_le_bytes());
                body.extend_from_slice(&1u32.to_le_bytes());
                body.extend_from_slice(&(s | (c << 40)).to_le_bytes());
                message(8, id, &body)
            })
            .collect()
    }

    /// DM_MEM_HOT_ADD_REQUEST for `pages` from frame `start`, with the region after it (as QEMU sends).
    pub fn hot_add(&mut self, start: u64, pages: u64) -> Vec<u8> {
        self.phase = HostPhase::HotAdding;
        let id = self.next_id();
        let mut body = Vec::new();
        body.extend_from_slice(&(start | (pages << 40)).to_le_bytes());
        body.extend_from_slice(&(start | (pages << 40)).to_le_bytes());
        message(10, id, &body)
    }

    /// A raw message of type `ty` with `body` (for malformed input).
    pub fn raw(&mut self, ty: u16, body: &[u8]) -> Vec<u8> {
        let id = self.next_id();
        message(ty, id, body)
    }
}
