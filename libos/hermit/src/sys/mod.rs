//! The exported `sys_*` functions, one module per area as in Hermit's `src/syscalls/`. Each is `extern "C"`
//! with the exact signature `hermit-abi` 0.5 declares, documents the errno values it returns, turns pointers
//! into references through [`crate::user`], and runs its body through [`call`]: no preemption inside the
//! library OS, and on failure `-errno` returned and `errno` stored for the thread. Nothing here panics on bad
//! input.

pub mod alloc;
pub mod entropy;
pub mod env;
pub mod exit;
pub mod fs;
pub mod futex;
pub mod net;
pub mod poll;
pub mod thread;
pub mod time;
pub mod unsupported;

use crate::errno::{AbiResult, Errno};

/// A return type of the ABI: errors are `-errno`.
pub trait Ret {
    /// `-e`.
    fn err(e: Errno) -> Self;
}

impl Ret for i32 {
    fn err(e: Errno) -> Self {
        -e.0
    }
}

impl Ret for isize {
    fn err(e: Errno) -> Self {
        -(e.0 as isize)
    }
}

impl Ret for i64 {
    fn err(e: Errno) -> Self {
        -i64::from(e.0)
    }
}

/// Runs an ABI call's body inside the library OS (no preemption; the thread may still block in it): `Ok(v)`
/// returns `v`; `Err(e)` sets the thread's errno and returns `-e`.
pub fn call<R: Ret>(body: impl FnOnce() -> AbiResult<R>) -> R {
    let _inside = libos::thread::no_preempt();
    match body() {
        Ok(v) => v,
        Err(e) => {
            libos::thread::set_errno(e.0);
            R::err(e)
        }
    }
}

/// A length as the `isize` the ABI returns. Errors: `EINVAL` past `isize::MAX` (no buffer is that long).
pub fn len(n: usize) -> AbiResult<isize> {
    isize::try_from(n).map_err(|_| Errno::EINVAL)
}

#[cfg(test)]
mod tests {
    /// The `#![allow(unsafe_code)]` of the `sys_*` modules is for `#[no_mangle]`: apart from the allocator,
    /// none of them may hold an `unsafe` block or function (pointers are `crate::user`'s business).
    #[test]
    fn only_the_allocator_has_unsafe_code() {
        let sources = [
            ("entropy.rs", include_str!("entropy.rs")),
            ("env.rs", include_str!("env.rs")),
            ("exit.rs", include_str!("exit.rs")),
            ("fs.rs", include_str!("fs.rs")),
            ("futex.rs", include_str!("futex.rs")),
            ("net.rs", include_str!("net.rs")),
            ("poll.rs", include_str!("poll.rs")),
            ("thread.rs", include_str!("thread.rs")),
            ("time.rs", include_str!("time.rs")),
            ("unsupported.rs", include_str!("unsupported.rs")),
        ];
        for (name, text) in sources {
            let unsafe_code = ["unsafe {", "unsafe fn", "unsafe extern", "unsafe impl", "unsafe trait"];
            let mut code = text.lines().filter(|l| !l.trim_start().starts_with("//"));
            assert!(
                !code.any(|l| unsafe_code.iter().any(|u| l.contains(u))),
                "sys/{name} has unsafe code besides #[no_mangle]"
            );
        }
    }
}
