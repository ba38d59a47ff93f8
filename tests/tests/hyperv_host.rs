//! Zirvium on a real Hyper-V-style host: KVM's Hyper-V enlightenments (hypercall page, reference TSC page and
//! counter, SynIC, synthetic timers) and QEMU's VMBus server with hv-balloon, nested under QEMU TCG
//! (`zirvium_tests::hyperv`). Checks the platform line names the clock and the VMBus version on each clock path,
//! timers on stimer0 wake on time, the guest's exit status reaches the host, Dynamic Memory balloons the guest down
//! and back up as QMP `balloon` on L2's QEMU asks (the guest's figures, its status reports and `query-balloon`
//! agreeing), and httpd serves `/health` over a virtio-net-pci NIC next to VMBus while the balloon moves.
//!
//! The first run downloads Debian's kernel and busybox into `target/hyperv-host/` (apt-get, dpkg; see
//! `images::hyperv::host`). Each test boots its own nested host, one at a time; idle each takes 15-30 s, the
//! balloon tests a minute more (hv-balloon waits 50 s after the guest's capabilities before it balloons).

use std::time::{Duration, Instant};

use zirvium_tests::hyperv::HypervVm;
use zirvium_tests::qmp::Qmp;
use zirvium_tests::{http, note, Protocol, VmError};

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

/// The guest's `memory: total T free F ballooned B bytes` line as (T, F, B).
fn memory_line(line: &str) -> Option<(u64, u64, u64)> {
    let rest = line.split_once("memory: total ")?.1;
    let mut w = rest.split_whitespace();
    let total = w.next()?.parse().ok()?;
    let free = w.nth(1)?.parse().ok()?;
    let ballooned = w.nth(1)?.parse().ok()?;
    Some((total, free, ballooned))
}

/// Polls QMP `query-balloon` until `actual` is `want` (bytes); returns how long it took. Errors: not within the
/// VM's timeout.
fn wait_actual(vm: &HypervVm, qmp: &mut Qmp, want: u64) -> Result<Duration, VmError> {
    let t0 = Instant::now();
    loop {
        let actual = qmp.balloon_actual().map_err(|e| vm.failed(format!("query-balloon: {e}")))?;
        if actual == want {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > vm.timeout() {
            return Err(vm.failed(format!("the balloon's actual size stayed {actual}, not {want}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Hyper-V Dynamic Memory driven by QMP `balloon` on L2's QEMU (hv-balloon): hello stays up printing its memory
/// figures for 110 s; the balloon goes down by 32 MiB and back up twice (the first time after hv-balloon's 50 s
/// post-boot wait), QMP `query-balloon` and the guest agree each time, a request far below the guest's floor gets
/// what the guest can give, and the guest exits cleanly at the end.
#[test]
fn hyperv_dynamic_memory_balloon() -> Result<(), VmError> {
    const MIB: u64 = 1 << 20;
    let vm = HypervVm::builder("hyperv_dynamic_memory_balloon", "hello").qmp().args(["memory=110"]).boot()?;
    let platform = vm.wait_guest("platform: ")?;
    vm.ensure(platform.contains("dynamic memory 2.0"), format_args!("{platform:?} should name Dynamic Memory 2.0"))?;
    let first = vm.wait_guest("memory: total")?;
    let (total, _, ballooned) = memory_line(&first).ok_or_else(|| vm.failed(format!("bad memory line {first:?}")))?;
    vm.ensure(ballooned == 0 && total > 100 * MIB, format_args!("at boot: {first:?}"))?;
    let mut qmp = vm.qmp()?;
    let ram = qmp.balloon_actual().map_err(|e| vm.failed(format!("query-balloon: {e}")))?;
    vm.ensure(ram == 128 * MIB, format_args!("query-balloon says {ram} bytes of a 128 MiB guest"))?;
    let balloon =
        |qmp: &mut Qmp, bytes: u64| qmp.balloon(bytes).map_err(|e| vm.failed(format!("balloon {bytes}: {e}")));
    // The guest shows each change: wait for a line after the `from`-th guest line with exactly `ballooned`.
    let shows = |from: usize, ballooned: u64| -> Result<String, VmError> {
        let t0 = Instant::now();
        loop {
            let out = vm.guest_output();
            let hit = out.iter().skip(from).find(|l| memory_line(l).is_some_and(|(_, _, b)| b == ballooned));
            if let Some(l) = hit {
                return Ok(l.clone());
            }
            if t0.elapsed() > vm.timeout() {
                return Err(vm.failed(format!("the guest never showed {ballooned} bytes ballooned")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let seen = || vm.guest_output().len();
    let mut rates = Vec::new();
    for round in 0..2 {
        let from = seen();
        balloon(&mut qmp, ram - 32 * MIB)?;
        let down = wait_actual(&vm, &mut qmp, ram - 32 * MIB)?;
        let line = shows(from, 32 * MIB)?;
        let (_, free, _) = memory_line(&line).unwrap_or_default();
        vm.ensure(free + 32 * MIB <= total, format_args!("after ballooning down: {line:?}"))?;
        let from = seen();
        balloon(&mut qmp, ram)?;
        let up = wait_actual(&vm, &mut qmp, ram)?;
        shows(from, 0)?;
        rates.push((round, down, up));
    }
    // Far below what the guest can spare: it gives everything above its floor (the host asks again for the rest
    // and gets no more) and stays up.
    let from = seen();
    balloon(&mut qmp, 16 * MIB)?;
    let actual = wait_actual_settled(&vm, &mut qmp, ram)?;
    let given = ram - actual;
    let line = shows(from, given)?;
    let (_, free, _) = memory_line(&line).unwrap_or_default();
    vm.ensure(given > 64 * MIB && free > 0, format_args!("far below the floor: {line:?}"))?;
    let asked = ram - 16 * MIB;
    let from = seen();
    balloon(&mut qmp, ram)?;
    wait_actual(&vm, &mut qmp, ram)?;
    shows(from, 0)?;
    // The guest's status reports reach the host (hv-balloon runs with status-report=on): what it reports as
    // available is the free memory it shows (within 1 MiB: allocations come and go between the two readings), once
    // a report from after the last change arrived (the guest sends one a second).
    let (_, free_now, _) = vm.guest_output().iter().rev().find_map(|l| memory_line(l)).unwrap_or_default();
    let t0 = Instant::now();
    loop {
        let report = qmp
            .execute("query-hv-balloon-status-report", None)
            .map_err(|e| vm.failed(format!("query-hv-balloon-status-report: {e}")))?;
        let available = report.get("available").and_then(|v| v.as_u64()).unwrap_or(0);
        let committed = report.get("committed").and_then(|v| v.as_u64()).unwrap_or(0);
        if available.abs_diff(free_now) < MIB && committed > 0 {
            break;
        }
        if t0.elapsed() > Duration::from_secs(10) {
            return Err(vm.failed(format!("status report {report} should match the guest's {free_now} bytes free")));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    for (round, down, up) in &rates {
        note(format_args!(
            "hyperv_dynamic_memory_balloon: round {round}: 32 MiB down in {:.3} s ({:.0} MiB/s), up in {:.3} s ({:.0} MiB/s)",
            down.as_secs_f64(),
            32.0 / down.as_secs_f64(),
            up.as_secs_f64(),
            32.0 / up.as_secs_f64()
        ));
    }
    note(format_args!(
        "hyperv_dynamic_memory_balloon: asked for {} MiB, the guest gave {} MiB ({:.0}%), keeping {} MiB free",
        asked / MIB,
        given / MIB,
        100.0 * given as f64 / asked as f64,
        free / MIB
    ));
    vm.expect_exit(0)
}

/// QMP `query-balloon` once it left `from` and stopped changing (two equal readings 0.5 s apart). Errors: not
/// within the VM's timeout.
fn wait_actual_settled(vm: &HypervVm, qmp: &mut Qmp, from: u64) -> Result<u64, VmError> {
    let t0 = Instant::now();
    let mut last = from;
    while t0.elapsed() < vm.timeout() {
        std::thread::sleep(Duration::from_millis(500));
        let now = qmp.balloon_actual().map_err(|e| vm.failed(format!("query-balloon: {e}")))?;
        if now == last && now != from {
            return Ok(now);
        }
        last = now;
    }
    Err(vm.failed(format!("query-balloon did not settle away from {from} within {:?}", vm.timeout())))
}

/// The memory figures of a `/health` document: (total, free, ballooned) bytes.
fn health_memory(json: &str) -> Option<(u64, u64, u64)> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let m = v.get("memory")?;
    let n = |k: &str| m.get(k).and_then(serde_json::Value::as_u64);
    Some((n("total_bytes")?, n("free_bytes")?, n("ballooned_bytes")?))
}

/// httpd on the nested host with a virtio-net-pci NIC next to VMBus: `/health` reaches the host through both user
/// networks while the balloon goes down by 32 MiB and back up; QMP `query-balloon` and `/health` agree, and every
/// request is answered.
#[test]
fn hyperv_httpd_serves_while_ballooning() -> Result<(), VmError> {
    const MIB: u64 = 1 << 20;
    let vm =
        HypervVm::builder("hyperv_httpd_serves_while_ballooning", "httpd").forward(Protocol::Tcp, 80).qmp().boot()?;
    let platform = vm.wait_guest("platform: ")?;
    vm.ensure(
        platform.contains("platform: hyperv") && platform.contains("dynamic memory"),
        format_args!("platform line {platform:?} should choose hyperv with Dynamic Memory"),
    )?;
    vm.wait_guest("listening on port 80")?;
    let port = vm.host_port(Protocol::Tcp, 80)?;
    let health = || -> Result<(u64, u64, u64), VmError> {
        let r = http::get(port, "/health").map_err(|e| vm.failed(format!("GET /health: {e}")))?;
        let text = r.text();
        vm.ensure(r.status == 200 && text.contains(r#""platform":"hyperv""#), format_args!("/health: {text}"))?;
        health_memory(&text).ok_or_else(|| vm.failed(format!("no memory figures in {text}")))
    };
    // The first request may wait for both slirps to learn the guest's address.
    let t0 = Instant::now();
    while !http::get(port, "/health").is_ok_and(|r| r.status == 200) {
        if t0.elapsed() > vm.timeout() {
            return Err(vm.failed("no 200 from /health".into()));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let (_, _, ballooned) = health()?;
    vm.ensure(ballooned == 0, "nothing ballooned at boot")?;
    let mut qmp = vm.qmp()?;
    let ram = qmp.balloon_actual().map_err(|e| vm.failed(format!("query-balloon: {e}")))?;
    for (target, want) in [(ram - 32 * MIB, 32 * MIB), (ram, 0)] {
        qmp.balloon(target).map_err(|e| vm.failed(format!("balloon: {e}")))?;
        // Keep asking while the host waits out hv-balloon's post-boot delay and moves the memory.
        let t0 = Instant::now();
        loop {
            let (_, _, b) = health()?;
            let actual = qmp.balloon_actual().map_err(|e| vm.failed(format!("query-balloon: {e}")))?;
            if b == want && actual == target {
                vm.ensure(ram - actual == b, format_args!("query-balloon {actual} and /health {b} disagree"))?;
                break;
            }
            if t0.elapsed() > vm.timeout() {
                return Err(vm.failed(format!("/health shows {b} ballooned, QMP {actual}; wanted {want}")));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}
