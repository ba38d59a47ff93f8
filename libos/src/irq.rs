//! From an interrupt to the task that waits for it: [`critical`] masks interrupts around task-side locking, and
//! a [`WakeSlot`] holds the wakers an event source (a virtio queue's MSI-X vector, a Xen event channel port, a
//! VMBus channel's SynIC event flag) wakes. Interrupt handlers only call [`WakeSlot::wake`]; all device work runs
//! on the task side.
//!
//! On the host (unit tests) `critical` is a plain call: the "interrupt" is another thread and the spin locks
//! suffice.
#![forbid(unsafe_code)]

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use core::task::{Context, Poll, Waker};
use spin::Mutex;

/// Runs `f` with interrupts masked on the guest, so an interrupt handler on the same CPU never spins on a lock
/// the interrupted task holds (a slot's, a device's). Nests: the previous interrupt state is restored.
pub fn critical<R>(f: impl FnOnce() -> R) -> R {
    crate::arch_without_interrupts(f)
}

/// The tasks one event source wakes: at most one persistent waker (a device's driver task, set once and kept)
/// and any number of one-shot waiters (futures waiting for one event, e.g. a reply). An event that finds nobody
/// registered is remembered and delivered at the next registration, so an interrupt that races the first
/// registration is never lost.
pub struct WakeSlot {
    persistent: Mutex<Option<Waker>>,
    waiters: Mutex<Vec<Waker>>,
    /// An event arrived when nobody was registered.
    pending: AtomicBool,
    events: AtomicU64,
}

impl WakeSlot {
    /// An empty slot.
    pub const fn new() -> Self {
        Self {
            persistent: Mutex::new(None),
            waiters: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            events: AtomicU64::new(0),
        }
    }

    /// Sets the persistent waker (replacing a different previous one); wakes it at once when an event arrived
    /// unobserved.
    pub fn set_waker(&self, waker: &Waker) {
        critical(|| {
            let mut w = self.persistent.lock();
            if !w.as_ref().is_some_and(|old| old.will_wake(waker)) {
                *w = Some(waker.clone());
            }
        });
        self.deliver_pending(waker);
    }

    /// Adds a one-shot waiter (once per task), woken and dropped at the next event; wakes it at once when an
    /// event arrived unobserved. Register *before* checking the condition waited for, so an event in between
    /// is not lost.
    pub fn register(&self, waker: &Waker) {
        critical(|| {
            let mut w = self.waiters.lock();
            if !w.iter().any(|x| x.will_wake(waker)) {
                w.push(waker.clone());
            }
        });
        self.deliver_pending(waker);
    }

    fn deliver_pending(&self, waker: &Waker) {
        if self.pending.swap(false, Ordering::AcqRel) {
            waker.wake_by_ref();
        }
    }

    /// Delivers one event (interrupt context allowed): wakes every one-shot waiter and the persistent waker,
    /// or remembers the event when nobody is registered.
    pub fn wake(&self) {
        self.events.fetch_add(1, Ordering::Relaxed);
        let waiters = critical(|| core::mem::take(&mut *self.waiters.lock()));
        let persistent = critical(|| self.persistent.lock().clone());
        if waiters.is_empty() && persistent.is_none() {
            self.pending.store(true, Ordering::Release);
        }
        for w in waiters {
            w.wake();
        }
        if let Some(w) = persistent {
            w.wake();
        }
    }

    /// Polls for a condition this slot's events change: `Ready` with `check`'s value when it has one, else
    /// registers a one-shot waiter and checks once more (an event between the first check and the registration
    /// is not lost), then `Pending`.
    pub fn poll_until<R>(&self, cx: &mut Context<'_>, mut check: impl FnMut() -> Option<R>) -> Poll<R> {
        if let Some(r) = check() {
            return Poll::Ready(r);
        }
        self.register(cx.waker());
        match check() {
            Some(r) => Poll::Ready(r),
            None => Poll::Pending,
        }
    }

    /// Events delivered since creation (diagnostics).
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }
}

impl Default for WakeSlot {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicU64);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicU64::new(0)));
        (c.clone(), Waker::from(c))
    }

    #[test]
    fn persistent_waker_sees_early_and_later_events() {
        let s = WakeSlot::new();
        s.wake(); // before any waker
        let (c, w) = counter();
        s.set_waker(&w);
        assert_eq!(c.0.load(Ordering::SeqCst), 1, "the early event is delivered on registration");
        s.set_waker(&w);
        assert_eq!(c.0.load(Ordering::SeqCst), 1, "only once");
        s.wake();
        s.wake();
        assert_eq!(c.0.load(Ordering::SeqCst), 3, "persistent: woken by every event");
        assert_eq!(s.events(), 3);
    }

    #[test]
    fn one_shot_waiters_are_woken_once_each() {
        let s = WakeSlot::new();
        s.wake();
        let (a, wa) = counter();
        let (b, wb) = counter();
        s.register(&wa);
        assert_eq!(a.0.load(Ordering::SeqCst), 1, "early event delivered on registration");
        s.register(&wa);
        s.register(&wb);
        s.wake();
        assert_eq!(a.0.load(Ordering::SeqCst), 2, "registered twice, woken once");
        assert_eq!(b.0.load(Ordering::SeqCst), 1);
        s.wake();
        assert_eq!(a.0.load(Ordering::SeqCst), 2, "one-shot until registered again");
        assert_eq!(s.events(), 3);
    }

    #[test]
    fn poll_until_registers_between_checks() {
        let s = WakeSlot::new();
        let (c, w) = counter();
        let mut cx = Context::from_waker(&w);
        let mut calls = 0;
        assert_eq!(
            s.poll_until(&mut cx, || {
                calls += 1;
                None::<()>
            }),
            Poll::Pending
        );
        assert_eq!(calls, 2, "checked before and after registering");
        s.wake();
        assert_eq!(c.0.load(Ordering::SeqCst), 1);
        assert_eq!(s.poll_until(&mut cx, || Some(7)), Poll::Ready(7));
    }
}
