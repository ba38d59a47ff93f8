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
//!
//! One file per concern: `cpuid` (the CPUID seam), `signature` (naming a range), one file per vendor's leaves
//! (`kvm`, `xen`, `hyperv`, `vmware` for the timing leaf), and here the scan and its result.
#![forbid(unsafe_code)]

mod cpuid;
mod hyperv;
mod kvm;
mod signature;
mod vmware;
mod xen;

#[cfg(test)]
pub(crate) use cpuid::recorded;
pub use cpuid::{CpuidSource, RecordedCpuid};
pub use hyperv::{
    HvFeatures, HvPartitionPrivileges, HvRecommendations, HyperVFeatureLeaf, HyperVInfo, HyperVRecommendationLeaf,
    HyperVVersion, HYPERV_INTERFACE_TLFS,
};
pub use kvm::{KvmFeatures, KvmHints, KvmInfo};
pub use signature::HypervisorKind;
pub use vmware::{TimingInfo, TIMING_LEAF_OFFSET};
pub use xen::{XenHvmFeatures, XenHvmInfo, XenHypercallInfo, XenInfo, XenTimeFlags, XenTimeInfo, XenVersion};

use core::fmt;
use signature::{plausible_signature, signature_bytes, SignatureText};

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

/// Writes the names of the set bits of a register's flags, comma separated in ascending bit order; bits without a
/// name in `names` print as `bitN`, no bits as `none`. The `Display` of every vendor's flag type.
fn write_flag_names<F>(f: &mut fmt::Formatter<'_>, flags: &F, names: &[(F, &str)]) -> fmt::Result
where
    F: bitflags::Flags,
    F::Bits: Into<u64>,
{
    let bits: u64 = flags.bits().into();
    if bits == 0 {
        return f.write_str("none");
    }
    let mut first = true;
    for bit in 0..64u32 {
        let mask = 1u64 << bit;
        if bits & mask == 0 {
            continue;
        }
        if !first {
            f.write_str(", ")?;
        }
        first = false;
        match names.iter().find(|(flag, _)| flag.bits().into() == mask) {
            Some((_, name)) => f.write_str(name)?,
            None => write!(f, "bit{bit}")?,
        }
    }
    Ok(())
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
            Features::Kvm(kvm) => kvm.write_summary(f)?,
            Features::Xen(xen) => xen.write_summary(f)?,
            Features::HyperV(hv) => hv.write_summary(f)?,
        }
        if let Some(t) = self.timing {
            t.write_summary(f)?;
        }
        f.write_str(")")
    }
}

/// Result of [`detect`]: the hypervisor-present bit and every plausible hypervisor range, in ascending leaf order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Detection {
    /// CPUID.01H:ECX\[31\]. When clear, no range is scanned and `found` is empty.
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

/// Decodes the feature leaves of one range.
fn decode_features<C: CpuidSource + ?Sized>(cpu: &C, found: &Found) -> Features {
    match found.kind {
        HypervisorKind::Kvm => KvmInfo::decode(range_leaf(cpu, found)).map_or(Features::None, Features::Kvm),
        HypervisorKind::Xen => Features::Xen(XenInfo::decode(range_leaf(cpu, found))),
        HypervisorKind::HyperV => HyperVInfo::decode(range_leaf(cpu, found)).map_or(Features::None, Features::HyperV),
        _ => Features::None,
    }
}

/// Reads the timing leaf of a KVM or VMware range when its max leaf includes it and it reports a TSC frequency.
fn decode_timing<C: CpuidSource + ?Sized>(cpu: &C, found: &Found) -> Option<TimingInfo> {
    if !matches!(found.kind, HypervisorKind::Kvm | HypervisorKind::VMware) {
        return None;
    }
    TimingInfo::decode(range_leaf(cpu, found))
}

/// The vendor decoders' view of one range: `leaf(offset, subleaf)` executes CPUID leaf `base + offset`, or gives
/// `None` when that leaf lies beyond the range's usable max leaf (such leaves are never read).
fn range_leaf<'a, C: CpuidSource + ?Sized>(cpu: &'a C, found: &Found) -> impl Fn(u32, u32) -> Option<[u32; 4]> + 'a {
    let (base, max) = (found.base_leaf, found.usable_max_leaf());
    move |offset, subleaf| (base + offset <= max).then(|| cpu.cpuid(base + offset, subleaf))
}

/// Detects hypervisors: reads CPUID.01H:ECX\[31\] and, when it is set, every range base 0x4000_0000..=0x4001_0000
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

    use super::signature::base_leaf;
    use super::*;
    use std::format;

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
}
