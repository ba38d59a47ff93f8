//! The scheduler's bookkeeping, without any hardware: which threads exist, their states, the run queue of
//! threads ready to run, park tokens and joiners. The executor (thread 0) is not in the run queue: it runs
//! whenever a thread gives the CPU back (park, yield, exit, preemption) and picks the next thread itself, so it
//! has priority over every thread. Pure and host-tested; `thread::mod` does the context switches it decides.
#![forbid(unsafe_code)]

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use core::fmt;

/// A thread id. [`Tid::EXECUTOR`] is the boot thread that runs the async executor; others count up from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tid(pub u32);

impl Tid {
    /// The boot thread, which runs the async executor (network stack, timers, no_std apps).
    pub const EXECUTOR: Tid = Tid(0);
}

impl fmt::Display for Tid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "thread {}", self.0)
    }
}

/// A thread's scheduling state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// In the run queue, waiting for the CPU.
    Runnable,
    /// On the CPU.
    Running,
    /// Waiting for [`Sched::unpark`].
    Parked,
}

struct Entry {
    state: State,
    /// An unpark that found the thread not parked: its next park returns at once (as `std::thread::park`).
    token: bool,
    /// Threads waiting in `join` for this one.
    joiners: Vec<Tid>,
}

/// What [`Sched::park_current`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Park {
    /// A token was pending: the caller returns at once.
    Consumed,
    /// The caller is now parked and must switch to the executor.
    Switch,
}

/// Errors of [`Sched`] operations that name a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedError {
    /// No such thread (never spawned, or already reaped after it exited and was joined).
    NoSuchThread(Tid),
    /// A thread tried to join itself.
    JoinSelf(Tid),
    /// The thread ids are used up (2^32 spawns).
    TidsExhausted,
}

impl fmt::Display for SchedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSuchThread(t) => write!(f, "{t} does not exist"),
            Self::JoinSelf(t) => write!(f, "{t} cannot join itself"),
            Self::TidsExhausted => f.write_str("thread ids exhausted"),
        }
    }
}

/// Thread states, the run queue and the current thread.
pub struct Sched {
    threads: BTreeMap<Tid, Entry>,
    run_queue: VecDeque<Tid>,
    current: Tid,
    next: u32,
}

impl Default for Sched {
    fn default() -> Self {
        Self::new()
    }
}

impl Sched {
    /// Only the executor, running.
    pub const fn new() -> Self {
        Self { threads: BTreeMap::new(), run_queue: VecDeque::new(), current: Tid::EXECUTOR, next: 1 }
    }

    /// The thread on the CPU.
    pub fn current(&self) -> Tid {
        self.current
    }

    /// The state of `t` (`None` when unknown or exited; the executor is not tracked).
    pub fn state(&self, t: Tid) -> Option<State> {
        self.threads.get(&t).map(|e| e.state)
    }

    /// Threads that have not exited (the executor excluded).
    pub fn live(&self) -> usize {
        self.threads.len()
    }

    /// Whether some thread waits for the CPU.
    pub fn any_runnable(&self) -> bool {
        !self.run_queue.is_empty()
    }

    /// Allocates the next thread id and adds the thread, runnable at the back of the queue. Errors:
    /// [`SchedError::TidsExhausted`].
    pub fn add(&mut self) -> Result<Tid, SchedError> {
        let t = Tid(self.next);
        self.next = self.next.checked_add(1).ok_or(SchedError::TidsExhausted)?;
        self.threads.insert(t, Entry { state: State::Runnable, token: false, joiners: Vec::new() });
        self.run_queue.push_back(t);
        Ok(t)
    }

    /// Makes `t` runnable if it is parked, else leaves a token so its next park returns at once. Unparking an
    /// exited or unknown thread does nothing. Returns whether `t` entered the run queue.
    pub fn unpark(&mut self, t: Tid) -> bool {
        let Some(e) = self.threads.get_mut(&t) else { return false };
        match e.state {
            State::Parked => {
                e.state = State::Runnable;
                self.run_queue.push_back(t);
                true
            }
            State::Runnable | State::Running => {
                e.token = true;
                false
            }
        }
    }

    /// Parks the current thread (not the executor, which never parks): consumes a pending token, or marks
    /// it parked.
    pub fn park_current(&mut self) -> Park {
        let Some(e) = self.threads.get_mut(&self.current) else { return Park::Consumed };
        if core::mem::take(&mut e.token) {
            return Park::Consumed;
        }
        e.state = State::Parked;
        Park::Switch
    }

    /// The current thread gives up the CPU but stays runnable (yield or preemption): back of the queue.
    pub fn requeue_current(&mut self) {
        if let Some(e) = self.threads.get_mut(&self.current) {
            if e.state == State::Running {
                e.state = State::Runnable;
                self.run_queue.push_back(self.current);
            }
        }
    }

    /// The current thread has returned from its entry: forgets it (ids are never reused, so a later join
    /// of it returns at once) and returns its joiners, which are unparked.
    pub fn exit_current(&mut self) -> Vec<Tid> {
        let joiners = self.threads.remove(&self.current).map(|e| e.joiners).unwrap_or_default();
        for &j in &joiners {
            self.unpark(j);
        }
        joiners
    }

    /// Registers the current thread as a joiner of `t`. Returns `Ok(true)` when `t` has exited already (no
    /// wait), `Ok(false)` when the caller must park until unparked and check again. Errors:
    /// [`SchedError::NoSuchThread`], [`SchedError::JoinSelf`].
    pub fn join(&mut self, t: Tid) -> Result<bool, SchedError> {
        let me = self.current;
        if t == me {
            return Err(SchedError::JoinSelf(t));
        }
        let Some(e) = self.threads.get_mut(&t) else {
            // Handed out and gone: it exited.
            return if t != Tid::EXECUTOR && t.0 < self.next { Ok(true) } else { Err(SchedError::NoSuchThread(t)) };
        };
        if !e.joiners.contains(&me) {
            e.joiners.push(me);
        }
        Ok(false)
    }

    /// Takes the next runnable thread off the queue and makes it current (called on the executor). `None`
    /// when no thread is runnable.
    pub fn switch_from_executor(&mut self) -> Option<Tid> {
        while let Some(t) = self.run_queue.pop_front() {
            if let Some(e) = self.threads.get_mut(&t) {
                if e.state == State::Runnable {
                    e.state = State::Running;
                    self.current = t;
                    return Some(t);
                }
            }
        }
        None
    }

    /// Makes the executor current again (the thread that was current has parked, yielded, exited or been
    /// preempted). Returns the thread that left.
    pub fn switch_to_executor(&mut self) -> Tid {
        core::mem::replace(&mut self.current, Tid::EXECUTOR)
    }
}

/// What the end of an interrupt that arrived while a thread ran does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtInterruptExit {
    /// Requeue the thread and give the CPU to the executor.
    ToExecutor,
    /// Keep running until `slice_end` (uptime ns); the timer device must be armed again for `arm_at` (uptime
    /// ns), because the interrupt may have been that device firing before any deadline was due (a one-shot
    /// count from a rate measured under a loaded host runs short), and nothing else would arm it again.
    Stay {
        /// End of the running thread's time slice (ns).
        slice_end: u64,
        /// The earliest of `slice_end` and the other deadlines (ns).
        arm_at: u64,
    },
}

/// Decides [`AtInterruptExit`] at `now` (uptime ns) for a thread whose slice ends at `slice_end` (ns):
/// to the executor when it has work (a runnable task or a due timer, `executor_has_work`) or the slice is over
/// and another thread waits (`others_waiting`); else the thread stays, with a new slice of `slice_ns` when the
/// old one is over, and the timer armed for the earliest of the slice's end and `next_deadline` (the executor's
/// next timer or the watchdog's next look, ns).
pub fn at_interrupt_exit(
    now: u64,
    slice_end: u64,
    slice_ns: u64,
    next_deadline: Option<u64>,
    executor_has_work: bool,
    others_waiting: bool,
) -> AtInterruptExit {
    let slice_over = now >= slice_end;
    if executor_has_work || (slice_over && others_waiting) {
        return AtInterruptExit::ToExecutor;
    }
    let slice_end = if slice_over { now.saturating_add(slice_ns) } else { slice_end };
    AtInterruptExit::Stay { slice_end, arm_at: next_deadline.map_or(slice_end, |d| d.min(slice_end)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_run_in_spawn_order_and_requeue_at_the_back() {
        let mut s = Sched::new();
        let a = s.add().unwrap();
        let b = s.add().unwrap();
        assert_eq!((a, b), (Tid(1), Tid(2)));
        assert_eq!(s.switch_from_executor(), Some(a));
        assert_eq!(s.current(), a);
        s.requeue_current();
        assert_eq!(s.switch_to_executor(), a);
        assert_eq!(s.current(), Tid::EXECUTOR);
        assert_eq!(s.switch_from_executor(), Some(b));
        s.requeue_current();
        s.switch_to_executor();
        assert_eq!(s.switch_from_executor(), Some(a), "a yielded first, so it runs before b again");
    }

    #[test]
    fn unpark_before_park_leaves_a_token() {
        let mut s = Sched::new();
        let a = s.add().unwrap();
        s.switch_from_executor();
        assert!(!s.unpark(a), "a running thread does not enter the queue");
        assert_eq!(s.park_current(), Park::Consumed, "the token makes the park return");
        assert_eq!(s.park_current(), Park::Switch, "one token, one park");
        assert_eq!(s.state(a), Some(State::Parked));
        s.switch_to_executor();
        assert!(!s.any_runnable());
        assert!(s.unpark(a));
        assert!(!s.unpark(a), "already runnable: a token, not a second queue entry");
        assert_eq!(s.switch_from_executor(), Some(a));
        s.switch_to_executor();
        assert_eq!(s.switch_from_executor(), None, "queued once");
    }

    #[test]
    fn join_waits_for_exit_and_wakes_joiners() {
        let mut s = Sched::new();
        let a = s.add().unwrap();
        let b = s.add().unwrap();
        assert_eq!(s.switch_from_executor(), Some(a));
        assert_eq!(s.join(b), Ok(false));
        assert_eq!(s.join(a), Err(SchedError::JoinSelf(a)));
        assert_eq!(s.park_current(), Park::Switch);
        s.switch_to_executor();
        assert_eq!(s.switch_from_executor(), Some(b));
        assert_eq!(s.exit_current(), alloc::vec![a]);
        s.switch_to_executor();
        assert_eq!(s.state(a), Some(State::Runnable), "the joiner was unparked");
        assert_eq!(s.switch_from_executor(), Some(a));
        assert_eq!(s.join(b), Ok(true), "b exited");
        assert_eq!(s.join(Tid(7)), Err(SchedError::NoSuchThread(Tid(7))), "never handed out");
        assert_eq!(s.join(Tid::EXECUTOR), Err(SchedError::NoSuchThread(Tid::EXECUTOR)));
        assert_eq!(s.live(), 1);
    }

    #[test]
    fn unpark_of_exited_or_unknown_threads_is_ignored() {
        let mut s = Sched::new();
        let a = s.add().unwrap();
        s.switch_from_executor();
        s.exit_current();
        s.switch_to_executor();
        assert!(!s.unpark(a));
        assert!(!s.unpark(Tid(99)));
        assert!(!s.any_runnable());
        assert_eq!(s.switch_from_executor(), None);
    }

    #[test]
    fn an_early_timer_interrupt_keeps_the_thread_and_arms_the_deadline_again() {
        // The timer fired 50 us before the executor's 10 ms timer was due: nothing to do yet, but the device
        // must be armed again, else the thread runs on unpreempted until it parks.
        let d = at_interrupt_exit(9_950_000, 10_000_000, 10_000_000, Some(10_000_000), false, true);
        assert_eq!(d, AtInterruptExit::Stay { slice_end: 10_000_000, arm_at: 10_000_000 });
        // A device interrupt early in the slice with a later timer: armed for the slice's end.
        let d = at_interrupt_exit(1_000, 10_000_000, 10_000_000, Some(50_000_000), false, true);
        assert_eq!(d, AtInterruptExit::Stay { slice_end: 10_000_000, arm_at: 10_000_000 });
    }

    #[test]
    fn the_executor_and_waiting_threads_get_the_cpu_when_due() {
        assert_eq!(at_interrupt_exit(5, 100, 100, Some(5), true, false), AtInterruptExit::ToExecutor);
        assert_eq!(at_interrupt_exit(100, 100, 100, None, false, true), AtInterruptExit::ToExecutor);
        // The slice is over but nobody waits: a new slice, armed for its end (no timer pending).
        assert_eq!(
            at_interrupt_exit(150, 100, 100, None, false, false),
            AtInterruptExit::Stay { slice_end: 250, arm_at: 250 }
        );
    }
}
