//! Zirvium under a real Xen 4.17: Debian's Xen and a Linux dom0 boot nested under QEMU TCG (`-cpu max`,
//! emulated SVM with nested paging), and the project's images run as PVH domUs created with `xl`
//! (`zirvium_tests::xen`). Checks Xen accepts the image, the platform line chooses Xen, output and exit status
//! reach dom0, `httpd` serves over netfront through dom0's bridge and QEMU's user network, the balloon follows
//! `xl mem-set` (`memory/target`) down and back up while httpd serves, and a Rust std program (tiny_http's
//! published hello-world example, unmodified, a std::thread per connection) serves there too.
//!
//! The first run downloads Debian's packages into `target/xen-host/` (apt-get, dpkg; see `images::xen::host`).
//! Each test boots its own nested host, one at a time; idle each takes about a minute.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use images::xen::status::ShutdownReason;
use zirvium_tests::http::{self, concurrent_gets};
use zirvium_tests::xen::XenVm;
use zirvium_tests::{note, Protocol, VmError};

/// Polls `/health` until it answers 200 (rather than waiting for the lease line: the domU's log may reach dom0
/// later than its packets).
fn wait_health(vm: &XenVm, port: u16) -> Result<(), VmError> {
    let t0 = Instant::now();
    loop {
        match http::get(port, "/health") {
            Ok(r) if r.status == 200 => return Ok(()),
            other if t0.elapsed() > vm.timeout() => {
                return Err(vm.failed(format!(
                    "no 200 from /health within {:?}: {:?}",
                    vm.timeout(),
                    other.map(|r| r.status)
                )));
            }
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// hello as a domU without devices: Xen accepts it, its lines reach dom0 (port 0xe9 / PV console), the platform
/// line says Xen, and it powers off with exit status 0.
#[test]
fn xen_boots_hello() -> Result<(), VmError> {
    let vm = XenVm::builder("xen_boots_hello", "hello").args(["a", "b"]).boot()?;
    let domid = vm.wait_created()?;
    eprintln!("xen_boots_hello: Xen runs {} as domain {domid} after {:.0} s", vm.domain(), vm.uptime());
    let platform = vm.wait_guest("platform: ")?;
    vm.ensure(platform.contains("platform: xen"), format_args!("platform line {platform:?} should choose xen"))?;
    vm.wait_guest("hello from Zirvium on xen")?;
    vm.wait_guest(r#"args: ["a", "b"]"#)?;
    vm.wait_guest("slept 10 ms")?;
    let end = vm.wait_domain_end()?;
    vm.ensure(end.graceful() && end.printed == Some(0), format_args!("hello should power off with status 0: {end}"))?;
    eprintln!("xen_boots_hello: {end} after {:.0} s", vm.uptime());
    vm.poweroff()
}

/// A panic in the domU: the guest prints `exit status 101` and shuts down with reason crash; the status that
/// `images run --hypervisor xen` returns is 101.
#[test]
fn xen_reports_exit_status() -> Result<(), VmError> {
    let vm = XenVm::builder("xen_reports_exit_status", "hello").args(["fault=panic"]).boot()?;
    vm.wait_created()?;
    vm.wait_guest("panic at ")?;
    let end = vm.wait_domain_end()?;
    vm.ensure(end.exit_code() == 101 && !end.graceful(), format_args!("a panic should end with status 101: {end}"))?;
    vm.ensure(end.reason != Some(ShutdownReason::Poweroff), format_args!("a panic is no poweroff: {end}"))?;
    vm.poweroff()
}

/// httpd as a domU with a vif on dom0's bridge and a disk: serves `/` and 1 MiB byte for byte to the host through
/// QEMU's forward, answers dom0 over the bridge, and ends gracefully on `xl shutdown`.
#[test]
fn xen_httpd_serves() -> Result<(), VmError> {
    let dir = images::cargo::target_dir().join("test-logs").join("xen");
    std::fs::create_dir_all(&dir)
        .map_err(|source| VmError::Io { what: format!("creating {}", dir.display()), source })?;
    let disk = dir.join("xen_httpd_serves.img");
    images::disk::create(&disk, 16 << 20, None, true)
        .map_err(|e| VmError::Io { what: format!("creating {}", disk.display()), source: std::io::Error::other(e) })?;
    let vm = XenVm::builder("xen_httpd_serves", "httpd")
        .forward(Protocol::Tcp, 80)
        .disk(&disk)
        .args(["message=xen integration test"])
        .boot()?;
    vm.wait_created()?;
    let platform = vm.wait_guest("platform: ")?;
    vm.ensure(platform.contains("platform: xen"), format_args!("platform line {platform:?} should choose xen"))?;
    vm.wait_guest("listening on port 80")?;
    let port = vm.host_port(Protocol::Tcp, 80)?;

    wait_health(&vm, port)?;
    eprintln!("xen_httpd_serves: first 200 after {:.0} s", vm.uptime());
    let lease = vm.wait_guest("DHCP lease")?;
    vm.ensure(lease.contains("10.0.2.15/24"), format_args!("lease line {lease:?} should give 10.0.2.15/24"))?;
    let r = http::get(port, "/").map_err(|e| vm.failed(format!("GET /: {e}")))?;
    vm.ensure(r.status == 200, format_args!("GET / status {}", r.status))?;
    vm.ensure(r.header("content-type").is_some_and(|t| t.starts_with("text/html")), "GET / content type")?;
    vm.ensure(r.text().contains("xen integration test"), format_args!("GET / should show the message: {}", r.text()))?;
    let n = 1 << 20;
    let t1 = Instant::now();
    let r = http::get(port, &format!("/bytes/{n}")).map_err(|e| vm.failed(format!("GET /bytes: {e}")))?;
    vm.ensure(r.status == 200 && r.body.len() == n, format_args!("/bytes: status {} len {}", r.status, r.body.len()))?;
    if let Some(i) = r.body.iter().enumerate().position(|(i, &b)| b != (i % 251) as u8) {
        return Err(vm.failed(format!("/bytes/{n} differs at byte {i}")));
    }
    eprintln!(
        "xen_httpd_serves: 1 MiB in {:.2} s through netfront, dom0's bridge and slirp",
        t1.elapsed().as_secs_f64()
    );
    // dom0 reaches the domU directly over xenbr0.
    let rc = vm.run("wget -q -O /tmp/health http://10.0.2.15/health && grep -q '\"status\":\"ok\"' /tmp/health")?;
    vm.ensure(rc == 0, format_args!("dom0's wget of http://10.0.2.15/health failed (exit code {rc})"))?;

    // Storage: once httpd writes its disk, check here that the write reached the disk file, e.g. with
    // `vm.run("sync")` and a read of `disk` after `vm.poweroff()`.

    let end = vm.xl_shutdown()?;
    vm.ensure(end.graceful(), format_args!("httpd should end gracefully on xl shutdown: {end}"))?;
    eprintln!("xen_httpd_serves: {end} after {:.0} s", vm.uptime());
    vm.poweroff()
}

/// kv as a domU with its `/data` disk through blkfront: 20 PUTs answered (each synced: data, metadata and a
/// `BLKIF_OP_FLUSH_DISKCACHE` before the answer), read back, then `xl shutdown` ends kv gracefully and the
/// values are in the disk image on the host, in a FAT file system `fsck.fat -n` finds clean.
#[test]
fn xen_kv_keeps_data_on_blkfront() -> Result<(), VmError> {
    let dir = images::cargo::target_dir().join("test-logs").join("xen");
    std::fs::create_dir_all(&dir)
        .map_err(|source| VmError::Io { what: format!("creating {}", dir.display()), source })?;
    let disk = dir.join("xen_kv.img");
    images::disk::create(&disk, 16 << 20, None, true)
        .map_err(|e| VmError::Io { what: format!("creating {}", disk.display()), source: std::io::Error::other(e) })?;
    let vm = XenVm::builder("xen_kv_keeps_data_on_blkfront", "kv").forward(Protocol::Tcp, 80).disk(&disk).boot()?;
    vm.wait_created()?;
    let data = vm.wait_guest("fs: ")?;
    vm.ensure(data.contains("/data fat") && data.contains("xen-vbd"), format_args!("/data on blkfront: {data:?}"))?;
    vm.wait_guest("kv listening on port 80")?;
    let port = vm.host_port(Protocol::Tcp, 80)?;
    let t0 = Instant::now();
    while !http::get(port, "/health").is_ok_and(|r| r.status == 200) {
        if t0.elapsed() > vm.timeout() {
            return Err(vm.failed(format!("kv's /health did not answer within {:?}", vm.timeout())));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let value = |i: usize| -> Vec<u8> { (0..1024 * (i + 1)).map(|j| (j * 31 + i * 7) as u8).collect() };
    for i in 0..20 {
        let r = http::request(port, "PUT", &format!("/kv/xen-key-{i}"), &[], &value(i))
            .map_err(|e| vm.failed(format!("PUT xen-key-{i}: {e}")))?;
        vm.ensure(matches!(r.status, 200 | 201 | 204), format_args!("PUT xen-key-{i}: {} {}", r.status, r.text()))?;
    }
    for i in 0..20 {
        let r = http::get(port, &format!("/kv/xen-key-{i}")).map_err(|e| vm.failed(format!("GET xen-key-{i}: {e}")))?;
        vm.ensure(r.status == 200 && r.body == value(i), format_args!("GET xen-key-{i}: {}", r.status))?;
    }
    let end = vm.xl_shutdown()?;
    vm.ensure(
        end.graceful() && end.printed == Some(0),
        format_args!("kv should end gracefully on xl shutdown: {end}"),
    )?;
    vm.poweroff()?;

    // The file system the guest left is clean (checked before anything on the host opens it).
    let out = images::host_tools::FSCK_FAT
        .command()
        .arg("-n")
        .arg(&disk)
        .output()
        .map_err(|source| VmError::Io { what: "running fsck.fat (dosfstools)".into(), source })?;
    if !out.status.success() {
        return Err(VmError::Io {
            what: format!("fsck.fat -n {}: {}", disk.display(), String::from_utf8_lossy(&out.stdout)),
            source: std::io::Error::other("file system not clean"),
        });
    }
    // Then, read-only: every value is in the image.
    let file = std::fs::File::open(&disk)
        .map_err(|source| VmError::Io { what: format!("opening {}", disk.display()), source })?;
    let fs = fatfs::FileSystem::new(&file, fatfs::FsOptions::new())
        .map_err(|e| VmError::Io { what: format!("mounting {}", disk.display()), source: e.into() })?;
    for i in 0..20 {
        let mut f = fs
            .root_dir()
            .open_file(&format!("xen-key-{i}"))
            .map_err(|e| VmError::Io { what: format!("xen-key-{i} in {}", disk.display()), source: e.into() })?;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = fatfs::Read::read(&mut f, &mut buf)
                .map_err(|e| VmError::Io { what: format!("reading xen-key-{i}"), source: e.into() })?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        if got != value(i) {
            return Err(VmError::Io {
                what: format!("xen-key-{i} in the disk image holds {} bytes, not the value PUT", got.len()),
                source: std::io::Error::other("value mismatch"),
            });
        }
    }
    Ok(())
}

/// The domU's memory in MiB as `xl list` shows it, read through dom0's console (`XLMEM<seq>=N`).
fn xl_memory(vm: &XenVm, seq: u32) -> Result<u64, VmError> {
    let tag = format!("XLMEM{seq}=");
    let cmd = format!("echo {tag}$(xl list {} | awk 'NR==2{{print $3}}')", vm.domain());
    let rc = vm.run(&cmd)?;
    vm.ensure(rc == 0, format_args!("{cmd} failed (exit code {rc})"))?;
    vm.wait_line(&format!("a line with {tag}"), |l| {
        let (_, rest) = l.split_once(&tag)?;
        rest.trim().parse::<u64>().ok()
    })
}

/// httpd's `/health` memory figures (total, free, ballooned) bytes.
fn health(vm: &XenVm, port: u16) -> Result<(u64, u64, u64), VmError> {
    let r = http::get(port, "/health").map_err(|e| vm.failed(format!("GET /health: {e}")))?;
    let text = r.text();
    vm.ensure(r.status == 200, format_args!("/health: {} {text}", r.status))?;
    http::health_memory(&text).ok_or_else(|| vm.failed(format!("no memory figures in {text}")))
}

/// `xl mem-set` to `mib` MiB, then waits until `/health` shows `ballooned` bytes ballooned; returns how long it
/// took (the dom0 command's round trip through the console included).
fn mem_set(vm: &XenVm, port: u16, mib: u64, ballooned: u64) -> Result<Duration, VmError> {
    let t0 = Instant::now();
    let rc = vm.run(&format!("xl mem-set {} {mib}m", vm.domain()))?;
    vm.ensure(rc == 0, format_args!("xl mem-set {mib}m failed (exit code {rc})"))?;
    loop {
        let (_, _, b) = health(vm, port)?;
        if b == ballooned {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > vm.timeout() {
            return Err(
                vm.failed(format!("/health shows {b} bytes ballooned after xl mem-set {mib}m, not {ballooned}"))
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The Xen balloon: httpd as a 128 MiB domU; `xl mem-set` down by 32 MiB and back up, `xl list`'s memory and
/// `/health` agreeing each time; a target far below the floor gives what is above it with a log line; a client
/// asks for `/health` all along and every request is answered.
#[test]
fn xen_balloon_follows_mem_set() -> Result<(), VmError> {
    const MIB: u64 = 1 << 20;
    let vm = XenVm::builder("xen_balloon_follows_mem_set", "httpd").forward(Protocol::Tcp, 80).mem_mib(128).boot()?;
    vm.wait_created()?;
    // Xen cuts a domU's console lines at 200 characters, so the platform line's end (the balloon) is not seen.
    let boot = vm.wait_guest("xen: balloon: memory/target")?;
    vm.ensure(boot.contains("KiB at boot"), format_args!("balloon line {boot:?}"))?;
    vm.wait_guest("listening on port 80")?;
    let port = vm.host_port(Protocol::Tcp, 80)?;
    wait_health(&vm, port)?;
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let client = {
        let (stop, served, failed) = (stop.clone(), served.clone(), failed.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match http::get(port, "/health") {
                    Ok(r) if r.status == 200 => served.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let (total, _, ballooned) = health(&vm, port)?;
    vm.ensure(ballooned == 0, "nothing ballooned at boot")?;
    let m0 = xl_memory(&vm, 1)?;
    let down = mem_set(&vm, port, 96, 32 * MIB)?;
    let m1 = xl_memory(&vm, 2)?;
    vm.ensure(m0 - m1 == 32, format_args!("xl list shows {m0} MiB, then {m1} MiB after ballooning 32 MiB"))?;
    let up = mem_set(&vm, port, 128, 0)?;
    let m2 = xl_memory(&vm, 3)?;
    vm.ensure(m2 == m0, format_args!("xl list shows {m2} MiB after ballooning back, {m0} MiB at boot"))?;

    // Far below what the guest can give: what is above the floor goes, with a log line.
    let rc = vm.run(&format!("xl mem-set {} 8m", vm.domain()))?;
    vm.ensure(rc == 0, format_args!("xl mem-set 8m failed (exit code {rc})"))?;
    vm.wait_guest("below the floor")?;
    let (_, free, given) = health(&vm, port)?;
    let m3 = xl_memory(&vm, 4)?;
    vm.ensure(given > 32 * MIB && free >= 8 * MIB, format_args!("gave {given} bytes, {free} free"))?;
    vm.ensure(
        (m0 * MIB).abs_diff(m3 * MIB + given) < MIB,
        format_args!("xl list shows {m3} MiB with {given} bytes ballooned, {m0} MiB at boot"),
    )?;
    mem_set(&vm, port, 128, 0)?;

    stop.store(true, Ordering::Relaxed);
    let _ = client.join();
    let (ok, bad) = (served.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    vm.ensure(ok > 0 && bad == 0, format_args!("/health while ballooning: {ok} answered, {bad} failed"))?;
    let asked = (m0 - 8) * MIB;
    note(format_args!(
        "xen_balloon_follows_mem_set: 32 MiB down in {:.2} s ({:.0} MiB/s), up in {:.2} s ({:.1} MiB/s) (xl mem-set \
         through dom0's console to /health, nested TCG); asked for {} MiB, the guest gave {} MiB ({:.0}%) of {} MiB, \
         keeping {} MiB free; {ok} /health answered",
        down.as_secs_f64(),
        32.0 / down.as_secs_f64(),
        up.as_secs_f64(),
        32.0 / up.as_secs_f64(),
        asked / MIB,
        given / MIB,
        100.0 * given as f64 / asked as f64,
        total / MIB,
        free / MIB
    ));
    let end = vm.xl_shutdown()?;
    vm.ensure(end.graceful(), format_args!("httpd should end gracefully on xl shutdown: {end}"))?;
    vm.poweroff()
}

/// A Rust std program as a domU: tiny_http 0.12.0's `hello-world` example, unmodified (`tests/std-apps`, built for
/// x86_64-unknown-hermit), answers over netfront, also 8 connections open at once with a request in flight on
/// each, then ends gracefully on `xl shutdown`.
#[test]
fn xen_std_tiny_http_serves() -> Result<(), VmError> {
    let vm = XenVm::builder("xen_std_tiny_http_serves", "tests/std-apps/tiny-http-hello")
        .forward(Protocol::Tcp, 9975)
        .boot()?;
    vm.wait_created()?;
    let platform = vm.wait_guest("platform: ")?;
    vm.ensure(platform.contains("platform: xen"), format_args!("platform line {platform:?} should choose xen"))?;
    vm.wait_guest("std: starting tiny-http-hello")?;
    let port = vm.host_port(Protocol::Tcp, 9975)?;
    let t0 = Instant::now();
    let first = loop {
        match http::get(port, "/") {
            Ok(r) => break r,
            Err(e) if t0.elapsed() > vm.timeout() => return Err(vm.failed(format!("GET /: {e}"))),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    };
    vm.ensure(
        first.status == 200 && first.text() == "hello world",
        format_args!("GET /: {} {:?}", first.status, first.text()),
    )?;
    eprintln!("xen_std_tiny_http_serves: first 200 after {:.0} s", vm.uptime());
    let responses = concurrent_gets(port, 8, "/").map_err(|e| vm.failed(format!("concurrent requests: {e}")))?;
    vm.ensure(
        responses.iter().all(|r| r.status == 200 && r.text() == "hello world"),
        format_args!("concurrent responses {:?}", responses.iter().map(|r| r.status).collect::<Vec<_>>()),
    )?;
    let end = vm.xl_shutdown()?;
    vm.ensure(end.graceful(), format_args!("the std program should end gracefully on xl shutdown: {end}"))?;
    vm.poweroff()
}
