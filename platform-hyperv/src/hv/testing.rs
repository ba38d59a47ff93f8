//! Test fixtures for the enlightenments: a recording [`HwAccess`] and CPUID leaves recorded on a real host.

use super::partition::Enlightenments;
use super::HwAccess;
use alloc::vec::Vec;
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

/// Hyper-V CPUID leaves of KVM's Hyper-V emulation as QEMU 10 sets them up (`-cpu host,hv-relaxed,hv-vpindex,
/// hv-synic,hv-time,hv-stimer,hv-frequencies,hv-vapic,hv-runtime,hv-stimer-direct,hv-tlbflush,hv-ipi`), recorded on
/// the nested host of `images run --hypervisor hyperv`; KVM's own leaves follow at 0x4000_0100.
pub const QEMU_KVM: &[(u32, u32, [u32; 4])] = &[
    (0x1, 0, [0, 0, 0xf7f8_3203, 0]),
    (0x4000_0000, 0, [0x4000_0005, 0x7263_694d, 0x666f_736f, 0x7648_2074]),
    (0x4000_0001, 0, [0x3123_7648, 0, 0, 0]),
    (0x4000_0002, 0, [0x0000_3839, 0x000a_0000, 0, 0]),
    (0x4000_0003, 0, [0x0000_0a7f, 0x0000_0030, 0, 0x0008_0108]),
    (0x4000_0004, 0, [0x0000_0c2c, 0xffff_ffff, 0, 0]),
    (0x4000_0005, 0, [0xffff_ffff, 0x0000_0040, 0, 0]),
    (0x4000_0100, 0, [0x4000_0101, 0x4b4d_564b, 0x564b_4d56, 0x0000_004d]),
    (0x4000_0101, 0, [0x0100_7efb, 0, 0, 0]),
];

/// The enlightenments [`QEMU_KVM`] grants.
pub fn qemu_kvm() -> Enlightenments {
    let cpu = RecordedCpuid { leaves: QEMU_KVM };
    let d = detect(&cpu);
    let f = d.find(HypervisorKind::HyperV).expect("Hyper-V range");
    Enlightenments::from_cpuid(f, &cpu).expect("TLFS range")
}

/// The enlightenments [`WS2022`] grants.
pub fn ws2022() -> Enlightenments {
    let cpu = RecordedCpuid { leaves: WS2022 };
    let d = detect(&cpu);
    let f = d.find(HypervisorKind::HyperV).expect("Hyper-V range");
    Enlightenments::from_cpuid(f, &cpu).expect("TLFS range")
}
