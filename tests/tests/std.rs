//! Rust std programs as Zirvium images (built by `images::stdapp` from `tests/std-apps/`, x86_64-unknown-hermit
//! on the pinned nightly), booted under QEMU TCG — std code uses SSE, which this machine's nested KVM cannot
//! execute (TESTING.md) — and driven from the host.
//!
//! - `std-hello` (ours): args and env from the command line, threads with Mutex/Condvar, sleep, files, the exit
//!   status.

use zirvium_tests::{Accel, Vm, VmError};

/// A std app's crate directory, relative to the workspace root.
fn std_app(name: &str) -> String {
    format!("tests/std-apps/{name}")
}

#[test]
fn std_hello_args_env_threads_files_exit_status_tcg() -> Result<(), VmError> {
    let vm = Vm::builder("std_hello_args_env_threads_files_exit_status_tcg", &std_app("std-hello"), Accel::Tcg)
        .kernel_option("env", "GREETING=hi")
        .args(["a", "b"])
        .boot()?;
    vm.wait_for(r#"std-hello: args ["std-hello", "a", "b"]"#)?;
    vm.wait_for(r#"std-hello: GREETING=Some("hi")"#)?;
    vm.wait_for("std-hello: 4 threads counted to 4000")?;
    vm.wait_for("std-hello: slept 20 ms")?;
    vm.wait_for(r#"std-hello: /tmp holds ["note.txt"] with "written by std""#)?;
    vm.wait_for("std-hello: done")?;
    vm.expect_exit(7)
}
