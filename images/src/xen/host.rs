//! The Xen host of the nested harness, built from Debian bookworm packages: Xen 4.17 (`xen-hypervisor-4.17-amd64`),
//! a Linux 6.1 dom0 kernel, the `xl` toolstack, xenstored/xenconsoled, busybox and the libraries they link.
//!
//! Packages are fetched and unpacked by [`crate::debian`] into a cache directory (default `target/xen-host/cache/`)
//! that keeps only Xen, the dom0 kernel and dom0's base initramfs; nothing is installed on the host. The cache is
//! reused while its `ready` manifest matches [`PACKAGES`], [`dom0::MODULES`] and [`CACHE_FORMAT`].

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::dom0;
use crate::debian::{self, io_err, CacheError, CacheSpec, Unpacked};

/// Debian packages of the dom0 besides the kernel: the hypervisor, the toolstack and its libraries, busybox, bash
/// and `flock` for libxl's hotplug scripts, and the C runtime all of them link (checked with `readelf -d`: every
/// `NEEDED` library of the copied binaries is in this list, so nothing comes from the host).
pub const PACKAGES: [&str; 26] = [
    "xen-hypervisor-4.17-amd64",
    "xen-utils-4.17",
    "xen-utils-common",
    "xenstore-utils",
    "libxencall1",
    "libxenevtchn1",
    "libxenforeignmemory1",
    "libxengnttab1",
    "libxenmisc4.17",
    "libxenstore4",
    "libxentoollog1",
    "libxenhypfs1",
    "libxendevicemodel1",
    "libxentoolcore1",
    "libyajl2",
    "libncurses6",
    "libtinfo6",
    "busybox-static",
    "bash",
    "util-linux",
    "libc6",
    "libgcc-s1",
    "zlib1g",
    "liblzma5",
    "libzstd1",
    "libuuid1",
];

/// Version of the cache layout and of [`dom0::base_archive`]'s contents; bump it when either changes, so caches
/// made by older code are rebuilt ([`dom0::MODULES`] is in the manifest by itself).
pub const CACHE_FORMAT: u32 = 2;

/// Xen's file inside `xen-hypervisor-4.17-amd64`: a gzip-compressed Multiboot1 ELF.
const XEN_GZ: &str = "boot/xen-4.17-amd64.gz";

/// A prepared Xen host: the files QEMU boots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XenHost {
    /// The cache directory (`<work>/cache`).
    pub dir: PathBuf,
    /// The work directory given to [`prepare`]: per-run initramfs files go to `<work>/runs`, logs to
    /// `<work>/logs`.
    pub work: PathBuf,
    /// Xen, uncompressed (Multiboot1 ELF; QEMU's `-kernel`).
    pub xen: PathBuf,
    /// dom0's Linux kernel (first Multiboot module).
    pub vmlinuz: PathBuf,
    /// Its release, e.g. `6.1.0-56-amd64` (the modules' directory).
    pub kernel_release: String,
    /// The dom0 initramfs without the per-run files (newc cpio; see [`dom0::base_archive`]).
    pub base_initrd: PathBuf,
}

/// Failures while preparing the host ([`crate::debian`]'s).
pub type HostError = CacheError;

/// The default work directory: `<target>/xen-host` (cache in `cache/`, per-run files in `runs/`, logs in `logs/`).
pub fn default_dir() -> PathBuf {
    crate::cargo::target_dir().join("xen-host")
}

/// The manifest line besides format, packages and kernel: dom0's modules.
fn modules_line() -> String {
    format!("modules {}\n", dom0::MODULES.join(" "))
}

/// Returns the host cached in `work/cache`, fetching and unpacking the packages first unless a complete cache is
/// there ([`debian::prepare`]). `progress` receives one line per step. Errors: see [`HostError`].
pub fn prepare(work: &Path, progress: &mut dyn FnMut(&str)) -> Result<XenHost, HostError> {
    let modules = modules_line();
    let spec = CacheSpec { format: CACHE_FORMAT, packages: &PACKAGES, extra: &modules };
    let cache = debian::prepare(work, &spec, progress, &mut build)?;
    host_in(&cache, work)
}

/// Writes Xen (decompressed) and dom0's base initramfs into the new cache `dir`.
fn build(unpacked: &Unpacked, dir: &Path, progress: &mut dyn FnMut(&str)) -> Result<(), HostError> {
    let xen_gz = unpacked.root.join(XEN_GZ);
    let gz = File::open(&xen_gz).map_err(io_err("opening", &xen_gz))?;
    let xen = dir.join("xen.elf");
    let mut out = File::create(&xen).map_err(io_err("creating", &xen))?;
    io::copy(&mut flate2::read::GzDecoder::new(gz), &mut out).map_err(io_err("decompressing", &xen_gz))?;
    progress("building the dom0 initramfs");
    let base = dir.join("dom0-base.cpio");
    let archive = dom0::base_archive(&unpacked.root, &unpacked.kernel_release)?;
    let mut file = io::BufWriter::new(File::create(&base).map_err(io_err("creating", &base))?);
    archive.write(&mut file)?;
    file.flush().map_err(io_err("writing", &base))
}

/// The host files of a complete cache in `dir`, whose runs go under `work`.
fn host_in(dir: &Path, work: &Path) -> Result<XenHost, HostError> {
    let host = XenHost {
        dir: dir.to_path_buf(),
        work: work.to_path_buf(),
        xen: dir.join("xen.elf"),
        vmlinuz: dir.join(debian::VMLINUZ),
        kernel_release: debian::cached_kernel_release(dir)?,
        base_initrd: dir.join("dom0-base.cpio"),
    };
    debian::check_files(dir, &[&host.xen, &host.vmlinuz, &host.base_initrd])?;
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn manifest_names_format_packages_and_kernel() {
        let spec = CacheSpec { format: CACHE_FORMAT, packages: &PACKAGES, extra: &modules_line() };
        let m = spec.manifest("linux-image-6.1.0-56-amd64");
        assert!(m.starts_with(&format!("format {CACHE_FORMAT}\npackages xen-hypervisor-4.17-amd64 ")), "{m}");
        assert!(m.contains("\nmodules xen-privcmd xenfs "), "{m}");
        assert!(m.ends_with("\nkernel linux-image-6.1.0-56-amd64\n"), "{m}");
    }

    #[test]
    fn incomplete_cache_is_reported_with_its_directory() {
        let dir = std::env::temp_dir().join(format!("images-xen-host-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("kernel-release"), "6.1.0-1-amd64\n").unwrap();
        match host_in(&dir, &dir) {
            Err(HostError::Missing(file, d)) => {
                assert_eq!((file, d.clone()), (dir.join("xen.elf"), dir.clone()));
            }
            other => panic!("{other:?}"),
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
