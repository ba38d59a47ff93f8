//! virtio-balloon (virtio 1.2 §5.5) on plain QEMU, under TCG (and microvm under KVM when `/dev/kvm` opens): httpd with a virtio-balloon device on microvm
//! (virtio-mmio, `virtio-balloon-device`) and q35 (virtio-pci, `virtio-balloon-pci`), resized with QMP `balloon`
//! down by 32 MiB and back up while a client keeps asking for `/health`: QMP `query-balloon` and the guest's
//! `/health` memory figures agree after each change, every request is answered, and a request far beyond what the
//! guest can free gets what is above the balloon's floor, a log line, and the floor stays free. Prints the
//! inflate and deflate rates (MiB/s) and the fraction of the oversized request that was given.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zirvium_tests::http::{get, health_memory};
use zirvium_tests::qmp::Qmp;
use zirvium_tests::{accel_usable, note, Accel, Machine, Protocol, Vm, VmError};

const MIB: u64 = 1 << 20;
/// Guest RAM (MiB).
const RAM_MIB: u32 = 128;

/// `/health`'s memory figures (total, free, ballooned) bytes.
fn health(vm: &Vm, port: u16) -> Result<(u64, u64, u64), VmError> {
    let r = get(port, "/health").map_err(|e| fail(vm, format_args!("GET /health: {e}")))?;
    let text = r.text();
    vm.ensure(r.status == 200, format_args!("/health answered {}: {text}", r.status))?;
    health_memory(&text).ok_or_else(|| fail(vm, format_args!("no memory figures in {text}")))
}

fn fail(vm: &Vm, what: impl std::fmt::Display) -> VmError {
    vm.ensure(false, what).expect_err("ensure(false) always fails")
}

/// Asks for a guest of `target` bytes and waits until `query-balloon` says so and `/health` shows `ballooned`
/// bytes ballooned; checks the two agree. Returns how long it took.
fn resize(vm: &Vm, qmp: &mut Qmp, port: u16, ram: u64, target: u64, ballooned: u64) -> Result<Duration, VmError> {
    let t0 = Instant::now();
    qmp.balloon(target).map_err(|e| fail(vm, format_args!("balloon {target}: {e}")))?;
    loop {
        let actual = qmp.balloon_actual().map_err(|e| fail(vm, format_args!("query-balloon: {e}")))?;
        let (_, _, b) = health(vm, port)?;
        if actual == target && b == ballooned {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > vm.timeout() {
            return Err(fail(
                vm,
                format_args!(
                    "query-balloon {actual}, /health {b} ballooned; wanted {target} and {ballooned} (RAM {ram})"
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `query-balloon` once it stopped changing (equal readings 0.5 s apart).
fn settled(vm: &Vm, qmp: &mut Qmp) -> Result<u64, VmError> {
    let mut last = u64::MAX;
    let t0 = Instant::now();
    while t0.elapsed() < vm.timeout() {
        let now = qmp.balloon_actual().map_err(|e| fail(vm, format_args!("query-balloon: {e}")))?;
        if now == last {
            return Ok(now);
        }
        last = now;
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(fail(vm, "query-balloon did not settle"))
}

fn balloon_cycle(test: &str, machine: Machine, accel: Accel) -> Result<(), VmError> {
    if !accel_usable(test, accel) {
        return Ok(());
    }
    let vm = Vm::builder(test, "httpd", accel)
        .machine(machine)
        .mem_mib(RAM_MIB)
        .forward(Protocol::Tcp, 80)
        .balloon()
        .boot()?;
    let dev = vm.wait_for("virtio-balloon@")?;
    vm.ensure(dev.contains("STATS_VQ") && dev.contains("num_pages 0"), format_args!("device line {dev:?}"))?;
    vm.wait_for("listening on port 80")?;
    let port = vm.host_port(Protocol::Tcp, 80)?;
    let t0 = Instant::now();
    while !get(port, "/health").is_ok_and(|r| r.status == 200) {
        if t0.elapsed() > vm.timeout() {
            return Err(fail(&vm, "no 200 from /health"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // A client asks for /health all along; every request must be answered.
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let client = {
        let (stop, served, failed) = (stop.clone(), served.clone(), failed.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match get(port, "/health") {
                    Ok(r) if r.status == 200 => served.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let mut qmp = vm.qmp()?;
    let ram = qmp.balloon_actual().map_err(|e| fail(&vm, format_args!("query-balloon: {e}")))?;
    vm.ensure(ram == u64::from(RAM_MIB) * MIB, format_args!("query-balloon says {ram} bytes at boot"))?;
    let (total, _, ballooned) = health(&vm, port)?;
    vm.ensure(ballooned == 0, "nothing ballooned at boot")?;

    let down = resize(&vm, &mut qmp, port, ram, ram - 32 * MIB, 32 * MIB)?;
    let (_, free, _) = health(&vm, port)?;
    vm.ensure(free + 32 * MIB <= total, format_args!("free {free} of total {total} after giving 32 MiB"))?;
    let up = resize(&vm, &mut qmp, port, ram, ram, 0)?;

    // Far more than the guest can free: what is above the floor goes, the floor stays free.
    let asked = ram - MIB;
    qmp.balloon(MIB).map_err(|e| fail(&vm, format_args!("balloon 1 MiB: {e}")))?;
    vm.wait_for("the rest would take free memory below the floor")?;
    let actual = settled(&vm, &mut qmp)?;
    let (_, free, given) = health(&vm, port)?;
    vm.ensure(ram - actual == given, format_args!("query-balloon {actual} and /health {given} ballooned disagree"))?;
    vm.ensure(given > 32 * MIB && given < asked, format_args!("gave {given} of {asked} bytes asked"))?;
    vm.ensure(free >= 8 * MIB, format_args!("only {free} bytes free: the floor was taken"))?;
    resize(&vm, &mut qmp, port, ram, ram, 0)?;

    stop.store(true, Ordering::Relaxed);
    let _ = client.join();
    let (ok, bad) = (served.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    vm.ensure(ok > 0 && bad == 0, format_args!("/health while ballooning: {ok} answered, {bad} failed"))?;
    let rate = |d: Duration| 32.0 / d.as_secs_f64();
    note(format_args!(
        "{test}: 32 MiB down in {:.3} s ({:.0} MiB/s), up in {:.3} s ({:.0} MiB/s) (QMP to query-balloon and /health \
         agreeing, {accel}); asked for {} MiB, the guest gave {} MiB ({:.0}%), keeping {} MiB free; {ok} /health answered",
        down.as_secs_f64(),
        rate(down),
        up.as_secs_f64(),
        rate(up),
        asked / MIB,
        given / MIB,
        100.0 * given as f64 / asked as f64,
        free / MIB
    ));
    Ok(())
}

#[test]
fn virtio_balloon_mmio_httpd_serves_while_ballooning() -> Result<(), VmError> {
    balloon_cycle("virtio_balloon_mmio_httpd_serves_while_ballooning", Machine::Microvm, Accel::Tcg)
}

#[test]
fn virtio_balloon_mmio_kvm_httpd_serves_while_ballooning() -> Result<(), VmError> {
    balloon_cycle("virtio_balloon_mmio_kvm_httpd_serves_while_ballooning", Machine::Microvm, Accel::Kvm)
}

#[test]
fn virtio_balloon_pci_httpd_serves_while_ballooning() -> Result<(), VmError> {
    balloon_cycle("virtio_balloon_pci_httpd_serves_while_ballooning", Machine::Q35, Accel::Tcg)
}
