//! The thread's errno, the page size and the CPU count.
// `#[no_mangle]` counts as unsafe code: every function here is a symbol std links against. No `unsafe` block
// here; the caller's pointers go through `crate::user` (`sys::tests` checks).
#![allow(unsafe_code)]

/// The calling thread's error number (set by the last failed call).
#[no_mangle]
pub extern "C" fn sys_get_errno() -> i32 {
    libos::thread::errno()
}

/// Same as [`sys_get_errno`] (the `libc` crate's name).
#[no_mangle]
pub extern "C" fn sys_errno() -> i32 {
    sys_get_errno()
}

/// The page size: 4096 bytes.
#[no_mangle]
pub extern "C" fn sys_getpagesize() -> i32 {
    4096
}

/// Threads that can run at once: 1 (one vCPU).
#[no_mangle]
pub extern "C" fn sys_available_parallelism() -> usize {
    1
}

/// Same as [`sys_available_parallelism`] (older name).
#[no_mangle]
pub extern "C" fn sys_get_processor_count() -> usize {
    1
}
