//! Wake-up plumbing between the SynIC interrupt (which only scans event flags and wakes tasks) and the tasks that
//! drive VMBus channels, in the style of libos's interrupt slots: task-side locking runs with interrupts masked so
//! the handler on the same CPU never spins on a lock the task holds.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use core::task::Waker;
use spin::Mutex;

/// Runs `f` with interrupts masked on the bare target (no-op on the host, where the "interrupt" is another
/// thread and the spin locks suffice).
pub fn critical<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_os = "none")]
    return libos::arch::x86_64::cpu::without_interrupts(f);
    #[cfg(not(target_os = "none"))]
    f()
}

/// Tasks waiting for one event source (a channel's ring, the message slot). [`WakeList::wake_all`] wakes every
/// registered task; an event with nobody registered is remembered and delivered at the next registration.
#[derive(Default)]
pub struct WakeList {
    wakers: Mutex<Vec<Waker>>,
    pending: AtomicBool,
    events: AtomicU64,
}

impl WakeList {
    /// An empty list.
    pub const fn new() -> Self {
        Self { wakers: Mutex::new(Vec::new()), pending: AtomicBool::new(false), events: AtomicU64::new(0) }
    }

    /// Registers `waker` (once per task) and wakes it at once when an event arrived unobserved.
    pub fn register(&self, waker: &Waker) {
        critical(|| {
            let mut w = self.wakers.lock();
            if !w.iter().any(|x| x.will_wake(waker)) {
                w.push(waker.clone());
            }
        });
        if self.pending.swap(false, Ordering::AcqRel) {
            waker.wake_by_ref();
        }
    }

    /// Wakes every registered task (interrupt context allowed).
    pub fn wake_all(&self) {
        self.events.fetch_add(1, Ordering::Relaxed);
        let list = core::mem::take(&mut *self.wakers.lock());
        if list.is_empty() {
            self.pending.store(true, Ordering::Release);
        }
        for w in list {
            w.wake();
        }
    }

    /// Events seen since creation (diagnostics).
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
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

    #[test]
    fn wakes_all_and_remembers_early_events() {
        let l = WakeList::new();
        l.wake_all();
        let a = Arc::new(Count(AtomicU64::new(0)));
        let b = Arc::new(Count(AtomicU64::new(0)));
        let wa = Waker::from(a.clone());
        let wb = Waker::from(b.clone());
        l.register(&wa);
        assert_eq!(a.0.load(Ordering::SeqCst), 1, "early event delivered on registration");
        l.register(&wa);
        l.register(&wb);
        l.wake_all();
        assert_eq!(a.0.load(Ordering::SeqCst), 2);
        assert_eq!(b.0.load(Ordering::SeqCst), 1);
        l.wake_all();
        assert_eq!(a.0.load(Ordering::SeqCst), 2, "wakers are one-shot until registered again");
        assert_eq!(l.events(), 3);
    }
}
