//! The app crate a command works on, wherever it lives: found with `cargo metadata` (cargo book, "cargo
//! metadata": `packages`, `workspace_root`, `target_directory`) from the current directory or `--manifest-path`,
//! the package picked with `-p`/`--package` (else the package of the manifest, else the workspace's only app), its
//! binary with `--bin`; what kind of app it is ([`app_kind`]), its own `initrd/` directory and the port forwards
//! it declares in `[package.metadata.zirvium]`.
//!
//! Apps in this repository and crates elsewhere are resolved the same way; [`workspace_app`] is the shortcut
//! for a package of this checkout's workspace (the tests, `images::package::package`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::Args;

use crate::forward::PortForward;
use crate::shell::shell_line;

/// The dependency that makes a package a Zirvium app.
pub const ZIRVIUM_CRATE: &str = "zirvium";

/// How the app crate is picked: `[APP]`/`-p NAME`, `--bin NAME`, `--manifest-path PATH` (as cargo's own options).
#[derive(Clone, Debug, Default, PartialEq, Eq, Args)]
pub struct CrateArgs {
    /// The app's package [default: the package in the current directory, or the workspace's only app].
    #[arg(short = 'p', long = "package", value_name = "NAME")]
    pub package: Option<String>,
    /// The binary to build, when the package has several.
    #[arg(long, value_name = "NAME")]
    pub bin: Option<String>,
    /// Path to the app's (or its workspace's) Cargo.toml [default: found from the current directory upwards].
    #[arg(long, value_name = "PATH")]
    pub manifest_path: Option<PathBuf>,
}

impl CrateArgs {
    /// The selection with the positional `APP` (empty when not given) as the package.
    pub fn with_app(&self, app: &str) -> CrateArgs {
        let mut s = self.clone();
        if !app.is_empty() {
            s.package = Some(app.to_owned());
        }
        s
    }
}

/// What kind of crate a package is to `images`/`cargo zirvium`; decides how it is built and whether it is an app
/// at all. Another build path (e.g. `std` apps for the Hermit target) adds its kind here and its case in
/// [`app_kind`], and [`crate::cargo::build`] dispatches on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppKind {
    /// A `#![no_std]` app on the `zirvium` crate (entry declared with `zirvium::app!`), linked with libos into one
    /// ELF for [`crate::cargo::KERNEL_TARGET`].
    NoStd,
    /// Not a Zirvium app: no dependency on `zirvium`.
    NotAnApp,
}

/// The kind of `package` (one entry of `cargo metadata`'s `packages`): [`AppKind::NoStd`] when it has a normal
/// dependency on [`ZIRVIUM_CRATE`] (for any target, renamed or not), else [`AppKind::NotAnApp`].
pub fn app_kind(package: &serde_json::Value) -> AppKind {
    let deps = package["dependencies"].as_array().map(Vec::as_slice).unwrap_or_default();
    if deps.iter().any(|d| d["name"] == ZIRVIUM_CRATE && d["kind"].is_null()) {
        AppKind::NoStd
    } else {
        AppKind::NotAnApp
    }
}

/// One app crate, resolved: what the build, the runners and the packager need to know about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct App {
    /// Package name, e.g. `httpd` (`cargo build -p`).
    pub package: String,
    /// Binary target name, e.g. `httpd` (`cargo build --bin`); names the ELF, the initrd archive, the Xen domain.
    pub bin: String,
    /// The package's Cargo.toml.
    pub manifest: PathBuf,
    /// The workspace's Cargo.toml (the package's own for a crate that is its own workspace).
    pub workspace_manifest: PathBuf,
    /// cargo's target directory for the workspace (`target_directory`).
    pub target_dir: PathBuf,
    /// How it is built.
    pub kind: AppKind,
    /// Host port forwards `run` sets up when no `--port` is given: `[package.metadata.zirvium] ports`, e.g.
    /// `["8080:80", "udp:8007:7"]`; apps that declare any get user networking by default.
    pub ports: Vec<PortForward>,
}

impl App {
    /// The package's directory (where cargo runs, so its `.cargo/config.toml` and `rust-toolchain.toml` apply).
    pub fn dir(&self) -> &Path {
        self.manifest.parent().unwrap_or(Path::new("."))
    }

    /// The app's own initrd directory, `initrd/` next to its Cargo.toml (used when no `--initrd` is given).
    pub fn initrd_dir(&self) -> PathBuf {
        self.dir().join("initrd")
    }
}

/// Why no app could be picked; each message says what to do (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    /// No Cargo.toml in the directory or above it.
    #[error("no Cargo.toml in {} or any parent directory: run in your app's directory, pass --manifest-path PATH/Cargo.toml, or create an app with `cargo zirvium new PATH`", .0.display())]
    NoManifest(PathBuf),
    /// `--manifest-path` does not name a Cargo.toml file.
    #[error("--manifest-path {}: expected the path of an existing Cargo.toml", .0.display())]
    BadManifestPath(PathBuf),
    /// `cargo metadata` could not run or failed (a broken manifest, an unknown dependency).
    #[error("`{command}` failed: {detail}")]
    Metadata {
        /// The command line.
        command: String,
        /// cargo's message, or why it did not start.
        detail: String,
    },
    /// A `-p`/APP value that cannot be a package name.
    #[error("app name `{0}`: expected a package name of letters, digits, `-` and `_`, not starting with `-`")]
    Name(String),
    /// `-p NAME` is not a package of the workspace.
    #[error("no package `{name}` in the workspace at {}; its Zirvium apps: {}", .root.display(), list(.apps))]
    NoSuchPackage {
        /// The name asked for.
        name: String,
        /// The workspace root.
        root: PathBuf,
        /// The workspace's apps.
        apps: Vec<String>,
    },
    /// The package does not depend on `zirvium`.
    #[error("package `{package}` ({}) is not a Zirvium app: it does not depend on `zirvium`; add `zirvium` under [dependencies] (a crate from `cargo zirvium new PATH` has it), or pick an app with -p NAME", .manifest.display())]
    NotAnApp {
        /// The package.
        package: String,
        /// Its Cargo.toml.
        manifest: PathBuf,
    },
    /// A workspace with several apps and no `-p`.
    #[error("the workspace at {} has several Zirvium apps ({}): pick one with -p NAME", .root.display(), list(.apps))]
    SeveralApps {
        /// The workspace root.
        root: PathBuf,
        /// Its apps.
        apps: Vec<String>,
    },
    /// A workspace with no app at all.
    #[error("the workspace at {} has no Zirvium app (no package depends on `zirvium`): create one with `cargo zirvium new PATH`", .0.display())]
    NoApp(PathBuf),
    /// The package has several binaries and no `--bin`.
    #[error("package `{package}` has several binaries ({}): pick one with --bin NAME", list(.bins))]
    SeveralBinaries {
        /// The package.
        package: String,
        /// Its binaries.
        bins: Vec<String>,
    },
    /// `--bin NAME` is not a binary of the package, or it has none.
    #[error("package `{package}` has no binary `{bin}`; its binaries: {}", if .bins.is_empty() { "none (an app is a binary crate: src/main.rs with `zirvium::app!(run)`)".to_owned() } else { list(.bins) })]
    NoSuchBinary {
        /// The package.
        package: String,
        /// The binary asked for (empty: none asked, none there).
        bin: String,
        /// Its binaries.
        bins: Vec<String>,
    },
    /// `[package.metadata.zirvium] ports` is not a list of `[tcp:|udp:]HOST:GUEST` strings.
    #[error("{}: [package.metadata.zirvium] ports: {why}; expected a list like [\"8080:80\", \"udp:8007:7\"]", .manifest.display())]
    Ports {
        /// The package's Cargo.toml.
        manifest: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// `a, b, c`, or `none`.
fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// The nearest `Cargo.toml` in `dir` or a parent directory (what cargo itself starts from).
pub fn locate_manifest(dir: &Path) -> Option<PathBuf> {
    dir.ancestors().map(|d| d.join("Cargo.toml")).find(|p| p.is_file())
}

/// Resolves `sel` from the current directory: see the module docs. Errors: [`ProjectError`].
pub fn resolve(sel: &CrateArgs) -> Result<App, ProjectError> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let manifest = match &sel.manifest_path {
        Some(p) if p.is_file() => std::path::absolute(p).unwrap_or_else(|_| p.clone()),
        Some(p) => return Err(ProjectError::BadManifestPath(p.clone())),
        None => locate_manifest(&cwd).ok_or(ProjectError::NoManifest(cwd))?,
    };
    let metadata = cargo_metadata(&manifest)?;
    pick(&metadata, &manifest, sel)
}

/// The package `app` of this checkout's workspace (the one `images` was built in), its only binary.
/// Errors: [`ProjectError`].
pub fn workspace_app(app: &str) -> Result<App, ProjectError> {
    let manifest = crate::cargo::workspace_root().join("Cargo.toml");
    resolve(&CrateArgs { package: Some(app.to_owned()), bin: None, manifest_path: Some(manifest) })
}

/// `cargo metadata --no-deps --format-version 1 --manifest-path MANIFEST`, parsed: the workspace's packages
/// without resolving dependencies (no network, no lock file written).
fn cargo_metadata(manifest: &Path) -> Result<serde_json::Value, ProjectError> {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(["metadata", "--no-deps", "--format-version", "1", "--manifest-path"]).arg(manifest);
    if let Some(dir) = manifest.parent() {
        cmd.current_dir(dir);
    }
    let command = shell_line(&cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ProjectError::Metadata { command: command.clone(), detail: e.to_string() })?;
    if !out.status.success() {
        let detail = crate::shell::one_line(&String::from_utf8_lossy(&out.stderr));
        return Err(ProjectError::Metadata { command, detail });
    }
    serde_json::from_slice(&out.stdout).map_err(|e| ProjectError::Metadata { command, detail: e.to_string() })
}

/// Picks the app from `cargo metadata` output: `sel.package` by name; else the package whose Cargo.toml is
/// `manifest`; else (a virtual workspace) its only Zirvium app. Then its binary: `sel.bin`, else the only one.
/// Errors: [`ProjectError`].
pub fn pick(metadata: &serde_json::Value, manifest: &Path, sel: &CrateArgs) -> Result<App, ProjectError> {
    let packages = metadata["packages"].as_array().map(Vec::as_slice).unwrap_or_default();
    let root = PathBuf::from(metadata["workspace_root"].as_str().unwrap_or_default());
    let apps: Vec<String> = packages
        .iter()
        .filter(|p| app_kind(p) != AppKind::NotAnApp)
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    let package = match &sel.package {
        Some(name) => {
            crate::cargo::check_app_name(name).map_err(|_| ProjectError::Name(name.clone()))?;
            packages.iter().find(|p| p["name"] == name.as_str()).ok_or_else(|| ProjectError::NoSuchPackage {
                name: name.clone(),
                root: root.clone(),
                apps: apps.clone(),
            })?
        }
        None => match packages.iter().find(|p| p["manifest_path"].as_str().map(Path::new) == Some(manifest)) {
            Some(p) => p,
            None => match apps.as_slice() {
                [one] => packages.iter().find(|p| p["name"] == one.as_str()).unwrap_or(&serde_json::Value::Null),
                [] => return Err(ProjectError::NoApp(root)),
                _ => return Err(ProjectError::SeveralApps { root, apps }),
            },
        },
    };
    let name = package["name"].as_str().unwrap_or_default().to_owned();
    let package_manifest = PathBuf::from(package["manifest_path"].as_str().unwrap_or_default());
    let kind = app_kind(package);
    if kind == AppKind::NotAnApp {
        return Err(ProjectError::NotAnApp { package: name, manifest: package_manifest });
    }
    let bins: Vec<String> = package["targets"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|t| t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "bin")))
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect();
    let bin = match (&sel.bin, bins.as_slice()) {
        (Some(b), _) if bins.contains(b) => b.clone(),
        (Some(b), _) => return Err(ProjectError::NoSuchBinary { package: name, bin: b.clone(), bins }),
        (None, [one]) => one.clone(),
        (None, []) => return Err(ProjectError::NoSuchBinary { package: name, bin: String::new(), bins }),
        (None, _) => return Err(ProjectError::SeveralBinaries { package: name, bins }),
    };
    let ports = metadata_ports(package, &package_manifest)?;
    Ok(App {
        package: name,
        bin,
        workspace_manifest: root.join("Cargo.toml"),
        manifest: package_manifest,
        target_dir: PathBuf::from(metadata["target_directory"].as_str().unwrap_or_default()),
        kind,
        ports,
    })
}

/// `[package.metadata.zirvium] ports` of `package`, parsed (absent: none). Errors: [`ProjectError::Ports`].
fn metadata_ports(package: &serde_json::Value, manifest: &Path) -> Result<Vec<PortForward>, ProjectError> {
    let bad = |why: String| ProjectError::Ports { manifest: manifest.to_owned(), why };
    let ports = &package["metadata"][ZIRVIUM_CRATE]["ports"];
    if ports.is_null() {
        return Ok(Vec::new());
    }
    let items = ports.as_array().ok_or_else(|| bad(format!("{ports} is not a list")))?;
    items
        .iter()
        .map(|p| {
            let s = p.as_str().ok_or_else(|| bad(format!("{p} is not a string")))?;
            s.parse::<PortForward>().map_err(|e| bad(e.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn package(name: &str, dir: &str, deps: &[&str], bins: &[&str]) -> serde_json::Value {
        json!({
            "name": name,
            "manifest_path": format!("{dir}/Cargo.toml"),
            "dependencies": deps.iter().map(|d| json!({"name": d, "kind": null})).collect::<Vec<_>>(),
            "targets": bins.iter().map(|b| json!({"name": b, "kind": ["bin"]}))
                .chain([json!({"name": name, "kind": ["lib"]})]).collect::<Vec<_>>(),
            "metadata": null,
        })
    }

    fn workspace(packages: Vec<serde_json::Value>) -> serde_json::Value {
        json!({"packages": packages, "workspace_root": "/w", "target_directory": "/w/target"})
    }

    fn sel(package: Option<&str>, bin: Option<&str>) -> CrateArgs {
        CrateArgs { package: package.map(str::to_owned), bin: bin.map(str::to_owned), manifest_path: None }
    }

    #[test]
    fn picks_by_name_manifest_or_only_app() {
        let ws = workspace(vec![
            package("libos", "/w/libos", &["log"], &[]),
            package("web", "/w/apps/web", &["zirvium", "zirvium-http"], &["web"]),
        ]);
        let root = Path::new("/w/Cargo.toml");
        let by_name = pick(&ws, root, &sel(Some("web"), None)).unwrap();
        assert_eq!(
            by_name,
            App {
                package: "web".into(),
                bin: "web".into(),
                manifest: "/w/apps/web/Cargo.toml".into(),
                workspace_manifest: "/w/Cargo.toml".into(),
                target_dir: "/w/target".into(),
                kind: AppKind::NoStd,
                ports: Vec::new(),
            }
        );
        assert_eq!(by_name.initrd_dir(), Path::new("/w/apps/web/initrd"));
        // In the package's directory, or at a virtual root with one app: the same app.
        assert_eq!(pick(&ws, Path::new("/w/apps/web/Cargo.toml"), &sel(None, None)).unwrap(), by_name);
        assert_eq!(pick(&ws, root, &sel(None, None)).unwrap(), by_name);
    }

    #[test]
    fn errors_say_what_to_pick() {
        let ws = workspace(vec![
            package("libos", "/w/libos", &["log"], &[]),
            package("a", "/w/a", &["zirvium"], &["a"]),
            package("b", "/w/b", &["zirvium"], &["b", "b-tool"]),
        ]);
        let root = Path::new("/w/Cargo.toml");
        let err = |s: CrateArgs| pick(&ws, root, &s).unwrap_err().to_string();
        assert_eq!(err(sel(None, None)), "the workspace at /w has several Zirvium apps (a, b): pick one with -p NAME");
        assert_eq!(err(sel(Some("b"), None)), "package `b` has several binaries (b, b-tool): pick one with --bin NAME");
        assert_eq!(pick(&ws, root, &sel(Some("b"), Some("b-tool"))).unwrap().bin, "b-tool");
        assert_eq!(err(sel(Some("b"), Some("c"))), "package `b` has no binary `c`; its binaries: b, b-tool");
        assert_eq!(err(sel(Some("zz"), None)), "no package `zz` in the workspace at /w; its Zirvium apps: a, b");
        assert!(err(sel(Some("libos"), None)).starts_with(
            "package `libos` (/w/libos/Cargo.toml) is not a Zirvium app: it does not depend on `zirvium`"
        ));
        assert!(matches!(pick(&ws, root, &sel(Some("--all"), None)), Err(ProjectError::Name(_))));
        let none = workspace(vec![package("libos", "/w/libos", &[], &[])]);
        assert!(matches!(pick(&none, root, &sel(None, None)), Err(ProjectError::NoApp(_))));
    }

    #[test]
    fn dev_dependency_is_not_enough_and_ports_come_from_metadata() {
        let mut p = package("t", "/t", &[], &["t"]);
        p["dependencies"] = json!([{"name": "zirvium", "kind": "dev"}]);
        assert_eq!(app_kind(&p), AppKind::NotAnApp);
        p["dependencies"] = json!([{"name": "zirvium", "kind": null, "rename": "z"}]);
        assert_eq!(app_kind(&p), AppKind::NoStd);
        p["metadata"] = json!({"zirvium": {"ports": ["8080:80", "udp:8007:7"]}});
        let ws = workspace(vec![p.clone()]);
        let app = pick(&ws, Path::new("/t/Cargo.toml"), &sel(None, None)).unwrap();
        assert_eq!(app.ports, [PortForward::tcp(8080, 80), PortForward::udp(8007, 7)]);
        p["metadata"] = json!({"zirvium": {"ports": "8080:80"}});
        let e = pick(&workspace(vec![p]), Path::new("/t/Cargo.toml"), &sel(None, None)).unwrap_err();
        assert!(e.to_string().contains("ports: \"8080:80\" is not a list"), "{e}");
    }

    #[test]
    fn this_workspace_declares_its_network_apps() {
        let ports = |app: &str| workspace_app(app).unwrap().ports;
        assert_eq!(ports("httpd"), [PortForward::tcp(8080, 80)]);
        assert_eq!(ports("kv"), [PortForward::tcp(8080, 80)]);
        assert_eq!(ports("udpecho"), [PortForward::udp(8007, 7)]);
        assert_eq!(ports("hello"), []);
        let httpd = workspace_app("httpd").unwrap();
        assert_eq!(httpd.initrd_dir(), crate::cargo::workspace_root().join("apps/httpd/initrd"));
        assert!(matches!(workspace_app("images"), Err(ProjectError::NotAnApp { .. })));
    }

    #[test]
    fn finds_the_nearest_manifest() {
        let here = crate::cargo::workspace_root().join("images/src");
        assert_eq!(locate_manifest(&here), Some(crate::cargo::workspace_root().join("images/Cargo.toml")));
    }
}
