//! Grant tables, version 1: an array of 8-byte `grant_entry_v1` (flags, domid, frame) in frames Xen maps into
//! our physmap, a reference allocator, and the grant / end-access protocol. A granted page is kept alive by the
//! table until its access has ended, so a page can never be freed while a backend may still use it.
//! Source: Xen `xen/include/public/grant_table.h` (`struct grant_entry_v1`, `GTF_*` flags, reserved entries,
//! the rule that `flags` is written last when granting and cleared with a compare-and-swap that fails while
//! `GTF_reading`/`GTF_writing` are set when ending access), `memory.h` (`XENMAPSPACE_grant_table`).
#![forbid(unsafe_code)]

use crate::abi::DomId;
use crate::shared::{wmb, SharedPage, PAGE_SIZE};
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::Ordering;
use spin::Mutex;

pub use crate::abi::GrantRef;

/// Size of `struct grant_entry_v1` (bytes).
pub const ENTRY_SIZE: usize = 8;
/// Byte offsets of the fields of `struct grant_entry_v1` within an entry. The entry is shared with Xen and
/// updated field by field with atomics (`flags` last when granting, by compare-and-swap when ending access), so
/// these are offsets into the shared page rather than a view over a copy.
mod entry {
    /// `flags` (u16, `GTF_*`).
    pub const FLAGS: usize = 0;
    /// `domid` (u16): the domain granted access.
    pub const DOMID: usize = 2;
    /// `frame` (u32): the granted guest frame.
    pub const FRAME: usize = 4;
}

/// Grant entries per table frame.
pub const ENTRIES_PER_FRAME: usize = PAGE_SIZE / ENTRY_SIZE;
/// `GNTTAB_NR_RESERVED_ENTRIES`: entries 0..8 belong to the toolstack (console, xenstore).
pub const NR_RESERVED_ENTRIES: u32 = 8;

/// `GTF_permit_access`: the domain may map or copy the frame.
pub const GTF_PERMIT_ACCESS: u16 = 1;
/// `GTF_readonly`: read-only access.
pub const GTF_READONLY: u16 = 1 << 2;
/// `GTF_reading`: Xen: the frame is mapped/being copied for reading.
pub const GTF_READING: u16 = 1 << 3;
/// `GTF_writing`: Xen: the frame is mapped/being copied for writing.
pub const GTF_WRITING: u16 = 1 << 4;

/// Grant-table errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantError {
    /// Every reference is in use.
    Exhausted {
        /// Usable references in the table.
        capacity: u32,
    },
    /// The backend still has the grant mapped or is copying (`GTF_reading`/`GTF_writing`); try again later.
    InUse {
        /// The reference.
        gref: GrantRef,
        /// The flags found.
        flags: u16,
    },
    /// The reference is not one we granted.
    NotGranted {
        /// The reference.
        gref: GrantRef,
    },
    /// The page's frame number does not fit the 32-bit `frame` field of a v1 entry.
    FrameTooHigh {
        /// The frame.
        frame: u64,
    },
}

impl fmt::Display for GrantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exhausted { capacity } => write!(f, "grant table full: all {capacity} references in use"),
            Self::InUse { gref, flags } => {
                write!(f, "grant {gref} still in use by the backend (flags {flags:#06x}); access not ended")
            }
            Self::NotGranted { gref } => write!(f, "grant {gref} is not an active grant of ours"),
            Self::FrameTooHigh { frame } => {
                write!(f, "frame {frame:#x} does not fit a v1 grant entry (32-bit frame numbers)")
            }
        }
    }
}

struct State {
    free: Vec<GrantRef>,
    granted: BTreeMap<GrantRef, Arc<SharedPage>>,
}

/// A v1 grant table over its frames (in the guest: heap pages Xen replaced with grant-table frames through
/// `XENMEM_add_to_physmap`; in tests: plain pages a backend peer reads).
pub struct GrantTable {
    frames: Vec<SharedPage>,
    state: Mutex<State>,
}

impl GrantTable {
    /// A table over `frames` (frame i holds references `i * 512 ..`), with every reference above the reserved
    /// ones free.
    pub fn new(frames: Vec<SharedPage>) -> Self {
        let capacity = (frames.len() * ENTRIES_PER_FRAME) as u32;
        // Hand out low references first (pop from the end).
        let free = (NR_RESERVED_ENTRIES..capacity).rev().map(GrantRef).collect();
        Self { frames, state: Mutex::new(State { free, granted: BTreeMap::new() }) }
    }

    /// Usable references (excluding the reserved ones).
    pub fn capacity(&self) -> u32 {
        ((self.frames.len() * ENTRIES_PER_FRAME) as u32).saturating_sub(NR_RESERVED_ENTRIES)
    }

    /// References currently free.
    pub fn free_count(&self) -> usize {
        self.state.lock().free.len()
    }

    fn entry(&self, GrantRef(gref): GrantRef) -> (&SharedPage, usize) {
        let i = gref as usize;
        (&self.frames[i / ENTRIES_PER_FRAME], (i % ENTRIES_PER_FRAME) * ENTRY_SIZE)
    }

    /// Grants domain `domid` access to `page` (read-only when `readonly`): fills `domid` and `frame`, then —
    /// after a write barrier — `flags`, so the entry is never valid with stale contents. The table keeps `page`
    /// alive until [`end_access`](Self::end_access) succeeds. Errors: [`GrantError::Exhausted`],
    /// [`GrantError::FrameTooHigh`].
    pub fn grant(&self, domid: DomId, page: Arc<SharedPage>, readonly: bool) -> Result<GrantRef, GrantError> {
        let frame = u32::try_from(page.frame()).map_err(|_| GrantError::FrameTooHigh { frame: page.frame() })?;
        let mut st = self.state.lock();
        let gref = st.free.pop().ok_or(GrantError::Exhausted { capacity: self.capacity() })?;
        let (table, off) = self.entry(gref);
        table.u16_at(off + entry::DOMID).store(domid.0, Ordering::Relaxed);
        table.u32_at(off + entry::FRAME).store(frame, Ordering::Relaxed);
        wmb();
        let flags = GTF_PERMIT_ACCESS | if readonly { GTF_READONLY } else { 0 };
        table.u16_at(off + entry::FLAGS).store(flags, Ordering::Release);
        st.granted.insert(gref, page);
        Ok(gref)
    }

    /// Ends the access `gref` gave: clears `flags` with a compare-and-swap that only succeeds while Xen reports
    /// no mapping or copy in progress, then frees the reference and returns the page. Errors:
    /// [`GrantError::InUse`] (the grant stays active; retry later), [`GrantError::NotGranted`].
    pub fn end_access(&self, gref: GrantRef) -> Result<Arc<SharedPage>, GrantError> {
        let mut st = self.state.lock();
        if !st.granted.contains_key(&gref) {
            return Err(GrantError::NotGranted { gref });
        }
        let (table, off) = self.entry(gref);
        let flags = table.u16_at(off + entry::FLAGS);
        let mut cur = flags.load(Ordering::Acquire);
        loop {
            if cur & (GTF_READING | GTF_WRITING) != 0 {
                return Err(GrantError::InUse { gref, flags: cur });
            }
            match flags.compare_exchange(cur, 0, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        st.free.push(gref);
        // The key was checked above under the same lock.
        st.granted.remove(&gref).ok_or(GrantError::NotGranted { gref })
    }

    /// The page behind an active grant (what a backend would reach through `gref`), for peers and diagnostics.
    pub fn granted_page(&self, gref: GrantRef) -> Option<Arc<SharedPage>> {
        self.state.lock().granted.get(&gref).cloned()
    }

    /// The raw entry `(flags, domid, frame)` of `gref` as the backend sees it. `None` outside the table.
    pub fn entry_fields(&self, gref: GrantRef) -> Option<(u16, u16, u32)> {
        if gref.0 as usize >= self.frames.len() * ENTRIES_PER_FRAME {
            return None;
        }
        let (table, off) = self.entry(gref);
        Some((
            table.u16_at(off + entry::FLAGS).load(Ordering::Acquire),
            table.u16_at(off + entry::DOMID).load(Ordering::Acquire),
            table.u32_at(off + entry::FRAME).load(Ordering::Acquire),
        ))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    fn table(frames: usize) -> GrantTable {
        GrantTable::new((0..frames).map(|_| SharedPage::new().expect("page")).collect())
    }

    #[test]
    fn grant_fills_entry_and_end_access_clears_it() {
        let t = table(1);
        assert_eq!(t.capacity(), 504);
        let page = Arc::new(SharedPage::new().expect("page"));
        let r = t.grant(DomId(0), page.clone(), true).expect("grant");
        assert_eq!(r, GrantRef(NR_RESERVED_ENTRIES), "reserved entries are never handed out");
        assert_eq!(t.entry_fields(r), Some((GTF_PERMIT_ACCESS | GTF_READONLY, 0, page.frame() as u32)));
        let w = t.grant(DomId(7), page.clone(), false).expect("grant");
        assert_eq!(t.entry_fields(w), Some((GTF_PERMIT_ACCESS, 7, page.frame() as u32)));
        assert!(Arc::ptr_eq(&t.granted_page(w).expect("active"), &page));
        let back = t.end_access(r).expect("end");
        assert!(Arc::ptr_eq(&back, &page));
        assert_eq!(t.entry_fields(r).map(|e| e.0), Some(0));
        assert_eq!(t.end_access(r).err(), Some(GrantError::NotGranted { gref: r }));
        assert_eq!(t.entry_fields(GrantRef(4096)), None);
    }

    #[test]
    fn end_access_fails_while_the_backend_uses_the_grant() {
        let t = table(1);
        let page = Arc::new(SharedPage::new().expect("page"));
        let r = t.grant(DomId(0), page, false).expect("grant");
        // What Xen does while the backend maps the frame for writing.
        let (frame, off) = t.entry(r);
        frame.u16_at(off).fetch_or(GTF_WRITING, Ordering::SeqCst);
        let e = t.end_access(r).unwrap_err();
        assert_eq!(e, GrantError::InUse { gref: r, flags: GTF_PERMIT_ACCESS | GTF_WRITING });
        assert!(std::format!("{e}").contains("still in use"));
        assert!(t.granted_page(r).is_some(), "page kept alive while in use");
        frame.u16_at(off).fetch_and(!GTF_WRITING, Ordering::SeqCst);
        assert!(t.end_access(r).is_ok());
    }

    #[test]
    fn exhaustion_and_reuse() {
        let t = table(1);
        let page = Arc::new(SharedPage::new().expect("page"));
        let refs: Vec<_> = (0..t.capacity()).map(|_| t.grant(DomId(1), page.clone(), true).expect("grant")).collect();
        assert_eq!(t.grant(DomId(1), page.clone(), true), Err(GrantError::Exhausted { capacity: 504 }));
        assert_eq!(t.free_count(), 0);
        t.end_access(refs[10]).expect("end");
        assert_eq!(t.grant(DomId(1), page, true), Ok(refs[10]));
        let two = table(2);
        assert_eq!(two.capacity(), 1016);
    }
}
