//! `sys_futex_wait` / `sys_futex_wake`: the primitive under std's locks, condition variables and thread parking.
// `#[no_mangle]` counts as unsafe code: every function here is a symbol std links against. No `unsafe` block
// here; the caller's pointers go through `crate::user` (`sys::tests` checks).
#![allow(unsafe_code)]

use super::call;
use super::time::nanos_of;
use crate::abi::{self, timespec};
use crate::errno::Errno;
use crate::futex::FutexQueues;
use crate::user;
use libos::thread;
use spin::Mutex;

static QUEUES: Mutex<FutexQueues> = Mutex::new(FutexQueues::new());

/// If `*address == expected`, parks the thread until [`sys_futex_wake`] on `address` (returns 0) or the timeout
/// passes (`-ETIMEDOUT`). `timeout` null: none; else absolute on `CLOCK_MONOTONIC`, or relative with
/// `FUTEX_RELATIVE_TIMEOUT` in `flags`. Errors: `EAGAIN` when the word differs, `ETIMEDOUT`, `EINVAL` for a
/// null or misaligned address, a bad timeout or unknown flags, `EFAULT`.
#[no_mangle]
pub extern "C" fn sys_futex_wait(address: *mut u32, expected: u32, timeout: *const timespec, flags: u32) -> i32 {
    call(|| {
        if address.is_null() || !(address as usize).is_multiple_of(4) || flags & !abi::FUTEX_RELATIVE_TIMEOUT != 0 {
            return Err(Errno::EINVAL);
        }
        let deadline = match user::read_opt(timeout)? {
            None => None,
            Some(t) => {
                let ns = nanos_of(t)?;
                Some(if flags & abi::FUTEX_RELATIVE_TIMEOUT != 0 {
                    libos::time::uptime_ns().saturating_add(ns)
                } else {
                    ns
                })
            }
        };
        let addr = address as usize;
        let ticket = {
            // The check and the enqueue under the queues' lock: a waker takes the same lock, so no wake-up
            // between them is lost.
            let mut q = QUEUES.lock();
            let word = user::read(address as *const u32)?;
            if word != expected {
                return Err(Errno::EAGAIN);
            }
            q.enqueue(addr, thread::current())
        };
        loop {
            if QUEUES.lock().take_woken(ticket) {
                return Ok(0);
            }
            match deadline {
                Some(d) if libos::time::uptime_ns() >= d => {
                    return if QUEUES.lock().cancel(addr, ticket) { Ok(0) } else { Err(Errno::ETIMEDOUT) };
                }
                Some(d) => thread::park_until(d),
                None => thread::park(),
            }
        }
    })
}

/// Wakes up to `count` threads waiting on `address` (`i32::MAX`: all); returns how many. Errors: `EINVAL` for
/// a null address or a negative count.
#[no_mangle]
pub extern "C" fn sys_futex_wake(address: *mut u32, count: i32) -> i32 {
    call(|| {
        if address.is_null() || count < 0 {
            return Err(Errno::EINVAL);
        }
        let woken = QUEUES.lock().wake(address as usize, count as usize);
        for &t in &woken {
            thread::unpark(t);
        }
        Ok(i32::try_from(woken.len()).unwrap_or(i32::MAX))
    })
}
