//! Hyper-V's leaves base+1..=base+4: the interface signature (`"Hv#1"`), version, partition privileges and
//! features, implementation recommendations. Also presented by KVM (`hv-*` enlightenments) and Xen (viridian).
//! Source: Hyper-V TLFS §2.4 "Feature Discovery", Linux `hyperv-tlfs.h`.
#![forbid(unsafe_code)]

use super::signature::SignatureText;
use super::write_flag_names;
use core::fmt;

/// Hyper-V partition privilege mask (HV_PARTITION_PRIVILEGE_MASK): EAX (bits 0..31) and EBX (bits 32..63) of
/// leaf base+3; bits without a constant are kept.
/// Source: Hyper-V TLFS §2.4.4 "Hypervisor Feature Identification", Linux `hyperv-tlfs.h`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HvPartitionPrivileges(pub u64);

bitflags::bitflags! {
    impl HvPartitionPrivileges: u64 {
        /// AccessVpRunTimeReg.
        const ACCESS_VP_RUN_TIME_REG = 1 << 0;
        /// AccessPartitionReferenceCounter (HV_X64_MSR_TIME_REF_COUNT).
        const ACCESS_PARTITION_REFERENCE_COUNTER = 1 << 1;
        /// AccessSynicRegs.
        const ACCESS_SYNIC_REGS = 1 << 2;
        /// AccessSyntheticTimerRegs.
        const ACCESS_SYNTHETIC_TIMER_REGS = 1 << 3;
        /// AccessIntrCtrlRegs (APIC MSRs, VP assist page).
        const ACCESS_INTR_CTRL_REGS = 1 << 4;
        /// AccessHypercallMsrs (HV_X64_MSR_GUEST_OS_ID, HV_X64_MSR_HYPERCALL).
        const ACCESS_HYPERCALL_MSRS = 1 << 5;
        /// AccessVpIndex.
        const ACCESS_VP_INDEX = 1 << 6;
        /// AccessResetReg.
        const ACCESS_RESET_REG = 1 << 7;
        /// AccessStatsReg.
        const ACCESS_STATS_REG = 1 << 8;
        /// AccessPartitionReferenceTsc (reference TSC page, HV_X64_MSR_REFERENCE_TSC).
        const ACCESS_PARTITION_REFERENCE_TSC = 1 << 9;
        /// AccessGuestIdleReg.
        const ACCESS_GUEST_IDLE_REG = 1 << 10;
        /// AccessFrequencyRegs (HV_X64_MSR_TSC_FREQUENCY, HV_X64_MSR_APIC_FREQUENCY).
        const ACCESS_FREQUENCY_REGS = 1 << 11;
        /// AccessDebugRegs.
        const ACCESS_DEBUG_REGS = 1 << 12;
        /// AccessReenlightenmentControls.
        const ACCESS_REENLIGHTENMENT_CONTROLS = 1 << 13;
        /// AccessTscInvariantControls.
        const ACCESS_TSC_INVARIANT_CONTROLS = 1 << 15;
        /// CreatePartitions (root only).
        const CREATE_PARTITIONS = 1 << 32;
        /// AccessPartitionId.
        const ACCESS_PARTITION_ID = 1 << 33;
        /// AccessMemoryPool.
        const ACCESS_MEMORY_POOL = 1 << 34;
        /// AdjustMessageBuffers.
        const ADJUST_MESSAGE_BUFFERS = 1 << 35;
        /// PostMessages (HvCallPostMessage, used by VMBus).
        const POST_MESSAGES = 1 << 36;
        /// SignalEvents (HvCallSignalEvent, used by VMBus).
        const SIGNAL_EVENTS = 1 << 37;
        /// CreatePort.
        const CREATE_PORT = 1 << 38;
        /// ConnectPort.
        const CONNECT_PORT = 1 << 39;
        /// AccessStats.
        const ACCESS_STATS = 1 << 40;
        /// Debugging.
        const DEBUGGING = 1 << 43;
        /// CpuManagement (root only).
        const CPU_MANAGEMENT = 1 << 44;
        /// EnableExtendedHypercalls.
        const ENABLE_EXTENDED_HYPERCALLS = 1 << 52;
        /// Isolation.
        const ISOLATION = 1 << 54;
        // A register: every bit may be set by a newer hypervisor.
        const _ = !0;
    }
}

impl HvPartitionPrivileges {
    /// Boot-log names of the documented bits.
    const NAMES: &'static [(Self, &'static str)] = &[
        (Self::ACCESS_VP_RUN_TIME_REG, "vp-runtime"),
        (Self::ACCESS_PARTITION_REFERENCE_COUNTER, "ref-counter"),
        (Self::ACCESS_SYNIC_REGS, "synic"),
        (Self::ACCESS_SYNTHETIC_TIMER_REGS, "synthetic-timers"),
        (Self::ACCESS_INTR_CTRL_REGS, "apic-msrs"),
        (Self::ACCESS_HYPERCALL_MSRS, "hypercall-msrs"),
        (Self::ACCESS_VP_INDEX, "vp-index"),
        (Self::ACCESS_RESET_REG, "reset"),
        (Self::ACCESS_STATS_REG, "stats"),
        (Self::ACCESS_PARTITION_REFERENCE_TSC, "ref-tsc"),
        (Self::ACCESS_GUEST_IDLE_REG, "guest-idle"),
        (Self::ACCESS_FREQUENCY_REGS, "frequency-msrs"),
        (Self::ACCESS_DEBUG_REGS, "debug-msrs"),
        (Self::ACCESS_REENLIGHTENMENT_CONTROLS, "reenlightenment"),
        (Self::ACCESS_TSC_INVARIANT_CONTROLS, "tsc-invariant"),
        (Self::CREATE_PARTITIONS, "create-partitions"),
        (Self::ACCESS_PARTITION_ID, "partition-id"),
        (Self::ACCESS_MEMORY_POOL, "memory-pool"),
        (Self::ADJUST_MESSAGE_BUFFERS, "adjust-message-buffers"),
        (Self::POST_MESSAGES, "post-messages"),
        (Self::SIGNAL_EVENTS, "signal-events"),
        (Self::CREATE_PORT, "create-port"),
        (Self::CONNECT_PORT, "connect-port"),
        (Self::ACCESS_STATS, "access-stats"),
        (Self::DEBUGGING, "debugging"),
        (Self::CPU_MANAGEMENT, "cpu-management"),
        (Self::ENABLE_EXTENDED_HYPERCALLS, "extended-hypercalls"),
        (Self::ISOLATION, "isolation"),
    ];
}

impl fmt::Display for HvPartitionPrivileges {
    /// The set bits by name, comma separated (`bitN` for unnamed bits, `none` when empty).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_flag_names(f, self, Self::NAMES)
    }
}

/// Hyper-V hypervisor features: EDX of leaf base+3; bits without a constant are kept.
/// Source: Hyper-V TLFS §2.4.4, Linux `hyperv-tlfs.h`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HvFeatures(pub u32);

bitflags::bitflags! {
    impl HvFeatures: u32 {
        /// MWAIT available.
        const MWAIT_AVAILABLE = 1 << 0;
        /// Guest debugging support.
        const GUEST_DEBUGGING_AVAILABLE = 1 << 1;
        /// Performance monitor support.
        const PERFORMANCE_MONITOR_AVAILABLE = 1 << 2;
        /// Physical CPU dynamic partitioning events.
        const CPU_DYNAMIC_PARTITIONING_AVAILABLE = 1 << 3;
        /// Hypercall input block via XMM registers.
        const XMM_REGISTERS_FOR_FAST_HYPERCALL_AVAILABLE = 1 << 4;
        /// Virtual guest idle state.
        const GUEST_IDLE_AVAILABLE = 1 << 5;
        /// Querying TSC/APIC frequencies via MSRs.
        const FREQUENCY_REGS_AVAILABLE = 1 << 8;
        /// Guest crash MSRs.
        const GUEST_CRASH_REGS_AVAILABLE = 1 << 10;
        /// Debug MSRs.
        const DEBUG_REGS_AVAILABLE = 1 << 11;
        /// Hypercall output via XMM registers.
        const XMM_REGISTERS_FOR_FAST_HYPERCALL_OUTPUT_AVAILABLE = 1 << 15;
        /// Synthetic timers in direct (APIC vector) mode.
        const DIRECT_SYNTHETIC_TIMERS = 1 << 19;
        // A register: every bit may be set by a newer hypervisor.
        const _ = !0;
    }
}

impl HvFeatures {
    /// Boot-log names of the documented bits.
    const NAMES: &'static [(Self, &'static str)] = &[
        (Self::MWAIT_AVAILABLE, "mwait"),
        (Self::GUEST_DEBUGGING_AVAILABLE, "guest-debugging"),
        (Self::PERFORMANCE_MONITOR_AVAILABLE, "perf-monitor"),
        (Self::CPU_DYNAMIC_PARTITIONING_AVAILABLE, "cpu-dynamic-partitioning"),
        (Self::XMM_REGISTERS_FOR_FAST_HYPERCALL_AVAILABLE, "xmm-hypercall-input"),
        (Self::GUEST_IDLE_AVAILABLE, "guest-idle-state"),
        (Self::FREQUENCY_REGS_AVAILABLE, "frequency-msrs"),
        (Self::GUEST_CRASH_REGS_AVAILABLE, "guest-crash-msrs"),
        (Self::DEBUG_REGS_AVAILABLE, "debug-msrs"),
        (Self::XMM_REGISTERS_FOR_FAST_HYPERCALL_OUTPUT_AVAILABLE, "xmm-hypercall-output"),
        (Self::DIRECT_SYNTHETIC_TIMERS, "stimer-direct-mode"),
    ];
}

impl fmt::Display for HvFeatures {
    /// The set bits by name, comma separated (`bitN` for unnamed bits, `none` when empty).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_flag_names(f, self, Self::NAMES)
    }
}

/// Hyper-V implementation recommendations (HV_X64_ENLIGHTENMENT_INFORMATION): EAX of leaf base+4; bits without
/// a constant are kept. Source: Hyper-V TLFS §2.4.5 "Implementation Recommendations", Linux `hyperv-tlfs.h`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HvRecommendations(pub u32);

bitflags::bitflags! {
    impl HvRecommendations: u32 {
        /// UseHypercallForAddressSpaceSwitch.
        const USE_HYPERCALL_FOR_ADDRESS_SPACE_SWITCH = 1 << 0;
        /// UseHypercallForLocalFlush.
        const USE_HYPERCALL_FOR_LOCAL_FLUSH = 1 << 1;
        /// UseHypercallForRemoteFlush.
        const USE_HYPERCALL_FOR_REMOTE_FLUSH = 1 << 2;
        /// UseApicMsrs (EOI, ICR, TPR through MSRs).
        const USE_APIC_MSRS = 1 << 3;
        /// UseMsrForReset.
        const USE_MSR_FOR_RESET = 1 << 4;
        /// UseRelaxedTiming (no watchdogs on interrupt latency).
        const USE_RELAXED_TIMING = 1 << 5;
        /// UseDmaRemapping (deprecated).
        const USE_DMA_REMAPPING = 1 << 6;
        /// UseInterruptRemapping (deprecated).
        const USE_INTERRUPT_REMAPPING = 1 << 7;
        /// UseX2ApicMsrs.
        const USE_X2APIC_MSRS = 1 << 8;
        /// DeprecateAutoEoi.
        const DEPRECATE_AUTO_EOI = 1 << 9;
        /// UseSyntheticClusterIpi.
        const USE_SYNTHETIC_CLUSTER_IPI = 1 << 10;
        /// UseExProcessorMasks.
        const USE_EX_PROCESSOR_MASKS = 1 << 11;
        /// Nested: running in a nested Hyper-V partition.
        const NESTED = 1 << 12;
        /// UseIntForMbecSystemCalls.
        const USE_INT_FOR_MBEC_SYSTEM_CALLS = 1 << 13;
        /// UseVmcsEnlightenments.
        const USE_VMCS_ENLIGHTENMENTS = 1 << 14;
        /// UseSyncedTimeline.
        const USE_SYNCED_TIMELINE = 1 << 15;
        /// UseDirectLocalFlushEntire.
        const USE_DIRECT_LOCAL_FLUSH_ENTIRE = 1 << 17;
        /// NoNonArchitecturalCoreSharing.
        const NO_NON_ARCHITECTURAL_CORE_SHARING = 1 << 18;
        // A register: every bit may be set by a newer hypervisor.
        const _ = !0;
    }
}

impl HvRecommendations {
    /// Boot-log names of the documented bits.
    const NAMES: &'static [(Self, &'static str)] = &[
        (Self::USE_HYPERCALL_FOR_ADDRESS_SPACE_SWITCH, "as-switch"),
        (Self::USE_HYPERCALL_FOR_LOCAL_FLUSH, "local-tlb-flush"),
        (Self::USE_HYPERCALL_FOR_REMOTE_FLUSH, "remote-tlb-flush"),
        (Self::USE_APIC_MSRS, "apic-msrs"),
        (Self::USE_MSR_FOR_RESET, "msr-reset"),
        (Self::USE_RELAXED_TIMING, "relaxed-timing"),
        (Self::USE_DMA_REMAPPING, "dma-remapping"),
        (Self::USE_INTERRUPT_REMAPPING, "interrupt-remapping"),
        (Self::USE_X2APIC_MSRS, "x2apic-msrs"),
        (Self::DEPRECATE_AUTO_EOI, "deprecate-auto-eoi"),
        (Self::USE_SYNTHETIC_CLUSTER_IPI, "cluster-ipi"),
        (Self::USE_EX_PROCESSOR_MASKS, "ex-processor-masks"),
        (Self::NESTED, "nested"),
        (Self::USE_INT_FOR_MBEC_SYSTEM_CALLS, "int-mbec-syscalls"),
        (Self::USE_VMCS_ENLIGHTENMENTS, "enlightened-vmcs"),
        (Self::USE_SYNCED_TIMELINE, "synced-timeline"),
        (Self::USE_DIRECT_LOCAL_FLUSH_ENTIRE, "direct-local-flush-entire"),
        (Self::NO_NON_ARCHITECTURAL_CORE_SHARING, "no-non-arch-core-sharing"),
    ];
}

impl fmt::Display for HvRecommendations {
    /// The set bits by name, comma separated (`bitN` for unnamed bits, `none` when empty).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_flag_names(f, self, Self::NAMES)
    }
}

/// The Hyper-V interface signature `"Hv#1"` (leaf base+1 EAX) that makes leaves base+2 onwards TLFS-defined.
/// Source: Hyper-V TLFS §2.4.2 "Hypervisor Interface Identification".
pub const HYPERV_INTERFACE_TLFS: [u8; 4] = *b"Hv#1";

/// Hyper-V version leaf base+2. Source: Hyper-V TLFS §2.4.3 "Hypervisor System Identity".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HyperVVersion {
    /// Build number (EAX).
    pub build: u32,
    /// Major version (EBX\[31:16\]).
    pub major: u16,
    /// Minor version (EBX\[15:0\]).
    pub minor: u16,
    /// Service pack (ECX).
    pub service_pack: u32,
    /// Service branch (EDX\[31:24\]).
    pub service_branch: u8,
    /// Service number (EDX\[23:0\]).
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

impl HyperVInfo {
    /// Decodes leaves base+1..=base+4 from `leaf(offset, subleaf)` (which returns `None` beyond the range's max
    /// leaf); `None` when the range has no leaf base+1.
    pub(super) fn decode(leaf: impl Fn(u32, u32) -> Option<[u32; 4]>) -> Option<Self> {
        let [eax, ..] = leaf(1, 0)?;
        let interface = eax.to_le_bytes();
        let tlfs = interface == HYPERV_INTERFACE_TLFS;
        let tlfs_leaf = |offset: u32| if tlfs { leaf(offset, 0) } else { None };
        Some(HyperVInfo {
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

    /// The boot-log part after the signature: interface, then version, privileges/features and recommendations
    /// when present.
    pub(super) fn write_summary(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "; interface \"{}\"", SignatureText(&self.interface))?;
        if let Some(v) = self.version {
            write!(f, "; version {}.{} build {}", v.major, v.minor, v.build)?;
        }
        if let Some(feat) = self.features {
            write!(f, "; privileges: {}; features: {}", feat.privileges, feat.features)?;
        }
        if let Some(rec) = self.recommendations {
            write!(f, "; recommendations: {}", rec.recommendations)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::hypervisor::{detect, Found, HypervisorKind, RecordedCpuid, CPUID1_ECX_HYPERVISOR};
    use std::format;

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
    fn flag_display_names_unknown_bits() {
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
