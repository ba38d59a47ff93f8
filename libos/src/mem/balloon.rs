//! The memory balloon every hypervisor's driver uses: whole free pages of the heap given to the hypervisor and taken
//! back later (Hyper-V Dynamic Memory, virtio 1.2 §5.5 virtio-balloon, Xen `XENMEM_decrease_reservation` /
//! `XENMEM_populate_physmap`).
//!
//! The balloon inflates by allocating chunks of contiguous pages from the heap ([`PageSource`]): 512 pages (2 MiB,
//! aligned) while the heap has such runs, then halving down to single pages as it fragments, so it takes the
//! largest free runs and leaves what apps hold where it is. The chunks stay allocated while the hypervisor holds
//! their pages (nothing in the guest touches them); a chunk goes back to the heap when all of its pages are back.
//! Pages the host returns out of a chunk that is still partly ballooned wait in the chunk ("returned") and are the
//! first ones given again on the next inflation. The balloon never takes the heap's free memory below its floor,
//! so allocations (the network stack's buffers first of all) keep succeeding; a request larger than that is
//! answered with what could be taken.
//!
//! Every page is in exactly one of three states: in the heap, ballooned (with the host), or returned (ours, in a
//! chunk). A range the host names that is not ballooned is counted as foreign and left alone, so no page is ever
//! freed twice. The balloon is sans-I/O and host-tested against a model heap; the bare target's instance over the
//! kernel heap is `global` (bare target only).
#![forbid(unsafe_code)]

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

/// Bytes per page (the hypervisors' balloon granule: Hyper-V DM and virtio-balloon pages, Xen frames).
pub const PAGE_SIZE: u64 = 4096;

/// The largest chunk the balloon allocates, in pages (2 MiB, one large page).
pub const MAX_CHUNK_PAGES: u64 = 512;

/// A run of guest-physical pages: frame number `start` (physical address / 4096) and `count` pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageRange {
    /// First page frame number.
    pub start: u64,
    /// Pages.
    pub count: u64,
}

impl PageRange {
    /// One past the last frame number.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.count)
    }
}

impl fmt::Display for PageRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pfn {:#x}+{}", self.start, self.count)
    }
}

/// Where the balloon gets whole pages from and gives them back to: the kernel heap on the bare target, a model in
/// host tests.
pub trait PageSource {
    /// Allocates `pages` contiguous pages (a power of two up to [`MAX_CHUNK_PAGES`]) aligned to `pages` pages,
    /// returning the first frame number; `None` when no such run is free.
    fn alloc(&mut self, pages: u64) -> Option<u64>;
    /// Gives back a run [`PageSource::alloc`] returned, with the same `pages`.
    fn free(&mut self, pfn: u64, pages: u64);
    /// Bytes the source manages (free or allocated).
    fn total_bytes(&self) -> u64;
    /// Bytes free now.
    fn free_bytes(&self) -> u64;
}

/// Memory figures for apps and the hypervisors' status reports (bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemStats {
    /// Memory the heap manages (all RAM left after the image and page tables), ballooned pages included.
    pub total_bytes: u64,
    /// Memory free to allocate: the heap's free bytes plus pages the host gave back that wait in the balloon.
    pub free_bytes: u64,
    /// Memory the hypervisor holds (ballooned pages).
    pub ballooned_bytes: u64,
    /// The balloon's floor: free memory it never takes.
    pub floor_bytes: u64,
}

impl MemStats {
    /// Memory apps and the kernel use: total minus free minus ballooned.
    pub fn used_bytes(&self) -> u64 {
        self.total_bytes.saturating_sub(self.free_bytes).saturating_sub(self.ballooned_bytes)
    }
}

/// What [`Balloon::deflate_ranges`] did with the host's ranges (pages).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deflated {
    /// Pages that were ballooned and are the guest's again.
    pub returned: u64,
    /// Pages of the ranges that were not ballooned (never given, or returned already): left alone.
    pub foreign: u64,
}

/// One heap allocation held by the balloon: `pages` pages from frame `pfn`, and which of them the host holds.
#[derive(Clone, Debug)]
struct Chunk {
    pages: u64,
    /// Bit i set: page `pfn + i` is with the host (ballooned); clear: returned, ours.
    given: [u64; (MAX_CHUNK_PAGES / 64) as usize],
}

impl Chunk {
    fn new(pages: u64) -> Self {
        let mut c = Chunk { pages, given: [0; (MAX_CHUNK_PAGES / 64) as usize] };
        c.set_range(0, pages, true);
        c
    }

    fn is_given(&self, i: u64) -> bool {
        self.given[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    fn set_range(&mut self, from: u64, to: u64, given: bool) {
        for i in from..to {
            let (w, b) = ((i / 64) as usize, i % 64);
            if given {
                self.given[w] |= 1 << b;
            } else {
                self.given[w] &= !(1 << b);
            }
        }
    }

    fn given_count(&self) -> u64 {
        self.given.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// The runs of pages with `given == want`, as (first index, count).
    fn runs(&self, want: bool) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.pages {
            if self.is_given(i) != want {
                i += 1;
                continue;
            }
            let start = i;
            while i < self.pages && self.is_given(i) == want {
                i += 1;
            }
            out.push((start, i - start));
        }
        out
    }
}

/// The balloon over page source `S`: the chunks it holds and its floor. See the module docs.
pub struct Balloon<S> {
    source: S,
    chunks: BTreeMap<u64, Chunk>,
    ballooned: u64,
    returned: u64,
    floor_bytes: u64,
}

impl<S: PageSource> Balloon<S> {
    /// A balloon over `source` that never leaves less than `floor_bytes` free.
    pub fn new(source: S, floor_bytes: u64) -> Self {
        Balloon { source, chunks: BTreeMap::new(), ballooned: 0, returned: 0, floor_bytes }
    }

    /// The default floor for a heap of `total_bytes`: an eighth of it, at least 8 MiB, so the network stack's
    /// buffers and the apps' working set keep fitting.
    pub fn default_floor(total_bytes: u64) -> u64 {
        (total_bytes / 8).max(8 << 20)
    }

    /// Pages with the host.
    pub fn ballooned_pages(&self) -> u64 {
        self.ballooned
    }

    /// The floor (bytes).
    pub fn floor_bytes(&self) -> u64 {
        self.floor_bytes
    }

    /// The figures of [`MemStats`].
    pub fn stats(&self) -> MemStats {
        MemStats {
            total_bytes: self.source.total_bytes(),
            free_bytes: self.source.free_bytes().saturating_add(self.returned * PAGE_SIZE),
            ballooned_bytes: self.ballooned * PAGE_SIZE,
            floor_bytes: self.floor_bytes,
        }
    }

    /// Gives up to `pages` pages to the host: returned pages waiting in chunks first, then new chunks from the
    /// heap (largest first) while its free memory stays above the floor. Returns the pages now ballooned, as
    /// ranges merged where contiguous and sorted; fewer pages than asked when the heap ran down to the floor.
    pub fn inflate(&mut self, pages: u64) -> Vec<PageRange> {
        let mut want = pages;
        let mut given: Vec<PageRange> = Vec::new();
        // Pages the host gave back before are ours and need no allocation.
        if self.returned > 0 {
            for (&pfn, chunk) in self.chunks.iter_mut() {
                if want == 0 {
                    break;
                }
                for (first, count) in chunk.runs(false) {
                    let n = count.min(want);
                    chunk.set_range(first, first + n, true);
                    given.push(PageRange { start: pfn + first, count: n });
                    want -= n;
                    self.returned -= n;
                    self.ballooned += n;
                    if want == 0 {
                        break;
                    }
                }
            }
        }
        let mut size = MAX_CHUNK_PAGES;
        while want > 0 {
            while size > 1 && size > want {
                size /= 2;
            }
            let bytes = size * PAGE_SIZE;
            if self.source.free_bytes().saturating_sub(bytes) < self.floor_bytes {
                if size == 1 {
                    break;
                }
                size /= 2;
                continue;
            }
            match self.source.alloc(size) {
                Some(pfn) => {
                    self.chunks.insert(pfn, Chunk::new(size));
                    given.push(PageRange { start: pfn, count: size });
                    self.ballooned += size;
                    want -= size;
                }
                None if size > 1 => size /= 2,
                None => break,
            }
        }
        merge(given)
    }

    /// Takes back the pages of `ranges` the host returns (Hyper-V's unballoon names them): each ballooned page in
    /// them becomes the guest's again, and each chunk with no page left at the host goes back to the heap. Pages
    /// that are not ballooned are counted as [`Deflated::foreign`] and not touched.
    pub fn deflate_ranges(&mut self, ranges: &[PageRange]) -> Deflated {
        let mut d = Deflated::default();
        for r in ranges {
            let mut at = r.start;
            let end = r.end();
            while at < end {
                // The chunk holding `at`, if any: the last one starting at or before it.
                let hit = self
                    .chunks
                    .range(..=at)
                    .next_back()
                    .map(|(&pfn, c)| (pfn, c.pages))
                    .filter(|&(pfn, n)| at < pfn + n);
                let Some((pfn, n)) = hit else {
                    // No chunk here: foreign up to the next chunk (or the range's end).
                    let next = self.chunks.range(at..end).next().map_or(end, |(&p, _)| p);
                    d.foreign += next - at;
                    at = next;
                    continue;
                };
                let stop = end.min(pfn + n);
                let Some(chunk) = self.chunks.get_mut(&pfn) else { break };
                for i in at - pfn..stop - pfn {
                    if chunk.is_given(i) {
                        chunk.set_range(i, i + 1, false);
                        d.returned += 1;
                        self.ballooned -= 1;
                        self.returned += 1;
                    } else {
                        d.foreign += 1;
                    }
                }
                if chunk.given_count() == 0 {
                    self.returned -= n;
                    self.chunks.remove(&pfn);
                    self.source.free(pfn, n);
                }
                at = stop;
            }
        }
        d
    }

    /// Takes back up to `pages` ballooned pages of the balloon's choosing (virtio-balloon's deflate, Xen's
    /// populate): whole chunks first. `tell` gets the ranges before any page is touched (the driver tells the
    /// host, or repopulates the frames); when it fails nothing changes. Returns the pages taken back.
    pub fn deflate<E>(&mut self, pages: u64, tell: impl FnOnce(&[PageRange]) -> Result<(), E>) -> Result<u64, E> {
        let chosen = self.choose_deflate(pages);
        if chosen.is_empty() {
            return Ok(0);
        }
        tell(&chosen)?;
        Ok(self.deflate_ranges(&chosen).returned)
    }

    /// The ballooned pages a guest-chosen deflate of up to `pages` pages takes back (whole chunks first), sorted
    /// and merged, without changing anything: for drivers that must hear from the host before the pages are
    /// the guest's again (virtio-balloon's `VIRTIO_BALLOON_F_MUST_TELL_HOST`, virtio 1.2 §5.5.6.1), which then
    /// hand them to [`Balloon::deflate_ranges`].
    pub fn choose_deflate(&self, pages: u64) -> Vec<PageRange> {
        let mut chosen = Vec::new();
        let mut want = pages;
        for (&pfn, chunk) in &self.chunks {
            if want == 0 {
                break;
            }
            for (first, count) in chunk.runs(true) {
                let n = count.min(want);
                chosen.push(PageRange { start: pfn + first, count: n });
                want -= n;
                if want == 0 {
                    break;
                }
            }
        }
        merge(chosen)
    }

    /// The page source (for tests and diagnostics).
    pub fn source(&self) -> &S {
        &self.source
    }
}

/// What a balloon driver does with memory: the libos [`Balloon`] (the kernel heap's, [`global::KernelBalloon`], on
/// the bare target; one over a model heap in tests). Every driver — Hyper-V Dynamic Memory, virtio-balloon, Xen —
/// goes through it, so there is one mechanism and one set of figures.
pub trait BalloonOps {
    /// Gives up to `pages` pages to the host; returns what was given (see [`Balloon::inflate`]).
    fn inflate(&mut self, pages: u64) -> Vec<PageRange>;
    /// Takes back the pages of `ranges` the host returns (see [`Balloon::deflate_ranges`]).
    fn deflate_ranges(&mut self, ranges: &[PageRange]) -> Deflated;
    /// The ballooned pages a guest-chosen deflate of up to `pages` takes, unchanged (see
    /// [`Balloon::choose_deflate`]).
    fn choose_deflate(&mut self, pages: u64) -> Vec<PageRange>;
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
    fn choose_deflate(&mut self, pages: u64) -> Vec<PageRange> {
        Balloon::choose_deflate(self, pages)
    }
    fn stats(&self) -> MemStats {
        Balloon::stats(self)
    }
}

/// `ranges` sorted and merged where one ends where the next starts.
fn merge(mut ranges: Vec<PageRange>) -> Vec<PageRange> {
    ranges.sort();
    let mut out: Vec<PageRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if last.end() == r.start => last.count += r.count,
            _ => out.push(r),
        }
    }
    out
}

/// The kernel heap as a [`PageSource`] and the one balloon over it (bare target).
#[cfg(target_os = "none")]
pub mod global {
    use super::*;
    use core::sync::atomic::{AtomicU64, Ordering};

    /// The kernel heap as the balloon's page source: chunks are heap allocations aligned to their size.
    pub struct HeapPages;

    impl PageSource for HeapPages {
        fn alloc(&mut self, pages: u64) -> Option<u64> {
            crate::mem::heap::alloc_pages(pages).map(|addr| addr / PAGE_SIZE)
        }
        fn free(&mut self, pfn: u64, pages: u64) {
            crate::mem::heap::free_pages(pfn * PAGE_SIZE, pages)
        }
        fn total_bytes(&self) -> u64 {
            crate::mem::heap::stats().total_bytes
        }
        fn free_bytes(&self) -> u64 {
            let s = crate::mem::heap::stats();
            s.total_bytes.saturating_sub(s.allocated_bytes)
        }
    }

    static BALLOON: spin::Mutex<Option<Balloon<HeapPages>>> = spin::Mutex::new(None);
    /// Bytes the hypervisor holds and bytes it gave back that wait in the balloon's chunks, as of the last change
    /// (read without the balloon's lock: see [`held_bytes`]).
    static HELD: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

    /// Runs `f` on the balloon over the kernel heap (created with [`Balloon::default_floor`] on first use).
    pub fn with<R>(f: impl FnOnce(&mut Balloon<HeapPages>) -> R) -> R {
        let mut b = BALLOON.lock();
        let b = b.get_or_insert_with(|| {
            Balloon::new(HeapPages, Balloon::<HeapPages>::default_floor(HeapPages.total_bytes()))
        });
        let r = f(b);
        HELD[0].store(b.ballooned * PAGE_SIZE, Ordering::Relaxed);
        HELD[1].store(b.returned * PAGE_SIZE, Ordering::Relaxed);
        r
    }

    /// (ballooned, returned) bytes: memory the hypervisor holds, and memory it gave back that waits in the
    /// balloon's heap chunks (free to use, though the heap counts it allocated). Lock-free, for
    /// [`crate::mem::pressure`], which drivers may ask from any context.
    pub fn held_bytes() -> (u64, u64) {
        (HELD[0].load(Ordering::Relaxed), HELD[1].load(Ordering::Relaxed))
    }

    /// The memory figures now.
    pub fn stats() -> MemStats {
        with(|b| b.stats())
    }

    /// The kernel heap's balloon as a driver's [`BalloonOps`]: each call locks the one balloon.
    pub struct KernelBalloon;

    impl BalloonOps for KernelBalloon {
        fn inflate(&mut self, pages: u64) -> Vec<PageRange> {
            with(|b| b.inflate(pages))
        }
        fn deflate_ranges(&mut self, ranges: &[PageRange]) -> Deflated {
            with(|b| b.deflate_ranges(ranges))
        }
        fn choose_deflate(&mut self, pages: u64) -> Vec<PageRange> {
            with(|b| b.choose_deflate(pages))
        }
        fn stats(&self) -> MemStats {
            stats()
        }
    }
}

/// The memory figures now: the kernel heap and the balloon over it on the bare target; all zero on the host (unit
/// tests of code that reports them).
pub fn stats() -> MemStats {
    #[cfg(target_os = "none")]
    return global::stats();
    #[cfg(not(target_os = "none"))]
    MemStats::default()
}

/// A model heap for balloon tests (here and, with the `balloon-model` feature, in the drivers' crates).
#[cfg(any(test, feature = "balloon-model"))]
pub mod model {
    use super::{PageSource, PAGE_SIZE};
    use alloc::collections::BTreeMap;
    use alloc::vec;
    use alloc::vec::Vec;

    /// A heap of `pages` pages from frame `base` on: the allocated pages, first fit at the alignment, and every
    /// allocation, so a free of something not allocated (or freed twice) panics.
    pub struct ModelHeap {
        /// First frame.
        pub base: u64,
        /// Pages.
        pub pages: u64,
        /// Whether each frame (from `base`) is allocated: a bitmap, so the fuzz targets' model stays cheap.
        used: Vec<bool>,
        /// Allocated frames.
        used_count: u64,
        /// Live allocations: first frame → pages.
        pub allocs: BTreeMap<u64, u64>,
    }

    impl ModelHeap {
        /// A free heap of `pages` pages from frame `base`.
        pub fn new(base: u64, pages: u64) -> Self {
            let len = usize::try_from(pages).expect("a model heap fits the host's memory");
            ModelHeap { base, pages, used: vec![false; len], used_count: 0, allocs: BTreeMap::new() }
        }

        /// Pages allocated now (balloon chunks and [`hold`](Self::hold)s).
        pub fn used_pages(&self) -> u64 {
            self.used_count
        }

        /// The bitmap slot of frame `pfn`; panics outside the heap.
        fn slot(&mut self, pfn: u64) -> &mut bool {
            let i = pfn.checked_sub(self.base).and_then(|i| usize::try_from(i).ok());
            let pages = self.pages;
            i.and_then(|i| self.used.get_mut(i))
                .unwrap_or_else(|| panic!("page {pfn:#x} is outside the heap of {pages}"))
        }

        /// Marks `pfn` allocated; panics when it already is.
        fn take(&mut self, pfn: u64) {
            let slot = self.slot(pfn);
            assert!(!*slot, "page {pfn:#x} is taken");
            *slot = true;
            self.used_count += 1;
        }

        /// An app allocation of one page at frame `pfn` (fragments the heap). Panics when it is taken.
        pub fn hold(&mut self, pfn: u64) {
            self.take(pfn);
        }
    }

    impl PageSource for ModelHeap {
        fn alloc(&mut self, pages: u64) -> Option<u64> {
            let mut at = self.base.next_multiple_of(pages);
            while at + pages <= self.base + self.pages {
                let from = (at - self.base) as usize;
                if !self.used[from..from + pages as usize].contains(&true) {
                    (at..at + pages).for_each(|p| self.take(p));
                    self.allocs.insert(at, pages);
                    return Some(at);
                }
                at += pages;
            }
            None
        }
        fn free(&mut self, pfn: u64, pages: u64) {
            assert_eq!(self.allocs.remove(&pfn), Some(pages), "free of {pfn:#x}+{pages} that was not allocated");
            for p in pfn..pfn + pages {
                let slot = self.slot(p);
                assert!(*slot, "page {p:#x} freed twice");
                *slot = false;
                self.used_count -= 1;
            }
        }
        fn total_bytes(&self) -> u64 {
            self.pages * PAGE_SIZE
        }
        fn free_bytes(&self) -> u64 {
            (self.pages - self.used_count) * PAGE_SIZE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::model::ModelHeap;
    use super::*;

    fn pages(ranges: &[PageRange]) -> u64 {
        ranges.iter().map(|r| r.count).sum()
    }

    #[test]
    fn inflates_in_large_chunks_and_deflates_everything_back() {
        // 64 MiB heap, floor 8 MiB.
        let mut b = Balloon::new(ModelHeap::new(0x100, 16384), 8 << 20);
        let given = b.inflate(8192);
        assert_eq!(pages(&given), 8192, "32 MiB fits above the floor");
        assert!(given.len() <= 16, "2 MiB chunks, merged where contiguous: {given:?}");
        assert_eq!(b.stats().ballooned_bytes, 32 << 20);
        assert_eq!(b.stats().free_bytes, 32 << 20);
        let d = b.deflate_ranges(&given);
        assert_eq!(d, Deflated { returned: 8192, foreign: 0 });
        assert_eq!(b.source().used_pages(), 0, "every chunk is back in the heap");
        assert_eq!(
            b.stats(),
            MemStats { total_bytes: 64 << 20, free_bytes: 64 << 20, ballooned_bytes: 0, floor_bytes: 8 << 20 }
        );
    }

    #[test]
    fn never_goes_below_the_floor_and_reports_what_it_gave() {
        let mut b = Balloon::new(ModelHeap::new(0x100, 4096), 4 << 20);
        // 16 MiB heap, 4 MiB floor: at most 12 MiB, however much is asked.
        let given = b.inflate(u64::from(u32::MAX));
        assert_eq!(pages(&given), 3072);
        assert_eq!(b.stats().free_bytes, 4 << 20);
        assert!(b.inflate(1).is_empty(), "at the floor nothing more is given");
    }

    #[test]
    fn a_fragmented_heap_gives_smaller_chunks_around_what_apps_hold() {
        let mut heap = ModelHeap::new(0x100, 2048);
        // An app page in every 2 MiB run: no 512-page chunk exists.
        for p in (0x100..0x100 + 2048).step_by(512) {
            heap.hold(p + 100);
        }
        let mut b = Balloon::new(heap, 0);
        let given = b.inflate(1024);
        assert_eq!(pages(&given), 1024);
        for r in &given {
            for p in r.start..r.end() {
                assert!((p - 0x100) % 512 != 100, "page {p:#x} is the app's");
            }
        }
        assert_eq!(b.deflate_ranges(&given).returned, 1024);
        assert_eq!(b.source().used_pages(), 4, "only the app's pages stay allocated");
    }

    #[test]
    fn partial_returns_wait_in_the_chunk_and_are_given_first() {
        let mut b = Balloon::new(ModelHeap::new(0x100, 4096), 0);
        let given = b.inflate(512);
        assert_eq!(given, [PageRange { start: 0x200, count: 512 }]);
        // The host gives back the middle 100 pages: the chunk stays allocated.
        let d = b.deflate_ranges(&[PageRange { start: 0x200 + 50, count: 100 }]);
        assert_eq!(d, Deflated { returned: 100, foreign: 0 });
        assert_eq!(b.source().allocs.len(), 1);
        assert_eq!(b.ballooned_pages(), 412);
        assert_eq!(b.stats().free_bytes, (4096 - 512 + 100) * PAGE_SIZE);
        // The next inflation gives those 100 first, without allocating.
        let again = b.inflate(60);
        assert_eq!(again, [PageRange { start: 0x200 + 50, count: 60 }]);
        assert_eq!(b.source().allocs.len(), 1);
        // Everything back, in pieces: the chunk is freed once, when its last page returns.
        let d =
            b.deflate_ranges(&[PageRange { start: 0x200, count: 300 }, PageRange { start: 0x200 + 300, count: 212 }]);
        assert_eq!(d, Deflated { returned: 472, foreign: 40 });
        assert!(b.source().allocs.is_empty());
        assert_eq!(b.ballooned_pages(), 0);
    }

    #[test]
    fn foreign_and_repeated_ranges_are_never_freed() {
        let mut b = Balloon::new(ModelHeap::new(0x100, 4096), 0);
        let given = b.inflate(1024);
        // Pages below, between and above the balloon's, and the same range twice.
        let bogus = [PageRange { start: 0, count: 0x100 }, PageRange { start: u64::MAX - 10, count: 10 }];
        assert_eq!(b.deflate_ranges(&bogus), Deflated { returned: 0, foreign: 0x100 + 10 });
        assert_eq!(b.deflate_ranges(&given).returned, 1024);
        assert_eq!(b.deflate_ranges(&given), Deflated { returned: 0, foreign: 1024 }, "already returned");
        assert_eq!(b.deflate_ranges(&[PageRange { start: 0x300, count: u64::MAX }]).returned, 0, "no overflow");
    }

    #[test]
    fn guest_chosen_deflate_tells_first_and_changes_nothing_on_failure() {
        let mut b = Balloon::new(ModelHeap::new(0x100, 4096), 0);
        b.inflate(600);
        let r: Result<u64, &str> = b.deflate(200, |_| Err("host refused"));
        assert_eq!(r, Err("host refused"));
        assert_eq!(b.ballooned_pages(), 600);
        let mut told = Vec::new();
        let n = b.deflate(700, |ranges| {
            told.extend_from_slice(ranges);
            Ok::<(), ()>(())
        });
        assert_eq!(n, Ok(600));
        assert_eq!(pages(&told), 600);
        assert!(b.source().allocs.is_empty());
        assert_eq!(b.deflate(1, |_| Ok::<(), ()>(())), Ok(0));
    }

    #[test]
    fn default_floor_and_stats() {
        assert_eq!(Balloon::<ModelHeap>::default_floor(32 << 20), 8 << 20);
        assert_eq!(Balloon::<ModelHeap>::default_floor(1 << 30), 128 << 20);
        let s = MemStats { total_bytes: 100, free_bytes: 30, ballooned_bytes: 20, floor_bytes: 0 };
        assert_eq!(s.used_bytes(), 50);
        assert_eq!(PageRange { start: 0x10, count: 2 }.to_string(), "pfn 0x10+2");
    }
}
