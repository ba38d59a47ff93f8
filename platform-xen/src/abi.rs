//! The Xen guest ABI this crate uses: hypercall numbers, sub-operations, argument structures and shared-memory
//! layouts, for x86_64. Written from Xen 4.17's public headers (`xen/include/public/`): `xen.h`, `version.h`,
//! `features.h`, `memory.h`, `hvm/hvm_op.h`, `hvm/params.h`, `event_channel.h`, `grant_table.h`, `sched.h`,
//! `errno.h`, `arch-x86/xen-x86_64.h`. Argument structures are `#[repr(C)]` with size/offset tests against the
//! header layouts; they are passed to Xen by address (guest-virtual = guest-physical here).
#![forbid(unsafe_code)]

use core::fmt;

/// Hypercall numbers (`xen.h`, `__HYPERVISOR_*`); the stub for number `n` is at byte `32 * n` of the hypercall
/// page.
pub mod hypercall {
    /// `__HYPERVISOR_memory_op`.
    pub const MEMORY_OP: u32 = 12;
    /// `__HYPERVISOR_xen_version`.
    pub const XEN_VERSION: u32 = 17;
    /// `__HYPERVISOR_grant_table_op`.
    pub const GRANT_TABLE_OP: u32 = 20;
    /// `__HYPERVISOR_vcpu_op`.
    pub const VCPU_OP: u32 = 24;
    /// `__HYPERVISOR_sched_op`.
    pub const SCHED_OP: u32 = 29;
    /// `__HYPERVISOR_event_channel_op`.
    pub const EVENT_CHANNEL_OP: u32 = 32;
    /// `__HYPERVISOR_hvm_op`.
    pub const HVM_OP: u32 = 34;
    /// Size of one hypercall stub in the hypercall page (bytes).
    pub const STUB_SIZE: u64 = 32;
}

/// `XENVER_version`: returns `major << 16 | minor` (`version.h`).
pub const XENVER_VERSION: u32 = 0;
/// `XENVER_get_features`: fills a [`XenFeatureInfo`] (`version.h`).
pub const XENVER_GET_FEATURES: u32 = 6;

/// `XENFEAT_*` bit numbers of feature submap 0 (`features.h`).
pub mod feature {
    /// `XENFEAT_writable_page_tables`.
    pub const WRITABLE_PAGE_TABLES: u32 = 0;
    /// `XENFEAT_writable_descriptor_tables`.
    pub const WRITABLE_DESCRIPTOR_TABLES: u32 = 1;
    /// `XENFEAT_auto_translated_physmap`: the guest sees guest-physical frames (HVM/PVH).
    pub const AUTO_TRANSLATED_PHYSMAP: u32 = 2;
    /// `XENFEAT_supervisor_mode_kernel`.
    pub const SUPERVISOR_MODE_KERNEL: u32 = 3;
    /// `XENFEAT_pae_pgdir_above_4gb`.
    pub const PAE_PGDIR_ABOVE_4GB: u32 = 4;
    /// `XENFEAT_mmu_pt_update_preserve_ad`.
    pub const MMU_PT_UPDATE_PRESERVE_AD: u32 = 5;
    /// `XENFEAT_highmem_assist`.
    pub const HIGHMEM_ASSIST: u32 = 6;
    /// `XENFEAT_gnttab_map_avail_bits`.
    pub const GNTTAB_MAP_AVAIL_BITS: u32 = 7;
    /// `XENFEAT_hvm_callback_vector`: `HVM_PARAM_CALLBACK_IRQ` accepts the vector delivery type.
    pub const HVM_CALLBACK_VECTOR: u32 = 8;
    /// `XENFEAT_hvm_safe_pvclock`: the pvclock in `vcpu_time_info` is safe to use in an HVM guest.
    pub const HVM_SAFE_PVCLOCK: u32 = 9;
    /// `XENFEAT_hvm_pirqs`.
    pub const HVM_PIRQS: u32 = 10;
    /// `XENFEAT_dom0`.
    pub const DOM0: u32 = 11;
    /// `XENFEAT_grant_map_identity`.
    pub const GRANT_MAP_IDENTITY: u32 = 12;
    /// `XENFEAT_memory_op_vnode_supported`.
    pub const MEMORY_OP_VNODE_SUPPORTED: u32 = 13;
    /// `XENFEAT_ARM_SMCCC_supported`.
    pub const ARM_SMCCC_SUPPORTED: u32 = 14;
    /// `XENFEAT_linux_rsdp_unrestricted`.
    pub const LINUX_RSDP_UNRESTRICTED: u32 = 15;
    /// `XENFEAT_not_direct_mapped`.
    pub const NOT_DIRECT_MAPPED: u32 = 16;
    /// `XENFEAT_direct_mapped`.
    pub const DIRECT_MAPPED: u32 = 17;

    /// Display names of the bits above, for the boot log.
    pub const NAMES: &[(u32, &str)] = &[
        (WRITABLE_PAGE_TABLES, "writable-page-tables"),
        (WRITABLE_DESCRIPTOR_TABLES, "writable-descriptor-tables"),
        (AUTO_TRANSLATED_PHYSMAP, "auto-translated-physmap"),
        (SUPERVISOR_MODE_KERNEL, "supervisor-mode-kernel"),
        (PAE_PGDIR_ABOVE_4GB, "pae-pgdir-above-4gb"),
        (MMU_PT_UPDATE_PRESERVE_AD, "mmu-pt-update-preserve-ad"),
        (HIGHMEM_ASSIST, "highmem-assist"),
        (GNTTAB_MAP_AVAIL_BITS, "gnttab-map-avail-bits"),
        (HVM_CALLBACK_VECTOR, "hvm-callback-vector"),
        (HVM_SAFE_PVCLOCK, "hvm-safe-pvclock"),
        (HVM_PIRQS, "hvm-pirqs"),
        (DOM0, "dom0"),
        (GRANT_MAP_IDENTITY, "grant-map-identity"),
        (MEMORY_OP_VNODE_SUPPORTED, "memory-op-vnode"),
        (ARM_SMCCC_SUPPORTED, "arm-smccc"),
        (LINUX_RSDP_UNRESTRICTED, "linux-rsdp-unrestricted"),
        (NOT_DIRECT_MAPPED, "not-direct-mapped"),
        (DIRECT_MAPPED, "direct-mapped"),
    ];
}

/// Feature submap 0 from `XENVER_get_features`, with the bit names of [`feature`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features(pub u32);

impl Features {
    /// Whether `XENFEAT_*` bit number `bit` is set.
    pub fn has(self, bit: u32) -> bool {
        bit < 32 && self.0 & (1 << bit) != 0
    }
}

impl fmt::Display for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for bit in 0..32 {
            if !self.has(bit) {
                continue;
            }
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            match feature::NAMES.iter().find(|(b, _)| *b == bit) {
                Some((_, n)) => f.write_str(n)?,
                None => write!(f, "bit{bit}")?,
            }
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// `struct xen_feature_info` (`version.h`), 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenFeatureInfo {
    /// IN: which 32-bit submap to return.
    pub submap_idx: u32,
    /// OUT: the submap.
    pub submap: u32,
}

/// A domain id (`domid_t`, `xen.h`): 0 is dom0, [`DOMID_SELF`] names the caller. Passed to Xen inside hypercall
/// argument structures, so laid out as the `u16` it wraps.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomId(pub u16);

impl fmt::Display for DomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `DOMID_SELF` (`xen.h`): the calling domain.
pub const DOMID_SELF: DomId = DomId(0x7ff0);

/// An event channel port (`evtchn_port_t`, `event_channel.h`): the local end of an event channel, an index into
/// the pending and mask bitmaps of the shared-info page. Laid out as the `u32` it wraps in hypercall arguments.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EvtchnPort(pub u32);

impl fmt::Display for EvtchnPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A grant reference (`grant_ref_t`, `grant_table.h`): an index into our grant table, handed to a backend
/// (in xenstore, e.g. `ring-ref`, or in a ring request) so it can map or copy the granted frame.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GrantRef(pub u32);

impl fmt::Display for GrantRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `XENMEM_add_to_physmap` (`memory.h`): places a Xen page at a guest frame.
pub const XENMEM_ADD_TO_PHYSMAP: u32 = 7;
/// `XENMAPSPACE_shared_info` (`memory.h`).
pub const XENMAPSPACE_SHARED_INFO: u32 = 0;
/// `XENMAPSPACE_grant_table` (`memory.h`); `idx` is the grant-table frame number.
pub const XENMAPSPACE_GRANT_TABLE: u32 = 1;

/// `struct xen_add_to_physmap` (`memory.h`), 24 bytes on x86_64.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenAddToPhysmap {
    /// Domain whose physmap changes ([`DOMID_SELF`]).
    pub domid: DomId,
    /// Pages for `XENMAPSPACE_gmfn_range` (0 otherwise).
    pub size: u16,
    /// `XENMAPSPACE_*`.
    pub space: u32,
    /// Index into the space (grant-table frame number; 0 for shared_info).
    pub idx: u64,
    /// Guest frame number where the page appears.
    pub gpfn: u64,
}

/// `HVMOP_set_param` (`hvm/hvm_op.h`).
pub const HVMOP_SET_PARAM: u32 = 0;
/// `HVMOP_get_param` (`hvm/hvm_op.h`).
pub const HVMOP_GET_PARAM: u32 = 1;

/// `struct xen_hvm_param` (`hvm/hvm_op.h`), 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenHvmParam {
    /// Domain ([`DOMID_SELF`]).
    pub domid: DomId,
    /// Padding.
    pub pad: u16,
    /// `HVM_PARAM_*`.
    pub index: u32,
    /// IN (set) / OUT (get).
    pub value: u64,
}

/// `HVM_PARAM_*` indices (`hvm/params.h`).
pub mod hvm_param {
    /// `HVM_PARAM_CALLBACK_IRQ`: how event-channel upcalls reach vCPU 0.
    pub const CALLBACK_IRQ: u32 = 0;
    /// `HVM_PARAM_STORE_PFN`: guest frame of the xenstore ring page.
    pub const STORE_PFN: u32 = 1;
    /// `HVM_PARAM_STORE_EVTCHN`: event channel of the xenstore ring.
    pub const STORE_EVTCHN: u32 = 2;
    /// `HVM_PARAM_CONSOLE_PFN`: guest frame of the PV console ring page.
    pub const CONSOLE_PFN: u32 = 17;
    /// `HVM_PARAM_CONSOLE_EVTCHN`: event channel of the PV console ring.
    pub const CONSOLE_EVTCHN: u32 = 18;
    /// `HVM_PARAM_CALLBACK_TYPE_VECTOR` in bits 63:56 of `CALLBACK_IRQ`; bits 7:0 are the vector.
    pub const CALLBACK_TYPE_VECTOR: u64 = 2;
}

/// The `HVM_PARAM_CALLBACK_IRQ` value that delivers upcalls as interrupt `vector` (`hvm/params.h`).
pub const fn callback_via_vector(vector: u8) -> u64 {
    (hvm_param::CALLBACK_TYPE_VECTOR << 56) | vector as u64
}

/// `EVTCHNOP_*` commands (`event_channel.h`).
pub mod evtchnop {
    /// `EVTCHNOP_bind_interdomain`.
    pub const BIND_INTERDOMAIN: u32 = 0;
    /// `EVTCHNOP_bind_virq`.
    pub const BIND_VIRQ: u32 = 1;
    /// `EVTCHNOP_close`.
    pub const CLOSE: u32 = 3;
    /// `EVTCHNOP_send`.
    pub const SEND: u32 = 4;
    /// `EVTCHNOP_status`.
    pub const STATUS: u32 = 5;
    /// `EVTCHNOP_alloc_unbound`.
    pub const ALLOC_UNBOUND: u32 = 6;
    /// `EVTCHNOP_unmask`.
    pub const UNMASK: u32 = 9;
}

/// `struct evtchn_alloc_unbound` (`event_channel.h`), 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnAllocUnbound {
    /// IN: our domain ([`DOMID_SELF`]).
    pub dom: DomId,
    /// IN: the domain allowed to bind the other end.
    pub remote_dom: DomId,
    /// OUT: the new port.
    pub port: EvtchnPort,
}

/// `struct evtchn_send` (`event_channel.h`): one port, 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnSend {
    /// The port.
    pub port: EvtchnPort,
}

/// `struct evtchn_close` (`event_channel.h`): the same layout as [`EvtchnSend`].
pub type EvtchnClose = EvtchnSend;
/// `struct evtchn_unmask` (`event_channel.h`): the same layout as [`EvtchnSend`].
pub type EvtchnUnmask = EvtchnSend;

/// `struct evtchn_bind_virq` (`event_channel.h`), 12 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnBindVirq {
    /// IN: `VIRQ_*`.
    pub virq: u32,
    /// IN: vCPU.
    pub vcpu: u32,
    /// OUT: the port.
    pub port: EvtchnPort,
}

/// Ports of the 2-level event-channel ABI on x86_64 (`EVTCHN_2L_NR_CHANNELS` = 64 · 64).
pub const EVTCHN_2L_NR_CHANNELS: u32 = 4096;

/// `GNTTABOP_*` commands (`grant_table.h`).
pub mod gnttabop {
    /// `GNTTABOP_setup_table`.
    pub const SETUP_TABLE: u32 = 2;
    /// `GNTTABOP_query_size`.
    pub const QUERY_SIZE: u32 = 6;
}

/// `struct gnttab_query_size` (`grant_table.h`), 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabQuerySize {
    /// IN: domain ([`DOMID_SELF`]).
    pub dom: DomId,
    /// Padding.
    pub pad: u16,
    /// OUT: grant-table frames in use.
    pub nr_frames: u32,
    /// OUT: the most frames the table may grow to.
    pub max_nr_frames: u32,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Padding.
    pub pad2: u16,
}

/// `GNTST_okay` (`grant_table.h`).
pub const GNTST_OKAY: i16 = 0;

/// `SCHEDOP_shutdown` (`sched.h`): argument is a [`SchedShutdown`].
pub const SCHEDOP_SHUTDOWN: u32 = 2;

/// `struct sched_shutdown` (`sched.h`), 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedShutdown {
    /// `SHUTDOWN_*`.
    pub reason: u32,
}

/// `SHUTDOWN_*` reasons (`sched.h`).
pub mod shutdown {
    /// `SHUTDOWN_poweroff`: the domain exited normally.
    pub const POWEROFF: u32 = 0;
    /// `SHUTDOWN_reboot`.
    pub const REBOOT: u32 = 1;
    /// `SHUTDOWN_crash`: tells the toolstack the domain crashed (`on_crash` applies).
    pub const CRASH: u32 = 3;
}

/// Layout of `struct shared_info` and `struct vcpu_info` on x86_64 (`xen.h`, `arch-x86/xen-x86_64.h`), as byte
/// offsets into the shared-info page.
pub mod shared_info {
    /// `sizeof(struct vcpu_info)`.
    pub const VCPU_INFO_SIZE: usize = 64;
    /// `XEN_LEGACY_MAX_VCPUS`: vCPUs with a `vcpu_info` in the shared-info page.
    pub const LEGACY_MAX_VCPUS: usize = 32;
    /// `vcpu_info.evtchn_upcall_pending` (u8).
    pub const VCPU_UPCALL_PENDING: usize = 0;
    /// `vcpu_info.evtchn_pending_sel` (u64): which words of `evtchn_pending` have news.
    pub const VCPU_PENDING_SEL: usize = 8;
    /// `vcpu_info.time` (`struct vcpu_time_info`, 32 bytes, the pvclock layout).
    pub const VCPU_TIME: usize = 32;
    /// `shared_info.evtchn_pending[64]` (u64 each).
    pub const EVTCHN_PENDING: usize = VCPU_INFO_SIZE * LEGACY_MAX_VCPUS;
    /// `shared_info.evtchn_mask[64]` (u64 each).
    pub const EVTCHN_MASK: usize = EVTCHN_PENDING + 64 * 8;
    /// `shared_info.wc_version` (u32): odd while the wall clock is updated.
    pub const WC_VERSION: usize = EVTCHN_MASK + 64 * 8;
    /// `shared_info.wc_sec` (u32): seconds since the Unix epoch at system time 0, low half.
    pub const WC_SEC: usize = WC_VERSION + 4;
    /// `shared_info.wc_nsec` (u32).
    pub const WC_NSEC: usize = WC_VERSION + 8;
    /// `shared_info.wc_sec_hi` (u32): high half of the seconds (64-bit guests).
    pub const WC_SEC_HI: usize = WC_VERSION + 12;
}

/// A negative Xen errno returned by a hypercall (`errno.h`, positive values there), e.g. -22 = `EINVAL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XenErrno(pub i64);

impl XenErrno {
    /// The errno's name, e.g. "EINVAL" (`errno.h`), or "?" when unknown.
    pub fn name(self) -> &'static str {
        match -self.0 {
            1 => "EPERM",
            2 => "ENOENT",
            3 => "ESRCH",
            4 => "EINTR",
            5 => "EIO",
            6 => "ENXIO",
            7 => "E2BIG",
            9 => "EBADF",
            11 => "EAGAIN",
            12 => "ENOMEM",
            13 => "EACCES",
            14 => "EFAULT",
            16 => "EBUSY",
            17 => "EEXIST",
            19 => "ENODEV",
            22 => "EINVAL",
            28 => "ENOSPC",
            30 => "EROFS",
            38 => "ENOSYS",
            95 => "EOPNOTSUPP",
            _ => "?",
        }
    }

    /// `Ok(ret)` for a non-negative hypercall return value, else the errno.
    pub fn check(ret: i64) -> Result<i64, XenErrno> {
        if ret < 0 {
            Err(XenErrno(ret))
        } else {
            Ok(ret)
        }
    }
}

impl fmt::Display for XenErrno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Xen error {} ({})", self.0, self.name())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn argument_layouts_match_the_headers() {
        assert_eq!(size_of::<XenFeatureInfo>(), 8);
        assert_eq!(size_of::<XenAddToPhysmap>(), 24);
        assert_eq!(offset_of!(XenAddToPhysmap, space), 4);
        assert_eq!(offset_of!(XenAddToPhysmap, idx), 8);
        assert_eq!(offset_of!(XenAddToPhysmap, gpfn), 16);
        assert_eq!(size_of::<XenHvmParam>(), 16);
        assert_eq!(offset_of!(XenHvmParam, index), 4);
        assert_eq!(offset_of!(XenHvmParam, value), 8);
        assert_eq!(size_of::<EvtchnAllocUnbound>(), 8);
        assert_eq!(offset_of!(EvtchnAllocUnbound, remote_dom), 2);
        assert_eq!(offset_of!(EvtchnAllocUnbound, port), 4);
        assert_eq!(size_of::<EvtchnBindVirq>(), 12);
        assert_eq!(size_of::<EvtchnSend>(), 4);
        assert_eq!(size_of::<GnttabQuerySize>(), 16);
        assert_eq!(offset_of!(GnttabQuerySize, nr_frames), 4);
        assert_eq!(offset_of!(GnttabQuerySize, max_nr_frames), 8);
        assert_eq!(offset_of!(GnttabQuerySize, status), 12);
        assert_eq!(size_of::<SchedShutdown>(), 4);
    }

    #[test]
    fn shared_info_offsets() {
        // 32 vcpu_info of 64 bytes, then 64 + 64 longs of event bits, then the wall clock.
        assert_eq!(shared_info::EVTCHN_PENDING, 2048);
        assert_eq!(shared_info::EVTCHN_MASK, 2560);
        assert_eq!(shared_info::WC_VERSION, 3072);
        assert_eq!(shared_info::WC_SEC_HI, 3084);
    }

    #[test]
    fn callback_vector_value() {
        assert_eq!(callback_via_vector(0xf3), 0x0200_0000_0000_00f3);
    }

    #[test]
    fn features_and_errnos_display() {
        let f = Features((1 << feature::AUTO_TRANSLATED_PHYSMAP) | (1 << feature::HVM_CALLBACK_VECTOR) | (1 << 30));
        assert!(f.has(feature::HVM_CALLBACK_VECTOR) && !f.has(feature::DOM0) && !f.has(40));
        assert_eq!(std::format!("{f}"), "auto-translated-physmap, hvm-callback-vector, bit30");
        assert_eq!(std::format!("{}", Features(0)), "none");
        assert_eq!(std::format!("{}", XenErrno(-22)), "Xen error -22 (EINVAL)");
        assert_eq!(XenErrno::check(-38), Err(XenErrno(-38)));
        assert_eq!(XenErrno::check(4), Ok(4));
        assert_eq!(XenErrno(-1000).name(), "?");
        assert_eq!(std::format!("{} {} {}", EvtchnPort(7), GrantRef(8), DomId(0)), "7 8 0");
    }
}
