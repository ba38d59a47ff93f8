//! Time on Xen: vCPU 0's `vcpu_time_info` in the shared-info page is a pvclock (same layout and math as
//! kvmclock, in `libos::time::pvclock`) and becomes the monotonic clock; `wc_sec`/`wc_nsec`/`wc_sec_hi` give the
//! wall clock at system time 0.
//! Source: Xen `xen/include/public/xen.h` (`struct vcpu_time_info`, `struct shared_info` wall-clock fields and
//! their version protocol), `features.h` (`XENFEAT_hvm_safe_pvclock`).
#![forbid(unsafe_code)]

use crate::abi::shared_info as si;
use crate::shared::SharedPage;
use core::sync::atomic::Ordering;
use libos::time::pvclock::{self, PvclockSnapshot, PvclockVcpuTimeInfo, NSEC_PER_SEC};
use libos::wire::{read_u32, read_u64, read_u8};

/// Reads attempts before giving up on a structure Xen keeps updating.
const MAX_ATTEMPTS: u32 = 1000;

/// Size of `struct vcpu_time_info` (bytes).
const TIME_INFO_LEN: usize = 32;

/// Byte ranges of `struct vcpu_time_info` (`xen.h`; the pvclock layout).
mod field {
    use libos::wire::Field;
    pub const VERSION: Field = 0..4;
    pub const TSC_TIMESTAMP: Field = 8..16;
    pub const SYSTEM_TIME: Field = 16..24;
    pub const TSC_TO_SYSTEM_MUL: Field = 24..28;
    pub const TSC_SHIFT: Field = 28..29;
    pub const FLAGS: Field = 29..30;
}

/// One copy of vCPU `vcpu`'s `vcpu_time_info` (not yet checked for consistency).
fn copy_time_info(page: &SharedPage, vcpu: usize) -> PvclockVcpuTimeInfo {
    let base = vcpu * si::VCPU_INFO_SIZE + si::VCPU_TIME;
    let mut b = [0u8; TIME_INFO_LEN];
    page.read(base, &mut b);
    // Every field lies inside the 32-byte copy.
    PvclockVcpuTimeInfo {
        version: read_u32(&b, field::VERSION),
        pad0: 0,
        tsc_timestamp: read_u64(&b, field::TSC_TIMESTAMP),
        system_time: read_u64(&b, field::SYSTEM_TIME),
        tsc_to_system_mul: read_u32(&b, field::TSC_TO_SYSTEM_MUL),
        tsc_shift: read_u8(&b, field::TSC_SHIFT) as i8,
        flags: read_u8(&b, field::FLAGS),
        pad: [0; 2],
    }
}

/// A consistent snapshot of vCPU `vcpu`'s time info (version protocol of `xen.h`). Errors: the pvclock errors
/// (torn reads, not filled in).
pub fn snapshot(page: &SharedPage, vcpu: usize) -> Result<PvclockSnapshot, pvclock::Error> {
    let version_at = vcpu * si::VCPU_INFO_SIZE + si::VCPU_TIME + field::VERSION.start;
    pvclock::read_snapshot(
        || page.u32_at(version_at).load(Ordering::Acquire),
        || copy_time_info(page, vcpu),
        MAX_ATTEMPTS,
    )
}

/// Wall clock at system time 0 in ns since the Unix epoch, read under `wc_version`. Errors: torn reads.
pub fn wall_clock_base_ns(page: &SharedPage) -> Result<u64, pvclock::Error> {
    let (sec, nsec) = pvclock::read_consistent(
        || page.u32_at(si::WC_VERSION).load(Ordering::Acquire),
        || {
            let lo = page.u32_at(si::WC_SEC).load(Ordering::Relaxed);
            let hi = page.u32_at(si::WC_SEC_HI).load(Ordering::Relaxed);
            let nsec = page.u32_at(si::WC_NSEC).load(Ordering::Relaxed);
            ((u64::from(hi) << 32) | u64::from(lo), nsec)
        },
        MAX_ATTEMPTS,
    )?;
    Ok(sec.saturating_mul(NSEC_PER_SEC).saturating_add(u64::from(nsec.min(999_999_999))))
}

#[cfg(target_os = "none")]
pub use guest::init;

#[cfg(target_os = "none")]
mod guest {
    use super::*;
    use alloc::format;
    use alloc::string::String;
    use libos::arch::x86_64::cpu::rdtsc;

    static PAGE: spin::Once<&'static SharedPage> = spin::Once::new();
    static GUARD: pvclock::MonotonicGuard = pvclock::MonotonicGuard::new();

    struct XenClock;

    impl libos::time::ClockSource for XenClock {
        fn now_ns(&self) -> u64 {
            let Some(page) = PAGE.get() else { return 0 };
            // A torn read 1000 times in a row cannot happen with a live hypervisor; 0 keeps uptime monotonic.
            snapshot(page, 0).map_or(0, |s| pvclock::clock_ns(&s, rdtsc(), pvclock::PVCLOCK_TSC_STABLE_BIT, &GUARD))
        }
        fn name(&self) -> &'static str {
            "xen-pvclock"
        }
    }

    static CLOCK: XenClock = XenClock;

    /// Installs vCPU 0's pvclock as the clock, the TSC frequency it implies, the uptime origin (the entry
    /// TSC) and the wall clock. Returns the feature string for the boot log. Errors: the pvclock is unusable.
    pub fn init(page: &'static SharedPage) -> Result<String, String> {
        let s = snapshot(page, 0).map_err(|e| format!("vcpu_time_info: {e}"))?;
        let hz = s.tsc_frequency_hz().ok_or("vcpu_time_info implies no TSC frequency")?;
        PAGE.call_once(|| page);
        libos::start::set_tsc_hz(hz);
        libos::time::set_clock(&CLOCK);
        libos::time::set_origin_ns(pvclock::system_time_ns(&s, libos::start::entry_tsc()));
        // LAPIC one-shot timers need the rate before the first timeout (a no-op in TSC-deadline mode).
        libos::arch::x86_64::apic::calibrate(hz / 1000);
        let wall = wall_clock_base_ns(page).map_err(|e| format!("wall clock: {e}"))?;
        if wall != 0 {
            let now = pvclock::system_time_ns(&s, rdtsc());
            libos::time::set_wall_clock(wall.saturating_add(now), libos::time::uptime_ns());
        }
        Ok(format!("pvclock ({} MHz TSC{})", hz / 1_000_000, if s.is_tsc_stable() { ", stable" } else { "" }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xen_page(version: u32, mul: u32, shift: i8) -> SharedPage {
        let p = SharedPage::new().expect("page");
        let t = si::VCPU_TIME;
        // Offsets written out from xen.h, independent of `field`.
        p.u32_at(t).store(version, Ordering::Relaxed);
        p.u64_at(t + 8).store(1_000_000, Ordering::Relaxed);
        p.u64_at(t + 16).store(5_000_000_000, Ordering::Relaxed);
        p.u32_at(t + 24).store(mul, Ordering::Relaxed);
        p.u8_at(t + 28).store(shift as u8, Ordering::Relaxed);
        p.u8_at(t + 29).store(1, Ordering::Relaxed);
        p
    }

    #[test]
    fn reads_vcpu0_time_info() {
        // 2 GHz: mul = 2^31, shift 0 (0.5 ns per tick).
        let p = xen_page(4, 1 << 31, 0);
        let s = snapshot(&p, 0).expect("snapshot");
        assert_eq!((s.tsc_timestamp, s.system_time, s.tsc_shift), (1_000_000, 5_000_000_000, 0));
        assert!(s.is_tsc_stable());
        assert_eq!(s.tsc_frequency_hz(), Some(2_000_000_000));
        assert_eq!(pvclock::system_time_ns(&s, 3_000_000), 5_001_000_000);
    }

    #[test]
    fn odd_version_and_empty_structure_are_errors() {
        assert_eq!(snapshot(&xen_page(5, 1 << 31, 0), 0), Err(pvclock::Error::Torn { attempts: MAX_ATTEMPTS }));
        assert_eq!(snapshot(&xen_page(2, 0, 0), 0), Err(pvclock::Error::ZeroMultiplier));
    }

    #[test]
    fn wall_clock_with_high_seconds() {
        let p = SharedPage::new().expect("page");
        p.u32_at(si::WC_VERSION).store(2, Ordering::Relaxed);
        p.u32_at(si::WC_SEC).store(5, Ordering::Relaxed);
        p.u32_at(si::WC_SEC_HI).store(1, Ordering::Relaxed);
        p.u32_at(si::WC_NSEC).store(7, Ordering::Relaxed);
        assert_eq!(wall_clock_base_ns(&p), Ok(((1u64 << 32) + 5) * NSEC_PER_SEC + 7));
        p.u32_at(si::WC_VERSION).store(3, Ordering::Relaxed);
        assert!(wall_clock_base_ns(&p).is_err());
    }
}
