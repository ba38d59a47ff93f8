//! Hypervisor signatures: the 12 bytes EBX‖ECX‖EDX of a range's base leaf that name the hypervisor (KVM, Xen,
//! Hyper-V, VMware, VirtualBox, QEMU TCG, Parallels, bhyve, ACRN), and the plausibility check for unknown ones.
//! Source: the vendors' own definitions — KVM `Documentation/virt/kvm/x86/cpuid.rst`, Xen
//! `xen/include/public/arch-x86/cpuid.h`, Hyper-V TLFS §2.4 — and Linux `arch/x86/kernel/cpu/` (the signatures
//! its hypervisor detection compares).
#![forbid(unsafe_code)]

use core::fmt;

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
    ///
    /// [`Found::signature`]: super::Found::signature
    Unknown,
}

/// Known signatures, as the 12 bytes EBX‖ECX‖EDX of the range's base leaf.
pub(super) const SIGNATURES: &[(&[u8; 12], HypervisorKind)] = &[
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

/// Writes signature bytes as text: trailing NULs dropped, printable ASCII as is, anything else as `\xNN`.
pub(super) struct SignatureText<'a>(pub(super) &'a [u8]);

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

/// The 12 signature bytes EBX‖ECX‖EDX of a base leaf, in the order software reads them as a string.
pub(super) fn signature_bytes(regs: [u32; 4]) -> [u8; 12] {
    let mut signature = [0u8; 12];
    signature[0..4].copy_from_slice(&regs[1].to_le_bytes());
    signature[4..8].copy_from_slice(&regs[2].to_le_bytes());
    signature[8..12].copy_from_slice(&regs[3].to_le_bytes());
    signature
}

/// Whether an unknown signature looks like a vendor string: only printable ASCII or NUL, with at least three
/// letters or digits. Rejects leaf data that CPUs return for leaves they do not implement.
pub(super) fn plausible_signature(signature: &[u8; 12]) -> bool {
    signature.iter().all(|&b| b == 0 || (0x20..=0x7e).contains(&b))
        && signature.iter().filter(|b| b.is_ascii_alphanumeric()).count() >= 3
}

/// Registers of a base leaf: `[max_leaf, ebx, ecx, edx]` from a 12-byte signature (the inverse of
/// [`signature_bytes`], for building CPUID tables in tests).
#[cfg(test)]
pub(super) fn base_leaf(max_leaf: u32, signature: &[u8; 12]) -> [u32; 4] {
    let word = |i: usize| u32::from_le_bytes([signature[i], signature[i + 1], signature[i + 2], signature[i + 3]]);
    [max_leaf, word(0), word(4), word(8)]
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::hypervisor::{detect, RecordedCpuid, CPUID1_ECX_HYPERVISOR};
    use std::format;

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
}
