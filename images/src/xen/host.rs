//! The Xen host of the nested harness, built from Debian bookworm packages: Xen 4.17 (`xen-hypervisor-4.17-amd64`),
//! a Linux 6.1 dom0 kernel, the `xl` toolstack, xenstored/xenconsoled, busybox and the libraries they link.
//!
//! Packages are fetched with `apt-get download` into a cache directory (default `target/xen-host/cache/`, ~110 MB
//! with the `.deb`s) and unpacked with `dpkg -x` into a scratch tree that is removed once Xen, the dom0 kernel and
//! dom0's base initramfs are out of it; nothing is installed on the host. The cache is reused while its `ready`
//! manifest matches [`PACKAGES`], [`dom0::MODULES`] and [`CACHE_FORMAT`].

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

/// The default work directory: `<target>/xen-host` (cache in `cache/`, per-run files in `runs/`, logs in `logs/`).
pub fn default_dir() -> PathBuf {
    crate::cargo::target_dir().join("xen-host")
}

/// The manifest a complete cache holds in `ready`: format, packages, dom0 modules, kernel package.
fn manifest(kernel_package: &str) -> String {
    format!(
        "format {CACHE_FORMAT}\npackages {}\nmodules {}\nkernel {kernel_package}\n",
        PACKAGES.join(" "),
        dom0::MODULES.join(" ")
    )
}

/// Returns the host cached in `work/cache`, fetching and unpacking the packages first unless a complete cache is
/// there. `progress` receives one line per step. Errors: see [`HostError`].
///
/// A new cache is filled in a private `cache.tmp-PID` directory and renamed into place, so a process that is
/// killed leaves no half-filled cache, and two processes filling it at once both end up with a complete one.
pub fn prepare(work: &Path, progress: &mut dyn FnMut(&str)) -> Result<XenHost, HostError> {
    let cache = work.join("cache");
    if let Some(host) = ready(&cache, work) {
        return Ok(host);
    }
    fs::create_dir_all(work).map_err(io_err("creating", work))?;
    remove_stale_tmp(work);
    let tmp = work.join(format!("cache.tmp-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_err("removing", &tmp))?;
    }
    fs::create_dir_all(&tmp).map_err(io_err("creating", &tmp))?;
    if let Err(e) = fill(&tmp, progress) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if cache.exists() {
        if let Some(host) = ready(&cache, work) {
            // Another process finished first.
            let _ = fs::remove_dir_all(&tmp);
            return Ok(host);
        }
        let old = work.join(format!("cache.old-{}", std::process::id()));
        fs::rename(&cache, &old).map_err(io_err("moving away the outdated", &cache))?;
        let _ = fs::remove_dir_all(&old);
    }
    if let Err(e) = fs::rename(&tmp, &cache) {
        let _ = fs::remove_dir_all(&tmp);
        return ready(&cache, work).ok_or(HostError::Io { what: "moving the new cache to", path: cache, source: e });
    }
    host_in(&cache, work)
}

/// The host in `cache` if its manifest matches this code's.
fn ready(cache: &Path, work: &Path) -> Option<XenHost> {
    let text = fs::read_to_string(cache.join("ready")).ok()?;
    let kernel = text.lines().find_map(|l| l.strip_prefix("kernel "))?;
    (text == manifest(kernel)).then(|| host_in(cache, work).ok()).flatten()
}

/// Removes `cache.tmp-PID` and `cache.old-PID` directories whose process is gone (killed while filling).
fn remove_stale_tmp(work: &Path) {
    let Ok(entries) = fs::read_dir(work) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name.strip_prefix("cache.tmp-").or_else(|| name.strip_prefix("cache.old-"));
        if let Some(pid) = pid {
            if !Path::new("/proc").join(pid).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Downloads and unpacks the packages into the empty directory `dir`, writes the host files and `ready`.
fn fill(dir: &Path, progress: &mut dyn FnMut(&str)) -> Result<(), HostError> {
    for tool in ["apt-get", "apt-cache", "dpkg"] {
        if crate::host_tools::find_in_path(tool).is_none() {
            return Err(HostError::NoApt(tool));
        }
    }
    let mut kernel = newest_kernel_package(progress)?;
    let debs = dir.join("debs");
    let root = dir.join("root");
    for d in [&debs, &root] {
        fs::create_dir_all(d).map_err(io_err("creating", d))?;
    }
    progress(&format!("downloading {} Debian packages and {kernel} into {}", PACKAGES.len(), debs.display()));
    let download = |kernel: &str| {
        let mut cmd = Command::new("apt-get");
        cmd.args(["download", "-q"]).args(PACKAGES).arg(kernel).current_dir(&debs);
        run(&mut cmd)
    };
    if let Err(e) = download(&kernel) {
        // Stale lists name versions the mirror no longer has: refresh them once.
        if !crate::host_tools::is_root() {
            return Err(e);
        }
        progress(&format!("{e}\nrunning apt-get update and trying again"));
        run(Command::new("apt-get").args(["update", "-q"]))?;
        kernel = newest_kernel_package(progress)?;
        download(&kernel)?;
    }
    let mut unpacked = 0;
    for entry in fs::read_dir(&debs).map_err(io_err("reading", &debs))? {
        let path = entry.map_err(io_err("reading", &debs))?.path();
        if path.extension().is_some_and(|e| e == "deb") {
            run(Command::new("dpkg").arg("-x").arg(&path).arg(&root))?;
            unpacked += 1;
        }
    }
    progress(&format!("unpacked {unpacked} packages"));
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
    // Everything needed is in the archive now; the unpacked tree is ~450 MB (the kernel's modules).
    fs::remove_dir_all(&root).map_err(io_err("removing", &root))?;
    let ready = dir.join("ready");
    fs::write(&ready, manifest(&kernel)).map_err(io_err("writing", &ready))
}

/// The host files of a complete cache in `dir`, whose runs go under `work`.
fn host_in(dir: &Path, work: &Path) -> Result<XenHost, HostError> {
    let release_file = dir.join("kernel-release");
    let kernel_release = fs::read_to_string(&release_file).map_err(io_err("reading", &release_file))?;
    let host = XenHost {
        dir: dir.to_path_buf(),
        work: work.to_path_buf(),
        xen: dir.join("xen.elf"),
        vmlinuz: dir.join("vmlinuz"),
        kernel_release: kernel_release.trim().to_owned(),
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
    if !crate::host_tools::is_root() {
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
    let command = crate::shell::shell_line(cmd);
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
        assert!(m.contains("\nmodules xen-privcmd xenfs "), "{m}");
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
