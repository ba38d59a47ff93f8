//! Zirvium on KVM and plain QEMU (TCG): what is specific to KVM — kvmclock when KVM offers it (later KVM's
//! other paravirtual features). Devices are not the platform's: virtio-mmio and PCI (virtio-pci) drivers run
//! on every platform, started by `zirvium`'s `boot.rs` from the `drivers` crate and `libos::pci`.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

extern crate alloc;

// The memory KVM writes the clock into, and its MSRs.
#[cfg(target_os = "none")]
#[allow(unsafe_code)]
mod kvmclock;

use alloc::format;
use libos::bootinfo::BootInfo;
use libos::cmdline::Cmdline;
use libos::hypervisor::{Detection, HypervisorKind};
use libos::platform::{Brought, Fit, Platform, PlatformError};

/// The KVM/QEMU platform. Two instances: [`KVM`] (KVM's signature found) and [`QEMU`] (the generic
/// fallback when no known hypervisor is found, e.g. QEMU TCG: virtio devices work the same there).
pub struct Kvm {
    generic: bool,
}

/// KVM proper.
pub static KVM: Kvm = Kvm { generic: false };
/// Generic QEMU (TCG or an unknown hypervisor): no kvmclock.
pub static QEMU: Kvm = Kvm { generic: true };

impl Platform for Kvm {
    fn name(&self) -> &'static str {
        if self.generic {
            "qemu-tcg"
        } else {
            "kvm"
        }
    }

    /// KVM's signature scores 100; the generic instance fits anything with score 10 (50 for QEMU's own TCG
    /// signature).
    fn probe(&self, d: &Detection, _boot: &BootInfo) -> Option<Fit> {
        if !self.generic {
            let f = d.find(HypervisorKind::Kvm)?;
            return Some(Fit { score: 100, reason: format!("signature \"KVMKVMKVM\" at leaf {:#x}", f.base_leaf) });
        }
        if let Some(f) = d.find(HypervisorKind::QemuTcg) {
            return Some(Fit { score: 50, reason: format!("signature \"TCGTCGTCGTCG\" at leaf {:#x}", f.base_leaf) });
        }
        let why = if d.hypervisor_bit { "hypervisor bit set, no known signature" } else { "no hypervisor bit" };
        Some(Fit { score: 10, reason: format!("no KVM signature ({why}): generic virtio platform") })
    }

    /// Brings up kvmclock (KVM proper, when CPUID offers it). Devices are started after `init` by the boot code.
    fn init(&self, d: &Detection, boot: &BootInfo, cmdline: &Cmdline) -> Result<Brought, PlatformError> {
        let _ = (boot, cmdline);
        #[cfg_attr(not(target_os = "none"), allow(unused_mut))]
        let mut brought = Brought::default();
        #[cfg(target_os = "none")]
        if let Some(what) = kvmclock::init(d).filter(|_| !self.generic) {
            brought.features.push(what);
        }
        #[cfg(not(target_os = "none"))]
        let _ = d;
        Ok(brought)
    }
}
