//! The Hermit ABI in Zirvium: the `sys_*` C functions that Rust's `x86_64-unknown-hermit` std (and the `libc`
//! crate for that target, which mio and tokio use) call, implemented over libos threads, the `fs` VFS and the
//! `net` stack. Linked with a std program, this crate (with everything below it) is the kernel of a Zirvium
//! std image: `images` builds it as a static library for `x86_64-unknown-none`, turns it into one relocatable
//! object whose only global symbols are the `sys_*` functions and the PVH entry, and links the program with
//! it (see `images::std`).
//!
//! Layout: [`abi`] (C types and constants), [`errno`], [`user`] (the one place raw pointers become slices),
//! the objects behind descriptors ([`fd`], [`object`], [`file`], [`socket`], [`eventfd`]), pure helpers
//! ([`futex`], [`poll`], [`entropy`], [`wait`]), [`start`] (the main thread and the exit status), and
//! `sys::*`, the exported functions, one module per area as in Hermit's kernel (`src/syscalls/`).
//!
//! Source of the ABI: `hermit-abi` 0.5.2 as vendored by the pinned nightly (`library/vendor/hermit-abi-0.5.2`),
//! its callers in `library/std/src/sys/**/hermit*`, and `libc` 0.2 `src/hermit.rs`.
#![cfg_attr(target_os = "none", no_std)]

extern crate alloc;
// The boot path (platform selection, network, file systems) and the drivers below it: linked for their
// `#[no_mangle]` entry points even where nothing here names them.
extern crate zirvium;

pub mod abi;
pub mod entropy;
pub mod errno;
pub mod eventfd;
pub mod fd;
pub mod file;
pub mod futex;
pub mod object;
pub mod poll;
pub mod socket;
pub mod start;
pub mod sys;
pub mod user;
pub mod wait;

/// The app's main future for `zirvium`'s boot path: the std program's main thread (see [`start`]).
#[cfg(target_os = "none")]
#[allow(unsafe_code)] // `#[no_mangle]`: the boot path (`zirvium::boot`) links against this name
#[no_mangle]
fn __zirvium_app_main() -> core::pin::Pin<alloc::boxed::Box<dyn core::future::Future<Output = u8> + Send>> {
    start::app_main()
}

/// The app's name for the boot log.
#[cfg(target_os = "none")]
#[allow(unsafe_code)] // `#[no_mangle]`: as above
#[no_mangle]
fn __zirvium_app_name() -> &'static str {
    start::app_name()
}
