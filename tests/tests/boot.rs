//! Boots apps/hello on microvm, q35 and pc, under TCG always and under KVM when `/dev/kvm` opens (a skip is
//! printed otherwise). Checks the contract of apps/hello: platform line, greeting, args echo, a 10 ms sleep that
//! did not return early, guest exit status 0.

use zirvium_tests::{accel_usable, Accel, Machine, Vm, VmError};

fn boot_hello(test: &str, machine: Machine, accel: Accel) -> Result<(), VmError> {
    if !accel_usable(test, accel) {
        return Ok(());
    }
    let vm = Vm::builder(test, "hello", accel).machine(machine).args(["a", "b"]).boot()?;
    let platform = vm.wait_for("platform: ")?;
    let want = match accel {
        Accel::Kvm => "platform: kvm",
        Accel::Tcg => "platform: qemu-tcg",
    };
    vm.ensure(platform.contains(want), format_args!("platform line {platform:?} should contain {want:?}"))?;
    vm.wait_for("hello from Zirvium")?;
    vm.wait_for(r#"args: ["a", "b"]"#)?;
    let slept = vm.wait_for("slept 10 ms")?;
    // `slept 10 ms (measured N us)`: a sleep may overshoot but never return early.
    let measured = slept
        .split_once("(measured ")
        .and_then(|(_, rest)| rest.split_once(" us)"))
        .and_then(|(n, _)| n.trim().parse::<u64>().ok());
    match measured {
        Some(us) => vm.ensure(us >= 10_000, format_args!("sleep of 10 ms returned after {us} us"))?,
        None => vm.ensure(false, format_args!("line {slept:?} lacks `(measured N us)`"))?,
    }
    vm.expect_exit(0)
}

#[test]
fn hello_microvm_tcg() -> Result<(), VmError> {
    boot_hello("hello_microvm_tcg", Machine::Microvm, Accel::Tcg)
}

#[test]
fn hello_q35_tcg() -> Result<(), VmError> {
    boot_hello("hello_q35_tcg", Machine::Q35, Accel::Tcg)
}

#[test]
fn hello_pc_tcg() -> Result<(), VmError> {
    boot_hello("hello_pc_tcg", Machine::Pc, Accel::Tcg)
}

#[test]
fn hello_microvm_kvm() -> Result<(), VmError> {
    boot_hello("hello_microvm_kvm", Machine::Microvm, Accel::Kvm)
}

#[test]
fn hello_q35_kvm() -> Result<(), VmError> {
    boot_hello("hello_q35_kvm", Machine::Q35, Accel::Kvm)
}

#[test]
fn hello_pc_kvm() -> Result<(), VmError> {
    boot_hello("hello_pc_kvm", Machine::Pc, Accel::Kvm)
}
