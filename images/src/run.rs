//! What `images run` is given, for either hypervisor: [`RunArgs`] (the command's options, also a clap argument
//! group so every front-end parses them alike), [`Hypervisor`], and [`resolve_initrd`].
//!
//! Shared by the two runners, [`crate::qemu::run`] and [`crate::xen::run`]; neither depends on the command line
//! front-end ([`crate::cli`]), which only parses into these and dispatches.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::Args;

use crate::forward::PortForward;
use crate::initrd::{self, InitrdError};
use crate::qemu::{self, Accel, ConfigError, DiskSpec, KernelOption, Machine, NetKind, RunOptions};

/// Which hypervisor `images run` boots the app under (`--hypervisor`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Hypervisor {
    /// QEMU (KVM or TCG) directly: the default.
    #[default]
    Qemu,
    /// Xen: as a PVH domU, on this dom0 or on the nested Xen host.
    Xen,
}

impl FromStr for Hypervisor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "qemu" => Ok(Hypervisor::Qemu),
            "xen" => Ok(Hypervisor::Xen),
            _ => Err(format!("unknown hypervisor `{s}` (use qemu or xen)")),
        }
    }
}

impl fmt::Display for Hypervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hypervisor::Qemu => "qemu",
            Hypervisor::Xen => "xen",
        })
    }
}

/// Options of `images run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The app's package name, e.g. hello or httpd, or a crate directory (with a `/`); a crate that does not
    /// depend on `zirvium` is built as a Rust std image (x86_64-unknown-hermit, pinned nightly). Not with --image.
    #[arg(required_unless_present = "image", conflicts_with = "image", default_value = "", hide_default_value = true)]
    pub app: String,
    /// Boot this packaged disk (`images package`) through firmware on q35 instead of building an app.
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    /// Firmware for --image: SeaBIOS or OVMF [default: bios].
    #[arg(long, value_name = "bios|uefi")]
    pub boot: Option<crate::diskboot::Firmware>,
    /// Boot under QEMU directly, or as a Xen PVH domU: with `xl` on PATH (a dom0) through xl, else on a Xen
    /// 4.17 host nested under QEMU TCG (downloaded from Debian on first use).
    #[arg(long, value_name = "qemu|xen", default_value = "qemu")]
    pub hypervisor: Hypervisor,
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
    pub disks: Vec<DiskSpec>,
    /// Embed a ustar archive, or a directory packed into one, in the image as its initrd, mounted read-only at /
    /// by the guest [default: the app's own apps/APP/initrd/ directory when it has one].
    #[arg(long, value_name = "FILE|DIR")]
    pub initrd: Option<PathBuf>,
    /// Stop QEMU after this many seconds and exit 124.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
    /// For a std crate: build its tests (the libtest harness) instead of its binary and run them; the exit status
    /// is the harness's (0 when all passed; 101 when one failed, which ends the run under panic=abort).
    #[arg(long, conflicts_with = "image")]
    pub test: bool,
    /// Arguments for the app, after `--`.
    #[arg(last = true, value_name = "APP ARGS")]
    pub app_args: Vec<String>,
}

impl RunArgs {
    /// The run's options with an empty kernel path (set after the build), validated. Errors: bad combinations
    /// of `--net`, `--port`, `--tap`, bad app arguments, missing disk or initrd files.
    pub fn options(&self, accel: Accel) -> Result<RunOptions, ConfigError> {
        let mut opts = RunOptions::new("", accel);
        opts.machine = self.machine;
        opts.mem_mib = self.mem;
        opts.smp = self.smp;
        opts.network = qemu::resolve_network(&self.app, self.net, &self.ports, self.tap.as_deref())?;
        opts.kernel_options = self.kernel_opts.clone();
        // A test image's harness needs its own arguments first (see `stdapp::TEST_HARNESS_ARGS`).
        let harness = if self.test { &crate::stdapp::TEST_HARNESS_ARGS[..] } else { &[] };
        opts.app_args = harness.iter().map(|a| a.to_string()).chain(self.app_args.iter().cloned()).collect();
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

    /// Builds the image to run (release): the app, or with `--test` a std crate's test harness, with `initrd`
    /// embedded. Errors: [`crate::stdapp::StdError`].
    pub fn build(&self, initrd: Option<&Path>) -> Result<crate::cargo::Image, crate::stdapp::StdError> {
        if self.test {
            crate::stdapp::build_test_image(&self.app, crate::cargo::Profile::Release, initrd)
        } else {
            crate::stdapp::build_image(&self.app, crate::cargo::Profile::Release, initrd)
        }
    }
}

/// The boot module for `app`: `given` as is when it is a file; packed to `target/initrd/APP.tar`
/// ([`initrd::app_archive`]) when it is a directory; else the app's own `apps/APP/initrd/` directory, packed,
/// when it exists; else none. Errors: packing.
pub fn resolve_initrd(app: &str, given: Option<&Path>) -> Result<Option<PathBuf>, InitrdError> {
    initrd::for_app(app, given)
}

/// Parses `images run`'s arguments (after `run`) as the `images` binary does, for tests of the runners.
#[cfg(test)]
pub(crate) fn parse_run_args(args: &[&str]) -> Result<RunArgs, clap::Error> {
    use clap::Parser;

    #[derive(Parser)]
    struct Run {
        #[command(flatten)]
        args: RunArgs,
    }
    Run::try_parse_from(std::iter::once("run").chain(args.iter().copied())).map(|r| r.args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::Network;

    fn run_args(args: &[&str]) -> RunArgs {
        parse_run_args(args).unwrap()
    }

    #[test]
    fn hypervisor_option() {
        assert_eq!(run_args(&["hello"]).hypervisor, Hypervisor::Qemu);
        assert_eq!(run_args(&["hello", "--hypervisor", "xen"]).hypervisor, Hypervisor::Xen);
        let err = parse_run_args(&["hello", "--hypervisor", "kvm"]).unwrap_err();
        assert!(err.to_string().contains("unknown hypervisor `kvm` (use qemu or xen)"), "{err}");
        assert_eq!(Hypervisor::Xen.to_string(), "xen");
    }

    #[test]
    fn run_disks_read_only_suffix() {
        let r = run_args(&["kv", "--disk", "a.img", "--disk", "b.img:ro"]);
        let spec = |p: &str, read_only| DiskSpec { path: p.into(), read_only };
        assert_eq!(r.disks, [spec("a.img", false), spec("b.img", true)]);
        let e = parse_run_args(&["kv", "--disk", ":ro"]).unwrap_err();
        assert!(e.to_string().contains("expected FILE, FILE:ro or FILE:rw"), "{e}");
        // The options check the files; a missing one is named.
        assert_eq!(r.options(Accel::Tcg), Err(ConfigError::NoFile("a.img".into())));
    }

    #[test]
    fn run_defaults() {
        let r = run_args(&["hello"]);
        assert_eq!((r.machine, r.accel, r.mem, r.smp, r.net), (Machine::Microvm, None, 64, 1, None));
        assert!(r.ports.is_empty() && r.kernel_opts.is_empty() && r.app_args.is_empty() && r.timeout.is_none());
        let o = r.options(Accel::Tcg).unwrap();
        assert_eq!(o.network, Network::None);
        assert_eq!(o.kernel_command_line(), "");
    }

    #[test]
    fn run_everything() {
        let r = run_args(&[
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
        let o = run_args(&["httpd"]).options(Accel::Kvm).unwrap();
        assert_eq!(o.network, Network::User { forwards: vec![PortForward::tcp(8080, 80)] });
    }

    #[test]
    fn tap_network() {
        let o = run_args(&["httpd", "--net", "tap", "--tap", "zt0"]).options(Accel::Kvm).unwrap();
        assert_eq!(o.network, Network::Tap { ifname: "zt0".into() });
    }

    #[test]
    fn rejects_bad_combinations() {
        let cases: [(&[&str], ConfigError); 3] = [
            (&["hello", "--net", "none", "--port", "1:2"], ConfigError::PortsNeedUserNet),
            (&["httpd", "--net", "tap"], ConfigError::TapMissing),
            (&["hello", "--", "a\"b"], ConfigError::AppArg("a\"b".into())),
        ];
        for (args, want) in cases {
            assert_eq!(run_args(args).options(Accel::Tcg), Err(want), "{args:?}");
        }
    }
}
