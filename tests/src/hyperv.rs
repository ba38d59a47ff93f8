//! Test harness for the nested Hyper-V-style host (`images::hyperv`): L0 QEMU TCG runs Debian's Linux with
//! `kvm_amd` as L1, which runs the app as L2 under KVM with Hyper-V enlightenments, QEMU's VMBus and hv-balloon.
//! Captures L0's serial console (L1's kernel and init, the guest's serial console, L2 QEMU's stderr), forwards
//! host ports to the guest and to L2's QMP server, and reports how L2 ended.
//!
//! ```no_run
//! use zirvium_tests::hyperv::HypervVm;
//! # fn main() -> Result<(), zirvium_tests::VmError> {
//! let vm = HypervVm::builder("hv_hello", "hello").tsc_page(false).boot()?;
//! let platform = vm.wait_guest("platform: ")?;
//! vm.ensure(platform.contains("hyperv-ref-counter"), "the reference counter clock")?;
//! vm.expect_exit(0)?;
//! # Ok(()) }
//! ```
//!
//! One nested host runs at a time per test binary (it takes both cores); its console is logged to
//! `target/test-logs/hyperv/<name>.log`. Waits are bounded by [`HypervVm::timeout`] (default [`DEFAULT_TIMEOUT`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use images::hyperv::console::{self, Event, Line};
use images::hyperv::run::NestedEnd;
use images::hyperv::{host, nested, Guest, HypervHost, NestedRun};
use images::{Outcome, PortForward, Protocol};

use crate::nested::{forwarded_port, guest_spec_methods, Console, GuestSpec};
use crate::qmp::Qmp;
use crate::{free_port, lock, note, VmError};

/// Default bound of each wait: 10 minutes. Idle, L1 is ready ~10 s after QEMU starts and the guest boots in a few
/// seconds; the machine running the tests may be several times slower.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Serializes nested hosts within a test binary.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The nested host's files, prepared (downloaded on first use) once per test binary.
pub fn hyperv_host() -> Result<HypervHost, VmError> {
    static HOST: OnceLock<Result<HypervHost, String>> = OnceLock::new();
    let host = HOST.get_or_init(|| {
        note("preparing the nested Hyper-V host (Debian packages, cached in target/hyperv-host)");
        let qemu = images::host_tools::QEMU.find().ok_or_else(|| "qemu-system-x86_64 is not installed".to_owned())?;
        host::prepare(&host::default_dir(), &qemu, &mut |m| note(format_args!("hyperv host: {m}")))
            .map_err(|e| e.to_string())
    });
    host.clone().map_err(|message| VmError::Build { app: "the nested Hyper-V host".into(), message })
}

/// Configuration of a nested run before boot; see [`HypervVm::builder`].
#[derive(Clone, Debug)]
pub struct HypervVmBuilder {
    spec: GuestSpec,
    tsc_page: bool,
    nic: bool,
    qmp: bool,
}

impl HypervVmBuilder {
    guest_spec_methods!("128");

    /// Whether the host publishes a valid reference TSC page (default true; false: the guest reads the reference
    /// counter MSR).
    pub fn tsc_page(mut self, valid: bool) -> Self {
        self.tsc_page = valid;
        self
    }

    /// A virtio-net-pci NIC on L2's user network plus a forward from a free host port to `guest_port` of the
    /// guest; see [`HypervVm::host_port`].
    pub fn forward(mut self, protocol: Protocol, guest_port: u16) -> Self {
        self.nic = true;
        self.spec.forwards.push((protocol, guest_port));
        self
    }

    /// L2's QMP server, reachable with [`HypervVm::qmp`].
    pub fn qmp(mut self) -> Self {
        self.qmp = true;
        self
    }

    /// Checks the host tools, builds the app, prepares the host, waits until no other nested host of this binary
    /// runs, starts L0.
    pub fn boot(self) -> Result<HypervVm, VmError> {
        let prepared = self.spec.prepare()?;
        let host = hyperv_host()?;
        let forwards = prepared.forwards;
        let qmp_host_port = if self.qmp { Some(free_port(Protocol::Tcp)?) } else { None };
        let guest = Guest {
            app: self.spec.app.clone(),
            kernel: prepared.kernel,
            mem_mib: self.spec.mem_mib,
            cmdline: prepared.cmdline,
            tsc_page: self.tsc_page,
            nic: self.nic,
            forwards: forwards.clone(),
            qmp_host_port,
            l2_timeout_secs: self.spec.timeout.as_secs().max(1),
        };
        let guard = lock(&ONE_AT_A_TIME);
        let io = |what: String| move |source| VmError::Io { what, source };
        let run = images::hyperv::prepare_nested(&host, &guest)
            .map_err(|e| VmError::Io { what: "preparing the nested run".into(), source: std::io::Error::other(e) })?;
        let mut cmd = nested::l0_command(&run.options);
        let command_line = images::shell::shell_line(&cmd);
        let (log_path, log) =
            self.spec.create_log("hyperv", &format!("# L0: {command_line}\n# L2: {}\n", run.l2_command))?;
        note(format_args!(
            "{}: booting Linux + KVM under QEMU TCG with {} as the Hyper-V guest (reference TSC page {}, log {})",
            self.spec.name,
            self.spec.app,
            if self.tsc_page { "valid" } else { "invalid" },
            log_path.display()
        ));
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(io(format!("starting {command_line}")))?;
        let serial = Console::attach(&mut child, log);
        Ok(HypervVm {
            name: self.spec.name,
            timeout: self.spec.timeout,
            forwards,
            qmp_host_port,
            log_path,
            serial,
            child: Mutex::new(child),
            _run: run,
            _guard: guard,
        })
    }
}

/// A running nested host with the app as L2. Dropping it kills L0's QEMU.
pub struct HypervVm {
    name: String,
    timeout: Duration,
    forwards: Vec<PortForward>,
    qmp_host_port: Option<u16>,
    log_path: PathBuf,
    serial: Arc<Console>,
    child: Mutex<Child>,
    _run: NestedRun,
    _guard: MutexGuard<'static, ()>,
}

impl HypervVm {
    /// A builder for nested run `name` (names the log file) with app `app` as the guest: 128 MiB, valid
    /// reference TSC page, no NIC, no QMP.
    pub fn builder(name: &str, app: &str) -> HypervVmBuilder {
        HypervVmBuilder {
            spec: GuestSpec::new(name, app, 128, DEFAULT_TIMEOUT),
            tsc_page: true,
            nic: false,
            qmp: false,
        }
    }

    /// The run's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bound of each wait.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The serial console log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Seconds since L0 started, for progress notes.
    pub fn uptime(&self) -> f64 {
        self.serial.uptime().as_secs_f64()
    }

    /// When the first console line `pick` accepts arrived, since L0 started (for the boot-phase figures).
    pub fn arrival(&self, pick: impl FnMut(&str) -> bool) -> Option<Duration> {
        self.serial.arrival(pick)
    }

    /// Host port forwarded to the guest's `guest` port. Errors: no such forward was requested.
    pub fn host_port(&self, protocol: Protocol, guest: u16) -> Result<u16, VmError> {
        forwarded_port(&self.forwards, &self.name, protocol, guest)
    }

    /// A QMP session with L2's QEMU (connecting until the timeout while L1 and L2 come up). Errors: QMP was not
    /// requested, the connection failed.
    pub fn qmp(&self) -> Result<Qmp, VmError> {
        let port = self.qmp_host_port.ok_or_else(|| self.failed("QMP was not requested (use .qmp())".into()))?;
        Qmp::connect(port, self.timeout).map_err(|e| self.failed(format!("connecting to L2's QMP: {e}")))
    }

    /// Waits up to the timeout for the first console line (from boot on) for which `pick` returns a value.
    /// Errors: timeout, or L0 stopped first; both carry the console.
    pub fn wait_line<T>(&self, what: &str, pick: impl FnMut(&str) -> Option<T>) -> Result<T, VmError> {
        self.serial.wait_line(what, self.timeout, pick).map_err(|why| self.failed(why))
    }

    /// Waits for a line of the guest's serial console containing `needle`; returns its text. Errors: L2 ended
    /// first, timeout, L0 stopped.
    pub fn wait_guest(&self, needle: &str) -> Result<String, VmError> {
        let found = self.wait_line(&format!("a guest line containing {needle:?}"), |l| match console::classify(l) {
            Line::Guest(text) if text.contains(needle) => Some(Some(text.to_owned())),
            Line::Event(Event::L2Exited { .. }) => Some(None),
            _ => None,
        })?;
        found.ok_or_else(|| self.failed(format!("L2 ended without printing a line containing {needle:?}")))
    }

    /// The guest's serial console so far, one entry per line.
    pub fn guest_output(&self) -> Vec<String> {
        self.serial.with_lines(|lines| lines.iter().filter_map(|l| guest_text(l).map(str::to_owned)).collect())
    }

    /// Waits until L1 reports L2's end and returns how L2's QEMU ended.
    pub fn wait_l2_end(&self) -> Result<Outcome, VmError> {
        self.wait_line("L2's end", |l| {
            matches!(console::classify(l), Line::Event(Event::L2Exited { .. })).then_some(())
        })?;
        let end = self.serial.with_lines(|lines| {
            let mut end = NestedEnd::default();
            for l in lines {
                end.take(l);
            }
            end
        });
        end.l2_outcome().ok_or_else(|| self.failed("L1 reported no exit status for L2".into()))
    }

    /// Waits for L2's end and checks the guest exited with `status` (isa-debug-exit). Errors: another outcome.
    pub fn expect_exit(&self, status: u8) -> Result<(), VmError> {
        let outcome = self.wait_l2_end()?;
        self.ensure(
            outcome == Outcome::Guest(status),
            format_args!("expected guest exit status {status}, got {outcome}"),
        )
    }

    /// Succeeds when `condition` holds, else fails with `what` and the console.
    pub fn ensure(&self, condition: bool, what: impl std::fmt::Display) -> Result<(), VmError> {
        if condition {
            Ok(())
        } else {
            Err(self.failed(what.to_string()))
        }
    }

    /// A [`VmError::Failed`] with `what`, the guest's output, the end of L0's serial console (L1 and the guest) and
    /// QEMU's stderr. Kills L0: a failed run is not continued.
    pub fn failed(&self, what: String) -> VmError {
        {
            let mut c = lock(&self.child);
            let _ = c.kill();
            let _ = c.wait();
        }
        let text = self.serial.report("guest serial console", "L0 serial console (L1 and the guest)", guest_text);
        VmError::Failed { name: self.name.clone(), what, console: text, log: self.log_path.clone() }
    }
}

impl Drop for HypervVm {
    fn drop(&mut self) {
        let mut c = lock(&self.child);
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// The guest's text in a console line.
fn guest_text(line: &str) -> Option<&str> {
    match console::classify(line) {
        Line::Guest(text) => Some(text),
        _ => None,
    }
}
