//! Thread stacks: page-aligned heap memory with the lowest page unmapped, so an overflow faults instead of
//! overwriting the heap; and the smaller per-thread interrupt stacks (no guard) that the TSS's IST points at
//! while the thread runs. The memory is reserved, never zeroed: untouched pages cost the host nothing.

use crate::mem::paging::{set_page_present, MapError};
use crate::mem::PAGE_SIZE;
use alloc::vec::Vec;
use core::fmt;

#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct Page([u8; PAGE_SIZE as usize]);

/// Errors of [`Stack::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackError {
    /// The heap has no room for the stack (bytes asked).
    OutOfMemory(usize),
    /// The guard page could not be unmapped.
    Guard(MapError),
}

impl fmt::Display for StackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfMemory(n) => write!(f, "no memory for a {n}-byte thread stack"),
            Self::Guard(e) => write!(f, "stack guard page: {e}"),
        }
    }
}

/// A thread's stack: `[base, base + 4 KiB)` is the guard page (when asked for), the usable stack above it
/// grows down from [`Stack::top`].
pub struct Stack {
    /// Reserved pages (length 0: the memory is only ever written through the stack pointer).
    pages: Vec<Page>,
    guarded: bool,
}

impl Stack {
    /// Reserves `bytes` (rounded up to pages, at least one page) of stack, plus an unmapped guard page below
    /// when `guard`. Errors: [`StackError`].
    pub fn new(bytes: usize, guard: bool) -> Result<Self, StackError> {
        let pages = bytes.div_ceil(PAGE_SIZE as usize).max(1) + usize::from(guard);
        let mut v: Vec<Page> = Vec::new();
        v.try_reserve_exact(pages).map_err(|_| StackError::OutOfMemory(bytes))?;
        let mut s = Self { pages: v, guarded: false };
        if guard {
            set_page_present(s.base(), false).map_err(StackError::Guard)?;
            s.guarded = true;
        }
        Ok(s)
    }

    fn base(&self) -> u64 {
        self.pages.as_ptr() as u64
    }

    /// The guard page's address, if the stack has one.
    pub fn guard_page(&self) -> Option<u64> {
        self.guarded.then(|| self.base())
    }

    /// The first address above the stack (16-byte aligned): the initial stack pointer.
    pub fn top(&self) -> u64 {
        self.base() + self.pages.capacity() as u64 * PAGE_SIZE
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // The heap writes its bookkeeping into freed memory: map the guard page again first.
        if let Some(g) = self.guard_page() {
            if let Err(e) = set_page_present(g, true) {
                // Cannot happen for a page this stack unmapped; leak rather than hand out a hole.
                log::error!("thread stack at {g:#x}: {e}; leaking it");
                core::mem::forget(core::mem::take(&mut self.pages));
            }
        }
    }
}
