//! The records behind thread ids and the switches between them on the CPU: stacks, interrupt stacks (TSS IST),
//! FXSAVE areas, the FS base (IA32_FS_BASE MSR) and the context switch, driven by [`super::sched`]'s decisions.
//! Source: Intel SDM Vol. 3A §6.14.5 (IST), Vol. 4 (IA32_FS_BASE, 0xC000_0100).
#![allow(unsafe_code)]

use super::fpu::{self, FxState};
use super::stack::{Stack, StackError};
use super::switch;
use super::*;
use crate::arch::x86_64::{cpu, gdt, idt};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::sync::atomic::AtomicU64;

const IA32_FS_BASE: u32 = 0xC000_0100;

/// End of the running thread's time slice (uptime ns).
static SLICE_END: AtomicU64 = AtomicU64::new(u64::MAX);

/// What the CPU needs to resume a thread.
struct Thread {
    /// Saved stack pointer while off the CPU.
    rsp: u64,
    /// `None` for the executor (it keeps the boot stack).
    stack: Option<Stack>,
    irq_stack: Stack,
    fpu: Box<FxState>,
    /// FS base (the TLS thread pointer), 0 without TLS.
    fs_base: u64,
    _tls: Option<TlsBlock>,
    no_preempt: u32,
    errno: i32,
}

struct Threads {
    map: BTreeMap<Tid, Box<Thread>>,
    /// Exited threads whose records (and stacks) the executor frees once they are off the CPU.
    dead: Vec<Tid>,
    /// The thread whose x87/SSE state is in the registers (`None`: nobody's worth keeping).
    fpu_owner: Option<Tid>,
    initial_fpu: Option<FxState>,
}

static THREADS: Mutex<Threads> =
    Mutex::new(Threads { map: BTreeMap::new(), dead: Vec::new(), fpu_owner: None, initial_fpu: None });

fn with_threads<R>(f: impl FnOnce(&mut Threads) -> R) -> R {
    crate::irq::critical(|| f(&mut THREADS.lock()))
}

fn stack_error(e: StackError) -> ThreadError {
    match e {
        StackError::OutOfMemory(n) => ThreadError::OutOfMemory(n),
        StackError::Guard(crate::mem::paging::MapError::BadRange { paddr, .. }) => ThreadError::Guard(paddr),
        StackError::Guard(_) => ThreadError::OutOfMemory(4096),
    }
}

/// First spawn: SSE on, the executor's record and interrupt stack, device vectors on the thread IST.
fn activate() -> Result<(), ThreadError> {
    if ACTIVE.load(Ordering::Acquire) {
        return Ok(());
    }
    let irq_stack = Stack::new(INTERRUPT_STACK_BYTES, false).map_err(stack_error)?;
    let top = irq_stack.top();
    let init = fpu::enable();
    let executor = Box::new(Thread {
        rsp: 0,
        stack: None,
        irq_stack,
        fpu: Box::new(init.clone()),
        fs_base: 0,
        _tls: None,
        no_preempt: 0,
        errno: 0,
    });
    cpu::without_interrupts(|| {
        with_threads(|t| {
            t.map.insert(Tid::EXECUTOR, executor);
            t.initial_fpu = Some(init);
        });
        gdt::set_interrupt_stack(gdt::IST_THREAD, top);
        idt::set_device_vectors_ist(gdt::IST_THREAD);
        ACTIVE.store(true, Ordering::Release);
    });
    log::debug!("threads: SSE enabled, device interrupts on per-thread stacks (IST{})", gdt::IST_THREAD);
    Ok(())
}

pub fn spawn(entry: extern "C" fn(usize), arg: usize, opts: SpawnOptions) -> Result<Tid, ThreadError> {
    activate()?;
    let stack = Stack::new(opts.stack_bytes, true).map_err(stack_error)?;
    let irq_stack = Stack::new(INTERRUPT_STACK_BYTES, false).map_err(stack_error)?;
    let tls = opts.tls.map(|t| TlsBlock::new(&t)).transpose().map_err(ThreadError::Tls)?;
    let fs_base = tls.as_ref().map_or(0, |b| b.thread_pointer() as u64);
    let fpu = Box::new(with_threads(|t| t.initial_fpu.clone()).unwrap_or(FxState([0; 512])));
    // SAFETY: the top frame lies inside the freshly reserved stack, which nothing else uses yet.
    let rsp = unsafe { switch::initial_frame(stack.top(), entry as usize as u64, arg as u64) };
    let thread =
        Box::new(Thread { rsp, stack: Some(stack), irq_stack, fpu, fs_base, _tls: tls, no_preempt: 0, errno: 0 });
    crate::irq::critical(|| {
        let tid = with_sched(|s| s.add()).map_err(ThreadError::Sched)?;
        with_threads(|t| t.map.insert(tid, thread));
        Ok(tid)
    })
}

/// Switches from the running thread `from` to `to` (interrupts off, scheduler already updated).
fn switch_to(from: Tid, to: Tid) {
    let ptrs = with_threads(|t| {
        let owner = t.fpu_owner;
        let old = t.map.get_mut(&from)?;
        old.no_preempt = NO_PREEMPT.load(Ordering::Relaxed);
        old.errno = ERRNO.load(Ordering::Relaxed);
        let save: *mut u64 = &mut old.rsp;
        // Lazy FPU: only a switch to a thread other than the registers' owner saves and loads them.
        let mut fpu_save: Option<*mut FxState> = None;
        if to != Tid::EXECUTOR && owner != Some(to) {
            if let Some(o) = owner {
                fpu_save = t.map.get_mut(&o).map(|th| &mut *th.fpu as *mut FxState);
            }
            t.fpu_owner = Some(to);
        }
        let new = t.map.get(&to)?;
        NO_PREEMPT.store(new.no_preempt, Ordering::Relaxed);
        ERRNO.store(new.errno, Ordering::Relaxed);
        let fpu_load = (to != Tid::EXECUTOR && owner != Some(to)).then_some(&*new.fpu as *const FxState);
        Some((save, new.rsp, new.fs_base, new.irq_stack.top(), fpu_save, fpu_load))
    });
    let Some((save, load, fs_base, irq_top, fpu_save, fpu_load)) = ptrs else {
        log::error!("threads: no record for {from} or {to}; staying on {from}");
        return;
    };
    if let Some(p) = fpu_save {
        // SAFETY: records are boxed and only freed by the executor after a thread exited and left the CPU;
        // interrupts are off, so nothing frees them during this switch.
        fpu::save(unsafe { &mut *p });
    }
    if let Some(p) = fpu_load {
        // SAFETY: as above.
        fpu::restore(unsafe { &*p });
    }
    if to != Tid::EXECUTOR {
        // SAFETY: the FS base only matters to the thread's own code (TLS); the kernel does not use FS.
        unsafe { cpu::wrmsr(IA32_FS_BASE, fs_base) };
    }
    gdt::set_interrupt_stack(gdt::IST_THREAD, irq_top);
    CURRENT.store(to.0, Ordering::Relaxed);
    // SAFETY: interrupts are off; `save` points into the boxed record of `from`, which lives until the
    // executor reaps it after this switch; `load` was saved by a switch or made by `initial_frame`.
    unsafe { switch::switch(save, load) };
}

/// Gives the CPU from the running thread back to the executor (interrupts off; the scheduler already
/// recorded why: parked, requeued or exited).
fn leave_cpu() {
    let from = with_sched(|s| s.switch_to_executor());
    switch_to(from, Tid::EXECUTOR);
}

pub fn park() {
    if !on_thread() {
        return;
    }
    cpu::without_interrupts(|| {
        if with_sched(|s| s.park_current()) == sched::Park::Switch {
            leave_cpu();
        }
    });
}

pub fn yield_now() {
    if !on_thread() {
        return;
    }
    cpu::without_interrupts(|| {
        with_sched(|s| s.requeue_current());
        leave_cpu();
    });
}

pub fn exit() -> ! {
    assert!(on_thread(), "thread::exit on the executor");
    cpu::disable_interrupts();
    let me = current();
    with_sched(|s| s.exit_current());
    with_threads(|t| {
        if t.fpu_owner == Some(me) {
            t.fpu_owner = None;
        }
        t.dead.push(me);
    });
    // The record stays until the executor reaps it, after this switch has left its stack.
    leave_cpu();
    unreachable!("an exited thread was resumed")
}

/// Where a new thread starts (called by the trampoline of `switch`, interrupts off, on its own stack).
#[no_mangle]
extern "C" fn libos_thread_start(entry: extern "C" fn(usize), arg: usize) -> ! {
    cpu::enable_interrupts();
    entry(arg);
    exit()
}

pub fn is_stack_guard(addr: u64) -> bool {
    // try_lock: this runs in the fault handler, possibly over code that holds the lock.
    let Some(t) = THREADS.try_lock() else { return false };
    let page = addr & !0xfff;
    t.map.values().any(|th| th.stack.as_ref().and_then(Stack::guard_page) == Some(page))
}

/// Starts a time slice for the thread about to run and arms the timer device for it.
fn arm_slice() {
    let end = crate::time::uptime_ns().saturating_add(TIME_SLICE_NS);
    SLICE_END.store(end, Ordering::Relaxed);
    crate::time::timer::arm(crate::task::watchdog::next_wakeup().map_or(end, |d| d.min(end)));
}

pub fn run_next() -> bool {
    let ran = cpu::without_interrupts(|| {
        let Some(t) = with_sched(|s| s.switch_from_executor()) else { return false };
        arm_slice();
        switch_to(Tid::EXECUTOR, t);
        true
    });
    // Free the records of threads that exited (they are off the CPU now), outside the lock.
    let dead: Vec<Box<Thread>> = with_threads(|t| {
        let ids = core::mem::take(&mut t.dead);
        ids.iter().filter_map(|id| t.map.remove(id)).collect()
    });
    drop(dead);
    ran
}

pub fn interrupt_exit() {
    if NO_PREEMPT.load(Ordering::Relaxed) > 0 {
        RESCHED.store(true, Ordering::Relaxed);
        return;
    }
    let now = crate::time::uptime_ns();
    let decision = sched::at_interrupt_exit(
        now,
        SLICE_END.load(Ordering::Relaxed),
        TIME_SLICE_NS,
        crate::task::watchdog::next_wakeup(),
        executor_has_work(now),
        with_sched(|s| s.any_runnable()),
    );
    match decision {
        sched::AtInterruptExit::ToExecutor => {
            with_sched(|s| s.requeue_current());
            leave_cpu();
        }
        sched::AtInterruptExit::Stay { slice_end, arm_at } => {
            SLICE_END.store(slice_end, Ordering::Relaxed);
            crate::time::timer::arm(arm_at);
        }
    }
}
