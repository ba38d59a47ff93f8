//! ABI calls Zirvium does not provide: each returns `-ENOSYS` (`ENOSYS` in errno) and logs its name the first
//! time it is called. The pinned std does not call them; other programs (through `libc` or `hermit-abi`) may.
// `#[no_mangle]` counts as unsafe code: every function here is a symbol std links against. No `unsafe` block
// here; the caller's pointers go through `crate::user` (`sys::tests` checks).
#![allow(unsafe_code)]

use crate::errno::Errno;
use spin::Mutex;

static LOGGED: Mutex<alloc::collections::BTreeSet<&'static str>> = Mutex::new(alloc::collections::BTreeSet::new());

/// Logs `name` once and returns `-ENOSYS`, setting errno.
pub fn enosys(name: &'static str) -> i32 {
    if LOGGED.lock().insert(name) {
        log::warn!("std: {name} is not supported (ENOSYS)");
    }
    libos::thread::set_errno(Errno::ENOSYS.0);
    -Errno::ENOSYS.0
}

/// Virtual memory mappings: not supported (all memory is one identity-mapped heap).
#[no_mangle]
pub extern "C" fn sys_mmap(_size: usize, _prot: u32, _ret: *mut *mut u8) -> i32 {
    enosys("sys_mmap")
}

/// Not supported: see [`sys_mmap`].
#[no_mangle]
pub extern "C" fn sys_munmap(_ptr: *mut u8, _size: usize) -> i32 {
    enosys("sys_munmap")
}

/// Not supported: see [`sys_mmap`].
#[no_mangle]
pub extern "C" fn sys_mprotect(_ptr: *mut u8, _size: usize, _prot: u32) -> i32 {
    enosys("sys_mprotect")
}

/// POSIX semaphores (newlib-era API): not supported.
#[no_mangle]
pub extern "C" fn sys_sem_init(_sem: *mut usize, _pshared: i32, _value: u32) -> i32 {
    enosys("sys_sem_init")
}

/// Not supported: see [`sys_sem_init`].
#[no_mangle]
pub extern "C" fn sys_sem_destroy(_sem: *mut usize) -> i32 {
    enosys("sys_sem_destroy")
}

/// Not supported: see [`sys_sem_init`].
#[no_mangle]
pub extern "C" fn sys_sem_post(_sem: *mut usize) -> i32 {
    enosys("sys_sem_post")
}

/// Not supported: see [`sys_sem_init`].
#[no_mangle]
pub extern "C" fn sys_sem_trywait(_sem: *mut usize) -> i32 {
    enosys("sys_sem_trywait")
}

/// Not supported: see [`sys_sem_init`].
#[no_mangle]
pub extern "C" fn sys_sem_timedwait(_sem: *mut usize, _abs_timeout: *const u8) -> i32 {
    enosys("sys_sem_timedwait")
}

/// Hermit's old wait-queue calls (pre-futex std): not supported.
#[no_mangle]
pub extern "C" fn sys_notify(_id: usize, _count: i32) -> i32 {
    enosys("sys_notify")
}

/// Not supported: see [`sys_notify`].
#[no_mangle]
pub extern "C" fn sys_add_queue(_id: usize, _timeout_ns: i64) -> i32 {
    enosys("sys_add_queue")
}

/// Not supported: see [`sys_notify`].
#[no_mangle]
pub extern "C" fn sys_wait(_id: usize) -> i32 {
    enosys("sys_wait")
}

/// Not supported: see [`sys_notify`].
#[no_mangle]
pub extern "C" fn sys_init_queue(_id: usize) -> i32 {
    enosys("sys_init_queue")
}

/// Not supported: see [`sys_notify`].
#[no_mangle]
pub extern "C" fn sys_destroy_queue(_id: usize) -> i32 {
    enosys("sys_destroy_queue")
}
