//! Hypercalls through the hypercall page: Xen writes one 32-byte stub per hypercall (`mov eax, N; vmcall` or
//! `vmmcall`; `ret`) into a guest page named by writing its guest-physical address to the MSR from CPUID leaf
//! base+2 EBX. x86_64 convention: RAX = number, RDI, RSI, RDX, R10, R8 = arguments, RAX = result (negative =
//! `-errno`); RCX and R11 are clobbered. This is the only place with inline assembly for Xen; everything above
//! it calls the typed wrappers.
//! Source: Xen `xen/include/public/xen.h` (calling convention), `arch-x86/cpuid.h` (leaf 3: hypercall MSR),
//! `version.h`, `memory.h`, `hvm/hvm_op.h`, `event_channel.h`, `grant_table.h`, `sched.h`.
#![allow(unsafe_code)]

use crate::abi::{self, hypercall as nr, DomId, EvtchnPort, XenErrno};
use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicBool, Ordering};

// The page must be executable (the stubs run from it), so it sits in `.text`; Xen fills it through its
// guest-physical address, which the guest's read-only mapping does not prevent. 0xCC (int3) until then.
global_asm!(
    r#"
    .pushsection .text.xen_hypercall_page, "ax"
    .balign 4096
    .global zirvium_xen_hypercall_page
zirvium_xen_hypercall_page:
    .fill 4096, 1, 0xcc
    .popsection
    "#
);

extern "C" {
    static zirvium_xen_hypercall_page: [u8; 4096];
}

static INSTALLED: AtomicBool = AtomicBool::new(false);

fn page_addr() -> u64 {
    (&raw const zirvium_xen_hypercall_page) as u64
}

/// Why the hypercall page could not be installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstallError {
    /// The MSR written.
    pub msr: u32,
}

impl core::fmt::Display for InstallError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Xen did not fill the hypercall page after the write to MSR {:#x}", self.msr)
    }
}

/// Asks Xen to fill the hypercall page (write its address to `msr`, from CPUID leaf base+2 EBX) and checks that
/// the first stub changed. Errors: [`InstallError`].
pub fn install(msr: u32) -> Result<(), InstallError> {
    // SAFETY: the hypercall MSR only makes Xen write stubs into our own page.
    unsafe { libos::arch::x86_64::cpu::wrmsr(msr, page_addr()) };
    // SAFETY: a volatile read of the first byte of our page, which Xen has just written.
    let first = unsafe { core::ptr::read_volatile(page_addr() as *const u8) };
    if first == 0xcc {
        return Err(InstallError { msr });
    }
    INSTALLED.store(true, Ordering::Release);
    Ok(())
}

/// Whether [`install`] succeeded (hypercalls are usable).
pub fn installed() -> bool {
    INSTALLED.load(Ordering::Acquire)
}

/// Calls hypercall `op` with three arguments. Returns -ENOSYS when the page is not installed.
///
/// # Safety
/// Pointer arguments must point at live, correctly laid out structures for the operation, as the header says.
unsafe fn call3(op: u32, a1: u64, a2: u64, a3: u64) -> i64 {
    if !installed() {
        return -38;
    }
    let entry = page_addr() + u64::from(op) * nr::STUB_SIZE;
    let ret: i64;
    // SAFETY: `entry` is the stub Xen wrote for `op`; the stub preserves everything but RAX, RCX, R11 (we also
    // declare the argument registers clobbered to not rely on that). The caller vouches for the arguments.
    unsafe {
        asm!(
            "call {entry}",
            entry = in(reg) entry,
            inlateout("rax") u64::from(op) => ret,
            inlateout("rdi") a1 => _,
            inlateout("rsi") a2 => _,
            inlateout("rdx") a3 => _,
            lateout("rcx") _,
            lateout("r8") _,
            lateout("r10") _,
            lateout("r11") _,
        );
    }
    ret
}

fn ptr<T>(v: &mut T) -> u64 {
    v as *mut T as u64
}

/// Xen's version as `(major, minor)` (`XENVER_version`).
pub fn version() -> Result<(u16, u16), XenErrno> {
    // SAFETY: XENVER_version takes no argument.
    let v = XenErrno::check(unsafe { call3(nr::XEN_VERSION, u64::from(abi::XENVER_VERSION), 0, 0) })?;
    Ok(((v >> 16) as u16, v as u16))
}

/// Feature submap 0 (`XENVER_get_features`).
pub fn features() -> Result<abi::Features, XenErrno> {
    let mut fi = abi::XenFeatureInfo { submap_idx: 0, submap: 0 };
    // SAFETY: `fi` is a live `xen_feature_info`.
    XenErrno::check(unsafe { call3(nr::XEN_VERSION, u64::from(abi::XENVER_GET_FEATURES), ptr(&mut fi), 0) })?;
    Ok(abi::Features(fi.submap))
}

/// `XENMEM_add_to_physmap`: makes page `idx` of `space` (`XENMAPSPACE_*`) appear at guest frame `gpfn`. The RAM
/// page that was there is given back to Xen.
pub fn add_to_physmap(space: u32, idx: u64, gpfn: u64) -> Result<(), XenErrno> {
    let mut a = abi::XenAddToPhysmap { domid: abi::DOMID_SELF, size: 0, space, idx, gpfn };
    // SAFETY: `a` is a live `xen_add_to_physmap`.
    XenErrno::check(unsafe { call3(nr::MEMORY_OP, u64::from(abi::XENMEM_ADD_TO_PHYSMAP), ptr(&mut a), 0) })?;
    Ok(())
}

/// `HVMOP_get_param` for our domain.
pub fn hvm_get_param(index: u32) -> Result<u64, XenErrno> {
    let mut p = abi::XenHvmParam { domid: abi::DOMID_SELF, pad: 0, index, value: 0 };
    // SAFETY: `p` is a live `xen_hvm_param`.
    XenErrno::check(unsafe { call3(nr::HVM_OP, u64::from(abi::HVMOP_GET_PARAM), ptr(&mut p), 0) })?;
    Ok(p.value)
}

/// `HVMOP_set_param` for our domain.
pub fn hvm_set_param(index: u32, value: u64) -> Result<(), XenErrno> {
    let mut p = abi::XenHvmParam { domid: abi::DOMID_SELF, pad: 0, index, value };
    // SAFETY: `p` is a live `xen_hvm_param`.
    XenErrno::check(unsafe { call3(nr::HVM_OP, u64::from(abi::HVMOP_SET_PARAM), ptr(&mut p), 0) })?;
    Ok(())
}

fn evtchn_op<T>(cmd: u32, arg: &mut T) -> Result<(), XenErrno> {
    // SAFETY: callers pass the structure the header defines for `cmd`.
    XenErrno::check(unsafe { call3(nr::EVENT_CHANNEL_OP, u64::from(cmd), ptr(arg), 0) })?;
    Ok(())
}

/// `EVTCHNOP_send`: notifies the other end of `port`.
pub fn evtchn_send(port: EvtchnPort) -> Result<(), XenErrno> {
    evtchn_op(abi::evtchnop::SEND, &mut abi::EvtchnSend { port })
}

/// `EVTCHNOP_unmask`: unmasks `port` and re-raises the upcall if it is pending.
pub fn evtchn_unmask(port: EvtchnPort) -> Result<(), XenErrno> {
    evtchn_op(abi::evtchnop::UNMASK, &mut abi::EvtchnUnmask { port })
}

/// `EVTCHNOP_close`.
pub fn evtchn_close(port: EvtchnPort) -> Result<(), XenErrno> {
    evtchn_op(abi::evtchnop::CLOSE, &mut abi::EvtchnClose { port })
}

/// `EVTCHNOP_alloc_unbound`: a new port that domain `remote` may bind to. Returns the port.
pub fn evtchn_alloc_unbound(remote: DomId) -> Result<EvtchnPort, XenErrno> {
    let mut a = abi::EvtchnAllocUnbound { dom: abi::DOMID_SELF, remote_dom: remote, port: EvtchnPort(0) };
    evtchn_op(abi::evtchnop::ALLOC_UNBOUND, &mut a)?;
    Ok(a.port)
}

/// `GNTTABOP_query_size` for our domain: `(frames in use, maximum frames)`. A bad `GNTST_*` status becomes
/// -EINVAL.
pub fn gnttab_query_size() -> Result<(u32, u32), XenErrno> {
    let mut q = abi::GnttabQuerySize { dom: abi::DOMID_SELF, ..Default::default() };
    // SAFETY: `q` is a live `gnttab_query_size`, count 1.
    XenErrno::check(unsafe { call3(nr::GRANT_TABLE_OP, u64::from(abi::gnttabop::QUERY_SIZE), ptr(&mut q), 1) })?;
    if q.status != abi::GNTST_OKAY {
        return Err(XenErrno(-22));
    }
    Ok((q.nr_frames, q.max_nr_frames))
}

/// `SCHEDOP_shutdown` with `reason` (`SHUTDOWN_*`). Returns only if Xen refused.
pub fn sched_shutdown(reason: u32) -> XenErrno {
    let mut s = abi::SchedShutdown { reason };
    // SAFETY: `s` is a live `sched_shutdown`.
    let r = unsafe { call3(nr::SCHED_OP, u64::from(abi::SCHEDOP_SHUTDOWN), ptr(&mut s), 0) };
    XenErrno(r.min(-1))
}
