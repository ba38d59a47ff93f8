//! `poll` over any descriptors (how mio, and so tokio, waits for sockets) and `eventfd` (how mio wakes its
//! poller).
// `#[no_mangle]` counts as unsafe code: every function here is a symbol std links against. No `unsafe` block
// here; the caller's pointers go through `crate::user` (`sys::tests` checks).
#![allow(unsafe_code)]

use super::call;
use crate::abi::{pollfd, POLLNVAL};
use crate::errno::Errno;
use crate::eventfd::EventFd;
use crate::object::{self, Kind, Object};
use crate::poll::{deadline, revents};
use crate::user;

/// Waits until one of the `nfds` descriptors in `fds` has a requested event, or `timeout` ms passed (0: check
/// once; negative: no limit); writes each `revents` and returns how many descriptors have events (0 on
/// timeout). Negative descriptors are skipped; unknown ones get `POLLNVAL`. Errors: `EINVAL` for more than
/// 4096 descriptors, `EFAULT`.
#[no_mangle]
pub extern "C" fn sys_poll(fds: *mut pollfd, nfds: usize, timeout: i32) -> i32 {
    call(|| {
        if nfds > crate::fd::MAX_FDS {
            return Err(Errno::EINVAL);
        }
        user::check(fds as usize, nfds.saturating_mul(core::mem::size_of::<pollfd>()))?;
        let until = deadline(libos::time::uptime_ns(), timeout);
        let waker = libos::thread::waker(libos::thread::current());
        loop {
            let mut ready = 0;
            for i in 0..nfds {
                let p = fds.wrapping_add(i);
                let mut e = user::read(p)?;
                e.revents = if e.fd < 0 {
                    0
                } else {
                    match object::get(e.fd) {
                        Ok(obj) => revents(e.events, obj.readiness(Some(&waker))),
                        Err(_) => POLLNVAL,
                    }
                };
                if e.revents != 0 {
                    ready += 1;
                }
                user::write(p, e)?;
            }
            if ready > 0 || timeout == 0 {
                return Ok(ready);
            }
            match until {
                Some(d) if libos::time::uptime_ns() >= d => return Ok(0),
                Some(d) => libos::thread::park_until(d),
                None => libos::thread::park(),
            }
        }
    })
}

/// Creates an eventfd with counter `initval` (`EFD_SEMAPHORE`, `EFD_NONBLOCK`, `EFD_CLOEXEC` in `flags`).
/// Errors: `EINVAL` for unknown flags, `EMFILE`.
#[no_mangle]
pub extern "C" fn sys_eventfd(initval: u64, flags: i16) -> i32 {
    use crate::abi::{EFD_CLOEXEC, EFD_NONBLOCK, EFD_SEMAPHORE};
    call(|| {
        if flags & !(EFD_SEMAPHORE | EFD_NONBLOCK | EFD_CLOEXEC) != 0 {
            return Err(Errno::EINVAL);
        }
        let e = EventFd::new(initval, flags & EFD_SEMAPHORE != 0);
        object::install(Object::with_flags(Kind::EventFd(e), flags & EFD_NONBLOCK != 0))
    })
}
