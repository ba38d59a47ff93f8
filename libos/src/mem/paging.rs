//! Final page tables: an identity map of all RAM and the 32-bit MMIO hole, kernel text read-execute,
//! rodata read-only, data/bss/stacks read-write no-execute, guard pages (and page 0) not present, MMIO
//! uncached. Later MMIO (64-bit BARs) is added with [`map_mmio`].
//! Source: Intel SDM Vol. 3A §4.5 (4-level paging), Table 4-15..4-20 (entry formats), §4.6 (access rights:
//! CR0.WP, EFER.NXE).
#![allow(unsafe_code)]

use super::frames::{FrameAllocator, FrameError, PAGE_SIZE};
use crate::arch::x86_64::cpu;
use crate::bootinfo::{BootInfo, RegionKind};
use core::sync::atomic::{AtomicU64, Ordering};

const P: u64 = 1;
const RW: u64 = 1 << 1;
const PWT: u64 = 1 << 3;
const PCD: u64 = 1 << 4;
const PS: u64 = 1 << 7;
const ADDR: u64 = 0x000F_FFFF_FFFF_F000;
const TWO_MIB: u64 = 2 << 20;
const GIB: u64 = 1 << 30;

static NX: AtomicU64 = AtomicU64::new(0);
static ROOT: AtomicU64 = AtomicU64::new(0);

extern "C" {
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_end: u8;
    static __image_end: u8;
    static __boot_stack_guard: u8;
}

fn sym(s: &u8) -> u64 {
    s as *const u8 as u64
}

/// Kernel image layout (bytes): text `[text_start, text_end)`, rodata up to `rodata_end`, RW data to `end`.
#[derive(Debug, Clone, Copy)]
pub struct ImageLayout {
    /// Address of the first byte of `.text` (identity mapped: physical = virtual; page aligned).
    pub text_start: u64,
    /// End of `.text` (exclusive, page aligned); rodata starts here.
    pub text_end: u64,
    /// End of rodata, `.note.Xen` and `.eh_frame` (exclusive, page aligned); RW data starts here.
    pub rodata_end: u64,
    /// End of the image (exclusive): after `.data`, `.bss` and the boot stack.
    pub end: u64,
}

/// The running image's layout from the linker-script symbols.
pub fn image_layout() -> ImageLayout {
    // SAFETY: only the addresses of linker symbols are taken, never their contents.
    unsafe {
        ImageLayout {
            text_start: sym(&__text_start),
            text_end: sym(&__text_end),
            rodata_end: sym(&__rodata_end),
            end: sym(&__image_end),
        }
    }
}

/// Address of the boot stack's guard page (bytes).
pub fn boot_stack_guard() -> u64 {
    // SAFETY: address only.
    unsafe { sym(&__boot_stack_guard) }
}

type Table = [u64; 512];

/// Page-table pages in `.bss` (zeroed by the boot stub): PML4, PDPT and PDs for 4 GiB, PTs for the image's
/// 2 MiB chunks, and spares for [`map_mmio`] and RAM above 4 GiB.
const POOL_PAGES: usize = 24;

#[repr(C, align(4096))]
struct Pool([Table; POOL_PAGES]);

static mut POOL: Pool = Pool([[0; 512]; POOL_PAGES]);
static POOL_USED: AtomicU64 = AtomicU64::new(0);

fn table(addr: u64) -> &'static mut Table {
    // SAFETY: `addr` is a page-table page from the pool or a zeroed boot frame, identity mapped; page tables
    // are only modified during single-threaded boot or with interrupts masked (`map_mmio`).
    unsafe { &mut *(addr as *mut Table) }
}

/// A zeroed page-table page: from the static pool while it lasts, else a boot frame (zeroed here).
fn new_table(frames: Option<&mut FrameAllocator>) -> Option<u64> {
    let i = POOL_USED.fetch_add(1, Ordering::Relaxed) as usize;
    if i < POOL_PAGES {
        // SAFETY: index in bounds; each pool page is handed out once.
        return Some(unsafe { (&raw mut POOL.0[i]) as u64 });
    }
    let f = frames?.alloc(1).ok()?;
    table(f).fill(0);
    Some(f)
}

/// Which 4 KiB kernel pages get which rights.
fn kernel_page_flags(addr: u64, img: &ImageLayout, guards: &[u64], nx: u64) -> u64 {
    if addr == 0 || guards.contains(&addr) {
        return 0; // not present
    }
    if addr >= img.text_start && addr < img.text_end {
        P
    } else if addr >= img.text_end && addr < img.rodata_end {
        P | nx
    } else {
        P | RW | nx
    }
}

/// Builds and loads the final page tables. `guards` are 4 KiB pages left unmapped. Errors: out of frames.
pub fn init(boot: &BootInfo, frames: &mut FrameAllocator, guards: &[u64]) -> Result<(), FrameError> {
    let oom = FrameError::OutOfMemory { pages: 1 };
    let nx_supported = cpu::cpuid(0x8000_0000, 0)[0] >= 0x8000_0001 && cpu::cpuid(0x8000_0001, 0)[3] & (1 << 20) != 0;
    let nx = if nx_supported { 1u64 << 63 } else { 0 };
    NX.store(nx, Ordering::Relaxed);
    let img = image_layout();
    let ram_top = boot.regions().iter().filter(|r| r.kind == RegionKind::Ram).map(|r| r.end()).max().unwrap_or(0);
    let top = ram_top.max(4 * GIB).div_ceil(GIB) * GIB;
    let is_ram =
        |a: u64| boot.regions().iter().any(|r| r.kind == RegionKind::Ram && a < r.end() && a + TWO_MIB > r.start);
    let pml4 = new_table(None).ok_or(oom)?;
    let mut addr = 0;
    while addr < top {
        let pdpt = ensure(pml4, (addr >> 39) & 511, Some(&mut *frames)).ok_or(oom)?;
        let pd = ensure(pdpt, (addr >> 30) & 511, Some(&mut *frames)).ok_or(oom)?;
        let pde = &mut table(pd)[((addr >> 21) & 511) as usize];
        let overlaps_image = addr < img.end;
        if overlaps_image {
            let pt = new_table(Some(&mut *frames)).ok_or(oom)?;
            for i in 0..512u64 {
                let a = addr + i * PAGE_SIZE;
                table(pt)[i as usize] = a | kernel_page_flags(a, &img, guards, nx);
            }
            *pde = pt | P | RW;
        } else {
            let cache = if is_ram(addr) { 0 } else { PCD | PWT };
            *pde = addr | P | RW | PS | nx | cache;
        }
        addr += TWO_MIB;
    }
    // SAFETY: the new tables identity-map everything the kernel uses (image, stacks, RAM, MMIO hole), so
    // execution continues at the same addresses; CR0.WP is already set by the boot stub.
    unsafe { core::arch::asm!("mov cr3, {}", in(reg) pml4, options(nostack, preserves_flags)) };
    ROOT.store(pml4, Ordering::Release);
    Ok(())
}

fn ensure(parent: u64, index: u64, frames: Option<&mut FrameAllocator>) -> Option<u64> {
    let e = &mut table(parent)[index as usize];
    if *e & P == 0 {
        *e = new_table(frames)? | P | RW;
    }
    Some(*e & ADDR)
}

/// Error of [`map_mmio`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// The static page-table pool is used up.
    OutOfMemory,
    /// The range is not 4 KiB aligned or wraps.
    BadRange {
        /// Physical address of the range asked for.
        paddr: u64,
        /// Length of the range (bytes).
        len: u64,
    },
}

impl core::fmt::Display for MapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::OutOfMemory => write!(f, "out of page-table pages ({POOL_PAGES} in the static pool)"),
            Self::BadRange { paddr, len } => write!(f, "cannot map MMIO range {paddr:#x}+{len:#x}"),
        }
    }
}

/// Identity-maps `[paddr, paddr + len)` (bytes) uncached, no-execute, for device registers (e.g. 64-bit PCI
/// BARs above RAM). Ranges already mapped are left as they are. Errors: [`MapError`].
pub fn map_mmio(paddr: u64, len: u64) -> Result<(), MapError> {
    let start = paddr & !(TWO_MIB - 1);
    let end = paddr.checked_add(len).ok_or(MapError::BadRange { paddr, len })?.div_ceil(TWO_MIB) * TWO_MIB;
    let root = ROOT.load(Ordering::Acquire);
    let nx = NX.load(Ordering::Relaxed);
    crate::arch_without_interrupts(|| {
        let mut a = start;
        while a < end {
            let pdpt = ensure(root, (a >> 39) & 511, None).ok_or(MapError::OutOfMemory)?;
            let pd = ensure(pdpt, (a >> 30) & 511, None).ok_or(MapError::OutOfMemory)?;
            let pde = &mut table(pd)[((a >> 21) & 511) as usize];
            if *pde & P == 0 {
                *pde = a | P | RW | PS | nx | PCD | PWT;
            }
            a += TWO_MIB;
        }
        // SAFETY: reloading CR3 flushes the TLB; the mapping only grew.
        unsafe { core::arch::asm!("mov {0}, cr3", "mov cr3, {0}", out(reg) _, options(nostack)) };
        Ok(())
    })
}
