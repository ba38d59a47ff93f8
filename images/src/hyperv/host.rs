//! L1 of the nested Hyper-V harness: Debian bookworm's Linux 6.1 (`linux-image-6.1.0-N-amd64`, for `kvm_amd` and
//! the virtio NIC driver) and `busybox-static`, fetched once by [`crate::debian`] into `target/hyperv-host/cache/`,
//! plus this machine's QEMU (the L2 hypervisor's device model) with every library `ldd` names and the firmware a
//! `-M pc` PVH boot loads. Nothing is installed on the host.
//!
//! L1's initramfs is three concatenated archives: the base from the packages (cached with them), the QEMU archive
//! (rebuilt when this machine's QEMU changes, [`qemu_archive`]) and the per-run archive ([`super::l1`]).

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::debian::{self, io_err, CacheError, CacheSpec, Unpacked};
use crate::initramfs::{add_kernel_modules, Archive};

/// Debian packages besides the kernel: busybox is L1's whole userland (its `ip`, `sed`, `timeout` included).
pub const PACKAGES: [&str; 1] = ["busybox-static"];

/// Kernel modules L1 loads (with their dependencies, from each module's `.modinfo`): KVM for AMD SVM (with the
/// PSP driver `ccp` it uses when present) and the virtio NIC that carries the host's port forwards.
pub const MODULES: [&str; 4] = ["kvm-amd", "ccp", "virtio_pci", "virtio_net"];

/// Where L1's init finds the module load order, one module name per line.
pub const MODULE_LIST: &str = "etc/images/modules";

/// Version of the cache layout and of [`base_archive`]'s contents; bump it when either changes.
pub const CACHE_FORMAT: u32 = 1;

/// Firmware a `-M pc` L2 with `-kernel` (PVH) loads from QEMU's data directories: SeaBIOS, the kvmvapic, linuxboot
/// and PVH option ROMs.
pub const FIRMWARE: [&str; 5] = [
    "/usr/share/seabios/bios-256k.bin",
    "/usr/share/qemu/kvmvapic.bin",
    "/usr/share/qemu/linuxboot_dma.bin",
    "/usr/share/qemu/linuxboot.bin",
    "/usr/share/qemu/pvh.bin",
];

/// A prepared host: the files L0 boots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HypervHost {
    /// The cache directory (`<work>/cache`).
    pub dir: PathBuf,
    /// The work directory: per-run initramfs files go to `<work>/runs`, logs to `<work>/logs`.
    pub work: PathBuf,
    /// L1's Linux kernel.
    pub vmlinuz: PathBuf,
    /// Its release, e.g. `6.1.0-56-amd64`.
    pub kernel_release: String,
    /// The base archive (busybox, modules; see [`base_archive`]).
    pub base_initrd: PathBuf,
    /// The QEMU archive ([`qemu_archive`]).
    pub qemu_initrd: PathBuf,
}

/// The default work directory: `<target>/hyperv-host`.
pub fn default_dir() -> PathBuf {
    crate::cargo::target_dir().join("hyperv-host")
}

fn modules_line() -> String {
    format!("modules {}\n", MODULES.join(" "))
}

/// Returns the host in `work`: the package cache (downloaded on first use) and the QEMU archive (rebuilt when
/// `qemu`, this machine's QEMU binary, changed). `progress` receives one line per step. Errors: see
/// [`CacheError`].
pub fn prepare(work: &Path, qemu: &Path, progress: &mut dyn FnMut(&str)) -> Result<HypervHost, CacheError> {
    let modules = modules_line();
    let spec = CacheSpec { format: CACHE_FORMAT, packages: &PACKAGES, extra: &modules };
    let cache = debian::prepare(work, &spec, progress, &mut build)?;
    let qemu_initrd = ensure_qemu_archive(work, qemu, progress)?;
    let host = HypervHost {
        dir: cache.clone(),
        work: work.to_path_buf(),
        vmlinuz: cache.join(debian::VMLINUZ),
        kernel_release: debian::cached_kernel_release(&cache)?,
        base_initrd: cache.join("l1-base.cpio"),
        qemu_initrd,
    };
    debian::check_files(&cache, &[&host.vmlinuz, &host.base_initrd])?;
    Ok(host)
}

/// Writes L1's base archive into the new cache `dir`.
fn build(unpacked: &Unpacked, dir: &Path, progress: &mut dyn FnMut(&str)) -> Result<(), CacheError> {
    progress("building L1's base initramfs");
    let base = dir.join("l1-base.cpio");
    let archive = base_archive(&unpacked.root, &unpacked.kernel_release)?;
    let mut file = io::BufWriter::new(File::create(&base).map_err(io_err("creating", &base))?);
    archive.write(&mut file)?;
    file.flush().map_err(io_err("writing", &base))
}

/// L1's base archive from the unpacked packages in `root` for kernel `release`: busybox (`/init` makes its applet
/// links), [`MODULES`] with their dependencies (load order in [`MODULE_LIST`]), `/dev/console`.
pub fn base_archive(root: &Path, release: &str) -> Result<Archive, crate::initramfs::ArchiveError> {
    let mut a = Archive::new();
    for d in ["bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "run", "tmp", "root", "images", "etc/images"]
    {
        a.dir(d);
    }
    // The kernel opens /dev/console for init before devtmpfs is mounted.
    a.char_dev("dev/console", 5, 1, 0o600);
    a.copy_tree(root, "bin/busybox")?;
    a.symlink("bin/sh", "busybox");
    add_kernel_modules(&mut a, root, release, &MODULES, MODULE_LIST)?;
    Ok(a)
}

/// The QEMU archive for `qemu` in `work` (`qemu.cpio`), rebuilt when its stamp (`qemu.stamp`: path, size, mtime of
/// the binary) differs.
fn ensure_qemu_archive(work: &Path, qemu: &Path, progress: &mut dyn FnMut(&str)) -> Result<PathBuf, CacheError> {
    let meta = fs::metadata(qemu).map_err(io_err("reading", qemu))?;
    let stamp = format!("{} {} {}\n", qemu.display(), meta.len(), meta.mtime());
    let (out, stamp_file) = (work.join("qemu.cpio"), work.join("qemu.stamp"));
    if out.is_file() && fs::read_to_string(&stamp_file).is_ok_and(|s| s == stamp) {
        return Ok(out);
    }
    progress(&format!("packing {} with its libraries and firmware for L1", qemu.display()));
    let libs = shared_libraries(qemu)?;
    let archive = qemu_archive(qemu, &libs)?;
    let tmp = work.join(format!("qemu.cpio.tmp-{}", std::process::id()));
    let mut file = io::BufWriter::new(File::create(&tmp).map_err(io_err("creating", &tmp))?);
    archive.write(&mut file)?;
    file.flush().map_err(io_err("writing", &tmp))?;
    drop(file);
    fs::rename(&tmp, &out).map_err(io_err("moving into place", &out))?;
    fs::write(&stamp_file, stamp).map_err(io_err("writing", &stamp_file))?;
    Ok(out)
}

/// The QEMU archive: `qemu` as `/usr/bin/qemu-system-x86_64`, the shared libraries `libs` at the paths the
/// dynamic linker looks them up (file contents, symlinks followed), and [`FIRMWARE`]. Errors: a missing firmware
/// file.
pub fn qemu_archive(qemu: &Path, libs: &[PathBuf]) -> Result<Archive, CacheError> {
    let mut a = Archive::new();
    a.file("usr/bin/qemu-system-x86_64", qemu, 0o755);
    for lib in libs {
        let real = fs::canonicalize(lib).map_err(io_err("resolving", lib))?;
        a.file(&lib.to_string_lossy(), real, 0o755);
    }
    for fw in FIRMWARE {
        let p = Path::new(fw);
        if !p.is_file() {
            return Err(CacheError::Missing(p.to_path_buf(), PathBuf::from("/usr/share (QEMU's data files)")));
        }
        a.file(fw, p, 0o644);
    }
    Ok(a)
}

/// The shared libraries `binary` loads, from `ldd` (the resolved path of each `NAME => PATH` line and the dynamic
/// linker's own line). Errors: `ldd` failed.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, CacheError> {
    let out = debian::run(Command::new("ldd").arg(binary))?;
    Ok(parse_ldd(&out))
}

/// The library paths in `ldd` output.
pub fn parse_ldd(output: &str) -> Vec<PathBuf> {
    let mut libs = Vec::new();
    for line in output.lines() {
        let line = line.trim();
        let path = match line.split_once(" => ") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next().filter(|p| p.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            let p = PathBuf::from(p);
            if !libs.contains(&p) {
                libs.push(p);
            }
        }
    }
    libs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_resolved_paths_and_the_loader() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f12)\n\
                   \tlibgone.so.2 => not found\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f34)\n\
                   \tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f12)\n";
        assert_eq!(
            parse_ldd(out),
            [PathBuf::from("/lib/x86_64-linux-gnu/libz.so.1"), PathBuf::from("/lib64/ld-linux-x86-64.so.2")]
        );
    }

    #[test]
    fn manifest_names_the_modules() {
        let spec = CacheSpec { format: CACHE_FORMAT, packages: &PACKAGES, extra: &modules_line() };
        let m = spec.manifest("linux-image-6.1.0-56-amd64");
        assert_eq!(
            m,
            "format 1\npackages busybox-static\nmodules kvm-amd ccp virtio_pci virtio_net\nkernel linux-image-6.1.0-56-amd64\n"
        );
    }

    #[test]
    fn qemu_archive_holds_binary_libraries_and_firmware() {
        let sh = crate::host_tools::find_in_path("sh").unwrap();
        if FIRMWARE.iter().any(|f| !Path::new(f).is_file()) {
            eprintln!("skipped: QEMU's firmware files are not installed");
            return;
        }
        let libs = shared_libraries(&sh).unwrap();
        assert!(libs.iter().any(|l| l.to_string_lossy().contains("libc.so")), "{libs:?}");
        let a = qemu_archive(&sh, &libs).unwrap();
        let paths: Vec<&str> = a.entries().iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"usr/bin/qemu-system-x86_64"), "{paths:?}");
        assert!(paths.contains(&"usr/share/seabios/bios-256k.bin"), "{paths:?}");
    }
}
