//! `poll` events from a [`Readiness`]: which of the requested events hold, plus the ones POSIX always reports.
//! Source: POSIX.1-2017 `poll()` (POLLERR, POLLHUP and POLLNVAL are reported whether asked for or not); Linux
//! for POLLRDHUP (the peer closed its sending half).
#![forbid(unsafe_code)]

use crate::abi::{POLLERR, POLLHUP, POLLIN, POLLOUT, POLLRDHUP, POLLRDNORM, POLLWRNORM};
use net::Readiness;

/// The `revents` for `requested` events of an object in state `r`.
pub fn revents(requested: i16, r: Readiness) -> i16 {
    let mut out = 0;
    if r.readable {
        out |= requested & (POLLIN | POLLRDNORM);
    }
    if r.writable {
        out |= requested & (POLLOUT | POLLWRNORM);
    }
    if r.read_closed {
        out |= requested & POLLRDHUP;
    }
    if r.hangup {
        out |= POLLHUP;
    }
    if r.error {
        out |= POLLERR;
    }
    out
}

/// Milliseconds of a `poll` timeout as a deadline (uptime ns): `None` (wait forever) for a negative value.
pub fn deadline(now_ns: u64, timeout_ms: i32) -> Option<u64> {
    u64::try_from(timeout_ms).ok().map(|ms| now_ns.saturating_add(ms * 1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_requested_events_plus_errors() {
        let r = Readiness { readable: true, writable: true, ..Readiness::default() };
        assert_eq!(revents(POLLIN, r), POLLIN);
        assert_eq!(revents(POLLOUT | POLLWRNORM, r), POLLOUT | POLLWRNORM);
        assert_eq!(revents(0, r), 0);
        let dead = Readiness { readable: true, writable: true, read_closed: true, hangup: true, error: true };
        assert_eq!(revents(POLLIN, dead), POLLIN | POLLHUP | POLLERR, "HUP and ERR even when not asked");
        assert_eq!(revents(POLLRDHUP, dead) & POLLRDHUP, POLLRDHUP);
    }

    #[test]
    fn timeouts() {
        assert_eq!(deadline(5, -1), None);
        assert_eq!(deadline(5, 0), Some(5));
        assert_eq!(deadline(5, 2), Some(2_000_005));
    }
}
