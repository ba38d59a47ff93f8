//! libos kernel threads, driven by apps/threads (a no_std app): two CPU-bound threads and the executor's 10 ms
//! timers all progress (preemption), SSE registers and errno survive switches, a thread sleeps on the executor's
//! timers and joins another, a TLS block sits at the FS base; and a thread stack overflow stops at its guard page
//! (exit 102). TCG only: the threads use SSE, which this machine's nested KVM cannot execute (TESTING.md).

use zirvium_tests::{Accel, Vm, VmError};

/// Guest exit status after a CPU exception.
const EXCEPTION: u8 = 102;

#[test]
fn threads_preempt_sleep_join_tls_tcg() -> Result<(), VmError> {
    let vm = Vm::builder("threads_preempt_sleep_join_tls_tcg", "threads", Accel::Tcg).boot()?;
    let line = vm.wait_for("threads: spinners")?;
    vm.wait_for("threads: preemption ok")?;
    vm.wait_for("threads: sse and errno kept across switches")?;
    let slept = vm.wait_for("threads: slept 20 ms")?;
    vm.wait_for("threads: join ok")?;
    vm.wait_for("threads: tls ok")?;
    vm.wait_for("threads: 0 live after all exited")?;
    vm.wait_for("threads: all ok")?;
    vm.expect_exit(0)?;
    zirvium_tests::note(format_args!("{line}; {slept}"));
    Ok(())
}

#[test]
fn thread_stack_overflow_hits_guard_page_tcg() -> Result<(), VmError> {
    let vm = Vm::builder("thread_stack_overflow_hits_guard_page_tcg", "threads", Accel::Tcg)
        .args(["fault=stack-overflow"])
        .boot()?;
    vm.expect_exit(EXCEPTION)?;
    let line = vm.line_with("guard page")?;
    vm.ensure(line.contains("stack"), format_args!("fault line {line:?} should name the stack overflow"))
}
