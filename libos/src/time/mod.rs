//! Time: a monotonic nanosecond clock ([`Instant`]) from the platform's clock source (kvmclock / Xen
//! `vcpu_time_info` — both pvclock — or the Hyper-V reference TSC page), falling back to the calibrated
//! TSC; the wall clock ([`SystemTime`]); and timers (`sleep`, `timeout`) that the executor arms on the
//! LAPIC timer or the platform's [`timer::TimerSource`], tickless.

pub mod pvclock;
pub mod timer;
pub mod tsc;

pub use core::time::Duration;
pub use timer::{sleep, sleep_until, timeout, Elapsed, Sleep};

use core::fmt;
use core::ops::{Add, AddAssign, Sub};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A monotonic clock the platform provides.
pub trait ClockSource: Sync {
    /// Nanoseconds since an arbitrary fixed origin; never decreases.
    fn now_ns(&self) -> u64;
    /// Short name for the boot log ("kvmclock", "tsc", "xen-pvclock", "hyperv-tsc-page").
    fn name(&self) -> &'static str;
}

static CLOCK: spin::Once<&'static dyn ClockSource> = spin::Once::new();
static CLOCK_SET: AtomicUsize = AtomicUsize::new(0);
static ORIGIN_NS: AtomicU64 = AtomicU64::new(0);
static LAST_NS: AtomicU64 = AtomicU64::new(0);
/// Unix time (ns) at uptime 0; 0 = unknown.
static WALL_AT_ORIGIN_NS: AtomicU64 = AtomicU64::new(0);

/// Installs the clock source (first caller wins; returns whether this one was installed). Uptime starts at
/// the moment of installation unless [`set_origin_ns`] moves it.
pub fn set_clock(clock: &'static dyn ClockSource) -> bool {
    if CLOCK_SET.swap(1, Ordering::AcqRel) != 0 {
        return false;
    }
    CLOCK.call_once(|| clock);
    ORIGIN_NS.store(clock.now_ns(), Ordering::Release);
    true
}

/// Moves uptime 0 to `ns` on the current clock's scale (used to count uptime from the first instruction).
pub fn set_origin_ns(ns: u64) {
    ORIGIN_NS.store(ns, Ordering::Release);
}

/// The installed clock's reading (ns on its own scale, [`ClockSource::now_ns`]) at uptime `uptime_ns`: how a timer
/// device that counts on the clock's scale (Hyper-V's reference time) expresses an uptime deadline.
pub fn clock_ns_at(uptime_ns: u64) -> u64 {
    uptime_ns.saturating_add(ORIGIN_NS.load(Ordering::Acquire))
}

/// The installed clock source's name, or "none".
pub fn clock_name() -> &'static str {
    CLOCK.get().map_or("none", |c| c.name())
}

/// Nanoseconds since boot (0 before a clock is installed). Monotonic even if the source steps back.
pub fn uptime_ns() -> u64 {
    let Some(c) = CLOCK.get() else { return 0 };
    let now = c.now_ns().saturating_sub(ORIGIN_NS.load(Ordering::Acquire));
    let last = LAST_NS.fetch_max(now, Ordering::AcqRel);
    now.max(last)
}

/// A point on the monotonic clock (ns since boot). Source of truth: [`uptime_ns`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// Now.
    pub fn now() -> Self {
        Self(uptime_ns())
    }

    /// The instant `ns` nanoseconds after boot.
    pub const fn from_nanos(ns: u64) -> Self {
        Self(ns)
    }

    /// Nanoseconds since boot.
    pub const fn as_nanos(&self) -> u64 {
        self.0
    }

    /// Time since `earlier` (zero if `earlier` is later).
    pub fn saturating_duration_since(&self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// Time since `earlier`, like `std::time::Instant::duration_since` (saturating).
    pub fn duration_since(&self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }

    /// Time elapsed since `self`.
    pub fn elapsed(&self) -> Duration {
        Instant::now().saturating_duration_since(*self)
    }

    /// `self + d`, or `None` on overflow.
    pub fn checked_add(&self, d: Duration) -> Option<Instant> {
        u64::try_from(d.as_nanos()).ok().and_then(|n| self.0.checked_add(n)).map(Instant)
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    /// Saturates at the end of time instead of overflowing.
    fn add(self, d: Duration) -> Instant {
        self.checked_add(d).unwrap_or(Instant(u64::MAX))
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, o: Instant) -> Duration {
        self.saturating_duration_since(o)
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:09}s", self.0 / 1_000_000_000, self.0 % 1_000_000_000)
    }
}

/// Sets the wall clock: `unix_ns` is the Unix time (ns) at uptime `at_uptime_ns`.
pub fn set_wall_clock(unix_ns: u64, at_uptime_ns: u64) {
    WALL_AT_ORIGIN_NS.store(unix_ns.saturating_sub(at_uptime_ns).max(1), Ordering::Release);
}

/// Wall-clock time as nanoseconds since the Unix epoch (UTC). Source: the platform's wall clock (kvmclock
/// `MSR_KVM_WALL_CLOCK_NEW`, Xen shared_info, Hyper-V time sync) or the CMOS RTC.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct SystemTime(u64);

/// The Unix epoch.
pub const UNIX_EPOCH: SystemTime = SystemTime(0);

impl SystemTime {
    /// Now, or `None` when no wall clock is known.
    pub fn now() -> Option<SystemTime> {
        let base = WALL_AT_ORIGIN_NS.load(Ordering::Acquire);
        (base != 0).then(|| SystemTime(base + uptime_ns()))
    }

    /// Time since the Unix epoch.
    pub fn since_epoch(&self) -> Duration {
        Duration::from_nanos(self.0)
    }
}

impl fmt::Display for SystemTime {
    /// RFC 3339 UTC, e.g. `2026-11-21T10:00:00.123456789Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0 / 1_000_000_000;
        let (y, m, d) = civil_from_days((secs / 86400) as i64);
        let s = secs % 86400;
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
            s / 3600,
            (s / 60) % 60,
            s % 60,
            self.0 % 1_000_000_000
        )
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's `civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month, day) → days since 1970-01-01 (inverse of [`civil_from_days`]).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_round_trips() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11017);
        assert_eq!(civil_from_days(days_from_civil(2026, 11, 21)), (2026, 11, 21));
        for d in (-100_000..100_000).step_by(97) {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }

    #[test]
    fn system_time_formats_rfc3339() {
        let t = SystemTime(1_763_719_200_123_000_000);
        assert_eq!(alloc::format!("{t}"), "2025-11-21T10:00:00.123000000Z");
    }

    #[test]
    fn instant_arithmetic_saturates() {
        let a = Instant::from_nanos(5);
        assert_eq!(Instant::from_nanos(3) - a, Duration::ZERO);
        assert_eq!((a + Duration::from_nanos(7)).as_nanos(), 12);
        assert_eq!((a + Duration::MAX).as_nanos(), u64::MAX);
    }
}
