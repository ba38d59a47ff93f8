//! Storage end to end on real QEMU: `httpd` serving assets from an initrd packed by `images`, and the `kv`
//! appliance keeping data on a disk (FAT at `/data`) across power-off, across a VM killed in the middle of a
//! PUT, and when the disk fills up. The power-off and kill checks run on each disk controller clouds attach:
//! virtio-blk (microvm, virtio-mmio), NVMe and virtio-scsi (q35, PCI, `images run --disk-bus`). Disks are made
//! by `images disk create` and checked afterwards with `fsck.fat -n` (dosfstools), the file system's own
//! checker. All under TCG.

use std::path::{Path, PathBuf};
use std::time::Duration;
use zirvium_tests::http::{get, request, Response};
use zirvium_tests::{Accel, DiskBus, Machine, Protocol, Vm, VmError};

/// Where kv's disk is attached: the controller, the machine, and how the driver names the disk in its
/// bring-up line.
#[derive(Clone, Copy)]
struct Bus {
    bus: DiskBus,
    machine: Machine,
    /// The start of the disk's name, e.g. "nvme@pci:".
    disk: &'static str,
    /// Short name for VM and directory names.
    tag: &'static str,
}

/// virtio-blk over virtio-mmio on microvm, `images run`'s default.
const VIRTIO_BLK: Bus = Bus { bus: DiskBus::VirtioBlk, machine: Machine::Microvm, disk: "virtio-blk@mmio:", tag: "" };
/// An NVMe controller on q35 (AWS Nitro, GCE, Azure).
const NVME: Bus = Bus { bus: DiskBus::Nvme, machine: Machine::Q35, disk: "nvme@pci:", tag: "_nvme" };
/// virtio-scsi on q35 (GCE's boot disk).
const VIRTIO_SCSI: Bus =
    Bus { bus: DiskBus::VirtioScsi, machine: Machine::Q35, disk: "virtio-scsi@pci:", tag: "_scsi" };

/// A fresh working directory for one test under target/test-data/storage/.
fn workdir(test: &str) -> PathBuf {
    let d = images::cargo::target_dir().join("test-data").join("storage").join(test);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("creating the test's work directory");
    d
}

/// `images disk create --size SIZE FILE` (FAT, empty).
fn fresh_disk(dir: &Path, size: u64) -> PathBuf {
    let path = dir.join("disk.img");
    let s = images::disk::create(&path, size, None, true).expect("creating the disk image");
    eprintln!("disk {}: {} bytes {}", path.display(), s.size, s.fat_type);
    path
}

/// `fsck.fat -n DISK` must find nothing to fix.
fn fsck(disk: &Path) -> Result<(), String> {
    let out = images::host_tools::FSCK_FAT
        .command()
        .arg("-n")
        .arg(disk)
        .output()
        .map_err(|e| format!("running fsck.fat (apt-get install dosfstools): {e}"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        eprintln!("fsck.fat -n: {}", text.trim());
        Ok(())
    } else {
        Err(format!("fsck.fat -n {} failed ({}):\n{text}", disk.display(), out.status))
    }
}

/// `fsck.fat -n` on a copy of `disk` whose volume dirty bit is cleared: after a power-off in the middle of
/// writes the bit is rightly set (the volume was not cleanly unmounted, see fs/src/fat.rs), and everything else —
/// FATs, directories, cluster chains — must still be consistent.
fn fsck_after_power_loss(disk: &Path) -> Result<(), String> {
    let mut b = std::fs::read(disk).map_err(|e| format!("reading {}: {e}", disk.display()))?;
    // The BPB's 16-bit sectors-per-FAT is 0 on FAT32; the dirty bit is bit 0 of offset 0x41 there, 0x25 else.
    let fat32 = b.get(0x16..0x18) == Some(&[0, 0][..]);
    let at = if fat32 { 0x41 } else { 0x25 };
    let byte = b.get_mut(at).ok_or_else(|| format!("{} is too short for a FAT boot sector", disk.display()))?;
    if *byte & 1 != 0 {
        eprintln!("fsck: the volume's dirty bit is set (power-off during writes); checking the rest");
    }
    *byte &= !1;
    let copy = disk.with_extension("fsck.img");
    std::fs::write(&copy, &b).map_err(|e| format!("writing {}: {e}", copy.display()))?;
    let r = fsck(&copy);
    let _ = std::fs::remove_file(&copy);
    r
}

/// Deterministic pseudo-random bytes (xorshift), different per `seed`.
fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn io<T>(vm: &Vm, what: &str, r: std::io::Result<T>) -> Result<T, VmError> {
    r.map_err(|e| {
        let _ = vm.ensure(false, format_args!("{what}: {e}"));
        VmError::Io { what: format!("{}: {what}", vm.name()), source: e }
    })
}

fn boot_kv(name: &str, disk: &Path) -> Result<(Vm, u16), VmError> {
    boot_kv_on(VIRTIO_BLK, name, disk, &[])
}

/// kv with `disk` on `bus`, listening, its disk's bring-up line seen; returns the VM and the host port.
fn boot_kv_on(bus: Bus, name: &str, disk: &Path, args: &[&str]) -> Result<(Vm, u16), VmError> {
    let vm = Vm::builder(name, "kv", Accel::Tcg)
        .machine(bus.machine)
        .disk_bus(bus.bus)
        .forward(Protocol::Tcp, 80)
        .args(args.iter().copied())
        .disk(disk)
        .timeout(Duration::from_secs(120))
        .boot()?;
    vm.wait_for("kv listening")?;
    vm.line_with(bus.disk)?;
    let port = vm.host_port(Protocol::Tcp, 80)?;
    Ok((vm, port))
}

fn put(port: u16, key: &str, value: &[u8]) -> std::io::Result<Response> {
    request(port, "PUT", &format!("/kv/{key}"), &[], value)
}

/// httpd serves a site from an initrd directory packed at boot: a 1 MiB binary asset byte for byte, content
/// types, a byte range, 404 for a missing file; the built-in routes still win.
#[test]
fn httpd_serves_initrd_assets_tcg() -> Result<(), VmError> {
    let dir = workdir("httpd_initrd");
    let site = dir.join("site");
    std::fs::create_dir_all(site.join("css")).unwrap();
    let asset = bytes(7, 1 << 20);
    std::fs::write(site.join("asset.bin"), &asset).unwrap();
    std::fs::write(site.join("css/site.css"), b"body { color: teal }\n").unwrap();
    std::fs::write(site.join("page.html"), b"<!doctype html><title>t</title><p>from the initrd</p>\n").unwrap();
    let vm = Vm::builder("httpd_initrd_tcg", "httpd", Accel::Tcg).forward(Protocol::Tcp, 80).initrd(&site).boot()?;
    vm.wait_for("listening on port 80")?;
    let port = vm.host_port(Protocol::Tcp, 80)?;

    let r = io(&vm, "GET /asset.bin", get(port, "/asset.bin"))?;
    vm.ensure(r.status == 200, format_args!("GET /asset.bin: {}", r.status))?;
    vm.ensure(
        r.header("content-length") == Some("1048576"),
        format_args!("Content-Length {:?}", r.header("content-length")),
    )?;
    vm.ensure(r.body == asset, "the 1 MiB asset differs from the file packed into the initrd")?;
    let r = io(&vm, "GET /css/site.css", get(port, "/css/site.css"))?;
    vm.ensure(
        r.status == 200 && r.header("content-type").is_some_and(|t| t.starts_with("text/css")),
        format_args!("css: {} {:?}", r.status, r.header("content-type")),
    )?;
    let r = io(&vm, "GET /page.html", get(port, "/page.html"))?;
    vm.ensure(
        r.status == 200
            && r.header("content-type").is_some_and(|t| t.starts_with("text/html"))
            && r.text().contains("from the initrd"),
        format_args!("page: {} {:?} {}", r.status, r.header("content-type"), r.text()),
    )?;
    let r = io(&vm, "range", request(port, "GET", "/asset.bin", &[("Range", "bytes=1000-1999")], &[]))?;
    vm.ensure(
        r.status == 206 && r.body == asset[1000..2000],
        format_args!("range: status {} len {}", r.status, r.body.len()),
    )?;
    let r = io(&vm, "GET /missing.txt", get(port, "/missing.txt"))?;
    vm.ensure(r.status == 404, format_args!("missing file: {}", r.status))?;
    let r = io(&vm, "GET /../../etc/passwd", get(port, "/../../etc/passwd"))?;
    vm.ensure(r.status == 404 || r.status == 400, format_args!("traversal: {}", r.status))?;
    let r = io(&vm, "GET /health", get(port, "/health"))?;
    vm.ensure(r.status == 200 && r.text().contains(r#""status":"ok""#), format_args!("/health: {}", r.text()))?;
    vm.line_with("fs: ")?;
    Ok(())
}

/// 100 keys PUT, the VM powered off hard, booted again on the same disk: all 100 come back; DELETE works; the
/// disk passes `fsck.fat -n`.
#[test]
fn kv_persists_across_power_off_tcg() -> Result<(), VmError> {
    kv_persists(VIRTIO_BLK)
}

/// The same on an NVMe controller.
#[test]
fn kv_persists_across_power_off_nvme_tcg() -> Result<(), VmError> {
    kv_persists(NVME)
}

/// The same on virtio-scsi.
#[test]
fn kv_persists_across_power_off_virtio_scsi_tcg() -> Result<(), VmError> {
    kv_persists(VIRTIO_SCSI)
}

fn kv_persists(bus: Bus) -> Result<(), VmError> {
    let dir = workdir(&format!("kv_persist{}", bus.tag));
    let disk = fresh_disk(&dir, 64 << 20);
    let value = |i: usize| bytes(i as u64, 100 + i * 97);
    {
        let (vm, port) = boot_kv_on(bus, &format!("kv_persist{}_a", bus.tag), &disk, &[])?;
        for i in 0..100 {
            let r = io(&vm, &format!("PUT key{i}"), put(port, &format!("key{i}"), &value(i)))?;
            vm.ensure(matches!(r.status, 200 | 201 | 204), format_args!("PUT key{i}: {} {}", r.status, r.text()))?;
        }
        let r = io(&vm, "GET /kv/key42", get(port, "/kv/key42"))?;
        vm.ensure(r.status == 200 && r.body == value(42), format_args!("GET key42 before power-off: {}", r.status))?;
        vm.kill();
    }
    let (vm, port) = boot_kv_on(bus, &format!("kv_persist{}_b", bus.tag), &disk, &[])?;
    for i in 0..100 {
        let r = io(&vm, &format!("GET key{i}"), get(port, &format!("/kv/key{i}")))?;
        vm.ensure(
            r.status == 200 && r.body == value(i),
            format_args!("GET key{i} after reboot: {} len {}", r.status, r.body.len()),
        )?;
    }
    let r = io(&vm, "DELETE key7", request(port, "DELETE", "/kv/key7", &[], &[]))?;
    vm.ensure(matches!(r.status, 200 | 204), format_args!("DELETE key7: {}", r.status))?;
    let r = io(&vm, "GET key7", get(port, "/kv/key7"))?;
    vm.ensure(r.status == 404, format_args!("GET deleted key7: {}", r.status))?;
    let r = io(&vm, "PUT bad key", put(port, "..%2Fescape", b"x"))?;
    vm.ensure(r.status == 400, format_args!("PUT with a bad key: {}", r.status))?;
    // Let the DELETE reach the disk (it answered after it did), then power off and check the file system.
    vm.kill();
    fsck(&disk).map_err(|e| {
        let _ = vm.ensure(false, &e);
        VmError::Io { what: e, source: std::io::Error::other("fsck") }
    })
}

/// A PUT of 2 MiB cut off by killing the VM at several points: after reboot the key holds the whole value or
/// does not exist — never a torn value — a key written before is intact, and `fsck.fat -n` finds nothing to fix
/// but the dirty bit a power-off during writes leaves.
#[test]
fn kv_put_interrupted_by_kill_is_all_or_nothing_tcg() -> Result<(), VmError> {
    kv_put_interrupted(VIRTIO_BLK)
}

/// The same on an NVMe controller.
#[test]
fn kv_put_interrupted_by_kill_is_all_or_nothing_nvme_tcg() -> Result<(), VmError> {
    kv_put_interrupted(NVME)
}

/// The same on virtio-scsi.
#[test]
fn kv_put_interrupted_by_kill_is_all_or_nothing_virtio_scsi_tcg() -> Result<(), VmError> {
    kv_put_interrupted(VIRTIO_SCSI)
}

fn kv_put_interrupted(bus: Bus) -> Result<(), VmError> {
    let dir = workdir(&format!("kv_kill{}", bus.tag));
    let disk = fresh_disk(&dir, 64 << 20);
    let before = bytes(1, 3000);
    // 2 MiB takes long enough over slirp that the kills land before, during and after the disk writes.
    let big = bytes(2, 2 << 20);
    for (round, delay_ms) in [100u64, 400, 800, 1500].into_iter().enumerate() {
        let name = format!("kv_kill{}_{round}", bus.tag);
        let (vm, port) = boot_kv_on(bus, &name, &disk, &["max_value_bytes=4194304"])?;
        if round == 0 {
            let r = io(&vm, "PUT before", put(port, "before", &before))?;
            vm.ensure(matches!(r.status, 200 | 201 | 204), format_args!("PUT before: {}", r.status))?;
        }
        let key = format!("big{round}");
        let body = big.clone();
        let t = std::thread::spawn(move || put(port, &key, &body));
        std::thread::sleep(Duration::from_millis(delay_ms));
        vm.kill();
        let answered = t.join().expect("client thread").map(|r| r.status).ok();
        eprintln!("round {round}: killed after {delay_ms} ms; PUT answered {answered:?}");
    }
    let (vm, port) = boot_kv_on(bus, &format!("kv_kill{}_check", bus.tag), &disk, &[])?;
    let r = io(&vm, "GET before", get(port, "/kv/before"))?;
    vm.ensure(r.status == 200 && r.body == before, format_args!("GET before: {}", r.status))?;
    for round in 0..4 {
        let r = io(&vm, "GET big", get(port, &format!("/kv/big{round}")))?;
        vm.ensure(
            r.status == 404 || (r.status == 200 && r.body == big),
            format_args!("big{round} after the kill: status {} with {} bytes (a torn value?)", r.status, r.body.len()),
        )?;
        eprintln!("big{round}: {}", if r.status == 200 { "complete" } else { "absent" });
    }
    vm.kill();
    fsck_after_power_loss(&disk).map_err(|e| VmError::Io { what: e, source: std::io::Error::other("fsck") })
}

/// A full disk answers 507 Insufficient Storage; the server keeps serving, earlier keys are intact, and after a
/// DELETE there is room again.
#[test]
fn kv_disk_full_is_507_tcg() -> Result<(), VmError> {
    let dir = workdir("kv_full");
    let disk = fresh_disk(&dir, 4 << 20);
    let (vm, port) = boot_kv("kv_full", &disk)?;
    let value = |i: u64| bytes(100 + i, 256 << 10);
    let mut stored = 0;
    let mut full = false;
    for i in 0..40 {
        let r = io(&vm, &format!("PUT fill{i}"), put(port, &format!("fill{i}"), &value(i)))?;
        match r.status {
            200 | 201 | 204 => stored += 1,
            507 => {
                full = true;
                break;
            }
            s => vm.ensure(false, format_args!("PUT fill{i}: unexpected {s} {}", r.text()))?,
        }
    }
    vm.ensure(full, format_args!("a 4 MiB disk never filled after {stored} values of 256 KiB"))?;
    vm.ensure(stored >= 8, format_args!("only {stored} values of 256 KiB fit a 4 MiB disk"))?;
    let r = io(&vm, "GET fill0", get(port, "/kv/fill0"))?;
    vm.ensure(r.status == 200 && r.body == value(0), format_args!("GET fill0 on a full disk: {}", r.status))?;
    let r = io(&vm, "GET /health", get(port, "/health"))?;
    vm.ensure(r.status == 200, format_args!("/health on a full disk: {}", r.status))?;
    let r = io(&vm, "DELETE fill0", request(port, "DELETE", "/kv/fill0", &[], &[]))?;
    vm.ensure(matches!(r.status, 200 | 204), format_args!("DELETE fill0: {}", r.status))?;
    let r = io(&vm, "PUT after delete", put(port, "again", &value(0)))?;
    vm.ensure(matches!(r.status, 200 | 201 | 204), format_args!("PUT after freeing space: {} {}", r.status, r.text()))?;
    vm.kill();
    fsck(&disk).map_err(|e| VmError::Io { what: e, source: std::io::Error::other("fsck") })
}

/// kv on a FAT disk attached read-only (`images run kv --disk FILE:ro`): `/data` is mounted read-only, kv
/// refuses to start with an error naming `/data` as read-only and exits with status 1; the image is unchanged.
#[test]
fn kv_refuses_a_read_only_disk_tcg() -> Result<(), VmError> {
    let dir = workdir("kv_read_only");
    let disk = fresh_disk(&dir, 8 << 20);
    let before = std::fs::read(&disk).expect("reading the fresh disk image");
    let vm = Vm::builder("kv_read_only", "kv", Accel::Tcg)
        .forward(Protocol::Tcp, 80)
        .disk_read_only(&disk)
        .timeout(Duration::from_secs(60))
        .boot()?;
    let line = vm.wait_for("virtio-blk@mmio:")?;
    vm.ensure(line.contains(" read-only "), format_args!("bring-up line {line:?} should say read-only"))?;
    let mounts = vm.wait_for("fs: ")?;
    vm.ensure(
        mounts.contains("/data fat") && mounts.contains("read-only"),
        format_args!("mount line {mounts:?} should show /data as a read-only FAT mount"),
    )?;
    vm.wait_for("kv: /data is read-only")?;
    vm.expect_exit(1)?;
    vm.ensure(!vm.console().contains("kv listening"), "kv started listening on a read-only /data")?;
    let after = std::fs::read(&disk).expect("reading the disk image after the run");
    vm.ensure(after == before, "the read-only disk image changed")?;
    fsck(&disk).map_err(|e| VmError::Io { what: e, source: std::io::Error::other("fsck") })
}
