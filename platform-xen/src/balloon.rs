//! The Xen balloon driver: the toolstack's `memory/target` (KiB, in the domain's xenstore directory; `xl
//! mem-set` writes it) is watched, and the guest gives pages back to Xen with `XENMEM_decrease_reservation` or
//! takes them back with `XENMEM_populate_physmap`, through libos's one balloon mechanism (`libos::mem::balloon`,
//! never below its floor). The first value read is the guest's size at boot (nothing ballooned); a lower target
//! balloons the difference. A target the guest cannot reach — below what the floor leaves, above
//! `memory/static-max`, not a number — gets one clear log line and the nearest size it can reach. The driver
//! writes nothing to xenstore. Source: `xen/include/public/memory.h` (`xen_memory_reservation`, extents of order
//! 0 named by guest frame numbers on auto-translated guests), `docs/misc/xenstore-paths.pandoc`
//! (`memory/target`, `memory/static-max`); Linux `drivers/xen/balloon.c`, `xen-balloon.c`.
//!
//! [`XenBalloon`] is sans-I/O over [`Reservation`] (the two hypercalls; a model in tests) and [`BalloonOps`];
//! [`run`] is the watch loop.
#![forbid(unsafe_code)]

use crate::abi::XenErrno;
use crate::xenstore::{parse_u64, XenStore, XsError, XBT_NIL};
use alloc::vec::Vec;
use libos::mem::balloon::{BalloonOps, PageRange, PAGE_SIZE};

/// The toolstack's target for the domain's memory (KiB), relative to the domain's xenstore directory.
pub const TARGET: &str = "memory/target";
/// The domain's maximum memory (KiB).
pub const STATIC_MAX: &str = "memory/static-max";
/// Guest frame numbers per hypercall: one 4 KiB page of `xen_pfn_t`.
pub const EXTENTS_PER_CALL: u64 = 512;

/// The two memory operations the driver needs, on single pages (extent order 0) named by guest frame number.
pub trait Reservation {
    /// `XENMEM_decrease_reservation`: gives the pages at `gpfns` to Xen. Returns how many, from the first, Xen
    /// took.
    fn decrease(&mut self, gpfns: &mut [u64]) -> Result<usize, XenErrno>;
    /// `XENMEM_populate_physmap`: puts pages at `gpfns`. Returns how many, from the first, Xen populated.
    fn populate(&mut self, gpfns: &mut [u64]) -> Result<usize, XenErrno>;
}

/// The hypercalls themselves (bare target).
#[cfg(target_os = "none")]
pub struct Hypercalls;

#[cfg(target_os = "none")]
impl Reservation for Hypercalls {
    fn decrease(&mut self, gpfns: &mut [u64]) -> Result<usize, XenErrno> {
        crate::hypercall::decrease_reservation(gpfns)
    }
    fn populate(&mut self, gpfns: &mut [u64]) -> Result<usize, XenErrno> {
        crate::hypercall::populate_physmap(gpfns)
    }
}

/// What one target did (pages).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The target read (KiB); `None` when it was not a number.
    pub target_kib: Option<u64>,
    /// Pages the target asks to have ballooned.
    pub wanted: u64,
    /// Pages given to Xen now.
    pub given: u64,
    /// Pages taken back from Xen now.
    pub taken: u64,
    /// Pages ballooned afterwards.
    pub ballooned: u64,
    /// Whether the target could not be reached (floor, static-max, Xen refusing).
    pub short: bool,
}

/// The driver's state: the boot size and what it has ballooned. See the module docs.
#[derive(Debug, Default)]
pub struct XenBalloon {
    boot_kib: Option<u64>,
    static_max_kib: Option<u64>,
    ballooned: u64,
}

fn gpfns(ranges: &[PageRange]) -> Vec<u64> {
    ranges.iter().flat_map(|r| r.start..r.end()).collect()
}

/// `gpfns` as ranges, consecutive frames merged.
fn ranges(gpfns: &[u64]) -> Vec<PageRange> {
    let mut out: Vec<PageRange> = Vec::new();
    for &p in gpfns {
        match out.last_mut() {
            Some(r) if r.end() == p => r.count += 1,
            _ => out.push(PageRange { start: p, count: 1 }),
        }
    }
    out
}

const KIB_PER_PAGE: u64 = PAGE_SIZE / 1024;

impl XenBalloon {
    /// A driver for a domain whose `memory/static-max` is `static_max_kib` (if known).
    pub fn new(static_max_kib: Option<u64>) -> Self {
        XenBalloon { static_max_kib, ..Default::default() }
    }

    /// Pages given to Xen.
    pub fn ballooned(&self) -> u64 {
        self.ballooned
    }

    /// Handles a value of `memory/target`: balloons towards it through `balloon` and `mem` and returns what
    /// happened. The first value is the boot size. Bad values are logged and change nothing.
    pub fn on_target(&mut self, value: &str, balloon: &mut dyn BalloonOps, mem: &mut dyn Reservation) -> Outcome {
        let Ok(target) = parse_u64(TARGET, value) else {
            log::warn!("xen: {TARGET} = {value:?} is not a number of KiB; ignored");
            return Outcome { ballooned: self.ballooned, short: true, ..Outcome::default() };
        };
        let boot = *self.boot_kib.get_or_insert_with(|| {
            log::info!(
                "xen: balloon: {TARGET} {target} KiB at boot (static-max {})",
                self.static_max_kib.map_or("unknown".into(), |m| alloc::format!("{m} KiB"))
            );
            target
        });
        let mut short = false;
        if let Some(max) = self.static_max_kib.filter(|&m| target > m) {
            log::warn!(
                "xen: {TARGET} {target} KiB is above {STATIC_MAX} {max} KiB; the guest goes back to its boot size"
            );
            short = true;
        } else if target > boot {
            log::warn!(
                "xen: {TARGET} {target} KiB is above the boot size {boot} KiB; the guest does not hot-add memory and goes back to its boot size"
            );
            short = true;
        }
        let wanted = boot.saturating_sub(target) / KIB_PER_PAGE;
        let mut out = Outcome { target_kib: Some(target), wanted, ..Outcome::default() };
        let t0 = libos::time::uptime_ns();
        if wanted > self.ballooned {
            self.give(wanted - self.ballooned, balloon, mem, &mut out);
        } else if wanted < self.ballooned {
            self.take(self.ballooned - wanted, balloon, mem, &mut out);
        }
        out.ballooned = self.ballooned;
        out.short |= short;
        let mib = |p: u64| (p * PAGE_SIZE) >> 20;
        if out.given > 0 || out.taken > 0 {
            let us = (libos::time::uptime_ns().saturating_sub(t0) / 1000).max(1);
            log::info!(
                "xen: balloon: {TARGET} {target} KiB: gave {} MiB, took back {} MiB in {} ms ({} MiB/s); {} MiB ballooned",
                mib(out.given),
                mib(out.taken),
                us / 1000,
                ((out.given + out.taken) * PAGE_SIZE * 1_000_000 / us) >> 20,
                mib(self.ballooned)
            );
        }
        out
    }

    /// Gives up to `pages` pages: heap chunks from `balloon`, then `XENMEM_decrease_reservation` on them; pages
    /// Xen did not take go straight back to the heap.
    fn give(&mut self, pages: u64, balloon: &mut dyn BalloonOps, mem: &mut dyn Reservation, out: &mut Outcome) {
        let mut left = pages;
        while left > 0 {
            let batch = balloon.inflate(left.min(EXTENTS_PER_CALL));
            if batch.is_empty() {
                let s = balloon.stats();
                log::warn!(
                    "xen: {TARGET} {} KiB asks for {} MiB ballooned; gave {} MiB: the rest would take free memory below the floor of {} MiB",
                    out.target_kib.unwrap_or(0),
                    (out.wanted * PAGE_SIZE) >> 20,
                    (self.ballooned * PAGE_SIZE) >> 20,
                    s.floor_bytes >> 20
                );
                out.short = true;
                return;
            }
            let mut frames = gpfns(&batch);
            let done = match mem.decrease(&mut frames) {
                Ok(n) => n,
                Err(e) => {
                    log::warn!("xen: XENMEM_decrease_reservation of {} pages: {e}", frames.len());
                    0
                }
            };
            self.ballooned += done as u64;
            out.given += done as u64;
            left -= done as u64;
            if done < frames.len() {
                // Still ours and never handed over: back to the heap.
                balloon.deflate_ranges(&ranges(&frames[done..]));
                log::warn!("xen: Xen took {done} of {} pages; the balloon stops here", frames.len());
                out.short = true;
                return;
            }
        }
    }

    /// Takes up to `pages` pages back: `XENMEM_populate_physmap` on ballooned frames first, then the populated
    /// ones go back to the heap (never a frame Xen did not populate).
    fn take(&mut self, pages: u64, balloon: &mut dyn BalloonOps, mem: &mut dyn Reservation, out: &mut Outcome) {
        let mut left = pages;
        while left > 0 {
            let batch = balloon.choose_deflate(left.min(EXTENTS_PER_CALL));
            if batch.is_empty() {
                log::warn!("xen: the driver holds {} pages but the balloon has none to take back", self.ballooned);
                out.short = true;
                return;
            }
            let mut frames = gpfns(&batch);
            let done = match mem.populate(&mut frames) {
                Ok(n) => n,
                Err(e) => {
                    log::warn!("xen: XENMEM_populate_physmap of {} pages: {e}", frames.len());
                    0
                }
            };
            balloon.deflate_ranges(&ranges(&frames[..done]));
            self.ballooned -= done as u64;
            out.taken += done as u64;
            left -= done as u64;
            if done < frames.len() {
                log::warn!(
                    "xen: XENMEM_populate_physmap gave {done} of {} pages (the domain's maximum?); {} pages stay ballooned",
                    frames.len(),
                    self.ballooned
                );
                out.short = true;
                return;
            }
        }
    }
}

/// The watch loop: reads `memory/static-max`, watches `memory/target` and balloons towards each value with
/// `balloon` and `mem`. Returns only on a xenstore error.
pub async fn run(
    xs: &XenStore,
    balloon: &mut (impl BalloonOps + Send),
    mem: &mut (impl Reservation + Send),
) -> Result<(), XsError> {
    let static_max = match xs.read_opt(XBT_NIL, STATIC_MAX).await? {
        Some(v) => parse_u64(STATIC_MAX, &v).ok(),
        None => None,
    };
    let mut driver = XenBalloon::new(static_max);
    let mut watch = xs.watch(TARGET).await?;
    loop {
        watch.next().await?;
        if let Some(v) = xs.read_opt(XBT_NIL, TARGET).await? {
            driver.on_target(&v, balloon, mem);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeSet;
    use libos::mem::balloon::model::ModelHeap;
    use libos::mem::balloon::Balloon;

    /// Xen's side: the guest frames it holds (given by the guest), a page budget for populating.
    struct Xen {
        held: BTreeSet<u64>,
        /// Pages Xen may still populate (the domain's maximum).
        budget: u64,
        fail: Option<XenErrno>,
    }

    impl Reservation for Xen {
        fn decrease(&mut self, gpfns: &mut [u64]) -> Result<usize, XenErrno> {
            if let Some(e) = self.fail {
                return Err(e);
            }
            for &p in gpfns.iter() {
                assert!(self.held.insert(p), "frame {p:#x} given twice");
            }
            self.budget += gpfns.len() as u64;
            Ok(gpfns.len())
        }
        fn populate(&mut self, gpfns: &mut [u64]) -> Result<usize, XenErrno> {
            let n = (gpfns.len() as u64).min(self.budget) as usize;
            for p in &gpfns[..n] {
                assert!(self.held.remove(p), "frame {p:#x} populated but never given");
            }
            self.budget -= n as u64;
            Ok(n)
        }
    }

    /// A 128 MiB domain (heap from 4 MiB) with a 16 MiB floor, and Xen.
    fn domain() -> (Balloon<ModelHeap>, Xen) {
        (Balloon::new(ModelHeap::new(0x400, 32768), 16 << 20), Xen { held: BTreeSet::new(), budget: 0, fail: None })
    }

    #[test]
    fn mem_set_down_by_32_mib_and_back() {
        let (mut b, mut xen) = domain();
        let mut d = XenBalloon::new(Some(131072));
        let boot = d.on_target("131072", &mut b, &mut xen);
        assert_eq!((boot.wanted, boot.given, boot.short), (0, 0, false));
        let down = d.on_target("98304", &mut b, &mut xen);
        assert_eq!((down.wanted, down.given, down.ballooned, down.short), (8192, 8192, 8192, false));
        assert_eq!(xen.held.len(), 8192);
        assert_eq!(b.stats().ballooned_bytes, 32 << 20);
        let up = d.on_target("131072\n", &mut b, &mut xen);
        assert_eq!((up.taken, up.ballooned, up.short), (8192, 0, false));
        assert!(xen.held.is_empty() && b.source().allocs.is_empty(), "every page populated and back in the heap");
    }

    #[test]
    fn bad_targets_are_logged_and_clamped() {
        let (mut b, mut xen) = domain();
        let mut d = XenBalloon::new(Some(131072));
        d.on_target("131072", &mut b, &mut xen);
        // Not a number: nothing changes.
        let o = d.on_target("lots", &mut b, &mut xen);
        assert_eq!((o.target_kib, o.short, d.ballooned()), (None, true, 0));
        // Below the floor: what is above it goes.
        let o = d.on_target("4096", &mut b, &mut xen);
        assert!(o.short);
        assert_eq!(o.ballooned, 32768 - (16 << 20) / PAGE_SIZE);
        assert_eq!(b.stats().free_bytes, 16 << 20);
        // Above static-max and above the boot size: everything back, nothing more.
        let o = d.on_target("262144", &mut b, &mut xen);
        assert!(o.short);
        assert_eq!((o.ballooned, xen.held.len()), (0, 0));
        d.on_target("98304", &mut b, &mut xen);
        let o = XenBalloon::new(None).on_target("200000", &mut b, &mut xen);
        assert!(!o.short, "a first value is the boot size, whatever it is");
    }

    #[test]
    fn xen_refusing_leaves_no_page_in_limbo() {
        let (mut b, mut xen) = domain();
        let mut d = XenBalloon::new(None);
        d.on_target("131072", &mut b, &mut xen);
        xen.fail = Some(XenErrno(-12));
        let o = d.on_target("98304", &mut b, &mut xen);
        assert_eq!((o.given, o.ballooned, o.short), (0, 0, true));
        assert!(b.source().allocs.is_empty(), "refused pages are back in the heap");
        xen.fail = None;
        d.on_target("98304", &mut b, &mut xen);
        // The domain's maximum lets Xen populate only 100 pages: the rest stays ballooned, never freed unbacked.
        xen.budget = 100;
        let o = d.on_target("131072", &mut b, &mut xen);
        assert_eq!((o.taken, o.ballooned, o.short), (100, 8092, true));
        assert_eq!(b.ballooned_pages(), 8092);
        assert_eq!(xen.held.len(), 8092);
    }

    #[test]
    fn frames_and_ranges_round_trip() {
        let r = [PageRange { start: 5, count: 3 }, PageRange { start: 20, count: 1 }];
        let f = gpfns(&r);
        assert_eq!(f, [5, 6, 7, 20]);
        assert_eq!(ranges(&f), r);
    }
}
