//! Kernel threads, for programs written against blocking APIs (Rust `std` through the Hermit ABI): each thread
//! has its own stack with a guard page, its own interrupt stack, FPU/SSE state and TLS block; threads share the
//! one vCPU with the async executor.
//!
//! Scheduling: the boot thread runs the executor ([`Tid::EXECUTOR`]) and has priority. It runs threads only
//! when it has no runnable task and no due timer; a thread runs until it parks (a blocking call waiting for an
//! interrupt, timer or task, through a [`waker`] that unparks it), yields, exits, or is preempted. Preemption
//! happens on interrupt exit when the executor has work (a device interrupt woke a task, a timer is due) or the
//! thread's time slice ([`TIME_SLICE_NS`]) is over and another thread waits — but only while the thread runs
//! its own code: inside the library OS (between [`no_preempt`] and the guard's drop) it is never preempted, so
//! kernel locks are never held across a switch; it yields when it leaves if the executor has work meanwhile.
//!
//! Interrupts on a thread land on that thread's interrupt stack (IST, switched with the thread), because
//! programs compiled for a user-space ABI use the 128-byte red zone below their stack pointer, which an
//! interrupt frame pushed on the same stack would overwrite. Nothing here runs until the first [`spawn`]: no_std
//! apps never start a thread and boot exactly as before (no SSE, no IST change).
//!
//! Source: System V AMD64 ABI §3.2.2 (red zone), Intel SDM Vol. 3A §6.14.5 (IST), §13.1.4 (SSE enabling).

pub mod sched;
pub mod tls;

#[cfg(target_os = "none")]
mod fpu;
#[cfg(target_os = "none")]
mod hw;
#[cfg(target_os = "none")]
mod stack;
#[cfg(target_os = "none")]
mod switch;
#[cfg(target_os = "none")]
use hw as arch;

pub use sched::{SchedError, State, Tid};
pub use tls::{TlsBlock, TlsError, TlsLayout, TlsTemplate};

use alloc::sync::Arc;
use alloc::task::Wake;
use core::future::Future;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use core::task::{Context, Poll, Waker};
use sched::Sched;
use spin::Mutex;

/// How long a thread may run while another thread waits for the CPU (ns).
pub const TIME_SLICE_NS: u64 = 10_000_000;
/// Bytes of each thread's interrupt stack.
pub const INTERRUPT_STACK_BYTES: usize = 16 * 1024;

/// Whether the first thread was spawned (SSE on, device vectors on the thread IST).
static ACTIVE: AtomicBool = AtomicBool::new(false);
static SCHED: Mutex<Sched> = Mutex::new(Sched::new());
/// The running thread's id, mirrored from `SCHED` for lock-free reads.
static CURRENT: AtomicU32 = AtomicU32::new(0);
/// The running thread's [`no_preempt`] depth and errno; saved into its record on a switch.
static NO_PREEMPT: AtomicU32 = AtomicU32::new(0);
static ERRNO: AtomicI32 = AtomicI32::new(0);
/// An interrupt wanted the executor to run while a thread was inside the library OS.
static RESCHED: AtomicBool = AtomicBool::new(false);

fn with_sched<R>(f: impl FnOnce(&mut Sched) -> R) -> R {
    crate::irq::critical(|| f(&mut SCHED.lock()))
}

/// The running thread ([`Tid::EXECUTOR`] on the executor, and always before the first [`spawn`]).
pub fn current() -> Tid {
    Tid(CURRENT.load(Ordering::Relaxed))
}

/// Whether the running thread is a spawned thread (not the executor).
pub fn on_thread() -> bool {
    current() != Tid::EXECUTOR
}

/// The running thread's error number (the Hermit ABI's `errno`; 0 until set).
pub fn errno() -> i32 {
    ERRNO.load(Ordering::Relaxed)
}

/// Sets the running thread's error number.
pub fn set_errno(e: i32) {
    ERRNO.store(e, Ordering::Relaxed);
}

/// Makes `t` runnable if it is parked, else makes its next [`park`] return at once. Callable from interrupt
/// handlers and tasks; unknown and exited threads are ignored.
pub fn unpark(t: Tid) {
    with_sched(|s| s.unpark(t));
}

struct Unparker(Tid);

impl Wake for Unparker {
    fn wake(self: Arc<Self>) {
        unpark(self.0);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        unpark(self.0);
    }
}

/// A waker that unparks `t`: the bridge from the async world (device interrupts, the net task, timers) to a
/// thread blocked in [`block_on`].
pub fn waker(t: Tid) -> Waker {
    Waker::from(Arc::new(Unparker(t)))
}

/// Runs `fut` to completion on the calling thread, parking it while the future is pending; the executor and
/// other threads run meanwhile. On the executor (no thread to park) it falls back to
/// [`crate::task::wait`], which halts until an interrupt.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    if !on_thread() {
        return crate::task::wait(fut);
    }
    let waker = waker(current());
    let mut cx = Context::from_waker(&waker);
    let mut fut = core::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        park();
    }
}

/// Parks the calling thread until [`unpark`] (or a [`waker`]) — at once if an unpark came first. May return
/// spuriously: callers re-check their condition. On the executor it returns at once.
pub fn park() {
    arch::park();
}

/// [`park`] that also returns at `deadline_ns` (uptime ns), through the executor's timers.
pub fn park_until(deadline_ns: u64) {
    if !on_thread() {
        return;
    }
    let mut sleep = core::pin::pin!(crate::time::sleep_until(crate::time::Instant::from_nanos(deadline_ns)));
    let waker = waker(current());
    if sleep.as_mut().poll(&mut Context::from_waker(&waker)).is_pending() {
        park();
    }
}

/// Blocks the calling thread until `deadline_ns` (uptime ns).
pub fn sleep_until(deadline_ns: u64) {
    block_on(crate::time::sleep_until(crate::time::Instant::from_nanos(deadline_ns)));
}

/// Gives the CPU to the executor and the other threads; the caller runs again after them.
pub fn yield_now() {
    arch::yield_now();
}

/// Marks the calling thread as inside the library OS until the guard drops: no preemption meanwhile (kernel
/// locks may be held). Nests. Dropping the outermost guard yields if the executor got work in between.
pub fn no_preempt() -> NoPreempt {
    NO_PREEMPT.fetch_add(1, Ordering::Relaxed);
    NoPreempt(())
}

/// Guard of [`no_preempt`].
pub struct NoPreempt(());

impl Drop for NoPreempt {
    fn drop(&mut self) {
        if NO_PREEMPT.fetch_sub(1, Ordering::Relaxed) == 1 && on_thread() {
            let wanted = RESCHED.swap(false, Ordering::Relaxed);
            if wanted || executor_has_work(crate::time::uptime_ns()) {
                yield_now();
            }
        }
    }
}

/// Whether the executor should run now: a task is runnable or a timer is due.
fn executor_has_work(now_ns: u64) -> bool {
    crate::task::has_runnable() || crate::time::timer::next_deadline().is_some_and(|d| d <= now_ns)
}

/// Whether some thread waits for the CPU (the executor checks before it halts).
pub(crate) fn any_runnable() -> bool {
    ACTIVE.load(Ordering::Acquire) && with_sched(|s| s.any_runnable())
}

/// Errors of [`spawn`] and [`join`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadError {
    /// No memory for the stack, the interrupt stack or the TLS block (bytes asked).
    OutOfMemory(usize),
    /// The stack's guard page could not be unmapped (its address).
    Guard(u64),
    /// The TLS template is unusable.
    Tls(TlsError),
    /// A scheduler error (unknown thread, join of itself, ids exhausted).
    Sched(SchedError),
    /// Threads need the bare-metal target.
    Unsupported,
}

impl core::fmt::Display for ThreadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::OutOfMemory(n) => write!(f, "no memory for a new thread ({n} bytes)"),
            Self::Guard(a) => write!(f, "cannot unmap the stack guard page at {a:#x}"),
            Self::Tls(e) => write!(f, "thread-local storage: {e}"),
            Self::Sched(e) => write!(f, "{e}"),
            Self::Unsupported => f.write_str("threads run only in the kernel image"),
        }
    }
}

/// What a new thread gets.
#[derive(Debug, Clone, Copy)]
pub struct SpawnOptions {
    /// Usable stack (bytes, rounded up to pages); a guard page is added below.
    pub stack_bytes: usize,
    /// The program's TLS image: the thread gets a block and the FS base points at it.
    pub tls: Option<TlsTemplate>,
}

/// Starts a thread that runs `entry(arg)` and exits when it returns; it first runs at the executor's next idle
/// moment. The first call turns SSE on and moves device interrupts to per-thread interrupt stacks. Errors:
/// [`ThreadError`].
pub fn spawn(entry: extern "C" fn(usize), arg: usize, opts: SpawnOptions) -> Result<Tid, ThreadError> {
    arch::spawn(entry, arg, opts)
}

/// Waits until thread `t` has exited (at once if it has). Errors: [`SchedError::JoinSelf`],
/// [`SchedError::NoSuchThread`] for an id never handed out.
pub fn join(t: Tid) -> Result<(), ThreadError> {
    loop {
        if with_sched(|s| s.join(t)).map_err(ThreadError::Sched)? {
            return Ok(());
        }
        park();
    }
}

/// Ends the calling thread (its stack is freed once the CPU has left it). On the executor this does nothing
/// useful and halts the VM's progress, so it panics instead.
pub fn exit() -> ! {
    arch::exit()
}

/// Whether `addr` is in the guard page of a thread stack (for fault reports).
pub fn is_stack_guard(addr: u64) -> bool {
    arch::is_stack_guard(addr)
}

/// Threads counted by the scheduler that have not exited (the executor excluded).
pub fn live() -> usize {
    with_sched(|s| s.live())
}

/// Runs the next runnable thread until it gives the CPU back; returns whether one ran. Called by the executor
/// when it has nothing else to do.
pub(crate) fn run_next() -> bool {
    ACTIVE.load(Ordering::Acquire) && arch::run_next()
}

/// The preemption point at the end of every interrupt (called by the interrupt dispatcher after EOI).
pub fn interrupt_exit() {
    if ACTIVE.load(Ordering::Relaxed) && on_thread() {
        arch::interrupt_exit();
    }
}

#[cfg(not(target_os = "none"))]
mod arch {
    //! Host builds (unit tests): no threads; everything is the executor.
    use super::*;

    pub fn park() {}
    pub fn yield_now() {}
    pub fn spawn(_: extern "C" fn(usize), _: usize, _: SpawnOptions) -> Result<Tid, ThreadError> {
        Err(ThreadError::Unsupported)
    }
    pub fn exit() -> ! {
        panic!("thread::exit outside a VM")
    }

    pub fn is_stack_guard(_: u64) -> bool {
        false
    }
    pub fn run_next() -> bool {
        false
    }
    pub fn interrupt_exit() {}
}
