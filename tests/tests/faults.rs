//! Failure paths of the libos, driven through apps/hello's `fault=` argument and the kernel command line:
//! CPU exceptions exit 102 with a register dump and backtrace, a panic exits 101, an unknown kernel option
//! exits 103 naming the option (exit statuses: BRIEF "Exit"; vectors: Intel SDM Vol. 3A §6.3.1, Table 6-1).

use zirvium_tests::{accel_usable, Accel, Vm, VmError};

/// Guest exit statuses fixed by the contract.
const PANIC: u8 = 101;
const EXCEPTION: u8 = 102;
const BOOT_ERROR: u8 = 103;

/// Boots hello with `fault=<kind>`, expects exit 102 and an `EXCEPTION` line with `name (vector N)` and `CR2=`,
/// plus a backtrace. Returns the VM and the EXCEPTION line for further checks.
fn exception(test: &str, accel: Accel, kind: &str, name: &str, vector: u8) -> Result<(Vm, String), VmError> {
    let vm = Vm::builder(test, "hello", accel).args([format!("fault={kind}")]).boot()?;
    vm.expect_exit(EXCEPTION)?;
    let line = vm.line_with("EXCEPTION")?;
    let want = format!("{name} (vector {vector})");
    vm.ensure(line.contains(&want), format_args!("EXCEPTION line {line:?} should name {want:?}"))?;
    vm.ensure(line.contains("CR2=0x"), format_args!("EXCEPTION line {line:?} lacks CR2=0x.."))?;
    vm.line_with("backtrace:")?;
    Ok((vm, line))
}

/// The hexadecimal value after `key` in `line` (`error=0x3 ...` → 3).
fn hex_field(line: &str, key: &str) -> Option<u64> {
    let rest = line.split_once(key)?.1.strip_prefix("0x")?;
    let digits: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
    u64::from_str_radix(&digits, 16).ok()
}

#[test]
fn page_fault_tcg() -> Result<(), VmError> {
    exception("page_fault_tcg", Accel::Tcg, "pagefault", "Page fault", 14).map(drop)
}

#[test]
fn page_fault_kvm() -> Result<(), VmError> {
    if !accel_usable("page_fault_kvm", Accel::Kvm) {
        return Ok(());
    }
    exception("page_fault_kvm", Accel::Kvm, "pagefault", "Page fault", 14).map(drop)
}

#[test]
fn divide_error_tcg() -> Result<(), VmError> {
    exception("divide_error_tcg", Accel::Tcg, "divide", "Divide error", 0).map(drop)
}

/// W^X: a write to kernel text is a protection violation on a present page: page-fault error code bits
/// P (0) and W/R (1) set (Intel SDM Vol. 3A §4.7).
#[test]
fn write_to_text_faults_tcg() -> Result<(), VmError> {
    let (vm, line) = exception("write_to_text_faults_tcg", Accel::Tcg, "write-text", "Page fault", 14)?;
    match hex_field(&line, "error=") {
        Some(code) => vm.ensure(code & 0b11 == 0b11, format_args!("error code {code:#x} should have P and W set"))?,
        None => vm.ensure(false, format_args!("EXCEPTION line {line:?} lacks error=0x.."))?,
    }
    // The report names the protection and the region.
    let protection = vm.line_with("protection: W^X")?;
    vm.ensure(protection.contains("CR2 is in kernel text"), format_args!("{protection:?} should name kernel text"))
}

/// A runaway recursion in a task hits the guard page under the stack and is reported as an exception naming the
/// guard page, not a hang or silent corruption (which vector depends on how the libos catches it: #PF on an IST
/// stack or #DF).
#[test]
fn stack_overflow_tcg() -> Result<(), VmError> {
    let vm = Vm::builder("stack_overflow_tcg", "hello", Accel::Tcg).args(["fault=stack-overflow"]).boot()?;
    vm.expect_exit(EXCEPTION)?;
    vm.line_with("EXCEPTION")?;
    // Tasks run on the boot stack; the report says the overflow hit its guard page.
    vm.line_with("stack guard page").map(drop)
}

#[test]
fn panic_tcg() -> Result<(), VmError> {
    let vm = Vm::builder("panic_tcg", "hello", Accel::Tcg).args(["fault=panic"]).boot()?;
    vm.expect_exit(PANIC)?;
    vm.line_with("panic at ").map(drop)
}

#[test]
fn unknown_kernel_option_tcg() -> Result<(), VmError> {
    let vm = Vm::builder("unknown_kernel_option_tcg", "hello", Accel::Tcg).kernel_option("bogus", "1").boot()?;
    vm.expect_exit(BOOT_ERROR)?;
    // The error line must name the option and say what is wrong with it (not just echo the command line).
    let named = vm.console().lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.contains("bogus") && (l.contains("unknown") || l.contains("unrecognized") || l.contains("invalid"))
    });
    vm.ensure(named, "no console line names `bogus` as an unknown kernel option")
}

#[test]
fn hex_field_parses() {
    assert_eq!(hex_field("EXCEPTION Page fault (vector 14) error=0x3 RIP=0x1", "error="), Some(3));
    assert_eq!(hex_field("RIP=0xffff8000 CR2=0x0", "RIP="), Some(0xffff_8000));
    assert_eq!(hex_field("error=3", "error="), None);
    assert_eq!(hex_field("none", "error="), None);
}
