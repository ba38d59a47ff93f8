//! What `images run` is given, for either hypervisor: [`RunArgs`] (the command's options, also a clap argument
//! group so every front-end parses them alike), [`Hypervisor`], and [`resolve_initrd`].
//!
//! Shared by the runners [`crate::qemu::run`], [`crate::xen::run`] and [`crate::hyperv::run`]; none depends on the command line
//! front-end ([`crate::cli`]), which only parses into these and dispatches.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::Args;

use crate::forward::PortForward;
use crate::initrd::{self, InitrdError};
use crate::project::{App, CrateArgs};
use crate::qemu::{self, Accel, ConfigError, DiskBus, DiskSpec, KernelOption, Machine, NetKind, RunOptions};

/// Which hypervisor `images run` boots the app under (`--hypervisor`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Hypervisor {
    /// QEMU (KVM or TCG) directly: the default.
    #[default]
    Qemu,
    /// Xen: as a PVH domU, on this dom0 or on the nested Xen host.
    Xen,
    /// Hyper-V: on the nested Hyper-V-style host (KVM's Hyper-V enlightenments and QEMU's VMBus, under QEMU TCG).
    Hyperv,
}

impl FromStr for Hypervisor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "qemu" => Ok(Hypervisor::Qemu),
            "xen" => Ok(Hypervisor::Xen),
            "hyperv" => Ok(Hypervisor::Hyperv),
            _ => Err(format!("unknown hypervisor `{s}` (use qemu, xen or hyperv)")),
        }
    }
}

impl fmt::Display for Hypervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hypervisor::Qemu => "qemu",
            Hypervisor::Xen => "xen",
            Hypervisor::Hyperv => "hyperv",
        })
    }
}

/// Options of `images run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The app's package name, e.g. hello or httpd, as -p NAME (not with --image).
    #[arg(conflicts_with_all = ["image", "package"], default_value = "", hide_default_value = true)]
    pub app: String,
    /// Which crate and binary: -p, --bin, --manifest-path.
    #[command(flatten)]
    pub krate: CrateArgs,
    /// Build with the dev profile (full debug info, for --gdb) instead of --release.
    #[arg(long, conflicts_with = "image")]
    pub debug: bool,
    /// Boot this packaged disk (`images package`) through firmware on q35 instead of building an app.
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    /// Firmware for --image: SeaBIOS or OVMF [default: bios].
    #[arg(long, value_name = "bios|uefi")]
    pub boot: Option<crate::diskboot::Firmware>,
    /// Boot under QEMU directly; as a Xen PVH domU (with `xl` on PATH, a dom0, through xl, else on a Xen 4.17
    /// host nested under QEMU TCG); or on a Hyper-V-style host nested under QEMU TCG (Linux KVM with Hyper-V
    /// enlightenments, VMBus and hv-balloon). The nested hosts are downloaded from Debian on first use.
    #[arg(long, value_name = "qemu|xen|hyperv", default_value = "qemu")]
    pub hypervisor: Hypervisor,
    /// With --hypervisor hyperv: whether the host publishes a valid reference TSC page (its Linux runs with the
    /// `tsc` clocksource) or not (the guest then reads the reference counter MSR) [default: on].
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    pub hv_tsc_page: Option<bool>,
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
    /// Network [default: user when the app declares ports ([package.metadata.zirvium] ports) or --port is
    /// given, tap when --tap is given, else none].
    #[arg(long, value_name = "user|tap|none")]
    pub net: Option<NetKind>,
    /// Forward a host port to a guest port with user networking; repeatable [default: the app's
    /// [package.metadata.zirvium] ports, httpd's 8080:80].
    #[arg(long = "port", value_name = "[tcp:|udp:]HOST:GUEST")]
    pub ports: Vec<PortForward>,
    /// Host tap interface for --net tap; create it first: ip tuntap add dev NAME mode tap; ip link set NAME up.
    #[arg(long, value_name = "NAME")]
    pub tap: Option<String>,
    /// Kernel option, placed before `--` on the kernel command line; repeatable (e.g. loglevel=debug).
    #[arg(long = "kernel-opt", value_name = "KEY=VALUE")]
    pub kernel_opts: Vec<KernelOption>,
    /// Attach a raw disk image, read-only with the suffix `:ro`; repeatable (the guest mounts the first at
    /// /data).
    #[arg(long = "disk", value_name = "FILE[:ro]")]
    pub disks: Vec<DiskSpec>,
    /// The controller the disks are attached to: one virtio-blk device per disk, one virtio-scsi adapter with
    /// a scsi-hd per disk, or one NVMe controller per disk (PCI: needs --machine q35 or pc).
    #[arg(long = "disk-bus", value_name = "virtio-blk|virtio-scsi|nvme", default_value = "virtio-blk")]
    pub disk_bus: DiskBus,
    /// Embed a ustar archive, or a directory packed into one, in the image as its initrd, mounted read-only at /
    /// by the guest [default: the app's own initrd/ directory, next to its Cargo.toml, when it has one].
    #[arg(long, value_name = "FILE|DIR")]
    pub initrd: Option<PathBuf>,
    /// Start QEMU halted with its gdb stub on 127.0.0.1:PORT and print the gdb command that attaches
    /// [PORT default: 1234].
    #[arg(long, value_name = "PORT", num_args = 0..=1, require_equals = true, default_missing_value = "1234")]
    pub gdb: Option<u16>,
    /// Record the NIC's traffic, both directions, in FILE (pcap; QEMU filter-dump).
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// Stop QEMU after this many seconds and exit 124.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
    /// Arguments for the app, after `--`.
    #[arg(last = true, value_name = "APP ARGS")]
    pub app_args: Vec<String>,
}

impl RunArgs {
    /// The app crate to run: `[APP]` or `-p`, `--bin`, `--manifest-path` ([`crate::project::resolve`]).
    pub fn selection(&self) -> CrateArgs {
        self.krate.with_app(&self.app)
    }

    /// The run's options with an empty kernel path (set after the build), validated, for an app that declares
    /// the port forwards `app_ports` ([`App::ports`]). Errors: bad combinations of `--net`, `--port`, `--tap`,
    /// `--pcap`, bad app arguments, missing disk or initrd files.
    pub fn options(&self, accel: Accel, app_ports: &[PortForward]) -> Result<RunOptions, ConfigError> {
        let mut opts = RunOptions::new("", accel);
        opts.machine = self.machine;
        opts.mem_mib = self.mem;
        opts.smp = self.smp;
        opts.network = qemu::resolve_network(app_ports, self.net, &self.ports, self.tap.as_deref())?;
        opts.gdb_port = self.gdb;
        opts.pcap = self.pcap.clone();
        opts.kernel_options = self.kernel_opts.clone();
        opts.app_args = self.app_args.clone();
        for disk in &self.disks {
            opts.push_disk(disk);
        }
        opts.disk_bus = self.disk_bus;
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

/// `on` or `off` as a bool, for switches like `--hv-tsc-page`.
pub fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("`{s}`: expected on or off")),
    }
}

/// The boot module for `app`: `given` as is when it is a file; packed to `TARGET/initrd/BIN.tar`
/// ([`initrd::app_archive`]) when it is a directory; else the app's own `initrd/` directory (next to its
/// Cargo.toml), packed, when it exists; else none. Errors: packing.
pub fn resolve_initrd(app: &App, given: Option<&Path>) -> Result<Option<PathBuf>, InitrdError> {
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
        assert!(err.to_string().contains("unknown hypervisor `kvm` (use qemu, xen or hyperv)"), "{err}");
        assert_eq!(Hypervisor::Xen.to_string(), "xen");
        let r = run_args(&["hello", "--hypervisor", "hyperv", "--hv-tsc-page", "off"]);
        assert_eq!((r.hypervisor, r.hv_tsc_page), (Hypervisor::Hyperv, Some(false)));
        assert_eq!(run_args(&["hello"]).hv_tsc_page, None);
        let err = parse_run_args(&["hello", "--hv-tsc-page", "maybe"]).unwrap_err();
        assert!(err.to_string().contains("expected on or off"), "{err}");
    }

    #[test]
    fn run_disks_read_only_suffix() {
        let r = run_args(&["kv", "--disk", "a.img", "--disk", "b.img:ro"]);
        let spec = |p: &str, read_only| DiskSpec { path: p.into(), read_only };
        assert_eq!(r.disks, [spec("a.img", false), spec("b.img", true)]);
        let e = parse_run_args(&["kv", "--disk", ":ro"]).unwrap_err();
        assert!(e.to_string().contains("expected FILE, FILE:ro or FILE:rw"), "{e}");
        // The options check the files; a missing one is named.
        assert_eq!(r.options(Accel::Tcg, &[]), Err(ConfigError::NoFile("a.img".into())));
        assert_eq!(r.disk_bus, DiskBus::VirtioBlk);
        let r = run_args(&["kv", "--disk", "a.img", "--disk-bus", "nvme"]);
        assert_eq!(r.options(Accel::Tcg, &[]), Err(ConfigError::NvmeNeedsPci(Machine::Microvm)));
        assert_eq!(run_args(&["kv", "--disk-bus", "virtio-scsi"]).disk_bus, DiskBus::VirtioScsi);
        let e = parse_run_args(&["kv", "--disk-bus", "ide"]).unwrap_err();
        assert!(e.to_string().contains("unknown disk bus `ide` (use virtio-blk, virtio-scsi or nvme)"), "{e}");
    }

    #[test]
    fn run_defaults() {
        let r = run_args(&["hello"]);
        assert_eq!((r.machine, r.accel, r.mem, r.smp, r.net), (Machine::Microvm, None, 64, 1, None));
        assert!(r.ports.is_empty() && r.kernel_opts.is_empty() && r.app_args.is_empty() && r.timeout.is_none());
        let o = r.options(Accel::Tcg, &[]).unwrap();
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
        let o = r.options(Accel::Tcg, &[]).unwrap();
        assert_eq!(o.kernel_command_line(), "loglevel=debug gw=10.0.2.2 -- a --b");
        assert_eq!(o.forwards(), [PortForward::tcp(9090, 80), PortForward::udp(5353, 53)]);
    }

    #[test]
    fn httpd_gets_default_forward() {
        let httpd = crate::project::workspace_app("httpd").unwrap();
        let o = run_args(&["httpd"]).options(Accel::Kvm, &httpd.ports).unwrap();
        assert_eq!(o.network, Network::User { forwards: vec![PortForward::tcp(8080, 80)] });
    }

    #[test]
    fn tap_network() {
        let o = run_args(&["httpd", "--net", "tap", "--tap", "zt0"]).options(Accel::Kvm, &[]).unwrap();
        assert_eq!(o.network, Network::Tap { ifname: "zt0".into() });
    }

    #[test]
    fn crate_selection_debug_gdb_pcap() {
        let r = run_args(&["-p", "web", "--bin", "web2", "--manifest-path", "/a/Cargo.toml", "--debug", "--gdb"]);
        let want = CrateArgs {
            package: Some("web".into()),
            bin: Some("web2".into()),
            manifest_path: Some("/a/Cargo.toml".into()),
        };
        assert_eq!((r.selection(), r.debug, r.gdb), (want, true, Some(1234)));
        assert_eq!(run_args(&["httpd"]).selection().package.as_deref(), Some("httpd"));
        assert_eq!(run_args(&[]).selection(), CrateArgs::default());
        assert_eq!(run_args(&["--gdb=4321", "--pcap", "x.pcap", "--port", "1:80"]).gdb, Some(4321));
        let o = run_args(&["--pcap", "x.pcap", "--port", "1:80"]).options(Accel::Tcg, &[]).unwrap();
        assert_eq!(o.pcap, Some(PathBuf::from("x.pcap")));
        assert_eq!(run_args(&["--pcap", "x.pcap"]).options(Accel::Tcg, &[]), Err(ConfigError::PcapNeedsNetwork));
        for (bad, needle) in [
            (&["httpd", "-p", "kv"][..], "cannot be used with"),
            (&["--image", "d.img", "--debug"], "cannot be used with"),
        ] {
            let e = parse_run_args(bad).unwrap_err();
            assert!(e.to_string().contains(needle), "{bad:?}: {e}");
        }
    }

    #[test]
    fn rejects_bad_combinations() {
        let cases: [(&[&str], ConfigError); 3] = [
            (&["hello", "--net", "none", "--port", "1:2"], ConfigError::PortsNeedUserNet),
            (&["httpd", "--net", "tap"], ConfigError::TapMissing),
            (&["hello", "--", "a\"b"], ConfigError::AppArg("a\"b".into())),
        ];
        for (args, want) in cases {
            assert_eq!(run_args(args).options(Accel::Tcg, &[]), Err(want), "{args:?}");
        }
    }
}
