//! Rust `std` programs as Zirvium images. A std app ([`AppKind::Std`]: `[package.metadata.zirvium] std = true`)
//! is built for `x86_64-unknown-hermit` with `-Zbuild-std=std,panic_abort` on the pinned nightly ([`toolchain`]),
//! and linked with the library OS — the `zirvium-hermit` kernel object ([`kernel`]) — and libos's linker script
//! with TLS added ([`script`]). The result is the same kind of image as a no_std app: a static ELF at 1 MiB with
//! the PVH note, which `images run`/`cargo zirvium run` boot and `package` writes to disks, with the initrd
//! embedded the same way.
//!
//! Entry points: [`build_std`] (what [`crate::cargo::build`] calls for a std app) and [`build_test_image`] (the
//! crate's libtest harness, for `cargo zirvium test` and `images run --test`). The kernel half always comes from
//! this checkout (the one `images`/`cargo-zirvium` was built in), wherever the app lives.

pub mod kernel;
pub mod script;
pub mod toolchain;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use crate::cargo::{artifact_executable, run_with_messages, target_dir, workspace_root, BuildError, Image, Profile};
use crate::host_tools::{self, HostToolsError};
use crate::project::{App, AppKind};
use crate::shell::shell_line;

/// The Rust target std programs are compiled for.
pub const STD_TARGET: &str = "x86_64-unknown-hermit";

/// Errors of a std image build; each names the file, command or crate.
#[derive(Debug, thiserror::Error)]
pub enum StdError {
    /// The pinned nightly is missing and could not be installed.
    #[error(transparent)]
    Toolchain(#[from] toolchain::ToolchainError),
    /// A cargo, ld, objcopy or as run failed.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The linker script could not be made.
    #[error(transparent)]
    Script(#[from] script::ScriptError),
    /// binutils (ld, objcopy, as) is missing.
    #[error(transparent)]
    HostTools(#[from] HostToolsError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `cargo zirvium test` / `images run --test` on an app that is not a std app.
    #[error("package `{package}` ({}) is not a Rust std app: only std apps have VM test images (the tests of a no_std app run on the host with cargo test); a std app says `[package.metadata.zirvium] std = true`", .manifest.display())]
    NotStd {
        /// The package.
        package: String,
        /// Its Cargo.toml.
        manifest: PathBuf,
    },
    /// The kernel object lacks the ABI or the entry (a broken kernel build).
    #[error("{object}: expected sys_* functions and pvh_start32, found {found} symbols to keep")]
    KernelSymbols {
        /// The object.
        object: PathBuf,
        /// How many symbols matched.
        found: usize,
    },
}

/// Builds the test harness (libtest) of the std app `app` as an image: booted, it runs the crate's `#[test]`s,
/// prints cargo's `test result:` line and exits 0 when all passed. With `panic = "abort"` (the Hermit target's
/// only strategy) the first failing test ends the run with status 101. A crate with several test targets: its
/// library's harness, else the first. Errors: [`StdError`]; [`StdError::NotStd`] when `app` is not a std app.
pub fn build_test_image(app: &App, profile: Profile, initrd: Option<&Path>) -> Result<Image, StdError> {
    if app.kind != AppKind::Std {
        return Err(StdError::NotStd { package: app.package.clone(), manifest: app.manifest.clone() });
    }
    build_std(app, profile, initrd, Harness::Tests)
}

/// Arguments a test image needs before the user's: libtest under `panic = "abort"` would run each test in a
/// child process, which a unikernel cannot spawn; these make it run them in its own process.
pub const TEST_HARNESS_ARGS: [&str; 2] = ["-Zunstable-options", "--force-run-in-process"];

/// What of a std crate becomes the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Harness {
    /// Its binary (`cargo build --bin`).
    Binary,
    /// Its test harness (`cargo test --no-run`, libtest).
    Tests,
}

/// Where the kernel object, the script and the name objects go: `target/std-kernel/<profile>/`.
fn kernel_dir(profile: Profile) -> PathBuf {
    target_dir().join("std-kernel").join(profile.dir_name())
}

/// Waits for and takes the exclusive lock `target/std-kernel/build.lock` (`flock`), so one std build runs at a
/// time — test threads and separate `images` processes alike; released when the returned file is dropped.
/// Errors: [`StdError::Io`] creating or locking the file.
fn build_lock() -> Result<std::fs::File, StdError> {
    let dir = target_dir().join("std-kernel");
    std::fs::create_dir_all(&dir).map_err(|source| StdError::Io { path: dir.clone(), source })?;
    let path = dir.join("build.lock");
    let io = |source| StdError::Io { path: path.clone(), source };
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io)?;
    file.lock().map_err(io)?;
    Ok(file)
}

/// Where std apps are built (one target directory for all, so `-Zbuild-std`'s std is compiled once).
fn apps_target_dir() -> PathBuf {
    target_dir().join("std-apps")
}

/// The `CARGO_ENCODED_RUSTFLAGS` of a std app: static (no PIE) at libos's addresses, the kernel object and the
/// app-name object linked in, libos's script with TLS.
pub fn rustflags(kernel: &Path, name_obj: &Path, script: &Path) -> String {
    [
        "-Crelocation-model=static".to_owned(),
        format!("-Clink-arg={}", kernel.display()),
        format!("-Clink-arg={}", name_obj.display()),
        format!("-Clink-arg=-T{}", script.display()),
        "-Clink-arg=-znostart-stop-gc".to_owned(),
    ]
    .join("\x1f")
}

/// The std build of `app`: toolchain, kernel object (with `initrd` embedded), script, then the app's binary or
/// (`what`) its test harness; returns the ELF. Progress goes to stderr. Errors: [`StdError`].
pub fn build_std(app: &App, profile: Profile, initrd: Option<&Path>, what: Harness) -> Result<Image, StdError> {
    // The kernel object (with this build's initrd), its symbol list and the link stamps are shared files.
    let _lock = build_lock()?;
    let progress = &mut |m: &str| eprintln!("images: {m}");
    let bin = app.bin.clone();
    let ws = workspace_root();
    let tc = toolchain::ensure(&ws, progress)?;
    host_tools::ensure(&[host_tools::BINUTILS], progress)?;
    let kdir = kernel_dir(profile);
    let kernel = kernel::build(profile, initrd, &kdir)?;
    let name_obj = kernel::name_object(&bin, &kdir)?;
    let script = kdir.join("zirvium-std.ld");
    script::write(&ws, &script)?;
    let td = apps_target_dir();
    let out_dir = td.join(STD_TARGET).join(profile.dir_name());
    // cargo does not see the link inputs change: drop the app's binary so it is linked again when they did.
    let mut h = DefaultHasher::new();
    (kernel.hash, std::fs::read(&name_obj).unwrap_or_default(), std::fs::read(&script).unwrap_or_default())
        .hash(&mut h);
    let stamp_value = format!("{:016x}\n", h.finish());
    let stamp = out_dir.join(format!(".zirvium-link-{bin}{}", if what == Harness::Tests { "-tests" } else { "" }));
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(stamp_value.as_str()) {
        remove_binary(&out_dir, &bin);
        remove_binary(&out_dir, &app.package);
    }
    let mut cmd = std::process::Command::new("rustup");
    cmd.args(["run", &tc, "cargo"]).current_dir(app.dir());
    match what {
        Harness::Binary => {
            cmd.args(["build", "--manifest-path"]).arg(&app.manifest);
            cmd.args(["-p", &app.package, "--bin", &bin, "--target", STD_TARGET, "-Zbuild-std=std,panic_abort"]);
        }
        Harness::Tests => {
            // libtest with panic=abort needs -Zpanic-abort-tests; `test` joins the crates built from rust-src.
            cmd.args(["test", "--no-run", "--manifest-path"]).arg(&app.manifest).args(["-p", &app.package]);
            cmd.args(["--target", STD_TARGET, "-Zbuild-std=std,panic_abort,test", "-Zpanic-abort-tests"]);
        }
    }
    cmd.args(["-Zbuild-std-features=compiler-builtins-mem", "--target-dir"]).arg(&td);
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    for var in ["RUSTUP_TOOLCHAIN", "RUSTC", "RUSTDOC", "CARGO", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET", "RUSTFLAGS"]
    {
        cmd.env_remove(var);
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", rustflags(&kernel.path, &name_obj, &script));
    progress(&format!("building std app {} ({STD_TARGET}, {tc}): {}", app.package, shell_line(&cmd)));
    let (mut exe, mut lib_tests) = (None, None);
    let command = run_with_messages(cmd, &mut |line| match what {
        Harness::Binary => exe = artifact_executable(line, &bin).or(exe.take()),
        Harness::Tests => {
            if let Some((path, is_lib)) = test_executable(line) {
                if is_lib {
                    lib_tests = Some(path);
                } else if exe.is_none() {
                    exe = Some(path);
                }
            }
        }
    })?;
    let path = lib_tests.or(exe).ok_or_else(|| BuildError::NoExecutable { command, app: bin.clone() })?;
    let _ = std::fs::write(&stamp, stamp_value);
    let size = std::fs::metadata(&path).map_err(|source| StdError::Io { path: path.clone(), source })?.len();
    // Not stripped: the std image is booted with its symbols (the size report is for no_std apps).
    Ok(Image { app: bin, symbols: path.clone(), path, size })
}

/// The executable of a cargo `compiler-artifact` message for a test harness (`profile.test`), and whether it is
/// the library's.
fn test_executable(line: &str) -> Option<(PathBuf, bool)> {
    let msg: serde_json::Value = serde_json::from_str(line).ok()?;
    if msg["reason"] != "compiler-artifact" || msg["profile"]["test"] != true {
        return None;
    }
    let is_lib = msg["target"]["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "lib" || k == "rlib"));
    msg["executable"].as_str().map(|p| (PathBuf::from(p), is_lib))
}
/// Removes the built binary `bin` from cargo's output directory (`out_dir/bin` and `out_dir/deps/bin-HASH`), so
/// the next build links it again.
fn remove_binary(out_dir: &Path, bin: &str) {
    let _ = std::fs::remove_file(out_dir.join(bin));
    let prefix = format!("{}-", bin.replace('-', "_"));
    if let Ok(entries) = std::fs::read_dir(out_dir.join("deps")) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && !name.contains('.') {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_harnesses_are_found_in_cargo_messages() {
        let t = r#"{"reason":"compiler-artifact","target":{"name":"srv","kind":["bin"]},"profile":{"test":true},"executable":"/t/deps/srv-1"}"#;
        assert_eq!(test_executable(t), Some((PathBuf::from("/t/deps/srv-1"), false)));
        let l = r#"{"reason":"compiler-artifact","target":{"name":"srv","kind":["lib"]},"profile":{"test":true},"executable":"/t/deps/srv-2"}"#;
        assert_eq!(test_executable(l), Some((PathBuf::from("/t/deps/srv-2"), true)));
        let b =
            r#"{"reason":"compiler-artifact","target":{"name":"srv"},"profile":{"test":false},"executable":"/t/srv"}"#;
        assert_eq!(test_executable(b), None);
    }

    #[test]
    fn rustflags_link_the_kernel_with_the_script() {
        let f = rustflags(Path::new("/k/kernel-std.o"), Path::new("/k/a.name.o"), Path::new("/k/z.ld"));
        let parts: Vec<&str> = f.split('\x1f').collect();
        assert_eq!(
            parts,
            [
                "-Crelocation-model=static",
                "-Clink-arg=/k/kernel-std.o",
                "-Clink-arg=/k/a.name.o",
                "-Clink-arg=-T/k/z.ld",
                "-Clink-arg=-znostart-stop-gc"
            ]
        );
    }
}
