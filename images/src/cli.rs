//! The `images` command line: `build <app> [--debug]`, `run <app> [options] [-- app args]`, `run --image FILE`,
//! `package <app> --format F --output FILE`, `inspect FILE`, `disk create`, `xl-config`.
//!
//! Exit codes of `run`: the guest's status (0..=127), 124 when `--timeout` expired, 125 when QEMU failed, 2 for
//! usage errors and a missing QEMU, 1 when the build failed.

use std::io::{Read, Write};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

use crate::cargo::{build_app_with_initrd, BuildError, Profile};
use crate::exit::{Outcome, TIMEOUT_EXIT};
use crate::forward::{PortForward, Protocol};
use crate::qemu::{self, Accel, ConfigError, KernelOption, Machine, NetKind, RunOptions};

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
    /// Build apps/<APP> for x86_64-unknown-none and print the ELF's path and size.
    Build {
        /// The app's package name, e.g. hello or httpd.
        app: String,
        /// Build with the dev profile instead of --release.
        #[arg(long)]
        debug: bool,
        /// Pack DIR as the app's initrd (ustar at target/initrd/APP.tar) and embed it in the image; the guest
        /// mounts it read-only at /.
        #[arg(long, value_name = "DIR")]
        initrd: Option<std::path::PathBuf>,
    },
    /// Disk images for the guest's /data mount.
    #[command(subcommand)]
    Disk(DiskCmd),
    /// Build apps/<APP> (release) and boot it under QEMU; the serial console goes to stdout and the exit status
    /// is the guest's.
    Run(RunArgs),
    /// Build apps/<APP> (release) and print an xl config that runs it as a Xen PVH domU on this machine as dom0.
    XlConfig(crate::xen::run::XlConfigArgs),
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
    /// The app's package name, e.g. httpd.
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
    pub kernel_opts: Vec<KernelOption>,
    /// Arguments for the app, after `--`.
    #[arg(last = true, value_name = "APP ARGS")]
    pub app_args: Vec<String>,
}

/// `images disk` subcommands.
#[derive(Debug, Subcommand)]
pub enum DiskCmd {
    /// Create a raw disk image with a FAT file system (FAT32 from ~33 MiB up), optionally filled from DIR.
    Create {
        /// The disk image to write.
        file: std::path::PathBuf,
        /// Size: bytes or K/M/G, e.g. 64M.
        #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = crate::disk::parse_size)]
        size: u64,
        /// Copy this directory's tree into the new file system.
        #[arg(long, value_name = "DIR")]
        from: Option<std::path::PathBuf>,
        /// Overwrite FILE if it exists.
        #[arg(long)]
        force: bool,
    },
}

/// Options of `images run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The app's package name, e.g. hello or httpd (not with --image).
    #[arg(required_unless_present = "image", conflicts_with = "image", default_value = "", hide_default_value = true)]
    pub app: String,
    /// Boot this packaged disk (`images package`) through firmware on q35 instead of building an app.
    #[arg(long, value_name = "FILE")]
    pub image: Option<std::path::PathBuf>,
    /// Firmware for --image: SeaBIOS or OVMF [default: bios].
    #[arg(long, value_name = "bios|uefi")]
    pub boot: Option<crate::diskboot::Firmware>,
    /// Boot under QEMU directly, or as a Xen PVH domU: with `xl` on PATH (a dom0) through xl, else on a Xen
    /// 4.17 host nested under QEMU TCG (downloaded from Debian on first use).
    #[arg(long, value_name = "qemu|xen", default_value = "qemu")]
    pub hypervisor: crate::xen::run::Hypervisor,
    /// QEMU machine.
    #[arg(long, value_name = "microvm|q35|pc", default_value = "microvm")]
    pub machine: Machine,
    /// Accelerator [default: kvm when /dev/kvm opens read-write, else tcg].
    #[arg(long, value_name = "kvm|tcg")]
    pub accel: Option<Accel>,
    /// Guest RAM, in MiB (64 or 64M) or GiB (1G).
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = qemu::parse_mem_mib)]
    pub mem: u32,
    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=255))]
    pub smp: u16,
    /// Network [default: user for httpd and udpecho or when --port is given, tap when --tap is given, else none].
    #[arg(long, value_name = "user|tap|none")]
    pub net: Option<NetKind>,
    /// Forward a host port to a guest port with user networking; repeatable [default for httpd: 8080:80].
    #[arg(long = "port", value_name = "[tcp:|udp:]HOST:GUEST")]
    pub ports: Vec<PortForward>,
    /// Host tap interface for --net tap; create it first: ip tuntap add dev NAME mode tap; ip link set NAME up.
    #[arg(long, value_name = "NAME")]
    pub tap: Option<String>,
    /// Kernel option, placed before `--` on the kernel command line; repeatable (e.g. loglevel=debug).
    #[arg(long = "kernel-opt", value_name = "KEY=VALUE")]
    pub kernel_opts: Vec<KernelOption>,
    /// Attach a raw disk image as a virtio-blk device, read-only with the suffix `:ro`; repeatable (the guest
    /// mounts the first at /data).
    #[arg(long = "disk", value_name = "FILE[:ro]")]
    pub disks: Vec<qemu::DiskSpec>,
    /// Embed a ustar archive, or a directory packed into one, in the image as its initrd, mounted read-only at /
    /// by the guest [default: the app's own apps/APP/initrd/ directory when it has one].
    #[arg(long, value_name = "FILE|DIR")]
    pub initrd: Option<std::path::PathBuf>,
    /// Stop QEMU after this many seconds and exit 124.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
    /// Arguments for the app, after `--`.
    #[arg(last = true, value_name = "APP ARGS")]
    pub app_args: Vec<String>,
}

impl RunArgs {
    /// The run's options with an empty kernel path (set after the build), validated. Errors: bad combinations
    /// of `--net`, `--port`, `--tap`, bad app arguments.
    pub fn options(&self, accel: Accel) -> Result<RunOptions, ConfigError> {
        let mut opts = RunOptions::new("", accel);
        opts.machine = self.machine;
        opts.mem_mib = self.mem;
        opts.smp = self.smp;
        opts.network = qemu::resolve_network(&self.app, self.net, &self.ports, self.tap.as_deref())?;
        opts.kernel_options = self.kernel_opts.clone();
        opts.app_args = self.app_args.clone();
        for disk in &self.disks {
            opts.push_disk(disk);
        }
        opts.initrd = self.initrd.clone().filter(|p| !p.is_dir());
        if self.image.is_some() {
            crate::diskboot::adjust_options(&mut opts, self.net.is_some(), self.initrd.is_some())?;
        } else if self.boot.is_some() {
            return Err(ConfigError::NeedsImage("--boot"));
        }
        opts.validate()?;
        Ok(opts)
    }
}

/// Failures of the `images` command, each mapped to an exit code by [`Error::exit_code`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad options or environment (exit 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The image did not build (exit 1).
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Installing QEMU failed (exit 2).
    #[error("installing QEMU failed at `{step}` ({status}); run the steps by hand:\n{}", qemu::install_instructions())]
    Install {
        /// The recipe step that failed.
        step: &'static str,
        /// Its status.
        status: String,
    },
    /// `images disk create` failed (exit 1).
    #[error(transparent)]
    Disk(#[from] crate::disk::DiskError),
    /// Packing an initrd failed (exit 1).
    #[error(transparent)]
    Initrd(#[from] crate::initrd::InitrdError),
    /// QEMU could not be started or waited for (exit 125).
    #[error("QEMU: {0}")]
    Qemu(std::io::Error),
    /// A Xen run failed before the domU could report (exit code from [`crate::xen::Error::exit_code`]).
    #[error(transparent)]
    Xen(#[from] crate::xen::Error),
    /// `images package` failed (exit 1).
    #[error(transparent)]
    Package(#[from] crate::package::PackageError),
    /// `images inspect` failed (exit 1).
    #[error(transparent)]
    Inspect(#[from] crate::inspect::InspectError),
    /// Preparing `run --image` failed (exit 2: a missing tool or an unusable image).
    #[error(transparent)]
    DiskBoot(#[from] crate::diskboot::DiskBootError),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::Install { .. } => 2,
            Error::Build(_) | Error::Disk(_) | Error::Initrd(_) | Error::Package(_) | Error::Inspect(_) => 1,
            Error::DiskBoot(_) => 2,
            Error::Qemu(_) => crate::exit::QEMU_FAILED_EXIT,
            Error::Xen(e) => e.exit_code(),
        }
    }
}

/// Entry point of the binary: parses `std::env::args` and runs the subcommand.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Build { app, debug, initrd } => (|| {
            let profile = if debug { Profile::Debug } else { Profile::Release };
            let tar = match initrd {
                Some(dir) => {
                    let out = crate::cargo::target_dir().join("initrd").join(format!("{app}.tar"));
                    let s = crate::initrd::pack(&dir, &out)?;
                    println!("{}: initrd, {} files, {} directories, {} bytes", out.display(), s.files, s.dirs, s.bytes);
                    Some(out)
                }
                None => None,
            };
            let img = build_app_with_initrd(&app, profile, tar.as_deref())?;
            println!("{}{}", img.summary(), if tar.is_some() { " with the initrd embedded" } else { "" });
            Ok(0)
        })(),
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
        Cmd::XlConfig(args) => crate::xen::run::xl_config(&args),
        Cmd::Package(args) => package(&args),
        Cmd::Inspect { file } => crate::inspect::inspect(&file).map_err(Error::from).map(|report| {
            print!("{report}");
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

/// `images run`: checks the options and QEMU, builds, boots, and returns the exit code.
pub fn run(args: &RunArgs) -> Result<u8, Error> {
    if args.hypervisor == crate::xen::run::Hypervisor::Xen {
        return crate::xen::run::run(args);
    }
    // Option errors first, before a build that may take minutes.
    args.options(Accel::Tcg)?;
    let qemu_bin = match qemu::find_qemu() {
        Ok(path) => path,
        Err(_) if qemu::is_root() && qemu::find_in_path("apt-get").is_some() => install_qemu()?,
        Err(missing) => return Err(missing.into()),
    };
    let (accel, why) = choose_accel(args.accel)?;
    let mut opts = args.options(accel)?;
    // Removed when the run ends: OVMF's per-VM variable store.
    let mut _vars = None;
    if let Some(image) = &args.image {
        let vars = crate::cargo::target_dir().join(format!("ovmf-vars-{}.fd", std::process::id()));
        let firmware = args.boot.unwrap_or_default();
        let format = crate::diskboot::image_format(image)?;
        opts.boot_disk = Some(crate::diskboot::DiskBoot::new(image, &format, firmware, &vars)?);
        _vars = Some(crate::diskboot::RemoveOnDrop(vars));
        eprintln!("images: booting {} ({format}) through {firmware} on {}", image.display(), opts.machine);
    } else {
        let initrd = resolve_initrd(&args.app, args.initrd.as_deref())?;
        let image = build_app_with_initrd(&args.app, Profile::Release, initrd.as_deref())?;
        eprintln!("images: built {}", image.summary());
        if let Some(initrd) = &initrd {
            eprintln!("images: initrd {} embedded in the image", initrd.display());
        }
        opts.kernel = image.path;
        // Embedded rather than passed as `-initrd`: the image is self-contained and boots the same under Xen.
        opts.initrd = None;
    }
    eprintln!("images: accel {accel} ({why})");
    for f in opts.forwards() {
        match f.protocol {
            Protocol::Tcp => eprintln!("images: open http://localhost:{}/", f.host),
            Protocol::Udp => eprintln!("images: udp localhost:{} -> guest port {}", f.host, f.guest),
        }
    }
    let mut cmd = qemu::qemu_command(&opts)?;
    eprintln!("images: {} ({})", qemu::shell_line(&cmd), qemu_bin.display());
    cmd.stdout(Stdio::inherit()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(Error::Qemu)?;

    // Copy QEMU's stderr through while keeping it for the failure report.
    let stderr_text = Arc::new(Mutex::new(String::new()));
    let tee = child.stderr.take().map(|mut pipe| {
        let text = Arc::clone(&stderr_text);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut hinted = false;
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let _ = std::io::stderr().write_all(&buf[..n]);
                if let Ok(mut t) = text.lock() {
                    t.push_str(&String::from_utf8_lossy(&buf[..n]));
                    if accel == Accel::Kvm && !hinted && t.contains("emulation failure") {
                        hinted = true;
                        eprintln!("images: {}", crate::diskboot::KVM_EMULATION_HINT);
                    }
                }
            }
        })
    });

    let deadline = args.timeout.map(|s| Instant::now() + Duration::from_secs(s));
    let status = loop {
        if let Some(status) = child.try_wait().map_err(Error::Qemu)? {
            break Some(status);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            // Kill by the child's own pid; then reap it.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if let Some(t) = tee {
        let _ = t.join();
    }
    let Some(status) = status else {
        eprintln!("images: timeout after {} s; QEMU stopped", args.timeout.unwrap_or(0));
        return Ok(TIMEOUT_EXIT);
    };
    let stderr_text = stderr_text.lock().map(|t| t.clone()).unwrap_or_default();
    let outcome = Outcome::from_status(status, &stderr_text);
    match outcome {
        Outcome::Guest(_) => {}
        Outcome::NoStatus => eprintln!("images: {outcome}"),
        Outcome::QemuFailed { .. } => {
            eprintln!("images: {outcome}; QEMU's stderr:\n{}", stderr_text.trim_end());
        }
    }
    Ok(outcome.exit_code())
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

/// The boot module for `app`: `given` as is when it is a file; packed to target/initrd/APP.tar when it is a
/// directory; else the app's own apps/APP/initrd/ directory, packed, when it exists. Errors: packing.
pub fn resolve_initrd(app: &str, given: Option<&std::path::Path>) -> Result<Option<std::path::PathBuf>, Error> {
    Ok(crate::initrd::for_app(app, given)?)
}

/// The accelerator and why: the requested one (KVM only if `/dev/kvm` opens) or the detected one.
fn choose_accel(requested: Option<Accel>) -> Result<(Accel, String), ConfigError> {
    match requested {
        Some(Accel::Kvm) => match qemu::kvm_usable() {
            Ok(()) => Ok((Accel::Kvm, "--accel kvm; /dev/kvm opened".to_owned())),
            Err(reason) => Err(ConfigError::KvmUnavailable(reason)),
        },
        Some(Accel::Tcg) => Ok((Accel::Tcg, "--accel tcg".to_owned())),
        None => Ok(qemu::detect_accel()),
    }
}

/// Installs QEMU with [`qemu::QEMU_INSTALL_RECIPE`] (caller checked: root, apt-get present), printing each step.
fn install_qemu() -> Result<std::path::PathBuf, Error> {
    eprintln!("images: {} not found; installing QEMU from bookworm-backports:", qemu::QEMU_BINARY);
    for step in qemu::QEMU_INSTALL_RECIPE {
        eprintln!("images: # {step}");
        let status = std::process::Command::new("sh")
            .args(["-c", step])
            .stdin(Stdio::null())
            .status()
            .map_err(|e| Error::Install { step, status: e.to_string() })?;
        if !status.success() {
            eprintln!("images: step failed ({status}): {step}");
            return Err(Error::Install { step, status: status.to_string() });
        }
    }
    qemu::find_qemu().map_err(Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::Network;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("images").chain(args.iter().copied()))
    }

    fn run_args(args: &[&str]) -> RunArgs {
        match parse(args).unwrap().command {
            Cmd::Run(r) => r,
            other => panic!("expected run, got {other:?}"),
        }
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
    fn run_disks_read_only_suffix() {
        let r = run_args(&["run", "kv", "--disk", "a.img", "--disk", "b.img:ro"]);
        let spec = |p: &str, read_only| qemu::DiskSpec { path: p.into(), read_only };
        assert_eq!(r.disks, [spec("a.img", false), spec("b.img", true)]);
        let e = parse(&["run", "kv", "--disk", ":ro"]).unwrap_err();
        assert!(e.to_string().contains("expected FILE, FILE:ro or FILE:rw"), "{e}");
        // The options check the files; a missing one is named.
        assert_eq!(r.options(Accel::Tcg), Err(ConfigError::NoFile("a.img".into())));
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
    fn run_defaults() {
        let r = run_args(&["run", "hello"]);
        assert_eq!((r.machine, r.accel, r.mem, r.smp, r.net), (Machine::Microvm, None, 64, 1, None));
        assert!(r.ports.is_empty() && r.kernel_opts.is_empty() && r.app_args.is_empty() && r.timeout.is_none());
        let o = r.options(Accel::Tcg).unwrap();
        assert_eq!(o.network, Network::None);
        assert_eq!(o.kernel_command_line(), "");
    }

    #[test]
    fn run_everything() {
        let r = run_args(&[
            "run",
            "httpd",
            "--machine",
            "q35",
            "--accel",
            "tcg",
            "--mem",
            "1G",
            "--smp",
            "2",
            "--port",
            "9090:80",
            "--port",
            "udp:5353:53",
            "--kernel-opt",
            "loglevel=debug",
            "--kernel-opt",
            "gw=10.0.2.2",
            "--timeout",
            "30",
            "--",
            "a",
            "--b",
        ]);
        assert_eq!((r.machine, r.accel, r.mem, r.smp, r.timeout), (Machine::Q35, Some(Accel::Tcg), 1024, 2, Some(30)));
        assert_eq!(r.ports, [PortForward::tcp(9090, 80), PortForward::udp(5353, 53)]);
        assert_eq!(r.app_args, ["a", "--b"]);
        let o = r.options(Accel::Tcg).unwrap();
        assert_eq!(o.kernel_command_line(), "loglevel=debug gw=10.0.2.2 -- a --b");
        assert_eq!(o.forwards(), [PortForward::tcp(9090, 80), PortForward::udp(5353, 53)]);
    }

    #[test]
    fn httpd_gets_default_forward() {
        let o = run_args(&["run", "httpd"]).options(Accel::Kvm).unwrap();
        assert_eq!(o.network, Network::User { forwards: vec![PortForward::tcp(8080, 80)] });
    }

    #[test]
    fn tap_network() {
        let o = run_args(&["run", "httpd", "--net", "tap", "--tap", "zt0"]).options(Accel::Kvm).unwrap();
        assert_eq!(o.network, Network::Tap { ifname: "zt0".into() });
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
    fn rejects_bad_combinations() {
        let cases: [(&[&str], ConfigError); 3] = [
            (&["run", "hello", "--net", "none", "--port", "1:2"], ConfigError::PortsNeedUserNet),
            (&["run", "httpd", "--net", "tap"], ConfigError::TapMissing),
            (&["run", "hello", "--", "a\"b"], ConfigError::AppArg("a\"b".into())),
        ];
        for (args, want) in cases {
            assert_eq!(run_args(args).options(Accel::Tcg), Err(want), "{args:?}");
        }
    }

    #[test]
    fn explicit_tcg_needs_no_probe() {
        assert_eq!(choose_accel(Some(Accel::Tcg)), Ok((Accel::Tcg, "--accel tcg".to_owned())));
        // KVM requested: either usable or refused with the probe's reason, never silently TCG.
        match (choose_accel(Some(Accel::Kvm)), qemu::kvm_usable()) {
            (Ok((Accel::Kvm, _)), Ok(())) => {}
            (Err(ConfigError::KvmUnavailable(r)), Err(reason)) => assert_eq!(r, reason),
            other => panic!("inconsistent KVM probe: {other:?}"),
        }
    }

    #[test]
    fn error_exit_codes() {
        assert_eq!(Error::from(ConfigError::QemuMissing).exit_code(), 2);
        assert_eq!(Error::from(BuildError::TargetMissing).exit_code(), 1);
        assert_eq!(Error::Qemu(std::io::Error::other("x")).exit_code(), 125);
    }
}
