//! The programs and files `images` and the tests use on the host (QEMU, `qemu-img`, `fsck.fat`, GRUB's images
//! and `grub-mkimage`, OVMF, curl, wrk, gdb), the Debian bookworm packages that provide them, and installing the
//! missing ones.
//!
//! [`ensure`] is the one entry point (`images run`, `images setup`, the VM test harness before its first VM): it
//! looks for each tool on `PATH`, then in the sbin directories a non-root `PATH` lacks, and when some are missing
//! it installs their packages with apt-get if this process is root, one installer at a time on the machine
//! (a lock file, [`lock_path`]); otherwise it fails with one shell command that installs them all. Setting
//! [`NO_INSTALL_ENV`] turns installing off. QEMU comes from bookworm-backports (TESTING.md, "QEMU"): bookworm's
//! own qemu-system-x86 7.2 conflicts with the backports qemu-utils 10 these machines have.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// Where a tool's Debian package is installed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suite {
    /// The machine's own suite (bookworm).
    Default,
    /// `bookworm-backports`, added as an apt source first ([`BACKPORTS_SOURCE_STEP`]).
    Backports,
}

/// A program run on the host (or a file a program reads, by absolute path) and the Debian package that provides
/// it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostTool {
    /// The executable's file name, e.g. `fsck.fat`, or an absolute file path such as GRUB's
    /// `/usr/lib/grub/i386-pc/boot.img`.
    pub program: &'static str,
    /// The Debian package, e.g. `dosfstools`.
    pub package: &'static str,
    /// The suite the package is installed from.
    pub suite: Suite,
    /// What runs it, for messages.
    pub used_for: &'static str,
}

/// QEMU 10 (`qemu-system-x86_64`): boots the images, and the nested Xen host.
pub const QEMU: HostTool = HostTool {
    program: "qemu-system-x86_64",
    package: "qemu-system-x86",
    suite: Suite::Backports,
    used_for: "boots the images",
};

/// `fsck.fat` (dosfstools): checks the FAT disk images the storage and xen tests leave behind.
pub const FSCK_FAT: HostTool = HostTool {
    program: "fsck.fat",
    package: "dosfstools",
    suite: Suite::Default,
    used_for: "checks the FAT disks the tests write",
};

/// curl: the HTTP client of the README's examples and of `tests/bench`.
pub const CURL: HostTool =
    HostTool { program: "curl", package: "curl", suite: Suite::Default, used_for: "HTTP client of the benchmarks" };

/// wrk: the HTTP load generator of `tests/bench`.
pub const WRK: HostTool =
    HostTool { program: "wrk", package: "wrk", suite: Suite::Default, used_for: "HTTP load of the benchmarks" };

/// `qemu-img`: converts the raw disk to qcow2, VHD, VHDX and VMDK, and reads images for `inspect` and `run`. From
/// backports, to match QEMU 10.
pub const QEMU_IMG: HostTool = HostTool {
    program: "qemu-img",
    package: "qemu-utils",
    suite: Suite::Backports,
    used_for: "converts and reads disk images",
};

/// GNU `tar` (with gzip): writes the sparse GCE image archive.
pub const TAR: HostTool =
    HostTool { program: "tar", package: "tar", suite: Suite::Default, used_for: "writes the GCE image archive" };

/// `grub-mkimage`: builds GRUB's BIOS core image and EFI application for `images package`.
pub const GRUB_MKIMAGE: HostTool = HostTool {
    program: "grub-mkimage",
    package: "grub-common",
    suite: Suite::Default,
    used_for: "builds the GRUB boot images",
};

/// GRUB's i386-pc (BIOS) modules, `boot.img` and `diskboot.img`.
pub const GRUB_PC: HostTool = HostTool {
    program: "/usr/lib/grub/i386-pc/boot.img",
    package: "grub-pc-bin",
    suite: Suite::Default,
    used_for: "BIOS boot of packaged disks",
};

/// GRUB's x86_64-efi modules.
pub const GRUB_EFI: HostTool = HostTool {
    program: "/usr/lib/grub/x86_64-efi/multiboot2.mod",
    package: "grub-efi-amd64-bin",
    suite: Suite::Default,
    used_for: "UEFI boot of packaged disks",
};

/// OVMF's code image (read-only pflash) for UEFI boots under QEMU.
pub const OVMF_CODE: HostTool = HostTool {
    program: "/usr/share/OVMF/OVMF_CODE_4M.fd",
    package: "ovmf",
    suite: Suite::Default,
    used_for: "boots disks through UEFI",
};

/// OVMF's variable store template, copied per run (writable pflash).
pub const OVMF_VARS: HostTool = HostTool {
    program: "/usr/share/OVMF/OVMF_VARS_4M.fd",
    package: "ovmf",
    suite: Suite::Default,
    used_for: "boots disks through UEFI",
};

/// gdb: attaches to QEMU's gdb stub (`run --gdb`); the `cargo_zirvium` test drives it in batch mode.
pub const GDB: HostTool = HostTool {
    program: "gdb",
    package: "gdb",
    suite: Suite::Default,
    used_for: "debugs images through QEMU's gdb stub",
};

/// What `cargo test --workspace` runs on the host; the VM harness ensures these before its first VM.
pub const TEST_TOOLS: [HostTool; 7] = [QEMU, FSCK_FAT, QEMU_IMG, GRUB_MKIMAGE, GRUB_PC, GRUB_EFI, OVMF_CODE];

/// Everything: the tests, the benchmarks and the README's examples (`images setup`, `.ci/run`).
pub const ALL_TOOLS: [HostTool; 10] =
    [QEMU, FSCK_FAT, QEMU_IMG, GRUB_MKIMAGE, GRUB_PC, GRUB_EFI, OVMF_CODE, CURL, WRK, GDB];

/// Environment variable that, set to anything but empty or `0`, makes [`ensure`] report missing tools with the
/// install command instead of installing them, also as root.
pub const NO_INSTALL_ENV: &str = "ZIRVIUM_NO_INSTALL";

/// Searched after `PATH`: Debian installs administration tools such as `fsck.fat` in sbin, which a non-root
/// user's `PATH` does not contain.
const SBIN_DIRS: [&str; 3] = ["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// Shell step adding bookworm-backports as an apt source: the first stanza of the machine's own
/// `debian.sources` (deb822) with the suite replaced (TESTING.md, "QEMU").
pub const BACKPORTS_SOURCE_STEP: &str = "awk 'NF==0{exit} {print}' /etc/apt/sources.list.d/debian.sources \
     | sed 's/^Suites:.*/Suites: bookworm-backports/' > /etc/apt/sources.list.d/backports.sources";

/// The backports suite's name, for `apt-get install -t`.
const BACKPORTS: &str = "bookworm-backports";

/// How long [`ensure`] waits for another process that holds the install lock: a QEMU install with its
/// dependencies takes a few minutes on a slow mirror.
const LOCK_WAIT: Duration = Duration::from_secs(20 * 60);

/// A lock file without a pid yet is stale once it is this old (its creator died between creating and writing).
const LOCK_NO_PID_STALE: Duration = Duration::from_secs(30);

impl HostTool {
    /// The executable: on `PATH`, else in `/usr/local/sbin`, `/usr/sbin`, `/sbin`; for an absolute path, the
    /// file if it exists; `None` when not installed.
    pub fn find(&self) -> Option<PathBuf> {
        if self.program.starts_with('/') {
            return Some(PathBuf::from(self.program)).filter(|p| p.is_file());
        }
        find_in_path(self.program)
            .or_else(|| SBIN_DIRS.iter().map(|dir| Path::new(dir).join(self.program)).find(|p| is_executable(p)))
    }

    /// [`HostTool::find`], or an error naming the Debian package. Errors: [`MissingTool`].
    pub fn require(&self) -> Result<PathBuf, MissingTool> {
        self.find().ok_or(MissingTool { tool: *self })
    }

    /// The directory holding the tool's file (e.g. GRUB's module directory for [`GRUB_PC`]). Errors:
    /// [`MissingTool`].
    pub fn dir(&self) -> Result<PathBuf, MissingTool> {
        let p = self.require()?;
        Ok(p.parent().map(Path::to_owned).unwrap_or(p))
    }

    /// Runs the tool with `args` (stdin from `/dev/null`) and returns its stdout. Errors: [`ToolError`] (missing
    /// tool naming the package, spawn failure, non-zero exit with its stderr).
    pub fn run<I, S>(&self, args: I) -> Result<Vec<u8>, ToolError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(self.require()?);
        cmd.args(args).stdin(Stdio::null());
        let command = crate::shell::shell_line(&cmd);
        let out = cmd.output().map_err(|source| ToolError::Spawn { command: command.clone(), source })?;
        if !out.status.success() {
            return Err(ToolError::Failed {
                command,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(out.stdout)
    }

    /// A `Command` running the tool found by [`HostTool::find`], or the bare program name when it is not
    /// installed (spawning then fails with "not found").
    pub fn command(&self) -> Command {
        Command::new(self.find().unwrap_or_else(|| PathBuf::from(self.program)))
    }

    /// `fsck.fat (Debian package dosfstools: checks ...)`, with `from bookworm-backports` for backports packages.
    pub fn describe(&self) -> String {
        let from = if self.suite == Suite::Backports { format!(" from {BACKPORTS}") } else { String::new() };
        format!("{} (Debian package {}{from}: {})", self.program, self.package, self.used_for)
    }
}

/// A host tool or file is missing; the message names the Debian package and the one command that installs it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} not found: install it with `{}`", tool.describe(), install_command(&[*tool], is_root()))]
pub struct MissingTool {
    /// The tool.
    pub tool: HostTool,
}

/// A host tool could not be run or exited unsuccessfully.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The tool is not installed; the message names the package.
    #[error(transparent)]
    Missing(#[from] MissingTool),
    /// Starting it failed.
    #[error("could not run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: io::Error,
    },
    /// It ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// Its stderr, trimmed.
        stderr: String,
    },
}

/// Finds `name` as an executable file in a directory of `PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| is_executable(p))
}

/// Whether `path` is a regular file with an execute bit.
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// True when this process runs as root (owner of `/proc/self` is the effective uid).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    Path::new("/proc/self").metadata().map(|m| m.uid() == 0).unwrap_or(false)
}

/// The shell steps, run as root in order, that install the packages of `tools`: the backports source if a
/// package comes from there, `apt-get update`, then one `apt-get install -y` per suite (`-t bookworm-backports`
/// so the backports package's dependencies come from backports too). Each package is named once.
pub fn install_steps(tools: &[HostTool]) -> Vec<String> {
    let packages = |suite| {
        let mut names: Vec<&str> = Vec::new();
        for tool in tools.iter().filter(|t| t.suite == suite) {
            if !names.contains(&tool.package) {
                names.push(tool.package);
            }
        }
        names.join(" ")
    };
    let (backports, default) = (packages(Suite::Backports), packages(Suite::Default));
    let mut steps = Vec::new();
    if !backports.is_empty() {
        steps.push(BACKPORTS_SOURCE_STEP.to_owned());
    }
    steps.push("apt-get update".to_owned());
    if !backports.is_empty() {
        steps.push(format!("apt-get install -y -t {BACKPORTS} {backports}"));
    }
    if !default.is_empty() {
        steps.push(format!("apt-get install -y {default}"));
    }
    steps
}

/// The one command a person runs to install `tools`: [`install_steps`] joined with `&&`, inside
/// `sudo sh -c "..."` unless `root`. The steps hold no `"`, `$`, `` ` `` or `\`, so double quotes carry them.
pub fn install_command(tools: &[HostTool], root: bool) -> String {
    let line = install_steps(tools).join(" && ");
    if root {
        line
    } else {
        format!("sudo sh -c \"{line}\"")
    }
}

/// `a (…), b (…)`: the tools with their packages, for messages.
fn describe_all(tools: &[HostTool]) -> String {
    tools.iter().map(HostTool::describe).collect::<Vec<_>>().join(", ")
}

/// Failures of [`ensure`]; each message has the command that installs what is missing.
#[derive(Debug, thiserror::Error)]
pub enum HostToolsError {
    /// Tools are missing and this process does not install them.
    #[error("missing on this host: {}; {why}, so install them with:\n  {command}", describe_all(.tools))]
    Missing {
        /// The missing tools.
        tools: Vec<HostTool>,
        /// Why they are not installed automatically (not root, no apt-get, [`NO_INSTALL_ENV`] set).
        why: String,
        /// The one command that installs them.
        command: String,
    },
    /// An install step failed.
    #[error("installing {} failed at `{step}` ({status}); install them by hand with:\n  {command}", describe_all(.tools))]
    InstallFailed {
        /// The tools being installed.
        tools: Vec<HostTool>,
        /// The step that failed.
        step: String,
        /// Its exit status, or why it did not start.
        status: String,
        /// The one command that installs them.
        command: String,
    },
    /// apt-get succeeded and the programs are still not found.
    #[error("installed the packages but still cannot find {}; is this Debian bookworm?", describe_all(.0))]
    StillMissing(Vec<HostTool>),
    /// The install lock file could not be created or read.
    #[error("install lock {}: {source}", .path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Another process held the install lock for longer than this one waits.
    #[error("process {pid} held the install lock {} for {} s; once no apt-get runs, delete the file and retry", .path.display(), LOCK_WAIT.as_secs())]
    LockTimeout {
        /// The lock file.
        path: PathBuf,
        /// Its holder.
        pid: u32,
    },
}

/// The machine [`ensure_on`] looks at and installs on: [`ThisHost`] for real; the tests use a recording fake.
pub trait Host {
    /// Whether `tool` is installed.
    fn has(&self, tool: &HostTool) -> bool;
    /// Whether this process runs as root (the install command then needs no `sudo`).
    fn is_root(&self) -> bool;
    /// Why this process may not install packages, or `None` when it may.
    fn cannot_install(&self) -> Option<String>;
    /// Runs one install step (a shell command line). Errors: its exit status, or why it did not start.
    fn run_step(&mut self, step: &str) -> Result<(), String>;
}

/// This machine: tools found with [`HostTool::find`], steps run with `sh -c` (apt-get's output to stderr).
#[derive(Clone, Debug)]
pub struct ThisHost {
    root: bool,
    no_install: bool,
    apt_get: bool,
}

impl ThisHost {
    /// Reads root-ness, [`NO_INSTALL_ENV`] and whether `apt-get` is on `PATH`.
    pub fn from_env() -> ThisHost {
        let no_install = std::env::var_os(NO_INSTALL_ENV).is_some_and(|v| !v.is_empty() && v != "0");
        ThisHost { root: is_root(), no_install, apt_get: find_in_path("apt-get").is_some() }
    }
}

impl Host for ThisHost {
    fn has(&self, tool: &HostTool) -> bool {
        tool.find().is_some()
    }

    fn is_root(&self) -> bool {
        self.root
    }

    fn cannot_install(&self) -> Option<String> {
        if self.no_install {
            Some(format!("{NO_INSTALL_ENV} is set"))
        } else if !self.root {
            Some("this process is not root".to_owned())
        } else if !self.apt_get {
            Some("apt-get is not on PATH (the packages are Debian's)".to_owned())
        } else {
            None
        }
    }

    fn run_step(&mut self, step: &str) -> Result<(), String> {
        let status = Command::new("sh")
            .args(["-c", step])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            // apt's progress goes to stderr: stdout is the guest's console in `images run`.
            .stdout(io::stderr())
            .status()
            .map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(status.to_string())
        }
    }
}

/// The tools of `tools` that `host` lacks, in order.
pub fn missing(host: &dyn Host, tools: &[HostTool]) -> Vec<HostTool> {
    tools.iter().copied().filter(|t| !host.has(t)).collect()
}

/// Makes sure `tools` are installed on `host`: nothing when they are; else installs their packages
/// ([`install_steps`], each announced through `progress`) when `host` may, and checks again; else
/// [`HostToolsError::Missing`] with the one command to run. The caller serialises installers ([`ensure`] holds
/// the lock file).
pub fn ensure_on(
    host: &mut dyn Host,
    tools: &[HostTool],
    progress: &mut dyn FnMut(&str),
) -> Result<(), HostToolsError> {
    let missing_now = missing(host, tools);
    if missing_now.is_empty() {
        return Ok(());
    }
    let command = install_command(&missing_now, host.is_root());
    if let Some(why) = host.cannot_install() {
        return Err(HostToolsError::Missing { tools: missing_now, why, command });
    }
    progress(&format!("missing {}; installing with apt-get:", describe_all(&missing_now)));
    for step in install_steps(&missing_now) {
        progress(&format!("# {step}"));
        if let Err(status) = host.run_step(&step) {
            return Err(HostToolsError::InstallFailed { tools: missing_now, step, status, command });
        }
    }
    let still = missing(host, tools);
    if still.is_empty() {
        Ok(())
    } else {
        Err(HostToolsError::StillMissing(still))
    }
}

/// [`ensure_on`] this machine ([`ThisHost`]): returns at once when `tools` are installed, else installs them
/// (as root, holding the lock file [`lock_path`] so parallel test binaries and `images` runs do not race apt and
/// dpkg) or fails with the command to run. `progress` gets one line per step and while waiting for the lock.
pub fn ensure(tools: &[HostTool], progress: &mut dyn FnMut(&str)) -> Result<(), HostToolsError> {
    let mut host = ThisHost::from_env();
    if missing(&host, tools).is_empty() {
        return Ok(());
    }
    let _lock = match host.cannot_install() {
        None => Some(InstallLock::acquire(&lock_path(), progress)?),
        Some(_) => None,
    };
    // Checks again under the lock: the holder before us may have installed them.
    ensure_on(&mut host, tools, progress)
}

/// The install lock file: `/run/lock/zirvium-host-tools.lock` (root only writes there; cleared at boot), or the
/// temporary directory's when there is no `/run/lock`.
pub fn lock_path() -> PathBuf {
    let dir = Path::new("/run/lock");
    let dir = if dir.is_dir() { dir.to_path_buf() } else { std::env::temp_dir() };
    dir.join("zirvium-host-tools.lock")
}

/// Held while this process installs: a file created exclusively (`O_EXCL`) that holds the owner's pid, removed
/// on drop. A file whose pid has no `/proc` entry is stale (its owner was killed) and is removed.
#[derive(Debug)]
pub struct InstallLock {
    path: PathBuf,
}

impl InstallLock {
    /// Takes the lock at `path`, waiting up to `LOCK_WAIT` (20 min) for a live holder (said once through `progress`).
    /// Errors: the file cannot be created or read, or the holder kept it too long.
    pub fn acquire(path: &Path, progress: &mut dyn FnMut(&str)) -> Result<InstallLock, HostToolsError> {
        let lock_err = |source| HostToolsError::Lock { path: path.to_path_buf(), source };
        let deadline = Instant::now() + LOCK_WAIT;
        let mut told = false;
        loop {
            match OpenOptions::new().write(true).create_new(true).open(path) {
                Ok(mut file) => {
                    let lock = InstallLock { path: path.to_path_buf() };
                    write!(file, "{}", std::process::id()).map_err(lock_err)?;
                    return Ok(lock);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(lock_err(e)),
            }
            let holder = match fs::read_to_string(path) {
                Ok(text) => text.trim().parse::<u32>().ok(),
                // Released between our create and read: try again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(lock_err(e)),
            };
            let stale = match holder {
                Some(pid) => !Path::new("/proc").join(pid.to_string()).exists(),
                None => fs::metadata(path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| SystemTime::now().duration_since(t).unwrap_or_default() > LOCK_NO_PID_STALE),
            };
            if stale {
                let _ = fs::remove_file(path);
                continue;
            }
            let pid = holder.unwrap_or(0);
            if Instant::now() >= deadline {
                return Err(HostToolsError::LockTimeout { path: path.to_path_buf(), pid });
            }
            if !told {
                progress(&format!("waiting for process {pid}, which installs host tools (lock {})", path.display()));
                told = true;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for InstallLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A machine with the tools in `installed`; each step run is recorded, and a successful
    /// `apt-get install` installs the tools whose package it names.
    struct FakeHost {
        installed: Vec<&'static str>,
        root: bool,
        cannot: Option<&'static str>,
        fail_step: Option<&'static str>,
        steps: Vec<String>,
    }

    impl FakeHost {
        fn new(installed: &[&'static str]) -> FakeHost {
            FakeHost { installed: installed.to_vec(), root: true, cannot: None, fail_step: None, steps: Vec::new() }
        }
    }

    impl Host for FakeHost {
        fn has(&self, tool: &HostTool) -> bool {
            self.installed.contains(&tool.program)
        }
        fn is_root(&self) -> bool {
            self.root
        }
        fn cannot_install(&self) -> Option<String> {
            self.cannot.map(str::to_owned)
        }
        fn run_step(&mut self, step: &str) -> Result<(), String> {
            self.steps.push(step.to_owned());
            if self.fail_step.is_some_and(|f| step.starts_with(f)) {
                return Err("exit status: 100".to_owned());
            }
            if let Some(packages) = step.strip_prefix("apt-get install -y ") {
                for tool in ALL_TOOLS.iter().filter(|t| packages.split(' ').any(|p| p == t.package)) {
                    self.installed.push(tool.program);
                }
            }
            Ok(())
        }
    }

    fn ensure_fake(host: &mut FakeHost, tools: &[HostTool]) -> (Result<(), HostToolsError>, Vec<String>) {
        let mut said = Vec::new();
        let result = ensure_on(host, tools, &mut |m| said.push(m.to_owned()));
        (result, said)
    }

    #[test]
    fn nothing_to_do_when_installed() {
        let mut host = FakeHost::new(&["qemu-system-x86_64", "fsck.fat"]);
        host.cannot = Some("this process is not root");
        let (result, said) = ensure_fake(&mut host, &[QEMU, FSCK_FAT]);
        assert!(result.is_ok());
        assert!(said.is_empty() && host.steps.is_empty());
    }

    #[test]
    fn not_root_gets_one_sudo_command() {
        let mut host = FakeHost::new(&["qemu-system-x86_64"]);
        host.root = false;
        host.cannot = Some("this process is not root");
        let (result, _) = ensure_fake(&mut host, &[QEMU, FSCK_FAT]);
        let err = result.unwrap_err();
        assert_eq!(
            err.to_string(),
            "missing on this host: fsck.fat (Debian package dosfstools: checks the FAT disks the tests write); \
             this process is not root, so install them with:\n  \
             sudo sh -c \"apt-get update && apt-get install -y dosfstools\""
        );
        assert!(host.steps.is_empty(), "nothing may run without root: {:?}", host.steps);
    }

    #[test]
    fn qemu_comes_from_backports() {
        let steps = install_steps(&[QEMU, FSCK_FAT, QEMU]);
        assert_eq!(
            steps,
            [
                BACKPORTS_SOURCE_STEP,
                "apt-get update",
                "apt-get install -y -t bookworm-backports qemu-system-x86",
                "apt-get install -y dosfstools",
            ]
        );
        assert_eq!(install_steps(&[CURL, WRK, CURL]), ["apt-get update", "apt-get install -y curl wrk"]);
        // The root form runs as is in a shell; the sudo form carries the steps in double quotes.
        let root = install_command(&[QEMU], true);
        assert!(
            root.starts_with("awk 'NF==0{exit} {print}' ")
                && root.ends_with("&& apt-get update && apt-get install -y -t bookworm-backports qemu-system-x86"),
            "{root}"
        );
        for step in install_steps(&ALL_TOOLS) {
            assert!(!step.contains(['"', '$', '`', '\\']), "{step}");
        }
    }

    #[test]
    fn root_installs_what_is_missing() {
        let mut host = FakeHost::new(&["fsck.fat"]);
        let (result, said) = ensure_fake(&mut host, &[QEMU, FSCK_FAT]);
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(host.steps, install_steps(&[QEMU]));
        assert!(
            said[0].starts_with("missing qemu-system-x86_64 (Debian package qemu-system-x86 from bookworm-backports")
        );
        assert_eq!(said[1..], host.steps.iter().map(|s| format!("# {s}")).collect::<Vec<_>>());
    }

    #[test]
    fn no_install_env_reports_the_root_command() {
        let mut host = FakeHost::new(&[]);
        host.cannot = Some("ZIRVIUM_NO_INSTALL is set");
        match ensure_fake(&mut host, &[FSCK_FAT]).0 {
            Err(HostToolsError::Missing { tools, why, command }) => {
                assert_eq!((tools, why.as_str()), (vec![FSCK_FAT], "ZIRVIUM_NO_INSTALL is set"));
                assert_eq!(command, "apt-get update && apt-get install -y dosfstools");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn failed_step_and_still_missing() {
        let mut host = FakeHost::new(&[]);
        host.fail_step = Some("apt-get install -y dosfstools");
        match ensure_fake(&mut host, &[FSCK_FAT]).0 {
            Err(HostToolsError::InstallFailed { step, status, command, .. }) => {
                assert_eq!((step.as_str(), status.as_str()), ("apt-get install -y dosfstools", "exit status: 100"));
                assert_eq!(command, install_command(&[FSCK_FAT], true));
            }
            other => panic!("{other:?}"),
        }
        // apt-get "succeeds" without providing the program.
        let mut host = FakeHost::new(&[]);
        let odd = HostTool { program: "odd", package: "oddpkg", suite: Suite::Default, used_for: "nothing" };
        assert!(matches!(ensure_fake(&mut host, &[odd]).0, Err(HostToolsError::StillMissing(t)) if t == [odd]));
    }

    #[test]
    fn finds_sbin_tools_and_on_path() {
        // `sh` is on every PATH; the sbin fallback is only consulted when PATH has nothing.
        let sh = HostTool { program: "sh", package: "dash", suite: Suite::Default, used_for: "test" };
        assert!(sh.find().is_some());
        let none = HostTool { program: "zirvium-no-such-tool", package: "x", suite: Suite::Default, used_for: "x" };
        assert_eq!(none.find(), None);
        assert_eq!(none.command().get_program(), "zirvium-no-such-tool");
    }

    #[test]
    fn lock_is_exclusive_and_stale_locks_are_taken_over() {
        let dir = std::env::temp_dir().join(format!("images-lock-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.lock");
        let quiet = &mut |_: &str| {};
        let held = InstallLock::acquire(&path, quiet).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), std::process::id().to_string());
        drop(held);
        assert!(!path.exists());
        // A pid with no /proc entry (above any pid_max): stale, taken over at once.
        fs::write(&path, "4294967295").unwrap();
        let taken = InstallLock::acquire(&path, quiet).unwrap();
        drop(taken);
        // A live holder (this process) is waited for: another thread gets it once released.
        let held = InstallLock::acquire(&path, quiet).unwrap();
        let p = path.clone();
        let waiter = std::thread::spawn(move || {
            let mut said = Vec::new();
            let lock = InstallLock::acquire(&p, &mut |m| said.push(m.to_owned()));
            (lock.map(drop).is_ok(), said)
        });
        std::thread::sleep(Duration::from_millis(300));
        drop(held);
        let (ok, said) = waiter.join().unwrap();
        assert!(ok);
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0].starts_with(&format!("waiting for process {}", std::process::id())), "{said:?}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
