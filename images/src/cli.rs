//! The command line of the `images` and `cargo-zirvium` binaries (`build`, `run`, `run --image`, `package`,
//! `inspect`, `new`, `disk create`, `setup`, `xl-config`): parses the arguments into the library's option structs
//! ([`RunArgs`], [`PackageArgs`], [`XlConfigArgs`], [`crate::project::CrateArgs`]), calls the library, prints what it
//! returns, and maps errors to exit codes ([`Error::exit_code`]), each error on one line.
//!
//! Both binaries take the same commands ([`Flavor`]): `images build httpd` in this repository is
//! `cargo zirvium build -p httpd`; `images` wants the app named (`APP` or `-p`), `cargo zirvium` defaults to the
//! crate of the current directory.
//!
//! Exit codes of `run`: the guest's status (0..=127), 124 when `--timeout` expired, 125 when QEMU failed, 2 for
//! usage errors, no app crate, a missing Rust target or QEMU, 1 when the build failed.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::cargo::{ensure_target, Profile, KERNEL_TARGET};
use crate::error::Error;
use crate::host_tools::{self, ALL_TOOLS};
use crate::project::{App, CrateArgs};
use crate::run::{Hypervisor, RunArgs};
use crate::shell::one_line;
use crate::xen::run::XlConfigArgs;

/// `images`: build Zirvium app images and boot them under QEMU.
#[derive(Debug, Parser)]
#[command(name = "images", version, about = "Build Zirvium app images and boot them under QEMU")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Cmd,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Build the app for x86_64-unknown-none, its initrd embedded, and print the ELF's path and size.
    Build {
        /// The app's package name, e.g. hello or httpd, as -p NAME.
        #[arg(conflicts_with = "package", default_value = "", hide_default_value = true)]
        app: String,
        /// Which crate and binary: -p, --bin, --manifest-path.
        #[command(flatten)]
        krate: CrateArgs,
        /// Build with the dev profile (full debug info) instead of --release.
        #[arg(long)]
        debug: bool,
        /// Pack DIR as the app's initrd (ustar at TARGET/initrd/BIN.tar) and embed it in the image; the guest
        /// mounts it read-only at / [default: the app's own initrd/ directory when it has one].
        #[arg(long, value_name = "DIR")]
        initrd: Option<PathBuf>,
    },
    /// Disk images for the guest's /data mount.
    #[command(subcommand)]
    Disk(DiskCmd),
    /// Build the app (release) and boot it under QEMU; the serial console goes to stdout and the exit status
    /// is the guest's.
    Run(RunArgs),
    /// Install the host tools the tests, the benchmarks and `images run` use (QEMU 10 from bookworm-backports,
    /// fsck.fat, curl, wrk, gdb, GRUB, OVMF, qemu-img) and the Rust target, as root with apt-get and rustup;
    /// otherwise print the one command that installs the missing tools.
    Setup,
    /// Build the app (release) and print an xl config that runs it as a Xen PVH domU on this machine as dom0.
    XlConfig(XlConfigArgs),
    /// Build the app (release) and write it as a bootable GPT disk (GRUB for BIOS and UEFI, Multiboot2) in a
    /// cloud's format.
    Package(PackageArgs),
    /// Show what an app ELF or a packaged disk holds: entries, platforms, sections, initrd; partitions, boot
    /// loader, kernel command line. Without FILE: the app's ELF, built first.
    Inspect {
        /// An app ELF or a disk image (raw, qcow2, vhd, vhdx, vmdk, GCE tar.gz).
        file: Option<PathBuf>,
        /// Which crate and binary when no FILE is given: -p, --bin, --manifest-path.
        #[command(flatten)]
        krate: CrateArgs,
        /// Without FILE: inspect the dev-profile build instead of the release one.
        #[arg(long)]
        debug: bool,
    },
    /// Write a new app crate at PATH (outside this repository): Cargo.toml depending on zirvium, src/main.rs,
    /// initrd/, README.md with the commands, rust-toolchain.toml.
    New(NewArgs),
}

/// Options of `new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The new crate's directory.
    pub path: PathBuf,
    /// Package name [default: the directory's name].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The app: an HTTP service (http) or a greeting that exits (hello).
    #[arg(long, value_name = "http|hello", default_value = "http")]
    pub template: crate::new::Template,
    /// Depend on zirvium from this git repository [default: by path on this checkout].
    #[arg(long, value_name = "URL", conflicts_with = "checkout")]
    pub git: Option<String>,
    /// Depend on zirvium by path on this checkout directory [default: the checkout cargo-zirvium was built in].
    #[arg(long, value_name = "DIR")]
    pub checkout: Option<PathBuf>,
}

/// Options of `package`.
#[derive(Debug, Args)]
pub struct PackageArgs {
    /// The app's package name, e.g. httpd, as -p NAME.
    #[arg(conflicts_with = "package", default_value = "", hide_default_value = true)]
    pub app: String,
    /// Which crate and binary: -p, --bin, --manifest-path.
    #[command(flatten)]
    pub krate: CrateArgs,
    /// Output format: raw, qcow2 (OpenStack, Proxmox), vhd (Azure, fixed), vhdx (Hyper-V), vmdk (vSphere,
    /// streamOptimized), gce (disk.raw in a tar.gz).
    #[arg(long, value_name = "FORMAT")]
    pub format: crate::package::Format,
    /// The image file to write.
    #[arg(long, value_name = "FILE")]
    pub output: std::path::PathBuf,
    /// Firmware the disk boots with.
    #[arg(long, value_name = "bios|uefi|both", default_value = "both")]
    pub boot: crate::package::BootModes,
    /// Disk size: bytes or K/M/G, rounded up to whole MiB (whole GiB for gce).
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = crate::disk::parse_size)]
    pub size: u64,
    /// Copy DIR into a FAT data partition the guest mounts at /data (it takes the rest of the disk).
    #[arg(long, value_name = "DIR")]
    pub data: Option<std::path::PathBuf>,
    /// Kernel option, placed before `--` on the kernel command line in grub.cfg; repeatable.
    #[arg(long = "kernel-opt", value_name = "KEY=VALUE")]
    pub kernel_opts: Vec<crate::qemu::KernelOption>,
    /// Arguments for the app, after `--`.
    #[arg(last = true, value_name = "APP ARGS")]
    pub app_args: Vec<String>,
}

/// `package`: builds the app and writes the disk, prints its summary line.
pub fn package(args: &PackageArgs) -> Result<u8, Error> {
    let app = crate::project::resolve(&args.krate.with_app(&args.app)).map_err(crate::cargo::BuildError::from)?;
    let opts = crate::package::PackageOptions {
        app: app.bin.clone(),
        format: args.format,
        output: args.output.clone(),
        boot: args.boot,
        size: args.size,
        data: args.data.clone(),
        kernel_options: args.kernel_opts.clone(),
        app_args: args.app_args.clone(),
    };
    let summary = crate::package::package_app(&app, &opts)?;
    println!("{summary}");
    Ok(0)
}

/// `images disk` subcommands.
#[derive(Debug, Subcommand)]
pub enum DiskCmd {
    /// Create a raw disk image with a FAT file system (FAT32 from ~33 MiB up), optionally filled from DIR.
    Create {
        /// The disk image to write.
        file: PathBuf,
        /// Size: bytes or K/M/G, e.g. 64M.
        #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = crate::disk::parse_size)]
        size: u64,
        /// Copy this directory's tree into the new file system.
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
        /// Overwrite FILE if it exists.
        #[arg(long)]
        force: bool,
    },
}

/// Which binary parses the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// `images` (`cargo run -p images -- ...` in this repository): the app is named with `APP` or `-p`.
    Images,
    /// `cargo zirvium ...` (the `cargo-zirvium` binary): the app defaults to the crate of the current directory.
    CargoZirvium,
}

impl Flavor {
    /// The name in messages and usage lines: `images` or `cargo zirvium`.
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Images => "images",
            Flavor::CargoZirvium => "cargo zirvium",
        }
    }
}

/// The command line of `flavor`: [`Cli`], with `APP` required by `images` unless `-p`/`--manifest-path` (or
/// `--image` for `run`) say which app.
pub fn command(flavor: Flavor) -> clap::Command {
    let cmd = Cli::command();
    match flavor {
        Flavor::CargoZirvium => cmd
            .name("cargo-zirvium")
            .bin_name("cargo zirvium")
            .about("Build, run, debug and package Zirvium apps: cargo zirvium new PATH, then cargo zirvium run in it"),
        Flavor::Images => ["build", "run", "package", "xl-config"].into_iter().fold(cmd, |cmd, sub| {
            cmd.mut_subcommand(sub, |s| {
                let by = if sub == "run" {
                    &["package", "manifest_path", "image"][..]
                } else {
                    &["package", "manifest_path"]
                };
                // `mut_arg` re-adds the argument: keep it the first positional, before `-- APP ARGS`.
                let s = s.mut_arg("app", |a| a.required_unless_present_any(by).index(1));
                let has_app_args = s.get_arguments().any(|a| a.get_id() == "app_args");
                if has_app_args {
                    s.mut_arg("app_args", |a| a.index(2))
                } else {
                    s
                }
            })
        }),
    }
}

/// Parses `args` (program name first) as `flavor` does. Errors: clap's usage errors (exit 2), `--help` and
/// `--version` (exit 0, printed by [`clap::Error::print`]).
pub fn parse(flavor: Flavor, args: impl IntoIterator<Item = OsString>) -> Result<Cli, clap::Error> {
    let matches = command(flavor).try_get_matches_from(args)?;
    Cli::from_arg_matches(&matches)
}

/// A clap usage error on one line: its message and tips without the usage block, e.g. `unexpected argument
/// '--frob' found; tip: ...; see 'cargo zirvium run --help'`.
pub fn usage_error_line(err: &clap::Error, flavor: Flavor) -> String {
    let text = err.to_string();
    let parts: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .collect();
    // `...were not provided:` + `<APP>` reads as one sentence; separate lines are separate remarks.
    let mut message = String::new();
    for part in parts {
        if !message.is_empty() {
            message.push_str(if message.ends_with(':') { " " } else { "; " });
        }
        message.push_str(part);
    }
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    format!("{message}; see '{} --help'", flavor.name())
}

/// Entry point of the `images` binary: parses `std::env::args` and runs the subcommand.
pub fn main() -> ExitCode {
    main_with(Flavor::Images, std::env::args_os())
}

/// Entry point of both binaries: parses `args` (program name first) as `flavor` and runs the subcommand;
/// errors go to stderr on one line, `images: error: ...` (`cargo zirvium: error: ...`).
pub fn main_with(flavor: Flavor, args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = match parse(flavor, args) {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("{}: error: {}", flavor.name(), usage_error_line(&e, flavor));
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Cmd::Build { app, krate, debug, initrd } => build(&krate.with_app(&app), debug, initrd),
        Cmd::Disk(DiskCmd::Create { file, size, from, force }) => {
            crate::disk::create(&file, size, from.as_deref(), force).map_err(Error::from).map(|s| {
                println!(
                    "{}: {} MiB {}, {} files and {} directories copied ({} bytes), {} bytes free",
                    file.display(),
                    s.size >> 20,
                    s.fat_type,
                    s.files,
                    s.dirs,
                    s.bytes,
                    s.free
                );
                0
            })
        }
        Cmd::Run(args) => run(&args),
        Cmd::Setup => setup(),
        Cmd::Package(args) => package(&args),
        Cmd::Inspect { file, krate, debug } => inspect(file, &krate, debug),
        Cmd::New(args) => new(&args),
        Cmd::XlConfig(args) => crate::xen::run::xl_config(&args).map_err(Error::from).map(|config| {
            print!("{config}");
            0
        }),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("{}: error: {}", flavor.name(), one_line(&e.to_string()));
            ExitCode::from(e.exit_code())
        }
    }
}

/// `images run`: under QEMU ([`crate::qemu::run`]), Xen ([`crate::xen::run`]) or the nested Hyper-V host
/// ([`crate::hyperv::run`]) as `args.hypervisor` says. Returns the exit code.
pub fn run(args: &RunArgs) -> Result<u8, Error> {
    if args.hv_tsc_page.is_some() && args.hypervisor != Hypervisor::Hyperv {
        return Err(Error::Config(crate::qemu::ConfigError::HypervOnly("--hv-tsc-page")));
    }
    match args.hypervisor {
        Hypervisor::Qemu => crate::qemu::run::run(args),
        Hypervisor::Xen => Ok(crate::xen::run::run(args)?),
        Hypervisor::Hyperv => Ok(crate::hyperv::run::run(args)?),
    }
}

/// Resolves the app of `sel` ([`crate::project::resolve`]). Errors: [`Error::Build`] with the reason (exit 2).
fn resolve(sel: &CrateArgs) -> Result<App, Error> {
    crate::project::resolve(sel).map_err(|e| Error::Build(e.into()))
}

/// `build`: packs the initrd (`initrd` or the app's own `initrd/`) when there is one, builds, prints the ELF.
fn build(sel: &CrateArgs, debug: bool, initrd: Option<PathBuf>) -> Result<u8, Error> {
    let app = resolve(sel)?;
    let dir = initrd.or_else(|| Some(app.initrd_dir()).filter(|d| d.is_dir()));
    let tar = match dir {
        Some(dir) => {
            let (out, s) = crate::initrd::pack_for_app(&app, &dir)?;
            println!("{}: initrd, {} files, {} directories, {} bytes", out.display(), s.files, s.dirs, s.bytes);
            Some(out)
        }
        None => None,
    };
    let img = crate::cargo::build(&app, Profile::from_debug(debug), tar.as_deref())?;
    println!("{}{}", img.summary(), if tar.is_some() { " with the initrd embedded" } else { "" });
    Ok(0)
}

/// `inspect`: `file`, or the app's ELF built first (its initrd embedded, as `run` boots it).
fn inspect(file: Option<PathBuf>, sel: &CrateArgs, debug: bool) -> Result<u8, Error> {
    let path = match file {
        Some(f) => f,
        None => {
            let app = resolve(sel)?;
            let initrd = crate::initrd::for_app(&app, None)?;
            crate::cargo::build(&app, Profile::from_debug(debug), initrd.as_deref())?.path
        }
    };
    print!("{}", crate::inspect::inspect(&path)?);
    Ok(0)
}

/// `new`: writes the crate and says what to run next.
fn new(args: &NewArgs) -> Result<u8, Error> {
    use crate::new::{NewOptions, Source};
    let source = match (&args.git, &args.checkout) {
        (Some(url), _) => Source::Git(url.clone()),
        (None, Some(dir)) => Source::Checkout(std::path::absolute(dir).unwrap_or_else(|_| dir.clone())),
        (None, None) => Source::Checkout(crate::new::this_checkout()?),
    };
    let opts = NewOptions { path: args.path.clone(), name: args.name.clone(), template: args.template, source };
    let s = crate::new::new_app(&opts)?;
    println!("created {} `{}` in {} ({})", template_name(args.template), s.name, s.dir.display(), s.files.join(", "));
    println!("zirvium from {}", opts.source);
    println!("next: cd {} && cargo zirvium run", s.dir.display());
    Ok(0)
}

/// The template's name as `--template` takes it.
fn template_name(t: crate::new::Template) -> &'static str {
    match t {
        crate::new::Template::Http => "HTTP app",
        crate::new::Template::Hello => "hello app",
    }
}

/// `images setup`: [`host_tools::ensure`] for [`ALL_TOOLS`] and [`ensure_target`], then one line per tool.
fn setup() -> Result<u8, Error> {
    host_tools::ensure(&ALL_TOOLS, &mut |m| eprintln!("images: {m}"))?;
    ensure_target()?;
    for tool in ALL_TOOLS {
        let path = tool.find().ok_or(host_tools::HostToolsError::StillMissing(vec![tool]))?;
        let version = if tool == host_tools::QEMU { crate::qemu::qemu_version(&path) } else { None };
        let version = version.map(|v| format!(" ({v})")).unwrap_or_default();
        println!("{}: {}{version}", tool.program, path.display());
    }
    println!("rust target {KERNEL_TARGET}: installed");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        super::parse(Flavor::Images, std::iter::once("images").chain(args.iter().copied()).map(OsString::from))
    }

    fn parse_cargo(args: &[&str]) -> Result<Cli, clap::Error> {
        let args = ["cargo-zirvium"].iter().chain(args).map(OsString::from);
        super::parse(Flavor::CargoZirvium, args)
    }

    #[test]
    fn disk_create_subcommand() {
        match parse(&["disk", "create", "d.img", "--size", "32M", "--from", "site"]).unwrap().command {
            Cmd::Disk(DiskCmd::Create { file, size, from, force }) => {
                assert_eq!(
                    (file.to_str(), size, from.as_deref().and_then(|p| p.to_str()), force),
                    (Some("d.img"), 32 << 20, Some("site"), false)
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["disk", "create", "d.img", "--size", "3X"]).is_err());
    }

    #[test]
    fn build_subcommand() {
        match parse(&["build", "hello", "--debug"]).unwrap().command {
            Cmd::Build { app, debug, initrd, krate } => {
                assert_eq!((app.as_str(), debug, initrd), ("hello", true, None));
                assert_eq!(krate.with_app(&app).package.as_deref(), Some("hello"));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["build", "httpd"]).unwrap().command {
            Cmd::Build { debug, .. } => assert!(!debug),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn run_and_setup_subcommands() {
        match parse(&["run", "httpd", "--hypervisor", "xen", "--", "a"]).unwrap().command {
            Cmd::Run(r) => {
                assert_eq!((r.app.as_str(), r.hypervisor, r.app_args), ("httpd", Hypervisor::Xen, vec!["a".into()]))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse(&["setup"]).unwrap().command, Cmd::Setup));
    }

    #[test]
    fn rejects_bad_values_with_clear_errors() {
        for (args, needle) in [
            (&["run", "hello", "--machine", "virt"][..], "unknown machine `virt`"),
            (&["run", "hello", "--accel", "hvf"], "unknown accelerator `hvf`"),
            (&["run", "hello", "--mem", "64K"], "memory size `64K`"),
            (&["run", "hello", "--smp", "0"], "0 is not in 1..=255"),
            (&["run", "hello", "--port", "80"], "expected [tcp:|udp:]HOST:GUEST"),
            (&["run", "hello", "--port", "udp:0:53"], "host port `0`"),
            (&["run", "hello", "--kernel-opt", "bogus"], "kernel option `bogus`: expected key=value"),
            (&["run", "hello", "--net", "bridge"], "unknown network `bridge`"),
            (&["run", "hello", "--timeout", "0"], "0 is not in 1.."),
            (&["run"], "<APP>"),
            (&["frobnicate"], "unrecognized subcommand"),
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
            assert!(err.to_string().contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn cargo_zirvium_defaults_to_the_current_crate() {
        // The same commands; APP may be left out (the crate of the current directory).
        for args in [&["build"][..], &["run"], &["package", "--format", "qcow2", "--output", "a.qcow2"], &["xl-config"]]
        {
            assert!(parse_cargo(args).is_ok(), "{args:?}");
            assert!(parse(args).unwrap_err().to_string().contains("<APP>"), "{args:?}");
        }
        // `images` takes -p or --manifest-path instead of APP.
        assert!(parse(&["build", "-p", "hello"]).is_ok());
        assert!(parse(&["run", "--manifest-path", "x/Cargo.toml"]).is_ok());
        match parse_cargo(&["run", "--bin", "web", "--gdb", "--pcap", "n.pcap", "--debug"]).unwrap().command {
            Cmd::Run(r) => assert_eq!((r.krate.bin.as_deref(), r.gdb, r.debug), (Some("web"), Some(1234), true)),
            other => panic!("{other:?}"),
        }
        match parse_cargo(&["inspect"]).unwrap().command {
            Cmd::Inspect { file, krate, debug } => {
                assert_eq!((file, krate, debug), (None, CrateArgs::default(), false))
            }
            other => panic!("{other:?}"),
        }
        match parse_cargo(&["new", "../web", "--template", "hello", "--git", "https://x/z.git"]).unwrap().command {
            Cmd::New(n) => {
                assert_eq!(
                    (n.path, n.template, n.git.as_deref()),
                    ("../web".into(), crate::new::Template::Hello, Some("https://x/z.git"))
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_cargo(&["new", "w", "--git", "u", "--checkout", "/c"]).is_err());
    }

    #[test]
    fn usage_errors_are_one_line() {
        let e = parse_cargo(&["run", "--frobnicate"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let line = usage_error_line(&e, Flavor::CargoZirvium);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.starts_with("unexpected argument '--frobnicate' found"), "{line}");
        assert!(line.ends_with("; see 'cargo zirvium --help'"), "{line}");
        let e = parse(&["build"]).unwrap_err();
        assert_eq!(
            usage_error_line(&e, Flavor::Images),
            "the following required arguments were not provided: <APP>; see 'images --help'"
        );
    }

    #[test]
    fn xl_config_subcommand() {
        let cli = Cli::try_parse_from(["images", "xl-config", "httpd", "--mem", "128M", "--disk", "d.img", "--", "x"]);
        match cli.unwrap().command {
            Cmd::XlConfig(a) => {
                assert_eq!((a.app.as_str(), a.mem, a.smp), ("httpd", 128, 1));
                assert_eq!(a.disks, [PathBuf::from("d.img")]);
                assert_eq!(a.app_args, ["x"]);
                assert!(!a.no_network && a.bridge.is_none());
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["images", "xl-config", "httpd", "--bridge", "br1", "--no-network"]).is_err());
    }
}
