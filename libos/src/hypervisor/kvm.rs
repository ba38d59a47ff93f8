//! KVM's feature leaf base+1 (`KVM_CPUID_FEATURES`): paravirtual features in EAX, performance hints in EDX.
//! Source: Linux `Documentation/virt/kvm/x86/cpuid.rst`, `arch/x86/include/uapi/asm/kvm_para.h`.
#![forbid(unsafe_code)]

use super::write_flag_names;
use core::fmt;

/// KVM paravirtual features: EAX of leaf base+1 (`KVM_CPUID_FEATURES`); bits without a constant are kept.
/// Source: Linux `Documentation/virt/kvm/x86/cpuid.rst`, `arch/x86/include/uapi/asm/kvm_para.h`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KvmFeatures(pub u32);

bitflags::bitflags! {
    impl KvmFeatures: u32 {
        /// kvmclock on the old MSRs 0x11/0x12.
        const CLOCKSOURCE = 1 << 0;
        /// No delay needed on I/O port 0x80.
        const NOP_IO_DELAY = 1 << 1;
        /// Deprecated MMU op hypercall.
        const MMU_OP = 1 << 2;
        /// kvmclock on MSR_KVM_WALL_CLOCK_NEW (0x4b564d00) / MSR_KVM_SYSTEM_TIME_NEW (0x4b564d01).
        const CLOCKSOURCE2 = 1 << 3;
        /// Asynchronous page faults (MSR_KVM_ASYNC_PF_EN).
        const ASYNC_PF = 1 << 4;
        /// Steal time accounting (MSR_KVM_STEAL_TIME).
        const STEAL_TIME = 1 << 5;
        /// Paravirtual end-of-interrupt (MSR_KVM_PV_EOI_EN).
        const PV_EOI = 1 << 6;
        /// Paravirtual spinlock unhalt (KVM_HC_KICK_CPU).
        const PV_UNHALT = 1 << 7;
        /// Paravirtual TLB flush via the steal-time preempted flag.
        const PV_TLB_FLUSH = 1 << 9;
        /// Async page fault delivered as a #PF VM exit for nested guests.
        const ASYNC_PF_VMEXIT = 1 << 10;
        /// Paravirtual IPI hypercall (KVM_HC_SEND_IPI).
        const PV_SEND_IPI = 1 << 11;
        /// Host halt polling can be disabled (MSR_KVM_POLL_CONTROL).
        const POLL_CONTROL = 1 << 12;
        /// Paravirtual sched yield hypercall (KVM_HC_SCHED_YIELD).
        const PV_SCHED_YIELD = 1 << 13;
        /// Async page fault "page ready" as an interrupt (MSR_KVM_ASYNC_PF_INT / _ACK).
        const ASYNC_PF_INT = 1 << 14;
        /// Extended destination ID in MSI address bits 11:5.
        const MSI_EXT_DEST_ID = 1 << 15;
        /// KVM_HC_MAP_GPA_RANGE hypercall.
        const HC_MAP_GPA_RANGE = 1 << 16;
        /// MSR_KVM_MIGRATION_CONTROL.
        const MIGRATION_CONTROL = 1 << 17;
        /// The pvclock `PVCLOCK_TSC_STABLE_BIT` flag may be trusted.
        const CLOCKSOURCE_STABLE_BIT = 1 << 24;
        // A register: every bit may be set by a newer KVM.
        const _ = !0;
    }
}

impl KvmFeatures {
    /// Boot-log names of the documented bits.
    const NAMES: &'static [(Self, &'static str)] = &[
        (Self::CLOCKSOURCE, "clocksource"),
        (Self::NOP_IO_DELAY, "nop-io-delay"),
        (Self::MMU_OP, "mmu-op"),
        (Self::CLOCKSOURCE2, "clocksource2"),
        (Self::ASYNC_PF, "async-pf"),
        (Self::STEAL_TIME, "steal-time"),
        (Self::PV_EOI, "pv-eoi"),
        (Self::PV_UNHALT, "pv-unhalt"),
        (Self::PV_TLB_FLUSH, "pv-tlb-flush"),
        (Self::ASYNC_PF_VMEXIT, "async-pf-vmexit"),
        (Self::PV_SEND_IPI, "pv-send-ipi"),
        (Self::POLL_CONTROL, "poll-control"),
        (Self::PV_SCHED_YIELD, "pv-sched-yield"),
        (Self::ASYNC_PF_INT, "async-pf-int"),
        (Self::MSI_EXT_DEST_ID, "msi-ext-dest-id"),
        (Self::HC_MAP_GPA_RANGE, "hc-map-gpa-range"),
        (Self::MIGRATION_CONTROL, "migration-control"),
        (Self::CLOCKSOURCE_STABLE_BIT, "clocksource-stable"),
    ];
}

impl fmt::Display for KvmFeatures {
    /// The set bits by name, comma separated (`bitN` for unnamed bits, `none` when empty).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_flag_names(f, self, Self::NAMES)
    }
}

/// KVM performance hints: EDX of leaf base+1; bits without a constant are kept.
/// Source: Linux `Documentation/virt/kvm/x86/cpuid.rst`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KvmHints(pub u32);

bitflags::bitflags! {
    impl KvmHints: u32 {
        /// vCPUs are never preempted for an unlimited time.
        const REALTIME = 1 << 0;
        // A register: every bit may be set by a newer KVM.
        const _ = !0;
    }
}

impl KvmHints {
    /// Boot-log names of the documented bits.
    const NAMES: &'static [(Self, &'static str)] = &[(Self::REALTIME, "realtime")];
}

impl fmt::Display for KvmHints {
    /// The set bits by name, comma separated (`bitN` for unnamed bits, `none` when empty).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_flag_names(f, self, Self::NAMES)
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

impl KvmInfo {
    /// Decodes leaf base+1 from `leaf(offset, subleaf)` (which returns `None` beyond the range's max leaf);
    /// `None` when the range has no leaf base+1.
    pub(super) fn decode(leaf: impl Fn(u32, u32) -> Option<[u32; 4]>) -> Option<Self> {
        let [eax, _, _, edx] = leaf(1, 0)?;
        Some(KvmInfo { features: KvmFeatures(eax), hints: KvmHints(edx) })
    }

    /// The boot-log part after the signature: `; features: ...[; hints: ...]`.
    pub(super) fn write_summary(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "; features: {}", self.features)?;
        if !self.hints.is_empty() {
            write!(f, "; hints: {}", self.hints)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::hypervisor::recorded::QEMU_KVM;
    use crate::hypervisor::{detect, HypervisorKind, RecordedCpuid, TimingInfo};
    use std::format;

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

    #[test]
    fn flag_display_names_unknown_bits() {
        assert_eq!(format!("{}", KvmFeatures(0)), "none");
        assert_eq!(format!("{}", KvmFeatures((1 << 3) | (1 << 8) | (1 << 31))), "clocksource2, bit8, bit31");
        assert_eq!(format!("{}", KvmHints::REALTIME), "realtime");
    }
}
