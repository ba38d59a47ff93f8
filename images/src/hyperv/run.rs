//! `images run <app> --hypervisor hyperv [--hv-tsc-page on|off]`: builds the app, prepares the nested host (first
//! run: downloads), boots L0 → L1 → L2 and passes the guest's serial console to stdout and its exit status out
//! (`isa-debug-exit` in L2, reported by L1's init). Progress and L2 QEMU's messages go to stderr; L0's whole
//! console is kept in `target/hyperv-host/logs/<app>.log` and its last lines are printed when something below
//! the guest fails.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::console::{self, Event, Line, L2_KILLED};
use super::nested::{self, Guest};
use super::{host, Error};
use crate::cargo::Profile;
use crate::exit::{Outcome, QEMU_FAILED_EXIT, TIMEOUT_EXIT};
use crate::forward::Protocol;
use crate::lines::{create_log, print_failure, ConsoleChild};
use crate::project::App;
use crate::qemu::{self, Accel, Machine, NetKind, Network};
use crate::run::{resolve_initrd, RunArgs};
use crate::shell::shell_line;

/// L1's bound on L2 when `--timeout` is not given: an hour.
pub const DEFAULT_L2_TIMEOUT_SECS: u64 = 3600;

/// How many of the last console lines to print when something below the guest fails.
const FAILURE_TAIL: usize = 40;

/// The guest of `args` (kernel path empty until the build) and checks of the options that do not apply. Errors:
/// [`Error::Options`] naming the option and what to do instead; bad option combinations.
pub fn guest_for(args: &RunArgs, app: &App) -> Result<Guest, Error> {
    if let Some(a) = args.accel {
        return Err(Error::Options(format!(
            "--accel {a}: with --hypervisor hyperv L0 always runs under TCG and L2 under L1's KVM; drop --accel"
        )));
    }
    if args.machine != Machine::Microvm {
        return Err(Error::Options(format!(
            "--machine {}: with --hypervisor hyperv both levels are `pc`; drop --machine",
            args.machine
        )));
    }
    if args.net == Some(NetKind::Tap) || args.tap.is_some() {
        return Err(Error::Options("--net tap: with --hypervisor hyperv use --net user with --port".into()));
    }
    if !args.disks.is_empty() {
        return Err(Error::Options("--disk: the nested Hyper-V host passes no disks to the guest yet".into()));
    }
    if args.smp != 1 {
        return Err(Error::Options(format!("--smp {}: the nested Hyper-V guest runs one vCPU", args.smp)));
    }
    let opts = args.options(Accel::Tcg, &app.ports)?;
    let forwards = match &opts.network {
        Network::User { forwards } => Some(forwards.clone()),
        Network::None => None,
        Network::Tap { .. } => {
            return Err(Error::Options("--net tap is not available with --hypervisor hyperv".into()))
        }
    };
    let guest = Guest {
        app: app.bin.clone(),
        kernel: PathBuf::new(),
        mem_mib: args.mem,
        cmdline: opts.kernel_command_line(),
        tsc_page: args.hv_tsc_page.unwrap_or(true),
        nic: forwards.is_some(),
        forwards: forwards.unwrap_or_default(),
        qmp_host_port: None,
        l2_timeout_secs: args.timeout.unwrap_or(DEFAULT_L2_TIMEOUT_SECS),
    };
    guest.validate().map_err(Error::Options)?;
    Ok(guest)
}

/// `images run --hypervisor hyperv`: see the module docs. Returns the exit code: the guest's status,
/// [`TIMEOUT_EXIT`], or [`QEMU_FAILED_EXIT`] when a level below the guest failed.
pub fn run(args: &RunArgs) -> Result<u8, Error> {
    let app = crate::project::resolve(&args.selection()).map_err(crate::cargo::BuildError::from)?;
    let mut guest = guest_for(args, &app)?;
    let qemu_bin = qemu::ensure_qemu(&mut |m| eprintln!("images: {m}"))?;
    let initrd = resolve_initrd(&app, args.initrd.as_deref()).map_err(|e| Error::Options(format!("--initrd: {e}")))?;
    let image = crate::cargo::build(&app, Profile::Release, initrd.as_deref())?;
    eprintln!("images: built {}", image.summary());
    guest.kernel = image.path;
    let host = host::prepare(&host::default_dir(), &qemu_bin, &mut |m| eprintln!("images: hyperv host: {m}"))?;
    let prepared = super::prepare_nested(&host, &guest)?;
    let logs = host.work.join("logs");
    let (log_path, mut log) =
        create_log(&logs, &guest.app).map_err(|source| Error::Io { what: "creating a log in", path: logs, source })?;
    let mut cmd = nested::l0_command(&prepared.options);
    let line = shell_line(&cmd);
    let _ = writeln!(log, "# L0: {line}\n# L2: {}", prepared.l2_command);
    eprintln!("images: {line}");
    eprintln!(
        "images: booting Linux + KVM under QEMU TCG; {} starts as L2 with Hyper-V enlightenments, VMBus and hv-balloon \
         in about 10 s (reference TSC page {}; full console: {})",
        guest.app,
        if guest.tsc_page { "valid" } else { "invalid" },
        log_path.display()
    );
    for f in &guest.forwards {
        match f.protocol {
            Protocol::Tcp => eprintln!("images: http://localhost:{}/ reaches the guest's port {}", f.host, f.guest),
            Protocol::Udp => eprintln!("images: udp localhost:{} -> guest port {}", f.host, f.guest),
        }
    }
    let deadline = args.timeout.map(|s| Instant::now() + Duration::from_secs(s));
    let started = Instant::now();
    let mut child = ConsoleChild::spawn(&mut cmd, Some(log))
        .map_err(|source| Error::Spawn { what: "qemu-system-x86_64", source })?;
    let mut end = NestedEnd::default();
    let secs = |t: Instant| t.elapsed().as_secs_f64();
    let tail = child.run_to_end(deadline, FAILURE_TAIL, &log_path, |line| match end.take(line) {
        Line::Guest(text) => println!("{text}"),
        Line::L2Qemu(text) => eprintln!("images: L2: {text}"),
        Line::Event(Event::L1Ready { clocksource, .. }) => {
            eprintln!("images: L1 ready after {:.1} s (clocksource {clocksource})", secs(started))
        }
        Line::Event(Event::Problem(p)) => eprintln!("images: L1: {p}"),
        _ => {}
    });
    let Some(tail) = tail else { return Ok(TIMEOUT_EXIT) };
    let (status, stderr) = child.finish().map_err(|source| Error::Spawn { what: "qemu-system-x86_64", source })?;
    match end.outcome() {
        Some(code) => {
            eprintln!("images: {} after {:.0} s", end.describe(), secs(started));
            Ok(code)
        }
        None => {
            print_failure("L0/L1", status, &tail, &log_path, &stderr);
            Ok(QEMU_FAILED_EXIT)
        }
    }
}

/// How L2 ended, from the console lines: L2 QEMU's exit status and its stderr.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NestedEnd {
    /// L2 QEMU's exit status, once L1 reported it.
    pub l2_rc: Option<i32>,
    /// L2 QEMU's stderr lines so far.
    pub l2_stderr: String,
}

impl NestedEnd {
    /// Classifies `line` ([`console::classify`]) and notes what it says about L2's end.
    pub fn take<'a>(&mut self, line: &'a str) -> Line<'a> {
        let l = console::classify(line);
        match &l {
            Line::L2Qemu(text) => {
                self.l2_stderr.push_str(text);
                self.l2_stderr.push('\n');
            }
            Line::Event(Event::L2Exited { rc, .. }) => self.l2_rc = Some(*rc),
            _ => {}
        }
        l
    }

    /// How L2's QEMU ended ([`Outcome`]), once known; a kill by L1's bound is [`Outcome::QemuFailed`] with signal 9.
    pub fn l2_outcome(&self) -> Option<Outcome> {
        self.l2_rc.map(|rc| match rc {
            L2_KILLED => Outcome::QemuFailed { code: None, signal: Some(9) },
            rc => Outcome::from_code(rc, &self.l2_stderr),
        })
    }

    /// The exit code of `images run`: the guest's status, [`TIMEOUT_EXIT`] when L1's bound killed L2, else
    /// [`Outcome::exit_code`]; `None` before L2 ended.
    pub fn outcome(&self) -> Option<u8> {
        match self.l2_rc? {
            L2_KILLED => Some(TIMEOUT_EXIT),
            _ => self.l2_outcome().map(|o| o.exit_code()),
        }
    }

    /// A line for the log.
    pub fn describe(&self) -> String {
        match (self.l2_rc, self.l2_outcome()) {
            (Some(L2_KILLED), _) => "L2 killed by L1's time bound".to_owned(),
            (_, Some(o)) => format!("L2 ended: {o}"),
            _ => "L2 has not ended".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::PortForward;

    fn run_args(args: &[&str]) -> RunArgs {
        crate::run::parse_run_args(args).unwrap()
    }

    #[test]
    fn httpd_gets_a_nic_and_the_default_forward() {
        let httpd = crate::project::workspace_app("httpd").unwrap();
        let hello = crate::project::workspace_app("hello").unwrap();
        let g = guest_for(&run_args(&["httpd", "--hypervisor", "hyperv", "--hv-tsc-page", "off", "--", "a"]), &httpd)
            .unwrap();
        assert_eq!((g.nic, g.tsc_page, g.cmdline.as_str()), (true, false, "-- a"));
        assert_eq!(g.forwards, [PortForward::tcp(8080, 80)]);
        let g = guest_for(&run_args(&["hello", "--hypervisor", "hyperv", "--mem", "128M", "--timeout", "60"]), &hello)
            .unwrap();
        assert_eq!((g.nic, g.tsc_page, g.mem_mib, g.l2_timeout_secs), (false, true, 128, 60));
    }

    #[test]
    fn refuses_options_that_do_not_apply() {
        for (args, needle) in [
            (&["hello", "--hypervisor", "hyperv", "--accel", "kvm"][..], "--accel kvm"),
            (&["hello", "--hypervisor", "hyperv", "--machine", "q35"], "--machine q35"),
            (&["httpd", "--hypervisor", "hyperv", "--net", "tap", "--tap", "t0"], "--net tap"),
            (&["hello", "--hypervisor", "hyperv", "--smp", "2"], "--smp 2"),
            (&["httpd", "--hypervisor", "hyperv", "--port", "1:4444"], "QMP port"),
        ] {
            let app = crate::project::workspace_app(args[0]).unwrap();
            let err = guest_for(&run_args(args), &app).unwrap_err();
            assert!(err.to_string().contains(needle), "{args:?}: {err}");
            assert_eq!(err.exit_code(), 2);
        }
    }

    #[test]
    fn exit_status_comes_from_l2_qemu() {
        let mut end = NestedEnd::default();
        assert_eq!(end.outcome(), None);
        for l in ["L2| exit status 3", "images-hyperv: L2 exited rc=7 at 9.1 s"] {
            end.take(l);
        }
        assert_eq!(end.outcome(), Some(3));
        let mut failed = NestedEnd::default();
        failed.take("L2! qemu-system-x86_64: -device hv-balloon: no VMBus");
        failed.take("images-hyperv: L2 exited rc=1 at 3 s");
        assert_eq!(failed.outcome(), Some(QEMU_FAILED_EXIT), "exit 1 with a QEMU error is QEMU's failure");
        let mut killed = NestedEnd::default();
        killed.take("images-hyperv: L2 exited rc=137 at 600 s");
        assert_eq!(killed.outcome(), Some(TIMEOUT_EXIT));
        assert_eq!(killed.describe(), "L2 killed by L1's time bound");
    }
}
