//! The `images` command line (`build`, `run`, `run --image`, `package`, `inspect`, `disk create`, `setup`,
//! `xl-config`): parses the arguments into the library's option structs ([`RunArgs`],
//! [`XlConfigArgs`]), calls the library, prints what it returns, and maps errors to exit codes
//! ([`Error::exit_code`]).
//!
//! Exit codes of `run`: the guest's status (0..=127), 124 when `--timeout` expired, 125 when QEMU failed, 2 for
//! usage errors and a missing QEMU, 1 when the build failed.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::cargo::{ensure_target, Profile, KERNEL_TARGET};
use crate::error::Error;
use crate::host_tools::{self, ALL_TOOLS};
use crate::run::{Hypervisor, RunArgs};
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
    /// Build `apps/<APP>` for x86_64-unknown-none and print the ELF's path and size; APP may also be a crate
    /// directory (containing `/`), and a crate without a `zirvium` dependency is built as a Rust std image.
    Build {
        /// The app's package name, e.g. hello or httpd, or a crate directory such as tests/std-apps/tiny-http-hello.
        app: String,
        /// Build with the dev profile instead of --release.
        #[arg(long)]
        debug: bool,
        /// Pack DIR as the app's initrd (ustar at target/initrd/APP.tar) and embed it in the image; the guest
        /// mounts it read-only at /.
        #[arg(long, value_name = "DIR")]
        initrd: Option<PathBuf>,
    },
    /// Disk images for the guest's /data mount.
    #[command(subcommand)]
    Disk(DiskCmd),
    /// Build `apps/<APP>` (release) and boot it under QEMU; the serial console goes to stdout and the exit status
    /// is the guest's.
    Run(RunArgs),
    /// Install the host tools the tests, the benchmarks and `images run` use (QEMU 10 from bookworm-backports,
    /// fsck.fat, curl, wrk) and the Rust target, as root with apt-get and rustup; otherwise print the one
    /// command that installs the missing tools.
    Setup,
    /// Build `apps/<APP>` (release) and print an xl config that runs it as a Xen PVH domU on this machine as dom0.
    XlConfig(XlConfigArgs),
    /// Build apps/<APP> (release) and write it as a bootable GPT disk (GRUB for BIOS and UEFI, Multiboot2) in a
    /// cloud's format.
    Package(PackageArgs),
    /// Show what an app ELF or a packaged disk holds: entries, platforms, sections, initrd; partitions, boot
    /// loader, kernel command line.
    Inspect {
        /// An app ELF or a disk image (raw, qcow2, vhd, vhdx, vmdk, GCE tar.gz).
        file: std::path::PathBuf,
    },
}

/// Options of `images package`.
#[derive(Debug, Args)]
pub struct PackageArgs {
    /// The app's package name, e.g. httpd, or a crate directory such as tests/std-apps/tiny-http-hello.
    pub app: String,
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

/// `images package`: builds and writes the disk, prints its summary line.
pub fn package(args: &PackageArgs) -> Result<u8, Error> {
    let opts = crate::package::PackageOptions {
        app: args.app.clone(),
        format: args.format,
        output: args.output.clone(),
        boot: args.boot,
        size: args.size,
        data: args.data.clone(),
        kernel_options: args.kernel_opts.clone(),
        app_args: args.app_args.clone(),
    };
    let summary = crate::package::package(&opts)?;
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

/// Entry point of the binary: parses `std::env::args` and runs the subcommand.
pub fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Cmd::Build { app, debug, initrd } => build(&app, debug, initrd),
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
        Cmd::Inspect { file } => crate::inspect::inspect(&file).map_err(Error::from).map(|report| {
            print!("{report}");
            0
        }),
        Cmd::XlConfig(args) => crate::xen::run::xl_config(&args).map_err(Error::from).map(|config| {
            print!("{config}");
            0
        }),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("images: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// `images run`: under QEMU ([`crate::qemu::run`]) or Xen ([`crate::xen::run`]) as `args.hypervisor` says.
/// Returns the exit code.
pub fn run(args: &RunArgs) -> Result<u8, Error> {
    match args.hypervisor {
        Hypervisor::Qemu => crate::qemu::run::run(args),
        Hypervisor::Xen => Ok(crate::xen::run::run(args)?),
    }
}

/// `images build`: packs `initrd` (a directory) to `target/initrd/APP.tar` if given, builds, prints the ELF.
fn build(app: &str, debug: bool, initrd: Option<PathBuf>) -> Result<u8, Error> {
    let profile = if debug { Profile::Debug } else { Profile::Release };
    let tar = match initrd {
        Some(dir) => {
            let (out, s) = crate::initrd::pack_for_app(app, &dir)?;
            println!("{}: initrd, {} files, {} directories, {} bytes", out.display(), s.files, s.dirs, s.bytes);
            Some(out)
        }
        None => None,
    };
    let img = crate::stdapp::build_image(app, profile, tar.as_deref())?;
    println!("{}{}", img.summary(), if tar.is_some() { " with the initrd embedded" } else { "" });
    Ok(0)
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
        Cli::try_parse_from(std::iter::once("images").chain(args.iter().copied()))
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
            Cmd::Build { app, debug, initrd } => {
                assert_eq!((app.as_str(), debug, initrd), ("hello", true, None))
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
