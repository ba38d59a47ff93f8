//! VMware's timing leaf base+0x10 (TSC and local APIC bus frequencies), which QEMU/KVM implement too
//! (`-cpu ...,vmware-cpuid-freq=on`, only at base 0x4000_0000).
//! Source: Linux `arch/x86/kernel/cpu/vmware.c` (`CPUID_VMWARE_FREQ_LEAF`), QEMU `target/i386/kvm/kvm.c`.
#![forbid(unsafe_code)]

use core::fmt;

/// Offset of the "timing information" leaf (0x4000_0010 in the first range): EAX = TSC frequency in kHz,
/// EBX = local APIC bus (timer) frequency in kHz. Defined by VMware and implemented by QEMU/KVM
/// (`-cpu ...,vmware-cpuid-freq=on`, only at base 0x4000_0000). Source: Linux `arch/x86/kernel/cpu/vmware.c`
/// (`CPUID_VMWARE_FREQ_LEAF`).
pub const TIMING_LEAF_OFFSET: u32 = 0x10;

/// The "timing information" leaf base+0x10 (see [`TIMING_LEAF_OFFSET`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimingInfo {
    /// TSC frequency in kHz (EAX).
    pub tsc_khz: u32,
    /// Local APIC bus (timer) frequency in kHz (EBX).
    pub lapic_bus_khz: u32,
}

impl TimingInfo {
    /// Decodes the timing leaf from `leaf(offset, subleaf)` (which returns `None` beyond the range's max leaf);
    /// `None` when the range does not reach it or it reports no TSC frequency. Only KVM and VMware ranges have
    /// it; the caller checks the kind.
    pub(super) fn decode(leaf: impl Fn(u32, u32) -> Option<[u32; 4]>) -> Option<Self> {
        let [eax, ebx, ..] = leaf(TIMING_LEAF_OFFSET, 0)?;
        (eax != 0).then_some(TimingInfo { tsc_khz: eax, lapic_bus_khz: ebx })
    }

    /// The boot-log part: `; tsc N kHz, lapic bus M kHz`.
    pub(super) fn write_summary(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "; tsc {} kHz, lapic bus {} kHz", self.tsc_khz, self.lapic_bus_khz)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::hypervisor::{detect, HypervisorKind, RecordedCpuid};
    use std::format;

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
}
