//! Zirvium's filesystems: a VFS ([`Vfs`]: mount table, POSIX-style path resolution — POSIX.1-2017 §4.13) with
//! three backends — [`RamFs`] (read-write, in memory, `/tmp`), [`Initrd`] (a ustar/GNU tar boot module,
//! read-only, zero-copy, `/`) and [`FatFs`] (FAT12/16/32 over any [`libos::dev::BlockDevice`], `/data`: a
//! whole disk, or the `zirvium-data` partition of a GPT disk found by [`gpt`] through a [`partition`] view).
//!
//! Boot calls [`mount_boot`], which fills the global table [`vfs()`]; apps use it through `zirvium::fs`
//! (std-like `File`, `OpenOptions`, `read_dir`, ...). Everything here is synchronous: FAT waits for its block
//! requests with [`libos::task::wait`], so a disk operation holds up other tasks until it completes.
//! Durability: see [`fat`] — `File::sync_all` returns after data and metadata reached the disk and a device
//! flush completed.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod cache;
pub mod error;
pub mod fat;
pub mod gpt;
pub mod initrd;
#[cfg(any(test, feature = "memdisk"))]
pub mod memdisk;
pub mod partition;
pub mod path;
pub mod ramfs;
pub mod tar;
pub mod vfs;

#[cfg(test)]
mod tests;

pub use error::{Error, Result};
pub use fat::FatFs;
pub use initrd::{Initrd, InitrdError};
pub use ramfs::RamFs;
pub use vfs::{
    DirEntry, File, FileHandle, FileSystem, FileType, FsStats, Metadata, OpenOptions, ReadDir, SeekFrom, Vfs,
};

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use libos::dev::BlockDevice;

/// The kernel's mount table (empty until [`mount_boot`]).
static VFS: Vfs = Vfs::new();

/// The kernel's mount table, used by `zirvium::fs`.
pub fn vfs() -> &'static Vfs {
    &VFS
}

/// Formats a byte count for logs: `512 B`, `1.5 KiB`, `1.2 MiB`, `3.0 GiB` (binary units, one decimal, rounded
/// down).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut div: u128 = 1024;
    let mut unit = 0;
    while u128::from(n) >= div * 1024 && unit + 1 < UNITS.len() {
        div *= 1024;
        unit += 1;
    }
    let tenths = u128::from(n) * 10 / div;
    format!("{}.{} {}", tenths / 10, tenths % 10, UNITS[unit])
}

/// Mounts the boot filesystems into [`vfs()`]: `initrd` (a tar archive, normally the first boot module) read-only
/// at `/` — an empty read-only root without one —, a [`RamFs`] at `/tmp`, and at `/data` the FAT filesystem of
/// the first of `disks` that is not a GPT disk without a data partition: a GPT disk's `zirvium-data` partition
/// (type [`gpt::ZIRVIUM_DATA`] or that name; a packaged boot disk), or a whole unpartitioned disk (`images disk
/// create`). A volume without FAT is left unmounted with a warning (it is never formatted here).
/// Logs one line, e.g. `fs: / initrd (12 files, 1.2 MiB), /tmp ramfs, /data fat32 on virtio-blk@... (64.0 MiB,
/// 63.9 MiB free)`, and returns the mount descriptions (`"<mount point> <description>"`).
///
/// # Errors
/// [`Error::Corrupt`] naming the bad entry when the initrd is not a valid archive (nothing is mounted then);
/// [`Error::AlreadyExists`] when called twice.
pub fn mount_boot(initrd: Option<&'static [u8]>, disks: Vec<Arc<dyn BlockDevice>>) -> Result<Vec<String>> {
    mount_boot_on(&VFS, initrd, disks)
}

/// [`mount_boot`] on a given table (host tests use their own).
pub fn mount_boot_on(
    vfs: &Vfs,
    initrd: Option<&'static [u8]>,
    disks: Vec<Arc<dyn BlockDevice>>,
) -> Result<Vec<String>> {
    let root = match initrd {
        Some(bytes) => Initrd::parse(bytes).map_err(|e| Error::Corrupt(format!("initrd: {e}")))?,
        None => Initrd::empty(),
    };
    vfs.mount("/", Arc::new(root))?;
    vfs.mount("/tmp", Arc::new(RamFs::new()))?;
    if let Some(volume) = data_volume(&disks) {
        match FatFs::mount(volume) {
            Ok(fat) => vfs.mount("/data", Arc::new(fat))?,
            Err(e) => log::warn!("fs: /data not mounted: {e}"),
        }
    }
    let lines: Vec<String> = vfs.mounts().into_iter().map(|(p, d)| format!("{p} {d}")).collect();
    log::info!("fs: {}", lines.join(", "));
    Ok(lines)
}

/// The volume for `/data`: the data partition of the first GPT disk that has one, or the first disk without a
/// GPT (whole); GPT disks without a data partition (a boot disk) and disks whose GPT is unreadable are skipped.
fn data_volume(disks: &[Arc<dyn BlockDevice>]) -> Option<Arc<dyn BlockDevice>> {
    for disk in disks {
        let name = &disk.info().name;
        match gpt::partitions(disk.as_ref()) {
            Ok(None) => return Some(disk.clone()),
            Ok(Some(parts)) => match parts.iter().find(|p| p.is_data()) {
                Some(p) => match partition::PartitionDevice::new(disk.clone(), p) {
                    Some(dev) => return Some(Arc::new(dev)),
                    None => log::warn!("fs: {name}: GPT partition {} ends past the disk", p.index),
                },
                None => log::info!("fs: {name}: GPT with {} partitions, none for /data", parts.len()),
            },
            Err(e) => log::warn!("fs: {name}: {e}; not used for /data"),
        }
    }
    None
}

/// Unmounts everything in [`vfs()`], deepest mount first, so FAT volumes are marked clean (FSInfo written,
/// clean-shutdown bit set, device flushed). For an orderly shutdown; logs and skips mounts that fail.
pub fn unmount_all() {
    let mut points: Vec<String> = VFS.mounts().into_iter().map(|(p, _)| p).collect();
    points.sort_by_key(|p| core::cmp::Reverse(p.len()));
    for p in points {
        if let Err(e) = VFS.unmount(&p) {
            log::warn!("fs: unmounting {p}: {e}");
        }
    }
}
