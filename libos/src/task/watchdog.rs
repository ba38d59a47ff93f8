//! The watchdog (kernel option `watchdog=SECONDS`): ends a wedged guest. Progress is the executor's count of task
//! polls and halts ([`super::stats`]); every interrupt checks it, and the timer device is kept armed for the
//! moment the period would run out, so a task that spins forever with interrupts on is still interrupted. No
//! progress for the whole period prints `watchdog: no executor progress for N s`, the interrupted instruction
//! and a backtrace, and ends the VM with [`crate::EXIT_WATCHDOG`]. Off unless the option is given; it watches
//! the app (from `block_on`), not the boot before it.

use core::sync::atomic::{AtomicU64, Ordering};

/// The period (ns); 0 = off.
static PERIOD_NS: AtomicU64 = AtomicU64::new(0);
/// Whether the executor has started: checks run only then.
static RUNNING: AtomicU64 = AtomicU64::new(0);
/// The progress count at the last change, and when (uptime ns) it was seen to change.
static LAST_COUNT: AtomicU64 = AtomicU64::new(u64::MAX);
static LAST_CHANGE_NS: AtomicU64 = AtomicU64::new(0);

/// Sets the period (seconds; 0 turns the watchdog off). Called at boot from the kernel command line.
pub fn configure(seconds: u64) {
    PERIOD_NS.store(seconds.saturating_mul(1_000_000_000), Ordering::Relaxed);
}

/// The period (seconds), 0 when off.
pub fn period_secs() -> u64 {
    PERIOD_NS.load(Ordering::Relaxed) / 1_000_000_000
}

/// Starts watching (the executor calls this when it starts running the app) and arms the timer device for the
/// first look: the app may spin before the executor ever halts (and arms it).
pub(crate) fn start(now_ns: u64) {
    LAST_CHANGE_NS.store(now_ns, Ordering::Relaxed);
    LAST_COUNT.store(progress(), Ordering::Relaxed);
    RUNNING.store(1, Ordering::Release);
    if let Some(first) = deadline() {
        crate::arch_without_interrupts(|| crate::time::timer::arm(next_wakeup().unwrap_or(first)));
    }
}

fn progress() -> u64 {
    let (polls, halts) = super::stats();
    polls.wrapping_add(halts)
}

/// When the watchdog must look next (uptime ns), or `None` when it is off: the executor arms the timer device
/// for the earlier of this and its own next deadline.
pub(crate) fn deadline() -> Option<u64> {
    let period = PERIOD_NS.load(Ordering::Relaxed);
    (period != 0 && RUNNING.load(Ordering::Acquire) != 0)
        .then(|| LAST_CHANGE_NS.load(Ordering::Relaxed).saturating_add(period))
}

/// The earliest of the executor's next timer and the watchdog's next look (uptime ns): what the timer device
/// is armed for, unless a running thread's time slice ends sooner.
pub(crate) fn next_wakeup() -> Option<u64> {
    crate::time::timer::next_deadline().into_iter().chain(deadline()).min()
}

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Off, or progress within the period; look again at this uptime (ns) at the latest, if on.
    Fine(Option<u64>),
    /// No progress for this long (ns), at least the period.
    Wedged(u64),
}

/// Records progress seen at `now_ns` (uptime) and judges it. Runs in interrupt context.
pub fn check(now_ns: u64) -> Verdict {
    let period = PERIOD_NS.load(Ordering::Relaxed);
    if period == 0 || RUNNING.load(Ordering::Acquire) == 0 {
        return Verdict::Fine(None);
    }
    let count = progress();
    if LAST_COUNT.swap(count, Ordering::Relaxed) != count {
        LAST_CHANGE_NS.store(now_ns, Ordering::Relaxed);
    }
    let since = now_ns.saturating_sub(LAST_CHANGE_NS.load(Ordering::Relaxed));
    if since >= period {
        Verdict::Wedged(since)
    } else {
        Verdict::Fine(deadline())
    }
}

/// The interrupt-side hook (every device and timer interrupt): checks; when wedged prints what was running (the
/// interrupted `rip`, a backtrace from its `rbp`) and exits with [`crate::EXIT_WATCHDOG`]; else re-arms the timer
/// device for the next look, so a task that never yields is caught.
#[cfg(target_os = "none")]
pub fn on_interrupt(rip: u64, rbp: u64) {
    if PERIOD_NS.load(Ordering::Relaxed) == 0 {
        return; // off: no clock read on the interrupt path
    }
    match check(crate::time::uptime_ns()) {
        Verdict::Fine(None) => {}
        Verdict::Fine(Some(next)) => {
            crate::time::timer::arm(next_wakeup().unwrap_or(next));
        }
        Verdict::Wedged(ns) => {
            let p = crate::console::emergency_print;
            let (polls, halts) = super::stats();
            p(format_args!(
                "\nwatchdog: no executor progress for {} s (kernel option watchdog={}): a task has not yielded; \
                 interrupted at RIP=0x{rip:016x} after {polls} task polls and {halts} halts\n",
                ns / 1_000_000_000,
                period_secs()
            ));
            p(format_args!("backtrace:\n  0: 0x{rip:016x}\n"));
            crate::panic::print_backtrace(rbp, 1);
            crate::exit(crate::EXIT_WATCHDOG)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_until_configured_and_started() {
        assert_eq!(check(10), Verdict::Fine(None));
        configure(2);
        assert_eq!(check(10), Verdict::Fine(None), "not started");
        start(1_000);
        assert_eq!(deadline(), Some(2_000_001_000));
        // No poll or halt happens in this test: the count stands still.
        assert_eq!(check(1_000_000_000), Verdict::Fine(Some(2_000_001_000)));
        assert_eq!(check(2_000_001_000), Verdict::Wedged(2_000_000_000));
        configure(0);
        assert_eq!(check(9_000_000_000), Verdict::Fine(None));
    }
}
