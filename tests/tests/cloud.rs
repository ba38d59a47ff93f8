//! Cloud disk images end to end: `images package` turns httpd and kv into GPT disks with GRUB for BIOS and UEFI;
//! the raw disk boots through SeaBIOS and through OVMF (q35, TCG: firmware is slow under this machine's nested
//! KVM) and serves `/health` and `/` over a `--port` forward; its qcow2, fixed VHD, VHDX and streamOptimized VMDK
//! conversions pass `qemu-img info`/`check` (format, virtual size, the VHD footer); the GCE archive holds exactly
//! `disk.raw`; the qcow2 boots; a `--data DIR` partition is kv's `/data`, readable and writable by the guest and
//! clean for `fsck.fat -n` afterwards.
//!
//! Needs Debian's grub-pc-bin, grub-efi-amd64-bin, grub-common, ovmf and qemu-utils (`.ci/run` installs them).
//! Each boot prints its figures (QEMU start to the first 200, the guest's firmware-to-entry and -to-app-main).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use images::diskboot::Firmware;
use images::package::{convert, BootModes, Format, PackageOptions};
use zirvium_tests::http::{get, request};
use zirvium_tests::{note, Accel, Protocol, Vm, VmError};

/// A fresh working directory for one test under target/test-data/cloud/.
fn workdir(test: &str) -> PathBuf {
    let d = images::cargo::target_dir().join("test-data").join("cloud").join(test);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("creating the test's work directory");
    d
}

fn options(app: &str, format: Format, output: &Path) -> PackageOptions {
    PackageOptions {
        app: app.into(),
        format,
        output: output.into(),
        boot: BootModes::BOTH,
        size: 64 << 20,
        data: None,
        kernel_options: Vec::new(),
        app_args: Vec::new(),
    }
}

/// `images package httpd --format raw --boot both` once per test binary: (raw image, its kernel ELF).
fn httpd_raw() -> &'static Path {
    static RAW: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let r = RAW.get_or_init(|| {
        let out = workdir("httpd-raw").join("httpd.img");
        let s = images::package::package(&options("httpd", Format::Raw, &out)).map_err(|e| e.to_string())?;
        note(format_args!("packaged: {s}"));
        Ok(out)
    });
    r.as_deref().unwrap_or_else(|e| panic!("images package httpd --format raw failed: {e}"))
}

/// A private copy of `image` for one VM (QEMU locks the file it writes).
fn copy_of(image: &Path, test: &str) -> PathBuf {
    let dst = workdir(test).join(image.file_name().expect("image file name"));
    std::fs::copy(image, &dst).expect("copying the disk image");
    dst
}

/// Boots `image` through `firmware` with a forward to port 80, checks the entry line, gets `/health` and `/`,
/// and prints the boot figures.
fn boot_and_serve(name: &str, image: &Path, firmware: Firmware) -> Result<(), VmError> {
    let vm = Vm::builder(name, "httpd", Accel::Tcg)
        .boot_disk(image, firmware)
        .forward(Protocol::Tcp, 80)
        .timeout(Duration::from_secs(180))
        .boot()?;
    // `boot` returns right after spawning QEMU.
    let started = Instant::now();
    let booted = vm.wait_for("booted via")?;
    let fw = match firmware {
        Firmware::Bios => ", BIOS): ",
        Firmware::Uefi => ", UEFI): ",
    };
    vm.ensure(
        booted.contains("booted via Multiboot2 (GRUB 2.") && booted.contains(fw),
        format_args!("entry line {booted:?} should name Multiboot2, GRUB and {fw:?}"),
    )?;
    vm.wait_for("listening on port 80")?;
    let port = vm.host_port(Protocol::Tcp, 80)?;
    // The first request may race slirp learning the guest's address: retry briefly.
    let deadline = Instant::now() + Duration::from_secs(30);
    let health = loop {
        match get(port, "/health") {
            Ok(r) => break r,
            Err(e) if Instant::now() < deadline => {
                note(format_args!("{name}: GET /health: {e}; retrying"));
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(VmError::Io { what: format!("{name}: GET /health"), source: e }),
        }
    };
    let first_200 = started.elapsed();
    vm.ensure(
        health.status == 200 && health.text().contains("\"status\":\"ok\""),
        format_args!("/health: {health:?}"),
    )?;
    let index = get(port, "/").map_err(|e| VmError::Io { what: format!("{name}: GET /"), source: e })?;
    vm.ensure(index.status == 200 && !index.body.is_empty(), format_args!("GET /: {}", index.status))?;
    let timeline = vm.line_with("entered")?;
    note(format_args!(
        "FIGURE {name}: QEMU start to first 200 {:.2} s (TCG); guest: {}",
        first_200.as_secs_f64(),
        timeline.split("boot: ").nth(1).unwrap_or(&timeline)
    ));
    vm.kill();
    Ok(())
}

#[test]
fn raw_disk_boots_through_seabios_tcg() -> Result<(), VmError> {
    let img = copy_of(httpd_raw(), "seabios");
    boot_and_serve("httpd_raw_seabios_tcg", &img, Firmware::Bios)
}

#[test]
fn raw_disk_boots_through_ovmf_tcg() -> Result<(), VmError> {
    let img = copy_of(httpd_raw(), "ovmf");
    boot_and_serve("httpd_raw_ovmf_tcg", &img, Firmware::Uefi)
}

/// `qemu-img check` must report no errors (formats that support checks).
fn qemu_img_check(path: &Path, format: &str) {
    let out = convert::qemu_img(&["check".as_ref(), "-f".as_ref(), format.as_ref(), path.as_os_str()])
        .unwrap_or_else(|e| panic!("qemu-img check {}: {e}", path.display()));
    assert!(out.contains("No errors were found"), "qemu-img check {}: {out}", path.display());
}

#[test]
fn conversions_pass_qemu_img_and_the_qcow2_boots_tcg() -> Result<(), VmError> {
    let dir = workdir("conversions");
    let raw = httpd_raw();
    let mut sizes = vec![("raw", std::fs::metadata(raw).unwrap().len())];
    for (format, qemu_name, ext) in [
        (Format::Qcow2, "qcow2", "qcow2"),
        (Format::Vhd, "vpc", "vhd"),
        (Format::Vhdx, "vhdx", "vhdx"),
        (Format::Vmdk, "vmdk", "vmdk"),
    ] {
        let out = dir.join(format!("httpd.{ext}"));
        convert::convert(raw, &out, format).unwrap_or_else(|e| panic!("converting to {format}: {e}"));
        let (got, virtual_size) = convert::image_info(&out).unwrap();
        assert_eq!((got.as_str(), virtual_size), (qemu_name, 64 << 20), "{}", out.display());
        let len = std::fs::metadata(&out).unwrap().len();
        sizes.push((ext, len));
        match format {
            // Azure: fixed VHD = the raw disk plus a 512-byte footer; "conectix" opens the last sector.
            Format::Vhd => {
                assert_eq!(len, (64 << 20) + 512);
                assert!(convert::has_vhd_footer(&out).unwrap(), "no VHD footer at the end of {}", out.display());
            }
            _ => qemu_img_check(&out, qemu_name),
        }
    }
    // GCE: exactly one member, disk.raw, a whole number of GiB.
    let gce = dir.join("httpd.tar.gz");
    let mut o = options("httpd", Format::Gce, &gce);
    o.boot = BootModes::BOTH;
    let s = images::package::package(&o).unwrap_or_else(|e| panic!("packaging for GCE: {e}"));
    assert_eq!(convert::archive_members(&gce).unwrap(), [("disk.raw".to_owned(), 1 << 30)], "{s}");
    sizes.push(("gce tar.gz", s.file_bytes));
    note(format_args!(
        "FIGURE httpd disk image sizes: {}",
        sizes.iter().map(|(f, n)| format!("{f} {n} bytes")).collect::<Vec<_>>().join(", ")
    ));
    boot_and_serve("httpd_qcow2_seabios_tcg", &dir.join("httpd.qcow2"), Firmware::Bios)
}

/// The bytes `[offset, offset + len)` of `img` copied to `out`, for `fsck.fat` and the FAT library.
fn extract(img: &Path, offset: u64, len: u64, out: &Path) {
    let bytes = std::fs::read(img).unwrap();
    std::fs::write(out, &bytes[offset as usize..(offset + len) as usize]).unwrap();
}

#[test]
fn data_partition_is_kvs_data_tcg() -> Result<(), VmError> {
    let dir = workdir("kv-data");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("greeting"), b"hello from images package --data\n").unwrap();
    let img = dir.join("kv.img");
    let mut o = options("kv", Format::Raw, &img);
    o.boot = "bios".parse().unwrap();
    o.data = Some(data);
    let s = images::package::package(&o).unwrap_or_else(|e| panic!("packaging kv: {e}"));
    note(format_args!("packaged: {s}"));
    let vm = Vm::builder("kv_data_partition_seabios_tcg", "kv", Accel::Tcg)
        .boot_disk(&img, Firmware::Bios)
        .forward(Protocol::Tcp, 80)
        .timeout(Duration::from_secs(180))
        .boot()?;
    let mounted = vm.wait_for("/data fat")?;
    vm.ensure(mounted.contains("/data fat16 on virtio-blk@pci:00:01.0:gpt3"), format_args!("mounts: {mounted:?}"))?;
    vm.wait_for("kv listening")?;
    let port = vm.host_port(Protocol::Tcp, 80)?;
    let io = |what: &str| {
        let what = what.to_owned();
        move |source| VmError::Io { what, source }
    };
    let r = get(port, "/kv/greeting").map_err(io("GET /kv/greeting"))?;
    vm.ensure(r.status == 200 && r.body == b"hello from images package --data\n", format_args!("greeting: {r:?}"))?;
    let r = request(port, "PUT", "/kv/written", &[], b"by the guest").map_err(io("PUT /kv/written"))?;
    vm.ensure(r.status / 100 == 2, format_args!("PUT: {}", r.status))?;
    // The PUT is durable once answered: a hard power-off keeps it, and the partition's FAT stays clean.
    vm.kill();
    let part = dir.join("data.part");
    let extent = s.layout.data.expect("a data partition in the layout");
    extract(&img, extent.offset(), extent.bytes(), &part);
    let fsck = std::process::Command::new("fsck.fat").arg("-n").arg(&part).output().expect("running fsck.fat");
    assert!(fsck.status.success(), "fsck.fat -n: {}", String::from_utf8_lossy(&fsck.stdout));
    let f = std::fs::File::options().read(true).write(true).open(&part).unwrap();
    let fs = fatfs::FileSystem::new(&f, fatfs::FsOptions::new()).unwrap();
    let mut v = Vec::new();
    std::io::Read::read_to_end(&mut fs.root_dir().open_file("written").unwrap(), &mut v).unwrap();
    assert_eq!(v, b"by the guest");
    Ok(())
}
