//! Zirvium on a real Hyper-V-style host: KVM's Hyper-V enlightenments (hypercall page, reference TSC page and
//! counter, SynIC, synthetic timers) and QEMU's VMBus server with hv-balloon, nested under QEMU TCG
//! (`zirvium_tests::hyperv`). Checks the platform line names the clock and the VMBus version on each clock path,
//! timers on stimer0 wake on time, and the guest's exit status reaches the host.
//!
//! The first run downloads Debian's kernel and busybox into `target/hyperv-host/` (apt-get, dpkg; see
//! `images::hyperv::host`). Each test boots its own nested host, one at a time; idle each takes 15-30 s.

use std::time::Duration;

use zirvium_tests::hyperv::HypervVm;
use zirvium_tests::{note, VmError};

/// The lateness figures of hello's `N sleeps of 10 ms: late min/mean/max A/B/C us` line (µs).
fn lateness(line: &str) -> Option<(u64, u64, u64)> {
    let (_, figures) = line.split_once("late min/mean/max ")?;
    let mut it = figures.split_whitespace().next()?.split('/').map(|n| n.parse().ok());
    Some((it.next()??, it.next()??, it.next()??))
}

/// Boots hello with `sleeps=20` on the nested host with the reference TSC page valid or not; checks the platform
/// line (clock, stimer0, VMBus 4.0), the wake-ups and the exit status, and prints the boot phases.
fn hello_on_clock_path(name: &str, tsc_page: bool, clock: &str) -> Result<(), VmError> {
    let vm = HypervVm::builder(name, "hello").tsc_page(tsc_page).args(["sleeps=20"]).boot()?;
    let platform = vm.wait_guest("platform: ")?;
    vm.ensure(platform.contains("platform: hyperv"), format_args!("platform line {platform:?} should choose hyperv"))?;
    vm.ensure(
        platform.contains(&format!("clock {clock} ")),
        format_args!("platform line {platform:?} should name the {clock} clock"),
    )?;
    vm.ensure(platform.contains("vmbus 4.0"), format_args!("platform line {platform:?} should name VMBus 4.0"))?;
    vm.ensure(
        platform.contains("timer hyperv-stimer0 (direct mode)"),
        format_args!("platform line {platform:?} should use stimer0 in direct mode"),
    )?;
    vm.wait_guest("hello from Zirvium on hyperv")?;
    let sleeps = vm.wait_guest("20 sleeps of 10 ms")?;
    let (min, mean, max) = lateness(&sleeps).ok_or_else(|| vm.failed(format!("no lateness figures in {sleeps:?}")))?;
    // A timer never fires early (the figures would be cut at 0 then, min 0 is suspicious only together with a
    // mean of 0); under nested TCG a wake-up is typically 1-10 ms late. 250 ms means the timer did not fire and
    // something else (another interrupt) woke the guest.
    vm.ensure(max < 250_000, format_args!("stimer0 wake-ups should be on time: {sleeps:?}"))?;
    vm.expect_exit(0)?;
    let at = |needle: &str| vm.arrival(|l| l.contains(needle)).map_or(f64::NAN, |d| d.as_secs_f64());
    note(format_args!(
        "{name}: wake-ups late min/mean/max {min}/{mean}/{max} us; phases since L0 start (s): L1 init {:.1}, \
         L1 ready {:.1}, L2 started {:.1}, guest first line {:.1}, platform line {:.1}, app {:.1}, L2 exited {:.1}",
        at("images-hyperv: L1 init"),
        at("images-hyperv: L1 ready"),
        at("images-hyperv: L2 starting"),
        at("L2| "),
        at("platform: hyperv"),
        at("hello from Zirvium"),
        at("images-hyperv: L2 exited"),
    ));
    Ok(())
}

/// The host publishes a valid reference TSC page (L1's clocksource is `tsc`): the guest's clock is the page.
#[test]
fn hyperv_hello_tsc_page_clock() -> Result<(), VmError> {
    hello_on_clock_path("hyperv_hello_tsc_page_clock", true, "hyperv-tsc-page")
}

/// The reference TSC page stays invalid (L1's clocksource is `hpet`): the guest falls back to the reference counter
/// MSR.
#[test]
fn hyperv_hello_reference_counter_clock() -> Result<(), VmError> {
    hello_on_clock_path("hyperv_hello_reference_counter_clock", false, "hyperv-ref-counter")
}

/// A panic in the guest: its exit status 101 reaches the host through L2's QEMU and L1.
#[test]
fn hyperv_reports_exit_status() -> Result<(), VmError> {
    let vm = HypervVm::builder("hyperv_reports_exit_status", "hello")
        .args(["fault=panic"])
        .timeout(Duration::from_secs(600))
        .boot()?;
    vm.wait_guest("panic at ")?;
    vm.expect_exit(101)
}

#[test]
fn lateness_figures_parse() {
    assert_eq!(lateness("20 sleeps of 10 ms: late min/mean/max 578/2421/10586 us"), Some((578, 2421, 10586)));
    assert_eq!(lateness("20 sleeps of 10 ms: late min/mean/max x/1/2 us"), None);
}
