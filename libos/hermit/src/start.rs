//! Starting and ending the std program. The kernel's boot path (`zirvium`'s `__zirvium_start`) runs the app's
//! main future; for a std image that future starts the program's main thread — std's `runtime_entry(argc,
//! argv, env)` (`library/std/src/sys/pal/hermit/mod.rs`), which runs `main` and calls `sys_exit` — and waits
//! for the exit status, or for a shutdown request from the host ([`exit_or_shutdown`]). The boot path then
//! unmounts the file systems and ends the VM with it.
//!
//! `argv[0]` is the app's name (the string `images` links in as `zirvium_std_app_name`); the rest are the
//! command line's words after `--`. The environment is the `env=KEY=VALUE` kernel options, in order.

use alloc::string::String;
use alloc::vec::Vec;
use core::future::Future;
use core::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use core::task::Poll;
use libos::irq::WakeSlot;

/// Stack of the main thread (bytes; reserved, touched only as used).
pub const MAIN_STACK_BYTES: usize = 2 << 20;

/// NUL-terminated `argv` strings: the name, then the app's arguments.
pub fn argv_strings(name: &str, args: &[&str]) -> Vec<Vec<u8>> {
    core::iter::once(name).chain(args.iter().copied()).map(nul_terminated).collect()
}

/// NUL-terminated `KEY=VALUE` environment strings from the `env=` kernel options (values without `=` are
/// skipped: they name no variable).
pub fn env_strings(options: &[(&str, &str)]) -> Vec<Vec<u8>> {
    options.iter().filter(|(k, v)| *k == "env" && v.contains('=')).map(|(_, v)| nul_terminated(v)).collect()
}

fn nul_terminated(s: &str) -> Vec<u8> {
    let mut v: Vec<u8> = s.bytes().filter(|&b| b != 0).collect();
    v.push(0);
    v
}

/// The VM's exit status for a program's `exit(code)`: 0..=127 as is, anything else 127 (QEMU's
/// isa-debug-exit carries 7 bits; POSIX keeps only the low 8 bits anyway).
pub fn exit_status(code: i32) -> u8 {
    u8::try_from(code).ok().filter(|&c| c <= 127).unwrap_or(127)
}

static EXIT_CODE: AtomicI32 = AtomicI32::new(0);
static EXITED: AtomicBool = AtomicBool::new(false);
static EXIT: WakeSlot = WakeSlot::new();

/// Records the program's exit status and wakes the main future (which ends the VM). First caller wins.
pub fn request_exit(code: i32) {
    if !EXITED.swap(true, Ordering::AcqRel) {
        EXIT_CODE.store(code, Ordering::Release);
        EXIT.wake();
    }
}

/// Waits for [`request_exit`] and returns the VM's exit status.
pub async fn exit_requested() -> u8 {
    core::future::poll_fn(|cx| {
        EXIT.poll_until(cx, || EXITED.load(Ordering::Acquire).then(|| exit_status(EXIT_CODE.load(Ordering::Acquire))))
    })
    .await
}

/// Waits for the program's exit ([`exit_requested`]) or a shutdown request from the host
/// ([`libos::shutdown::requested`]: Xen's `xl shutdown`, Hyper-V's shutdown integration service, the ACPI power
/// button) and returns the VM's exit status: the program's, or 0 on a host request. std on this target has no
/// signals to deliver the request to, so it ends the program as a POSIX system's default `SIGTERM` action does;
/// the boot path still unmounts the file systems before the VM ends.
pub async fn exit_or_shutdown() -> u8 {
    let mut exit = core::pin::pin!(exit_requested());
    let mut shutdown = core::pin::pin!(libos::shutdown::requested());
    core::future::poll_fn(|cx| {
        if let Poll::Ready(status) = exit.as_mut().poll(cx) {
            return Poll::Ready(status);
        }
        shutdown.as_mut().poll(cx).map(|kind| {
            log::info!("std: the host asked for {kind:?}: ending the program (exit status 0)");
            0
        })
    })
    .await
}

/// Joins `argv` for the boot log.
pub fn describe(args: &[Vec<u8>]) -> String {
    let words: Vec<&str> =
        args.iter().map(|a| core::str::from_utf8(&a[..a.len().saturating_sub(1)]).unwrap_or("?")).collect();
    words.join(" ")
}

#[cfg(target_os = "none")]
pub use vm::*;

#[cfg(target_os = "none")]
mod vm {
    //! The parts that need the linked image: the TLS template from the linker script and the main thread.
    // Linker symbols and std's entry are foreign items.
    #![allow(unsafe_code)]
    use super::*;
    use alloc::boxed::Box;
    use core::pin::Pin;
    use libos::thread::{SpawnOptions, TlsTemplate};

    extern "C" {
        /// std's entry (`library/std/src/sys/pal/hermit/mod.rs`): runs `main`, then `sys_exit`.
        fn runtime_entry(argc: i32, argv: *const *const u8, env: *const *const u8) -> !;
        // Bounds of the TLS segment, from the std image's linker script (`libos/hermit/link/tls-sections.ld`).
        static __tls_start: u8;
        static __tdata_end: u8;
        static __tls_end: u8;
        static __tls_align: u8;
        /// The app's name, NUL-terminated, from the small object `images` links into every std image.
        static zirvium_std_app_name: core::ffi::c_char;
    }

    /// The program's name for `argv[0]` and the boot log.
    pub fn app_name() -> &'static str {
        // SAFETY: `images::stdapp` links `zirvium_std_app_name` as a NUL-terminated string in `.rodata`.
        let name = unsafe { core::ffi::CStr::from_ptr(&raw const zirvium_std_app_name) };
        name.to_str().unwrap_or("std-app")
    }

    /// The program's TLS image (`PT_TLS`), from the linker-script symbols.
    pub fn tls_template() -> TlsTemplate {
        // SAFETY: only the addresses of linker symbols are taken; `[__tls_start, __tdata_end)` is the `.tdata`
        // output section, initialised data in the loaded image that nothing writes.
        unsafe {
            let start = &raw const __tls_start as usize;
            let data_end = &raw const __tdata_end as usize;
            let end = &raw const __tls_end as usize;
            let align = &raw const __tls_align as usize;
            TlsTemplate {
                init: core::slice::from_raw_parts(start as *const u8, data_end.saturating_sub(start)),
                mem_size: end.saturating_sub(start),
                align: align.max(1),
            }
        }
    }

    /// `(argc, argv, envp)` as C arrays (leaked: they live as long as the program).
    static ARGS: spin::Once<(i32, usize, usize)> = spin::Once::new();

    fn c_array(strings: Vec<Vec<u8>>) -> usize {
        let mut ptrs: Vec<usize> = strings.into_iter().map(|s| s.leak().as_ptr() as usize).collect();
        ptrs.push(0);
        ptrs.leak().as_ptr() as usize
    }

    extern "C" fn main_thread(_: usize) {
        let Some(&(argc, argv, envp)) = ARGS.get() else { return };
        // SAFETY: std's documented entry; argv/envp are NUL-terminated arrays of NUL-terminated strings that
        // are never freed.
        unsafe { runtime_entry(argc, argv as *const *const u8, envp as *const *const u8) }
    }

    /// The app's main future for the boot path: starts the main thread, returns the exit status.
    pub fn app_main() -> Pin<Box<dyn Future<Output = u8> + Send>> {
        Box::pin(async {
            let args: Vec<&str> = zirvium::env::args().collect();
            let argv = argv_strings(app_name(), &args);
            let env = env_strings(zirvium::env::kernel_options());
            log::info!("std: starting {} ({} env vars)", describe(&argv), env.len());
            let argc = i32::try_from(argv.len()).unwrap_or(i32::MAX);
            ARGS.call_once(|| (argc, c_array(argv), c_array(env)));
            let opts = SpawnOptions { stack_bytes: MAIN_STACK_BYTES, tls: Some(tls_template()) };
            if let Err(e) = libos::thread::spawn(main_thread, 0, opts) {
                log::error!("std: cannot start the main thread: {e}");
                return libos::EXIT_BOOT_ERROR;
            }
            exit_or_shutdown().await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_and_env_are_nul_terminated() {
        let a = argv_strings("srv", &["--port", "80"]);
        assert_eq!(a, alloc::vec![b"srv\0".to_vec(), b"--port\0".to_vec(), b"80\0".to_vec()]);
        assert_eq!(describe(&a), "srv --port 80");
        let e = env_strings(&[("loglevel", "info"), ("env", "RUST_LOG=debug"), ("env", "BROKEN"), ("env", "A=")]);
        assert_eq!(e, alloc::vec![b"RUST_LOG=debug\0".to_vec(), b"A=\0".to_vec()]);
    }

    #[test]
    fn a_host_shutdown_request_ends_the_program_with_status_0() {
        let mut end = core::pin::pin!(exit_or_shutdown());
        let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
        assert_eq!(end.as_mut().poll(&mut cx), Poll::Pending);
        libos::shutdown::request(libos::shutdown::ShutdownKind::Poweroff);
        assert_eq!(end.as_mut().poll(&mut cx), Poll::Ready(0));
    }

    #[test]
    fn exit_codes_fit_seven_bits() {
        assert_eq!(exit_status(0), 0);
        assert_eq!(exit_status(3), 3);
        assert_eq!(exit_status(127), 127);
        assert_eq!(exit_status(128), 127);
        assert_eq!(exit_status(-1), 127);
    }
}
