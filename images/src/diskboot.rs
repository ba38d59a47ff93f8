//! Booting a packaged disk (`images run --image FILE [--boot bios|uefi]`) through real firmware under QEMU:
//! SeaBIOS (QEMU's default) or OVMF (Debian's `ovmf`: the code image read-only and a private copy of the
//! variable store, both as pflash), the disk as the first virtio-blk-pci device with `bootindex=0`.
//!
//! Source: QEMU `docs/system/i386/pc.rst` and `docs/system/invocation.rst` (`-drive if=pflash`, `bootindex`);
//! OVMF's `OvmfPkg/README` (split CODE/VARS flash images, VARS writable and per VM).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::host_tools::{self, MissingTool};
use crate::qemu::{ConfigError, Machine, Network, RunOptions};

/// The firmware that boots the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Firmware {
    /// SeaBIOS, QEMU's default firmware.
    #[default]
    Bios,
    /// OVMF (UEFI).
    Uefi,
}

impl Firmware {
    /// Name as given to `--boot`.
    pub fn name(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
        }
    }
}

impl fmt::Display for Firmware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Firmware {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bios" => Ok(Firmware::Bios),
            "uefi" => Ok(Firmware::Uefi),
            _ => Err(format!("unknown firmware `{s}` (use bios or uefi)")),
        }
    }
}

/// A packaged disk to boot instead of `-kernel`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskBoot {
    /// The disk image.
    pub image: PathBuf,
    /// Its format as QEMU names it (`raw`, `qcow2`, `vpc`, `vhdx`, `vmdk`).
    pub format: String,
    /// SeaBIOS or OVMF.
    pub firmware: Firmware,
    /// OVMF: the code image (read-only pflash unit 0).
    pub ovmf_code: Option<PathBuf>,
    /// OVMF: this VM's writable copy of the variable store (pflash unit 1).
    pub ovmf_vars: Option<PathBuf>,
}

impl DiskBoot {
    /// Boots `image` (format `format`) with `firmware`; for UEFI, copies OVMF's variable store template to
    /// `vars` (one per VM: OVMF writes it). Errors: OVMF missing (names the `ovmf` package), the copy failing.
    pub fn new(image: &Path, format: &str, firmware: Firmware, vars: &Path) -> Result<Self, DiskBootError> {
        let (ovmf_code, ovmf_vars) = match firmware {
            Firmware::Bios => (None, None),
            Firmware::Uefi => {
                let code = host_tools::OVMF_CODE.require()?;
                let template = host_tools::OVMF_VARS.require()?;
                std::fs::copy(&template, vars).map_err(|source| DiskBootError::Io { path: vars.to_owned(), source })?;
                (Some(code), Some(vars.to_owned()))
            }
        };
        Ok(DiskBoot { image: image.to_owned(), format: format.to_owned(), firmware, ovmf_code, ovmf_vars })
    }

    /// QEMU arguments for the firmware and the boot disk, replacing `-kernel`/`-append` (paths lossy UTF-8,
    /// as for `--disk`).
    pub fn qemu_args(&self) -> Vec<String> {
        let mut args: Vec<String> = Vec::new();
        // QEMU's option syntax escapes a comma in a value by doubling it.
        let escaped = |p: &Path| p.as_os_str().to_string_lossy().replace(',', ",,");
        if let (Some(code), Some(vars)) = (&self.ovmf_code, &self.ovmf_vars) {
            args.push("-drive".into());
            args.push(format!("if=pflash,format=raw,unit=0,readonly=on,file={}", escaped(code)));
            args.push("-drive".into());
            args.push(format!("if=pflash,format=raw,unit=1,file={}", escaped(vars)));
        }
        // streamOptimized VMDK is write-once in QEMU: boot it with writes going to a temporary overlay.
        let snapshot = if self.format == "vmdk" { ",snapshot=on" } else { "" };
        args.push("-drive".into());
        args.push(format!("if=none,id=boot,format={},file={}{snapshot}", self.format, escaped(&self.image)));
        args.push("-device".into());
        args.push("virtio-blk-pci,drive=boot,bootindex=0".into());
        args
    }
}

/// Makes a run's options fit a disk boot: microvm (no firmware) becomes q35; without `--net` the guest still
/// gets a NIC (user networking, forwards only from `--port`); kernel options, app arguments and an initrd are
/// refused (`initrd_given`), since grub.cfg on the disk holds the command line. Errors:
/// [`ConfigError::ImageOption`].
pub fn adjust_options(opts: &mut RunOptions, net_given: bool, initrd_given: bool) -> Result<(), ConfigError> {
    if !opts.kernel_options.is_empty() {
        return Err(ConfigError::ImageOption("--kernel-opt"));
    }
    if !opts.app_args.is_empty() {
        return Err(ConfigError::ImageOption("an app argument"));
    }
    if initrd_given {
        return Err(ConfigError::ImageOption("--initrd"));
    }
    if opts.machine == Machine::Microvm {
        opts.machine = Machine::Q35;
    }
    if !net_given && opts.network == Network::None {
        opts.network = Network::User { forwards: Vec::new() };
    }
    Ok(())
}

/// What to do when KVM stops the guest with "emulation failure": some nested KVMs cannot execute the FPU and
/// SSE instructions firmware (OVMF) and other kernels use; TCG runs them.
pub const KVM_EMULATION_HINT: &str =
    "KVM stopped the guest with an emulation failure (this KVM cannot run some of the firmware's instructions); \
     run again with --accel tcg";

/// A file removed on drop (OVMF's per-run variable store).
#[derive(Debug)]
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Failures preparing a disk boot.
#[derive(Debug, thiserror::Error)]
pub enum DiskBootError {
    /// OVMF is not installed.
    #[error(transparent)]
    Missing(#[from] MissingTool),
    /// The image cannot be read or the variable store not copied.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The image is in a format QEMU cannot boot from (a GCE archive must be unpacked first).
    #[error("{path}: {why}")]
    Unsupported {
        /// The image.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

/// The QEMU format name of `image` (from `qemu-img info`); a GCE archive is refused with how to unpack it.
/// Errors: qemu-img missing or failing, a GCE archive.
pub fn image_format(image: &Path) -> Result<String, DiskBootError> {
    let mut magic = [0u8; 2];
    let mut f = std::fs::File::open(image).map_err(|source| DiskBootError::Io { path: image.to_owned(), source })?;
    let _ = std::io::Read::read_exact(&mut f, &mut magic);
    if magic == [0x1f, 0x8b] {
        return Err(DiskBootError::Unsupported {
            path: image.to_owned(),
            why: "a gzip'd GCE image archive; unpack it first: tar -xzf FILE disk.raw".into(),
        });
    }
    crate::package::convert::image_info(image)
        .map(|(f, _)| f)
        .map_err(|e| DiskBootError::Unsupported { path: image.to_owned(), why: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bios_boot_is_one_virtio_disk() {
        let d = DiskBoot::new(Path::new("/t/h,1.qcow2"), "qcow2", Firmware::Bios, Path::new("/unused")).unwrap();
        let a = d.qemu_args();
        assert_eq!(
            a,
            [
                "-drive",
                "if=none,id=boot,format=qcow2,file=/t/h,,1.qcow2",
                "-device",
                "virtio-blk-pci,drive=boot,bootindex=0"
            ]
        );
    }

    #[test]
    fn uefi_adds_ovmf_flash() {
        let d = DiskBoot {
            image: "/t/h.vmdk".into(),
            format: "vmdk".into(),
            firmware: Firmware::Uefi,
            ovmf_code: Some("/o/CODE.fd".into()),
            ovmf_vars: Some("/v/VARS.fd".into()),
        };
        let a = d.qemu_args();
        assert_eq!(
            a[..4],
            [
                "-drive",
                "if=pflash,format=raw,unit=0,readonly=on,file=/o/CODE.fd",
                "-drive",
                "if=pflash,format=raw,unit=1,file=/v/VARS.fd"
            ]
        );
        assert_eq!(a[5], "if=none,id=boot,format=vmdk,file=/t/h.vmdk,snapshot=on");
        assert_eq!("uefi".parse(), Ok(Firmware::Uefi));
        assert!("efi".parse::<Firmware>().is_err());
    }
}
