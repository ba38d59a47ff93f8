//! Test harness for a real Xen 4.17 host nested under QEMU TCG (`images::xen`): boots Xen + dom0 with one app
//! as a PVH domU, captures Xen's serial console (Xen's log, dom0's console, the domU's port 0xe9 and PV console
//! lines), and drives dom0 through its control channel: each line written to QEMU's stdin reaches dom0's console
//! and runs as a shell command (`images/xen/dom0-init`, CONTROL=1).
//!
//! ```no_run
//! use zirvium_tests::xen::XenVm;
//! # fn main() -> Result<(), zirvium_tests::VmError> {
//! let vm = XenVm::builder("xen_hello", "hello").args(["a"]).boot()?;
//! vm.wait_created()?;
//! let end = vm.wait_domain_end()?;
//! vm.ensure(end.graceful(), format_args!("hello should end gracefully: {end}"))?;
//! # Ok(()) }
//! ```
//!
//! One nested host runs at a time per test binary (it takes both cores); its console is logged to
//! `target/test-logs/xen/<name>.log`. Waits are bounded by [`XenVm::timeout`] (default [`DEFAULT_TIMEOUT`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use images::xen::console::{self, Event, Line};
use images::xen::status::{parse_exit_status, DomainEnd};
use images::xen::{host, nested, Domu, NestedRun, XenHost};
use images::{PortForward, Protocol};

use crate::nested::{forwarded_port, guest_spec_methods, Console, GuestSpec};
use crate::{lock, note, VmError};

/// Default bound of each wait: 10 minutes. Idle, dom0 is ready ~20 s after QEMU starts and a domU a few seconds
/// later; the machine running the tests may be several times slower.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Serializes nested hosts within a test binary.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The Xen host files, prepared (downloaded on first use) once per test binary.
pub fn xen_host() -> Result<XenHost, VmError> {
    static HOST: OnceLock<Result<XenHost, String>> = OnceLock::new();
    let host = HOST.get_or_init(|| {
        note("preparing the nested Xen host (Debian packages, cached in target/xen-host)");
        host::prepare(&host::default_dir(), &mut |m| note(format_args!("xen host: {m}"))).map_err(|e| e.to_string())
    });
    host.clone().map_err(|message| VmError::Build { app: "the nested Xen host".into(), message })
}

/// Configuration of a nested run before boot; see [`XenVm::builder`].
#[derive(Clone, Debug)]
pub struct XenVmBuilder {
    spec: GuestSpec,
    network: bool,
    disks: Vec<PathBuf>,
}

impl XenVmBuilder {
    guest_spec_methods!("64");

    /// A vif on dom0's bridge xenbr0 plus a forward from a free host port to `guest_port` of the domU
    /// (10.0.2.15, its DHCP lease from QEMU's slirp); see [`XenVm::host_port`].
    pub fn forward(mut self, protocol: Protocol, guest_port: u16) -> Self {
        self.network = true;
        self.spec.forwards.push((protocol, guest_port));
        self
    }

    /// A raw disk image on the host: dom0's `/dev/vdX` (virtio-blk), the domU's `xvdX` (blkback, phy).
    pub fn disk(mut self, path: impl Into<PathBuf>) -> Self {
        self.disks.push(path.into());
        self
    }

    /// Checks the host tools ([`crate::host_tools`]), builds the app, prepares the host, waits until no other
    /// nested host of this binary runs, starts QEMU.
    pub fn boot(self) -> Result<XenVm, VmError> {
        let guest = self.spec.prepare()?;
        let host = xen_host()?;
        let domu = Domu {
            // A std crate directory (tests/std-apps/X) names its domain by its last component.
            app: Path::new(&self.spec.app).file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            kernel: guest.kernel,
            memory_mib: self.spec.mem_mib,
            vcpus: 1,
            cmdline: guest.cmdline,
            bridge: self.network.then(|| images::xen::xl::DEFAULT_BRIDGE.to_owned()),
            ramdisk: None,
            disks: self.disks.clone(),
        };
        let forwards = guest.forwards;
        let guard = lock(&ONE_AT_A_TIME);
        let io = |what: String| move |source| VmError::Io { what, source };
        let run = images::xen::prepare_nested(&host, &domu, &forwards, true)
            .map_err(|e| VmError::Io { what: "preparing the nested run".into(), source: std::io::Error::other(e) })?;
        let mut cmd = nested::qemu_command(&run.options)
            .map_err(|e| VmError::Io { what: "QEMU command".into(), source: std::io::Error::other(e) })?;
        let command_line = images::shell::shell_line(&cmd);
        let config: String = run.config.lines().map(|l| format!("#   {l}\n")).collect();
        let (log_path, log) = self.spec.create_log("xen", &format!("# {command_line}\n{config}"))?;
        note(format_args!(
            "{}: booting Xen + dom0 under QEMU TCG with {} as domU {} (log {})",
            self.spec.name,
            self.spec.app,
            run.name,
            log_path.display()
        ));
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(io(format!("starting {command_line}")))?;
        let serial = Console::attach(&mut child, log);
        let stdin = child.stdin.take();
        Ok(XenVm {
            name: self.spec.name,
            domain: run.name.clone(),
            timeout: self.spec.timeout,
            forwards,
            log_path,
            started: Instant::now(),
            serial,
            control: Mutex::new(Control { stdin, sent: 0, child }),
            _run: run,
            _guard: guard,
        })
    }
}

struct Control {
    stdin: Option<ChildStdin>,
    /// Commands sent so far (dom0 numbers them from 1).
    sent: u32,
    child: Child,
}

/// A running nested host with the app as its domU. Dropping it kills QEMU.
pub struct XenVm {
    name: String,
    domain: String,
    timeout: Duration,
    forwards: Vec<PortForward>,
    log_path: PathBuf,
    started: Instant,
    serial: Arc<Console>,
    control: Mutex<Control>,
    _run: NestedRun,
    _guard: MutexGuard<'static, ()>,
}

impl XenVm {
    /// A builder for nested run `name` (names the log file) with app `app` as the domU.
    pub fn builder(name: &str, app: &str) -> XenVmBuilder {
        XenVmBuilder {
            spec: GuestSpec::new(name, app, images::xen::xl::DEFAULT_MEMORY_MIB, DEFAULT_TIMEOUT),
            network: false,
            disks: Vec::new(),
        }
    }

    /// The domU's name, e.g. `zirvium-httpd`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The bound of each wait.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The serial console log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Seconds since QEMU started, for progress notes.
    pub fn uptime(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Host port forwarded to the domU's `guest` port. Errors: no such forward was requested.
    pub fn host_port(&self, protocol: Protocol, guest: u16) -> Result<u16, VmError> {
        forwarded_port(&self.forwards, &self.name, protocol, guest)
    }

    /// Waits up to the timeout for the first console line (from boot on) for which `pick` returns a value.
    /// Errors: timeout, or QEMU stopped first; both carry the console.
    pub fn wait_line<T>(&self, what: &str, pick: impl FnMut(&str) -> Option<T>) -> Result<T, VmError> {
        self.serial.wait_line(what, self.timeout, pick).map_err(|why| self.failed(why))
    }

    /// Waits for a dom0 event matching `pick`.
    pub fn wait_event<T>(&self, what: &str, mut pick: impl FnMut(&Event) -> Option<T>) -> Result<T, VmError> {
        self.wait_line(what, |l| match console::classify(l) {
            Line::Event(e) => pick(&e),
            _ => None,
        })
    }

    /// Waits until Xen runs the domU and returns its domain ID.
    pub fn wait_created(&self) -> Result<u32, VmError> {
        let domid = self.wait_line("the domU created", |l| match console::classify(l) {
            Line::Event(Event::Created { domid }) => Some(Ok(domid)),
            Line::Event(Event::XlExited { rc }) if rc != 0 => Some(Err(rc)),
            _ => None,
        })?;
        domid.map_err(|rc| self.failed(format!("xl create failed with exit code {rc}")))
    }

    /// Waits for a line of the domU's output (port 0xe9 or PV console) containing `needle`; returns its text.
    /// Errors: the domU ended first (it prints nothing after that), timeout, QEMU stopped.
    pub fn wait_guest(&self, needle: &str) -> Result<String, VmError> {
        let found = self.wait_line(&format!("a domU line containing {needle:?}"), |l| match console::classify(l) {
            Line::GuestDebug { text, .. } | Line::GuestConsole(text) if text.contains(needle) => {
                Some(Some(text.to_owned()))
            }
            Line::Event(Event::Ended) => Some(None),
            _ => None,
        })?;
        found.ok_or_else(|| self.failed(format!("the domU ended without printing a line containing {needle:?}")))
    }

    /// The domU's output so far, one entry per line (port 0xe9 and PV console lines, in arrival order).
    pub fn guest_output(&self) -> Vec<String> {
        self.serial.with_lines(|lines| lines.iter().filter_map(|l| guest_text(l).map(str::to_owned)).collect())
    }

    /// Waits until the domU has ended (`run-domu`'s last line) and returns how: xl's shutdown reason and the
    /// guest's `exit status N`.
    pub fn wait_domain_end(&self) -> Result<DomainEnd, VmError> {
        self.wait_event("the end of the domU", |e| matches!(e, Event::Ended).then_some(()))?;
        Ok(self.serial.with_lines(|lines| {
            let mut end = DomainEnd::default();
            for l in lines {
                match console::classify(l) {
                    Line::Event(Event::Shutdown { reason, .. }) => end.reason = Some(reason),
                    Line::GuestDebug { text, .. } | Line::GuestConsole(text) => {
                        end.printed = parse_exit_status(text).or(end.printed)
                    }
                    _ => {}
                }
            }
            end
        }))
    }

    /// `xl shutdown` of the domU in dom0, then its end ([`XenVm::wait_domain_end`]). Errors: those of
    /// [`XenVm::run`] and of the wait, and `xl` exiting non-zero unless the domain still ended gracefully: dom0's
    /// xl has aborted after the domain's end ("Domain 1 has shut down", then glibc's "malloc(): corrupted top
    /// size"), a fault of dom0's toolstack that the guest's own end (xl's shutdown reason, the guest's `exit
    /// status 0`) tells apart — that case is noted, not failed.
    pub fn xl_shutdown(&self) -> Result<DomainEnd, VmError> {
        let rc = self.run(&format!("xl shutdown {}", self.domain))?;
        let end = self.wait_domain_end()?;
        if rc != 0 {
            if !end.graceful() {
                return Err(self.failed(format!("xl shutdown failed (exit code {rc}); the domU ended: {end}")));
            }
            crate::note(format_args!(
                "{}: dom0's `xl shutdown` exited {rc} after the domU had ended gracefully ({end})",
                self.name
            ));
        }
        Ok(end)
    }

    /// Runs `command` in dom0 (a shell command line without newlines) and returns its exit code once dom0 reports
    /// it; its output is on the console. Waits for dom0 to be ready first.
    pub fn run(&self, command: &str) -> Result<i32, VmError> {
        if command.contains(['\n', '\r']) {
            return Err(self.failed(format!("dom0 command {command:?} has a line break")));
        }
        self.wait_event("dom0's control channel", |e| match e {
            Event::Note(n) if n.starts_with("control:") => Some(()),
            _ => None,
        })?;
        let seq = {
            let mut c = lock(&self.control);
            c.sent += 1;
            let seq = c.sent;
            let sent = c.stdin.as_mut().map(|s| s.write_all(format!("{command}\n").as_bytes()).and_then(|_| s.flush()));
            if !matches!(sent, Some(Ok(()))) {
                drop(c);
                return Err(self.failed(format!("could not send {command:?} to dom0: QEMU's stdin is closed")));
            }
            seq
        };
        note(format_args!("{}: dom0# {command}", self.name));
        self.wait_event(&format!("dom0's result of {command:?}"), |e| match *e {
            Event::Command { seq: s, rc } if s == seq => Some(rc),
            _ => None,
        })
    }

    /// Tells dom0 to power off and waits for QEMU to exit.
    pub fn poweroff(&self) -> Result<(), VmError> {
        {
            let mut c = lock(&self.control);
            if let Some(mut stdin) = c.stdin.take() {
                let _ = stdin.write_all(b"poweroff\n");
            }
        }
        self.wait_line("QEMU to exit after dom0's poweroff", |_| None::<()>).or_else(|e| {
            if self.serial.closed() {
                Ok(())
            } else {
                Err(e)
            }
        })?;
        let mut c = lock(&self.control);
        let _ = c.child.wait();
        Ok(())
    }

    /// Succeeds when `condition` holds, else fails with `what` and the console.
    pub fn ensure(&self, condition: bool, what: impl std::fmt::Display) -> Result<(), VmError> {
        if condition {
            Ok(())
        } else {
            Err(self.failed(what.to_string()))
        }
    }

    /// A [`VmError::Failed`] with `what`, the domU's output, the end of the serial console (Xen's log and dom0)
    /// and QEMU's stderr. Kills QEMU: a failed run is not continued.
    pub fn failed(&self, what: String) -> VmError {
        {
            let mut c = lock(&self.control);
            let _ = c.child.kill();
            let _ = c.child.wait();
        }
        let text = self.serial.report(
            "domU output (port 0xe9 and PV console)",
            "Xen serial console (Xen, dom0, domU)",
            guest_text,
        );
        VmError::Failed { name: self.name.clone(), what, console: text, log: self.log_path.clone() }
    }
}

impl Drop for XenVm {
    fn drop(&mut self) {
        let mut c = lock(&self.control);
        let _ = c.child.kill();
        let _ = c.child.wait();
    }
}

/// The domU's text in a console line: port 0xe9 (`(dN) `) or PV console (`domU| `).
fn guest_text(line: &str) -> Option<&str> {
    match console::classify(line) {
        Line::GuestDebug { text, .. } | Line::GuestConsole(text) => Some(text),
        _ => None,
    }
}
