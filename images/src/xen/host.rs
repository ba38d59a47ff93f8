//! The Xen host of the nested harness, built from Debian bookworm packages: Xen 4.17 (`xen-hypervisor-4.17-amd64`),
//! a Linux 6.1 dom0 kernel, the `xl` toolstack, xenstored/xenconsoled, busybox and the libraries they link.
//!
//! Packages are fetched with `apt-get download` and unpacked with `dpkg -x` into a cache directory (default
//! `target/xen-host/`); nothing is installed on the host. The cache is reused while its `ready` manifest matches
//! [`PACKAGES`] and [`CACHE_FORMAT`]; a lock file keeps two processes from filling it at once.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::dom0;

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

/// Version of the cache layout; a change rebuilds caches made by older code.
pub const CACHE_FORMAT: u32 = 1;

/// Xen's file inside `xen-hypervisor-4.17-amd64`: a gzip-compressed Multiboot1 ELF.
const XEN_GZ: &str = "boot/xen-4.17-amd64.gz";

/// A prepared Xen host: the files QEMU boots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XenHost {
    /// The cache directory.
    pub dir: PathBuf,
    /// Xen, uncompressed (Multiboot1 ELF; QEMU's `-kernel`).
    pub xen: PathBuf,
    /// dom0's Linux kernel (first Multiboot module).
    pub vmlinuz: PathBuf,
    /// Its release, e.g. `6.1.0-56-amd64` (the modules' directory).
    pub kernel_release: String,
    /// The packages, unpacked.
    pub root: PathBuf,
    /// The dom0 initramfs without the per-run files (newc cpio; see [`dom0::base_archive`]).
    pub base_initrd: PathBuf,
}

/// Failures while preparing the host; each says what to run or install.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A tool of Debian's package manager is missing.
    #[error("`{0}` not found: the nested Xen harness downloads Debian bookworm's Xen packages with apt-get and dpkg; run it on Debian bookworm")]
    NoApt(&'static str),
    /// Package lists are missing and this process may not update them.
    #[error("apt has no package lists with {0}; run `apt-get update` as root")]
    NoLists(String),
    /// No dom0 kernel package was found.
    #[error("no linux-image-6.1.0-*-amd64 package in the apt lists; run `apt-get update` (bookworm's main suite must be a source)")]
    NoKernel,
    /// A command failed.
    #[error("`{command}` failed ({status}){}", if .stderr.is_empty() { String::new() } else { format!(":\n{}", .stderr) })]
    Command {
        /// The command line.
        command: String,
        /// Its exit status, or why it could not start.
        status: String,
        /// The end of its stderr.
        stderr: String,
    },
    /// A file operation failed.
    #[error("{what} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// An unpacked package lacks a file it should have.
    #[error("{}: missing after unpacking the packages; delete {} and try again", .0.display(), .1.display())]
    Missing(PathBuf, PathBuf),
    /// Building the dom0 initramfs failed.
    #[error("building the dom0 initramfs: {0}")]
    Dom0(#[from] dom0::Dom0Error),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> HostError + 'a {
    move |source| HostError::Io { what, path: path.to_path_buf(), source }
}

/// The default cache directory: `<target>/xen-host`.
pub fn default_dir() -> PathBuf {
    crate::cargo::target_dir().join("xen-host")
}

/// The manifest a complete cache holds in `ready`: format, packages, kernel package.
fn manifest(kernel_package: &str) -> String {
    format!("format {CACHE_FORMAT}\npackages {}\nkernel {kernel_package}\n", PACKAGES.join(" "))
}

/// Returns the host in `dir`, fetching and unpacking the packages first unless a complete cache is there.
/// `progress` receives one line per step (`fetching 28 packages`, ...). Errors: see [`HostError`].
pub fn prepare(dir: &Path, progress: &mut dyn FnMut(&str)) -> Result<XenHost, HostError> {
    fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    let lock_path = dir.join("lock");
    let lock = File::create(&lock_path).map_err(io_err("creating", &lock_path))?;
    // Held until return: a second `images` or test process waits here, then finds the cache ready.
    lock.lock().map_err(io_err("locking", &lock_path))?;
    let ready = dir.join("ready");
    if let Ok(text) = fs::read_to_string(&ready) {
        if let Some(kernel) = text.lines().find_map(|l| l.strip_prefix("kernel ")) {
            if text == manifest(kernel) {
                return host_in(dir);
            }
        }
    }
    let _ = fs::remove_file(&ready);
    for tool in ["apt-get", "apt-cache", "dpkg"] {
        if crate::qemu::find_in_path(tool).is_none() {
            return Err(HostError::NoApt(tool));
        }
    }
    let kernel = newest_kernel_package(progress)?;
    let debs = dir.join("debs");
    let root = dir.join("root");
    for d in [&debs, &root] {
        if d.exists() {
            fs::remove_dir_all(d).map_err(io_err("removing", d))?;
        }
        fs::create_dir_all(d).map_err(io_err("creating", d))?;
    }
    progress(&format!("downloading {} Debian packages and {kernel} into {}", PACKAGES.len(), debs.display()));
    let mut download = Command::new("apt-get");
    download.args(["download", "-q"]).args(PACKAGES).arg(&kernel).current_dir(&debs);
    run(&mut download)?;
    let mut unpacked = 0;
    for entry in fs::read_dir(&debs).map_err(io_err("reading", &debs))? {
        let path = entry.map_err(io_err("reading", &debs))?.path();
        if path.extension().is_some_and(|e| e == "deb") {
            run(Command::new("dpkg").arg("-x").arg(&path).arg(&root))?;
            unpacked += 1;
        }
    }
    progress(&format!("unpacked {unpacked} packages into {}", root.display()));
    let xen_gz = root.join(XEN_GZ);
    let gz = File::open(&xen_gz).map_err(io_err("opening", &xen_gz))?;
    let xen = dir.join("xen.elf");
    let mut out = File::create(&xen).map_err(io_err("creating", &xen))?;
    io::copy(&mut flate2::read::GzDecoder::new(gz), &mut out).map_err(io_err("decompressing", &xen_gz))?;
    let release = kernel_release(&root, dir)?;
    let vmlinuz = root.join(format!("boot/vmlinuz-{release}"));
    fs::copy(&vmlinuz, dir.join("vmlinuz")).map_err(io_err("copying", &vmlinuz))?;
    fs::write(dir.join("kernel-release"), &release).map_err(io_err("writing", dir))?;
    progress("building the dom0 initramfs");
    let base = dir.join("dom0-base.cpio");
    let archive = dom0::base_archive(&root, &release)?;
    let mut file = io::BufWriter::new(File::create(&base).map_err(io_err("creating", &base))?);
    archive.write(&mut file)?;
    file.flush().map_err(io_err("writing", &base))?;
    fs::write(&ready, manifest(&kernel)).map_err(io_err("writing", &ready))?;
    host_in(dir)
}

/// The host files of a complete cache in `dir`.
fn host_in(dir: &Path) -> Result<XenHost, HostError> {
    let release_file = dir.join("kernel-release");
    let kernel_release = fs::read_to_string(&release_file).map_err(io_err("reading", &release_file))?;
    let host = XenHost {
        dir: dir.to_path_buf(),
        xen: dir.join("xen.elf"),
        vmlinuz: dir.join("vmlinuz"),
        kernel_release: kernel_release.trim().to_owned(),
        root: dir.join("root"),
        base_initrd: dir.join("dom0-base.cpio"),
    };
    for f in [&host.xen, &host.vmlinuz, &host.base_initrd] {
        if !f.is_file() {
            return Err(HostError::Missing(f.clone(), dir.to_path_buf()));
        }
    }
    Ok(host)
}

/// The one kernel release under `root/lib/modules`.
fn kernel_release(root: &Path, dir: &Path) -> Result<String, HostError> {
    let modules = root.join("lib/modules");
    let mut names = Vec::new();
    for entry in fs::read_dir(&modules).map_err(io_err("reading", &modules))? {
        names.push(entry.map_err(io_err("reading", &modules))?.file_name().to_string_lossy().into_owned());
    }
    match names.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(HostError::Missing(modules.join("<one kernel release>"), dir.to_path_buf())),
    }
}

/// The newest `linux-image-6.1.0-N-amd64` package known to apt (its modules must match the vmlinuz, so the
/// kernel comes from the archive as a unit). Runs `apt-get update` once when root and apt has no lists.
fn newest_kernel_package(progress: &mut dyn FnMut(&str)) -> Result<String, HostError> {
    let search = || {
        let mut cmd = Command::new("apt-cache");
        cmd.args(["search", "--names-only", r"^linux-image-6\.1\.0-[0-9]+-amd64$"]);
        run(&mut cmd).map(|out| pick_kernel(&out))
    };
    let has_xen = || run(Command::new("apt-cache").args(["show", PACKAGES[0]])).is_ok();
    if let (Some(kernel), true) = (search()?, has_xen()) {
        return Ok(kernel);
    }
    if !crate::qemu::is_root() {
        return Err(HostError::NoLists(format!("{} and linux-image-6.1.0-*-amd64", PACKAGES[0])));
    }
    progress("apt has no lists with the Xen packages: running apt-get update");
    run(Command::new("apt-get").args(["update", "-q"]))?;
    match (search()?, has_xen()) {
        (Some(kernel), true) => Ok(kernel),
        (None, _) => Err(HostError::NoKernel),
        (Some(_), false) => Err(HostError::NoLists(PACKAGES[0].to_owned())),
    }
}

/// From `apt-cache search` output (`NAME - description` lines), the `linux-image-6.1.0-N-amd64` with the largest N.
pub fn pick_kernel(search_output: &str) -> Option<String> {
    search_output
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|name| {
            let n = name.strip_prefix("linux-image-6.1.0-")?.strip_suffix("-amd64")?;
            Some((n.parse::<u32>().ok()?, name.to_owned()))
        })
        .max()
        .map(|(_, name)| name)
}

/// Runs `cmd` with stdin from /dev/null and returns its stdout; on failure the error has the end of stderr.
fn run(cmd: &mut Command) -> Result<String, HostError> {
    let command = crate::qemu::shell_line(cmd);
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| HostError::Command {
        command: command.clone(),
        status: e.to_string(),
        stderr: String::new(),
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
        let stderr = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
        return Err(HostError::Command { command, status: out.status.to_string(), stderr });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_newest_kernel_numerically() {
        let out = "linux-image-6.1.0-9-amd64 - Linux 6.1 for 64-bit PCs (signed)\n\
                   linux-image-6.1.0-56-amd64 - Linux 6.1 for 64-bit PCs (signed)\n\
                   linux-image-6.1.0-10-amd64 - Linux 6.1 for 64-bit PCs (signed)\n\
                   linux-image-6.1.0-56-amd64-unsigned - Linux 6.1\n";
        assert_eq!(pick_kernel(out).as_deref(), Some("linux-image-6.1.0-56-amd64"));
        assert_eq!(pick_kernel(""), None);
        assert_eq!(pick_kernel("linux-image-6.1.0-x-amd64 - odd\n"), None);
    }

    #[test]
    fn manifest_names_format_packages_and_kernel() {
        let m = manifest("linux-image-6.1.0-56-amd64");
        assert!(m.starts_with(&format!("format {CACHE_FORMAT}\npackages xen-hypervisor-4.17-amd64 ")), "{m}");
        assert!(m.ends_with("\nkernel linux-image-6.1.0-56-amd64\n"), "{m}");
    }

    #[test]
    fn incomplete_cache_is_reported_with_its_directory() {
        let dir = std::env::temp_dir().join(format!("images-xen-host-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("kernel-release"), "6.1.0-1-amd64\n").unwrap();
        match host_in(&dir) {
            Err(HostError::Missing(file, d)) => {
                assert_eq!((file, d.clone()), (dir.join("xen.elf"), dir.clone()));
            }
            other => panic!("{other:?}"),
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
