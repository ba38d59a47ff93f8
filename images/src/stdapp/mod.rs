//! Rust `std` programs as Zirvium images. A crate that does not depend on `zirvium` (or says
//! `[package.metadata.zirvium] std = true`) is a std crate: it is built for `x86_64-unknown-hermit` with
//! `-Zbuild-std=std,panic_abort` on the pinned nightly ([`toolchain`]), and linked with the library OS — the
//! `zirvium-hermit` kernel object ([`kernel`]) — and libos's linker script with TLS added ([`script`]). The
//! result is the same kind of image as a no_std app: a static ELF at 1 MiB with the PVH note, which
//! `images run` boots, with the initrd embedded the same way.
//!
//! Entry point: [`build_image`], which also builds no_std apps (a package name, or a crate directory that
//! depends on `zirvium`) through [`crate::cargo`]. `images build` and `images run` take a crate directory as
//! well as a package name.

pub mod kernel;
pub mod script;
pub mod toolchain;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use crate::cargo::{
    artifact_executable, build_app_with_initrd, cargo_command, run_with_messages, target_dir, workspace_root,
    BuildError, Image, Profile,
};
use crate::host_tools::{self, HostToolsError};
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
    /// `cargo metadata` did not describe the crate.
    #[error("{manifest}: {detail}")]
    Metadata {
        /// The manifest.
        manifest: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// The crate has no binary target.
    #[error("{manifest} has no binary target to build an image from")]
    NoBinary {
        /// The manifest.
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

/// What `cargo metadata` says about one crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrateInfo {
    /// Package name.
    pub name: String,
    /// Its `Cargo.toml`.
    pub manifest: PathBuf,
    /// Names of its direct dependencies.
    pub dependencies: Vec<String>,
    /// Its binary targets.
    pub bins: Vec<String>,
    /// `[package.metadata.zirvium] std = true`.
    pub std_marker: bool,
}

impl CrateInfo {
    /// Whether this is a std crate: it does not depend on `zirvium` (no_std apps do, for `zirvium::app!`), or
    /// it carries the `std = true` marker.
    pub fn is_std(&self) -> bool {
        self.std_marker || !self.dependencies.iter().any(|d| d == "zirvium")
    }

    /// The binary to build: the one named like the package, else the first.
    pub fn bin(&self) -> Option<&str> {
        self.bins.iter().find(|b| **b == self.name).or(self.bins.first()).map(String::as_str)
    }
}

/// The package in `cargo metadata --no-deps` output whose manifest is `manifest`.
pub fn parse_metadata(json: &str, manifest: &Path) -> Result<CrateInfo, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("cargo metadata output: {e}"))?;
    let packages = v["packages"].as_array().ok_or("cargo metadata output has no packages")?;
    let pkg = packages
        .iter()
        .find(|p| p["manifest_path"].as_str().map(Path::new) == Some(manifest))
        .or_else(|| packages.first().filter(|_| packages.len() == 1))
        .ok_or("no package with this manifest")?;
    let strings = |arr: &serde_json::Value, f: &dyn Fn(&serde_json::Value) -> Option<String>| -> Vec<String> {
        arr.as_array().map(|a| a.iter().filter_map(f).collect()).unwrap_or_default()
    };
    Ok(CrateInfo {
        name: pkg["name"].as_str().ok_or("package without a name")?.to_owned(),
        manifest: manifest.to_owned(),
        dependencies: strings(&pkg["dependencies"], &|d| d["name"].as_str().map(str::to_owned)),
        bins: strings(&pkg["targets"], &|t| {
            let bin = t["kind"].as_array()?.iter().any(|k| k == "bin");
            bin.then(|| t["name"].as_str().map(str::to_owned)).flatten()
        }),
        std_marker: pkg["metadata"]["zirvium"]["std"].as_bool() == Some(true),
    })
}

/// `cargo metadata` for the crate in `dir`. Errors: [`StdError::Metadata`], [`StdError::Build`].
pub fn crate_info(dir: &Path) -> Result<CrateInfo, StdError> {
    let manifest = dir.join("Cargo.toml");
    let manifest = std::fs::canonicalize(&manifest).map_err(|source| StdError::Io { path: manifest, source })?;
    let json = kernel::run(
        cargo_command().args(["metadata", "--no-deps", "--format-version", "1", "--manifest-path"]).arg(&manifest),
    )?;
    parse_metadata(&json, &manifest).map_err(|detail| StdError::Metadata { manifest, detail })
}

/// The crate directory `app` names when it is a path (it contains `/` or starts with `.`): relative to the
/// current directory, else to the workspace root. `None` for a package name.
pub fn crate_dir(app: &str) -> Option<PathBuf> {
    if !app.contains('/') && !app.starts_with('.') {
        return None;
    }
    let here = PathBuf::from(app);
    if here.join("Cargo.toml").is_file() {
        return std::path::absolute(&here).ok();
    }
    Some(workspace_root().join(app))
}

/// A name for `app` before it is built (a Xen domain's, a log's): a package name as is, a crate directory's
/// last component (the build then gives the package name, usually the same).
pub fn short_name(app: &str) -> String {
    let dir = crate_dir(app);
    dir.as_deref().and_then(Path::file_name).map_or_else(|| app.to_owned(), |n| n.to_string_lossy().into_owned())
}

/// Builds `app` — a package name (a no_std workspace app, as before) or a crate directory (std or no_std,
/// see [`CrateInfo::is_std`]) — with the ustar archive `initrd` embedded, and returns the ELF. Progress goes to
/// stderr. Errors: [`StdError`].
pub fn build_image(app: &str, profile: Profile, initrd: Option<&Path>) -> Result<Image, StdError> {
    let Some(dir) = crate_dir(app) else { return Ok(build_app_with_initrd(app, profile, initrd)?) };
    let info = crate_info(&dir)?;
    if !info.is_std() {
        return Ok(build_app_with_initrd(&info.name, profile, initrd)?);
    }
    build_std(&info, profile, initrd, Harness::Binary)
}

/// Builds the test harness (libtest) of the std crate in directory `app` as an image: booted, it runs the
/// crate's `#[test]`s, prints cargo's `test result:` line and exits 0 when all passed. With `panic = "abort"`
/// (the Hermit target's only strategy) the first failing test ends the run with status 101. Errors:
/// [`StdError`]; [`StdError::Metadata`] when `app` is not a std crate directory.
pub fn build_test_image(app: &str, profile: Profile, initrd: Option<&Path>) -> Result<Image, StdError> {
    let dir = crate_dir(app).unwrap_or_else(|| workspace_root().join("apps").join(app));
    let info = crate_info(&dir)?;
    if !info.is_std() {
        let detail = "tests of no_std apps run on the host (cargo test); only std crates have VM test images".into();
        return Err(StdError::Metadata { manifest: info.manifest, detail });
    }
    build_std(&info, profile, initrd, Harness::Tests)
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

/// The std build of `info`: toolchain, kernel object, script, app; returns the ELF.
pub fn build_std(info: &CrateInfo, profile: Profile, initrd: Option<&Path>, what: Harness) -> Result<Image, StdError> {
    let progress = &mut |m: &str| eprintln!("images: {m}");
    let bin = match what {
        Harness::Binary => info.bin().ok_or_else(|| StdError::NoBinary { manifest: info.manifest.clone() })?.to_owned(),
        Harness::Tests => info.name.clone(),
    };
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
    }
    let mut cmd = std::process::Command::new("rustup");
    cmd.args(["run", &tc, "cargo"]);
    match what {
        Harness::Binary => {
            cmd.args(["build", "--manifest-path"]).arg(&info.manifest);
            cmd.args(["--bin", &bin, "--target", STD_TARGET, "-Zbuild-std=std,panic_abort"]);
        }
        Harness::Tests => {
            // libtest with panic=abort needs -Zpanic-abort-tests; `test` joins the crates built from rust-src.
            cmd.args(["test", "--no-run", "--manifest-path"]).arg(&info.manifest);
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
    progress(&format!("building std app {} ({STD_TARGET}, {tc}): {}", info.name, shell_line(&cmd)));
    let mut exe = None;
    let command = run_with_messages(cmd, &mut |line| {
        let found = match what {
            Harness::Binary => artifact_executable(line, &bin),
            Harness::Tests => test_executable(line),
        };
        exe = found.or(exe.take());
    })?;
    let path = exe.ok_or_else(|| BuildError::NoExecutable { command, app: bin.clone() })?;
    let _ = std::fs::write(&stamp, stamp_value);
    let size = std::fs::metadata(&path).map_err(|source| StdError::Io { path: path.clone(), source })?.len();
    Ok(Image { app: info.name.clone(), path, size })
}

/// The executable of a cargo `compiler-artifact` message for a test harness (`profile.test`).
fn test_executable(line: &str) -> Option<PathBuf> {
    let msg: serde_json::Value = serde_json::from_str(line).ok()?;
    if msg["reason"] != "compiler-artifact" || msg["profile"]["test"] != true {
        return None;
    }
    msg["executable"].as_str().map(PathBuf::from)
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
    fn std_crates_are_those_without_zirvium() {
        let json = r#"{"packages":[{"name":"srv","manifest_path":"/w/srv/Cargo.toml",
            "dependencies":[{"name":"tokio"}],"targets":[{"kind":["bin"],"name":"srv"},{"kind":["lib"],"name":"srv"}],
            "metadata":null}]}"#;
        let info = parse_metadata(json, Path::new("/w/srv/Cargo.toml")).unwrap();
        assert_eq!((info.name.as_str(), info.bin()), ("srv", Some("srv")));
        assert!(info.is_std());
        let json = r#"{"packages":[{"name":"hello","manifest_path":"/w/apps/hello/Cargo.toml",
            "dependencies":[{"name":"zirvium"}],"targets":[{"kind":["bin"],"name":"hello"}],"metadata":null}]}"#;
        assert!(!parse_metadata(json, Path::new("/w/apps/hello/Cargo.toml")).unwrap().is_std());
        let json = r#"{"packages":[{"name":"both","manifest_path":"/w/b/Cargo.toml",
            "dependencies":[{"name":"zirvium"}],"targets":[],"metadata":{"zirvium":{"std":true}}}]}"#;
        let info = parse_metadata(json, Path::new("/w/b/Cargo.toml")).unwrap();
        assert!(info.is_std() && info.bin().is_none(), "the marker wins; no binary");
        assert!(parse_metadata("{}", Path::new("/x")).is_err());
    }

    #[test]
    fn test_harnesses_are_found_in_cargo_messages() {
        let t = r#"{"reason":"compiler-artifact","target":{"name":"srv"},"profile":{"test":true},"executable":"/t/deps/srv-1"}"#;
        assert_eq!(test_executable(t), Some(PathBuf::from("/t/deps/srv-1")));
        let b =
            r#"{"reason":"compiler-artifact","target":{"name":"srv"},"profile":{"test":false},"executable":"/t/srv"}"#;
        assert_eq!(test_executable(b), None);
    }

    #[test]
    fn paths_are_crates_names_are_packages() {
        assert_eq!(crate_dir("hello"), None);
        assert_eq!(crate_dir("tests/std-apps/x"), Some(workspace_root().join("tests/std-apps/x")));
        assert!(crate_dir("./x").is_some());
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

    #[test]
    fn short_names() {
        assert_eq!(short_name("httpd"), "httpd");
        assert_eq!(short_name("tests/std-apps/tiny-http-hello"), "tiny-http-hello");
        assert_eq!(short_name("./my-app/"), "my-app");
    }
}
