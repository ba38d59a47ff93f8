//! Threads: spawn (with the program's TLS), join, yield, the thread id, priorities (accepted, one class), and
//! the older block/wake-up calls. Threads share the one vCPU with the executor (see `libos::thread`).
// `#[no_mangle]` counts as unsafe code: every function here is a symbol std links against. No `unsafe` block
// here; the caller's pointers go through `crate::user` (`sys::tests` checks).
#![allow(unsafe_code)]

use super::call;
use crate::abi::Tid;
use crate::errno::{AbiResult, Errno};
use crate::user;
use libos::thread::{SpawnOptions, ThreadError};

/// Smallest and largest stack a thread gets (bytes); requests are clamped into this range.
pub const MIN_STACK: usize = 64 << 10;
/// See [`MIN_STACK`].
pub const MAX_STACK: usize = 64 << 20;

fn spawn_thread(func: extern "C" fn(usize), arg: usize, stack_size: usize) -> AbiResult<Tid> {
    #[cfg(target_os = "none")]
    let tls = Some(crate::start::tls_template());
    #[cfg(not(target_os = "none"))]
    let tls = None;
    let stack_bytes = if stack_size == 0 { crate::start::MAIN_STACK_BYTES } else { stack_size };
    let opts = SpawnOptions { stack_bytes: stack_bytes.clamp(MIN_STACK, MAX_STACK), tls };
    match libos::thread::spawn(func, arg, opts) {
        Ok(t) => Ok(t.0),
        Err(ThreadError::OutOfMemory(_) | ThreadError::Guard(_)) => Err(Errno::ENOMEM),
        Err(_) => Err(Errno::EAGAIN),
    }
}

/// Starts a thread running `func(arg)` with a stack of `stack_size` bytes (0: 2 MiB; clamped to 64 KiB..64
/// MiB); `prio` and `core_id` are ignored (one vCPU, one priority). Returns its id, or 0 when it could not
/// start (no memory).
#[no_mangle]
pub extern "C" fn sys_spawn2(
    func: extern "C" fn(usize),
    arg: usize,
    _prio: u8,
    stack_size: usize,
    _core_id: isize,
) -> Tid {
    let _inside = libos::thread::no_preempt();
    spawn_thread(func, arg, stack_size).unwrap_or(0)
}

/// [`sys_spawn2`] with the default stack; writes the id to `*id` when `id` is not null. Errors: `ENOMEM`,
/// `EAGAIN`, `EFAULT`.
#[no_mangle]
pub extern "C" fn sys_spawn(id: *mut Tid, func: extern "C" fn(usize), arg: usize, _prio: u8, _core_id: isize) -> i32 {
    call(|| {
        let t = spawn_thread(func, arg, 0)?;
        if !id.is_null() {
            user::write(id, t)?;
        }
        Ok(0)
    })
}

/// Waits until thread `id` has ended. Errors: `EDEADLK` for the caller itself, `ESRCH` for an id never
/// handed out.
#[no_mangle]
pub extern "C" fn sys_join(id: Tid) -> i32 {
    call(|| match libos::thread::join(libos::thread::Tid(id)) {
        Ok(()) => Ok(0),
        Err(ThreadError::Sched(libos::thread::SchedError::JoinSelf(_))) => Err(Errno::EDEADLK),
        Err(_) => Err(Errno::ESRCH),
    })
}

/// Lets the executor and other threads run first; parks instead after [`sys_block_current_task`].
#[no_mangle]
pub extern "C" fn sys_yield() {
    let me = libos::thread::current().0;
    if BLOCKED.lock().remove(&me) {
        libos::thread::park();
    } else {
        libos::thread::yield_now();
    }
}

/// The calling thread's id (Hermit's `getpid` names the task).
#[no_mangle]
pub extern "C" fn sys_getpid() -> i32 {
    libos::thread::current().0 as i32
}

/// The calling thread's priority: always `NORMAL_PRIO` (2).
#[no_mangle]
pub extern "C" fn sys_get_priority() -> u8 {
    2
}

/// Accepted and ignored: all threads share one priority.
#[no_mangle]
pub extern "C" fn sys_set_priority(_tid: Tid, _prio: u8) {}

/// Threads that called [`sys_block_current_task`] and park at their next [`sys_yield`].
static BLOCKED: spin::Mutex<alloc::collections::BTreeSet<u32>> = spin::Mutex::new(alloc::collections::BTreeSet::new());

/// Marks the calling thread blocked: its next [`sys_yield`] parks it until [`sys_wakeup_taskt`] (the pair older
/// std versions built condition variables on).
#[no_mangle]
pub extern "C" fn sys_block_current_task() {
    BLOCKED.lock().insert(libos::thread::current().0);
}

/// [`sys_block_current_task`]; the timeout (ms) is not supported and ignored.
#[no_mangle]
pub extern "C" fn sys_block_current_task_with_timeout(_timeout: u64) {
    sys_block_current_task();
}

/// Unparks thread `tid` (ignored when it does not exist).
#[no_mangle]
pub extern "C" fn sys_wakeup_taskt(tid: Tid) {
    BLOCKED.lock().remove(&tid);
    libos::thread::unpark(libos::thread::Tid(tid));
}
