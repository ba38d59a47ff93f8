//! `eventfd` objects: a 64-bit counter that `write` adds to and `read` takes (all of it, or 1 in semaphore
//! mode), with readiness for `poll`. mio (and so tokio) wakes its poller thread through one.
//! Source: Linux `eventfd(2)` (the semantics `libc` users expect; Hermit's `sys_eventfd` has the same shape).
#![forbid(unsafe_code)]

use crate::errno::{AbiResult, Errno};
use crate::wait::block_until;
use libos::irq::WakeSlot;
use net::Readiness;
use spin::Mutex;

/// Largest counter value (`u64::MAX - 1`; a write that would pass it waits).
pub const MAX: u64 = u64::MAX - 1;

/// An eventfd.
pub struct EventFd {
    count: Mutex<u64>,
    semaphore: bool,
    /// Readers, writers and pollers waiting for the counter to change.
    slot: WakeSlot,
}

impl EventFd {
    /// A counter starting at `initial`, in semaphore mode (`EFD_SEMAPHORE`) or not.
    pub fn new(initial: u64, semaphore: bool) -> Self {
        Self { count: Mutex::new(initial.min(MAX)), semaphore, slot: WakeSlot::new() }
    }

    /// Takes the counter (or 1 of it) into `buf` as 8 native-endian bytes; waits while it is 0 unless
    /// `nonblocking`. Errors: `EINVAL` for a buffer under 8 bytes, `EAGAIN` (non-blocking, counter 0).
    pub fn read(&self, buf: &mut [u8], nonblocking: bool) -> AbiResult<usize> {
        let out = buf.get_mut(..8).ok_or(Errno::EINVAL)?;
        loop {
            let taken = {
                let mut c = self.count.lock();
                let v = if self.semaphore { u64::from(*c > 0) } else { *c };
                *c -= v;
                v
            };
            if taken > 0 {
                out.copy_from_slice(&taken.to_ne_bytes());
                self.slot.wake();
                return Ok(8);
            }
            if nonblocking {
                return Err(Errno::EAGAIN);
            }
            self.wait(|r| r.readable)?;
        }
    }

    /// Adds the 8-byte native-endian value in `buf`; waits while that would pass [`MAX`] unless `nonblocking`.
    /// Errors: `EINVAL` for a short buffer or the value `u64::MAX`, `EAGAIN` (non-blocking, would overflow).
    pub fn write(&self, buf: &[u8], nonblocking: bool) -> AbiResult<usize> {
        let bytes: [u8; 8] = buf.get(..8).and_then(|b| b.try_into().ok()).ok_or(Errno::EINVAL)?;
        let v = u64::from_ne_bytes(bytes);
        if v == u64::MAX {
            return Err(Errno::EINVAL);
        }
        loop {
            let added = {
                let mut c = self.count.lock();
                let fits = *c <= MAX - v;
                if fits {
                    *c += v;
                }
                fits
            };
            if added {
                self.slot.wake();
                return Ok(8);
            }
            if nonblocking {
                return Err(Errno::EAGAIN);
            }
            self.wait(|r| r.writable)?;
        }
    }

    /// Readable when the counter is above 0, writable while it is below [`MAX`]; with `waker`, registers it
    /// for the next change.
    pub fn readiness(&self, waker: Option<&core::task::Waker>) -> Readiness {
        if let Some(w) = waker {
            self.slot.register(w);
        }
        let c = *self.count.lock();
        Readiness { readable: c > 0, writable: c < MAX, ..Readiness::default() }
    }

    fn wait(&self, want: impl Fn(Readiness) -> bool) -> AbiResult<()> {
        block_until(None, |w| want(self.readiness(Some(w))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(v: u64) -> [u8; 8] {
        v.to_ne_bytes()
    }

    #[test]
    fn counter_adds_and_reads_all() {
        let e = EventFd::new(0, false);
        let mut buf = [0u8; 8];
        assert_eq!(e.read(&mut buf, true), Err(Errno::EAGAIN));
        assert!(!e.readiness(None).readable);
        assert_eq!(e.write(&word(3), true), Ok(8));
        assert_eq!(e.write(&word(4), true), Ok(8));
        assert!(e.readiness(None).readable);
        assert_eq!(e.read(&mut buf, true), Ok(8));
        assert_eq!(u64::from_ne_bytes(buf), 7);
        assert_eq!(e.read(&mut buf, true), Err(Errno::EAGAIN));
    }

    #[test]
    fn semaphore_mode_takes_one() {
        let e = EventFd::new(2, true);
        let mut buf = [0u8; 8];
        assert_eq!(e.read(&mut buf, true), Ok(8));
        assert_eq!(u64::from_ne_bytes(buf), 1);
        assert_eq!(e.read(&mut buf, true), Ok(8));
        assert_eq!(e.read(&mut buf, true), Err(Errno::EAGAIN));
    }

    #[test]
    fn bad_buffers_and_overflow() {
        let e = EventFd::new(MAX - 1, false);
        assert_eq!(e.read(&mut [0u8; 4], true), Err(Errno::EINVAL));
        assert_eq!(e.write(&[0u8; 7], true), Err(Errno::EINVAL));
        assert_eq!(e.write(&word(u64::MAX), true), Err(Errno::EINVAL));
        assert_eq!(e.write(&word(2), true), Err(Errno::EAGAIN), "would pass the maximum");
        assert_eq!(e.write(&word(1), true), Ok(8));
        assert!(!e.readiness(None).writable);
    }
}
