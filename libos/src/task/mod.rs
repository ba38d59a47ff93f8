//! The async executor for one vCPU: tasks are `async-task` runnables in one run queue; wakers (from other
//! tasks, timers, or interrupt handlers) push them back. When nothing is runnable the CPU arms the timer for
//! the earliest deadline and halts (`sti; hlt`) — tickless, so an idle guest costs the host ~nothing. The
//! optional [`watchdog`] ends the VM when no task is polled and the CPU never halts for its period.

pub mod watchdog;

use alloc::collections::VecDeque;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use core::task::{Context, Poll};
use spin::Mutex;

type Runnable = async_task::Runnable;

static QUEUE: Mutex<VecDeque<Runnable>> = Mutex::new(VecDeque::new());
static POLLS: AtomicU64 = AtomicU64::new(0);
static HALTS: AtomicU64 = AtomicU64::new(0);

fn schedule(r: Runnable) {
    crate::arch_without_interrupts(|| QUEUE.lock().push_back(r));
}

fn pop() -> Option<Runnable> {
    crate::arch_without_interrupts(|| QUEUE.lock().pop_front())
}

/// Handle to a spawned task, like `std::thread::JoinHandle`: await it for the task's output; dropping it
/// detaches the task (it keeps running).
pub struct JoinHandle<T> {
    task: Option<async_task::Task<T>>,
}

impl<T> JoinHandle<T> {
    /// Stops the task at its next await point; returns its output if it had already finished.
    pub async fn cancel(mut self) -> Option<T> {
        match self.task.take() {
            Some(t) => t.cancel().await,
            None => None,
        }
    }

    /// Whether the task has finished.
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = T;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.task.as_mut() {
            Some(t) => Pin::new(t).poll(cx),
            None => Poll::Pending,
        }
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.detach();
        }
    }
}

/// Spawns `fut` as a new task; it first runs at the next executor turn.
pub fn spawn<F>(fut: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    // Boxed as `dyn Future`: async-task's task code is then compiled once per output type instead of once
    // per future type (most of `async_task`'s share of the image).
    let fut: Pin<alloc::boxed::Box<dyn Future<Output = F::Output> + Send>> = alloc::boxed::Box::pin(fut);
    let (runnable, task) = async_task::spawn(fut, schedule);
    runnable.schedule();
    JoinHandle { task: Some(task) }
}

/// Whether a task is waiting to run (the thread scheduler's preemption check).
pub(crate) fn has_runnable() -> bool {
    crate::arch_without_interrupts(|| !QUEUE.lock().is_empty())
}

/// Executor counters: `(task polls, halts)` since boot.
pub fn stats() -> (u64, u64) {
    (POLLS.load(Ordering::Relaxed), HALTS.load(Ordering::Relaxed))
}

/// Runs the executor until `main` completes, returning its output. Other tasks keep their state but stop
/// running when this returns.
pub fn block_on<F>(main: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    static DONE: AtomicBool = AtomicBool::new(false);
    DONE.store(false, Ordering::Release);
    let mut handle = spawn(async move {
        let out = main.await;
        DONE.store(true, Ordering::Release);
        out
    });
    watchdog::start(crate::time::uptime_ns());
    loop {
        crate::time::timer::fire_expired(crate::time::uptime_ns());
        // Run what is runnable now, bounded so timers are checked at least every 64 polls.
        for _ in 0..64 {
            let Some(r) = pop() else { break };
            POLLS.fetch_add(1, Ordering::Relaxed);
            r.run();
        }
        if DONE.load(Ordering::Acquire) {
            let waker = noop_waker();
            let mut cx = Context::from_waker(&waker);
            if let Poll::Ready(v) = Pin::new(&mut handle).poll(&mut cx) {
                return v;
            }
        }
        // Nothing runnable here: threads (if any were spawned) get the CPU until they give it back.
        if crate::thread::run_next() {
            continue;
        }
        idle();
    }
}

/// Runs `fut` to completion from synchronous code (e.g. a filesystem library calling a [`BlockDevice`]
/// from inside a task), halting (`sti; hlt`) between polls until the device interrupt wakes it. Other tasks do
/// not run meanwhile; their wake-ups queue and run when the caller returns to the executor.
///
/// [`BlockDevice`]: crate::dev::BlockDevice
pub fn wait<F: Future>(fut: F) -> F::Output {
    use alloc::sync::Arc;
    use alloc::task::Wake;
    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::Release);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.store(true, Ordering::Release);
        }
    }
    let flag = Arc::new(Flag(AtomicBool::new(true)));
    let waker = core::task::Waker::from(flag.clone());
    let mut cx = Context::from_waker(&waker);
    let mut fut = core::pin::pin!(fut);
    loop {
        if flag.0.swap(false, Ordering::AcqRel) {
            if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return v;
            }
            continue;
        }
        crate::time::timer::fire_expired(crate::time::uptime_ns());
        halt_unless(|| flag.0.load(Ordering::Acquire));
    }
}

/// Halts until an interrupt when nothing is runnable and no timer is due.
fn idle() {
    halt_unless(|| !QUEUE.lock().is_empty() || crate::thread::any_runnable());
}

/// Halts (`sti; hlt`) until the next interrupt unless `ready()` holds or a timer is due, arming the timer for the
/// next deadline first. The check and the halt are atomic with respect to interrupts, so a wake-up between them
/// is never lost.
fn halt_unless(ready: impl Fn() -> bool) {
    crate::arch_disable_interrupts();
    if ready() {
        crate::arch_enable_interrupts();
        return;
    }
    match crate::time::timer::next_deadline() {
        Some(d) if d <= crate::time::uptime_ns() => {
            crate::arch_enable_interrupts();
            return;
        }
        // The watchdog's next look only arms the device: halting is progress, so it never stops the halt.
        _ => match watchdog::next_wakeup() {
            Some(d) => crate::time::timer::arm(d),
            None => crate::time::timer::disarm(),
        },
    }
    HALTS.fetch_add(1, Ordering::Relaxed);
    crate::arch_enable_interrupts_and_halt();
}

fn noop_waker() -> core::task::Waker {
    core::task::Waker::noop().clone()
}

/// Yields to other runnable tasks once.
pub async fn yield_now() {
    let mut yielded = false;
    core::future::poll_fn(move |cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}
