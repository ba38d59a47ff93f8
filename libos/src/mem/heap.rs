//! The kernel heap: `talc` over every free RAM range left after page tables were allocated, taken on demand
//! ([`Grow`]): RAM the kernel never allocates is never touched, which matters where first touching guest
//! memory is slow (nested KVM, see TESTING.md: ~0.5 s per 8 MiB). The lock masks interrupts, so an interrupt
//! handler that allocates cannot deadlock against the code it interrupted. Counts the bytes it manages and the
//! bytes allocated ([`stats`]), remembers the last allocation it refused ([`last_failure`], for the
//! out-of-memory report in `panic.rs`) and hands out page-aligned runs for the balloon ([`alloc_pages`]).
#![allow(unsafe_code)]

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{null_mut, NonNull};
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;
use talc::base::binning::Binning;
use talc::base::Talc;
use talc::source::Source;
use talc::DefaultBinning;

/// Most free RAM ranges the heap grows over; a memory map with more ranges has the rest claimed at once.
const MAX_RANGES: usize = 32;
/// The heap grows to the next multiple of this (bytes): a hypervisor backs guest RAM with 2 MiB host pages
/// where it can, and the first touch of each costs a host page clear (on a busy host, a compaction too), so
/// growth never reaches into a 2 MiB page it does not need.
const GROW_STEP: usize = 2 << 20;
/// Room for talc's metadata and alignment padding beside an allocation (bytes).
const GROW_SLACK: usize = 256;

/// Free RAM ranges handed to talc piece by piece as allocations need them: ranges are used in order, each
/// claimed from its start and extended in [`GROW_STEP`] pieces (or the size of the request).
#[derive(Debug)]
struct Grow {
    /// `[start, end)` bytes, identity mapped, free.
    ranges: [(usize, usize); MAX_RANGES],
    count: usize,
    /// Index of the range the heap grows in.
    current: usize,
    /// End of the heap in `ranges[current]`, once it is claimed.
    end: Option<NonNull<u8>>,
}

// SAFETY: the ranges are plain addresses of RAM owned by the heap; only the heap's lock reaches them.
unsafe impl Send for Grow {}

// SAFETY: `acquire` only calls `claim`/`extend` on the `talc` it is given, never the global allocator.
unsafe impl Source for Grow {
    fn acquire<B: Binning>(talc: &mut Talc<Self, B>, layout: Layout) -> Result<(), ()> {
        let want = layout.size().saturating_add(layout.align()).saturating_add(GROW_SLACK);
        // The end of a growth from `at`: past the request, at the next 2 MiB boundary, within `end`.
        let grow_to = |at: usize, end: usize| end.min(at.saturating_add(want).next_multiple_of(GROW_STEP));
        loop {
            let src = &mut talc.source;
            let &(start, end) = src.ranges[..src.count].get(src.current).ok_or(())?;
            match src.end {
                None => {
                    let top = grow_to(start, end);
                    // SAFETY: `[start, top)` is free RAM given to `claim` and not yet to talc.
                    match unsafe { talc.claim(start as *mut u8, top - start) } {
                        Some(e) => {
                            talc.source.end = Some(e);
                            return Ok(());
                        }
                        None => talc.source.current += 1,
                    }
                }
                Some(heap_end) => {
                    let new_end = grow_to(heap_end.as_ptr() as usize, end);
                    // SAFETY: `[heap_end, new_end)` is the unclaimed rest of the same free range.
                    let e = unsafe { talc.extend(heap_end, new_end as *mut u8) };
                    if e == heap_end {
                        // The range is used up: go on with the next.
                        talc.source.current += 1;
                        talc.source.end = None;
                        continue;
                    }
                    talc.source.end = Some(e);
                    return Ok(());
                }
            }
        }
    }
}

struct Heap(Mutex<Talc<Grow, DefaultBinning>>);

#[global_allocator]
static HEAP: Heap = Heap(Mutex::new(Talc::new(Grow { ranges: [(0, 0); MAX_RANGES], count: 0, current: 0, end: None })));

/// Bytes given to the heap ([`claim`]).
static CLAIMED: AtomicU64 = AtomicU64::new(0);
/// Bytes of live allocations (their layouts' sizes; talc's per-allocation overhead is not counted).
static ALLOCATED: AtomicU64 = AtomicU64::new(0);
/// The last refused allocation: size (bytes; `u64::MAX` = none, or one succeeded since), alignment, bytes
/// allocated at the time.
static FAILED: [AtomicU64; 3] =
    [const { AtomicU64::new(u64::MAX) }, const { AtomicU64::new(0) }, const { AtomicU64::new(0) }];

/// An allocation the heap refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocFailure {
    /// Bytes asked for.
    pub size: u64,
    /// Alignment asked for (bytes).
    pub align: u64,
    /// The heap's figures when it refused.
    pub heap: HeapStats,
}

/// The allocation the heap refused last, unless one has succeeded since (a fallible allocation — `try_reserve`,
/// DMA — whose failure was handled is forgotten at the next success). The panic handler reads it: a panic right
/// after a refusal is the allocation failing (`handle_alloc_error`, or a crate's own abort, e.g. async-task's).
pub fn last_failure() -> Option<AllocFailure> {
    let size = FAILED[0].load(Ordering::Relaxed);
    (size != u64::MAX).then(|| AllocFailure {
        size,
        align: FAILED[1].load(Ordering::Relaxed),
        heap: HeapStats {
            total_bytes: CLAIMED.load(Ordering::Relaxed),
            allocated_bytes: FAILED[2].load(Ordering::Relaxed),
        },
    })
}

fn record_failure(layout: Layout) {
    FAILED[1].store(layout.align() as u64, Ordering::Relaxed);
    FAILED[2].store(ALLOCATED.load(Ordering::Relaxed), Ordering::Relaxed);
    FAILED[0].store(layout.size() as u64, Ordering::Relaxed);
}

// SAFETY: every path locks the allocator with interrupts masked; talc upholds GlobalAlloc's contract.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        crate::arch_without_interrupts(|| {
            // SAFETY: forwarded GlobalAlloc contract.
            let p = unsafe { self.0.lock().allocate(layout) }.map_or(null_mut(), NonNull::as_ptr);
            if p.is_null() {
                record_failure(layout);
            } else {
                ALLOCATED.fetch_add(layout.size() as u64, Ordering::Relaxed);
                if FAILED[0].load(Ordering::Relaxed) != u64::MAX {
                    FAILED[0].store(u64::MAX, Ordering::Relaxed); // handled: later allocations succeed
                }
            }
            p
        })
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: forwarded GlobalAlloc contract.
        crate::arch_without_interrupts(|| unsafe { self.0.lock().deallocate(ptr, layout) })
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let grown = crate::arch_without_interrupts(|| {
            // SAFETY: forwarded GlobalAlloc contract; `new_size` is non-zero per that contract.
            unsafe { self.0.lock().try_realloc_in_place(ptr, layout, new_size) }
        });
        if grown {
            // A no-op for the count when shrinking in place lands on the same size.
            ALLOCATED.fetch_add(new_size as u64, Ordering::Relaxed);
            ALLOCATED.fetch_sub(layout.size() as u64, Ordering::Relaxed);
            return ptr;
        }
        // SAFETY: forwarded contract; copy the smaller of the two sizes, then free the old block.
        unsafe {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            let new = self.alloc(new_layout);
            if !new.is_null() {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

/// Ranges given to the heap, `[start, end)` (bytes), for [`contains`]; `(0, 0)` = unused slot.
static RANGES: [[AtomicU64; 2]; MAX_RANGES + 1] =
    [const { [const { AtomicU64::new(0) }, const { AtomicU64::new(0) }] }; MAX_RANGES + 1];

/// Records `[start, end)` for [`contains`] (a range given to the heap, whether claimed yet or on demand).
fn record_range(start: u64, end: u64) {
    if let Some([s, e]) = RANGES.iter().find(|[_, e]| e.load(Ordering::Relaxed) == 0) {
        s.store(start, Ordering::Relaxed);
        e.store(end, Ordering::Relaxed);
    }
}

/// Whether `addr` lies in memory given to the heap (for fault reports).
pub fn contains(addr: u64) -> bool {
    RANGES.iter().any(|[s, e]| (s.load(Ordering::Relaxed)..e.load(Ordering::Relaxed)).contains(&addr))
}

/// Gives `[start, end)` (bytes, identity mapped, unused by anything else) to the heap, which takes it on
/// demand (ranges in the order given). Returns whether the range was recorded (more than [`MAX_RANGES`]
/// ranges are claimed at once; ranges too small for talc's metadata are refused then).
///
/// # Safety
/// The range must be free RAM, mapped read-write, never used by anything else for the kernel's lifetime.
pub unsafe fn claim(start: u64, end: u64) -> bool {
    crate::arch_without_interrupts(|| {
        let mut talc = HEAP.0.lock();
        let src = &mut talc.source;
        if end > start && src.count < MAX_RANGES {
            src.ranges[src.count] = (start as usize, end as usize);
            src.count += 1;
            CLAIMED.fetch_add(end - start, Ordering::Relaxed);
            record_range(start, end);
            return true;
        }
        // SAFETY: forwarded to the caller.
        let ok = unsafe { talc.claim(start as *mut u8, (end - start) as usize) }.is_some();
        if ok {
            CLAIMED.fetch_add(end - start, Ordering::Relaxed);
            record_range(start, end);
        }
        ok
    })
}

/// The heap's figures (bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes the heap manages (everything [`claim`] accepted).
    pub total_bytes: u64,
    /// Bytes of live allocations.
    pub allocated_bytes: u64,
}

impl HeapStats {
    /// Bytes not allocated (`total_bytes - allocated_bytes`; fragmentation may keep a large block from fitting).
    pub fn free_bytes(&self) -> u64 {
        self.total_bytes.saturating_sub(self.allocated_bytes)
    }
}

/// The heap's figures now.
pub fn stats() -> HeapStats {
    HeapStats { total_bytes: CLAIMED.load(Ordering::Relaxed), allocated_bytes: ALLOCATED.load(Ordering::Relaxed) }
}

/// The page-aligned layout of a balloon run of `pages` pages (a power of two), aligned to its size.
fn pages_layout(pages: u64) -> Option<Layout> {
    let bytes = usize::try_from(pages.checked_mul(4096)?).ok()?;
    Layout::from_size_align(bytes, bytes).ok()
}

/// Allocates `pages` contiguous pages (a power of two) aligned to their size, for the balloon; returns the
/// physical (= virtual, identity mapped) address, or `None` when no such run is free. The memory is not touched.
pub fn alloc_pages(pages: u64) -> Option<u64> {
    let layout = pages_layout(pages)?;
    // SAFETY: a non-zero size (pages >= 1); the block is only given back through `free_pages` with this layout.
    let p = unsafe { HEAP.alloc(layout) };
    (!p.is_null()).then_some(p as u64)
}

/// Gives back a run [`alloc_pages`] returned for the same `pages`.
pub fn free_pages(addr: u64, pages: u64) {
    if let Some(layout) = pages_layout(pages) {
        // SAFETY: the balloon frees only runs `alloc_pages` returned, once, with the same page count (its chunk
        // map holds each run until then).
        unsafe { HEAP.dealloc(addr as *mut u8, layout) }
    }
}
