//! The FAT partitions of a packaged disk: the EFI system partition's tree (GRUB's EFI loader, grub.cfg, the
//! kernel) staged in a host directory, and the formatting of a partition from such a directory through
//! [`crate::disk::format_fat`] on a [`Region`] of the image file.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::gpt::Extent;
use super::grub;
use crate::disk::{DiskError, DiskSummary};
use crate::region::Region;

/// Volume label of the EFI system partition.
pub const ESP_LABEL: [u8; 11] = *b"ZIRVIUM ESP";
/// Volume label of the data partition.
pub const DATA_LABEL: [u8; 11] = *b"ZIRVIUMDATA";
/// Directory of the kernel on the ESP.
pub const KERNEL_DIR: &str = "zirvium";

/// Path of `app`'s kernel on the ESP, as GRUB names it: `/zirvium/APP.elf`.
pub fn kernel_path(app: &str) -> String {
    format!("/{KERNEL_DIR}/{app}.elf")
}

/// What goes on the ESP.
pub struct EspContents<'a> {
    /// The app's name.
    pub app: &'a str,
    /// The kernel ELF on the host.
    pub kernel: &'a Path,
    /// GRUB's EFI application, when the disk boots through UEFI.
    pub efi_loader: Option<&'a [u8]>,
    /// grub.cfg.
    pub config: &'a str,
}

/// Writes the ESP tree under `dir` (`EFI/BOOT/BOOTX64.EFI`, `boot/grub/grub.cfg`, `zirvium/APP.elf`) and
/// returns its payload (bytes of file data). Errors: I/O as [`DiskError::Io`].
pub fn stage(dir: &Path, c: &EspContents<'_>) -> Result<u64, DiskError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| DiskError::Io { path, source }
    };
    let write = |rel: &str, bytes: &[u8]| -> Result<(), DiskError> {
        let p: PathBuf = dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&p, bytes).map_err(io(&p))
    };
    if let Some(efi) = c.efi_loader {
        write(grub::EFI_LOADER, efi)?;
    }
    write(&format!("{}/grub.cfg", grub::CFG_DIR), c.config.as_bytes())?;
    let kernel = std::fs::read(c.kernel).map_err(io(c.kernel))?;
    write(kernel_path(c.app).trim_start_matches('/'), &kernel)?;
    crate::disk::tree_bytes(dir)
}

/// Formats FAT on partition `extent` of `file` with `label` and copies `from` into it. `path` names the image
/// in errors. Errors: see [`crate::disk::format_fat`].
pub fn write_partition(
    file: &File,
    path: &Path,
    extent: Extent,
    label: [u8; 11],
    from: Option<&Path>,
) -> Result<DiskSummary, DiskError> {
    crate::disk::format_fat(Region::new(file, extent.offset(), extent.bytes()), path, extent.bytes(), label, from)
}
