//! Timers: futures that complete at a deadline on the monotonic clock. Pending deadlines sit in one ordered
//! map; the executor fires the expired ones and arms the one-shot timer device for the earliest, so an idle guest
//! takes no timer interrupts at all (tickless). The device is the LAPIC timer (TSC-deadline or one-shot) unless
//! the platform installs a [`TimerSource`] of its own (Hyper-V's synthetic timer stimer0, Xen's
//! `VCPUOP_set_singleshot_timer`).

use super::{Duration, Instant};
use alloc::collections::BTreeMap;
use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicU64, Ordering};
use core::task::{Context, Poll, Waker};
use spin::Mutex;

static TIMERS: Mutex<BTreeMap<(u64, u64), Waker>> = Mutex::new(BTreeMap::new());
static SOURCE: spin::Once<&'static dyn TimerSource> = spin::Once::new();

/// A one-shot timer device: raises an interrupt (any vector; its handler need do nothing, the executor's halt
/// returns and fires the expired timers) at or after a deadline on the monotonic clock.
pub trait TimerSource: Sync {
    /// Arms the device to interrupt at `deadline_ns` (uptime ns, [`super::uptime_ns`]'s scale), replacing any
    /// earlier deadline; a deadline in the past interrupts at once.
    fn arm(&self, deadline_ns: u64);
    /// Cancels a pending expiry (none is pending afterwards).
    fn disarm(&self);
    /// Short name for the boot log, e.g. `"hyperv-stimer0 (direct mode)"`.
    fn name(&self) -> &'static str;
}

/// Installs the platform's timer device instead of the LAPIC timer (first caller wins; returns whether this one
/// was installed).
pub fn set_source(source: &'static dyn TimerSource) -> bool {
    let mut installed = false;
    SOURCE.call_once(|| {
        installed = true;
        source
    });
    installed
}

/// The installed timer device's name, or `"lapic"` when the LAPIC timer is used.
pub fn source_name() -> &'static str {
    SOURCE.get().map_or("lapic", |s| s.name())
}

/// Arms the timer device for `deadline_ns` (uptime ns): the installed [`TimerSource`], else the LAPIC timer.
pub(crate) fn arm(deadline_ns: u64) {
    match SOURCE.get() {
        Some(s) => s.arm(deadline_ns),
        None => crate::arch_arm_timer(deadline_ns),
    }
}

/// Cancels the timer device's pending expiry.
pub(crate) fn disarm() {
    match SOURCE.get() {
        Some(s) => s.disarm(),
        None => crate::arch_disarm_timer(),
    }
}
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn with_timers<R>(f: impl FnOnce(&mut BTreeMap<(u64, u64), Waker>) -> R) -> R {
    crate::arch_without_interrupts(|| f(&mut TIMERS.lock()))
}

/// Earliest pending deadline (ns since boot), if any.
pub fn next_deadline() -> Option<u64> {
    with_timers(|t| t.keys().next().map(|k| k.0))
}

/// Wakes every timer whose deadline is at or before `now_ns`. Returns how many fired.
pub fn fire_expired(now_ns: u64) -> usize {
    let mut fired = 0;
    loop {
        let w = with_timers(|t| match t.first_key_value() {
            Some((k, _)) if k.0 <= now_ns => t.pop_first().map(|(_, w)| w),
            _ => None,
        });
        match w {
            Some(w) => {
                w.wake();
                fired += 1;
            }
            None => return fired,
        }
    }
}

/// Future returned by [`sleep`] / [`sleep_until`].
pub struct Sleep {
    deadline: Instant,
    key: Option<(u64, u64)>,
}

/// Completes after `d` (at least; the resolution is the clock source's, typically < 1 µs).
pub fn sleep(d: Duration) -> Sleep {
    sleep_until(Instant::now() + d)
}

/// Completes at `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep { deadline, key: None }
}

impl Sleep {
    /// The deadline.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Moves the deadline (the timer re-arms at the next poll).
    pub fn reset(&mut self, deadline: Instant) {
        self.unregister();
        self.deadline = deadline;
    }

    fn unregister(&mut self) {
        if let Some(k) = self.key.take() {
            with_timers(|t| t.remove(&k));
        }
    }
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            self.unregister();
            return Poll::Ready(());
        }
        let deadline = self.deadline.as_nanos();
        let key = *self.key.get_or_insert_with(|| (deadline, NEXT_ID.fetch_add(1, Ordering::Relaxed)));
        with_timers(|t| match t.get_mut(&key) {
            Some(w) if w.will_wake(cx.waker()) => {}
            Some(w) => *w = cx.waker().clone(),
            None => {
                t.insert(key, cx.waker().clone());
            }
        });
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.unregister();
    }
}

/// Error of [`timeout`]: the deadline passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline elapsed")
    }
}

pin_project_lite::pin_project! {
    /// Future returned by [`timeout`].
    pub struct Timeout<F> {
        #[pin]
        fut: F,
        sleep: Sleep,
    }
}

/// Runs `fut` for at most `d`. Errors: [`Elapsed`] (and `fut` is dropped).
pub fn timeout<F: Future>(d: Duration, fut: F) -> Timeout<F> {
    Timeout { fut, sleep: sleep(d) }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.fut.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match Pin::new(this.sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicU64;

    /// Records what the executor asked of the device (u64::MAX: disarmed).
    struct Recording(AtomicU64);

    impl TimerSource for Recording {
        fn arm(&self, deadline_ns: u64) {
            self.0.store(deadline_ns, Ordering::SeqCst);
        }
        fn disarm(&self) {
            self.0.store(u64::MAX, Ordering::SeqCst);
        }
        fn name(&self) -> &'static str {
            "recording"
        }
    }

    #[test]
    fn an_installed_source_replaces_the_lapic_timer() {
        static DEVICE: Recording = Recording(AtomicU64::new(0));
        static OTHER: Recording = Recording(AtomicU64::new(0));
        assert!(set_source(&DEVICE));
        assert!(!set_source(&OTHER), "the first source stays");
        assert_eq!(source_name(), "recording");
        arm(1_000_000);
        assert_eq!(DEVICE.0.load(Ordering::SeqCst), 1_000_000);
        disarm();
        assert_eq!(DEVICE.0.load(Ordering::SeqCst), u64::MAX);
        assert_eq!(OTHER.0.load(Ordering::SeqCst), 0);
    }
}
