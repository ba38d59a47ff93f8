//! Zirvium on Xen as a PVH domU: the hypercall page, shared info and its pvclock, event channels (2-level,
//! upcalls on an HVM callback vector), grant tables (v1), the xenstore client, xenbus front-ends, the PV
//! console, netfront, blkfront and the balloon (`memory/target`). This file is the one place that says what the platform brings up.
//!
//! Protocol logic (xenstore wire format and client, ring indices, grant entries, event bitmaps, the xenbus
//! state machine, netif/blkif requests and responses) is sans-I/O over [`shared::SharedPage`] and
//! [`evtchn::EventChannelOps`] and is unit-tested on the host against backend peers written from Xen's public
//! headers. Only `hypercall` (inline assembly) and the bring-up in `guest` are bare-target code.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod abi;
pub mod balloon;
pub mod blkfront;
pub mod clock;
pub mod evtchn;
pub mod gnttab;
#[cfg(target_os = "none")]
mod guest;
#[cfg(target_os = "none")]
pub mod hypercall;
pub mod netfront;
pub mod pvconsole;
pub mod ring;
pub mod shared;
pub mod xenbus;
pub mod xenstore;

use alloc::format;
use libos::bootinfo::BootInfo;
use libos::cmdline::Cmdline;
use libos::hypervisor::{Detection, HypervisorKind};
use libos::platform::{Brought, Fit, Platform, PlatformError};

/// The Xen platform.
pub struct Xen;

/// The one instance, for the platform list.
pub static XEN: Xen = Xen;

/// Fit score when Xen's signature is found: above the 100 of a plain signature match, so Xen wins over the
/// Hyper-V (viridian) leaves it may present at 0x4000_0000.
pub const SCORE: u32 = 110;

impl Platform for Xen {
    fn name(&self) -> &'static str {
        "xen"
    }

    /// Fits when CPUID names Xen (at 0x4000_0000, or 0x4000_0100 with viridian) and the hypercall leaf exists.
    fn probe(&self, d: &Detection, _boot: &BootInfo) -> Option<Fit> {
        let f = d.find(HypervisorKind::Xen)?;
        let hc = f.xen()?.hypercall?;
        Some(Fit {
            score: SCORE,
            reason: format!("signature \"XenVMMXenVMM\" at leaf {:#x}, hypercall MSR {:#x}", f.base_leaf, hc.msr),
        })
    }

    fn init(&self, d: &Detection, boot: &BootInfo, cmdline: &Cmdline) -> Result<Brought, PlatformError> {
        #[cfg(target_os = "none")]
        return guest::init(d, boot, cmdline)
            .map_err(|detail| PlatformError { platform: "xen", detail })
            .map(|features| Brought { features });
        #[cfg(not(target_os = "none"))]
        {
            let _ = (d, boot, cmdline);
            Err(PlatformError {
                platform: "xen",
                detail: alloc::string::String::from("Xen runs on the bare target only"),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libos::hypervisor::{detect, RecordedCpuid};

    #[test]
    fn probe_needs_the_xen_signature_and_hypercall_leaf() {
        let leaves = [
            (0x1, 0, [0, 0, 1 << 31, 0]),
            (0x4000_0000, 0, [0x4000_0005, 0x566e_6558, 0x6558_4d4d, 0x4d4d_566e]),
            (0x4000_0001, 0, [0x0004_0011, 0, 0, 0]),
            (0x4000_0002, 0, [1, 0x4000_0000, 0, 0]),
        ];
        let d = detect(&RecordedCpuid { leaves: &leaves });
        let boot = BootInfo::new(libos::bootinfo::BootProtocol::Pvh { start_info: 0, version: 1 });
        let fit = XEN.probe(&d, &boot).expect("fits");
        assert_eq!(fit.score, SCORE);
        assert_eq!(fit.reason, "signature \"XenVMMXenVMM\" at leaf 0x40000000, hypercall MSR 0x40000000");
        let kvm = [(0x1, 0, [0, 0, 1 << 31, 0]), (0x4000_0000, 0, [0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x4d])];
        assert!(XEN.probe(&detect(&RecordedCpuid { leaves: &kvm }), &boot).is_none());
    }
}
