//! Boots the `diskbench` appliance with a 64 MiB sparse raw disk on microvm (virtio-blk over virtio-mmio) and q35
//! (virtio-blk-pci with MSI-X), and on the controllers clouds attach — NVMe on q35, virtio-scsi on q35 and microvm
//! (`images run --disk-bus`) — under TCG always and under KVM when `/dev/kvm` opens (a skip is printed
//! otherwise). Checks the driver's bring-up lines, `verify ok`, the out-of-range check, the benchmark line and
//! exit status 0, then reads the disk image on the host: the pattern diskbench documents must be at 1 MiB .. 1 MiB
//! + N and everything around it must still be zeros.
//!
//! A read-only disk (`readonly=on` on QEMU's `-drive`, so the device offers `VIRTIO_BLK_F_RO`) is booted too:
//! the write must be refused in the guest, reads still measured, and the image left untouched.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;
use zirvium_tests::{accel_usable, note, Accel, DiskBus, Machine, Vm, VmError};

/// Size of the disk image (bytes): 131072 sectors of 512 bytes.
const DISK_BYTES: u64 = 64 << 20;
/// Where diskbench's region starts (bytes), from apps/diskbench.
const REGION_OFFSET: u64 = 1 << 20;
/// diskbench's pattern: the 8-byte little-endian word at offset 8·w is `(w + 1) · K`.
const PATTERN_K: u64 = 0x9E37_79B9_7F4A_7C15;

/// A fresh sparse disk image for `test` under cargo's per-target temporary directory.
fn disk_image(test: &str) -> Result<PathBuf, VmError> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("blk");
    let io = |what: String| move |source| VmError::Io { what, source };
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    let path = dir.join(format!("{test}.img"));
    let f = File::create(&path).map_err(io(format!("creating {}", path.display())))?;
    f.set_len(DISK_BYTES).map_err(io(format!("sizing {} to {DISK_BYTES} bytes", path.display())))?;
    Ok(path)
}

/// Checks the image: the pattern over `[REGION_OFFSET, REGION_OFFSET + len)`, zeros before and after. Returns
/// a description of the first difference.
fn check_image(path: &PathBuf, len: u64) -> Result<(), String> {
    let mut f = File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    let mut bytes = vec![0u8; (REGION_OFFSET + len + REGION_OFFSET) as usize];
    f.seek(SeekFrom::Start(0)).and_then(|_| f.read_exact(&mut bytes)).map_err(|e| format!("reading: {e}"))?;
    for (i, word) in bytes.chunks_exact(8).enumerate() {
        let at = 8 * i as u64;
        let got = u64::from_le_bytes(word.try_into().expect("chunks_exact(8) gives 8 bytes"));
        let want =
            if (REGION_OFFSET..REGION_OFFSET + len).contains(&at) { (at / 8 + 1).wrapping_mul(PATTERN_K) } else { 0 };
        if got != want {
            return Err(format!("disk image word at byte offset {at}: expected {want:#018x}, found {got:#018x}"));
        }
    }
    Ok(())
}

/// What a controller's bring-up looks like on the console.
struct Expect {
    /// The disk's line contains this (its name's start) and the 64 MiB geometry.
    disk: &'static str,
    /// The line that names the interrupt (the disk's own for virtio-blk, the controller's otherwise) starts
    /// with this and contains `irq` and each of `more`.
    controller: &'static str,
    irq: &'static str,
    more: &'static [&'static str],
    /// The platform line contains this.
    platform: &'static str,
}

fn expect(bus: DiskBus, machine: Machine) -> Expect {
    let (irq, transport) = match machine {
        Machine::Microvm => (" irq gsi ", "virtio-mmio"),
        _ => (" irq MSI-X ", "virtio-pci (MSI-X)"),
    };
    match (bus, machine) {
        (DiskBus::VirtioBlk, Machine::Microvm) => Expect {
            disk: "virtio-blk@mmio:0x",
            controller: "virtio-blk@mmio:0x",
            irq,
            more: &[" queue 256 ", "FLUSH"],
            platform: "virtio-blk (1 disk)",
        },
        (DiskBus::VirtioBlk, _) => Expect {
            disk: "virtio-blk@pci:",
            controller: "virtio-blk@pci:",
            irq,
            more: &[" queue 256 ", "FLUSH"],
            platform: "virtio-blk (1 disk)",
        },
        (DiskBus::Nvme, _) => Expect {
            disk: "/n1 capacity",
            controller: "nvme@pci:",
            irq,
            more: &[" namespaces 1 ", "write cache yes (flush)", "I/O queue 1 of 64 entries"],
            platform: "nvme (MSI-X)",
        },
        (DiskBus::VirtioScsi, Machine::Microvm) => Expect {
            disk: "/0:0 capacity",
            controller: "virtio-scsi@mmio:0x",
            irq,
            more: &[" disks 1 ", "transport v2"],
            platform: transport,
        },
        (DiskBus::VirtioScsi, _) => Expect {
            disk: "/0:0 capacity",
            controller: "virtio-scsi@pci:",
            irq,
            more: &[" disks 1 ", "(1af4:"],
            platform: transport,
        },
    }
}

fn diskbench(test: &str, machine: Machine, accel: Accel) -> Result<(), VmError> {
    diskbench_on(test, DiskBus::VirtioBlk, machine, accel)
}

fn diskbench_on(test: &str, bus: DiskBus, machine: Machine, accel: Accel) -> Result<(), VmError> {
    if !accel_usable(test, accel) {
        return Ok(());
    }
    // The KVM here is nested and software-assisted (~10 µs per memory-accessing guest instruction), so the
    // pattern and verify loops over 8 MiB would take minutes: 1 MiB is enough to check the same paths.
    let (mb, timeout) = match accel {
        Accel::Tcg => (8u64, Duration::from_secs(120)),
        Accel::Kvm => (1u64, Duration::from_secs(300)),
    };
    let image = disk_image(test)?;
    let vm = Vm::builder(test, "diskbench", accel)
        .machine(machine)
        .disk_bus(bus)
        .disk(&image)
        .args([format!("mb={mb}"), "rand-ms=300".into()])
        .timeout(timeout)
        .boot()?;
    let x = expect(bus, machine);
    let line = vm.wait_for("capacity 131072 sectors (64 MiB) sector 512 bytes")?;
    vm.ensure(line.contains(x.disk), format_args!("disk line {line:?} should contain {:?}", x.disk))?;
    let ctrl = vm.line_with(x.irq)?;
    vm.ensure(
        ctrl.contains(x.controller) && x.more.iter().all(|m| ctrl.contains(m)),
        format_args!("bring-up line {ctrl:?} should name {:?}, {:?} and {:?}", x.controller, x.irq, x.more),
    )?;
    vm.wait_for("platform: ")
        .and_then(|p| vm.ensure(p.contains(x.platform), format_args!("platform line {p:?} lacks {:?}", x.platform)))?;
    vm.wait_for(&format!("verify ok: {} bytes", mb << 20))?;
    vm.wait_for("out-of-range read refused: OutOfRange")?;
    let bench = vm.wait_for("diskbench: seq-write ")?;
    vm.ensure(
        bench.contains(" MB/s seq-read ") && bench.contains(" MB/s rand-read-4k ") && bench.ends_with(" IOPS (qd 8)"),
        format_args!("benchmark line {bench:?} has the wrong shape"),
    )?;
    note(format_args!("{test}: {bench}"));
    vm.expect_exit(0)?;
    let checked = check_image(&image, mb << 20);
    vm.ensure(checked.is_ok(), format_args!("{}", checked.err().unwrap_or_default()))?;
    // The image is 64 MiB of mostly holes; remove it so test runs do not accumulate them.
    let _ = std::fs::remove_file(&image);
    Ok(())
}

#[test]
fn diskbench_microvm_tcg() -> Result<(), VmError> {
    diskbench("diskbench_microvm_tcg", Machine::Microvm, Accel::Tcg)
}

#[test]
fn diskbench_q35_tcg() -> Result<(), VmError> {
    diskbench("diskbench_q35_tcg", Machine::Q35, Accel::Tcg)
}

#[test]
fn diskbench_microvm_kvm() -> Result<(), VmError> {
    diskbench("diskbench_microvm_kvm", Machine::Microvm, Accel::Kvm)
}

#[test]
fn diskbench_q35_kvm() -> Result<(), VmError> {
    diskbench("diskbench_q35_kvm", Machine::Q35, Accel::Kvm)
}

#[test]
fn diskbench_nvme_q35_tcg() -> Result<(), VmError> {
    diskbench_on("diskbench_nvme_q35_tcg", DiskBus::Nvme, Machine::Q35, Accel::Tcg)
}

#[test]
fn diskbench_nvme_q35_kvm() -> Result<(), VmError> {
    diskbench_on("diskbench_nvme_q35_kvm", DiskBus::Nvme, Machine::Q35, Accel::Kvm)
}

#[test]
fn diskbench_virtio_scsi_q35_tcg() -> Result<(), VmError> {
    diskbench_on("diskbench_virtio_scsi_q35_tcg", DiskBus::VirtioScsi, Machine::Q35, Accel::Tcg)
}

#[test]
fn diskbench_virtio_scsi_microvm_tcg() -> Result<(), VmError> {
    diskbench_on("diskbench_virtio_scsi_microvm_tcg", DiskBus::VirtioScsi, Machine::Microvm, Accel::Tcg)
}

#[test]
fn diskbench_virtio_scsi_q35_kvm() -> Result<(), VmError> {
    diskbench_on("diskbench_virtio_scsi_q35_kvm", DiskBus::VirtioScsi, Machine::Q35, Accel::Kvm)
}

#[test]
fn pattern_check_catches_a_misplaced_word() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("blk");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pattern_check.img");
    let mut bytes = vec![0u8; 3 << 20];
    for (i, w) in bytes[REGION_OFFSET as usize..(REGION_OFFSET as usize + 4096)].chunks_exact_mut(8).enumerate() {
        w.copy_from_slice(&((REGION_OFFSET / 8 + i as u64 + 1).wrapping_mul(PATTERN_K)).to_le_bytes());
    }
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(check_image(&path, 4096), Ok(()));
    assert!(check_image(&path, 4104).unwrap_err().contains("byte offset 1052672"));
    bytes[REGION_OFFSET as usize + 8..REGION_OFFSET as usize + 16].fill(0);
    std::fs::write(&path, &bytes).unwrap();
    assert!(check_image(&path, 4096).unwrap_err().contains("byte offset 1048584"));
    let _ = std::fs::remove_file(&path);
}

/// diskbench on a disk attached read-only (`images run --disk FILE:ro`): the driver reports `RO`, the write is
/// refused with `BlockError::ReadOnly` before it reaches QEMU, reads are measured, the image is not changed.
#[test]
fn diskbench_read_only_microvm_tcg() -> Result<(), VmError> {
    let test = "diskbench_read_only_microvm_tcg";
    let image = disk_image(test)?;
    // A word of the pattern at the region's start, so "unchanged" is checked on data and not only on zeros.
    let first = (REGION_OFFSET / 8 + 1).wrapping_mul(PATTERN_K).to_le_bytes();
    let io = |what: String| move |source| VmError::Io { what, source };
    let mut bytes = std::fs::read(&image).map_err(io(format!("reading {}", image.display())))?;
    bytes[REGION_OFFSET as usize..REGION_OFFSET as usize + 8].copy_from_slice(&first);
    std::fs::write(&image, &bytes).map_err(io(format!("writing {}", image.display())))?;
    let vm = Vm::builder(test, "diskbench", Accel::Tcg)
        .disk_read_only(&image)
        .args(["mb=8", "rand-ms=300"])
        .timeout(Duration::from_secs(120))
        .boot()?;
    vm.ensure(
        vm.command_line().contains(",readonly=on -device virtio-blk-device,drive=d0"),
        format_args!("QEMU command line lacks readonly=on: {}", vm.command_line()),
    )?;
    let line = vm.wait_for("capacity 131072 sectors (64 MiB)")?;
    vm.ensure(
        line.contains(" read-only features ") && line.contains(",RO,"),
        format_args!("bring-up line {line:?} should say read-only and list the RO feature"),
    )?;
    let info = vm.wait_for("diskbench: virtio-blk@")?;
    vm.ensure(info.contains(", read-only"), format_args!("diskbench's disk line {info:?} should say read-only"))?;
    vm.wait_for("read-only: write refused")?;
    vm.wait_for("out-of-range read refused: OutOfRange")?;
    let bench = vm.wait_for("diskbench: seq-write ")?;
    vm.ensure(
        bench.starts_with("diskbench: seq-write n/a MB/s seq-read ") && bench.contains(" MB/s rand-read-4k "),
        format_args!("benchmark line {bench:?}: no write rate, read rates expected"),
    )?;
    note(format_args!("{test}: {bench}"));
    vm.expect_exit(0)?;
    let after = std::fs::read(&image).map_err(io(format!("reading {}", image.display())))?;
    vm.ensure(after == bytes, "the read-only disk image changed")?;
    let _ = std::fs::remove_file(&image);
    Ok(())
}
