//! Hypervisor detection from CPUID: the hypervisor-present bit (Intel SDM Vol. 2A, CPUID leaf 01H, ECX bit 31) and
//! the hypervisor leaf ranges 0x4000_0000..=0x4001_0000 (one range per 0x100 step, as scanned by Linux
//! `arch/x86/kernel/cpu/hypervisor.c`), with the feature leaves of KVM (`Documentation/virt/kvm/x86/cpuid.rst`),
//! Xen (`xen/include/public/arch-x86/cpuid.h`) and Hyper-V (TLFS §2.4 "Feature Discovery") decoded.
//!
//! Sans-I/O: CPUID values come in through [`CpuidSource`], so the detection runs the same on recorded tables in
//! host tests and on the real `cpuid` instruction at boot. One hypervisor may present several ranges: KVM with
//! Hyper-V enlightenments puts Hyper-V at 0x4000_0000 and itself at 0x4000_0100, Xen with viridian does the same
//! with Xen at 0x4000_0100. [`detect`] records every range found, in leaf order; [`Detection::primary`] and
//! [`Detection::preferred`] choose among them.

use core::fmt;

/// A way to execute CPUID: returns `[eax, ebx, ecx, edx]` for `leaf` (EAX input) and `subleaf` (ECX input).
///
/// The boot code implements it with the `cpuid` instruction; tests use [`RecordedCpuid`]. Source: Intel SDM
/// Vol. 2A, "CPUID—CPU Identification".
pub trait CpuidSource {
    /// Registers `[eax, ebx, ecx, edx]` returned by CPUID for `leaf`/`subleaf`.
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4];
}

impl<T: CpuidSource + ?Sized> CpuidSource for &T {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        (**self).cpuid(leaf, subleaf)
    }
}

/// A CPUID table recorded from a real machine (or built from a spec), for host tests and tools.
///
/// Each entry is `(leaf, subleaf, [eax, ebx, ecx, edx])`. A leaf/subleaf that is not in the table returns all
/// zeros, which is what AMD processors and KVM return for unimplemented leaves (Intel processors instead repeat
/// the highest basic leaf; record those values explicitly when a test needs that behaviour).
#[derive(Clone, Copy, Debug)]
pub struct RecordedCpuid<'a> {
    /// The recorded `(leaf, subleaf, [eax, ebx, ecx, edx])` entries; the first match wins.
    pub leaves: &'a [(u32, u32, [u32; 4])],
}

impl CpuidSource for RecordedCpuid<'_> {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        self.leaves.iter().find(|(l, s, _)| *l == leaf && *s == subleaf).map_or([0; 4], |(_, _, regs)| *regs)
    }
}

/// CPUID leaf 01H (feature information). Source: Intel SDM Vol. 2A, Table 3-8.
pub const CPUID_FEATURE_INFO: u32 = 0x1;
/// CPUID.01H:ECX bit 31, set by hypervisors ("hypervisor present", reserved as 0 on real processors).
/// Source: Intel SDM Vol. 2A, Table 3-10 (bit 31 "Not Used", always 0 on hardware); AMD APM Vol. 3, CPUID Fn0000_0001
/// ECX bit 31 "Reserved for use by hypervisor to indicate guest status".
pub const CPUID1_ECX_HYPERVISOR: u32 = 1 << 31;
/// First hypervisor CPUID leaf (base of the first range). Source: Linux `arch/x86/kernel/cpu/hypervisor.c`.
pub const HYPERVISOR_LEAF_FIRST: u32 = 0x4000_0000;
/// Last range base scanned (inclusive). Source: Linux `hypervisor_cpuid_base()` loop bound.
pub const HYPERVISOR_LEAF_LAST: u32 = 0x4001_0000;
/// Distance between hypervisor range bases; a range spans at most 0x100 leaves.
pub const HYPERVISOR_LEAF_STEP: u32 = 0x100;
/// How many ranges a [`Detection`] records; further plausible ranges are counted in `not_recorded`.
pub const MAX_FOUND: usize = 4;
/// Offset of the "timing information" leaf (0x4000_0010 in the first range): EAX = TSC frequency in kHz,
/// EBX = local APIC bus (timer) frequency in kHz. Defined by VMware and implemented by QEMU/KVM
/// (`-cpu ...,vmware-cpuid-freq=on`, only at base 0x4000_0000). Source: Linux `arch/x86/kernel/cpu/vmware.c`
/// (`CPUID_VMWARE_FREQ_LEAF`).
pub const TIMING_LEAF_OFFSET: u32 = 0x10;

/// The hypervisor a CPUID leaf range belongs to, named by its 12-byte signature (EBX, ECX, EDX of the base leaf).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HypervisorKind {
    /// Linux KVM: `"KVMKVMKVM\0\0\0"`.
    Kvm,
    /// Xen: `"XenVMMXenVMM"`.
    Xen,
    /// Microsoft Hyper-V interface: `"Microsoft Hv"`, or KVM's own Hyper-V emulation default `"Linux KVM Hv"`.
    HyperV,
    /// VMware: `"VMwareVMware"`.
    VMware,
    /// Oracle VirtualBox: `"VBoxVBoxVBox"`.
    VirtualBox,
    /// QEMU's TCG emulator: `"TCGTCGTCGTCG"`.
    QemuTcg,
    /// Parallels: `" lrpepyh  vr"` (the registers of `"prl hyperv  "` stored byte-swapped) or `"prl hyperv  "`.
    Parallels,
    /// FreeBSD bhyve: `"bhyve bhyve "`.
    Bhyve,
    /// ACRN: `"ACRNACRNACRN"`.
    Acrn,
    /// A plausible signature this module does not know; the raw bytes are in [`Found::signature`].
    Unknown,
}

/// Known signatures, as the 12 bytes EBX‖ECX‖EDX of the range's base leaf.
const SIGNATURES: &[(&[u8; 12], HypervisorKind)] = &[
    (b"KVMKVMKVM\0\0\0", HypervisorKind::Kvm),
    (b"XenVMMXenVMM", HypervisorKind::Xen),
    (b"Microsoft Hv", HypervisorKind::HyperV),
    (b"Linux KVM Hv", HypervisorKind::HyperV),
    (b"VMwareVMware", HypervisorKind::VMware),
    (b"VBoxVBoxVBox", HypervisorKind::VirtualBox),
    (b"TCGTCGTCGTCG", HypervisorKind::QemuTcg),
    (b" lrpepyh  vr", HypervisorKind::Parallels),
    (b"prl hyperv  ", HypervisorKind::Parallels),
    (b"bhyve bhyve ", HypervisorKind::Bhyve),
    (b"ACRNACRNACRN", HypervisorKind::Acrn),
];

impl HypervisorKind {
    /// Classify a 12-byte signature (EBX‖ECX‖EDX, little-endian bytes); unknown signatures give `Unknown`.
    pub fn from_signature(signature: &[u8; 12]) -> Self {
        SIGNATURES.iter().find(|(s, _)| *s == signature).map_or(HypervisorKind::Unknown, |(_, kind)| *kind)
    }

    /// Short lowercase name used in logs and on the `platform:` boot line, e.g. `"kvm"`, `"qemu-tcg"`.
    pub const fn name(self) -> &'static str {
        match self {
            HypervisorKind::Kvm => "kvm",
            HypervisorKind::Xen => "xen",
            HypervisorKind::HyperV => "hyperv",
            HypervisorKind::VMware => "vmware",
            HypervisorKind::VirtualBox => "virtualbox",
            HypervisorKind::QemuTcg => "qemu-tcg",
            HypervisorKind::Parallels => "parallels",
            HypervisorKind::Bhyve => "bhyve",
            HypervisorKind::Acrn => "acrn",
            HypervisorKind::Unknown => "unknown",
        }
    }
}

impl fmt::Display for HypervisorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Write the names of the set bits of `bits`, comma separated; bits without a name print as `bitN`.
fn write_flag_names(f: &mut fmt::Formatter<'_>, bits: u64, names: &[(u32, &str)]) -> fmt::Result {
    if bits == 0 {
        return f.write_str("none");
    }
    let mut first = true;
    for bit in 0..64u32 {
        if bits & (1u64 << bit) == 0 {
            continue;
        }
        if !first {
            f.write_str(", ")?;
        }
        first = false;
        match names.iter().find(|(b, _)| *b == bit) {
            Some((_, name)) => f.write_str(name)?,
            None => write!(f, "bit{bit}")?,
        }
    }
    Ok(())
}

/// Declares a register-bits newtype with named constants (one per documented bit), `contains`, and a `Display`
/// that lists the set bits by name.
macro_rules! flag_set {
    (
        $(#[$meta:meta])*
        pub struct $name:ident($ty:ty) {
            $( $(#[$fmeta:meta])* const $flag:ident = $bit:literal, $text:literal; )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub struct $name(pub $ty);

        impl $name {
            $( $(#[$fmeta])* pub const $flag: Self = Self(1 << $bit); )*

            /// `(bit number, display name)` of every named bit.
            const NAMES: &'static [(u32, &'static str)] = &[$(($bit, $text)),*];

            /// The raw register bits, including bits that have no name here.
            pub const fn bits(self) -> $ty {
                self.0
            }

            /// Whether every bit set in `other` is also set in `self`.
            pub const fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }

            /// Whether no bit is set.
            pub const fn is_empty(self) -> bool {
                self.0 == 0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_flag_names(f, u64::from(self.0), Self::NAMES)
            }
        }
    };
}

flag_set! {
    /// KVM paravirtual features: EAX of leaf base+1 (`KVM_CPUID_FEATURES`).
    /// Source: Linux `Documentation/virt/kvm/x86/cpuid.rst`, `arch/x86/include/uapi/asm/kvm_para.h`.
    pub struct KvmFeatures(u32) {
        /// kvmclock on the old MSRs 0x11/0x12.
        const CLOCKSOURCE = 0, "clocksource";
        /// No delay needed on I/O port 0x80.
        const NOP_IO_DELAY = 1, "nop-io-delay";
        /// Deprecated MMU op hypercall.
        const MMU_OP = 2, "mmu-op";
        /// kvmclock on MSR_KVM_WALL_CLOCK_NEW (0x4b564d00) / MSR_KVM_SYSTEM_TIME_NEW (0x4b564d01).
        const CLOCKSOURCE2 = 3, "clocksource2";
        /// Asynchronous page faults (MSR_KVM_ASYNC_PF_EN).
        const ASYNC_PF = 4, "async-pf";
        /// Steal time accounting (MSR_KVM_STEAL_TIME).
        const STEAL_TIME = 5, "steal-time";
        /// Paravirtual end-of-interrupt (MSR_KVM_PV_EOI_EN).
        const PV_EOI = 6, "pv-eoi";
        /// Paravirtual spinlock unhalt (KVM_HC_KICK_CPU).
        const PV_UNHALT = 7, "pv-unhalt";
        /// Paravirtual TLB flush via the steal-time preempted flag.
        const PV_TLB_FLUSH = 9, "pv-tlb-flush";
        /// Async page fault delivered as a #PF VM exit for nested guests.
        const ASYNC_PF_VMEXIT = 10, "async-pf-vmexit";
        /// Paravirtual IPI hypercall (KVM_HC_SEND_IPI).
        const PV_SEND_IPI = 11, "pv-send-ipi";
        /// Host halt polling can be disabled (MSR_KVM_POLL_CONTROL).
        const POLL_CONTROL = 12, "poll-control";
        /// Paravirtual sched yield hypercall (KVM_HC_SCHED_YIELD).
        const PV_SCHED_YIELD = 13, "pv-sched-yield";
        /// Async page fault "page ready" as an interrupt (MSR_KVM_ASYNC_PF_INT / _ACK).
        const ASYNC_PF_INT = 14, "async-pf-int";
        /// Extended destination ID in MSI address bits 11:5.
        const MSI_EXT_DEST_ID = 15, "msi-ext-dest-id";
        /// KVM_HC_MAP_GPA_RANGE hypercall.
        const HC_MAP_GPA_RANGE = 16, "hc-map-gpa-range";
        /// MSR_KVM_MIGRATION_CONTROL.
        const MIGRATION_CONTROL = 17, "migration-control";
        /// The pvclock `PVCLOCK_TSC_STABLE_BIT` flag may be trusted.
        const CLOCKSOURCE_STABLE_BIT = 24, "clocksource-stable";
    }
}

flag_set! {
    /// KVM performance hints: EDX of leaf base+1. Source: Linux `Documentation/virt/kvm/x86/cpuid.rst`.
    pub struct KvmHints(u32) {
        /// vCPUs are never preempted for an unlimited time.
        const REALTIME = 0, "realtime";
    }
}

flag_set! {
    /// Xen TSC flags: EAX of leaf base+3, subleaf 0. Source: Xen `xen/include/public/arch-x86/cpuid.h` (Leaf 4).
    pub struct XenTimeFlags(u32) {
        /// RDTSC is emulated by Xen.
        const TSC_EMULATED = 0, "tsc-emulated";
        /// The host TSC is known to be reliable.
        const HOST_TSC_RELIABLE = 1, "host-tsc-reliable";
        /// The RDTSCP instruction is available.
        const RDTSCP_INSTR_AVAIL = 2, "rdtscp";
    }
}

flag_set! {
    /// Xen HVM features: EAX of leaf base+4, subleaf 0. Source: Xen `xen/include/public/arch-x86/cpuid.h` (Leaf 5).
    pub struct XenHvmFeatures(u32) {
        /// Virtualized APIC registers.
        const APIC_ACCESS_VIRT = 0, "apic-access-virt";
        /// Virtualized x2APIC accesses.
        const X2APIC_VIRT = 1, "x2apic-virt";
        /// Memory mapped from other domains has valid IOMMU entries.
        const IOMMU_MAPPINGS = 2, "iommu-mappings";
        /// EBX holds the vCPU id.
        const VCPU_ID_PRESENT = 3, "vcpu-id";
        /// ECX holds the domain id.
        const DOMID_PRESENT = 4, "domid";
        /// Extended (15-bit) destination ID in MSI / IO-APIC RTE.
        const EXT_DEST_ID = 5, "ext-dest-id";
        /// Per-vCPU event channel upcall vectors.
        const UPCALL_VECTOR = 6, "upcall-vector";
    }
}

flag_set! {
    /// Hyper-V partition privilege mask (HV_PARTITION_PRIVILEGE_MASK): EAX (bits 0..31) and EBX (bits 32..63) of
    /// leaf base+3. Source: Hyper-V TLFS §2.4.4 "Hypervisor Feature Identification", Linux `hyperv-tlfs.h`.
    pub struct HvPartitionPrivileges(u64) {
        /// AccessVpRunTimeReg.
        const ACCESS_VP_RUN_TIME_REG = 0, "vp-runtime";
        /// AccessPartitionReferenceCounter (HV_X64_MSR_TIME_REF_COUNT).
        const ACCESS_PARTITION_REFERENCE_COUNTER = 1, "ref-counter";
        /// AccessSynicRegs.
        const ACCESS_SYNIC_REGS = 2, "synic";
        /// AccessSyntheticTimerRegs.
        const ACCESS_SYNTHETIC_TIMER_REGS = 3, "synthetic-timers";
        /// AccessIntrCtrlRegs (APIC MSRs, VP assist page).
        const ACCESS_INTR_CTRL_REGS = 4, "apic-msrs";
        /// AccessHypercallMsrs (HV_X64_MSR_GUEST_OS_ID, HV_X64_MSR_HYPERCALL).
        const ACCESS_HYPERCALL_MSRS = 5, "hypercall-msrs";
        /// AccessVpIndex.
        const ACCESS_VP_INDEX = 6, "vp-index";
        /// AccessResetReg.
        const ACCESS_RESET_REG = 7, "reset";
        /// AccessStatsReg.
        const ACCESS_STATS_REG = 8, "stats";
        /// AccessPartitionReferenceTsc (reference TSC page, HV_X64_MSR_REFERENCE_TSC).
        const ACCESS_PARTITION_REFERENCE_TSC = 9, "ref-tsc";
        /// AccessGuestIdleReg.
        const ACCESS_GUEST_IDLE_REG = 10, "guest-idle";
        /// AccessFrequencyRegs (HV_X64_MSR_TSC_FREQUENCY, HV_X64_MSR_APIC_FREQUENCY).
        const ACCESS_FREQUENCY_REGS = 11, "frequency-msrs";
        /// AccessDebugRegs.
        const ACCESS_DEBUG_REGS = 12, "debug-msrs";
        /// AccessReenlightenmentControls.
        const ACCESS_REENLIGHTENMENT_CONTROLS = 13, "reenlightenment";
        /// AccessTscInvariantControls.
        const ACCESS_TSC_INVARIANT_CONTROLS = 15, "tsc-invariant";
        /// CreatePartitions (root only).
        const CREATE_PARTITIONS = 32, "create-partitions";
        /// AccessPartitionId.
        const ACCESS_PARTITION_ID = 33, "partition-id";
        /// AccessMemoryPool.
        const ACCESS_MEMORY_POOL = 34, "memory-pool";
        /// AdjustMessageBuffers.
        const ADJUST_MESSAGE_BUFFERS = 35, "adjust-message-buffers";
        /// PostMessages (HvCallPostMessage, used by VMBus).
        const POST_MESSAGES = 36, "post-messages";
        /// SignalEvents (HvCallSignalEvent, used by VMBus).
        const SIGNAL_EVENTS = 37, "signal-events";
        /// CreatePort.
        const CREATE_PORT = 38, "create-port";
        /// ConnectPort.
        const CONNECT_PORT = 39, "connect-port";
        /// AccessStats.
        const ACCESS_STATS = 40, "access-stats";
        /// Debugging.
        const DEBUGGING = 43, "debugging";
        /// CpuManagement (root only).
        const CPU_MANAGEMENT = 44, "cpu-management";
        /// EnableExtendedHypercalls.
        const ENABLE_EXTENDED_HYPERCALLS = 52, "extended-hypercalls";
        /// Isolation.
        const ISOLATION = 54, "isolation";
    }
}

flag_set! {
    /// Hyper-V hypervisor features: EDX of leaf base+3. Source: Hyper-V TLFS §2.4.4, Linux `hyperv-tlfs.h`.
    pub struct HvFeatures(u32) {
        /// MWAIT available.
        const MWAIT_AVAILABLE = 0, "mwait";
        /// Guest debugging support.
        const GUEST_DEBUGGING_AVAILABLE = 1, "guest-debugging";
        /// Performance monitor support.
        const PERFORMANCE_MONITOR_AVAILABLE = 2, "perf-monitor";
        /// Physical CPU dynamic partitioning events.
        const CPU_DYNAMIC_PARTITIONING_AVAILABLE = 3, "cpu-dynamic-partitioning";
        /// Hypercall input block via XMM registers.
        const XMM_REGISTERS_FOR_FAST_HYPERCALL_AVAILABLE = 4, "xmm-hypercall-input";
        /// Virtual guest idle state.
        const GUEST_IDLE_AVAILABLE = 5, "guest-idle-state";
        /// Querying TSC/APIC frequencies via MSRs.
        const FREQUENCY_REGS_AVAILABLE = 8, "frequency-msrs";
        /// Guest crash MSRs.
        const GUEST_CRASH_REGS_AVAILABLE = 10, "guest-crash-msrs";
        /// Debug MSRs.
        const DEBUG_REGS_AVAILABLE = 11, "debug-msrs";
        /// Hypercall output via XMM registers.
        const XMM_REGISTERS_FOR_FAST_HYPERCALL_OUTPUT_AVAILABLE = 15, "xmm-hypercall-output";
        /// Synthetic timers in direct (APIC vector) mode.
        const DIRECT_SYNTHETIC_TIMERS = 19, "stimer-direct-mode";
    }
}

flag_set! {
    /// Hyper-V implementation recommendations (HV_X64_ENLIGHTENMENT_INFORMATION): EAX of leaf base+4.
    /// Source: Hyper-V TLFS §2.4.5 "Implementation Recommendations", Linux `hyperv-tlfs.h`.
    pub struct HvRecommendations(u32) {
        /// UseHypercallForAddressSpaceSwitch.
        const USE_HYPERCALL_FOR_ADDRESS_SPACE_SWITCH = 0, "as-switch";
        /// UseHypercallForLocalFlush.
        const USE_HYPERCALL_FOR_LOCAL_FLUSH = 1, "local-tlb-flush";
        /// UseHypercallForRemoteFlush.
        const USE_HYPERCALL_FOR_REMOTE_FLUSH = 2, "remote-tlb-flush";
        /// UseApicMsrs (EOI, ICR, TPR through MSRs).
        const USE_APIC_MSRS = 3, "apic-msrs";
        /// UseMsrForReset.
        const USE_MSR_FOR_RESET = 4, "msr-reset";
        /// UseRelaxedTiming (no watchdogs on interrupt latency).
        const USE_RELAXED_TIMING = 5, "relaxed-timing";
        /// UseDmaRemapping (deprecated).
        const USE_DMA_REMAPPING = 6, "dma-remapping";
        /// UseInterruptRemapping (deprecated).
        const USE_INTERRUPT_REMAPPING = 7, "interrupt-remapping";
        /// UseX2ApicMsrs.
        const USE_X2APIC_MSRS = 8, "x2apic-msrs";
        /// DeprecateAutoEoi.
        const DEPRECATE_AUTO_EOI = 9, "deprecate-auto-eoi";
        /// UseSyntheticClusterIpi.
        const USE_SYNTHETIC_CLUSTER_IPI = 10, "cluster-ipi";
        /// UseExProcessorMasks.
        const USE_EX_PROCESSOR_MASKS = 11, "ex-processor-masks";
        /// Nested: running in a nested Hyper-V partition.
        const NESTED = 12, "nested";
        /// UseIntForMbecSystemCalls.
        const USE_INT_FOR_MBEC_SYSTEM_CALLS = 13, "int-mbec-syscalls";
        /// UseVmcsEnlightenments.
        const USE_VMCS_ENLIGHTENMENTS = 14, "enlightened-vmcs";
        /// UseSyncedTimeline.
        const USE_SYNCED_TIMELINE = 15, "synced-timeline";
        /// UseDirectLocalFlushEntire.
        const USE_DIRECT_LOCAL_FLUSH_ENTIRE = 17, "direct-local-flush-entire";
        /// NoNonArchitecturalCoreSharing.
        const NO_NON_ARCHITECTURAL_CORE_SHARING = 18, "no-non-arch-core-sharing";
    }
}

/// KVM leaf base+1 (`KVM_CPUID_FEATURES`). Source: Linux `Documentation/virt/kvm/x86/cpuid.rst`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmInfo {
    /// Paravirtual features (EAX).
    pub features: KvmFeatures,
    /// Performance hints (EDX).
    pub hints: KvmHints,
}

/// Xen version from leaf base+1: EAX[31:16] major, EAX[15:0] minor. Source: Xen `arch-x86/cpuid.h` (Leaf 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XenVersion {
    /// Major version, e.g. 4.
    pub major: u16,
    /// Minor version, e.g. 17.
    pub minor: u16,
}

/// Xen hypercall interface from leaf base+2. Source: Xen `arch-x86/cpuid.h` (Leaf 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XenHypercallInfo {
    /// Number of hypercall transfer pages (EAX); Xen guarantees at least one.
    pub pages: u32,
    /// MSR index to write the hypercall page's guest-physical address to (EBX), e.g. 0x4000_0000.
    pub msr: u32,
    /// "Features 1" (ECX), bit 0 = MMU_PT_UPDATE_PRESERVE_AD.
    pub features1: u32,
}

/// Xen time leaf base+3. Source: Xen `arch-x86/cpuid.h` (Leaf 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XenTimeInfo {
    /// TSC flags (subleaf 0 EAX).
    pub flags: XenTimeFlags,
    /// tsc_mode (subleaf 0 EBX): 0 default, 1 always emulate, 2 never emulate, 3 PVRDTSCP.
    pub tsc_mode: u32,
    /// Guest TSC frequency in kHz (subleaf 0 ECX); 0 if not reported.
    pub tsc_khz: u32,
    /// Guest TSC incarnation, i.e. migration count (subleaf 0 EDX).
    pub incarnation: u32,
    /// TSC offset (subleaf 1 EBX:EAX).
    pub tsc_offset: u64,
    /// Multiplier for TSC→ns conversion, pvclock `tsc_to_system_mul` semantics (subleaf 1 ECX).
    pub tsc_to_system_mul: u32,
    /// Shift for TSC→ns conversion, pvclock `tsc_shift` semantics (subleaf 1 EDX, low byte, signed).
    pub tsc_shift: i8,
}

/// Xen HVM leaf base+4, subleaf 0. Source: Xen `arch-x86/cpuid.h` (Leaf 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XenHvmInfo {
    /// HVM features (EAX).
    pub features: XenHvmFeatures,
    /// This vCPU's id (EBX), present when `features` has `VCPU_ID_PRESENT`.
    pub vcpu_id: Option<u32>,
    /// This domain's id (ECX), present when `features` has `DOMID_PRESENT`.
    pub domain_id: Option<u32>,
}

/// Xen leaves base+1..=base+4; each field is `None` when the range's max leaf does not include its leaf.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenInfo {
    /// Leaf base+1.
    pub version: Option<XenVersion>,
    /// Leaf base+2.
    pub hypercall: Option<XenHypercallInfo>,
    /// Leaf base+3 (subleaves 0 and 1).
    pub time: Option<XenTimeInfo>,
    /// Leaf base+4.
    pub hvm: Option<XenHvmInfo>,
}

/// The Hyper-V interface signature `"Hv#1"` (leaf base+1 EAX) that makes leaves base+2 onwards TLFS-defined.
/// Source: Hyper-V TLFS §2.4.2 "Hypervisor Interface Identification".
pub const HYPERV_INTERFACE_TLFS: [u8; 4] = *b"Hv#1";

/// Hyper-V version leaf base+2. Source: Hyper-V TLFS §2.4.3 "Hypervisor System Identity".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HyperVVersion {
    /// Build number (EAX).
    pub build: u32,
    /// Major version (EBX[31:16]).
    pub major: u16,
    /// Minor version (EBX[15:0]).
    pub minor: u16,
    /// Service pack (ECX).
    pub service_pack: u32,
    /// Service branch (EDX[31:24]).
    pub service_branch: u8,
    /// Service number (EDX[23:0]).
    pub service_number: u32,
}

/// Hyper-V feature leaf base+3. Source: Hyper-V TLFS §2.4.4 "Hypervisor Feature Identification".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HyperVFeatureLeaf {
    /// Partition privilege mask (EAX low, EBX high).
    pub privileges: HvPartitionPrivileges,
    /// Power management features (ECX), raw.
    pub power_management: u32,
    /// Miscellaneous features (EDX).
    pub features: HvFeatures,
}

/// Hyper-V recommendations leaf base+4. Source: Hyper-V TLFS §2.4.5 "Implementation Recommendations".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HyperVRecommendationLeaf {
    /// Recommended enlightenments (EAX).
    pub recommendations: HvRecommendations,
    /// Spinlock retries before notifying the hypervisor (EBX); 0xFFFF_FFFF = never notify.
    pub spinlock_retries: u32,
}

/// Hyper-V leaves base+1..=base+4. Leaves base+2 onwards are decoded only when `interface` is `"Hv#1"` and the
/// range's max leaf includes them; otherwise they are `None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HyperVInfo {
    /// Interface signature (leaf base+1 EAX as 4 bytes), `"Hv#1"` for the TLFS interface.
    pub interface: [u8; 4],
    /// Leaf base+2.
    pub version: Option<HyperVVersion>,
    /// Leaf base+3.
    pub features: Option<HyperVFeatureLeaf>,
    /// Leaf base+4.
    pub recommendations: Option<HyperVRecommendationLeaf>,
}

/// The "timing information" leaf base+0x10 (see [`TIMING_LEAF_OFFSET`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimingInfo {
    /// TSC frequency in kHz (EAX).
    pub tsc_khz: u32,
    /// Local APIC bus (timer) frequency in kHz (EBX).
    pub lapic_bus_khz: u32,
}

/// Decoded feature leaves of one range, by hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Features {
    /// No feature leaves decoded for this kind (or the max leaf does not reach them).
    None,
    /// KVM leaf base+1.
    Kvm(KvmInfo),
    /// Xen leaves base+1..=base+4.
    Xen(XenInfo),
    /// Hyper-V leaves base+1..=base+4.
    HyperV(HyperVInfo),
}

/// One hypervisor CPUID range found by [`detect`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    /// Which hypervisor the signature names.
    pub kind: HypervisorKind,
    /// The range's base leaf, 0x4000_0000 + n·0x100.
    pub base_leaf: u32,
    /// Largest leaf in the range as reported (base leaf EAX), unclamped; see [`Found::usable_max_leaf`].
    pub max_leaf: u32,
    /// Signature bytes EBX‖ECX‖EDX of the base leaf, little-endian, exactly as returned.
    pub signature: [u8; 12],
    /// Decoded feature leaves.
    pub features: Features,
    /// The timing leaf base+0x10, for KVM and VMware ranges whose max leaf includes it and which report a
    /// non-zero TSC frequency.
    pub timing: Option<TimingInfo>,
}

impl Found {
    /// The largest leaf this module reads in the range: `max_leaf` clamped to the range (base+0xFF). A `max_leaf`
    /// below the base (garbage, or EAX = 0 from older KVM, whose 2010 `cpuid.txt` documented EAX = 0 with leaf
    /// base+1 present; Linux ignores EAX for KVM) gives base+1 for KVM and base for everyone else.
    pub fn usable_max_leaf(&self) -> u32 {
        if self.max_leaf < self.base_leaf {
            if self.kind == HypervisorKind::Kvm {
                self.base_leaf + 1
            } else {
                self.base_leaf
            }
        } else {
            self.max_leaf.min(self.base_leaf + (HYPERVISOR_LEAF_STEP - 1))
        }
    }

    /// KVM features, when this is a KVM range.
    pub fn kvm(&self) -> Option<&KvmInfo> {
        match &self.features {
            Features::Kvm(info) => Some(info),
            _ => None,
        }
    }

    /// Xen leaves, when this is a Xen range.
    pub fn xen(&self) -> Option<&XenInfo> {
        match &self.features {
            Features::Xen(info) => Some(info),
            _ => None,
        }
    }

    /// Hyper-V leaves, when this is a Hyper-V range.
    pub fn hyperv(&self) -> Option<&HyperVInfo> {
        match &self.features {
            Features::HyperV(info) => Some(info),
            _ => None,
        }
    }
}

/// Writes signature bytes as text: trailing NULs dropped, printable ASCII as is, anything else as `\xNN`.
struct SignatureText<'a>(&'a [u8]);

impl fmt::Display for SignatureText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = self.0.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        for &b in &self.0[..end] {
            if (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\' {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Found {
    /// One line, e.g. `kvm (signature "KVMKVMKVM" at leaf 0x40000000, max leaf 0x40000001; features: ...)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (signature \"{}\" at leaf {:#x}, max leaf {:#x}",
            self.kind,
            SignatureText(&self.signature),
            self.base_leaf,
            self.max_leaf
        )?;
        match &self.features {
            Features::None => {}
            Features::Kvm(kvm) => {
                write!(f, "; features: {}", kvm.features)?;
                if !kvm.hints.is_empty() {
                    write!(f, "; hints: {}", kvm.hints)?;
                }
            }
            Features::Xen(xen) => {
                if let Some(v) = xen.version {
                    write!(f, "; version {}.{}", v.major, v.minor)?;
                }
                if let Some(h) = xen.hypercall {
                    write!(f, "; hypercall pages {} at MSR {:#x}", h.pages, h.msr)?;
                }
                if let Some(t) = xen.time {
                    write!(f, "; tsc mode {}, {} kHz, flags: {}", t.tsc_mode, t.tsc_khz, t.flags)?;
                }
                if let Some(hvm) = xen.hvm {
                    write!(f, "; hvm: {}", hvm.features)?;
                    if let Some(id) = hvm.vcpu_id {
                        write!(f, ", vcpu {id}")?;
                    }
                    if let Some(id) = hvm.domain_id {
                        write!(f, ", domain {id}")?;
                    }
                }
            }
            Features::HyperV(hv) => {
                write!(f, "; interface \"{}\"", SignatureText(&hv.interface))?;
                if let Some(v) = hv.version {
                    write!(f, "; version {}.{} build {}", v.major, v.minor, v.build)?;
                }
                if let Some(feat) = hv.features {
                    write!(f, "; privileges: {}; features: {}", feat.privileges, feat.features)?;
                }
                if let Some(rec) = hv.recommendations {
                    write!(f, "; recommendations: {}", rec.recommendations)?;
                }
            }
        }
        if let Some(t) = self.timing {
            write!(f, "; tsc {} kHz, lapic bus {} kHz", t.tsc_khz, t.lapic_bus_khz)?;
        }
        f.write_str(")")
    }
}

/// Result of [`detect`]: the hypervisor-present bit and every plausible hypervisor range, in ascending leaf order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Detection {
    /// CPUID.01H:ECX[31]. When clear, no range is scanned and `found` is empty.
    pub hypervisor_bit: bool,
    /// Ranges found, lowest base leaf first; `None` after the last one.
    pub found: [Option<Found>; MAX_FOUND],
    /// Plausible ranges beyond [`MAX_FOUND`] that were not recorded.
    pub not_recorded: u16,
    /// Non-zero ranges that were skipped: the signature is not printable text (e.g. Intel CPUs repeat the highest
    /// basic leaf for out-of-range leaves), or the registers repeat the previous range exactly.
    pub ignored: u16,
}

impl Detection {
    /// The recorded ranges, lowest base leaf first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Found> + '_ {
        self.found.iter().flatten()
    }

    /// The first recorded range of `kind`.
    pub fn find(&self, kind: HypervisorKind) -> Option<&Found> {
        self.iter().find(|found| found.kind == kind)
    }

    /// The hypervisor's own (native) interface: the known kind at the highest base leaf, since a hypervisor that
    /// emulates another one's interface puts the emulated range at 0x4000_0000 and its own at the next free
    /// 0x100 boundary (Xen `arch-x86/cpuid.h`; Linux picks the same way, ranking by base leaf). Falls back to the
    /// first `Unknown` range; `None` when nothing was found.
    pub fn primary(&self) -> Option<&Found> {
        self.iter().rev().find(|found| found.kind != HypervisorKind::Unknown).or_else(|| self.iter().next())
    }

    /// Like [`Detection::primary`], but only among ranges whose kind is in `available` (the platforms this image
    /// has code for; order does not matter). E.g. KVM with Hyper-V enlightenments and `available = [HyperV]`
    /// gives the Hyper-V range at 0x4000_0000.
    pub fn preferred(&self, available: &[HypervisorKind]) -> Option<&Found> {
        self.iter().rev().find(|found| available.contains(&found.kind))
    }

    /// The first timing leaf found (TSC and LAPIC bus kHz), if any range has one.
    pub fn timing(&self) -> Option<TimingInfo> {
        self.iter().find_map(|found| found.timing)
    }
}

impl fmt::Display for Detection {
    /// One line: the primary range (see [`Found`]'s `Display`), then `, also <kind> at leaf 0x...` for the others.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.hypervisor_bit {
            return f.write_str("no hypervisor (CPUID.01H:ECX[31] clear)");
        }
        let Some(primary) = self.primary() else {
            return write!(
                f,
                "unknown hypervisor (CPUID.01H:ECX[31] set, no signature in leaves {:#x}..={:#x})",
                HYPERVISOR_LEAF_FIRST, HYPERVISOR_LEAF_LAST
            );
        };
        write!(f, "{primary}")?;
        for other in self.iter().filter(|found| found.base_leaf != primary.base_leaf) {
            write!(f, ", also {} at leaf {:#x}", other.kind, other.base_leaf)?;
        }
        Ok(())
    }
}

/// The 12 signature bytes EBX‖ECX‖EDX of a base leaf, in the order software reads them as a string.
fn signature_bytes(regs: [u32; 4]) -> [u8; 12] {
    let mut signature = [0u8; 12];
    signature[0..4].copy_from_slice(&regs[1].to_le_bytes());
    signature[4..8].copy_from_slice(&regs[2].to_le_bytes());
    signature[8..12].copy_from_slice(&regs[3].to_le_bytes());
    signature
}

/// Whether an unknown signature looks like a vendor string: only printable ASCII or NUL, with at least three
/// letters or digits. Rejects leaf data that CPUs return for leaves they do not implement.
fn plausible_signature(signature: &[u8; 12]) -> bool {
    signature.iter().all(|&b| b == 0 || (0x20..=0x7e).contains(&b))
        && signature.iter().filter(|b| b.is_ascii_alphanumeric()).count() >= 3
}

/// Decodes the feature leaves of one range.
fn decode_features<C: CpuidSource + ?Sized>(cpu: &C, found: &Found) -> Features {
    let base = found.base_leaf;
    let max = found.usable_max_leaf();
    let leaf = |offset: u32, subleaf: u32| (base + offset <= max).then(|| cpu.cpuid(base + offset, subleaf));
    match found.kind {
        HypervisorKind::Kvm => match leaf(1, 0) {
            Some([eax, _, _, edx]) => Features::Kvm(KvmInfo { features: KvmFeatures(eax), hints: KvmHints(edx) }),
            None => Features::None,
        },
        HypervisorKind::Xen => Features::Xen(XenInfo {
            version: leaf(1, 0).map(|[eax, ..]| XenVersion { major: (eax >> 16) as u16, minor: eax as u16 }),
            hypercall: leaf(2, 0).map(|[eax, ebx, ecx, _]| XenHypercallInfo { pages: eax, msr: ebx, features1: ecx }),
            time: leaf(3, 0).map(|[eax, ebx, ecx, edx]| {
                let [off_lo, off_hi, mul, shift] = cpu.cpuid(base + 3, 1);
                XenTimeInfo {
                    flags: XenTimeFlags(eax),
                    tsc_mode: ebx,
                    tsc_khz: ecx,
                    incarnation: edx,
                    tsc_offset: (u64::from(off_hi) << 32) | u64::from(off_lo),
                    tsc_to_system_mul: mul,
                    tsc_shift: shift as u8 as i8,
                }
            }),
            hvm: leaf(4, 0).map(|[eax, ebx, ecx, _]| {
                let features = XenHvmFeatures(eax);
                XenHvmInfo {
                    features,
                    vcpu_id: features.contains(XenHvmFeatures::VCPU_ID_PRESENT).then_some(ebx),
                    domain_id: features.contains(XenHvmFeatures::DOMID_PRESENT).then_some(ecx),
                }
            }),
        }),
        HypervisorKind::HyperV => {
            let Some([eax, ..]) = leaf(1, 0) else {
                return Features::None;
            };
            let interface = eax.to_le_bytes();
            let tlfs = interface == HYPERV_INTERFACE_TLFS;
            let tlfs_leaf = |offset: u32| if tlfs { leaf(offset, 0) } else { None };
            Features::HyperV(HyperVInfo {
                interface,
                version: tlfs_leaf(2).map(|[eax, ebx, ecx, edx]| HyperVVersion {
                    build: eax,
                    major: (ebx >> 16) as u16,
                    minor: ebx as u16,
                    service_pack: ecx,
                    service_branch: (edx >> 24) as u8,
                    service_number: edx & 0x00ff_ffff,
                }),
                features: tlfs_leaf(3).map(|[eax, ebx, ecx, edx]| HyperVFeatureLeaf {
                    privileges: HvPartitionPrivileges((u64::from(ebx) << 32) | u64::from(eax)),
                    power_management: ecx,
                    features: HvFeatures(edx),
                }),
                recommendations: tlfs_leaf(4).map(|[eax, ebx, ..]| HyperVRecommendationLeaf {
                    recommendations: HvRecommendations(eax),
                    spinlock_retries: ebx,
                }),
            })
        }
        _ => Features::None,
    }
}

/// Reads the timing leaf of a KVM or VMware range when its max leaf includes it and it reports a TSC frequency.
fn decode_timing<C: CpuidSource + ?Sized>(cpu: &C, found: &Found) -> Option<TimingInfo> {
    if !matches!(found.kind, HypervisorKind::Kvm | HypervisorKind::VMware) {
        return None;
    }
    let leaf = found.base_leaf + TIMING_LEAF_OFFSET;
    if leaf > found.usable_max_leaf() {
        return None;
    }
    let [eax, ebx, ..] = cpu.cpuid(leaf, 0);
    (eax != 0).then_some(TimingInfo { tsc_khz: eax, lapic_bus_khz: ebx })
}

/// Detects hypervisors: reads CPUID.01H:ECX[31] and, when it is set, every range base 0x4000_0000..=0x4001_0000
/// (step 0x100), recording ranges with a known signature or a plausible unknown one (see [`Detection::ignored`]).
/// Never fails: a machine without a hypervisor gives `hypervisor_bit == false` and no ranges.
///
/// Cost: 1 + 257 CPUID executions plus up to 6 per range found (each a VM exit under a hypervisor).
pub fn detect<C: CpuidSource + ?Sized>(cpu: &C) -> Detection {
    let mut detection = Detection { hypervisor_bit: false, found: [None; MAX_FOUND], not_recorded: 0, ignored: 0 };
    let [_, _, ecx, _] = cpu.cpuid(CPUID_FEATURE_INFO, 0);
    detection.hypervisor_bit = ecx & CPUID1_ECX_HYPERVISOR != 0;
    if !detection.hypervisor_bit {
        return detection;
    }
    let mut count = 0;
    let mut previous: Option<[u32; 4]> = None;
    let mut base = HYPERVISOR_LEAF_FIRST;
    while base <= HYPERVISOR_LEAF_LAST {
        let regs = cpu.cpuid(base, 0);
        base += HYPERVISOR_LEAF_STEP;
        if regs[1..] == [0, 0, 0] {
            continue;
        }
        let signature = signature_bytes(regs);
        let kind = HypervisorKind::from_signature(&signature);
        let mirror = previous == Some(regs);
        previous = Some(regs);
        if mirror || (kind == HypervisorKind::Unknown && !plausible_signature(&signature)) {
            detection.ignored = detection.ignored.saturating_add(1);
            continue;
        }
        if count == MAX_FOUND {
            detection.not_recorded = detection.not_recorded.saturating_add(1);
            continue;
        }
        let mut found = Found {
            kind,
            base_leaf: base - HYPERVISOR_LEAF_STEP,
            max_leaf: regs[0],
            signature,
            features: Features::None,
            timing: None,
        };
        found.features = decode_features(cpu, &found);
        found.timing = decode_timing(cpu, &found);
        detection.found[count] = Some(found);
        count += 1;
    }
    detection
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::format;

    /// Registers of a base leaf: `[max_leaf, ebx, ecx, edx]` from a 12-byte signature.
    fn base_leaf(max_leaf: u32, signature: &[u8; 12]) -> [u32; 4] {
        let word = |i: usize| u32::from_le_bytes([signature[i], signature[i + 1], signature[i + 2], signature[i + 3]]);
        [max_leaf, word(0), word(4), word(8)]
    }

    /// Recorded on this project's development host under QEMU 10.0.2 `-accel kvm -cpu
    /// qemu64,+invtsc,vmware-cpuid-freq=on` (nested KVM on an AMD EPYC) with a multiboot probe printing CPUID;
    /// `vmware-cpuid-freq` raises the max leaf to 0x40000010 and fills the timing leaf.
    const QEMU_KVM: &[(u32, u32, [u32; 4])] = &[
        (0x0000_0000, 0, [0x0000_000d, 0x6874_7541, 0x444d_4163, 0x6974_6e65]),
        (0x0000_0001, 0, [0x0006_0fb1, 0x0000_0800, 0xf6f8_3203, 0x178b_fbff]),
        (0x4000_0000, 0, [0x4000_0010, 0x4b4d_564b, 0x564b_4d56, 0x0000_004d]),
        (0x4000_0001, 0, [0x0100_007b, 0, 0, 0]),
        (0x4000_0010, 0, [0x0025_5078, 0x000f_4240, 0, 0]),
        (0x8000_0000, 0, [0x8000_000a, 0x6874_7541, 0x444d_4163, 0x6974_6e65]),
        (0x8000_0007, 0, [0, 0, 0, 0x0000_0100]),
    ];

    #[test]
    fn signature_bytes_match_the_documented_kvm_registers() {
        // cpuid.rst: ebx = 0x4b4d564b, ecx = 0x564b4d56, edx = 0x4d is "KVMKVMKVM".
        assert_eq!(&signature_bytes([0, 0x4b4d_564b, 0x564b_4d56, 0x4d]), b"KVMKVMKVM\0\0\0");
        assert_eq!(base_leaf(0x4000_0001, b"KVMKVMKVM\0\0\0"), [0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x4d]);
        // Xen cpuid.h: "XenV" "MMXe" "nVMM".
        assert_eq!(base_leaf(0, b"XenVMMXenVMM")[1..], [0x566e_6558, 0x6558_4d4d, 0x4d4d_566e]);
    }

    #[test]
    fn every_known_signature_classifies() {
        for (signature, kind) in SIGNATURES {
            assert_eq!(HypervisorKind::from_signature(signature), *kind);
        }
        assert_eq!(HypervisorKind::from_signature(b"KVMKVMKVM   "), HypervisorKind::Unknown);
        assert_eq!(HypervisorKind::from_signature(b"GenuineIntel"), HypervisorKind::Unknown);
    }

    #[test]
    fn qemu_kvm_recorded() {
        let d = detect(&RecordedCpuid { leaves: QEMU_KVM });
        assert!(d.hypervisor_bit);
        assert_eq!(d.iter().count(), 1);
        let kvm = d.primary().expect("KVM range");
        assert_eq!((kvm.kind, kvm.base_leaf, kvm.max_leaf), (HypervisorKind::Kvm, 0x4000_0000, 0x4000_0010));
        let info = kvm.kvm().expect("KVM features");
        for flag in [
            KvmFeatures::CLOCKSOURCE,
            KvmFeatures::NOP_IO_DELAY,
            KvmFeatures::CLOCKSOURCE2,
            KvmFeatures::ASYNC_PF,
            KvmFeatures::STEAL_TIME,
            KvmFeatures::PV_EOI,
            KvmFeatures::CLOCKSOURCE_STABLE_BIT,
        ] {
            assert!(info.features.contains(flag), "{flag}");
        }
        assert!(!info.features.contains(KvmFeatures::PV_UNHALT));
        assert_eq!(kvm.timing, Some(TimingInfo { tsc_khz: 2_445_432, lapic_bus_khz: 1_000_000 }));
        assert_eq!(d.timing(), kvm.timing);
        assert_eq!(
            format!("{d}"),
            "kvm (signature \"KVMKVMKVM\" at leaf 0x40000000, max leaf 0x40000010; features: clocksource, \
             nop-io-delay, clocksource2, async-pf, steal-time, pv-eoi, clocksource-stable; \
             tsc 2445432 kHz, lapic bus 1000000 kHz)"
        );
    }

    #[test]
    fn kvm_host_recorded_without_timing_leaf() {
        // Recorded on the development host itself (a KVM guest): max leaf 0x40000001, so no timing leaf is read
        // even though the table has zeros there.
        let leaves = [
            (0x1, 0, [0x00a0_0f11, 0x0102_0800, 0xfffa_3203, 0x178b_fbff]),
            (0x4000_0000, 0, [0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x0000_004d]),
            (0x4000_0001, 0, [0x0100_7efb, 0, 0, 0]),
            (0x4000_0010, 0, [0x0025_5078, 0x000f_4240, 0, 0]),
        ];
        let d = detect(&RecordedCpuid { leaves: &leaves });
        let kvm = d.find(HypervisorKind::Kvm).expect("KVM");
        assert_eq!(kvm.timing, None);
        let features = kvm.kvm().expect("features").features;
        assert!(features.contains(KvmFeatures::PV_UNHALT));
        assert!(features.contains(KvmFeatures::ASYNC_PF_INT));
        assert!(!features.contains(KvmFeatures::MSI_EXT_DEST_ID));
        assert!(!features.contains(KvmFeatures::MMU_OP));
    }

    /// KVM with Hyper-V enlightenments, laid out as QEMU's `hyperv_fill_cpuids` does (Hyper-V at 0x40000000,
    /// KVM moved to 0x40000100); values chosen per TLFS §2.4, not recorded (the development host's KVM refuses
    /// `hv-*` flags).
    const KVM_WITH_HYPERV: &[(u32, u32, [u32; 4])] = &[
        (0x1, 0, [0x0006_0fb1, 0x0000_0800, 0xf6f8_3203, 0x178b_fbff]),
        (0x4000_0000, 0, [0x4000_000b, 0x7263_694d, 0x666f_736f, 0x7648_2074]),
        (0x4000_0001, 0, [0x3123_7648, 0, 0, 0]),
        (0x4000_0002, 0, [0x0000_3839, 0x000a_0000, 0, 0]),
        // privileges: ref-counter, synic, synthetic-timers, hypercall-msrs, vp-index, ref-tsc; EBX: post-messages,
        // signal-events; EDX: frequency-msrs.
        (0x4000_0003, 0, [0x0000_026e, 0x0000_0030, 0, 0x0000_0100]),
        (0x4000_0004, 0, [0x0000_0020, 0xffff_ffff, 0, 0]),
        (0x4000_0100, 0, [0x4000_0101, 0x4b4d_564b, 0x564b_4d56, 0x0000_004d]),
        (0x4000_0101, 0, [0x0100_007b, 0, 0, 0]),
    ];

    #[test]
    fn kvm_with_hyperv_enlightenments_prefers_kvm() {
        let d = detect(&RecordedCpuid { leaves: KVM_WITH_HYPERV });
        let kinds: std::vec::Vec<_> = d.iter().map(|f| (f.kind, f.base_leaf)).collect();
        assert_eq!(kinds, [(HypervisorKind::HyperV, 0x4000_0000), (HypervisorKind::Kvm, 0x4000_0100)]);
        assert_eq!(d.primary().map(|f| f.kind), Some(HypervisorKind::Kvm));
        let kvm_only = [HypervisorKind::Kvm];
        let hyperv_only = [HypervisorKind::HyperV];
        let xen_only = [HypervisorKind::Xen];
        assert_eq!(d.preferred(&kvm_only).map(|f| f.base_leaf), Some(0x4000_0100));
        assert_eq!(d.preferred(&hyperv_only).map(|f| f.base_leaf), Some(0x4000_0000));
        assert_eq!(
            d.preferred(&[HypervisorKind::HyperV, HypervisorKind::Kvm]).map(|f| f.kind),
            Some(HypervisorKind::Kvm)
        );
        assert_eq!(d.preferred(&xen_only), None);

        let hv = d.find(HypervisorKind::HyperV).and_then(Found::hyperv).expect("Hyper-V leaves");
        assert_eq!(&hv.interface, b"Hv#1");
        assert_eq!(hv.version.map(|v| (v.major, v.minor, v.build)), Some((10, 0, 0x3839)));
        let privileges = hv.features.expect("feature leaf").privileges;
        for p in [
            HvPartitionPrivileges::ACCESS_PARTITION_REFERENCE_COUNTER,
            HvPartitionPrivileges::ACCESS_SYNIC_REGS,
            HvPartitionPrivileges::ACCESS_SYNTHETIC_TIMER_REGS,
            HvPartitionPrivileges::ACCESS_HYPERCALL_MSRS,
            HvPartitionPrivileges::ACCESS_VP_INDEX,
            HvPartitionPrivileges::ACCESS_PARTITION_REFERENCE_TSC,
            HvPartitionPrivileges::POST_MESSAGES,
            HvPartitionPrivileges::SIGNAL_EVENTS,
        ] {
            assert!(privileges.contains(p), "{p}");
        }
        assert!(!privileges.contains(HvPartitionPrivileges::ACCESS_VP_RUN_TIME_REG));
        let rec = hv.recommendations.expect("recommendations");
        assert!(rec.recommendations.contains(HvRecommendations::USE_RELAXED_TIMING));
        assert_eq!(rec.spinlock_retries, u32::MAX);
        let text = format!("{d}");
        assert!(text.starts_with("kvm (signature \"KVMKVMKVM\" at leaf 0x40000100, max leaf 0x40000101;"), "{text}");
        assert!(text.ends_with(", also hyperv at leaf 0x40000000"), "{text}");
    }

    /// Xen HVM with viridian: Hyper-V at 0x40000000, Xen at 0x40000100 (Xen `cpuid.h` layout; version 4.17,
    /// one hypercall page at MSR 0x40000000, vCPU 0 of domain 7). Built from the header, not recorded.
    const XEN_VIRIDIAN: &[(u32, u32, [u32; 4])] = &[
        (0x1, 0, [0x0005_06e3, 0x0000_0800, 0xfed8_3203, 0x078b_fbff]),
        (0x4000_0000, 0, [0x4000_0006, 0x7263_694d, 0x666f_736f, 0x7648_2074]),
        (0x4000_0001, 0, [0x3123_7648, 0, 0, 0]),
        (0x4000_0003, 0, [0x0000_0262, 0, 0, 0]),
        (0x4000_0100, 0, [0x4000_0105, 0x566e_6558, 0x6558_4d4d, 0x4d4d_566e]),
        (0x4000_0101, 0, [0x0004_0011, 0, 0, 0]),
        (0x4000_0102, 0, [1, 0x4000_0000, 0, 0]),
        (0x4000_0103, 0, [0x2, 0, 2_500_000, 3]),
        (0x4000_0103, 1, [0x1000, 0x2, 0xcccc_cccc, 0xffff_ffff]),
        (0x4000_0104, 0, [0x1b, 0, 7, 0]),
    ];

    #[test]
    fn xen_hvm_with_viridian() {
        let d = detect(&RecordedCpuid { leaves: XEN_VIRIDIAN });
        assert_eq!(d.iter().count(), 2);
        let xen = d.primary().expect("primary");
        assert_eq!((xen.kind, xen.base_leaf), (HypervisorKind::Xen, 0x4000_0100));
        let info = xen.xen().expect("Xen leaves");
        assert_eq!(info.version, Some(XenVersion { major: 4, minor: 17 }));
        assert_eq!(info.hypercall, Some(XenHypercallInfo { pages: 1, msr: 0x4000_0000, features1: 0 }));
        let time = info.time.expect("time leaf");
        assert!(time.flags.contains(XenTimeFlags::HOST_TSC_RELIABLE));
        assert_eq!((time.tsc_khz, time.incarnation, time.tsc_offset), (2_500_000, 3, 0x2_0000_1000));
        assert_eq!((time.tsc_to_system_mul, time.tsc_shift), (0xcccc_cccc, -1));
        let hvm = info.hvm.expect("hvm leaf");
        // 0x1b: apic-access-virt, x2apic-virt, vcpu-id, domid.
        assert_eq!((hvm.vcpu_id, hvm.domain_id), (Some(0), Some(7)));
        assert!(hvm.features.contains(XenHvmFeatures::X2APIC_VIRT));
        let hv = d.find(HypervisorKind::HyperV).and_then(Found::hyperv).expect("viridian");
        assert!(hv
            .features
            .expect("leaf 3")
            .privileges
            .contains(HvPartitionPrivileges::ACCESS_PARTITION_REFERENCE_TSC));
        assert_eq!(
            format!("{xen}"),
            "xen (signature \"XenVMMXenVMM\" at leaf 0x40000100, max leaf 0x40000105; version 4.17; \
             hypercall pages 1 at MSR 0x40000000; tsc mode 0, 2500000 kHz, flags: host-tsc-reliable; \
             hvm: apic-access-virt, x2apic-virt, vcpu-id, domid, vcpu 0, domain 7)"
        );
        assert_eq!(d.preferred(&[HypervisorKind::HyperV]).map(|f| f.base_leaf), Some(0x4000_0000));
    }

    #[test]
    fn xen_leaves_beyond_max_are_not_read() {
        let leaves = [
            (0x1, 0, [0, 0, CPUID1_ECX_HYPERVISOR, 0]),
            (0x4000_0000, 0, [0x4000_0002, 0x566e_6558, 0x6558_4d4d, 0x4d4d_566e]),
            (0x4000_0001, 0, [0x0004_000d, 0, 0, 0]),
            (0x4000_0002, 0, [1, 0x4000_0000, 0, 0]),
            (0x4000_0003, 0, [0x7, 7, 7, 7]),
            (0x4000_0004, 0, [0x1b, 1, 2, 0]),
        ];
        let d = detect(&RecordedCpuid { leaves: &leaves });
        let info = d.primary().and_then(Found::xen).expect("Xen");
        assert_eq!(info.version, Some(XenVersion { major: 4, minor: 13 }));
        assert!(info.hypercall.is_some());
        assert_eq!((info.time, info.hvm), (None, None));
    }

    #[test]
    fn hyperv_tlfs_layout() {
        // Constructed from the TLFS §2.4 bit definitions (version 10.0 build 20348 = Windows Server 2022), not
        // recorded: the development host has no Hyper-V.
        let leaves = [
            (0x1, 0, [0x0008_06ec, 0x0002_0800, 0xfefa_3203, 0x1f8b_fbff]),
            (0x4000_0000, 0, [0x4000_000c, 0x7263_694d, 0x666f_736f, 0x7648_2074]),
            (0x4000_0001, 0, [0x3123_7648, 0, 0, 0]),
            (0x4000_0002, 0, [0x0000_4f7c, 0x000a_0000, 0, 0x0000_0367]),
            (0x4000_0003, 0, [0x0000_2e7f, 0x0010_0030, 0x0000_0002, 0x0008_0d32]),
            (0x4000_0004, 0, [0x0002_0c2c, 0xffff_ffff, 0, 0]),
        ];
        let d = detect(&RecordedCpuid { leaves: &leaves });
        let hv = d.primary().expect("Hyper-V");
        assert_eq!(hv.kind, HypervisorKind::HyperV);
        let info = hv.hyperv().expect("leaves");
        let version = info.version.expect("version");
        assert_eq!((version.major, version.minor, version.build, version.service_number), (10, 0, 20348, 0x367));
        let leaf3 = info.features.expect("leaf 3");
        assert!(leaf3.privileges.contains(HvPartitionPrivileges::ACCESS_PARTITION_REFERENCE_TSC));
        assert!(leaf3.privileges.contains(HvPartitionPrivileges::ACCESS_FREQUENCY_REGS));
        assert!(leaf3.privileges.contains(HvPartitionPrivileges::POST_MESSAGES));
        assert!(leaf3.features.contains(HvFeatures::FREQUENCY_REGS_AVAILABLE));
        assert!(leaf3.features.contains(HvFeatures::DIRECT_SYNTHETIC_TIMERS));
        let rec = info.recommendations.expect("leaf 4").recommendations;
        assert!(rec.contains(HvRecommendations::USE_APIC_MSRS));
        assert!(rec.contains(HvRecommendations::USE_RELAXED_TIMING));
        assert!(rec.contains(HvRecommendations::USE_EX_PROCESSOR_MASKS));
        assert_eq!(hv.timing, None, "0x40000010 is not a timing leaf on Hyper-V");
    }

    #[test]
    fn hyperv_without_hv1_interface_decodes_nothing_further() {
        let leaves = [
            (0x1, 0, [0, 0, CPUID1_ECX_HYPERVISOR, 0]),
            (0x4000_0000, 0, [0x4000_0005, 0x7263_694d, 0x666f_736f, 0x7648_2074]),
            (0x4000_0001, 0, [0x3023_7648, 0, 0, 0]),
            (0x4000_0003, 0, [0xffff_ffff, 0xffff_ffff, 0, 0xffff_ffff]),
        ];
        let d = detect(&RecordedCpuid { leaves: &leaves });
        let info = d.primary().and_then(Found::hyperv).expect("Hyper-V");
        assert_eq!(&info.interface, b"Hv#0");
        assert_eq!((info.version, info.features, info.recommendations), (None, None, None));
    }

    #[test]
    fn vmware_with_timing_leaf() {
        let leaves = [
            (0x1, 0, [0x0009_06ea, 0x0001_0800, 0xfffa_3203, 0x1f8b_fbff]),
            (0x4000_0000, 0, [0x4000_0010, 0x6177_4d56, 0x4d56_6572, 0x6572_6177]),
            (0x4000_0010, 0, [2_904_000, 66_000, 0, 0]),
        ];
        let d = detect(&RecordedCpuid { leaves: &leaves });
        let vmware = d.primary().expect("VMware");
        assert_eq!(vmware.kind, HypervisorKind::VMware);
        assert_eq!(vmware.timing, Some(TimingInfo { tsc_khz: 2_904_000, lapic_bus_khz: 66_000 }));
        assert_eq!(
            format!("{d}"),
            "vmware (signature \"VMwareVMware\" at leaf 0x40000000, max leaf 0x40000010; \
             tsc 2904000 kHz, lapic bus 66000 kHz)"
        );
    }

    #[test]
    fn virtualbox() {
        let leaves =
            [(0x1, 0, [0, 0, CPUID1_ECX_HYPERVISOR, 0]), (0x4000_0000, 0, base_leaf(0x4000_0000, b"VBoxVBoxVBox"))];
        let d = detect(&RecordedCpuid { leaves: &leaves });
        let vbox = d.primary().expect("VirtualBox");
        assert_eq!((vbox.kind, vbox.features), (HypervisorKind::VirtualBox, Features::None));
        assert_eq!(vbox.usable_max_leaf(), 0x4000_0000);
    }

    /// Recorded under QEMU 10.0.2 `-accel tcg -cpu qemu64` on the development host.
    const QEMU_TCG_QEMU64: &[(u32, u32, [u32; 4])] = &[
        (0x0, 0, [0x0000_000d, 0x6874_7541, 0x444d_4163, 0x6974_6e65]),
        (0x1, 0, [0x0006_0fb1, 0x0000_0800, 0x8000_2001, 0x078b_fbfd]),
        (0x4000_0000, 0, [0x4000_0001, 0x5447_4354, 0x4354_4743, 0x4743_5447]),
    ];

    #[test]
    fn qemu_tcg_recorded() {
        let d = detect(&RecordedCpuid { leaves: QEMU_TCG_QEMU64 });
        let tcg = d.primary().expect("TCG");
        assert_eq!((tcg.kind, tcg.max_leaf), (HypervisorKind::QemuTcg, 0x4000_0001));
        assert_eq!(format!("{d}"), "qemu-tcg (signature \"TCGTCGTCGTCG\" at leaf 0x40000000, max leaf 0x40000001)");
    }

    #[test]
    fn qemu_tcg_max_repeats_leaf_0xd_beyond_its_ranges() {
        // Recorded under QEMU 10.0.2 `-accel tcg -cpu max`: every leaf past the TCG range returns the data of the
        // highest basic leaf (0xd), Intel style. Those copies must be ignored, not reported as hypervisors.
        let mut leaves = std::vec![
            (0x1, 0, [0x0000_0663, 0x0000_0800, 0xf6f8_320b, 0x0fcb_fbfd]),
            (0x4000_0000, 0, [0x4000_0001, 0x5447_4354, 0x4354_4743, 0x4743_5447]),
        ];
        let mut base = 0x4000_0100;
        while base <= HYPERVISOR_LEAF_LAST {
            leaves.push((base, 0, [0x0000_021f, 0x0000_0240, 0x0000_0a88, 0]));
            base += HYPERVISOR_LEAF_STEP;
        }
        let d = detect(&RecordedCpuid { leaves: &leaves });
        assert_eq!(d.iter().count(), 1);
        assert_eq!(d.primary().map(|f| f.kind), Some(HypervisorKind::QemuTcg));
        assert_eq!(d.ignored, 256);
        assert_eq!(d.not_recorded, 0);
    }

    #[test]
    fn hypervisor_bit_set_without_signature() {
        // QEMU TCG with older machine types / other emulators: hypervisor bit set, all hypervisor leaves zero.
        let leaves = [(0x1, 0, [0x0006_0fb1, 0x0000_0800, 0x8000_2001, 0x078b_fbfd])];
        let d = detect(&RecordedCpuid { leaves: &leaves });
        assert!(d.hypervisor_bit);
        assert_eq!(d.primary(), None);
        assert_eq!(d.preferred(&[HypervisorKind::Kvm]), None);
        assert_eq!(
            format!("{d}"),
            "unknown hypervisor (CPUID.01H:ECX[31] set, no signature in leaves 0x40000000..=0x40010000)"
        );
    }

    #[test]
    fn bare_metal_does_not_scan() {
        // Hypervisor bit clear but something in 0x40000000 (an Intel CPU repeating its highest basic leaf): the
        // range must not be scanned at all.
        let leaves = [
            (0x1, 0, [0x000a_0655, 0x0010_0800, 0x7ffa_fbff, 0xbfeb_fbff]),
            (0x4000_0000, 0, base_leaf(0x4000_0001, b"KVMKVMKVM\0\0\0")),
        ];
        let d = detect(&RecordedCpuid { leaves: &leaves });
        assert!(!d.hypervisor_bit);
        assert_eq!(d.iter().count(), 0);
        assert_eq!(format!("{d}"), "no hypervisor (CPUID.01H:ECX[31] clear)");
    }

    #[test]
    fn garbage_and_unknown_signatures() {
        let leaves = [
            (0x1, 0, [0, 0, CPUID1_ECX_HYPERVISOR, 0]),
            // Non-printable: ignored.
            (0x4000_0000, 0, [0xdead_beef, 0x8765_4321, 0x0102_0304, 0xffff_ffff]),
            // Unknown but plausible, max leaf below base: recorded, raw bytes kept, nothing decoded.
            (0x4000_0100, 0, base_leaf(0x1234, b"NewHV\0\0\0\0\0\0\0")),
            // The same registers again (mirror): ignored.
            (0x4000_0200, 0, base_leaf(0x1234, b"NewHV\0\0\0\0\0\0\0")),
            // KVM with EAX = 0 (older KVM): leaf base+1 still decoded.
            (0x4000_0300, 0, base_leaf(0, b"KVMKVMKVM\0\0\0")),
            (0x4000_0301, 0, [0x9, 0, 0, 1]),
            // KVM with a max leaf far outside its range: clamped, timing leaf read from base+0x10.
            (0x4000_0400, 0, base_leaf(0xffff_ffff, b"KVMKVMKVM\0\0\0")),
            (0x4000_0410, 0, [1_000_000, 0, 0, 0]),
            // Printable but with fewer than three letters/digits: ignored.
            (0x4000_0500, 0, base_leaf(0x4000_0500, b"  --  ..  !!")),
            // A fifth plausible range does not fit.
            (0x4001_0000, 0, base_leaf(0x4001_0000, b"ACRNACRNACRN")),
        ];
        let d = detect(&RecordedCpuid { leaves: &leaves });
        assert_eq!(d.ignored, 3);
        assert_eq!(d.not_recorded, 0);
        let all: std::vec::Vec<_> = d.iter().copied().collect();
        assert_eq!(all.len(), 4);
        assert_eq!(all[0].kind, HypervisorKind::Unknown);
        assert_eq!(&all[0].signature, b"NewHV\0\0\0\0\0\0\0");
        assert_eq!(all[0].usable_max_leaf(), 0x4000_0100);
        assert_eq!(all[1].kind, HypervisorKind::Kvm);
        assert_eq!(all[1].usable_max_leaf(), 0x4000_0301);
        assert_eq!(all[1].kvm(), Some(&KvmInfo { features: KvmFeatures(0x9), hints: KvmHints::REALTIME }));
        assert_eq!(all[2].usable_max_leaf(), 0x4000_04ff);
        assert_eq!(all[2].timing, Some(TimingInfo { tsc_khz: 1_000_000, lapic_bus_khz: 0 }));
        assert_eq!(all[3].kind, HypervisorKind::Acrn);
        assert_eq!(d.primary().map(|f| f.base_leaf), Some(0x4001_0000));
        let text = format!("{}", all[1]);
        assert_eq!(
            text,
            "kvm (signature \"KVMKVMKVM\" at leaf 0x40000300, max leaf 0x0; features: clocksource, clocksource2; \
             hints: realtime)"
        );
        let unknown = format!("{}", all[0]);
        assert_eq!(unknown, "unknown (signature \"NewHV\" at leaf 0x40000100, max leaf 0x1234)");
    }

    #[test]
    fn more_ranges_than_capacity_are_counted() {
        let names: [&[u8; 12]; 6] =
            [b"HypervisorA ", b"HypervisorB ", b"HypervisorC ", b"HypervisorD ", b"HypervisorE ", b"HypervisorF "];
        let mut leaves = std::vec![(0x1, 0, [0, 0, CPUID1_ECX_HYPERVISOR, 0])];
        for (i, name) in names.iter().enumerate() {
            let base = HYPERVISOR_LEAF_FIRST + i as u32 * HYPERVISOR_LEAF_STEP;
            leaves.push((base, 0, base_leaf(base, name)));
        }
        let d = detect(&RecordedCpuid { leaves: &leaves });
        assert_eq!(d.iter().count(), MAX_FOUND);
        assert_eq!(d.not_recorded, 2);
        assert_eq!(d.primary().map(|f| f.base_leaf), Some(HYPERVISOR_LEAF_FIRST), "first unknown when none known");
    }

    #[test]
    fn parallels_and_others_by_signature() {
        for (signature, kind) in [
            (b" lrpepyh  vr", HypervisorKind::Parallels),
            (b"bhyve bhyve ", HypervisorKind::Bhyve),
            (b"ACRNACRNACRN", HypervisorKind::Acrn),
            (b"Linux KVM Hv", HypervisorKind::HyperV),
        ] {
            let leaves =
                [(0x1, 0, [0, 0, CPUID1_ECX_HYPERVISOR, 0]), (0x4000_0000, 0, base_leaf(0x4000_0001, signature))];
            let d = detect(&RecordedCpuid { leaves: &leaves });
            assert_eq!(d.primary().map(|f| f.kind), Some(kind));
        }
    }

    #[test]
    fn signature_text_escapes() {
        assert_eq!(format!("{}", SignatureText(b" lrpepyh  vr")), " lrpepyh  vr");
        assert_eq!(format!("{}", SignatureText(b"a\"b\\c\x01\0d\0\0")), "a\\x22b\\x5cc\\x01\\x00d");
        assert_eq!(format!("{}", SignatureText(&[0; 12])), "");
    }

    #[test]
    fn flag_display_names_unknown_bits() {
        assert_eq!(format!("{}", KvmFeatures(0)), "none");
        assert_eq!(format!("{}", KvmFeatures((1 << 3) | (1 << 8) | (1 << 31))), "clocksource2, bit8, bit31");
        assert_eq!(
            format!(
                "{}",
                HvPartitionPrivileges(
                    HvPartitionPrivileges::ACCESS_VP_INDEX.0 | HvPartitionPrivileges::POST_MESSAGES.0
                )
            ),
            "vp-index, post-messages"
        );
    }
}
