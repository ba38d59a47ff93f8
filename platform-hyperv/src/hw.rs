//! The bare-metal edge of the Hyper-V platform, the only `unsafe` in the crate: MSR access, hypercalls through the
//! hypercall page (TLFS §3.13: the hypervisor overlays a guest page with a `vmcall` stub; x64 convention RCX =
//! control, RDX = input GPA or fast input, R8 = output GPA, result in RAX), and shared pages from libos's
//! identity-mapped DMA heap.
#![allow(unsafe_code)]

use crate::hv::HwAccess;
use crate::mem::{Dma, MemError, Region, SharedPages, PAGE_SIZE};
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use libos::arch::x86_64::cpu;

/// A page-aligned page in the kernel text (read-execute in libos's page tables) for the hypervisor to overlay with
/// the hypercall stub. Filled with `int3` so a call before the overlay traps visibly.
#[repr(C, align(4096))]
struct HypercallPage([u8; PAGE_SIZE]);

#[link_section = ".text.hyperv_hypercall_page"]
static HYPERCALL_PAGE: HypercallPage = HypercallPage([0xcc; PAGE_SIZE]);

/// Guest-physical address of the hypercall page (identity mapped: the same as its address).
pub fn hypercall_page_gpa() -> u64 {
    libos::mem::dma::virt_to_phys(&HYPERCALL_PAGE as *const HypercallPage as usize)
}

/// MSRs, hypercalls and the TSC of the real machine.
pub struct NativeHw;

impl HwAccess for NativeHw {
    fn rdmsr(&self, msr: u32) -> u64 {
        cpu::rdmsr(msr)
    }

    fn wrmsr(&self, msr: u32, value: u64) {
        // SAFETY: only the synthetic MSRs 0x4000_0000..=0x4000_00FF defined by the TLFS are written here, after
        // CPUID showed the Hyper-V interface and the privilege to access them; they change hypervisor state
        // (overlay pages, SynIC, timers), not the guest's memory or paging.
        unsafe { cpu::wrmsr(msr, value) }
    }

    fn hypercall(&self, control: u64, input_gpa: u64, output_gpa: u64) -> u64 {
        let result: u64;
        // SAFETY: the hypercall page was enabled (its MSR read back enabled) before any hypercall is made; the
        // stub follows the C calling convention (caller-saved registers clobbered) and reads/writes only the
        // input and output pages, which the caller owns for the duration of the call.
        unsafe {
            core::arch::asm!(
                "call {page}",
                page = in(reg) &HYPERCALL_PAGE as *const HypercallPage as u64,
                inlateout("rcx") control => _,
                inlateout("rdx") input_gpa => _,
                inlateout("r8") output_gpa => _,
                lateout("rax") result,
                clobber_abi("C"),
            );
        }
        result
    }

    fn hypercall_fast(&self, control: u64, input: u64) -> u64 {
        let result: u64;
        // SAFETY: as `hypercall`; a fast call passes its input in RDX and touches no memory.
        unsafe {
            core::arch::asm!(
                "call {page}",
                page = in(reg) &HYPERCALL_PAGE as *const HypercallPage as u64,
                inlateout("rcx") control => _,
                inlateout("rdx") input => _,
                inlateout("r8") 0u64 => _,
                lateout("rax") result,
                clobber_abi("C"),
            );
        }
        result
    }

    fn rdtsc(&self) -> u64 {
        cpu::rdtsc()
    }
}

/// Pages from libos's DMA heap, never freed: the host may hold a GPADL or overlay on them until the VM ends.
struct DmaPages {
    base: usize,
    len: usize,
}

impl DmaPages {
    fn ptr(&self, offset: usize) -> *mut u8 {
        (self.base + offset) as *mut u8
    }
}

impl SharedPages for DmaPages {
    fn gpa(&self) -> u64 {
        libos::mem::dma::virt_to_phys(self.base)
    }
    fn len(&self) -> usize {
        self.len
    }
    fn read(&self, offset: usize, buf: &mut [u8]) {
        // SAFETY: `Region` checked `offset + buf.len() <= len`; the pages are identity mapped and live forever.
        // The host may write concurrently; bytes are copied, never referenced, and the protocol code re-checks
        // every value it copied.
        unsafe { core::ptr::copy_nonoverlapping(self.ptr(offset), buf.as_mut_ptr(), buf.len()) }
    }
    fn write(&self, offset: usize, data: &[u8]) {
        // SAFETY: bounds checked by `Region`; the memory is ours and mapped writable.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr(offset), data.len()) }
    }
    fn load_u32(&self, offset: usize) -> u32 {
        // SAFETY: `Region` checked bounds and 4-byte alignment; AtomicU32 has u32's layout.
        unsafe { &*(self.ptr(offset) as *const AtomicU32) }.load(Ordering::Acquire)
    }
    fn store_u32(&self, offset: usize, value: u32) {
        // SAFETY: as `load_u32`.
        unsafe { &*(self.ptr(offset) as *const AtomicU32) }.store(value, Ordering::Release)
    }
    fn load_u64(&self, offset: usize) -> u64 {
        // SAFETY: `Region` checked bounds and 8-byte alignment; AtomicU64 has u64's layout.
        unsafe { &*(self.ptr(offset) as *const AtomicU64) }.load(Ordering::Acquire)
    }
    fn swap_u64(&self, offset: usize, value: u64) -> u64 {
        // SAFETY: as `load_u64`.
        unsafe { &*(self.ptr(offset) as *const AtomicU64) }.swap(value, Ordering::AcqRel)
    }
    fn fetch_or_u64(&self, offset: usize, value: u64) -> u64 {
        // SAFETY: as `load_u64`.
        unsafe { &*(self.ptr(offset) as *const AtomicU64) }.fetch_or(value, Ordering::AcqRel)
    }
}

/// The guest's DMA allocator for shared pages.
pub struct NativeDma;

impl Dma for NativeDma {
    fn alloc(&self, pages: usize) -> Result<Region, MemError> {
        let r = libos::mem::dma::DmaRegion::new(pages).map_err(|_| MemError::NoMemory { pages })?;
        let len = r.len();
        let base = r.leak().as_ptr() as usize;
        Ok(Region::new(Arc::new(DmaPages { base, len })))
    }
}
