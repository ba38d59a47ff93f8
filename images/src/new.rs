//! `cargo zirvium new PATH`: writes an app crate anywhere — `Cargo.toml` depending on `zirvium` (and
//! `zirvium-http` for the HTTP template) by path to a Zirvium checkout or by git URL, with the release profile the
//! kernel image wants and a `[workspace]` of its own; `src/main.rs`; an `initrd/` directory the image carries;
//! `rust-toolchain.toml` (stable and the kernel target); a README with the commands. Nothing else is needed:
//! the link flags come from `cargo zirvium` ([`crate::cargo::KERNEL_RUSTFLAGS`]) and the linker script from
//! libos's build script.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::cargo::KERNEL_TARGET;

/// Which app `new` writes (`--template`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Template {
    /// An HTTP service on `zirvium-http`: `/hello` from code, every other path a file of `initrd/`.
    #[default]
    Http,
    /// Prints a greeting, its arguments and a file of `initrd/`, then exits 0.
    Hello,
}

impl FromStr for Template {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "http" => Ok(Template::Http),
            "hello" => Ok(Template::Hello),
            _ => Err(format!("unknown template `{s}` (use http or hello)")),
        }
    }
}

/// Where the new crate gets `zirvium` from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A checkout on this machine (its root, holding `libos/api` and `net/http`).
    Checkout(PathBuf),
    /// A git repository URL.
    Git(String),
}

impl Source {
    /// The dependency's location in Cargo.toml for the crate at `rel` in the checkout, e.g.
    /// `path = "/src/zirvium/libos/api"` or `git = "https://..."`.
    fn location(&self, rel: &str) -> String {
        match self {
            Source::Checkout(root) => format!("path = {}", toml_string(&root.join(rel).display().to_string())),
            Source::Git(url) => format!("git = {}", toml_string(url)),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Checkout(root) => write!(f, "the Zirvium checkout at {} (path dependency)", root.display()),
            Source::Git(url) => write!(f, "the git repository {url} (git dependency)"),
        }
    }
}

/// What to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewOptions {
    /// The crate's directory (created; must not exist or be empty).
    pub path: PathBuf,
    /// Package name [default: the directory's name].
    pub name: Option<String>,
    /// Which app.
    pub template: Template,
    /// Where `zirvium` comes from.
    pub source: Source,
}

/// Failures of [`new_app`]; each says what to change (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum NewError {
    /// The directory exists and has files.
    #[error("{} already exists and is not empty: give a new directory", .0.display())]
    Exists(PathBuf),
    /// The package name is not one cargo takes.
    #[error("package name `{name}`: {why}; choose another with --name NAME")]
    Name {
        /// The name.
        name: String,
        /// What is wrong.
        why: &'static str,
    },
    /// No checkout to depend on by path.
    #[error("no Zirvium checkout at {} (this cargo-zirvium was not installed from one): pass --git URL or --checkout DIR", .0.display())]
    NoCheckout(PathBuf),
    /// Writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What [`new_app`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSummary {
    /// The crate's directory.
    pub dir: PathBuf,
    /// Its package name.
    pub name: String,
    /// The files written, relative to `dir`.
    pub files: Vec<String>,
}

/// This checkout ([`crate::cargo::workspace_root`]) when it holds the `zirvium` crate, for path dependencies.
pub fn this_checkout() -> Result<PathBuf, NewError> {
    let root = crate::cargo::workspace_root();
    if root.join("libos/api/Cargo.toml").is_file() && root.join("net/http/Cargo.toml").is_file() {
        Ok(root.canonicalize().unwrap_or(root))
    } else {
        Err(NewError::NoCheckout(root))
    }
}

/// Checks a package name as cargo would take it for an app: ASCII letters, digits, `-`, `_`, starting with a
/// letter, and not a crate the app depends on. Errors: [`NewError::Name`].
pub fn check_name(name: &str) -> Result<(), NewError> {
    let bad = |why| Err(NewError::Name { name: name.to_owned(), why });
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return bad("it must start with a letter");
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return bad("it may only use letters, digits, `-` and `_`");
    }
    let taken = ["zirvium", "zirvium-http", "zirvium_http", "libos", "core", "alloc", "std", "test"];
    if taken.contains(&name) {
        return bad("that is the name of a crate the app depends on");
    }
    Ok(())
}

/// The files of a new crate `name`, relative paths with their contents (pure: see [`new_app`]).
pub fn files(name: &str, template: Template, source: &Source) -> Vec<(&'static str, String)> {
    let mut files = vec![
        ("Cargo.toml", cargo_toml(name, template, source)),
        ("src/main.rs", main_rs(template).replace("{name}", name)),
        ("README.md", readme(name, template, source)),
        ("rust-toolchain.toml", rust_toolchain()),
        (".gitignore", "/target\n".to_owned()),
    ];
    match template {
        Template::Http => files.push(("initrd/index.html", INDEX_HTML.replace("{name}", name))),
        Template::Hello => files.push(("initrd/greeting.txt", format!("Greetings from {name}'s initrd.\n"))),
    }
    files
}

/// Writes the crate for `opts` ([`files`]; with a checkout source also its `Cargo.lock`, so the app builds
/// with the versions the checkout is tested with). Errors: [`NewError`].
pub fn new_app(opts: &NewOptions) -> Result<NewSummary, NewError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| NewError::Io { path, source }
    };
    let dir = std::path::absolute(&opts.path).map_err(io(&opts.path))?;
    let name = match &opts.name {
        Some(n) => n.clone(),
        None => dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
    };
    check_name(&name)?;
    if dir.exists() && (!dir.is_dir() || std::fs::read_dir(&dir).map_err(io(&dir))?.next().is_some()) {
        return Err(NewError::Exists(dir));
    }
    let mut written = Vec::new();
    for (rel, text) in files(&name, opts.template, &opts.source) {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, text).map_err(io(&path))?;
        written.push(rel.to_owned());
    }
    if let Source::Checkout(root) = &opts.source {
        let lock = root.join("Cargo.lock");
        if lock.is_file() {
            std::fs::copy(&lock, dir.join("Cargo.lock")).map_err(io(&lock))?;
            written.push("Cargo.lock".to_owned());
        }
    }
    Ok(NewSummary { dir, name, files: written })
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn cargo_toml(name: &str, template: Template, source: &Source) -> String {
    let mut deps = format!("zirvium = {{ {} }}\n", source.location("libos/api"));
    let mut ports = String::new();
    if template == Template::Http {
        deps.push_str(&format!("zirvium-http = {{ {}, features = [\"vfs\"] }}\n", source.location("net/http")));
        ports = "\n# Host ports `cargo zirvium run` forwards to the guest when no --port is given.\n\
                 [package.metadata.zirvium]\nports = [\"8080:80\"]\n"
            .to_owned();
    }
    format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n\
         [dependencies]\n# From {source}; README.md says how to switch.\n{deps}{ports}\n\
         # The kernel image: small and optimised as a whole; a panic ends the VM ({KERNEL_TARGET} does not unwind).\n\
         [profile.release]\nopt-level = \"s\"\nlto = true\ncodegen-units = 1\npanic = \"abort\"\n\n\
         [profile.dev]\npanic = \"abort\"\n\n\
         # `--debug` builds: the app at opt-level 0 for the debugger, the library OS optimised (unoptimised, its\n\
         # virtio queue setup overflows the 256 KiB boot stack).\n\
         [profile.dev.package.\"*\"]\nopt-level = 1\n\n\
         # A workspace of its own, not a member of one in a parent directory.\n[workspace]\n"
    )
}

fn rust_toolchain() -> String {
    format!("[toolchain]\nchannel = \"stable\"\ntargets = [\"{KERNEL_TARGET}\"]\nprofile = \"minimal\"\n")
}

fn main_rs(template: Template) -> &'static str {
    match template {
        Template::Http => MAIN_HTTP,
        Template::Hello => MAIN_HELLO,
    }
}

const MAIN_HTTP: &str = r#"//! {name}: a Zirvium appliance serving HTTP/1.1 on port 80. `/hello` answers from code;
//! every other path is a file of `initrd/`, which the image carries and mounts read-only at `/`
//! (`/` is `initrd/index.html`).
//!
//! App arguments go after `--` (`cargo zirvium run -- port=8000`): `port=80`,
//! `max_connections=1024`, `idle_timeout_ms=30000`, ... (`zirvium_http::settings`).
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

use alloc::boxed::Box;
use alloc::format;
use zirvium_http::files::StaticFiles;
use zirvium_http::vfs::Vfs;
use zirvium_http::{ArgError, Handler, Request, Response, Settings, Status};

zirvium::app!(run);

/// The package name: names the server in its log lines.
const NAME: &str = env!("CARGO_PKG_NAME");

/// The service: its own route, then the initrd's files.
struct Service {
    files: StaticFiles<Vfs>,
}

impl Handler for Service {
    /// Neither route reads a request body: answer from the request head.
    fn check(&self, request: &Request<'_>) -> Option<Response> {
        Some(self.respond(request))
    }

    fn respond(&self, request: &Request<'_>) -> Response {
        match request.path {
            "/hello" => {
                let text = format!("hello from {NAME} on {}\n", zirvium::env::platform());
                Response::text(Status::OK, text)
            }
            _ => self.files.serve(request),
        }
    }
}

/// The app's entry: serves until the VM is stopped.
async fn run() -> Result<(), ArgError> {
    let args = zirvium::env::args();
    let settings =
        zirvium_http::parse_args(NAME, Settings::new(NAME), args, "", |_, _, _| Ok(false))?;
    // /tmp (scratch) and /data (the first disk) are mounted too: keep them private.
    let files = StaticFiles::new(Vfs).hide("/tmp").hide("/data");
    let service: &'static Service = Box::leak(Box::new(Service { files }));
    zirvium_http::run(NAME, settings, service).await
}
"#;

const MAIN_HELLO: &str = r#"//! {name}: a Zirvium appliance that greets, prints its arguments and a file of its initrd
//! (`initrd/`, mounted read-only at `/`), and exits 0 — the exit status of `cargo zirvium run`.
#![cfg_attr(target_os = "none", no_std, no_main)]

use zirvium::println;

zirvium::app!(run);

/// The app's entry: its return value is the VM's exit status.
async fn run() -> i32 {
    let app = env!("CARGO_PKG_NAME");
    println!("hello from {app} on {}", zirvium::env::platform());
    for arg in zirvium::env::args() {
        println!("arg: {arg}");
    }
    match zirvium::fs::read_to_string("/greeting.txt") {
        Ok(text) => println!("initrd: {}", text.trim_end()),
        Err(e) => println!("/greeting.txt: {e}"),
    }
    0
}
"#;

const INDEX_HTML: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{name}</title></head>
<body>
<h1>{name} is running</h1>
<p>This page is <code>initrd/index.html</code>, served by a Zirvium appliance: one Rust crate and the library OS
in one image. <a href="/hello">/hello</a> answers from <code>src/main.rs</code>.</p>
</body>
</html>
"#;

fn readme(name: &str, template: Template, source: &Source) -> String {
    let what = match template {
        Template::Http => "serves HTTP on port 80: `/hello` from `src/main.rs`, every other path from `initrd/`",
        Template::Hello => "prints a greeting, its arguments and `initrd/greeting.txt`, then exits 0",
    };
    let try_it = match template {
        Template::Http => "cargo zirvium run                  # build (release), boot under QEMU; Ctrl-C stops it\n\
                           curl http://localhost:8080/        # in another terminal: initrd/index.html\n\
                           curl http://localhost:8080/hello"
            .to_owned(),
        Template::Hello => {
            "cargo zirvium run -- a b          # build (release), boot under QEMU, exit with its status".to_owned()
        }
    };
    let switch = match source {
        Source::Checkout(_) => "To build against the git repository instead, replace each `path = \"...\"` with \
                                `git = \"URL\"` (the same URL for both crates); cargo updates `Cargo.lock`."
            .to_owned(),
        Source::Git(_) => "To build against a checkout on this machine instead (to change Zirvium itself), replace \
                           each `git = \"...\"` with `path = \"CHECKOUT/libos/api\"` for `zirvium` and \
                           `path = \"CHECKOUT/net/http\"` for `zirvium-http`."
            .to_owned(),
    };
    format!(
        "# {name}\n\n\
         A Zirvium appliance: it {what}. The crate and the library OS are built into one `{KERNEL_TARGET}` ELF that \
         boots under QEMU (KVM or TCG) and Xen, or from a disk image on a cloud.\n\n\
         ## Commands\n\n\
         Needs `cargo zirvium` (in a Zirvium checkout: `cargo install --path images`) and QEMU; a missing one is \
         named with the command that installs it.\n\n\
         ```sh\n{try_it}\n\
         cargo zirvium build                # the ELF only; prints its path and size\n\
         cargo zirvium package --format qcow2 --output {name}.qcow2   # bootable disk: raw, qcow2, vhd, vhdx, vmdk, gce\n\
         cargo zirvium run --debug --gdb    # halted; attach with the gdb command it prints\n\
         cargo zirvium run --pcap net.pcap  # record the NIC's traffic (pcap)\n\
         cargo zirvium inspect              # what the image holds\n\
         ```\n\n\
         `initrd/` is packed into the image and mounted read-only at `/`. `cargo zirvium run --help` lists the \
         options (`--accel`, `--mem`, `--port`, `--disk`, `--hypervisor xen`, `--kernel-opt`, app arguments after \
         `--`, ...).\n\n\
         ## Where `zirvium` comes from\n\n\
         `Cargo.toml` takes `zirvium` from {source}. {switch}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("web-app_2").is_ok());
        for (bad, why) in [
            ("2web", "it must start with a letter"),
            ("", "it must start with a letter"),
            ("we b", "it may only use letters, digits, `-` and `_`"),
            ("zirvium", "that is the name of a crate the app depends on"),
        ] {
            match check_name(bad) {
                Err(NewError::Name { why: w, .. }) => assert_eq!(w, why, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert_eq!("hello".parse(), Ok(Template::Hello));
        assert!("web".parse::<Template>().unwrap_err().contains("use http or hello"));
    }

    #[test]
    fn http_template_by_path_and_git() {
        let by_path = files("web", Template::Http, &Source::Checkout("/src/z".into()));
        let names: Vec<_> = by_path.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            ["Cargo.toml", "src/main.rs", "README.md", "rust-toolchain.toml", ".gitignore", "initrd/index.html"]
        );
        let toml = &by_path[0].1;
        for want in [
            "name = \"web\"",
            "zirvium = { path = \"/src/z/libos/api\" }",
            "zirvium-http = { path = \"/src/z/net/http\", features = [\"vfs\"] }",
            "[package.metadata.zirvium]\nports = [\"8080:80\"]",
            "[profile.release]\nopt-level = \"s\"\nlto = true\ncodegen-units = 1\npanic = \"abort\"",
            "[profile.dev.package.\"*\"]\nopt-level = 1",
            "\n[workspace]\n",
        ] {
            assert!(toml.contains(want), "{want} in\n{toml}");
        }
        assert!(by_path[1].1.contains("zirvium::app!(run);") && !by_path[1].1.contains("{name}"));
        assert!(by_path[2].1.contains("replace each `path = \"...\"` with `git = \"URL\"`"));
        assert!(by_path[3].1.contains("targets = [\"x86_64-unknown-none\"]"));
        let by_git = files("web", Template::Http, &Source::Git("https://example.org/zirvium.git".into()));
        assert!(by_git[0].1.contains("zirvium = { git = \"https://example.org/zirvium.git\" }"));
        assert!(by_git[2].1.contains("path = \"CHECKOUT/libos/api\""));
    }

    #[test]
    fn hello_template_needs_no_http() {
        let f = files("greeter", Template::Hello, &Source::Checkout("/src/z".into()));
        assert!(!f[0].1.contains("zirvium-http") && !f[0].1.contains("metadata.zirvium"));
        assert_eq!(f[5], ("initrd/greeting.txt", "Greetings from greeter's initrd.\n".to_owned()));
    }

    #[test]
    fn writes_the_crate_and_refuses_a_full_directory() {
        let d = std::env::temp_dir().join(format!("images-new-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let opts = NewOptions {
            path: d.join("my-app"),
            name: None,
            template: Template::Hello,
            source: Source::Checkout(this_checkout().unwrap()),
        };
        let s = new_app(&opts).unwrap();
        assert_eq!(s.name, "my-app");
        assert!(s.files.contains(&"Cargo.lock".to_owned()));
        assert!(d.join("my-app/initrd/greeting.txt").is_file());
        assert!(matches!(new_app(&opts), Err(NewError::Exists(_))));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
