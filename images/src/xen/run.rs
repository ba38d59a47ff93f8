//! `images run <app> --hypervisor xen` and `images xl-config <app>`.
//!
//! On a Xen dom0 (`xl` on `PATH`) `run` writes the xl config to `target/xen/<domain>.cfg` and runs
//! `xl create -F -c` with the console attached; elsewhere it boots the nested host ([`super::nested`]) with the
//! app as its domU. Either way the domU's console (and, nested, its port 0xe9 lines) goes to stdout, progress to
//! stderr, and the exit code is the domU's ([`super::status`]). The nested serial console is kept whole in
//! `target/xen-host/logs/<domain>.log`; its last lines are printed when something below the domU fails.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Args;

use super::console::{self, Event, Line};
use super::status::{parse_exit_status, DomainEnd, DOMAIN_FAILED_EXIT};
use super::{host, nested, xl, Dom0Kind, Domu, Error};
use crate::cargo::{BuildError, Profile};
use crate::exit::TIMEOUT_EXIT;
use crate::forward::{PortForward, Protocol};
use crate::host_tools::find_in_path;
use crate::lines::{create_log, forward_lines, print_failure, ConsoleChild};
use crate::project::{App, CrateArgs};
use crate::qemu::{self, Accel, KernelOption, Machine, NetKind, Network};
use crate::run::{resolve_initrd, RunArgs};
use crate::shell::shell_line;

/// Options of `images xl-config`.
#[derive(Debug, Args)]
pub struct XlConfigArgs {
    /// The app's package name, e.g. hello or httpd (built first, release), as -p NAME.
    #[arg(conflicts_with = "package", default_value = "", hide_default_value = true)]
    pub app: String,
    /// Which crate and binary: -p, --bin, --manifest-path.
    #[command(flatten)]
    pub krate: CrateArgs,
    /// Guest RAM, in MiB (64 or 64M) or GiB (1G).
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = qemu::parse_mem_mib)]
    pub mem: u32,
    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=255))]
    pub smp: u16,
    /// Give the domU a vif on this dom0 bridge [default: xenbr0 for apps that declare ports, e.g. httpd and
    /// udpecho, else no vif].
    #[arg(long, value_name = "BRIDGE")]
    pub bridge: Option<String>,
    /// No vif, even for network apps.
    #[arg(long, conflicts_with = "bridge")]
    pub no_network: bool,
    /// A raw disk image for blkfront (xvda, xvdb, ... in order); repeatable.
    #[arg(long = "disk", value_name = "FILE")]
    pub disks: Vec<PathBuf>,
    /// A boot module (xl `ramdisk`): a ustar archive, or a directory packed into one, mounted read-only at / by
    /// the guest [default: the app's own initrd/ directory when it has one].
    #[arg(long, value_name = "FILE|DIR")]
    pub initrd: Option<PathBuf>,
    /// Kernel option, placed before `--` on the kernel command line; repeatable (e.g. loglevel=debug).
    #[arg(long = "kernel-opt", value_name = "KEY=VALUE")]
    pub kernel_opts: Vec<KernelOption>,
    /// Arguments for the app, after `--`.
    #[arg(last = true, value_name = "APP ARGS")]
    pub app_args: Vec<String>,
}

/// `images xl-config`: builds the app and returns its xl config for this machine as dom0 (absolute paths).
/// Errors: bad options, a missing initrd or disk, the build, a config xl cannot take.
pub fn xl_config(args: &XlConfigArgs) -> Result<String, Error> {
    let mut opts = qemu::RunOptions::new("", Accel::Tcg);
    opts.kernel_options = args.kernel_opts.clone();
    opts.app_args = args.app_args.clone();
    opts.disks = args.disks.clone();
    opts.validate()?;
    let app = crate::project::resolve(&args.krate.with_app(&args.app)).map_err(BuildError::from)?;
    let default_bridge = (!app.ports.is_empty()).then(|| xl::DEFAULT_BRIDGE.to_owned());
    let bridge = if args.no_network { None } else { args.bridge.clone().or(default_bridge) };
    if let Some(missing) = args.initrd.as_ref().filter(|p| !p.exists()) {
        return Err(qemu::ConfigError::NoFile(missing.clone()).into());
    }
    let image = crate::cargo::build(&app, Profile::Release, None)?;
    eprintln!("images: built {}", image.summary());
    let domu = Domu {
        app: app.bin.clone(),
        kernel: image.path,
        memory_mib: args.mem,
        vcpus: args.smp,
        cmdline: opts.kernel_command_line(),
        bridge,
        // As `images run`: a directory is packed into a tar, and the app's own initrd/ is the default.
        ramdisk: resolve_initrd(&app, args.initrd.as_deref())?,
        disks: opts.disks.clone(),
    };
    Ok(domu.config(Dom0Kind::Local)?.render()?)
}

/// Checks the `images run` options that do not apply under Xen and returns the domU of `app` (kernel path empty
/// until the build) with the host ports to forward to it.
pub fn domu_for(args: &RunArgs, app: &App) -> Result<(Domu, Vec<PortForward>), Error> {
    if args.accel == Some(Accel::Kvm) {
        return Err(Error::Options(
            "--accel kvm: the nested Xen host runs under TCG (Xen cannot boot under this machine's nested KVM); drop --accel"
                .into(),
        ));
    }
    if args.machine != Machine::Microvm {
        return Err(Error::Options(format!(
            "--machine {}: with --hypervisor xen the app is a PVH domU and the nested host is always `pc`; drop --machine",
            args.machine
        )));
    }
    if args.net == Some(NetKind::Tap) || args.tap.is_some() {
        return Err(Error::Options(
            "--net tap: with --hypervisor xen the domU's vif is on dom0's bridge xenbr0; use --net user with --port"
                .into(),
        ));
    }
    if args.disk_bus != qemu::DiskBus::VirtioBlk {
        return Err(Error::Options(format!(
            "--disk-bus {}: with --hypervisor xen the domU's disks are Xen virtual block devices; drop --disk-bus",
            args.disk_bus
        )));
    }
    if args.gdb.is_some() || args.pcap.is_some() || args.debug {
        return Err(Error::Options(
            "--gdb, --pcap and --debug apply to QEMU runs; drop them or --hypervisor xen".into(),
        ));
    }
    let opts = args.options(Accel::Tcg, &app.ports)?;
    let (bridge, forwards) = match &opts.network {
        Network::None => (None, Vec::new()),
        Network::User { forwards } => (Some(xl::DEFAULT_BRIDGE.to_owned()), forwards.clone()),
        // Refused above; resolve_network only returns a tap for --net tap or --tap.
        Network::Tap { .. } => return Err(Error::Options("--net tap is not available with --hypervisor xen".into())),
    };
    let domu = Domu {
        app: app.bin.clone(),
        kernel: PathBuf::new(),
        memory_mib: args.mem,
        vcpus: args.smp,
        cmdline: opts.kernel_command_line(),
        bridge,
        ramdisk: opts.initrd.clone(),
        disks: opts.disks.clone(),
    };
    xl::check_name(&domu.name())?;
    Ok((domu, forwards))
}

/// `images run --hypervisor xen`: see the module docs. Returns the exit code: the domU's status,
/// [`TIMEOUT_EXIT`], or [`DOMAIN_FAILED_EXIT`]. Errors: options that do not apply under Xen, QEMU missing (nested;
/// installed when root), the build, the nested host's preparation, xl or QEMU not starting.
pub fn run(args: &RunArgs) -> Result<u8, Error> {
    let app = crate::project::resolve(&args.selection()).map_err(BuildError::from)?;
    let (mut domu, forwards) = domu_for(args, &app)?;
    let local = find_in_path("xl").is_some();
    if local && !args.ports.is_empty() {
        return Err(Error::Options(
            "--port: on a Xen dom0 the domU is reached at its own address on the bridge, not through forwards; drop --port".into(),
        ));
    }
    if !local {
        qemu::ensure_qemu(&mut |m| eprintln!("images: {m}"))?;
    }
    let image = crate::cargo::build(&app, Profile::Release, None)?;
    eprintln!("images: built {}", image.summary());
    domu.kernel = image.path;
    domu.ramdisk = resolve_initrd(&app, args.initrd.as_deref())?;
    if let Some(initrd) = &domu.ramdisk {
        eprintln!("images: initrd {}", initrd.display());
    }
    let deadline = args.timeout.map(|s| Instant::now() + Duration::from_secs(s));
    if local {
        run_local(&domu, deadline)
    } else {
        run_nested(&domu, &forwards, deadline)
    }
}

/// On a dom0: `xl create -F -c CONFIG`, console on stdout (scanned for `exit status N`), xl's messages on stderr
/// (scanned for the shutdown reason).
fn run_local(domu: &Domu, deadline: Option<Instant>) -> Result<u8, Error> {
    let dir = crate::cargo::target_dir().join("xen");
    let path = dir.join(format!("{}.cfg", domu.name()));
    let io = |what, path: &PathBuf| {
        let path = path.clone();
        move |source| Error::Io { what, path, source }
    };
    std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    std::fs::write(&path, domu.config(Dom0Kind::Local)?.render()?).map_err(io("writing", &path))?;
    eprintln!("images: xl create -F -c {} (the console detaches with Ctrl-])", path.display());
    let mut child = Command::new("xl")
        .args(["create", "-F", "-c"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn { what: "xl", source })?;
    let (tx, rx) = mpsc::channel();
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || forward_lines(out, &mut std::io::stdout(), |l| tx.send(("con", l)))));
    }
    if let Some(err) = child.stderr.take() {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || forward_lines(err, &mut std::io::stderr(), |l| tx.send(("xl", l)))));
    }
    drop(tx);
    let mut end = DomainEnd::default();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(("con", line)) => end.printed = parse_exit_status(&line).or(end.printed),
            Ok((_, line)) => {
                if let Some(Event::Shutdown { reason, .. }) = console::xl_event(&line) {
                    end.reason = Some(reason);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    eprintln!("images: timeout; destroying {}", domu.name());
                    let _ = Command::new("xl").args(["destroy", &domu.name()]).status();
                    let _ = child.kill();
                    let _ = child.wait();
                    return Ok(TIMEOUT_EXIT);
                }
            }
        }
    }
    for r in readers {
        let _ = r.join();
    }
    let status = child.wait().map_err(|source| Error::Spawn { what: "xl", source })?;
    if !status.success() && end.reason.is_none() {
        eprintln!("images: xl create failed ({status})");
        return Ok(DOMAIN_FAILED_EXIT);
    }
    eprintln!("images: {end}");
    Ok(end.exit_code())
}

/// The domU's output, each line shown once: a Zirvium guest may write every line to port 0xe9 and to its PV
/// console, and Xen splits long 0xe9 lines (its line buffer is short). Port 0xe9 lines arrive first (Xen prints
/// them at once; the console goes through xenconsoled's log) and are shown as they come; a PV console line is
/// shown unless it repeats remembered 0xe9 output, whole or as consecutive pieces.
#[derive(Debug, Default)]
pub struct GuestLines {
    recent: VecDeque<String>,
}

impl GuestLines {
    /// Port 0xe9 lines remembered for matching.
    const REMEMBERED: usize = 512;

    /// A port 0xe9 line: always shown, remembered.
    pub fn debug(&mut self, text: &str) -> bool {
        if self.recent.len() == Self::REMEMBERED {
            self.recent.pop_front();
        }
        self.recent.push_back(text.to_owned());
        true
    }

    /// A PV console line: whether to show it (false when it repeats remembered port 0xe9 output, which is then
    /// forgotten up to there).
    pub fn console(&mut self, text: &str) -> bool {
        for i in 0..self.recent.len() {
            if !text.starts_with(self.recent[i].as_str()) {
                continue;
            }
            let mut joined = String::new();
            let mut j = i;
            while j < self.recent.len() && joined.len() < text.len() {
                joined.push_str(&self.recent[j]);
                j += 1;
            }
            if joined == text {
                self.recent.drain(..j);
                return false;
            }
        }
        true
    }
}

/// How many of the last console lines to print when something below the domU fails.
const FAILURE_TAIL: usize = 40;

/// Nested: prepares the host (first run: downloads), boots Xen + dom0 under QEMU, shows the domU's output.
fn run_nested(domu: &Domu, forwards: &[PortForward], deadline: Option<Instant>) -> Result<u8, Error> {
    let host = host::prepare(&host::default_dir(), &mut |m| eprintln!("images: xen host: {m}"))?;
    let prepared = super::prepare_nested(&host, domu, forwards, false)?;
    let logs = host.work.join("logs");
    let (log_path, mut log) = create_log(&logs, &prepared.name).map_err(|source| Error::Io {
        what: "creating a log in",
        path: logs,
        source,
    })?;
    let mut cmd = nested::qemu_command(&prepared.options)?;
    let line = shell_line(&cmd);
    let _ = writeln!(
        log,
        "# {line}\n# xl config:\n{}",
        prepared.config.lines().map(|l| format!("#   {l}\n")).collect::<String>()
    );
    eprintln!("images: {line}");
    eprintln!(
        "images: booting Xen 4.17 + dom0 under QEMU TCG; {} starts as a PVH domU in a minute or more (full console: {})",
        prepared.name,
        log_path.display()
    );
    for f in forwards {
        match f.protocol {
            Protocol::Tcp => eprintln!(
                "images: http://localhost:{}/ reaches the domU's port {} once it has its DHCP lease",
                f.host, f.guest
            ),
            Protocol::Udp => eprintln!("images: udp localhost:{} -> domU port {}", f.host, f.guest),
        }
    }
    let started = Instant::now();
    let mut child = ConsoleChild::spawn(&mut cmd, Some(log))
        .map_err(|source| Error::Spawn { what: "qemu-system-x86_64", source })?;

    let mut end = DomainEnd::default();
    let mut domid = None;
    let mut ended = false;
    let mut shown = GuestLines::default();
    let secs = |t: Instant| t.elapsed().as_secs_f64();
    let tail = child.run_to_end(deadline, FAILURE_TAIL, &log_path, |line| match console::classify(line) {
        Line::GuestDebug { domid: d, text } if domid.is_none_or(|id| id == d) => {
            if shown.debug(text) {
                println!("{text}");
            }
            end.printed = parse_exit_status(text).or(end.printed);
        }
        Line::GuestConsole(text) => {
            if shown.console(text) {
                println!("{text}");
            }
            end.printed = parse_exit_status(text).or(end.printed);
        }
        Line::Event(Event::Dom0Ready) => eprintln!("images: dom0 ready after {:.0} s", secs(started)),
        Line::Event(Event::Created { domid: d }) => {
            domid = Some(d);
            eprintln!("images: Xen runs {} as domain {d} after {:.0} s", prepared.name, secs(started));
        }
        Line::Event(Event::Shutdown { reason, .. }) => end.reason = Some(reason),
        Line::Event(Event::XlExited { rc }) if rc != 0 => eprintln!("images: xl create failed (exit code {rc})"),
        Line::Event(Event::Problem(p)) => eprintln!("images: dom0: {p}"),
        Line::Event(Event::Ended) => ended = true,
        Line::Xl(text) if is_problem(text) => eprintln!("images: xl: {text}"),
        _ => {}
    });
    let Some(tail) = tail else { return Ok(TIMEOUT_EXIT) };
    let (status, stderr) = child.finish().map_err(|source| Error::Spawn { what: "qemu-system-x86_64", source })?;
    if !ended {
        print_failure("Xen/dom0", status, &tail, &log_path, &stderr);
        return Ok(DOMAIN_FAILED_EXIT);
    }
    eprintln!("images: {end} after {:.0} s", secs(started));
    Ok(end.exit_code())
}
/// Whether an xl or libxl message reports a problem (their routine messages are not shown).
fn is_problem(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    ["error", "fail", "warn", "unable", "cannot", "invalid"].iter().any(|w| t.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `images run ARGS`'s options; `args` start with the word `run`, as typed.
    fn run_args(args: &[&str]) -> RunArgs {
        assert_eq!(args[0], "run");
        crate::run::parse_run_args(&args[1..]).unwrap()
    }

    #[test]
    fn httpd_gets_a_vif_and_the_default_forward() {
        let httpd = crate::project::workspace_app("httpd").unwrap();
        let hello = crate::project::workspace_app("hello").unwrap();
        let (domu, forwards) =
            domu_for(&run_args(&["run", "httpd", "--hypervisor", "xen", "--", "a"]), &httpd).unwrap();
        assert_eq!(domu.name(), "zirvium-httpd");
        assert_eq!(domu.bridge.as_deref(), Some("xenbr0"));
        assert_eq!(domu.cmdline, "-- a");
        assert_eq!(forwards, [PortForward::tcp(8080, 80)]);
        let (domu, forwards) =
            domu_for(&run_args(&["run", "hello", "--hypervisor", "xen", "--mem", "32M"]), &hello).unwrap();
        assert_eq!((domu.bridge, domu.memory_mib, forwards.len()), (None, 32, 0));
    }

    #[test]
    fn refuses_options_that_do_not_apply() {
        let hello = crate::project::workspace_app("hello").unwrap();
        for (args, needle) in [
            (&["run", "hello", "--hypervisor", "xen", "--accel", "kvm"][..], "--accel kvm"),
            (&["run", "hello", "--hypervisor", "xen", "--machine", "q35"], "--machine q35"),
            (&["run", "httpd", "--hypervisor", "xen", "--net", "tap", "--tap", "t0"], "--net tap"),
            (&["run", "kv", "--hypervisor", "xen", "--disk-bus", "nvme"], "--disk-bus nvme"),
            (&["run", "hello", "--hypervisor", "xen", "--gdb"], "--gdb"),
        ] {
            let err = domu_for(&run_args(args), &hello).unwrap_err();
            assert!(err.to_string().contains(needle), "{args:?}: {err}");
            assert_eq!(err.exit_code(), 2);
        }
        let err = domu_for(&run_args(&["run", "hello", "--hypervisor", "xen", "--disk", "/nonexistent.img"]), &hello)
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
    }

    #[test]
    fn guest_lines_are_shown_once() {
        let mut g = GuestLines::default();
        assert!(g.debug("[ 0.0 INFO libos] booted"));
        assert!(g.debug("platform: xen (..., p"));
        assert!(g.debug("v console)"));
        assert!(g.debug("hello"));
        // Split by Xen on 0xe9, whole on the PV console: shown once.
        assert!(!g.console("platform: xen (..., pv console)"));
        assert!(!g.console("hello"));
        // Only on the PV console: shown.
        assert!(g.console("console only"));
        // Repeated text later is new output.
        assert!(g.console("hello"));
        assert!(g.debug("again"));
        assert!(!g.console("again"));
    }

    #[test]
    fn xl_problems() {
        assert!(is_problem("libxl: error: libxl_create.c:1234: cannot make domain: -3"));
        assert!(!is_problem("Action for shutdown reason code 0 is destroy"));
        assert!(!is_problem("Parsing config from /images/domu.cfg"));
    }
}
