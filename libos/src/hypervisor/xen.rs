//! Xen's leaves base+1..=base+4: version, hypercall page MSR, TSC/time parameters and HVM features.
//! Source: Xen `xen/include/public/arch-x86/cpuid.h` (Leaves 2–5 in its numbering, base+1..=base+4 here).
#![forbid(unsafe_code)]

use super::write_flag_names;
use core::fmt;

/// Xen TSC flags: EAX of leaf base+3, subleaf 0; bits without a constant are kept.
/// Source: Xen `xen/include/public/arch-x86/cpuid.h` (Leaf 4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct XenTimeFlags(pub u32);

bitflags::bitflags! {
    impl XenTimeFlags: u32 {
        /// RDTSC is emulated by Xen.
        const TSC_EMULATED = 1 << 0;
        /// The host TSC is known to be reliable.
        const HOST_TSC_RELIABLE = 1 << 1;
        /// The RDTSCP instruction is available.
        const RDTSCP_INSTR_AVAIL = 1 << 2;
        // A register: every bit may be set by a newer Xen.
        const _ = !0;
    }
}

impl XenTimeFlags {
    /// Boot-log names of the documented bits.
    const NAMES: &'static [(Self, &'static str)] = &[
        (Self::TSC_EMULATED, "tsc-emulated"),
        (Self::HOST_TSC_RELIABLE, "host-tsc-reliable"),
        (Self::RDTSCP_INSTR_AVAIL, "rdtscp"),
    ];
}

impl fmt::Display for XenTimeFlags {
    /// The set bits by name, comma separated (`bitN` for unnamed bits, `none` when empty).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_flag_names(f, self, Self::NAMES)
    }
}

/// Xen HVM features: EAX of leaf base+4, subleaf 0; bits without a constant are kept.
/// Source: Xen `xen/include/public/arch-x86/cpuid.h` (Leaf 5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct XenHvmFeatures(pub u32);

bitflags::bitflags! {
    impl XenHvmFeatures: u32 {
        /// Virtualized APIC registers.
        const APIC_ACCESS_VIRT = 1 << 0;
        /// Virtualized x2APIC accesses.
        const X2APIC_VIRT = 1 << 1;
        /// Memory mapped from other domains has valid IOMMU entries.
        const IOMMU_MAPPINGS = 1 << 2;
        /// EBX holds the vCPU id.
        const VCPU_ID_PRESENT = 1 << 3;
        /// ECX holds the domain id.
        const DOMID_PRESENT = 1 << 4;
        /// Extended (15-bit) destination ID in MSI / IO-APIC RTE.
        const EXT_DEST_ID = 1 << 5;
        /// Per-vCPU event channel upcall vectors.
        const UPCALL_VECTOR = 1 << 6;
        // A register: every bit may be set by a newer Xen.
        const _ = !0;
    }
}

impl XenHvmFeatures {
    /// Boot-log names of the documented bits.
    const NAMES: &'static [(Self, &'static str)] = &[
        (Self::APIC_ACCESS_VIRT, "apic-access-virt"),
        (Self::X2APIC_VIRT, "x2apic-virt"),
        (Self::IOMMU_MAPPINGS, "iommu-mappings"),
        (Self::VCPU_ID_PRESENT, "vcpu-id"),
        (Self::DOMID_PRESENT, "domid"),
        (Self::EXT_DEST_ID, "ext-dest-id"),
        (Self::UPCALL_VECTOR, "upcall-vector"),
    ];
}

impl fmt::Display for XenHvmFeatures {
    /// The set bits by name, comma separated (`bitN` for unnamed bits, `none` when empty).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_flag_names(f, self, Self::NAMES)
    }
}

/// Xen version from leaf base+1: EAX\[31:16\] major, EAX\[15:0\] minor. Source: Xen `arch-x86/cpuid.h` (Leaf 2).
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

impl XenInfo {
    /// Decodes leaves base+1..=base+4 from `leaf(offset, subleaf)`, which returns `None` beyond the range's
    /// max leaf.
    pub(super) fn decode(leaf: impl Fn(u32, u32) -> Option<[u32; 4]>) -> Self {
        XenInfo {
            version: leaf(1, 0).map(|[eax, ..]| XenVersion { major: (eax >> 16) as u16, minor: eax as u16 }),
            hypercall: leaf(2, 0).map(|[eax, ebx, ecx, _]| XenHypercallInfo { pages: eax, msr: ebx, features1: ecx }),
            time: leaf(3, 0).map(|[eax, ebx, ecx, edx]| {
                // Subleaf 1 of the same leaf: present whenever subleaf 0 is.
                let [off_lo, off_hi, mul, shift] = leaf(3, 1).unwrap_or_default();
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
        }
    }

    /// The boot-log part after the signature: version, hypercall page, time and HVM leaves that are present.
    pub(super) fn write_summary(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(v) = self.version {
            write!(f, "; version {}.{}", v.major, v.minor)?;
        }
        if let Some(h) = self.hypercall {
            write!(f, "; hypercall pages {} at MSR {:#x}", h.pages, h.msr)?;
        }
        if let Some(t) = self.time {
            write!(f, "; tsc mode {}, {} kHz, flags: {}", t.tsc_mode, t.tsc_khz, t.flags)?;
        }
        if let Some(hvm) = self.hvm {
            write!(f, "; hvm: {}", hvm.features)?;
            if let Some(id) = hvm.vcpu_id {
                write!(f, ", vcpu {id}")?;
            }
            if let Some(id) = hvm.domain_id {
                write!(f, ", domain {id}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::hypervisor::{
        detect, Found, HvPartitionPrivileges, HypervisorKind, RecordedCpuid, CPUID1_ECX_HYPERVISOR,
    };
    use std::format;

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
}
