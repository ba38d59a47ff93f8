//! Disk images for the storage tests: where a disk is attached ([`Bus`]), a fresh FAT image (`images disk
//! create`), `fsck.fat -n` checks of what the guest left (dosfstools), deterministic test data, and a per-test
//! work directory.

use crate::{DiskBus, Machine};
use std::path::{Path, PathBuf};

/// Where kv's disk is attached: the controller, the machine, and how the driver names the disk in its
/// bring-up line.
#[derive(Clone, Copy, Debug)]
pub struct Bus {
    /// The controller (`images run --disk-bus`).
    pub bus: DiskBus,
    /// The machine it sits on.
    pub machine: Machine,
    /// The start of the disk's name, e.g. "nvme@pci:".
    pub disk: &'static str,
    /// Short name for VM and directory names.
    pub tag: &'static str,
}

/// virtio-blk over virtio-mmio on microvm, `images run`'s default.
pub const VIRTIO_BLK: Bus =
    Bus { bus: DiskBus::VirtioBlk, machine: Machine::Microvm, disk: "virtio-blk@mmio:", tag: "" };
/// An NVMe controller on q35 (AWS Nitro, GCE, Azure).
pub const NVME: Bus = Bus { bus: DiskBus::Nvme, machine: Machine::Q35, disk: "nvme@pci:", tag: "_nvme" };
/// virtio-scsi on q35 (GCE's boot disk).
pub const VIRTIO_SCSI: Bus =
    Bus { bus: DiskBus::VirtioScsi, machine: Machine::Q35, disk: "virtio-scsi@pci:", tag: "_scsi" };

/// A fresh, empty working directory `target/test-data/<group>/<test>/`.
pub fn workdir(group: &str, test: &str) -> PathBuf {
    let d = images::cargo::target_dir().join("test-data").join(group).join(test);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("creating the test's work directory");
    d
}

/// `images disk create --size SIZE DIR/disk.img` (FAT, empty); `size` in bytes.
pub fn fresh_disk(dir: &Path, size: u64) -> PathBuf {
    let path = dir.join("disk.img");
    let s = images::disk::create(&path, size, None, true).expect("creating the disk image");
    eprintln!("disk {}: {} bytes {}", path.display(), s.size, s.fat_type);
    path
}

/// `fsck.fat -n DISK` must find nothing to fix. Errors: fsck's output.
pub fn fsck(disk: &Path) -> Result<(), String> {
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
pub fn fsck_after_power_loss(disk: &Path) -> Result<(), String> {
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

/// `n` deterministic pseudo-random bytes (xorshift), different per `seed`.
pub fn bytes(seed: u64, n: usize) -> Vec<u8> {
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
