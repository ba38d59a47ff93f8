//! Building app images: `cargo build -p <app> --target x86_64-unknown-none` in the workspace root, and the rustup
//! target check before it. The ELF path comes from cargo's JSON messages (cargo book, "External tools", JSON
//! messages: `compiler-artifact` with `executable`), so a custom target directory works.
//!
//! Kernel crates and host crates are never built in one cargo invocation: they need different targets.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::host_tools::find_in_path;
use crate::shell::shell_line;

/// The bare-metal target all kernel crates and apps build for.
pub const KERNEL_TARGET: &str = "x86_64-unknown-none";

/// Cargo profile of an image build.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Profile {
    /// `--release` (`opt-level = "s"`, LTO): what `images run` and the tests boot.
    #[default]
    Release,
    /// The dev profile (`images build --debug`).
    Debug,
}

impl Profile {
    /// The profile's directory name under `target/x86_64-unknown-none/`: `release` or `debug`.
    pub fn dir_name(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Debug => "debug",
        }
    }
}

/// A built app image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// Package name, e.g. `hello`.
    pub app: String,
    /// Absolute path of the ELF to boot: the linked one without its symbol table (`APP.elf` beside it, see
    /// [`crate::strip`]).
    pub path: PathBuf,
    /// File size in bytes.
    pub size: u64,
    /// The ELF as linked, with symbols: for `addr2line` on a backtrace and the size report.
    pub symbols: PathBuf,
}

impl Image {
    /// `PATH (N bytes, M.M KiB)`, as `images build` prints it.
    pub fn summary(&self) -> String {
        format!("{} ({} bytes, {:.1} KiB)", self.path.display(), self.size, self.size as f64 / 1024.0)
    }
}

/// Errors of an image build; each message says what to run or fix.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The app name cannot be a cargo package name.
    #[error("app name `{0}`: expected a package name of letters, digits, `-` and `_`, not starting with `-` (an apps/<name> crate)")]
    AppName(String),
    /// The rust target is missing and rustup is not there to add it.
    #[error("the Rust target {KERNEL_TARGET} is not installed and rustup was not found; install rustup, then run: rustup target add {KERNEL_TARGET}")]
    TargetMissing,
    /// A tool (cargo, rustup, rustc) could not be started.
    #[error("could not run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// A tool ran and failed.
    #[error("`{command}` failed ({status}){}", if .detail.is_empty() { String::new() } else { format!(": {}", .detail) })]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Its stderr, if captured.
        detail: String,
    },
    /// cargo succeeded but reported no executable for the app.
    #[error("`{command}` reported no executable for `{app}`; is apps/{app} a binary crate?")]
    NoExecutable {
        /// The command line.
        command: String,
        /// The app.
        app: String,
    },
    /// The ELF cargo named cannot be read, or the boot image not written.
    #[error("built image {path}: {source}")]
    Image {
        /// The ELF path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The linked ELF cannot be stripped of its symbols.
    #[error("built image {path}: {error}")]
    Strip {
        /// The ELF path.
        path: PathBuf,
        /// Why.
        error: crate::strip::StripError,
    },
}

/// The workspace root: the parent of this crate's directory (`images/..`), fixed at compile time.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// The target directory: `$CARGO_TARGET_DIR` if set, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// `cargo` as the caller's cargo runs it: `$CARGO` (set by `cargo run`/`cargo test`) or `cargo` on `PATH`.
pub fn cargo_command() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Checks that `app` can be a package name: non-empty ASCII letters, digits, `-`, `_`, not starting with `-`
/// (cargo would read it as an option).
pub fn check_app_name(app: &str) -> Result<(), BuildError> {
    let chars_ok = app.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !app.is_empty() && !app.starts_with('-') && chars_ok {
        Ok(())
    } else {
        Err(BuildError::AppName(app.to_owned()))
    }
}

/// Makes sure the rust target [`KERNEL_TARGET`] is installed for the workspace's toolchain.
///
/// With rustup: reads `rustup target list --installed` (in the workspace root, so `rust-toolchain.toml` applies)
/// and runs `rustup target add` when missing, saying so on stderr. Without rustup: looks for the target in
/// `rustc --print sysroot`, else [`BuildError::TargetMissing`].
pub fn ensure_target() -> Result<(), BuildError> {
    if find_in_path("rustup").is_some() {
        let out = run_captured(Command::new("rustup").args(["target", "list", "--installed"]))?;
        if out.lines().any(|l| l.trim() == KERNEL_TARGET) {
            return Ok(());
        }
        eprintln!("images: rust target {KERNEL_TARGET} missing; running: rustup target add {KERNEL_TARGET}");
        run_captured(Command::new("rustup").args(["target", "add", KERNEL_TARGET]))?;
        return Ok(());
    }
    let sysroot = run_captured(Command::new("rustc").args(["--print", "sysroot"]))?;
    if Path::new(sysroot.trim()).join("lib/rustlib").join(KERNEL_TARGET).is_dir() {
        Ok(())
    } else {
        Err(BuildError::TargetMissing)
    }
}

/// Runs `cmd` in the workspace root and returns its stdout; stderr goes into the error on failure.
fn run_captured(cmd: &mut Command) -> Result<String, BuildError> {
    let command = shell_line(cmd);
    let out = cmd
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .output()
        .map_err(|source| BuildError::Spawn { command: command.clone(), source })?;
    if !out.status.success() {
        let detail = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(BuildError::Failed { command, status: out.status, detail });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The cargo invocation that builds `app` for [`KERNEL_TARGET`] (without the JSON message flag).
pub fn build_command(app: &str, profile: Profile) -> Command {
    let mut cmd = cargo_command();
    cmd.args(["build", "-p", app, "--target", KERNEL_TARGET]);
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    cmd
}

/// Builds `app` (after [`ensure_target`]) without an embedded initrd and returns its ELF. cargo's progress and
/// diagnostics go to stderr.
pub fn build_app(app: &str, profile: Profile) -> Result<Image, BuildError> {
    build_app_with_initrd(app, profile, None)
}

/// Builds `app` with the ustar archive `initrd` embedded in the image (mounted read-only at `/` by the guest;
/// passed to the build as `ZIRVIUM_INITRD`, read by the `zirvium` crate's build script), or none.
/// Errors: as [`build_app`].
pub fn build_app_with_initrd(app: &str, profile: Profile, initrd: Option<&Path>) -> Result<Image, BuildError> {
    check_app_name(app)?;
    ensure_target()?;
    let mut cmd = build_command(app, profile);
    let initrd = match initrd {
        Some(p) => std::path::absolute(p).map_err(|source| BuildError::Image { path: p.to_owned(), source })?,
        None => PathBuf::new(),
    };
    cmd.env("ZIRVIUM_INITRD", &initrd);
    let command = shell_line(&cmd);
    cmd.arg("--message-format=json-render-diagnostics").stdin(Stdio::null()).stdout(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| BuildError::Spawn { command: command.clone(), source })?;
    let mut executable = None;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(path) = artifact_executable(&line, app) {
                executable = Some(path);
            }
        }
    }
    let status = child.wait().map_err(|source| BuildError::Spawn { command: command.clone(), source })?;
    if !status.success() {
        return Err(BuildError::Failed { command, status, detail: String::new() });
    }
    let path = executable.ok_or_else(|| BuildError::NoExecutable { command, app: app.to_owned() })?;
    let linked = std::fs::read(&path).map_err(|source| BuildError::Image { path: path.clone(), source })?;
    let stripped =
        crate::strip::strip_symbols(&linked).map_err(|e| BuildError::Strip { path: path.clone(), error: e })?;
    let boot = path.with_extension("elf");
    std::fs::write(&boot, &stripped).map_err(|source| BuildError::Image { path: boot.clone(), source })?;
    Ok(Image { app: app.to_owned(), path: boot, size: stripped.len() as u64, symbols: path })
}

/// The `executable` of a cargo `compiler-artifact` message for the binary target `app`, if `line` is one.
fn artifact_executable(line: &str, app: &str) -> Option<PathBuf> {
    let msg: serde_json::Value = serde_json::from_str(line).ok()?;
    if msg["reason"] != "compiler-artifact" || msg["target"]["name"] != app {
        return None;
    }
    msg["executable"].as_str().map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names() {
        assert!(check_app_name("hello").is_ok());
        assert!(check_app_name("udp_echo-2").is_ok());
        for bad in ["", "../x", "a b", "--all", "hello@1"] {
            assert!(matches!(check_app_name(bad), Err(BuildError::AppName(_))), "{bad}");
        }
    }

    #[test]
    fn build_command_shape() {
        let release: Vec<_> = build_command("hello", Profile::Release).get_args().map(|a| a.to_owned()).collect();
        assert_eq!(release, ["build", "-p", "hello", "--target", "x86_64-unknown-none", "--release"]);
        let debug = build_command("hello", Profile::Debug);
        assert_eq!(debug.get_args().count(), 5);
        assert_eq!(debug.get_current_dir(), Some(workspace_root().as_path()));
    }

    #[test]
    fn reads_artifact_messages() {
        let exe = r#"{"reason":"compiler-artifact","target":{"name":"hello","kind":["bin"]},"executable":"/w/target/x86_64-unknown-none/release/hello"}"#;
        assert_eq!(
            artifact_executable(exe, "hello"),
            Some(PathBuf::from("/w/target/x86_64-unknown-none/release/hello"))
        );
        assert_eq!(artifact_executable(exe, "httpd"), None);
        let lib = r#"{"reason":"compiler-artifact","target":{"name":"hello","kind":["lib"]},"executable":null}"#;
        assert_eq!(artifact_executable(lib, "hello"), None);
        assert_eq!(artifact_executable(r#"{"reason":"build-finished","success":true}"#, "hello"), None);
        assert_eq!(artifact_executable("not json", "hello"), None);
    }

    #[test]
    fn image_summary() {
        let img = Image { app: "hello".into(), path: "/t/hello".into(), size: 123_456, symbols: "/t/h".into() };
        assert_eq!(img.summary(), "/t/hello (123456 bytes, 120.6 KiB)");
    }
}
