//! kvmclock: KVM's pvclock as the monotonic clock and its wall clock as the time of day.
//! Source: Linux `Documentation/virt/kvm/x86/msr.rst` (MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01,
//! MSR_KVM_WALL_CLOCK_NEW 0x4b564d00, KVM_FEATURE_CLOCKSOURCE2 = CPUID 0x40000001 EAX bit 3) and
//! `arch/x86/include/asm/pvclock-abi.h` (struct pvclock_vcpu_time_info / pvclock_wall_clock). The math and
//! the version protocol are in `libos::time::pvclock`; this file only owns the shared memory and the MSRs.

use alloc::format;
use alloc::string::String;
use core::cell::UnsafeCell;
use core::sync::atomic::{compiler_fence, Ordering};
use libos::arch::x86_64::cpu::{rdtsc, wrmsr};
use libos::hypervisor::{Detection, HypervisorKind};
use libos::time::pvclock::{self, PvclockSnapshot, PvclockVcpuTimeInfo, PvclockWallClock};

/// Memory KVM writes: one vCPU time info and the wall clock, in one page-aligned block so neither crosses a
/// page (msr.rst: 4-byte aligned, within one page).
#[repr(C, align(4096))]
struct Shared {
    time: UnsafeCell<PvclockVcpuTimeInfo>,
    wall: UnsafeCell<PvclockWallClock>,
}

// SAFETY: written only by the hypervisor; read with volatile loads under the version protocol.
unsafe impl Sync for Shared {}

static SHARED: Shared = Shared {
    time: UnsafeCell::new(PvclockVcpuTimeInfo {
        version: 0,
        pad0: 0,
        tsc_timestamp: 0,
        system_time: 0,
        tsc_to_system_mul: 0,
        tsc_shift: 0,
        flags: 0,
        pad: [0; 2],
    }),
    wall: UnsafeCell::new(PvclockWallClock { version: 0, sec: 0, nsec: 0 }),
};

fn snapshot() -> Option<PvclockSnapshot> {
    let p = SHARED.time.get();
    pvclock::read_snapshot(
        || {
            // SAFETY: `p` is valid, registered with KVM; a volatile load of one u32 field.
            let v = unsafe { core::ptr::read_volatile(&raw const (*p).version) };
            compiler_fence(Ordering::Acquire);
            v
        },
        // SAFETY: as above; a volatile copy of the whole (Copy) structure.
        || unsafe { core::ptr::read_volatile(p) },
        1000,
    )
    .ok()
}

struct KvmClock;

impl libos::time::ClockSource for KvmClock {
    fn now_ns(&self) -> u64 {
        // A torn read 1000 times in a row cannot happen with a live hypervisor; 0 keeps uptime monotonic.
        snapshot().map_or(0, |s| pvclock::system_time_ns(&s, rdtsc()))
    }
    fn name(&self) -> &'static str {
        "kvmclock"
    }
}

static CLOCK: KvmClock = KvmClock;

/// Registers the kvmclock structures with KVM and installs the clock and wall clock. Returns the feature
/// string for the boot log, or `None` when KVM does not offer CLOCKSOURCE2 (or never fills the structure).
pub fn init(d: &Detection) -> Option<String> {
    let kvm = d.find(HypervisorKind::Kvm)?.kvm()?;
    if !kvm.features.contains(libos::hypervisor::KvmFeatures::CLOCKSOURCE2) {
        return None;
    }
    let time_msr =
        pvclock::kvm_system_time_msr_value(libos::mem::dma::virt_to_phys(SHARED.time.get() as usize)).ok()?;
    let wall_msr = pvclock::kvm_wall_clock_msr_value(libos::mem::dma::virt_to_phys(SHARED.wall.get() as usize)).ok()?;
    // SAFETY: both structures are identity-mapped kernel memory owned by this module for the VM's lifetime.
    unsafe {
        wrmsr(pvclock::MSR_KVM_SYSTEM_TIME_NEW, time_msr);
        wrmsr(pvclock::MSR_KVM_WALL_CLOCK_NEW, wall_msr);
    }
    let s = snapshot()?;
    let hz = s.tsc_frequency_hz()?;
    libos::start::set_tsc_hz(hz);
    libos::time::set_clock(&CLOCK);
    // Uptime counts from the image's first instruction: kvmclock's value at the entry TSC.
    libos::time::set_origin_ns(pvclock::system_time_ns(&s, libos::start::entry_tsc()));
    // SAFETY: KVM wrote the wall clock during the MSR write above; one volatile copy.
    let wall = unsafe { core::ptr::read_volatile(SHARED.wall.get()) };
    let now = pvclock::system_time_ns(&s, rdtsc());
    libos::time::set_wall_clock(pvclock::wall_clock_ns(&wall, now), libos::time::uptime_ns());
    Some(format!("kvmclock ({} MHz TSC{})", hz / 1_000_000, if s.is_tsc_stable() { ", stable" } else { "" }))
}
