//! Blocking the calling thread until a condition holds: the condition registers the thread's waker with whatever
//! can change it (a socket, an eventfd, a futex), then the thread parks; the interrupt, timer or task that
//! changes it wakes the waker, which unparks the thread.
#![forbid(unsafe_code)]

use crate::errno::{AbiResult, Errno};
use core::task::Waker;
use core::time::Duration;

/// A deadline `timeout` from now (uptime ns), `None` for none.
pub fn deadline(timeout: Option<Duration>) -> Option<u64> {
    timeout.map(|t| libos::time::uptime_ns().saturating_add(u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)))
}

/// Parks the calling thread until `ready(waker)` is true (`ready` registers the waker where the condition can
/// change, then checks it), or until `deadline_ns` (uptime ns). Errors: `EAGAIN` when the deadline passed
/// first (what `SO_RCVTIMEO` expiry returns on POSIX systems).
pub fn block_until(deadline_ns: Option<u64>, mut ready: impl FnMut(&Waker) -> bool) -> AbiResult<()> {
    let waker = libos::thread::waker(libos::thread::current());
    loop {
        if ready(&waker) {
            return Ok(());
        }
        match deadline_ns {
            Some(d) if libos::time::uptime_ns() >= d => return Err(Errno::EAGAIN),
            Some(d) => libos::thread::park_until(d),
            None => libos::thread::park(),
        }
    }
}
