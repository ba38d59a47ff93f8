//! Zirvium on Hyper-V and Azure: the TLFS enlightenments (guest OS identity, hypercall page, reference TSC page
//! clock, SynIC), VMBus, the synthetic NIC (netvsc) and SCSI disk (storvsc), and the heartbeat, shutdown, time
//! sync and KVP integration services. This file is the one place that says what the platform brings up.
//!
//! Everything but `hw` (bare target only) is safe, sans-I/O protocol code over [`hv::HwAccess`] (MSRs,
//! hypercalls) and [`mem::Dma`] (shared pages), host-tested against recorded values and, in the `hyperv` test
//! target, against a host model that plays the Hyper-V host. Interrupt-to-task wake-ups use `libos::irq`
//! (`critical`, `WakeSlot`); wire formats are checked views over `libos::wire`. The `host-model` feature builds
//! the host-side models (`mem::host`, `vmbus::ring::host_side`) for test peers.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

extern crate alloc;

pub mod bringup;
pub mod dm;
pub mod hv;
#[cfg(target_os = "none")]
pub mod hw;
pub mod ic;
pub mod mem;
pub mod netvsc;
pub mod storvsc;
pub mod vmbus;

use alloc::format;
use alloc::string::String;
use libos::bootinfo::BootInfo;
use libos::cmdline::Cmdline;
use libos::hypervisor::{Detection, HypervisorKind, HYPERV_INTERFACE_TLFS};
use libos::platform::{Brought, Fit, Platform, PlatformError};

/// The Hyper-V platform.
pub struct HyperV;

/// The platform instance for the boot-time list.
pub static HYPERV: HyperV = HyperV;

/// How well Hyper-V fits, from the CPUID detection. `"Microsoft Hv"` with the `"Hv#1"` interface scores 100. KVM
/// can present Hyper-V's leaves at 0x4000_0000 and its own at 0x4000_0100 (QEMU `-cpu ...,hv-*`); then Hyper-V scores
/// 120, above KVM's 100: its enlightenments and VMBus (Dynamic Memory) come on top of what KVM offers, and PCI
/// devices (virtio included) are driven by libos's drivers on every platform. `None` without a TLFS Hyper-V range.
pub fn choose(d: &Detection) -> Option<Fit> {
    let f = d.find(HypervisorKind::HyperV)?;
    let hv = f.hyperv()?;
    if hv.interface != HYPERV_INTERFACE_TLFS {
        return None;
    }
    let base = format!("signature \"Microsoft Hv\" interface \"Hv#1\" at leaf {:#x}", f.base_leaf);
    match d.find(HypervisorKind::Kvm) {
        None => Some(Fit { score: 100, reason: base }),
        Some(k) => Some(Fit {
            score: 120,
            reason: format!(
                "{base}; KVM also at leaf {:#x}: Hyper-V enlightenments and VMBus, PCI devices through libos's drivers",
                k.base_leaf
            ),
        }),
    }
}

impl Platform for HyperV {
    fn name(&self) -> &'static str {
        "hyperv"
    }

    fn probe(&self, d: &Detection, _boot: &BootInfo) -> Option<Fit> {
        choose(d)
    }

    fn init(&self, d: &Detection, boot: &BootInfo, cmdline: &Cmdline) -> Result<Brought, PlatformError> {
        let _ = (boot, cmdline);
        #[cfg(target_os = "none")]
        return native::init(d);
        #[cfg(not(target_os = "none"))]
        {
            let _ = d;
            Err(PlatformError {
                platform: "hyperv",
                detail: String::from("the Hyper-V platform only runs on the bare target"),
            })
        }
    }
}

/// The guest's IPv4 configuration for KVP, read through libos's hook (which the network stack installs):
/// dotted-quad address, netmask from the prefix length, gateway (`""` when none), comma-separated DNS servers.
/// `None` without a network stack or before it has an address.
pub fn kernel_ip_report() -> Option<ic::IpReport> {
    libos::platform::ipv4().map(|c| ip_report(&c))
}

fn ip_report(c: &libos::platform::Ipv4Info) -> ic::IpReport {
    let mask = if c.prefix_len == 0 { 0 } else { u32::MAX << (32 - u32::from(c.prefix_len.min(32))) };
    ic::IpReport {
        address: format!("{}", c.address),
        netmask: format!("{}", core::net::Ipv4Addr::from(mask)),
        gateway: c.gateway.map(|g| format!("{g}")).unwrap_or_default(),
        dns: c.dns_servers.iter().map(|d| format!("{d}")).collect::<alloc::vec::Vec<_>>().join(","),
        dhcp: c.dhcp,
    }
}

#[cfg(target_os = "none")]
mod native {
    //! Bring-up on a real Hyper-V host.

    use super::*;
    use crate::hv::{self, Enlightenments, ReferenceClock};
    use crate::mem::Dma;
    use crate::vmbus::InterruptLine;
    use alloc::boxed::Box;
    use alloc::string::ToString;
    use alloc::sync::Arc;
    use libos::arch::x86_64::cpu::NativeCpuid;

    static LINE: spin::Once<Arc<InterruptLine>> = spin::Once::new();
    static CLOCK: spin::Once<&'static ReferenceClock> = spin::Once::new();

    fn sint_handler(_vector: u8) {
        if let Some(l) = LINE.get() {
            l.raise();
        }
    }

    /// stimer0 in direct mode as libos's timer device when the partition offers it and the reference clock is
    /// the clock (the timer counts reference time); else the LAPIC timer stays. Returns the boot log's entry.
    fn install_timer(hw: &Arc<dyn hv::HwAccess>, en: &Enlightenments) -> String {
        static STIMER: spin::Once<hv::stimer::Stimer0> = spin::Once::new();
        if CLOCK.get().is_none() {
            return String::from("timer LAPIC (no reference clock for stimer0)");
        }
        let vector = match libos::arch::x86_64::idt::allocate_vector(|_| {}) {
            Ok(v) => v,
            Err(e) => return format!("timer LAPIC (stimer0: {e})"),
        };
        match hv::stimer::Stimer0::direct(hw.clone(), en, vector) {
            Ok(t) => {
                let t: &'static hv::stimer::Stimer0 = STIMER.call_once(|| t);
                libos::time::timer::set_source(t);
                format!("timer {} vector {vector:#x}", libos::time::timer::TimerSource::name(t))
            }
            Err(e) => format!("timer LAPIC ({e})"),
        }
    }

    /// Runs the Dynamic Memory handshake over `ch` with the kernel's balloon and spawns the driver. Returns the
    /// boot log's entry.
    fn start_dynamic_memory(ch: crate::vmbus::channel::Channel) -> String {
        use crate::dm::{wire::version, DynamicMemory, KernelBalloon};
        let mut balloon = KernelBalloon;
        match libos::task::wait(DynamicMemory::connect(ch, &mut balloon, libos::time::Duration::from_secs(5))) {
            Ok(dm) => {
                let s = libos::mem::balloon::global::stats();
                let entry = format!(
                    "dynamic memory {} (balloon, floor {} MiB, status reports {})",
                    version::display(dm.version()),
                    s.floor_bytes >> 20,
                    if dm.status_reports() { "on" } else { "off" }
                );
                libos::task::spawn(async move {
                    let e = dm.run(KernelBalloon).await;
                    log::warn!("{e}; ballooning stopped");
                });
                entry
            }
            Err(e) => {
                log::warn!("{e}");
                String::from("no dynamic memory")
            }
        }
    }

    fn err(detail: String) -> PlatformError {
        PlatformError { platform: "hyperv", detail }
    }

    pub fn init(d: &Detection) -> Result<Brought, PlatformError> {
        let f = d.find(HypervisorKind::HyperV).ok_or_else(|| err(String::from("no Hyper-V CPUID range")))?;
        let en =
            Enlightenments::from_cpuid(f, &NativeCpuid).ok_or_else(|| err(String::from("no TLFS feature leaves")))?;
        log::info!("hyper-v: {}", hv::describe(&en));
        let hw: Arc<dyn hv::HwAccess> = Arc::new(crate::hw::NativeHw);
        let dma: Arc<dyn Dma> = Arc::new(crate::hw::NativeDma);
        let mut brought = Brought::default();
        let version = env!("CARGO_PKG_VERSION");
        let mut parts = version.split('.').map(|p| p.parse::<u8>().unwrap_or(0));
        let id = hv::guest_os_id(parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        hv::enable_hypercalls(&*hw, &en, id, crate::hw::hypercall_page_gpa()).map_err(|e| err(e.to_string()))?;
        brought.features.push(String::from("hypercall page"));

        if let Some(kind) = en.clock_kind() {
            let page =
                if kind == hv::ClockKind::TscPage { Some(dma.alloc(1).map_err(|e| err(e.to_string()))?) } else { None };
            let (clock, used) = ReferenceClock::new(hw.clone(), kind, page).map_err(|e| err(e.to_string()))?;
            let hz = hv::tsc_frequency(&*hw, &en).or_else(|| clock.tsc_page().and_then(|p| p.tsc_hz()));
            let clock: &'static ReferenceClock = Box::leak(Box::new(clock));
            if let Some(hz) = hz {
                libos::start::set_tsc_hz(hz);
            }
            libos::time::set_clock(clock);
            CLOCK.call_once(|| clock);
            brought.features.push(format!("{} clock ({:?})", libos::time::ClockSource::name(clock), used));
        }
        brought.features.push(install_timer(&hw, &en));

        let line = LINE.call_once(InterruptLine::new).clone();
        let vector = libos::arch::x86_64::idt::allocate_vector(sint_handler).map_err(|e| err(e.to_string()))?;
        let mut cfg = crate::bringup::Config::default();
        if d.find(HypervisorKind::Kvm).is_some() {
            // Hyper-V emulated by KVM: the VMBus server is QEMU's, which has no synthetic NIC to offer late.
            cfg.late_nic_wait = libos::time::Duration::ZERO;
        }
        let devs = match libos::task::wait(crate::bringup::bring_up(hw.clone(), dma, &en, &line, vector, &cfg)) {
            Ok(d) => d,
            // KVM with Hyper-V enlightenments usually has no VMBus server: keep the enlightened clock, no devices.
            Err(e) if d.find(HypervisorKind::Kvm).is_some() => {
                log::warn!("hyper-v: no VMBus under KVM ({e}); continuing without VMBus devices");
                brought.features.push(String::from("no VMBus"));
                return Ok(brought);
            }
            Err(e) => return Err(err(e.to_string())),
        };
        brought.features.push(format!("SynIC SINT2 vector {vector:#x}"));
        brought.features.extend(devs.features.iter().cloned());
        for n in devs.nics {
            libos::dev::register_net(Box::new(n));
        }
        for disk in devs.disks {
            libos::dev::register_block(disk);
        }
        let ctx = ic::Context {
            app_name: String::from(libos::platform::app_name()),
            os_version: String::from(version),
            ip: Arc::new(kernel_ip_report),
            on_shutdown: Arc::new(|r| match r {
                ic::ShutdownRequest::Reboot => libos::shutdown::request(libos::shutdown::ShutdownKind::Reboot),
                _ => libos::shutdown::request(libos::shutdown::ShutdownKind::Poweroff),
            }),
            reference_time: CLOCK.get().map(|c| {
                let c: &'static ReferenceClock = c;
                Arc::new(move || c.now_100ns()) as Arc<dyn Fn() -> u64 + Send + Sync>
            }),
            on_time: Arc::new(|unix_ns, sync| {
                if sync || libos::time::SystemTime::now().is_none() {
                    libos::time::set_wall_clock(unix_ns, libos::time::uptime_ns());
                }
            }),
        };
        crate::bringup::spawn_services(&devs.bus, devs.ics, &ctx);
        if let Some(ch) = devs.dm {
            brought.features.push(start_dynamic_memory(ch));
        }
        Ok(brought)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libos::hypervisor::{detect, RecordedCpuid};

    fn sig(s: &[u8; 12]) -> [u32; 3] {
        [
            u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
            u32::from_le_bytes([s[4], s[5], s[6], s[7]]),
            u32::from_le_bytes([s[8], s[9], s[10], s[11]]),
        ]
    }

    fn leaves(with_kvm: bool) -> alloc::vec::Vec<(u32, u32, [u32; 4])> {
        let hv = sig(b"Microsoft Hv");
        let mut v = alloc::vec![
            (1, 0, [0, 0, 1 << 31, 0]),
            (0x4000_0000, 0, [0x4000_000b, hv[0], hv[1], hv[2]]),
            (0x4000_0001, 0, [u32::from_le_bytes(*b"Hv#1"), 0, 0, 0]),
            (0x4000_0003, 0, [0xae7f, 0x3b8030, 0, 0]),
        ];
        if with_kvm {
            let k = sig(b"KVMKVMKVM\0\0\0");
            v.push((0x4000_0100, 0, [0x4000_0101, k[0], k[1], k[2]]));
        }
        v
    }

    #[test]
    fn hyperv_alone_wins_with_its_signature() {
        let l = leaves(false);
        let d = detect(&RecordedCpuid { leaves: &l });
        let fit = choose(&d).unwrap();
        assert_eq!(fit.score, 100);
        assert!(fit.reason.contains("\"Microsoft Hv\""), "{}", fit.reason);
    }

    #[test]
    fn kvm_with_hyperv_leaves_is_hyperv() {
        let l = leaves(true);
        let d = detect(&RecordedCpuid { leaves: &l });
        let fit = choose(&d).unwrap();
        assert!(fit.score > 100, "Hyper-V must win over KVM's 100: VMBus comes on top, PCI devices work anyway");
        assert!(fit.reason.contains("KVM also at leaf 0x40000100"), "{}", fit.reason);
        // The nested host's recorded leaves (QEMU 10, KVM with hv-* flags) choose Hyper-V too.
        let d = detect(&RecordedCpuid { leaves: crate::hv::testing::QEMU_KVM });
        assert_eq!(choose(&d).map(|f| f.score), Some(120));
    }

    #[test]
    fn ip_report_formats_the_libos_ipv4_info() {
        use core::net::Ipv4Addr;
        let c = libos::platform::Ipv4Info {
            address: Ipv4Addr::new(10, 0, 2, 15),
            prefix_len: 24,
            gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
            dns_servers: alloc::vec![Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(1, 1, 1, 1)],
            dhcp: true,
        };
        let r = ip_report(&c);
        assert_eq!(
            (r.address.as_str(), r.netmask.as_str(), r.gateway.as_str(), r.dns.as_str(), r.dhcp),
            ("10.0.2.15", "255.255.255.0", "10.0.2.2", "10.0.2.3,1.1.1.1", true)
        );
        let r = ip_report(&libos::platform::Ipv4Info { prefix_len: 0, gateway: None, dns_servers: alloc::vec![], ..c });
        assert_eq!((r.netmask.as_str(), r.gateway.as_str(), r.dns.as_str()), ("0.0.0.0", "", ""));
        assert_eq!(kernel_ip_report(), None, "no network stack in this test");
    }

    #[test]
    fn no_tlfs_interface_no_fit() {
        let mut l = leaves(false);
        l[2].2[0] = u32::from_le_bytes(*b"Hv#0");
        let d = detect(&RecordedCpuid { leaves: &l });
        assert!(choose(&d).is_none());
        let d = detect(&RecordedCpuid { leaves: &[] });
        assert!(choose(&d).is_none());
        assert_eq!(HYPERV.name(), "hyperv");
    }
}
