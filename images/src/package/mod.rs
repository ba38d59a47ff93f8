//! `images package`: an app as a bootable GPT disk for clouds and hypervisors that boot through firmware —
//! GRUB for BIOS (boot.img in the protective MBR, core.img in a BIOS boot partition) and UEFI
//! (`EFI/BOOT/BOOTX64.EFI` on the EFI system partition), both reading one grub.cfg that loads the app's ELF
//! with `multiboot2`; optionally a FAT data partition the guest mounts at `/data`; then converted to the
//! cloud's format. Built as an ordinary user: the partition table and the FAT volumes are written into the
//! image file directly (no root, loop devices or mounts).
//!
//! The image is written to a temporary file next to the output and renamed at the end, so a failed run never
//! leaves a half-written image under the output's name.

pub mod convert;
pub mod esp;
pub mod gpt;
pub mod grub;

use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub use convert::Format;

use crate::cargo::{BuildError, Profile};
use crate::disk::{DiskError, DiskSummary};
use crate::project::App;
use crate::qemu::{Accel, ConfigError, KernelOption, RunOptions};

/// The firmware kinds a disk boots with (`--boot`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootModes {
    /// PC BIOS (GRUB i386-pc).
    pub bios: bool,
    /// UEFI (GRUB x86_64-efi).
    pub uefi: bool,
}

impl BootModes {
    /// BIOS and UEFI.
    pub const BOTH: BootModes = BootModes { bios: true, uefi: true };
}

impl fmt::Display for BootModes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match (self.bios, self.uefi) {
            (true, true) => "BIOS and UEFI",
            (true, false) => "BIOS",
            _ => "UEFI",
        })
    }
}

impl std::str::FromStr for BootModes {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bios" => Ok(BootModes { bios: true, uefi: false }),
            "uefi" => Ok(BootModes { bios: false, uefi: true }),
            "both" => Ok(BootModes::BOTH),
            _ => Err(format!("unknown boot mode `{s}` (use bios, uefi or both)")),
        }
    }
}

/// What to package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageOptions {
    /// The app's name: its package in this workspace for [`package`], the kernel's file name on the ESP.
    pub app: String,
    /// Output format.
    pub format: Format,
    /// The file to write.
    pub output: PathBuf,
    /// Firmware kinds to boot with.
    pub boot: BootModes,
    /// Disk size (bytes); rounded up to whole MiB (whole GiB for GCE).
    pub size: u64,
    /// A directory to copy into a FAT data partition the guest mounts at `/data`.
    pub data: Option<PathBuf>,
    /// Kernel options, before `--` on the kernel command line.
    pub kernel_options: Vec<KernelOption>,
    /// App arguments, after `--`.
    pub app_args: Vec<String>,
}

/// Failures of `images package`; each says what to change or install.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// Bad kernel options or app arguments.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The app did not build.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Packing the app's initrd failed.
    #[error(transparent)]
    Initrd(#[from] crate::initrd::InitrdError),
    /// The disk is too small.
    #[error(transparent)]
    TooSmall(#[from] gpt::TooSmall),
    /// GRUB is missing or its images could not be made.
    #[error(transparent)]
    Grub(#[from] grub::GrubError),
    /// Writing a FAT partition failed (or the data does not fit).
    #[error(transparent)]
    Fat(#[from] DiskError),
    /// Converting the disk failed or qemu-img is missing.
    #[error(transparent)]
    Convert(#[from] convert::ConvertError),
    /// `--data` is not a directory.
    #[error("--data {0}: not a directory")]
    DataNotADirectory(PathBuf),
    /// An I/O error on the image or a scratch file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PackageError {
    let path = path.to_owned();
    move |source| PackageError::Io { path, source }
}

/// What [`package`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageSummary {
    /// The output file.
    pub output: PathBuf,
    /// Its format.
    pub format: Format,
    /// Its size on the host (bytes).
    pub file_bytes: u64,
    /// The disk's (virtual) size (bytes).
    pub disk_bytes: u64,
    /// Firmware kinds it boots with.
    pub boot: BootModes,
    /// GRUB's version, e.g. `2.06-13+deb12u2`.
    pub grub: String,
    /// The kernel's path on the ESP.
    pub kernel: String,
    /// The kernel ELF's size (bytes).
    pub kernel_bytes: u64,
    /// The kernel command line in grub.cfg.
    pub cmdline: String,
    /// The partition layout.
    pub layout: gpt::Layout,
    /// The data partition, when `--data` was given.
    pub data: Option<DiskSummary>,
}

impl fmt::Display for PackageSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} ({}), {} bytes ({}), disk {} MiB, boots {} (GRUB {} → Multiboot2), kernel {} ({} bytes)",
            self.output.display(),
            self.format,
            self.format.clouds(),
            self.file_bytes,
            crate::inspect::human(self.file_bytes),
            self.disk_bytes / gpt::MIB,
            self.boot,
            self.grub,
            self.kernel,
            self.kernel_bytes
        )?;
        if !self.cmdline.is_empty() {
            write!(f, ", command line {:?}", self.cmdline)?;
        }
        if let (Some(d), Some(e)) = (&self.data, self.layout.data) {
            write!(f, ", /data {} MiB {} with {} files", e.bytes() / gpt::MIB, d.fat_type, d.files)?;
        }
        Ok(())
    }
}

/// Scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Result<Self, PackageError> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("images-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).map_err(io(&d))?;
        Ok(Scratch(d))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A file removed on drop unless [`Partial::keep`] renamed it into place.
struct Partial(Option<PathBuf>);

impl Partial {
    fn keep(mut self, to: &Path) -> Result<(), PackageError> {
        if let Some(p) = self.0.take() {
            std::fs::rename(&p, to).map_err(io(to))?;
        }
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The kernel command line for `opts` (kernel options, `--`, app arguments), checked as `images run` checks
/// it. Errors: [`ConfigError::AppArg`].
pub fn kernel_command_line(kernel_options: &[KernelOption], app_args: &[String]) -> Result<String, ConfigError> {
    let mut o = RunOptions::new("", Accel::Tcg);
    o.kernel_options = kernel_options.to_vec();
    o.app_args = app_args.to_vec();
    o.validate()?;
    Ok(o.kernel_command_line())
}

/// Builds `opts.app`, a package of this workspace ([`crate::project::workspace_app`]), and writes the disk:
/// [`package_app`]. Errors: [`PackageError`].
pub fn package(opts: &PackageOptions) -> Result<PackageSummary, PackageError> {
    crate::cargo::check_app_name(&opts.app)?;
    let app = crate::project::workspace_app(&opts.app).map_err(BuildError::from)?;
    package_app(&app, opts)
}

/// Builds `app` (release, its own initrd embedded) and writes the disk: see the module docs. The kernel is
/// named after `opts.app` on the ESP. Errors: [`PackageError`].
pub fn package_app(app: &App, opts: &PackageOptions) -> Result<PackageSummary, PackageError> {
    let initrd = crate::initrd::for_app(app, None)?;
    let image = crate::cargo::build(app, Profile::Release, initrd.as_deref())?;
    package_elf(opts, &image.path)
}

/// Writes the disk for `opts` around the already-built kernel `elf`. Errors: [`PackageError`].
pub fn package_elf(opts: &PackageOptions, elf: &Path) -> Result<PackageSummary, PackageError> {
    let cmdline = kernel_command_line(&opts.kernel_options, &opts.app_args)?;
    if let Some(d) = &opts.data {
        if !d.is_dir() {
            return Err(PackageError::DataNotADirectory(d.clone()));
        }
    }
    // Every missing tool is reported before any work starts.
    if opts.format.qemu_img_args().is_some() {
        crate::host_tools::QEMU_IMG
            .require()
            .map_err(|e| convert::ConvertError::from(crate::host_tools::ToolError::from(e)))?;
    }
    let work = Scratch::new("package")?;
    let grub_version = grub::version()?;
    let efi_loader = if opts.boot.uefi { Some(grub::efi_app(&work.0)?) } else { None };
    // With a BIOS boot partition first, the ESP is partition 2.
    let esp_index = if opts.boot.bios { 2 } else { 1 };
    let core = if opts.boot.bios { Some((grub::boot_img()?, grub::core_img(esp_index, &work.0)?)) } else { None };

    let kernel = esp::kernel_path(&opts.app);
    let mut words: Vec<String> = opts.kernel_options.iter().map(KernelOption::to_string).collect();
    if !opts.app_args.is_empty() {
        words.push("--".into());
        words.extend(opts.app_args.iter().cloned());
    }
    let config = grub::config(&opts.app, &kernel, &words);
    let esp_dir = work.0.join("esp");
    let esp_payload = esp::stage(
        &esp_dir,
        &esp::EspContents { app: &opts.app, kernel: elf, efi_loader: efi_loader.as_deref(), config: &config },
    )?;
    let data_payload = opts.data.as_deref().map(crate::disk::tree_bytes).transpose()?;
    let layout = gpt::plan(&gpt::LayoutRequest {
        disk_bytes: opts.format.disk_bytes(opts.size),
        bios: opts.boot.bios,
        esp_payload,
        data_payload,
    })?;

    // The raw disk: written in place for raw output, else in the scratch directory and converted.
    let dir = opts.output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = opts.output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let partial_path = dir.join(format!(".{name}.partial-{}", std::process::id()));
    let raw_path = if opts.format == Format::Raw { partial_path.clone() } else { work.0.join("disk.raw") };
    let partial = Partial(Some(partial_path.clone()));
    let data = write_raw(&raw_path, &layout, core, &esp_dir, opts.data.as_deref())?;
    if opts.format != Format::Raw {
        convert::convert(&raw_path, &partial_path, opts.format)?;
    }
    let file_bytes = std::fs::metadata(&partial_path).map_err(io(&partial_path))?.len();
    partial.keep(&opts.output)?;
    Ok(PackageSummary {
        output: opts.output.clone(),
        format: opts.format,
        file_bytes,
        disk_bytes: layout.disk_bytes,
        boot: opts.boot,
        grub: grub_version,
        kernel,
        kernel_bytes: std::fs::metadata(elf).map_err(io(elf))?.len(),
        cmdline,
        layout,
        data,
    })
}

/// Writes the raw disk at `path`: GPT with the MBR boot code, core.img in the BIOS boot partition (when `core`
/// holds boot.img and core.img), the ESP from `esp_dir`, the data partition from `data`.
fn write_raw(
    path: &Path,
    layout: &gpt::Layout,
    core: Option<([u8; 512], Vec<u8>)>,
    esp_dir: &Path,
    data: Option<&Path>,
) -> Result<Option<DiskSummary>, PackageError> {
    let file = File::options().read(true).write(true).create(true).truncate(true).open(path).map_err(io(path))?;
    file.set_len(layout.disk_bytes).map_err(io(path))?;
    let mut boot_code = [0u8; grub::MBR_CODE_LEN];
    if let (Some((boot_img, mut core_img)), Some(part)) = (core, layout.bios_boot) {
        boot_code = grub::mbr_boot_code(&boot_img, part.first_lba);
        let sectors = grub::patch_core_img(&mut core_img, part.first_lba)?;
        if sectors > part.sectors {
            return Err(grub::GrubError::BadCore(format!(
                "{sectors} sectors do not fit the {}-sector BIOS boot partition",
                part.sectors
            ))
            .into());
        }
        file.write_all_at(&core_img, part.offset()).map_err(io(path))?;
    }
    gpt::write(&file, layout, &boot_code).map_err(io(path))?;
    esp::write_partition(&file, path, layout.esp, esp::ESP_LABEL, Some(esp_dir))?;
    let data = match (layout.data, data) {
        (Some(extent), Some(dir)) => Some(esp::write_partition(&file, path, extent, esp::DATA_LABEL, Some(dir))?),
        _ => None,
    };
    file.sync_all().map_err(io(path))?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_modes() {
        assert_eq!("both".parse::<BootModes>(), Ok(BootModes::BOTH));
        assert_eq!("bios".parse::<BootModes>().unwrap().to_string(), "BIOS");
        assert_eq!("uefi".parse::<BootModes>().unwrap().to_string(), "UEFI");
        assert_eq!(BootModes::BOTH.to_string(), "BIOS and UEFI");
        assert!("efi".parse::<BootModes>().unwrap_err().contains("use bios, uefi or both"));
    }

    #[test]
    fn command_line_matches_images_run() {
        let opts = vec!["loglevel=debug".parse().unwrap()];
        assert_eq!(kernel_command_line(&opts, &["a b".into(), "c".into()]).unwrap(), "loglevel=debug -- \"a b\" c");
        assert_eq!(kernel_command_line(&[], &[]).unwrap(), "");
        assert_eq!(kernel_command_line(&[], &["x\"y".into()]), Err(ConfigError::AppArg("x\"y".into())));
    }
}
