//! Ending the program: `sys_exit` and `sys_abort` record the VM's exit status and end the calling thread; the
//! boot path then unmounts the file systems (FAT marked clean) and ends the VM.
// `#[no_mangle]` counts as unsafe code: every function here is a symbol std links against. No `unsafe` block
// here; the caller's pointers go through `crate::user` (`sys::tests` checks).
#![allow(unsafe_code)]

use crate::start::request_exit;

/// Ends the program with `status` (the VM's exit status: 0..=127 as is, others 127). Never returns.
#[no_mangle]
pub extern "C" fn sys_exit(status: i32) -> ! {
    request_exit(status);
    libos::thread::exit()
}

/// Ends the program abnormally (a panic under `panic = "abort"`): exit status 101, like a kernel panic.
#[no_mangle]
pub extern "C" fn sys_abort() -> ! {
    libos::println!("std: abort");
    request_exit(i32::from(libos::EXIT_PANIC));
    libos::thread::exit()
}
