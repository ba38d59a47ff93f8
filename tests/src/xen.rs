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

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use images::xen::console::{self, Event, Line};
use images::xen::status::{parse_exit_status, DomainEnd};
use images::xen::{host, nested, Domu, NestedRun, XenHost};
use images::{Accel, KernelOption, PortForward, Protocol, RunOptions};

use crate::{free_port, image, note, VmError};

/// Default bound of each wait: 10 minutes. Idle, dom0 is ready ~20 s after QEMU starts and a domU a few seconds
/// later; the machine running the tests may be several times slower.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Bytes of the serial console kept in an error message; the whole console is in the log file.
const CONSOLE_TAIL: usize = 24 * 1024;

/// Serializes nested hosts within a test binary.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

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
    name: String,
    app: String,
    mem_mib: u32,
    kernel_options: Vec<(String, String)>,
    app_args: Vec<String>,
    network: bool,
    forwards: Vec<(Protocol, u16)>,
    disks: Vec<PathBuf>,
    timeout: Duration,
}

impl XenVmBuilder {
    /// App arguments (after `--` on the domU's command line).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.app_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// A kernel option `key=value` (checked at boot).
    pub fn kernel_option(mut self, key: &str, value: &str) -> Self {
        self.kernel_options.push((key.to_owned(), value.to_owned()));
        self
    }

    /// domU RAM in MiB (default 64).
    pub fn mem_mib(mut self, mib: u32) -> Self {
        self.mem_mib = mib;
        self
    }

    /// A vif on dom0's bridge xenbr0 plus a forward from a free host port to `guest_port` of the domU
    /// (10.0.2.15, its DHCP lease from QEMU's slirp); see [`XenVm::host_port`].
    pub fn forward(mut self, protocol: Protocol, guest_port: u16) -> Self {
        self.network = true;
        self.forwards.push((protocol, guest_port));
        self
    }

    /// A raw disk image on the host: dom0's `/dev/vdX` (virtio-blk), the domU's `xvdX` (blkback, phy).
    pub fn disk(mut self, path: impl Into<PathBuf>) -> Self {
        self.disks.push(path.into());
        self
    }

    /// Bound of each wait (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Checks the host tools ([`crate::host_tools`]), builds the app, prepares the host, waits until no other
    /// nested host of this binary runs, starts QEMU.
    pub fn boot(self) -> Result<XenVm, VmError> {
        let valid = !self.name.is_empty() && self.name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
        if !valid {
            return Err(VmError::InvalidName(self.name));
        }
        crate::host_tools()?;
        let kernel = image(&self.app)?;
        let host = xen_host()?;
        // The command line exactly as `images run` writes it (words with spaces quoted).
        let mut opts = RunOptions::new("", Accel::Tcg);
        for (k, v) in &self.kernel_options {
            opts.kernel_options.push(KernelOption::new(k, v)?);
        }
        opts.app_args = self.app_args.clone();
        opts.validate()?;
        let domu = Domu {
            // A std crate directory (tests/std-apps/X) names its domain by its last component.
            app: images::stdapp::short_name(&self.app),
            kernel,
            memory_mib: self.mem_mib,
            vcpus: 1,
            cmdline: opts.kernel_command_line(),
            bridge: self.network.then(|| images::xen::xl::DEFAULT_BRIDGE.to_owned()),
            ramdisk: None,
            disks: self.disks.clone(),
        };
        let mut forwards = Vec::new();
        for &(protocol, guest) in &self.forwards {
            forwards.push(PortForward { protocol, host: free_port(protocol)?, guest });
        }
        let guard = lock(&ONE_AT_A_TIME);
        let io = |what: String| move |source| VmError::Io { what, source };
        let run = images::xen::prepare_nested(&host, &domu, &forwards, true)
            .map_err(|e| VmError::Io { what: "preparing the nested run".into(), source: std::io::Error::other(e) })?;
        let mut cmd = nested::qemu_command(&run.options)
            .map_err(|e| VmError::Io { what: "QEMU command".into(), source: std::io::Error::other(e) })?;
        let command_line = images::shell::shell_line(&cmd);
        let dir = images::cargo::target_dir().join("test-logs").join("xen");
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let log_path = dir.join(format!("{}.log", self.name));
        let mut log = File::create(&log_path).map_err(io(format!("creating {}", log_path.display())))?;
        let _ = writeln!(log, "# {command_line}");
        for l in run.config.lines() {
            let _ = writeln!(log, "#   {l}");
        }
        note(format_args!(
            "{}: booting Xen + dom0 under QEMU TCG with {} as domU {} (log {})",
            self.name,
            self.app,
            run.name,
            log_path.display()
        ));
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(io(format!("starting {command_line}")))?;
        let serial = Arc::new(Serial::default());
        let stdin = child.stdin.take();
        if let Some(out) = child.stdout.take() {
            let serial = Arc::clone(&serial);
            std::thread::spawn(move || serial.pump(out, log));
        }
        if let Some(mut err) = child.stderr.take() {
            let serial = Arc::clone(&serial);
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = err.read_to_string(&mut text);
                lock(&serial.state).stderr = text;
            });
        }
        Ok(XenVm {
            name: self.name,
            domain: run.name.clone(),
            timeout: self.timeout,
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

/// The serial console: complete lines as they arrive.
#[derive(Default)]
struct Serial {
    state: Mutex<SerialState>,
    changed: Condvar,
}

#[derive(Default)]
struct SerialState {
    lines: Vec<String>,
    /// QEMU closed its stdout.
    closed: bool,
    stderr: String,
}

impl Serial {
    /// Reader thread: splits QEMU's stdout into lines (lossy UTF-8, without `\r\n`), logs them, wakes waiters.
    fn pump(&self, mut out: impl Read, mut log: File) {
        let mut buf = [0u8; 4096];
        let mut partial = Vec::new();
        loop {
            let n = out.read(&mut buf).unwrap_or(0);
            let _ = log.write_all(&buf[..n]);
            partial.extend_from_slice(&buf[..n]);
            let mut st = lock(&self.state);
            while let Some(i) = partial.iter().position(|&b| b == b'\n') {
                let l: Vec<u8> = partial.drain(..=i).collect();
                st.lines.push(String::from_utf8_lossy(&l).trim_end_matches(['\n', '\r']).to_owned());
            }
            if n == 0 {
                if !partial.is_empty() {
                    st.lines.push(String::from_utf8_lossy(&partial).into_owned());
                }
                st.closed = true;
            }
            self.changed.notify_all();
            if n == 0 {
                return;
            }
        }
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
    serial: Arc<Serial>,
    control: Mutex<Control>,
    _run: NestedRun,
    _guard: MutexGuard<'static, ()>,
}

impl XenVm {
    /// A builder for nested run `name` (names the log file) with app `app` as the domU.
    pub fn builder(name: &str, app: &str) -> XenVmBuilder {
        XenVmBuilder {
            name: name.to_owned(),
            app: app.to_owned(),
            mem_mib: images::xen::xl::DEFAULT_MEMORY_MIB,
            kernel_options: Vec::new(),
            app_args: Vec::new(),
            network: false,
            forwards: Vec::new(),
            disks: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
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
        self.forwards
            .iter()
            .find(|f| f.protocol == protocol && f.guest == guest)
            .map(|f| f.host)
            .ok_or(VmError::NoForward { name: self.name.clone(), protocol, guest })
    }

    /// Waits up to the timeout for the first console line (from boot on) for which `pick` returns a value.
    /// Errors: timeout, or QEMU stopped first; both carry the console.
    pub fn wait_line<T>(&self, what: &str, mut pick: impl FnMut(&str) -> Option<T>) -> Result<T, VmError> {
        let deadline = Instant::now() + self.timeout;
        let mut scanned = 0;
        let mut st = lock(&self.serial.state);
        loop {
            for line in &st.lines[scanned..] {
                if let Some(v) = pick(line) {
                    return Ok(v);
                }
            }
            scanned = st.lines.len();
            if st.closed {
                drop(st);
                return Err(self.failed(format!("QEMU stopped before {what}")));
            }
            let now = Instant::now();
            if now >= deadline {
                drop(st);
                return Err(self.failed(format!("no {what} within {:?}", self.timeout)));
            }
            st = self.serial.changed.wait_timeout(st, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
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
        lock(&self.serial.state).lines.iter().filter_map(|l| guest_text(l).map(str::to_owned)).collect()
    }

    /// Waits until the domU has ended (`run-domu`'s last line) and returns how: xl's shutdown reason and the
    /// guest's `exit status N`.
    pub fn wait_domain_end(&self) -> Result<DomainEnd, VmError> {
        self.wait_event("the end of the domU", |e| matches!(e, Event::Ended).then_some(()))?;
        let st = lock(&self.serial.state);
        let mut end = DomainEnd::default();
        for l in &st.lines {
            match console::classify(l) {
                Line::Event(Event::Shutdown { reason, .. }) => end.reason = Some(reason),
                Line::GuestDebug { text, .. } | Line::GuestConsole(text) => {
                    end.printed = parse_exit_status(text).or(end.printed)
                }
                _ => {}
            }
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
            if lock(&self.serial.state).closed {
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
        let st = lock(&self.serial.state);
        let mut text = String::from("--- domU output (port 0xe9 and PV console) ---\n");
        for l in st.lines.iter().filter_map(|l| guest_text(l)) {
            text.push_str(l);
            text.push('\n');
        }
        text.push_str("--- Xen serial console (Xen, dom0, domU) ---\n");
        let all = st.lines.join("\n");
        let mut cut = all.len().saturating_sub(CONSOLE_TAIL);
        while !all.is_char_boundary(cut) {
            cut += 1;
        }
        if cut > 0 {
            text.push_str(&format!("[... {cut} bytes ...]"));
        }
        text.push_str(&all[cut..]);
        if !st.stderr.trim().is_empty() {
            text.push_str("\n--- qemu stderr ---\n");
            text.push_str(st.stderr.trim_end());
        }
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
