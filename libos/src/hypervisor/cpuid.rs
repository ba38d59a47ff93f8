//! The CPUID seam of hypervisor detection: [`CpuidSource`] executes CPUID (the real instruction at boot,
//! `libos::arch::x86_64::cpu::NativeCpuid`), [`RecordedCpuid`] replays a table recorded from a real machine or
//! built from a spec, for host tests and tools.
//! Source: Intel SDM Vol. 2A, "CPUID—CPU Identification".
#![forbid(unsafe_code)]

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

/// CPUID tables recorded on real machines, shared by the tests that decode them (detection, TSC calibration).
#[cfg(test)]
pub(crate) mod recorded {
    /// Recorded on this project's development host under QEMU 10.0.2 `-accel kvm -cpu
    /// qemu64,+invtsc,vmware-cpuid-freq=on` (nested KVM on an AMD EPYC) with a multiboot probe printing CPUID;
    /// `vmware-cpuid-freq` raises the max leaf to 0x40000010 and fills the timing leaf.
    pub(crate) const QEMU_KVM: &[(u32, u32, [u32; 4])] = &[
        (0x0000_0000, 0, [0x0000_000d, 0x6874_7541, 0x444d_4163, 0x6974_6e65]),
        (0x0000_0001, 0, [0x0006_0fb1, 0x0000_0800, 0xf6f8_3203, 0x178b_fbff]),
        (0x4000_0000, 0, [0x4000_0010, 0x4b4d_564b, 0x564b_4d56, 0x0000_004d]),
        (0x4000_0001, 0, [0x0100_007b, 0, 0, 0]),
        (0x4000_0010, 0, [0x0025_5078, 0x000f_4240, 0, 0]),
        (0x8000_0000, 0, [0x8000_000a, 0x6874_7541, 0x444d_4163, 0x6974_6e65]),
        (0x8000_0007, 0, [0, 0, 0, 0x0000_0100]),
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_table_first_match_wins_and_missing_leaves_are_zero() {
        let leaves = [(0x1, 0, [1, 2, 3, 4]), (0x1, 1, [5, 6, 7, 8]), (0x1, 0, [9, 9, 9, 9])];
        let cpu = RecordedCpuid { leaves: &leaves };
        assert_eq!(cpu.cpuid(0x1, 0), [1, 2, 3, 4]);
        assert_eq!(cpu.cpuid(0x1, 1), [5, 6, 7, 8]);
        assert_eq!(cpu.cpuid(0x4000_0000, 0), [0; 4]);
    }
}
