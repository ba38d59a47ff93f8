//! Futex wait queues: threads waiting on a 32-bit word's address until another thread wakes that address (std's
//! `Mutex`, `Condvar`, `RwLock`, `Once` and thread parking are built on `futex_wait`/`futex_wake`). The queue
//! logic here is pure and host-tested; `sys::futex` adds the atomic check of the word and the parking.
//! Source: `hermit-abi` 0.5 docs of `futex_wait`/`futex_wake`; Linux `futex(2)` for the semantics.
#![forbid(unsafe_code)]

use alloc::collections::{BTreeMap, VecDeque};
use libos::thread::Tid;

/// A waiter's place in the queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

/// Waiters per address, oldest first, and which tickets were woken.
#[derive(Default)]
pub struct FutexQueues {
    waiting: BTreeMap<usize, VecDeque<(Ticket, Tid)>>,
    woken: alloc::collections::BTreeSet<Ticket>,
    next: u64,
}

impl FutexQueues {
    /// No waiters.
    pub const fn new() -> Self {
        Self { waiting: BTreeMap::new(), woken: alloc::collections::BTreeSet::new(), next: 0 }
    }

    /// Queues thread `tid` on `addr`.
    pub fn enqueue(&mut self, addr: usize, tid: Tid) -> Ticket {
        let t = Ticket(self.next);
        self.next += 1;
        self.waiting.entry(addr).or_default().push_back((t, tid));
        t
    }

    /// Wakes up to `count` waiters on `addr`, oldest first; returns their threads (to unpark).
    pub fn wake(&mut self, addr: usize, count: usize) -> alloc::vec::Vec<Tid> {
        let mut out = alloc::vec::Vec::new();
        if let Some(q) = self.waiting.get_mut(&addr) {
            while out.len() < count {
                let Some((t, tid)) = q.pop_front() else { break };
                self.woken.insert(t);
                out.push(tid);
            }
            if q.is_empty() {
                self.waiting.remove(&addr);
            }
        }
        out
    }

    /// Whether `t` was woken; forgets it if so.
    pub fn take_woken(&mut self, t: Ticket) -> bool {
        self.woken.remove(&t)
    }

    /// Withdraws `t` (a timeout); returns whether it had been woken meanwhile (then the wake counts).
    pub fn cancel(&mut self, addr: usize, t: Ticket) -> bool {
        if self.take_woken(t) {
            return true;
        }
        if let Some(q) = self.waiting.get_mut(&addr) {
            q.retain(|(x, _)| *x != t);
            if q.is_empty() {
                self.waiting.remove(&addr);
            }
        }
        false
    }

    /// Waiters queued (all addresses).
    pub fn waiters(&self) -> usize {
        self.waiting.values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wakes_oldest_first_and_counts() {
        let mut q = FutexQueues::new();
        let a = q.enqueue(0x100, Tid(1));
        let b = q.enqueue(0x100, Tid(2));
        let c = q.enqueue(0x200, Tid(3));
        assert_eq!(q.wake(0x100, 1), alloc::vec![Tid(1)]);
        assert!(q.take_woken(a));
        assert!(!q.take_woken(a), "taken once");
        assert!(!q.take_woken(b));
        assert_eq!(q.wake(0x100, usize::MAX), alloc::vec![Tid(2)]);
        assert_eq!(q.wake(0x100, 5), alloc::vec![], "nobody left");
        assert_eq!(q.waiters(), 1);
        assert!(!q.cancel(0x200, c), "a timeout before any wake");
        assert_eq!(q.waiters(), 0);
    }

    #[test]
    fn a_wake_that_races_a_timeout_still_counts() {
        let mut q = FutexQueues::new();
        let t = q.enqueue(0x10, Tid(4));
        assert_eq!(q.wake(0x10, 1), alloc::vec![Tid(4)]);
        assert!(q.cancel(0x10, t), "woken before the timeout was handled");
        assert_eq!(q.wake(0x10, 0), alloc::vec![]);
    }
}
