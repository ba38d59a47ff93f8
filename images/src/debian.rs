//! Debian bookworm packages for the nested hosts, fetched once into a cache: `apt-get download` of a package list
//! plus the newest `linux-image-6.1.0-N-amd64`, unpacked with `dpkg -x` into a scratch tree that a host module
//! turns into its files (kernel, initramfs archives); nothing is installed on the host.
//!
//! [`prepare`] fills a private `cache.tmp-PID` directory and renames it into place, so a process that is killed
//! leaves no half-filled cache and two processes filling it at once both end up with a complete one. A cache is
//! reused while its `ready` manifest (the caller's description of what it holds, plus the kernel package) is
//! unchanged. Used by [`crate::xen::host`] and [`crate::hyperv::host`].

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::initramfs::ArchiveError;

/// File in a cache directory holding the manifest of a complete cache.
pub const READY: &str = "ready";

/// File in a cache directory holding the kernel release, e.g. `6.1.0-56-amd64`.
pub const KERNEL_RELEASE: &str = "kernel-release";

/// File in a cache directory holding the kernel (`/boot/vmlinuz-RELEASE` of the kernel package).
pub const VMLINUZ: &str = "vmlinuz";

/// Failures while preparing a cache; each says what to run or install.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A tool of Debian's package manager is missing.
    #[error("`{0}` not found: the nested hosts download Debian bookworm packages with apt-get and dpkg; run on Debian bookworm")]
    NoApt(&'static str),
    /// Package lists are missing and this process may not update them.
    #[error("apt has no package lists with {0}; run `apt-get update` as root")]
    NoLists(String),
    /// No kernel package was found.
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
    /// Building an initramfs archive failed.
    #[error("building the initramfs: {0}")]
    Archive(#[from] ArchiveError),
}

/// `map_err` helper: an I/O error while doing `what` to `path`.
pub fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CacheError + 'a {
    move |source| CacheError::Io { what, path: path.to_path_buf(), source }
}

/// What a cache holds: the layout version, the packages besides the kernel, and the rest of the manifest (e.g. the
/// kernel modules) that decides whether an existing cache is still current.
#[derive(Clone, Copy, Debug)]
pub struct CacheSpec<'a> {
    /// Version of the cache's layout and contents; bumped when the code that builds them changes.
    pub format: u32,
    /// Debian packages to download besides the kernel; the first one is looked up to check apt has bookworm's
    /// lists.
    pub packages: &'a [&'a str],
    /// Further manifest lines, each ending in `\n`, e.g. `modules a b\n`.
    pub extra: &'a str,
}

impl CacheSpec<'_> {
    /// The manifest a complete cache holds in [`READY`] for kernel package `kernel_package`:
    /// `format N`, `packages ...`, the extra lines, `kernel NAME`.
    pub fn manifest(&self, kernel_package: &str) -> String {
        format!("format {}\npackages {}\n{}kernel {kernel_package}\n", self.format, self.packages.join(" "), self.extra)
    }
}

/// The packages as unpacked for the builder of a cache.
#[derive(Clone, Debug)]
pub struct Unpacked {
    /// The tree the packages were unpacked into (removed once the builder returns).
    pub root: PathBuf,
    /// The kernel release, e.g. `6.1.0-56-amd64` (its modules are in `root/lib/modules/RELEASE`).
    pub kernel_release: String,
}

/// Writes a host's files into a new cache directory from the unpacked packages; gets a progress callback.
pub type BuildFn<'a> = dyn FnMut(&Unpacked, &Path, &mut dyn FnMut(&str)) -> Result<(), CacheError> + 'a;

/// Returns `work/cache`, fetching and unpacking the packages of `spec` first unless a complete cache for it is
/// there; then `build` writes the host's files into the new cache directory from the unpacked tree (the kernel is
/// already [`VMLINUZ`], its release [`KERNEL_RELEASE`]). `progress` receives one line per step. Errors: see
/// [`CacheError`], and `build`'s.
pub fn prepare(
    work: &Path,
    spec: &CacheSpec<'_>,
    progress: &mut dyn FnMut(&str),
    build: &mut BuildFn<'_>,
) -> Result<PathBuf, CacheError> {
    let cache = work.join("cache");
    if is_ready(&cache, spec) {
        return Ok(cache);
    }
    fs::create_dir_all(work).map_err(io_err("creating", work))?;
    remove_stale_tmp(work);
    let tmp = work.join(format!("cache.tmp-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_err("removing", &tmp))?;
    }
    fs::create_dir_all(&tmp).map_err(io_err("creating", &tmp))?;
    if let Err(e) = fill(&tmp, spec, progress, build) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if cache.exists() {
        if is_ready(&cache, spec) {
            // Another process finished first.
            let _ = fs::remove_dir_all(&tmp);
            return Ok(cache);
        }
        let old = work.join(format!("cache.old-{}", std::process::id()));
        fs::rename(&cache, &old).map_err(io_err("moving away the outdated", &cache))?;
        let _ = fs::remove_dir_all(&old);
    }
    if let Err(e) = fs::rename(&tmp, &cache) {
        let _ = fs::remove_dir_all(&tmp);
        if !is_ready(&cache, spec) {
            return Err(CacheError::Io { what: "moving the new cache to", path: cache, source: e });
        }
    }
    Ok(cache)
}

/// Whether `cache` holds a complete cache for `spec`.
fn is_ready(cache: &Path, spec: &CacheSpec<'_>) -> bool {
    let Ok(text) = fs::read_to_string(cache.join(READY)) else { return false };
    text.lines().find_map(|l| l.strip_prefix("kernel ")).is_some_and(|kernel| text == spec.manifest(kernel))
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

/// Downloads and unpacks the packages into the empty directory `dir`, lets `build` write the host files, removes
/// the unpacked tree and writes [`READY`].
fn fill(
    dir: &Path,
    spec: &CacheSpec<'_>,
    progress: &mut dyn FnMut(&str),
    build: &mut BuildFn<'_>,
) -> Result<(), CacheError> {
    for tool in ["apt-get", "apt-cache", "dpkg"] {
        if crate::host_tools::find_in_path(tool).is_none() {
            return Err(CacheError::NoApt(tool));
        }
    }
    let mut kernel = newest_kernel_package(spec, progress)?;
    let debs = dir.join("debs");
    let root = dir.join("root");
    for d in [&debs, &root] {
        fs::create_dir_all(d).map_err(io_err("creating", d))?;
    }
    progress(&format!("downloading {} Debian packages and {kernel} into {}", spec.packages.len(), debs.display()));
    let download = |kernel: &str| {
        let mut cmd = Command::new("apt-get");
        cmd.args(["download", "-q"]).args(spec.packages).arg(kernel).current_dir(&debs);
        run(&mut cmd)
    };
    if let Err(e) = download(&kernel) {
        // Stale lists name versions the mirror no longer has: refresh them once.
        if !crate::host_tools::is_root() {
            return Err(e);
        }
        progress(&format!("{e}\nrunning apt-get update and trying again"));
        run(Command::new("apt-get").args(["update", "-q"]))?;
        kernel = newest_kernel_package(spec, progress)?;
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
    let release = kernel_release(&root, dir)?;
    let vmlinuz = root.join(format!("boot/vmlinuz-{release}"));
    fs::copy(&vmlinuz, dir.join(VMLINUZ)).map_err(io_err("copying", &vmlinuz))?;
    fs::write(dir.join(KERNEL_RELEASE), &release).map_err(io_err("writing", dir))?;
    build(&Unpacked { root: root.clone(), kernel_release: release }, dir, progress)?;
    // Everything needed is out of the tree now; it is hundreds of MB (the kernel's modules).
    fs::remove_dir_all(&root).map_err(io_err("removing", &root))?;
    fs::remove_dir_all(&debs).map_err(io_err("removing", &debs))?;
    let ready = dir.join(READY);
    fs::write(&ready, spec.manifest(&kernel)).map_err(io_err("writing", &ready))
}

/// The kernel release of a complete cache `dir`. Errors: the file is missing.
pub fn cached_kernel_release(dir: &Path) -> Result<String, CacheError> {
    let file = dir.join(KERNEL_RELEASE);
    Ok(fs::read_to_string(&file).map_err(io_err("reading", &file))?.trim().to_owned())
}

/// Checks that each of `files` exists in the cache `dir`. Errors: [`CacheError::Missing`] naming the first missing
/// one and the directory to delete.
pub fn check_files(dir: &Path, files: &[&Path]) -> Result<(), CacheError> {
    match files.iter().find(|f| !f.is_file()) {
        Some(f) => Err(CacheError::Missing(f.to_path_buf(), dir.to_path_buf())),
        None => Ok(()),
    }
}

/// The one kernel release under `root/lib/modules`.
fn kernel_release(root: &Path, dir: &Path) -> Result<String, CacheError> {
    let modules = root.join("lib/modules");
    let mut names = Vec::new();
    for entry in fs::read_dir(&modules).map_err(io_err("reading", &modules))? {
        names.push(entry.map_err(io_err("reading", &modules))?.file_name().to_string_lossy().into_owned());
    }
    match names.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(CacheError::Missing(modules.join("<one kernel release>"), dir.to_path_buf())),
    }
}

/// The newest `linux-image-6.1.0-N-amd64` package known to apt (its modules must match the vmlinuz, so the
/// kernel comes from the archive as a unit). Runs `apt-get update` once when root and apt lacks the lists (no
/// kernel, or no first package of `spec`).
fn newest_kernel_package(spec: &CacheSpec<'_>, progress: &mut dyn FnMut(&str)) -> Result<String, CacheError> {
    let search = || {
        let mut cmd = Command::new("apt-cache");
        cmd.args(["search", "--names-only", r"^linux-image-6\.1\.0-[0-9]+-amd64$"]);
        run(&mut cmd).map(|out| pick_kernel(&out))
    };
    let first = spec.packages.first().copied().unwrap_or("busybox-static");
    let has_first = || run(Command::new("apt-cache").args(["show", first])).is_ok();
    if let (Some(kernel), true) = (search()?, has_first()) {
        return Ok(kernel);
    }
    if !crate::host_tools::is_root() {
        return Err(CacheError::NoLists(format!("{first} and linux-image-6.1.0-*-amd64")));
    }
    progress(&format!("apt has no lists with {first}: running apt-get update"));
    run(Command::new("apt-get").args(["update", "-q"]))?;
    match (search()?, has_first()) {
        (Some(kernel), true) => Ok(kernel),
        (None, _) => Err(CacheError::NoKernel),
        (Some(_), false) => Err(CacheError::NoLists(first.to_owned())),
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
pub fn run(cmd: &mut Command) -> Result<String, CacheError> {
    let command = crate::shell::shell_line(cmd);
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| CacheError::Command {
        command: command.clone(),
        status: e.to_string(),
        stderr: String::new(),
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
        let stderr = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
        return Err(CacheError::Command { command, status: out.status.to_string(), stderr });
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
    fn manifest_and_readiness() {
        let spec = CacheSpec { format: 1, packages: &["busybox-static", "libc6"], extra: "modules kvm\n" };
        let m = spec.manifest("linux-image-6.1.0-56-amd64");
        assert_eq!(m, "format 1\npackages busybox-static libc6\nmodules kvm\nkernel linux-image-6.1.0-56-amd64\n");
        let dir = std::env::temp_dir().join(format!("images-debian-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        assert!(!is_ready(&dir, &spec), "no manifest");
        fs::write(dir.join(READY), &m).unwrap();
        assert!(is_ready(&dir, &spec));
        let newer = CacheSpec { format: 2, ..spec };
        assert!(!is_ready(&dir, &newer), "another format is another cache");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_files_are_named_with_the_cache() {
        let dir = std::env::temp_dir().join(format!("images-debian-files-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("a"), b"x").unwrap();
        assert!(check_files(&dir, &[&dir.join("a")]).is_ok());
        match check_files(&dir, &[&dir.join("a"), &dir.join("b")]) {
            Err(CacheError::Missing(f, d)) => assert_eq!((f, d.clone()), (dir.join("b"), dir.clone())),
            other => panic!("{other:?}"),
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
