//! Zirvium under a real Xen 4.17: Debian's Xen and a Linux dom0 boot nested under QEMU TCG (`-cpu max`,
//! emulated SVM with nested paging), and the project's images run as PVH domUs created with `xl`
//! (`zirvium_tests::xen`). Checks Xen accepts the image, the platform line chooses Xen, output and exit status
//! reach dom0, and `httpd` serves over netfront through dom0's bridge and QEMU's user network; a Rust std program
//! (tiny_http's published hello-world example, unmodified, a std::thread per connection) serves there too.
//!
//! The first run downloads Debian's packages into `target/xen-host/` (apt-get, dpkg; see `images::xen::host`).
//! Each test boots its own nested host, one at a time; idle each takes about a minute.

use std::time::{Duration, Instant};

use images::xen::status::ShutdownReason;
use zirvium_tests::http::{self, concurrent_gets};
use zirvium_tests::xen::XenVm;
use zirvium_tests::{Protocol, VmError};

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

    // Poll rather than wait for the lease line: the domU's log may reach dom0 later than its packets.
    let t0 = Instant::now();
    loop {
        match http::get(port, "/health") {
            Ok(r) if r.status == 200 => break,
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

    let rc = vm.run(&format!("xl shutdown {}", vm.domain()))?;
    vm.ensure(rc == 0, format_args!("xl shutdown failed (exit code {rc})"))?;
    let end = vm.wait_domain_end()?;
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
    let rc = vm.run(&format!("xl shutdown {}", vm.domain()))?;
    vm.ensure(rc == 0, format_args!("xl shutdown failed (exit code {rc})"))?;
    let end = vm.wait_domain_end()?;
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
    let rc = vm.run(&format!("xl shutdown {}", vm.domain()))?;
    vm.ensure(rc == 0, format_args!("xl shutdown failed (exit code {rc})"))?;
    let end = vm.wait_domain_end()?;
    vm.ensure(end.graceful(), format_args!("the std program should end gracefully on xl shutdown: {end}"))?;
    vm.poweroff()
}
