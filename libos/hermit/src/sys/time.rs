//! Clocks and sleeping: `CLOCK_MONOTONIC` is the kernel's uptime clock (ns since boot), `CLOCK_REALTIME` the
//! wall clock (RTC or platform, 1970 when none is known); sleeps park the thread on the executor's timers.
// `#[no_mangle]` counts as unsafe code: every function here is a symbol std links against. No `unsafe` block
// here; the caller's pointers go through `crate::user` (`sys::tests` checks).
#![allow(unsafe_code)]

use super::call;
use crate::abi::{self, timespec};
use crate::errno::{AbiResult, Errno};
use crate::user;

fn timespec_of(ns: u64) -> timespec {
    timespec { tv_sec: (ns / 1_000_000_000) as i64, tv_nsec: (ns % 1_000_000_000) as i32 }
}

/// A `timespec` as nanoseconds. Errors: `EINVAL` for negative or out-of-range fields.
pub fn nanos_of(t: timespec) -> AbiResult<u64> {
    if t.tv_sec < 0 || !(0..1_000_000_000).contains(&t.tv_nsec) {
        return Err(Errno::EINVAL);
    }
    Ok((t.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec as u64))
}

/// Writes the time of `clockid` (`CLOCK_MONOTONIC` or `CLOCK_REALTIME`) to `tp`. Errors: `EINVAL` for another
/// clock, `EFAULT`.
#[no_mangle]
pub extern "C" fn sys_clock_gettime(clockid: i32, tp: *mut timespec) -> i32 {
    let ns = match clockid {
        abi::CLOCK_MONOTONIC => libos::time::uptime_ns(),
        abi::CLOCK_REALTIME => libos::time::SystemTime::now().map_or(0, |t| t.since_epoch().as_nanos() as u64),
        _ => {
            libos::thread::set_errno(Errno::EINVAL.0);
            return -Errno::EINVAL.0;
        }
    };
    match user::write(tp, timespec_of(ns)) {
        Ok(()) => 0,
        Err(e) => {
            libos::thread::set_errno(e.0);
            -e.0
        }
    }
}

/// Sleeps at least `req`. Errors: `EINVAL` for a bad `timespec`, `EFAULT`.
#[no_mangle]
pub extern "C" fn sys_nanosleep(req: *const timespec) -> i32 {
    call(|| {
        let ns = nanos_of(user::read(req)?)?;
        libos::thread::sleep_until(libos::time::uptime_ns().saturating_add(ns));
        Ok(0)
    })
}

/// Sleeps at least `usecs` microseconds.
#[no_mangle]
pub extern "C" fn sys_usleep(usecs: u64) {
    let _inside = libos::thread::no_preempt();
    libos::thread::sleep_until(libos::time::uptime_ns().saturating_add(usecs.saturating_mul(1000)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespecs_convert_and_bad_ones_are_einval() {
        assert_eq!(timespec_of(1_500_000_001), timespec { tv_sec: 1, tv_nsec: 500_000_001 });
        assert_eq!(nanos_of(timespec { tv_sec: 2, tv_nsec: 5 }), Ok(2_000_000_005));
        assert_eq!(nanos_of(timespec { tv_sec: -1, tv_nsec: 0 }), Err(Errno::EINVAL));
        assert_eq!(nanos_of(timespec { tv_sec: 0, tv_nsec: 1_000_000_000 }), Err(Errno::EINVAL));
        assert_eq!(nanos_of(timespec { tv_sec: i64::MAX, tv_nsec: 0 }), Ok(u64::MAX));
    }
}
