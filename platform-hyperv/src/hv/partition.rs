//! The partition as the TLFS describes it to a guest: what it may use (the Hyper-V CPUID leaves, §2.4, decoded
//! by libos), the guest OS identity it must announce before anything else (§3.13), its virtual processor index
//! (§7.8) and the frequency MSRs (§2.4.4).
#![forbid(unsafe_code)]

use super::clock::ClockKind;
use super::{HvError, HwAccess};
use alloc::string::String;
use libos::hypervisor::{CpuidSource, Found, HvFeatures, HvPartitionPrivileges, HvRecommendations};

/// `HV_X64_MSR_GUEST_OS_ID` (TLFS §3.13): must be non-zero before the hypercall page is enabled.
pub const MSR_GUEST_OS_ID: u32 = 0x4000_0000;
/// `HV_X64_MSR_VP_INDEX` (TLFS §7.8): this virtual processor's index, used as `target_vp` in VMBus messages.
pub const MSR_VP_INDEX: u32 = 0x4000_0002;
/// `HV_X64_MSR_TSC_FREQUENCY` (TLFS §2.4.4, AccessFrequencyRegs): TSC frequency (Hz).
pub const MSR_TSC_FREQUENCY: u32 = 0x4000_0022;
/// `HV_X64_MSR_APIC_FREQUENCY`: LAPIC timer frequency (Hz).
pub const MSR_APIC_FREQUENCY: u32 = 0x4000_0023;

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
    /// [`super::Synic::enable`] never uses auto-EOI because libos EOIs every vector itself.
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

#[cfg(test)]
mod tests {
    use super::super::testing::{ws2022, RecordedHw};
    use super::*;
    use crate::hv::hypercall::enable_hypercalls;

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
    fn decodes_the_nested_hosts_kvm_cpuid() {
        use super::super::testing::qemu_kvm;
        let en = qemu_kvm();
        assert_eq!(en.base_leaf, 0x4000_0000);
        assert_eq!(en.check_vmbus(), Ok(()));
        assert_eq!(en.clock_kind(), Some(ClockKind::TscPage));
        assert!(en.has(HvPartitionPrivileges::ACCESS_SYNTHETIC_TIMER_REGS));
        assert!(en.features.contains(libos::hypervisor::HvFeatures::DIRECT_SYNTHETIC_TIMERS));
        assert_eq!(en.max_vps, 0xffff_ffff, "KVM reports no limit");
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
    fn vp_index_and_tsc_frequency() {
        let en = ws2022();
        let hw = RecordedHw::default();
        hw.msrs.lock().unwrap().insert(MSR_VP_INDEX, 0);
        assert_eq!(vp_index(&hw, &en), 0);
        hw.msrs.lock().unwrap().insert(MSR_TSC_FREQUENCY, 2_095_078_000);
        assert_eq!(tsc_frequency(&hw, &en), Some(2_095_078_000));
    }
}
