//! pvclock, the paravirtual clock ABI shared by KVM's kvmclock and Xen's `vcpu_time_info`: structure layouts, the
//! TSC→ns scaling, the version-checked (seqlock) read and the monotonicity guard.
//!
//! Sources: Linux `arch/x86/include/asm/pvclock-abi.h` and `arch/x86/include/asm/pvclock.h`; KVM
//! `Documentation/virt/kvm/x86/msr.rst` (MSR_KVM_SYSTEM_TIME_NEW, MSR_KVM_WALL_CLOCK_NEW); Xen
//! `xen/include/public/xen.h` (`struct vcpu_time_info`, same layout). Pure logic: the caller maps the structure,
//! reads it with volatile loads and passes the copies and TSC values in.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

/// KVM MSR taking the guest-physical address of a [`PvclockWallClock`] (4-byte aligned); the hypervisor fills
/// it once per write. Source: KVM `msr.rst`, MSR_KVM_WALL_CLOCK_NEW; needs `KvmFeatures::CLOCKSOURCE2`.
pub const MSR_KVM_WALL_CLOCK_NEW: u32 = 0x4b56_4d00;
/// KVM MSR taking the guest-physical address of this vCPU's [`PvclockVcpuTimeInfo`] (4-byte aligned) ORed with
/// [`KVM_MSR_ENABLED`]. Source: KVM `msr.rst`, MSR_KVM_SYSTEM_TIME_NEW; needs `KvmFeatures::CLOCKSOURCE2`.
pub const MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;
/// Deprecated wall clock MSR, same data as [`MSR_KVM_WALL_CLOCK_NEW`]; needs `KvmFeatures::CLOCKSOURCE`.
pub const MSR_KVM_WALL_CLOCK: u32 = 0x11;
/// Deprecated system time MSR, same data as [`MSR_KVM_SYSTEM_TIME_NEW`]; needs `KvmFeatures::CLOCKSOURCE`.
pub const MSR_KVM_SYSTEM_TIME: u32 = 0x12;
/// Bit 0 of the MSR_KVM_SYSTEM_TIME(_NEW) value: enable updates. Source: KVM `msr.rst`.
pub const KVM_MSR_ENABLED: u64 = 1;
/// `flags` bit: the TSC is stable across vCPUs, no cross-vCPU monotonicity guard is needed (only to be trusted
/// when KVM advertises `KvmFeatures::CLOCKSOURCE_STABLE_BIT`). Source: `pvclock-abi.h`.
pub const PVCLOCK_TSC_STABLE_BIT: u8 = 1 << 0;
/// `flags` bit: the guest was stopped by the host (watchdogs should be touched). Source: `pvclock-abi.h`.
pub const PVCLOCK_GUEST_STOPPED: u8 = 1 << 1;
/// Nanoseconds per second.
pub const NSEC_PER_SEC: u64 = 1_000_000_000;
/// Page size the KVM structures must not straddle (4 KiB).
const PAGE_SIZE: u64 = 4096;

/// Errors from the pvclock helpers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The version stayed odd or changed during every one of `attempts` reads: the hypervisor kept updating the
    /// structure (or `attempts` was 0).
    Torn {
        /// Reads tried.
        attempts: u32,
    },
    /// `tsc_to_system_mul` is 0: the hypervisor has not filled the structure in (MSR not written yet, or the
    /// wrong address was registered).
    ZeroMultiplier,
    /// A structure registered with the hypervisor must be 4-byte aligned and lie within one 4 KiB page.
    Misplaced {
        /// Guest-physical address given.
        gpa: u64,
        /// Size of the structure in bytes.
        size: u64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Torn { attempts } => {
                write!(f, "pvclock version odd or changing in all {attempts} reads; the hypervisor keeps updating it")
            }
            Error::ZeroMultiplier => {
                f.write_str("pvclock tsc_to_system_mul is 0: the hypervisor has not filled in the time structure")
            }
            Error::Misplaced { gpa, size } => write!(
                f,
                "pvclock structure at guest-physical {gpa:#x} ({size} bytes) must be 4-byte aligned and inside one \
                 4 KiB page"
            ),
        }
    }
}

/// Per-vCPU time information written by the hypervisor (`struct pvclock_vcpu_time_info`, 32 bytes; Xen's
/// `struct vcpu_time_info` has the same layout). Time since boot in ns is
/// `system_time + scale_delta(tsc - tsc_timestamp, tsc_to_system_mul, tsc_shift)`.
/// Source: Linux `pvclock-abi.h`; Xen `public/xen.h`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PvclockVcpuTimeInfo {
    /// Odd while the hypervisor updates the structure; changes on every update.
    pub version: u32,
    /// Padding.
    pub pad0: u32,
    /// TSC value (ticks) at which `system_time` was taken.
    pub tsc_timestamp: u64,
    /// Guest time since boot in ns at `tsc_timestamp`.
    pub system_time: u64,
    /// TSC→ns multiplier, a 32-bit binary fraction (ns per tick · 2^32 / 2^tsc_shift).
    pub tsc_to_system_mul: u32,
    /// Power-of-two shift applied to the TSC delta before multiplying (negative: shift right).
    pub tsc_shift: i8,
    /// `PVCLOCK_*` flags.
    pub flags: u8,
    /// Padding.
    pub pad: [u8; 2],
}

/// Wall clock at boot written by the hypervisor (`struct pvclock_wall_clock`, 12 bytes); the current wall clock
/// is this plus the system time. Source: Linux `pvclock-abi.h`; KVM `msr.rst` MSR_KVM_WALL_CLOCK_NEW.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PvclockWallClock {
    /// Odd while the hypervisor updates the structure.
    pub version: u32,
    /// Seconds since 1970-01-01 00:00 UTC at boot (system time 0).
    pub sec: u32,
    /// Nanoseconds part, 0..1_000_000_000.
    pub nsec: u32,
}

/// A consistent copy of the fields of [`PvclockVcpuTimeInfo`] that the time computation uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PvclockSnapshot {
    /// TSC value (ticks) at which `system_time` was taken.
    pub tsc_timestamp: u64,
    /// Guest time since boot in ns at `tsc_timestamp`.
    pub system_time: u64,
    /// TSC→ns multiplier (32-bit binary fraction), never 0.
    pub tsc_to_system_mul: u32,
    /// Shift applied to the TSC delta before multiplying.
    pub tsc_shift: i8,
    /// `PVCLOCK_*` flags.
    pub flags: u8,
}

impl PvclockSnapshot {
    /// Takes the time fields of a consistent copy. Errors with [`Error::ZeroMultiplier`] when the hypervisor has
    /// not filled the structure in.
    pub fn from_time_info(info: &PvclockVcpuTimeInfo) -> Result<Self, Error> {
        if info.tsc_to_system_mul == 0 {
            return Err(Error::ZeroMultiplier);
        }
        Ok(PvclockSnapshot {
            tsc_timestamp: info.tsc_timestamp,
            system_time: info.system_time,
            tsc_to_system_mul: info.tsc_to_system_mul,
            tsc_shift: info.tsc_shift,
            flags: info.flags,
        })
    }

    /// Whether the hypervisor set [`PVCLOCK_TSC_STABLE_BIT`].
    pub fn is_tsc_stable(&self) -> bool {
        self.flags & PVCLOCK_TSC_STABLE_BIT != 0
    }

    /// The TSC frequency in Hz this snapshot implies; see [`tsc_frequency_hz`].
    pub fn tsc_frequency_hz(&self) -> Option<u64> {
        tsc_frequency_hz(self.tsc_to_system_mul, self.tsc_shift)
    }
}

/// Scales a TSC delta (ticks) to ns exactly as the hypervisor does: shift `delta` left by `shift` (right when
/// negative), multiply by `mul_frac` and keep bits 32 and up of the product (`pvclock_scale_delta` in Linux
/// `pvclock.h`). Computed in 128 bits, so deltas the 64-bit original would overflow on still scale correctly;
/// a result above `u64::MAX` saturates. Source: Linux `arch/x86/include/asm/pvclock.h`.
pub fn scale_delta(delta: u64, mul_frac: u32, shift: i8) -> u64 {
    let scaled = if shift < 0 {
        let delta = delta.checked_shr(u32::from(shift.unsigned_abs())).unwrap_or(0);
        (u128::from(delta) * u128::from(mul_frac)) >> 32
    } else {
        // (delta << shift) * mul == (delta * mul) << shift, and delta * mul < 2^96 cannot overflow.
        let product = u128::from(delta) * u128::from(mul_frac);
        let shift = u32::from(shift.unsigned_abs());
        if shift <= 32 {
            (product << shift) >> 32
        } else if product.leading_zeros() >= shift - 32 {
            product << (shift - 32)
        } else {
            u128::MAX
        }
    };
    u64::try_from(scaled).unwrap_or(u64::MAX)
}

/// Guest time since boot in ns at TSC value `tsc`: `system_time + scale_delta(tsc - tsc_timestamp, ...)`.
/// A `tsc` below `tsc_timestamp` (a TSC read before the snapshot was taken) counts as delta 0 rather than
/// wrapping to a time far in the future. Source: Linux `__pvclock_read_cycles` in `pvclock.h`.
pub fn system_time_ns(snapshot: &PvclockSnapshot, tsc: u64) -> u64 {
    let delta = tsc.saturating_sub(snapshot.tsc_timestamp);
    snapshot.system_time.saturating_add(scale_delta(delta, snapshot.tsc_to_system_mul, snapshot.tsc_shift))
}

/// The TSC frequency in Hz implied by a pvclock scale: `10^9 · 2^32 / mul`, shifted by `-shift`. `None` when
/// `mul` is 0 or the result does not fit in a `u64` (or is 0). Source: Linux `pvclock_tsc_khz` in
/// `arch/x86/kernel/pvclock.c` (which computes the same in kHz).
pub fn tsc_frequency_hz(mul: u32, shift: i8) -> Option<u64> {
    if mul == 0 {
        return None;
    }
    let hz = (u128::from(NSEC_PER_SEC) << 32) / u128::from(mul);
    let hz = if shift < 0 {
        let shift = u32::from(shift.unsigned_abs());
        if shift >= 64 {
            return None;
        }
        hz << shift
    } else {
        hz >> u32::from(shift.unsigned_abs())
    };
    u64::try_from(hz).ok().filter(|&hz| hz != 0)
}

/// Computes the `(mul, shift)` pair that scales a `base_hz` counter to `scaled_hz` units, the same way KVM
/// builds the pvclock it publishes (`kvm_get_time_scale` in Linux `arch/x86/kvm/x86.c`): first halve the base
/// until it fits in 32 bits and is at most twice the target, then double it (or halve the target) until the base
/// is above the target, so `mul = (scaled << 32) / base` is a 32-bit fraction in [0.5, 1).
/// For a TSC, `time_scale(tsc_hz, NSEC_PER_SEC)`. `None` when either frequency is 0.
pub fn time_scale(base_hz: u64, scaled_hz: u64) -> Option<(u32, i8)> {
    if base_hz == 0 || scaled_hz == 0 {
        return None;
    }
    let mut base = base_hz;
    let mut scaled = scaled_hz;
    let mut shift: i32 = 0;
    while base > scaled.saturating_mul(2) || base > u64::from(u32::MAX) {
        base >>= 1;
        shift -= 1;
    }
    // Loop above ends with 1 <= base <= u32::MAX.
    let mut base = base as u32;
    while u64::from(base) <= scaled || scaled > u64::from(u32::MAX) {
        if scaled > u64::from(u32::MAX) || base & 0x8000_0000 != 0 {
            scaled >>= 1;
        } else {
            base <<= 1;
        }
        shift += 1;
    }
    // scaled < base, so the quotient is below 2^32; shift stays within -64..=64.
    let mul = ((scaled << 32) / u64::from(base)) as u32;
    Some((mul, shift as i8))
}

/// Reads a hypervisor-updated structure consistently (the pvclock seqlock): read `version`, retry while it is
/// odd (update in progress), `copy` the fields, read `version` again and retry if it changed. Gives up after
/// `max_attempts` tries with [`Error::Torn`] instead of spinning forever.
///
/// `version` must be a volatile read of the version field, and the caller must keep the loads in `copy` between
/// the two `version` reads (on x86 a compiler fence is enough: loads are not reordered with older loads, Intel
/// SDM Vol. 3A §9.2.2). Source: KVM `msr.rst` ("guest has to check version before and after grabbing time
/// information and check that they are both equal and even"); Linux `pvclock_read_begin/retry`.
pub fn read_consistent<T>(
    mut version: impl FnMut() -> u32,
    mut copy: impl FnMut() -> T,
    max_attempts: u32,
) -> Result<T, Error> {
    for _ in 0..max_attempts {
        let before = version();
        if before & 1 == 0 {
            let value = copy();
            if version() == before {
                return Ok(value);
            }
        }
        core::hint::spin_loop();
    }
    Err(Error::Torn { attempts: max_attempts })
}

/// [`read_consistent`] for a [`PvclockVcpuTimeInfo`], checked into a [`PvclockSnapshot`].
pub fn read_snapshot(
    version: impl FnMut() -> u32,
    copy: impl FnMut() -> PvclockVcpuTimeInfo,
    max_attempts: u32,
) -> Result<PvclockSnapshot, Error> {
    PvclockSnapshot::from_time_info(&read_consistent(version, copy, max_attempts)?)
}

/// Wall clock in ns since 1970-01-01 00:00 UTC: the boot wall clock plus `system_time_ns` (saturating).
/// Source: KVM `msr.rst` ("the system_time from MSR_KVM_SYSTEM_TIME_NEW needs to be added").
pub fn wall_clock_ns(wall: &PvclockWallClock, system_time_ns: u64) -> u64 {
    (u64::from(wall.sec) * NSEC_PER_SEC).saturating_add(u64::from(wall.nsec)).saturating_add(system_time_ns)
}

/// Checks that a `size`-byte structure at `gpa` is 4-byte aligned and inside one 4 KiB page.
fn check_placement(gpa: u64, size: u64) -> Result<(), Error> {
    if gpa & 3 != 0 || (gpa & (PAGE_SIZE - 1)) + size > PAGE_SIZE {
        return Err(Error::Misplaced { gpa, size });
    }
    Ok(())
}

/// Value to write to [`MSR_KVM_SYSTEM_TIME_NEW`] to register a [`PvclockVcpuTimeInfo`] at guest-physical `gpa`:
/// `gpa | KVM_MSR_ENABLED`. Errors with [`Error::Misplaced`] unless the 32 bytes are 4-byte aligned and within one
/// page (KVM maps the structure through one page). Source: KVM `msr.rst`.
pub fn kvm_system_time_msr_value(gpa: u64) -> Result<u64, Error> {
    check_placement(gpa, core::mem::size_of::<PvclockVcpuTimeInfo>() as u64)?;
    Ok(gpa | KVM_MSR_ENABLED)
}

/// Value to write to [`MSR_KVM_WALL_CLOCK_NEW`] for a [`PvclockWallClock`] at guest-physical `gpa` (the address
/// itself). Errors with [`Error::Misplaced`] unless 4-byte aligned and within one page. Source: KVM `msr.rst`.
pub fn kvm_wall_clock_msr_value(gpa: u64) -> Result<u64, Error> {
    check_placement(gpa, core::mem::size_of::<PvclockWallClock>() as u64)?;
    Ok(gpa)
}

/// `max(last, now)`: a clock reading that never goes below the previous one.
pub fn monotonic(last: u64, now: u64) -> u64 {
    last.max(now)
}

/// Keeps pvclock readings monotonic across vCPUs when the TSC is not known to be stable (Linux keeps the same
/// `last_value` in `pvclock_clocksource_read`). Lock-free; usable from several vCPUs at once.
#[derive(Debug, Default)]
pub struct MonotonicGuard {
    last: AtomicU64,
}

impl MonotonicGuard {
    /// A guard whose last reading is 0 ns.
    pub const fn new() -> Self {
        MonotonicGuard { last: AtomicU64::new(0) }
    }

    /// Records `now_ns` and returns `max(largest reading so far, now_ns)`.
    pub fn observe(&self, now_ns: u64) -> u64 {
        monotonic(self.last.fetch_max(now_ns, Ordering::Relaxed), now_ns)
    }

    /// The largest reading recorded so far, in ns.
    pub fn last(&self) -> u64 {
        self.last.load(Ordering::Relaxed)
    }
}

/// Guest time since boot in ns at TSC value `tsc`, made monotonic through `guard` unless the snapshot's
/// [`PVCLOCK_TSC_STABLE_BIT`] is set and allowed by `valid_flags` (pass `PVCLOCK_TSC_STABLE_BIT` only when KVM
/// advertises `KvmFeatures::CLOCKSOURCE_STABLE_BIT`, else 0). Source: Linux `pvclock_clocksource_read`.
pub fn clock_ns(snapshot: &PvclockSnapshot, tsc: u64, valid_flags: u8, guard: &MonotonicGuard) -> u64 {
    let now = system_time_ns(snapshot, tsc);
    if snapshot.flags & valid_flags & PVCLOCK_TSC_STABLE_BIT != 0 {
        now
    } else {
        guard.observe(now)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use core::cell::Cell;
    use core::mem::{offset_of, size_of};

    #[test]
    fn abi_layout() {
        assert_eq!(size_of::<PvclockVcpuTimeInfo>(), 32);
        assert_eq!(offset_of!(PvclockVcpuTimeInfo, version), 0);
        assert_eq!(offset_of!(PvclockVcpuTimeInfo, pad0), 4);
        assert_eq!(offset_of!(PvclockVcpuTimeInfo, tsc_timestamp), 8);
        assert_eq!(offset_of!(PvclockVcpuTimeInfo, system_time), 16);
        assert_eq!(offset_of!(PvclockVcpuTimeInfo, tsc_to_system_mul), 24);
        assert_eq!(offset_of!(PvclockVcpuTimeInfo, tsc_shift), 28);
        assert_eq!(offset_of!(PvclockVcpuTimeInfo, flags), 29);
        assert_eq!(offset_of!(PvclockVcpuTimeInfo, pad), 30);
        assert_eq!(size_of::<PvclockWallClock>(), 12);
        assert_eq!(offset_of!(PvclockWallClock, version), 0);
        assert_eq!(offset_of!(PvclockWallClock, sec), 4);
        assert_eq!(offset_of!(PvclockWallClock, nsec), 8);
    }

    /// Exact ns for `ticks` at `hz`, rounded down.
    fn exact_ns(ticks: u64, hz: u64) -> u64 {
        (u128::from(ticks) * u128::from(NSEC_PER_SEC) / u128::from(hz)) as u64
    }

    /// Recorded on the development host: QEMU 10.0.2 `-accel kvm -cpu qemu64,+invtsc,vmware-cpuid-freq=on`, a
    /// multiboot probe wrote MSR_KVM_WALL_CLOCK_NEW and MSR_KVM_SYSTEM_TIME_NEW, then printed RDTSC and both
    /// structures twice. The same VM's timing leaf said 2445432 kHz; the host's `date +%s` right after the run
    /// printed 1795235635.
    const RECORDED_KVMCLOCK: PvclockVcpuTimeInfo = PvclockVcpuTimeInfo {
        version: 2,
        pad0: 0,
        tsc_timestamp: 0x0000_012f_57ec_eeb0,
        system_time: 0x0000_0000_002b_36ec,
        tsc_to_system_mul: 0xd15e_b5b2,
        tsc_shift: -1,
        flags: PVCLOCK_TSC_STABLE_BIT,
        pad: [0; 2],
    };
    const RECORDED_WALL_CLOCK: PvclockWallClock = PvclockWallClock { version: 2, sec: 0x6b01_1ef7, nsec: 0x27b5_c7df };
    const RECORDED_TSC: [u64; 2] = [0x0000_0131_687f_3f3e, 0x0000_0151_575a_abf9];

    #[test]
    fn recorded_kvmclock() {
        let snapshot = read_snapshot(|| 2, || RECORDED_KVMCLOCK, 1).expect("consistent");
        assert!(snapshot.is_tsc_stable());
        assert_eq!(snapshot.tsc_frequency_hz(), Some(2_445_432_000));
        // KVM derived its published scale from the guest TSC rate the same way time_scale does.
        assert_eq!(time_scale(2_445_432_000, NSEC_PER_SEC), Some((0xd15e_b5b2, -1)));
        // 3.6 s after VM creation (SeaBIOS boot), then 59.7 s after a slow busy loop.
        assert_eq!(system_time_ns(&snapshot, RECORDED_TSC[0]), 3_629_168_446);
        assert_eq!(system_time_ns(&snapshot, RECORDED_TSC[1]), 59_713_878_131);
        let wall = wall_clock_ns(&RECORDED_WALL_CLOCK, system_time_ns(&snapshot, RECORDED_TSC[1]));
        assert_eq!(wall / NSEC_PER_SEC, 1_795_235_635);
    }

    #[test]
    fn kvm_scale_for_2_5_ghz() {
        // 2.5 GHz: halve once to 1.25 GHz (<= 2 GHz), mul = 10^9 · 2^32 / 1.25·10^9 = 0.8 · 2^32, truncated.
        let (mul, shift) = time_scale(2_500_000_000, NSEC_PER_SEC).expect("scale");
        assert_eq!((mul, shift), (3_435_973_836, -1));
        assert_eq!(tsc_frequency_hz(mul, shift), Some(2_500_000_000));
        for delta in [0u64, 1, 2, 3, 1000, 2_500_000_000, 1 << 32, (1 << 40) - 1, 1 << 40] {
            // The hypervisor's formula, written out: (delta >> 1) * mul >> 32.
            let fixed = (u128::from(delta >> 1) * u128::from(mul)) >> 32;
            let ns = scale_delta(delta, mul, shift);
            assert_eq!(u128::from(ns), fixed, "delta {delta}");
            let exact = exact_ns(delta, 2_500_000_000);
            assert!(ns <= exact, "never ahead: delta {delta}");
            if delta <= 1 << 32 {
                assert!(exact - ns <= 1, "within 1 ns up to 2^32 ticks: delta {delta}, {ns} vs {exact}");
            }
            // The 32-bit fraction is exact to 2^-31 relative, plus one ns of truncation.
            assert!(exact - ns <= (exact >> 31) + 1, "delta {delta}: {ns} vs {exact}");
        }
        // 2^40 ticks at 2.5 GHz = 439.8 s.
        assert_eq!(scale_delta(1 << 40, mul, shift) / NSEC_PER_SEC, 439);
    }

    #[test]
    fn kvm_scale_for_other_frequencies() {
        assert_eq!(time_scale(1_000_000_000, NSEC_PER_SEC), Some((1 << 31, 1)));
        assert_eq!(time_scale(800_000_000, NSEC_PER_SEC), Some((2_684_354_560, 1)));
        for hz in [1_193_182u64, 10_000_000, 1_000_000_000, 2_445_432_000, 3_999_999_999, 5_000_000_000, 40_000_000_000]
        {
            let (mul, shift) = time_scale(hz, NSEC_PER_SEC).expect("scale");
            assert!(mul >= 1 << 31, "{hz}: fraction in [0.5, 1)");
            let back = tsc_frequency_hz(mul, shift).expect("frequency");
            assert!(back.abs_diff(hz) <= hz / (1 << 30) + 1, "{hz} -> {back}");
            let ticks = hz * 7; // seven seconds
            let ns = system_time_ns(
                &PvclockSnapshot {
                    tsc_timestamp: 0,
                    system_time: 0,
                    tsc_to_system_mul: mul,
                    tsc_shift: shift,
                    flags: 0,
                },
                ticks,
            );
            assert!(ns.abs_diff(7 * NSEC_PER_SEC) <= 7 * NSEC_PER_SEC / (1 << 30) + 2, "{hz}: {ns}");
        }
        assert_eq!(time_scale(0, NSEC_PER_SEC), None);
        assert_eq!(time_scale(1, 0), None);
        assert!(time_scale(u64::MAX, 1).is_some());
        assert!(time_scale(1, u64::MAX).is_some());
    }

    #[test]
    fn scale_delta_edges() {
        assert_eq!(scale_delta(u64::MAX, u32::MAX, 0), ((u128::from(u64::MAX) * u128::from(u32::MAX)) >> 32) as u64);
        assert_eq!(scale_delta(u64::MAX, u32::MAX, 1), u64::MAX, "saturates");
        assert_eq!(scale_delta(1 << 40, 1 << 31, 10), 1 << 49);
        assert_eq!(scale_delta(1, 1 << 31, 40), 1 << 39);
        assert_eq!(scale_delta(u64::MAX, u32::MAX, -64), 0);
        assert_eq!(scale_delta(u64::MAX, u32::MAX, i8::MIN), 0);
        assert_eq!(scale_delta(3, u32::MAX, i8::MAX), u64::MAX);
        assert_eq!(scale_delta(0, u32::MAX, i8::MAX), 0);
        assert_eq!(scale_delta(12345, 0, 5), 0);
    }

    #[test]
    fn frequency_edges() {
        assert_eq!(tsc_frequency_hz(0, 0), None);
        assert_eq!(tsc_frequency_hz(1, -64), None);
        assert_eq!(tsc_frequency_hz(1, -3), None, "does not fit in u64");
        assert_eq!(tsc_frequency_hz(u32::MAX, 100), None, "rounds to 0 Hz");
        assert_eq!(tsc_frequency_hz(1 << 31, 1), Some(1_000_000_000));
    }

    #[test]
    fn system_time_before_snapshot_does_not_wrap() {
        let snapshot = PvclockSnapshot {
            tsc_timestamp: 1_000_000,
            system_time: 5_000,
            tsc_to_system_mul: 1 << 31,
            tsc_shift: 1,
            flags: 0,
        };
        assert_eq!(system_time_ns(&snapshot, 999_999), 5_000);
        assert_eq!(system_time_ns(&snapshot, 1_000_010), 5_010);
        let near_end = PvclockSnapshot { system_time: u64::MAX - 1, ..snapshot };
        assert_eq!(system_time_ns(&near_end, 2_000_000), u64::MAX);
    }

    /// A hypervisor update in progress, as a script of what successive reads see.
    struct Script {
        versions: &'static [u32],
        next_version: Cell<usize>,
        copies: Cell<u64>,
    }

    impl Script {
        fn version(&self) -> u32 {
            let i = self.next_version.get();
            self.next_version.set(i + 1);
            self.versions[i.min(self.versions.len() - 1)]
        }
        fn copy(&self) -> PvclockVcpuTimeInfo {
            let n = self.copies.get() + 1;
            self.copies.set(n);
            PvclockVcpuTimeInfo {
                system_time: n * 1000,
                tsc_to_system_mul: 1 << 31,
                tsc_shift: 1,
                ..Default::default()
            }
        }
    }

    #[test]
    fn read_retries_on_odd_and_changed_versions() {
        // Read 1: version 3 (odd) -> retry without copying. Read 2: 4, copy #1, then 6 (changed) -> retry.
        // Read 3: 6, copy #2, 6 -> done with copy #2.
        let script = Script { versions: &[3, 4, 6, 6, 6], next_version: Cell::new(0), copies: Cell::new(0) };
        let snapshot = read_snapshot(|| script.version(), || script.copy(), 10).expect("consistent");
        assert_eq!(snapshot.system_time, 2000);
        assert_eq!(script.copies.get(), 2);
    }

    #[test]
    fn read_gives_up_when_always_updating() {
        let script = Script { versions: &[7], next_version: Cell::new(0), copies: Cell::new(0) };
        assert_eq!(read_snapshot(|| script.version(), || script.copy(), 5), Err(Error::Torn { attempts: 5 }));
        assert_eq!(script.copies.get(), 0);
        assert_eq!(read_consistent(|| 0, || 1u8, 0), Err(Error::Torn { attempts: 0 }));
        let zero = read_snapshot(|| 2, PvclockVcpuTimeInfo::default, 3);
        assert_eq!(zero, Err(Error::ZeroMultiplier));
    }

    #[test]
    fn wall_clock_reads_consistently() {
        let wall = PvclockWallClock { version: 2, sec: 1_700_000_000, nsec: 250_000_000 };
        let copy = read_consistent(|| wall.version, || wall, 3).expect("wall clock");
        assert_eq!(wall_clock_ns(&copy, 1_750_000_000), 1_700_000_002 * NSEC_PER_SEC);
        assert_eq!(wall_clock_ns(&PvclockWallClock { version: 0, sec: u32::MAX, nsec: 0 }, u64::MAX), u64::MAX);
    }

    #[test]
    fn msr_values() {
        assert_eq!(kvm_system_time_msr_value(0x1000), Ok(0x1001));
        assert_eq!(kvm_system_time_msr_value(0x1fe0), Ok(0x1fe1));
        assert_eq!(kvm_system_time_msr_value(0x1fe4), Err(Error::Misplaced { gpa: 0x1fe4, size: 32 }));
        assert_eq!(kvm_system_time_msr_value(0x1002), Err(Error::Misplaced { gpa: 0x1002, size: 32 }));
        assert_eq!(kvm_wall_clock_msr_value(0x2ff4), Ok(0x2ff4));
        assert_eq!(kvm_wall_clock_msr_value(0x2ff8), Err(Error::Misplaced { gpa: 0x2ff8, size: 12 }));
        let text = std::format!("{}", Error::Misplaced { gpa: 0x2ff8, size: 12 });
        assert_eq!(
            text,
            "pvclock structure at guest-physical 0x2ff8 (12 bytes) must be 4-byte aligned and inside one 4 KiB page"
        );
    }

    #[test]
    fn monotonic_guard_applies_unless_stable() {
        let guard = MonotonicGuard::new();
        let readings: std::vec::Vec<u64> = [10u64, 5, 20, 15].iter().map(|&n| guard.observe(n)).collect();
        assert_eq!(readings, [10, 10, 20, 20]);
        assert_eq!(guard.last(), 20);
        assert_eq!(monotonic(7, 3), 7);

        let guard = MonotonicGuard::new();
        let stable = PvclockSnapshot {
            tsc_timestamp: 100,
            system_time: 1_000,
            tsc_to_system_mul: 1 << 31,
            tsc_shift: 1,
            flags: PVCLOCK_TSC_STABLE_BIT,
        };
        let unstable = PvclockSnapshot { flags: 0, ..stable };
        guard.observe(5_000);
        // Stable and trusted: the raw reading, even below what another vCPU saw.
        assert_eq!(clock_ns(&stable, 200, PVCLOCK_TSC_STABLE_BIT, &guard), 1_100);
        // Stable bit set but not trusted (no CLOCKSOURCE_STABLE_BIT feature): guarded.
        assert_eq!(clock_ns(&stable, 200, 0, &guard), 5_000);
        assert_eq!(clock_ns(&unstable, 200, PVCLOCK_TSC_STABLE_BIT, &guard), 5_000);
        assert_eq!(clock_ns(&unstable, 10_000, PVCLOCK_TSC_STABLE_BIT, &guard), 10_900);
        assert!(stable.is_tsc_stable() && !unstable.is_tsc_stable());
    }
}
