//! Building app images: `cargo build --manifest-path <app> -p <package> --bin <bin> --target x86_64-unknown-none`
//! with the kernel target's flags ([`KERNEL_RUSTFLAGS`]) passed on the command line, and the rustup target check
//! before it. The same for an app of this workspace and for a crate anywhere else ([`crate::project`] finds it).
//! The ELF path comes from cargo's JSON messages (cargo book, "External tools", JSON messages:
//! `compiler-artifact` with `executable`), so a custom target directory works.
//!
//! Kernel crates and host crates are never built in one cargo invocation: they need different targets.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::host_tools::find_in_path;
use crate::project::{App, AppKind, ProjectError};
use crate::shell::{one_line, shell_line};

/// The bare-metal target all kernel crates and apps build for.
pub const KERNEL_TARGET: &str = "x86_64-unknown-none";

/// rustc flags of every crate built for [`KERNEL_TARGET`], the one place they are set: static code (not PIE),
/// linked at 1 MiB by libos's linker script `zirvium.ld` (libos's build script puts it on the link search path
/// of every app that depends on it, wherever the app lives), frame pointers kept for the exception backtrace,
/// `__start_`/`__stop_` sections kept. Passed as `--config target.x86_64-unknown-none.rustflags=[...]`
/// ([`kernel_config`]), so host build scripts and proc macros never get them.
pub const KERNEL_RUSTFLAGS: [&str; 8] = [
    "-C",
    "relocation-model=static",
    "-C",
    "force-frame-pointers=yes",
    "-C",
    "link-arg=-Tzirvium.ld",
    "-C",
    "link-arg=-znostart-stop-gc",
];

/// Environment variables that would replace [`KERNEL_RUSTFLAGS`] (cargo takes the first of
/// `CARGO_ENCODED_RUSTFLAGS`, `RUSTFLAGS`, `target.<triple>.rustflags`), removed from image builds.
pub const REPLACING_RUSTFLAGS_ENV: [&str; 2] = ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS"];

/// The `--config` value carrying [`KERNEL_RUSTFLAGS`]: `target.x86_64-unknown-none.rustflags=["-C", ...]`
/// (a TOML array, merged with the rustflags of the same key in the user's cargo configuration).
pub fn kernel_config() -> String {
    let flags: Vec<String> = KERNEL_RUSTFLAGS.iter().map(|f| format!("\"{f}\"")).collect();
    format!("target.{KERNEL_TARGET}.rustflags=[{}]", flags.join(", "))
}

/// Cargo profile of an image build.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Profile {
    /// `--release` (this workspace: `opt-level = "s"`, LTO; symbols kept, no debug info): what `images run` and
    /// the tests boot.
    #[default]
    Release,
    /// The dev profile (`--debug`): full debug info, for gdb.
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

    /// `Debug` when `debug`, else `Release`.
    pub fn from_debug(debug: bool) -> Profile {
        if debug {
            Profile::Debug
        } else {
            Profile::Release
        }
    }
}

/// A built app image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// Binary name, e.g. `hello`.
    pub app: String,
    /// Absolute path of the ELF.
    pub path: PathBuf,
    /// File size in bytes.
    pub size: u64,
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
    /// The app crate could not be picked (exit 2).
    #[error(transparent)]
    App(#[from] ProjectError),
    /// The app name cannot be a cargo package name.
    #[error("app name `{0}`: expected a package name of letters, digits, `-` and `_`, not starting with `-` (an apps/<name> crate)")]
    AppName(String),
    /// The Rust target is missing and could not be added (exit 2).
    #[error(
        "the Rust target {KERNEL_TARGET} is not installed ({why}); install it with: rustup target add {KERNEL_TARGET}"
    )]
    TargetMissing {
        /// Why it was not added: no rustup, or `rustup target add` failed.
        why: String,
    },
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
    #[error("`{command}` reported no executable for the binary `{app}`")]
    NoExecutable {
        /// The command line.
        command: String,
        /// The binary.
        app: String,
    },
    /// The ELF cargo named cannot be read.
    #[error("built image {path}: {source}")]
    Image {
        /// The ELF path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl BuildError {
    /// True for errors a person fixes in the command or the environment rather than in the code: the app cannot
    /// be picked, the target is missing (exit 2 instead of 1).
    pub fn is_usage(&self) -> bool {
        matches!(self, BuildError::App(_) | BuildError::AppName(_) | BuildError::TargetMissing { .. })
    }
}

/// The workspace root of this checkout: the parent of this crate's directory (`images/..`), fixed at compile
/// time.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// This checkout's target directory: `$CARGO_TARGET_DIR` if set, else `<workspace>/target` (test logs, the
/// nested Xen host's cache).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// `cargo` as the caller's cargo runs it: `$CARGO` (set by `cargo run`, `cargo test` and for cargo subcommands
/// such as `cargo zirvium`) or `cargo` on `PATH`, in `dir`.
pub fn cargo_command(dir: &Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(dir);
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

/// [`ensure_target_in`] this workspace's root.
pub fn ensure_target() -> Result<(), BuildError> {
    ensure_target_in(&workspace_root())
}

/// Makes sure the rust target [`KERNEL_TARGET`] is installed for the toolchain of `dir` (its
/// `rust-toolchain.toml` applies).
///
/// With rustup: reads `rustup target list --installed` and runs `rustup target add` when missing, saying so on
/// stderr. Without rustup: looks for the target in `rustc --print sysroot`. Errors:
/// [`BuildError::TargetMissing`] with the command to run.
pub fn ensure_target_in(dir: &Path) -> Result<(), BuildError> {
    if find_in_path("rustup").is_some() {
        let out = run_captured(Command::new("rustup").args(["target", "list", "--installed"]), dir)?;
        if out.lines().any(|l| l.trim() == KERNEL_TARGET) {
            return Ok(());
        }
        eprintln!("images: rust target {KERNEL_TARGET} missing; running: rustup target add {KERNEL_TARGET}");
        return match run_captured(Command::new("rustup").args(["target", "add", KERNEL_TARGET]), dir) {
            Ok(_) => Ok(()),
            Err(e) => Err(BuildError::TargetMissing { why: one_line(&e.to_string()) }),
        };
    }
    let sysroot = run_captured(Command::new("rustc").args(["--print", "sysroot"]), dir)?;
    if Path::new(sysroot.trim()).join("lib/rustlib").join(KERNEL_TARGET).is_dir() {
        Ok(())
    } else {
        Err(BuildError::TargetMissing { why: "rustup was not found".into() })
    }
}

/// Runs `cmd` in `dir` and returns its stdout; stderr goes into the error on failure.
fn run_captured(cmd: &mut Command, dir: &Path) -> Result<String, BuildError> {
    let command = shell_line(cmd);
    let out = cmd
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| BuildError::Spawn { command: command.clone(), source })?;
    if !out.status.success() {
        let detail = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(BuildError::Failed { command, status: out.status, detail });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The cargo invocation that builds `app` for [`KERNEL_TARGET`] (without the JSON message flag), in the app's
/// directory: `cargo build --manifest-path M -p PACKAGE --bin BIN --target x86_64-unknown-none [--release]
/// --config 'target.x86_64-unknown-none.rustflags=[...]'`, without the variables that would replace those flags.
pub fn build_command(app: &App, profile: Profile) -> Command {
    let mut cmd = cargo_command(app.dir());
    cmd.arg("build").arg("--manifest-path").arg(&app.manifest);
    cmd.args(["-p", &app.package, "--bin", &app.bin, "--target", KERNEL_TARGET]);
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    cmd.args(["--config", &kernel_config()]);
    for var in REPLACING_RUSTFLAGS_ENV {
        cmd.env_remove(var);
    }
    cmd
}

/// Builds `app` of this workspace (after [`ensure_target`]) without an embedded initrd and returns its ELF.
/// cargo's progress and diagnostics go to stderr.
pub fn build_app(app: &str, profile: Profile) -> Result<Image, BuildError> {
    build_app_with_initrd(app, profile, None)
}

/// Builds `app` of this workspace ([`crate::project::workspace_app`]) with the ustar archive `initrd` embedded,
/// or none: [`build`]. Errors: as [`build`], and the app not being one of this workspace.
pub fn build_app_with_initrd(app: &str, profile: Profile, initrd: Option<&Path>) -> Result<Image, BuildError> {
    check_app_name(app)?;
    build(&crate::project::workspace_app(app)?, profile, initrd)
}

/// Builds `app` with the ustar archive `initrd` embedded in the image (mounted read-only at `/` by the guest;
/// passed to the build as `ZIRVIUM_INITRD`, read by the `zirvium` crate's build script), or none, and returns
/// its ELF. Errors: the target missing, cargo failing or naming no executable.
pub fn build(app: &App, profile: Profile, initrd: Option<&Path>) -> Result<Image, BuildError> {
    match app.kind {
        AppKind::NoStd => {}
        AppKind::NotAnApp => {
            let (package, manifest) = (app.package.clone(), app.manifest.clone());
            return Err(ProjectError::NotAnApp { package, manifest }.into());
        }
    }
    ensure_target_in(app.dir())?;
    let set: Vec<&str> = REPLACING_RUSTFLAGS_ENV.into_iter().filter(|v| std::env::var_os(v).is_some()).collect();
    if !set.is_empty() {
        eprintln!(
            "images: not passing {} to the image build: the kernel's flags are set with --config",
            set.join(", ")
        );
    }
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
            if let Some(path) = artifact_executable(&line, &app.bin) {
                executable = Some(path);
            }
        }
    }
    let status = child.wait().map_err(|source| BuildError::Spawn { command: command.clone(), source })?;
    if !status.success() {
        return Err(BuildError::Failed { command, status, detail: String::new() });
    }
    let path = executable.ok_or_else(|| BuildError::NoExecutable { command, app: app.bin.clone() })?;
    let size = std::fs::metadata(&path).map_err(|source| BuildError::Image { path: path.clone(), source })?.len();
    Ok(Image { app: app.bin.clone(), path, size })
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
        let hello = crate::project::workspace_app("hello").unwrap();
        let release = build_command(&hello, Profile::Release);
        let args: Vec<_> = release.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        let manifest = workspace_root().join("apps/hello/Cargo.toml").display().to_string();
        assert_eq!(
            args,
            [
                "build",
                "--manifest-path",
                &manifest,
                "-p",
                "hello",
                "--bin",
                "hello",
                "--target",
                "x86_64-unknown-none",
                "--release",
                "--config",
                &kernel_config()
            ]
        );
        assert_eq!(release.get_current_dir(), Some(workspace_root().join("apps/hello").as_path()));
        // The variables that would replace the kernel's flags are removed.
        let removed: Vec<_> = release.get_envs().filter(|(_, v)| v.is_none()).map(|(k, _)| k.to_owned()).collect();
        assert_eq!(removed, ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS"]);
        assert_eq!(build_command(&hello, Profile::Debug).get_args().count(), args.len() - 1);
    }

    #[test]
    fn kernel_flags_as_config() {
        assert_eq!(
            kernel_config(),
            r#"target.x86_64-unknown-none.rustflags=["-C", "relocation-model=static", "-C", "force-frame-pointers=yes", "-C", "link-arg=-Tzirvium.ld", "-C", "link-arg=-znostart-stop-gc"]"#
        );
        assert_eq!(Profile::from_debug(true), Profile::Debug);
        assert!(BuildError::TargetMissing { why: "x".into() }.is_usage());
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
        let img = Image { app: "hello".into(), path: "/t/hello".into(), size: 123_456 };
        assert_eq!(img.summary(), "/t/hello (123456 bytes, 120.6 KiB)");
    }
}
