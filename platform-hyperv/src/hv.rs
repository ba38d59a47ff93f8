//! Hyper-V enlightenments from the Top-Level Functional Specification (TLFS v6.0b): feature discovery (§2.4), the
//! guest OS identity and hypercall page MSRs (§3.13, §3.14), the hypercall calling convention (§3.3–§3.8), the
//! partition reference counter and reference TSC page (§12.3, §12.7), the synthetic interrupt controller (SynIC,
//! §11: SCONTROL, SIMP, SIEFP, SINTx, EOM), synthetic timers (§12.4), and the VP index (§7.8). Constants are also
//! in Linux `include/hyperv/hvgdk_mini.h` (`HV_X64_MSR_*`, `HVCALL_*`, `HV_STATUS_*`).
//!
//! Sans-I/O: MSRs, hypercalls and the TSC go through [`HwAccess`]; the bare target implements it with `rdmsr`,
//! `wrmsr` and a call into the hypercall page (`crate::hw`), host tests with recorded values, and the `hyperv` test
//! peer with a model of the hypervisor.

use crate::mem::{MemError, Region, PAGE_SIZE};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use libos::hypervisor::{CpuidSource, Found, HvFeatures, HvPartitionPrivileges, HvRecommendations};

/// `HV_X64_MSR_GUEST_OS_ID` (TLFS §3.13): must be non-zero before the hypercall page is enabled.
pub const MSR_GUEST_OS_ID: u32 = 0x4000_0000;
/// `HV_X64_MSR_HYPERCALL` (TLFS §3.14): bit 0 enable, bit 1 locked, bits 63:12 the hypercall page's GPA page number.
pub const MSR_HYPERCALL: u32 = 0x4000_0001;
/// `HV_X64_MSR_VP_INDEX` (TLFS §7.8): this virtual processor's index, used as `target_vp` in VMBus messages.
pub const MSR_VP_INDEX: u32 = 0x4000_0002;
/// `HV_X64_MSR_TIME_REF_COUNT` (TLFS §12.3): partition reference counter, 100 ns units since the partition started.
pub const MSR_TIME_REF_COUNT: u32 = 0x4000_0020;
/// `HV_X64_MSR_REFERENCE_TSC` (TLFS §12.7.1): bit 0 enable, bits 63:12 the reference TSC page's GPA page number.
pub const MSR_REFERENCE_TSC: u32 = 0x4000_0021;
/// `HV_X64_MSR_TSC_FREQUENCY` (TLFS §2.4.4, AccessFrequencyRegs): TSC frequency (Hz).
pub const MSR_TSC_FREQUENCY: u32 = 0x4000_0022;
/// `HV_X64_MSR_APIC_FREQUENCY`: LAPIC timer frequency (Hz).
pub const MSR_APIC_FREQUENCY: u32 = 0x4000_0023;
/// `HV_X64_MSR_SCONTROL` (TLFS §11.8.1): bit 0 enables the SynIC.
pub const MSR_SCONTROL: u32 = 0x4000_0080;
/// `HV_X64_MSR_SVERSION` (TLFS §11.8.2): SynIC version (1).
pub const MSR_SVERSION: u32 = 0x4000_0081;
/// `HV_X64_MSR_SIEFP` (TLFS §11.8.4): bit 0 enable, bits 63:12 the event-flags page's GPA page number.
pub const MSR_SIEFP: u32 = 0x4000_0082;
/// `HV_X64_MSR_SIMP` (TLFS §11.8.5): bit 0 enable, bits 63:12 the message page's GPA page number.
pub const MSR_SIMP: u32 = 0x4000_0083;
/// `HV_X64_MSR_EOM` (TLFS §11.8.6): writing any value asks the hypervisor to redeliver a pending message.
pub const MSR_EOM: u32 = 0x4000_0084;
/// `HV_X64_MSR_SINT0` (TLFS §11.8.7); SINTx is `MSR_SINT0 + x`.
pub const MSR_SINT0: u32 = 0x4000_0090;
/// `HV_X64_MSR_STIMER0_CONFIG` (TLFS §12.4.1).
pub const MSR_STIMER0_CONFIG: u32 = 0x4000_00B0;
/// `HV_X64_MSR_STIMER0_COUNT` (TLFS §12.4.2): expiration time, reference time (100 ns) for one-shot timers.
pub const MSR_STIMER0_COUNT: u32 = 0x4000_00B1;

/// `HVCALL_POST_MESSAGE` (TLFS §11.10.1): memory input `HV_INPUT_POST_MESSAGE`.
pub const HVCALL_POST_MESSAGE: u16 = 0x005c;
/// `HVCALL_SIGNAL_EVENT` (TLFS §11.10.2): fast input, connection id (bits 31:0) and flag number (bits 47:32).
pub const HVCALL_SIGNAL_EVENT: u16 = 0x005d;
/// Hypercall control bit 16: register ("fast") calling convention (TLFS §3.7).
pub const HYPERCALL_FAST: u64 = 1 << 16;

/// Number of synthetic interrupt sources per virtual processor (TLFS §11.1).
pub const SINT_COUNT: u32 = 16;
/// Size of one SynIC message slot (bytes): 16-byte header plus 240-byte payload (TLFS §11.9, `HV_MESSAGE`).
pub const MESSAGE_SIZE: usize = 256;
/// Maximum SynIC message payload (bytes, `HV_MESSAGE_PAYLOAD_BYTE_COUNT`).
pub const MESSAGE_PAYLOAD_MAX: usize = 240;
/// Event flags per SINT in the SIEFP page (`HV_EVENT_FLAGS_COUNT`, 256 bytes).
pub const EVENT_FLAGS_COUNT: usize = 2048;
/// SynIC message type: slot empty (`HVMSG_NONE`).
pub const HVMSG_NONE: u32 = 0;
/// SynIC message type of a synthetic timer expiration (`HVMSG_TIMER_EXPIRED`).
pub const HVMSG_TIMER_EXPIRED: u32 = 0x8000_0010;
/// `HV_MESSAGE` flags bit 0 (`MessagePending`): another message waits; write EOM after freeing the slot.
pub const MESSAGE_FLAG_PENDING: u8 = 1;

/// SINTx bit 16: masked.
pub const SINT_MASKED: u64 = 1 << 16;
/// SINTx bit 17: auto-EOI (the hypervisor EOIs the LAPIC).
pub const SINT_AUTO_EOI: u64 = 1 << 17;

/// The ways to reach the hypervisor: MSRs, hypercalls and the TSC. Implemented by the bare-metal edge
/// (`crate::hw`), by recorded values in unit tests and by the host model in the `hyperv` test peer.
pub trait HwAccess: Send + Sync {
    /// Reads a synthetic MSR.
    fn rdmsr(&self, msr: u32) -> u64;
    /// Writes a synthetic MSR.
    fn wrmsr(&self, msr: u32, value: u64);
    /// A memory-based hypercall (TLFS §3.6): `control` (code, flags, rep counts), input and output page GPAs
    /// (8-byte aligned, not crossing a page). Returns the result value (status in bits 15:0).
    fn hypercall(&self, control: u64, input_gpa: u64, output_gpa: u64) -> u64;
    /// A fast (register) hypercall with one 8-byte input (TLFS §3.7). Returns the result value.
    fn hypercall_fast(&self, control: u64, input: u64) -> u64;
    /// The virtual processor's TSC (ticks).
    fn rdtsc(&self) -> u64;
}

/// Hypercall status codes (`HV_STATUS_*`, TLFS Appendix B), bits 15:0 of the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HvStatus(pub u16);

impl HvStatus {
    /// `HV_STATUS_SUCCESS`.
    pub const SUCCESS: Self = Self(0);
    /// `HV_STATUS_INVALID_HYPERCALL_CODE`.
    pub const INVALID_HYPERCALL_CODE: Self = Self(2);
    /// `HV_STATUS_INVALID_HYPERCALL_INPUT`.
    pub const INVALID_HYPERCALL_INPUT: Self = Self(3);
    /// `HV_STATUS_INVALID_ALIGNMENT`.
    pub const INVALID_ALIGNMENT: Self = Self(4);
    /// `HV_STATUS_INVALID_PARAMETER`.
    pub const INVALID_PARAMETER: Self = Self(5);
    /// `HV_STATUS_ACCESS_DENIED`.
    pub const ACCESS_DENIED: Self = Self(6);
    /// `HV_STATUS_INSUFFICIENT_MEMORY`.
    pub const INSUFFICIENT_MEMORY: Self = Self(0xb);
    /// `HV_STATUS_INVALID_PORT_ID`.
    pub const INVALID_PORT_ID: Self = Self(0x11);
    /// `HV_STATUS_INVALID_CONNECTION_ID`: e.g. VMBus message connection 4 on a host older than VMBus 5.0.
    pub const INVALID_CONNECTION_ID: Self = Self(0x12);
    /// `HV_STATUS_INSUFFICIENT_BUFFERS`: the host's message queue is full; retry.
    pub const INSUFFICIENT_BUFFERS: Self = Self(0x13);

    /// The status of a hypercall result value.
    pub fn from_result(result: u64) -> Self {
        Self(result as u16)
    }

    /// Whether the call succeeded.
    pub fn is_success(self) -> bool {
        self.0 == 0
    }

    fn name(self) -> &'static str {
        match self.0 {
            0 => "HV_STATUS_SUCCESS",
            2 => "HV_STATUS_INVALID_HYPERCALL_CODE",
            3 => "HV_STATUS_INVALID_HYPERCALL_INPUT",
            4 => "HV_STATUS_INVALID_ALIGNMENT",
            5 => "HV_STATUS_INVALID_PARAMETER",
            6 => "HV_STATUS_ACCESS_DENIED",
            0xb => "HV_STATUS_INSUFFICIENT_MEMORY",
            0x11 => "HV_STATUS_INVALID_PORT_ID",
            0x12 => "HV_STATUS_INVALID_CONNECTION_ID",
            0x13 => "HV_STATUS_INSUFFICIENT_BUFFERS",
            _ => "unknown status",
        }
    }
}

impl fmt::Display for HvStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:#x})", self.name(), self.0)
    }
}

/// Why an enlightenment could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HvError {
    /// The partition lacks a privilege the feature needs (CPUID 0x4000_0003 EAX/EBX).
    MissingPrivilege { what: &'static str, privilege: &'static str },
    /// The hypervisor did not take an MSR value: wrote `wrote`, read back `read`.
    MsrNotAccepted { msr: u32, wrote: u64, read: u64 },
    /// The reference TSC page is not valid (sequence 0): the caller falls back to the reference counter.
    TscPageInvalid,
    /// A shared page access failed.
    Memory(MemError),
    /// A hypercall failed.
    Hypercall { call: &'static str, status: HvStatus },
}

impl fmt::Display for HvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingPrivilege { what, privilege } => {
                write!(f, "hyper-v: {what} needs the {privilege} partition privilege, which this partition lacks")
            }
            Self::MsrNotAccepted { msr, wrote, read } => {
                write!(f, "hyper-v: MSR {msr:#x} did not take {wrote:#x} (reads back {read:#x})")
            }
            Self::TscPageInvalid => write!(f, "hyper-v: reference TSC page is invalid (sequence 0)"),
            Self::Memory(e) => write!(f, "hyper-v: shared page: {e}"),
            Self::Hypercall { call, status } => write!(f, "hyper-v: hypercall {call} failed: {status}"),
        }
    }
}

impl From<MemError> for HvError {
    fn from(e: MemError) -> Self {
        Self::Memory(e)
    }
}

/// Builds a hypercall control value (TLFS §3.6): call code (bits 15:0), fast flag (bit 16), rep count (bits
/// 43:32).
pub fn hypercall_control(code: u16, fast: bool, rep_count: u16) -> u64 {
    u64::from(code) | if fast { HYPERCALL_FAST } else { 0 } | (u64::from(rep_count & 0xfff) << 32)
}

/// Open-source guest bit of the guest OS identity (TLFS §3.13, "Guest OS Identity for Open Source Operating
/// Systems": bit 63).
pub const GUEST_OS_ID_OPEN_SOURCE: u64 = 1 << 63;
/// OsType for Zirvium: the TLFS registers Linux (1), FreeBSD (2), Xen (3) and Illumos (4); Zirvium has no
/// registered type and uses 0x7f, the top of the 7-bit field, so it never poses as a registered OS.
pub const GUEST_OS_TYPE_ZIRVIUM: u64 = 0x7f;

/// The guest OS identity value (TLFS §3.13, open-source layout): bit 63 open source, bits 62:56 OsType, bits 55:48
/// OsId (0), bits 47:16 version (`major << 16 | minor << 8 | patch`), bits 15:0 build number (0).
pub fn guest_os_id(major: u8, minor: u8, patch: u8) -> u64 {
    let version = (u64::from(major) << 16) | (u64::from(minor) << 8) | u64::from(patch);
    GUEST_OS_ID_OPEN_SOURCE | (GUEST_OS_TYPE_ZIRVIUM << 56) | (version << 16)
}

/// The MSR value that enables an overlay page at `gpa` (hypercall, reference TSC, SIMP and SIEFP MSRs all use bit
/// 0 = enable and bits 63:12 = GPA page number), keeping the reserved bits 11:1 of `current`.
pub fn overlay_msr_value(current: u64, gpa: u64) -> u64 {
    (gpa & !0xfff) | (current & 0xffe) | 1
}

/// What this partition may use, from the Hyper-V CPUID leaves (TLFS §2.4) decoded by libos plus the limits leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enlightenments {
    /// Base leaf of the Hyper-V range (0x4000_0000, or higher when another hypervisor sits below).
    pub base_leaf: u32,
    /// Partition privileges (leaf base+3 EAX/EBX).
    pub privileges: HvPartitionPrivileges,
    /// Hypervisor features (leaf base+3 EDX).
    pub features: HvFeatures,
    /// Recommendations (leaf base+4 EAX).
    pub recommendations: HvRecommendations,
    /// Maximum virtual processors (leaf base+5 EAX), 0 when not reported.
    pub max_vps: u32,
}

impl Enlightenments {
    /// Decodes the Hyper-V range `found` (must have the `"Hv#1"` interface); `cpu` reads the limits leaf.
    /// `None` when `found` is not a TLFS Hyper-V range with the feature leaf.
    pub fn from_cpuid(found: &Found, cpu: &dyn CpuidSource) -> Option<Self> {
        let hv = found.hyperv()?;
        if hv.interface != libos::hypervisor::HYPERV_INTERFACE_TLFS {
            return None;
        }
        let feat = hv.features?;
        let rec = hv.recommendations.map(|r| r.recommendations).unwrap_or(HvRecommendations(0));
        let max_vps =
            if found.usable_max_leaf() >= found.base_leaf + 5 { cpu.cpuid(found.base_leaf + 5, 0)[0] } else { 0 };
        Some(Self {
            base_leaf: found.base_leaf,
            privileges: feat.privileges,
            features: feat.features,
            recommendations: rec,
            max_vps,
        })
    }

    /// Whether the partition has privilege `p`.
    pub fn has(&self, p: HvPartitionPrivileges) -> bool {
        self.privileges.contains(p)
    }

    /// Checks what VMBus needs: hypercall MSRs, SynIC registers, PostMessage and SignalEvent.
    pub fn check_vmbus(&self) -> Result<(), HvError> {
        for (p, name) in [
            (HvPartitionPrivileges::ACCESS_HYPERCALL_MSRS, "AccessHypercallMsrs"),
            (HvPartitionPrivileges::ACCESS_SYNIC_REGS, "AccessSynicRegs"),
            (HvPartitionPrivileges::POST_MESSAGES, "PostMessages"),
            (HvPartitionPrivileges::SIGNAL_EVENTS, "SignalEvents"),
        ] {
            if !self.has(p) {
                return Err(HvError::MissingPrivilege { what: "VMBus", privilege: name });
            }
        }
        Ok(())
    }

    /// The host's auto-EOI recommendation (Linux uses auto-EOI unless `DeprecateAutoEoi` is set). Informational:
    /// [`Synic::enable`] never uses auto-EOI because libos EOIs every vector itself.
    pub fn auto_eoi(&self) -> bool {
        !self.recommendations.contains(HvRecommendations::DEPRECATE_AUTO_EOI)
    }

    /// The clock this partition can use (TLFS §12.7 when AccessPartitionReferenceTsc, else §12.3).
    pub fn clock_kind(&self) -> Option<ClockKind> {
        if self.has(HvPartitionPrivileges::ACCESS_PARTITION_REFERENCE_TSC) {
            Some(ClockKind::TscPage)
        } else if self.has(HvPartitionPrivileges::ACCESS_PARTITION_REFERENCE_COUNTER) {
            Some(ClockKind::ReferenceCounter)
        } else {
            None
        }
    }
}

/// Enables the hypercall interface (TLFS §3.13–§3.14): writes the guest OS identity, then the hypercall MSR with the
/// page at `page_gpa`, and checks that the enable bit stuck. Errors: [`HvError::MissingPrivilege`] without
/// AccessHypercallMsrs, [`HvError::MsrNotAccepted`].
pub fn enable_hypercalls(hw: &dyn HwAccess, en: &Enlightenments, guest_id: u64, page_gpa: u64) -> Result<(), HvError> {
    if !en.has(HvPartitionPrivileges::ACCESS_HYPERCALL_MSRS) {
        return Err(HvError::MissingPrivilege { what: "the hypercall page", privilege: "AccessHypercallMsrs" });
    }
    // The hypercall MSR ignores writes while the guest OS ID is zero (TLFS §3.13).
    hw.wrmsr(MSR_GUEST_OS_ID, guest_id);
    let value = overlay_msr_value(hw.rdmsr(MSR_HYPERCALL), page_gpa);
    hw.wrmsr(MSR_HYPERCALL, value);
    let read = hw.rdmsr(MSR_HYPERCALL);
    if read & 1 == 0 {
        return Err(HvError::MsrNotAccepted { msr: MSR_HYPERCALL, wrote: value, read });
    }
    Ok(())
}

/// Which reference clock is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockKind {
    /// The reference TSC page (TLFS §12.7): TSC-based, no exits.
    TscPage,
    /// The partition reference counter MSR (TLFS §12.3): one MSR read (an exit) per reading.
    ReferenceCounter,
}

/// A snapshot of the reference TSC page (TLFS §12.7.2, `HV_REFERENCE_TSC_PAGE`): `TscSequence` (u32 at 0),
/// `TscScale` (u64 at 8), `TscOffset` (i64 at 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TscPage {
    /// Sequence number; 0 means the page is not valid and the reference counter MSR must be used.
    pub sequence: u32,
    /// Scale: reference time is `((tsc * scale) >> 64) + offset` (64.64 fixed point).
    pub scale: u64,
    /// Offset (100 ns units).
    pub offset: i64,
}

impl TscPage {
    /// Byte offset of `TscSequence`.
    pub const SEQUENCE: usize = 0;
    /// Byte offset of `TscScale`.
    pub const SCALE: usize = 8;
    /// Byte offset of `TscOffset`.
    pub const OFFSET: usize = 16;

    /// Reference time (100 ns units) at TSC value `tsc` (TLFS §12.7.3):
    /// `ReferenceTime = ((VirtualTsc * TscScale) >> 64) + TscOffset`.
    pub fn reference_time(&self, tsc: u64) -> u64 {
        let scaled = ((u128::from(tsc) * u128::from(self.scale)) >> 64) as u64;
        scaled.wrapping_add(self.offset as u64)
    }

    /// The TSC frequency (Hz) this scale implies: reference time runs at 10 MHz, so `hz = 10^7 · 2^64 / scale`.
    /// `None` for a zero scale.
    pub fn tsc_hz(&self) -> Option<u64> {
        if self.scale == 0 {
            return None;
        }
        u64::try_from((10_000_000u128 << 64) / u128::from(self.scale)).ok()
    }
}

/// Reads the reference time from the TSC page in `page` with the sequence protocol of TLFS §12.7.3: read the
/// sequence, the scale and offset and the TSC, and retry while the sequence changed. Errors:
/// [`HvError::TscPageInvalid`] when the sequence is 0 (the caller then uses [`MSR_TIME_REF_COUNT`]).
pub fn read_tsc_page(page: &Region, hw: &dyn HwAccess) -> Result<u64, HvError> {
    loop {
        let seq = page.load_u32(TscPage::SEQUENCE)?;
        if seq == 0 {
            return Err(HvError::TscPageInvalid);
        }
        let snap = TscPage {
            sequence: seq,
            scale: page.load_u64(TscPage::SCALE)?,
            offset: page.load_u64(TscPage::OFFSET)? as i64,
        };
        let tsc = hw.rdtsc();
        if page.load_u32(TscPage::SEQUENCE)? == seq {
            return Ok(snap.reference_time(tsc));
        }
    }
}

/// The partition's reference clock: the TSC page when it is valid, else the reference counter MSR.
pub struct ReferenceClock {
    hw: alloc::sync::Arc<dyn HwAccess>,
    page: Option<Region>,
}

impl ReferenceClock {
    /// Sets up the clock for `kind`: for [`ClockKind::TscPage`] enables the page at `page` (MSR 0x4000_0021) and
    /// falls back to the counter when the hypervisor leaves it invalid. Errors: [`HvError::MsrNotAccepted`].
    pub fn new(
        hw: alloc::sync::Arc<dyn HwAccess>,
        kind: ClockKind,
        page: Option<Region>,
    ) -> Result<(Self, ClockKind), HvError> {
        if let (ClockKind::TscPage, Some(p)) = (kind, page) {
            let v = overlay_msr_value(hw.rdmsr(MSR_REFERENCE_TSC), p.gpa());
            hw.wrmsr(MSR_REFERENCE_TSC, v);
            let c = Self { hw: hw.clone(), page: Some(p) };
            if c.now_100ns_checked().is_ok() {
                return Ok((c, ClockKind::TscPage));
            }
            log::warn!("hyper-v: reference TSC page invalid after enabling; using the reference counter MSR");
        }
        Ok((Self { hw, page: None }, ClockKind::ReferenceCounter))
    }

    fn now_100ns_checked(&self) -> Result<u64, HvError> {
        match &self.page {
            Some(p) => read_tsc_page(p, &*self.hw),
            None => Ok(self.hw.rdmsr(MSR_TIME_REF_COUNT)),
        }
    }

    /// Reference time (100 ns units).
    pub fn now_100ns(&self) -> u64 {
        // The page can turn invalid (sequence 0) e.g. across live migration: fall back per reading (TLFS §12.7.3).
        self.now_100ns_checked().unwrap_or_else(|_| self.hw.rdmsr(MSR_TIME_REF_COUNT))
    }

    /// The TSC page snapshot, when the page is in use.
    pub fn tsc_page(&self) -> Option<TscPage> {
        let p = self.page.as_ref()?;
        Some(TscPage {
            sequence: p.load_u32(TscPage::SEQUENCE).ok()?,
            scale: p.load_u64(TscPage::SCALE).ok()?,
            offset: p.load_u64(TscPage::OFFSET).ok()? as i64,
        })
    }
}

impl libos::time::ClockSource for ReferenceClock {
    fn now_ns(&self) -> u64 {
        self.now_100ns().saturating_mul(100)
    }
    fn name(&self) -> &'static str {
        if self.page.is_some() {
            "hyperv-tsc-page"
        } else {
            "hyperv-ref-counter"
        }
    }
}

/// The SynIC pages of one virtual processor: the message page (SIMP, 16 slots of [`MESSAGE_SIZE`]) and the event
/// flags page (SIEFP, 16 × 256 bytes of flags).
#[derive(Clone, Debug)]
pub struct Synic {
    /// SIMP page.
    pub simp: Region,
    /// SIEFP page.
    pub siefp: Region,
}

/// SINT register value (TLFS §11.8.7): vector in bits 7:0, masked bit 16, auto-EOI bit 17; other bits of `current`
/// are kept.
pub fn sint_value(current: u64, vector: u8, auto_eoi: bool) -> u64 {
    let mut v = (current & !0xff & !SINT_MASKED & !SINT_AUTO_EOI) | u64::from(vector);
    if auto_eoi {
        v |= SINT_AUTO_EOI;
    }
    v
}

impl Synic {
    /// Enables the SynIC (TLFS §11.8, in Linux `hv_synic_enable_regs` order): SIMP and SIEFP overlays, SINT `sint`
    /// unmasked on `vector` without auto-EOI, then SCONTROL. Errors: [`HvError::MissingPrivilege`] without AccessSynicRegs,
    /// [`HvError::MsrNotAccepted`] when an enable bit does not stick.
    pub fn enable(
        hw: &dyn HwAccess,
        en: &Enlightenments,
        simp: Region,
        siefp: Region,
        sint: u32,
        vector: u8,
    ) -> Result<Self, HvError> {
        if !en.has(HvPartitionPrivileges::ACCESS_SYNIC_REGS) {
            return Err(HvError::MissingPrivilege { what: "the SynIC", privilege: "AccessSynicRegs" });
        }
        for (msr, gpa) in [(MSR_SIMP, simp.gpa()), (MSR_SIEFP, siefp.gpa())] {
            let v = overlay_msr_value(hw.rdmsr(msr), gpa);
            hw.wrmsr(msr, v);
            let read = hw.rdmsr(msr);
            if read & 1 == 0 || read & !0xfff != gpa {
                return Err(HvError::MsrNotAccepted { msr, wrote: v, read });
            }
        }
        let msr = MSR_SINT0 + (sint % SINT_COUNT);
        // No auto-EOI even where the host recommends it: libos's interrupt dispatcher EOIs every device vector, and
        // a second EOI would retire another in-service interrupt.
        hw.wrmsr(msr, sint_value(hw.rdmsr(msr), vector, false));
        let sc = hw.rdmsr(MSR_SCONTROL) | 1;
        hw.wrmsr(MSR_SCONTROL, sc);
        Ok(Self { simp, siefp })
    }

    /// Byte offset of SINT `sint`'s message slot in the SIMP page.
    pub fn slot_offset(sint: u32) -> usize {
        (sint % SINT_COUNT) as usize * MESSAGE_SIZE
    }

    /// Byte offset of SINT `sint`'s event flags in the SIEFP page.
    pub fn flags_offset(sint: u32) -> usize {
        (sint % SINT_COUNT) as usize * (EVENT_FLAGS_COUNT / 8)
    }

    /// Takes the message in SINT `sint`'s slot, if any: copies it out, frees the slot (type = `HVMSG_NONE`), and,
    /// when the hypervisor flagged another message pending, writes EOM so it is delivered (TLFS §11.9.3).
    /// Errors: a shared page access failed.
    pub fn take_message(&self, hw: &dyn HwAccess, sint: u32) -> Result<Option<SynicMessage>, MemError> {
        let base = Self::slot_offset(sint);
        let ty = self.simp.load_u32(base)?;
        if ty == HVMSG_NONE {
            return Ok(None);
        }
        let mut raw = [0u8; MESSAGE_SIZE];
        self.simp.read(base, &mut raw)?;
        let msg = SynicMessage::parse(&raw);
        self.simp.store_u32(base, HVMSG_NONE)?;
        // The type store must be visible before the flags are read: the hypervisor sets MessagePending only while
        // the slot is full (TLFS §11.9.3).
        crate::mem::full_barrier();
        let mut flags = [0u8; 1];
        self.simp.read(base + 5, &mut flags)?;
        if flags[0] & MESSAGE_FLAG_PENDING != 0 {
            hw.wrmsr(MSR_EOM, 0);
        }
        Ok(Some(msg))
    }

    /// Scans and clears SINT `sint`'s event flags, calling `f` with each set flag number (bit index, which for
    /// VMBus ≥ 2.4 is a channel's relid). Flag 0 is reported too; VMBus callers ignore it.
    pub fn scan_event_flags(&self, sint: u32, mut f: impl FnMut(u32)) -> Result<(), MemError> {
        let base = Self::flags_offset(sint);
        for w in 0..EVENT_FLAGS_COUNT / 64 {
            let off = base + w * 8;
            if self.siefp.load_u64(off)? == 0 {
                continue;
            }
            let mut bits = self.siefp.swap_u64(off, 0)?;
            while bits != 0 {
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                f(w as u32 * 64 + b);
            }
        }
        Ok(())
    }
}

/// A SynIC message (TLFS §11.9, `HV_MESSAGE`): `MessageType` (u32 at 0), `PayloadSize` (u8 at 4), `MessageFlags`
/// (u8 at 5), sender/port (u64 at 8), payload (240 bytes at 16).
#[derive(Clone, PartialEq, Eq)]
pub struct SynicMessage {
    /// Message type (1 for VMBus channel messages; [`HVMSG_TIMER_EXPIRED`]; ...).
    pub message_type: u32,
    /// Payload bytes (at most 240; a larger `PayloadSize` is clamped).
    pub payload: Vec<u8>,
}

impl fmt::Debug for SynicMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SynicMessage {{ type: {:#x}, {} bytes }}", self.message_type, self.payload.len())
    }
}

impl SynicMessage {
    /// Parses a message slot; a `PayloadSize` over 240 (hostile or corrupt) is clamped to the slot.
    pub fn parse(raw: &[u8; MESSAGE_SIZE]) -> Self {
        let ty = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let size = (raw[4] as usize).min(MESSAGE_PAYLOAD_MAX);
        Self { message_type: ty, payload: raw[16..16 + size].to_vec() }
    }

    /// Encodes a message slot (what the hypervisor writes; used by test peers).
    pub fn emit(&self, pending: bool) -> [u8; MESSAGE_SIZE] {
        let mut raw = [0u8; MESSAGE_SIZE];
        let n = self.payload.len().min(MESSAGE_PAYLOAD_MAX);
        raw[0..4].copy_from_slice(&self.message_type.to_le_bytes());
        raw[4] = n as u8;
        raw[5] = if pending { MESSAGE_FLAG_PENDING } else { 0 };
        raw[16..16 + n].copy_from_slice(&self.payload[..n]);
        raw
    }
}

/// Size of `HV_INPUT_POST_MESSAGE` (bytes): connection id, reserved, message type, payload size, 240-byte payload.
pub const POST_MESSAGE_INPUT_SIZE: usize = 16 + MESSAGE_PAYLOAD_MAX;

/// Posts `payload` as a message of `message_type` to `connection_id` with HvPostMessage (TLFS §11.10.1), using
/// `input` (one page) as the hypercall input page. Returns the hypercall status. Errors: payload over 240 bytes
/// ([`HvStatus::INVALID_PARAMETER`]), shared page failures.
pub fn post_message(
    hw: &dyn HwAccess,
    input: &Region,
    connection_id: u32,
    message_type: u32,
    payload: &[u8],
) -> Result<HvStatus, HvError> {
    if payload.len() > MESSAGE_PAYLOAD_MAX {
        return Ok(HvStatus::INVALID_PARAMETER);
    }
    let mut buf = [0u8; POST_MESSAGE_INPUT_SIZE];
    buf[0..4].copy_from_slice(&connection_id.to_le_bytes());
    buf[8..12].copy_from_slice(&message_type.to_le_bytes());
    buf[12..16].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    buf[16..16 + payload.len()].copy_from_slice(payload);
    input.write(0, &buf)?;
    let r = hw.hypercall(hypercall_control(HVCALL_POST_MESSAGE, false, 0), input.gpa(), 0);
    Ok(HvStatus::from_result(r))
}

/// Signals event flag `flag` of `connection_id` with the fast HvSignalEvent hypercall (TLFS §11.10.2). Returns the
/// status.
pub fn signal_event(hw: &dyn HwAccess, connection_id: u32, flag: u16) -> HvStatus {
    let input = u64::from(connection_id) | (u64::from(flag) << 32);
    HvStatus::from_result(hw.hypercall_fast(hypercall_control(HVCALL_SIGNAL_EVENT, true, 0), input))
}

/// STIMER0_CONFIG value (TLFS §12.4.1): enable (bit 0), one-shot, auto-enable (bit 3, so writing the count arms
/// it); with `direct_vector` the timer raises that APIC vector directly (bit 12, vector in bits 11:4, needs
/// `DirectSyntheticTimers`), else it posts `HVMSG_TIMER_EXPIRED` to SINT `sint` (bits 19:16).
pub fn stimer_config(direct_vector: Option<u8>, sint: u32) -> u64 {
    let base = 1 | (1 << 3);
    match direct_vector {
        Some(v) => base | (1 << 12) | (u64::from(v) << 4),
        None => base | (u64::from(sint % SINT_COUNT) << 16),
    }
}

/// Arms synthetic timer 0 to expire at reference time `deadline_100ns` (TLFS §12.4.2: a one-shot timer's count is
/// an absolute reference time). Errors: [`HvError::MissingPrivilege`] without AccessSyntheticTimerRegs.
pub fn arm_stimer0(hw: &dyn HwAccess, en: &Enlightenments, config: u64, deadline_100ns: u64) -> Result<(), HvError> {
    if !en.has(HvPartitionPrivileges::ACCESS_SYNTHETIC_TIMER_REGS) {
        return Err(HvError::MissingPrivilege { what: "synthetic timers", privilege: "AccessSyntheticTimerRegs" });
    }
    hw.wrmsr(MSR_STIMER0_CONFIG, config);
    hw.wrmsr(MSR_STIMER0_COUNT, deadline_100ns.max(1));
    Ok(())
}

/// This virtual processor's index (MSR 0x4000_0002) when the partition may read it, else 0 (the boot processor).
pub fn vp_index(hw: &dyn HwAccess, en: &Enlightenments) -> u32 {
    if en.has(HvPartitionPrivileges::ACCESS_VP_INDEX) {
        hw.rdmsr(MSR_VP_INDEX) as u32
    } else {
        0
    }
}

/// The TSC frequency (Hz) from `HV_X64_MSR_TSC_FREQUENCY` when AccessFrequencyRegs is granted.
pub fn tsc_frequency(hw: &dyn HwAccess, en: &Enlightenments) -> Option<u64> {
    if en.has(HvPartitionPrivileges::ACCESS_FREQUENCY_REGS) {
        Some(hw.rdmsr(MSR_TSC_FREQUENCY)).filter(|&hz| hz != 0)
    } else {
        None
    }
}

/// One line for the boot log: privileges and recommendations that matter here.
pub fn describe(en: &Enlightenments) -> String {
    alloc::format!("privileges: {}; features: {}; recommendations: {}", en.privileges, en.features, en.recommendations)
}

/// Bytes of one page, for callers sizing overlay pages.
pub const OVERLAY_PAGE_SIZE: usize = PAGE_SIZE;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::mem::host::HostMemory;
    use crate::mem::Dma;
    use libos::hypervisor::{detect, HypervisorKind, RecordedCpuid};
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    /// MSRs and hypercalls recorded from a Hyper-V guest: reads come from a table, writes are logged (and stored).
    #[derive(Default)]
    pub struct RecordedHw {
        pub msrs: Mutex<BTreeMap<u32, u64>>,
        pub writes: Mutex<Vec<(u32, u64)>>,
        pub hypercalls: Mutex<Vec<(u64, u64)>>,
        pub tsc: Mutex<u64>,
        /// MSRs whose writes are ignored (a hypervisor refusing a value).
        pub read_only: Vec<u32>,
    }

    impl HwAccess for RecordedHw {
        fn rdmsr(&self, msr: u32) -> u64 {
            self.msrs.lock().unwrap().get(&msr).copied().unwrap_or(0)
        }
        fn wrmsr(&self, msr: u32, value: u64) {
            self.writes.lock().unwrap().push((msr, value));
            if !self.read_only.contains(&msr) {
                self.msrs.lock().unwrap().insert(msr, value);
            }
        }
        fn hypercall(&self, control: u64, input_gpa: u64, _output_gpa: u64) -> u64 {
            self.hypercalls.lock().unwrap().push((control, input_gpa));
            0
        }
        fn hypercall_fast(&self, control: u64, input: u64) -> u64 {
            self.hypercalls.lock().unwrap().push((control, input));
            0
        }
        fn rdtsc(&self) -> u64 {
            *self.tsc.lock().unwrap()
        }
    }

    /// Hyper-V CPUID leaves 0x4000_0000..=0x4000_0005 of an Azure Gen2 VM on a Windows Server 2022 host (build
    /// 20348): Linux logs these as `Hyper-V: privilege flags low 0xae7f, high 0x3b8030, hints 0x64e24, misc
    /// 0xe0bed7b2`.
    pub const WS2022: &[(u32, u32, [u32; 4])] = &[
        (0x1, 0, [0x000506f1, 0x00010800, 0xfeda3203, 0x178bfbff]),
        (0x4000_0000, 0, [0x4000_000c, 0x7263_694d, 0x666f_736f, 0x7648_2074]),
        (0x4000_0001, 0, [0x3123_7648, 0, 0, 0]),
        (0x4000_0002, 0, [0x4f7c, 0x000a_0000, 0, 0]),
        (0x4000_0003, 0, [0x0000_ae7f, 0x003b_8030, 0x0000_0002, 0xe0be_d7b2]),
        (0x4000_0004, 0, [0x0006_4e24, 0x0000_0fff, 0, 0]),
        (0x4000_0005, 0, [0x0000_00f0, 0x0000_0400, 0x0000_0e84, 0]),
    ];

    pub fn ws2022() -> Enlightenments {
        let cpu = RecordedCpuid { leaves: WS2022 };
        let d = detect(&cpu);
        let f = d.find(HypervisorKind::HyperV).expect("Hyper-V range");
        Enlightenments::from_cpuid(f, &cpu).expect("TLFS range")
    }

    #[test]
    fn decodes_recorded_ws2022_cpuid() {
        let en = ws2022();
        assert_eq!(en.base_leaf, 0x4000_0000);
        assert!(en.has(HvPartitionPrivileges::ACCESS_PARTITION_REFERENCE_TSC));
        assert!(en.has(HvPartitionPrivileges::POST_MESSAGES));
        assert!(en.has(HvPartitionPrivileges::SIGNAL_EVENTS));
        assert_eq!(en.check_vmbus(), Ok(()));
        assert_eq!(en.clock_kind(), Some(ClockKind::TscPage));
        assert_eq!(en.max_vps, 0xf0);
        assert!(!en.auto_eoi(), "recommendation bit 9 (DeprecateAutoEoi) is set in 0x64e24");
    }

    #[test]
    fn missing_privileges_are_named() {
        let mut en = ws2022();
        en.privileges = HvPartitionPrivileges(en.privileges.0 & !HvPartitionPrivileges::SIGNAL_EVENTS.0);
        let e = en.check_vmbus().unwrap_err();
        assert!(e.to_string().contains("SignalEvents"), "{e}");
        en.privileges = HvPartitionPrivileges(HvPartitionPrivileges::ACCESS_PARTITION_REFERENCE_COUNTER.0);
        assert_eq!(en.clock_kind(), Some(ClockKind::ReferenceCounter));
        en.privileges = HvPartitionPrivileges(0);
        assert_eq!(en.clock_kind(), None);
        let hw = RecordedHw::default();
        assert!(matches!(enable_hypercalls(&hw, &en, 1, 0x5000), Err(HvError::MissingPrivilege { .. })));
    }

    #[test]
    fn guest_os_id_is_written_before_the_hypercall_page() {
        let en = ws2022();
        let hw = RecordedHw::default();
        let id = guest_os_id(0, 1, 0);
        assert_eq!(id >> 63, 1);
        assert_eq!((id >> 56) & 0x7f, GUEST_OS_TYPE_ZIRVIUM);
        assert_eq!((id >> 16) & 0xffff_ffff, 0x100);
        enable_hypercalls(&hw, &en, id, 0x12_3000).unwrap();
        let w = hw.writes.lock().unwrap().clone();
        assert_eq!(w, vec![(MSR_GUEST_OS_ID, id), (MSR_HYPERCALL, 0x12_3001)]);
        let hw = RecordedHw { read_only: vec![MSR_HYPERCALL], ..Default::default() };
        let e = enable_hypercalls(&hw, &en, id, 0x12_3000).unwrap_err();
        assert_eq!(e, HvError::MsrNotAccepted { msr: MSR_HYPERCALL, wrote: 0x12_3001, read: 0 });
    }

    #[test]
    fn overlay_values_keep_reserved_bits() {
        assert_eq!(overlay_msr_value(0, 0xabc_d000), 0xabc_d001);
        assert_eq!(overlay_msr_value(0xffff_f002, 0x1000), 0x1003, "lock bit kept, old page dropped");
        assert_eq!(sint_value(1 << 16, 0x40, false), 0x40);
        assert_eq!(sint_value(0, 0x41, true), 0x41 | SINT_AUTO_EOI);
        assert_eq!(hypercall_control(HVCALL_SIGNAL_EVENT, true, 0), 0x1_005d);
        assert_eq!(hypercall_control(HVCALL_POST_MESSAGE, false, 3), (3 << 32) | 0x5c);
    }

    #[test]
    fn tsc_page_formula_matches_the_tlfs() {
        // A 2.5 GHz TSC: 4 TSC ticks per 100 ns... scale = 2^64 / 250 per tick (250 ticks per 100 ns).
        let scale = ((1u128 << 64) / 250) as u64;
        let p = TscPage { sequence: 3, scale, offset: -1000 };
        assert_eq!(p.reference_time(0), (-1000i64) as u64);
        assert_eq!(p.reference_time(2_500_000_000), 10_000_000 - 1000 - 1, "one second, scale rounded down");
        let hz = p.tsc_hz().unwrap();
        assert!((2_499_999_000..=2_500_001_000).contains(&hz), "{hz}");
        assert_eq!(TscPage { sequence: 1, scale: 0, offset: 0 }.tsc_hz(), None);
    }

    #[test]
    fn tsc_page_reading_and_fallback() {
        let mem = HostMemory::new();
        let page = mem.alloc(1).unwrap();
        let hw = std::sync::Arc::new(RecordedHw::default());
        hw.msrs.lock().unwrap().insert(MSR_TIME_REF_COUNT, 777);
        *hw.tsc.lock().unwrap() = 1_000_000;
        // Sequence 0: invalid page → the counter MSR.
        let (c, kind) = ReferenceClock::new(hw.clone(), ClockKind::TscPage, Some(page.clone())).unwrap();
        assert_eq!(kind, ClockKind::ReferenceCounter);
        assert_eq!(c.now_100ns(), 777);
        // A valid page (recorded from a 2.1 GHz host).
        page.store_u32(TscPage::SEQUENCE, 5).unwrap();
        page.write_u64(TscPage::SCALE, 0x0138_1b91_e8f9_2c9b).unwrap();
        page.write_u64(TscPage::OFFSET, 0xffff_fff1_9e1b_a2f0).unwrap();
        let (c, kind) = ReferenceClock::new(hw.clone(), ClockKind::TscPage, Some(page.clone())).unwrap();
        assert_eq!(kind, ClockKind::TscPage);
        let expect = TscPage { sequence: 5, scale: 0x0138_1b91_e8f9_2c9b, offset: 0xffff_fff1_9e1b_a2f0u64 as i64 }
            .reference_time(1_000_000);
        assert_eq!(c.now_100ns(), expect);
        assert_eq!(libos::time::ClockSource::name(&c), "hyperv-tsc-page");
        let w = hw.writes.lock().unwrap().clone();
        assert!(w.contains(&(MSR_REFERENCE_TSC, page.gpa() | 1)));
        // The page turning invalid later falls back per reading.
        page.store_u32(TscPage::SEQUENCE, 0).unwrap();
        assert_eq!(c.now_100ns(), 777);
    }

    #[test]
    fn synic_enable_order_and_messages() {
        let en = ws2022();
        let mem = HostMemory::new();
        let simp = mem.alloc(1).unwrap();
        let siefp = mem.alloc(1).unwrap();
        let hw = RecordedHw::default();
        hw.msrs.lock().unwrap().insert(MSR_SINT0 + 2, SINT_MASKED);
        let s = Synic::enable(&hw, &en, simp.clone(), siefp.clone(), 2, 0x30).unwrap();
        let w: Vec<u32> = hw.writes.lock().unwrap().iter().map(|(m, _)| *m).collect();
        assert_eq!(w, vec![MSR_SIMP, MSR_SIEFP, MSR_SINT0 + 2, MSR_SCONTROL]);
        assert_eq!(hw.rdmsr(MSR_SINT0 + 2), 0x30, "unmasked, vector 0x30, no auto-EOI");
        assert_eq!(hw.rdmsr(MSR_SCONTROL), 1);

        assert_eq!(s.take_message(&hw, 2).unwrap(), None);
        let m = SynicMessage { message_type: 1, payload: vec![15, 0, 0, 0, 0, 0, 0, 0, 1] };
        simp.write(Synic::slot_offset(2), &m.emit(true)).unwrap();
        assert_eq!(s.take_message(&hw, 2).unwrap(), Some(m.clone()));
        assert_eq!(simp.load_u32(Synic::slot_offset(2)).unwrap(), HVMSG_NONE);
        assert_eq!(hw.writes.lock().unwrap().last(), Some(&(MSR_EOM, 0)), "pending flag → EOM");
        // A hostile payload size is clamped to the slot.
        let mut raw = m.emit(false);
        raw[4] = 255;
        assert_eq!(SynicMessage::parse(&raw).payload.len(), MESSAGE_PAYLOAD_MAX);

        siefp.fetch_or_u64(Synic::flags_offset(2), (1 << 3) | 1).unwrap();
        siefp.fetch_or_u64(Synic::flags_offset(2) + 8, 1 << 1).unwrap();
        let mut seen = vec![];
        s.scan_event_flags(2, |b| seen.push(b)).unwrap();
        assert_eq!(seen, vec![0, 3, 65]);
        let mut again = vec![];
        s.scan_event_flags(2, |b| again.push(b)).unwrap();
        assert!(again.is_empty(), "flags are cleared when taken");
    }

    #[test]
    fn synic_refusing_the_simp_page_is_an_error() {
        let en = ws2022();
        let mem = HostMemory::new();
        let hw = RecordedHw { read_only: vec![MSR_SIMP], ..Default::default() };
        let e = Synic::enable(&hw, &en, mem.alloc(1).unwrap(), mem.alloc(1).unwrap(), 2, 0x30).unwrap_err();
        assert!(matches!(e, HvError::MsrNotAccepted { msr: MSR_SIMP, .. }), "{e}");
    }

    #[test]
    fn post_message_and_signal_event_encoding() {
        let mem = HostMemory::new();
        let input = mem.alloc(1).unwrap();
        let hw = RecordedHw::default();
        let st = post_message(&hw, &input, 4, 1, &[14, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        assert!(st.is_success());
        assert_eq!(hw.hypercalls.lock().unwrap()[0], (0x5c, input.gpa()));
        assert_eq!(input.read_u32(0).unwrap(), 4);
        assert_eq!(input.read_u32(8).unwrap(), 1);
        assert_eq!(input.read_u32(12).unwrap(), 8);
        assert_eq!(post_message(&hw, &input, 4, 1, &[0; 241]).unwrap(), HvStatus::INVALID_PARAMETER);
        assert!(signal_event(&hw, 0x2005, 0).is_success());
        assert_eq!(hw.hypercalls.lock().unwrap()[1], (0x1_005d, 0x2005));
        assert_eq!(HvStatus(0x12).to_string(), "HV_STATUS_INVALID_CONNECTION_ID (0x12)");
    }

    #[test]
    fn stimer_and_vp_index() {
        let en = ws2022();
        assert_eq!(stimer_config(None, 0), 0b1001);
        assert_eq!(stimer_config(None, 3), 0b1001 | (3 << 16));
        assert_eq!(stimer_config(Some(0xf1), 0), 0b1001 | (1 << 12) | (0xf1 << 4));
        let hw = RecordedHw::default();
        arm_stimer0(&hw, &en, stimer_config(None, 0), 12345).unwrap();
        assert_eq!(*hw.writes.lock().unwrap(), vec![(MSR_STIMER0_CONFIG, 0b1001), (MSR_STIMER0_COUNT, 12345)]);
        hw.msrs.lock().unwrap().insert(MSR_VP_INDEX, 0);
        assert_eq!(vp_index(&hw, &en), 0);
        hw.msrs.lock().unwrap().insert(MSR_TSC_FREQUENCY, 2_095_078_000);
        assert_eq!(tsc_frequency(&hw, &en), Some(2_095_078_000));
    }
}
