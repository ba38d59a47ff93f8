//! What the test harnesses of the nested hosts (Xen, Hyper-V) share: the serial console of the host's QEMU
//! ([`Console`]: complete lines as they arrive, also written to the run's log file, bounded waits for a line,
//! QEMU's stderr, the failure report), the guest's spec with its builder methods ([`GuestSpec`]), and port
//! lookups.

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Child;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use images::{Accel, KernelOption, PortForward, Protocol, RunOptions};

use crate::{lock, VmError};

/// Bytes of the serial console kept in an error message; the whole console is in the log file.
const CONSOLE_TAIL: usize = 24 * 1024;

/// The serial console: complete lines as they arrive.
pub(crate) struct Console {
    state: Mutex<ConsoleState>,
    changed: Condvar,
    started: Instant,
}

#[derive(Default)]
struct ConsoleState {
    lines: Vec<String>,
    /// When each line arrived, since the console was attached.
    arrived: Vec<Duration>,
    /// QEMU closed its stdout.
    closed: bool,
    stderr: String,
}

impl Console {
    /// Starts the reader threads of `child` (stdout and stderr piped): lines go to the console and to `log`.
    pub(crate) fn attach(child: &mut Child, log: File) -> Arc<Console> {
        let console = Arc::new(Console { state: Mutex::default(), changed: Condvar::new(), started: Instant::now() });
        if let Some(out) = child.stdout.take() {
            let c = Arc::clone(&console);
            std::thread::spawn(move || c.pump(out, log));
        }
        if let Some(mut err) = child.stderr.take() {
            let c = Arc::clone(&console);
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = err.read_to_string(&mut text);
                lock(&c.state).stderr = text;
            });
        }
        console
    }

    /// Reader thread: splits QEMU's stdout into lines (lossy UTF-8, without `\r\n`), logs them, wakes waiters.
    fn pump(&self, mut out: impl Read, mut log: File) {
        let mut buf = [0u8; 4096];
        let mut partial = Vec::new();
        loop {
            let n = out.read(&mut buf).unwrap_or(0);
            let _ = log.write_all(&buf[..n]);
            partial.extend_from_slice(&buf[..n]);
            let now = self.started.elapsed();
            let mut st = lock(&self.state);
            while let Some(i) = partial.iter().position(|&b| b == b'\n') {
                let l: Vec<u8> = partial.drain(..=i).collect();
                st.lines.push(String::from_utf8_lossy(&l).trim_end_matches(['\n', '\r']).to_owned());
                st.arrived.push(now);
            }
            if n == 0 {
                if !partial.is_empty() {
                    st.lines.push(String::from_utf8_lossy(&partial).into_owned());
                    st.arrived.push(now);
                }
                st.closed = true;
            }
            self.changed.notify_all();
            if n == 0 {
                return;
            }
        }
    }

    /// Waits up to `timeout` for the first console line (from boot on) for which `pick` returns a value. Errors:
    /// what went wrong (QEMU stopped first, or the time ran out), for the caller's failure report.
    pub(crate) fn wait_line<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut pick: impl FnMut(&str) -> Option<T>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + timeout;
        let mut scanned = 0;
        let mut st = lock(&self.state);
        loop {
            for line in &st.lines[scanned..] {
                if let Some(v) = pick(line) {
                    return Ok(v);
                }
            }
            scanned = st.lines.len();
            if st.closed {
                return Err(format!("QEMU stopped before {what}"));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!("no {what} within {timeout:?}"));
            }
            st = self.changed.wait_timeout(st, deadline - now).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
    }

    /// Calls `f` with every line received so far.
    pub(crate) fn with_lines<T>(&self, f: impl FnOnce(&[String]) -> T) -> T {
        f(&lock(&self.state).lines)
    }

    /// When the first line `pick` accepts arrived, since the console was attached (QEMU started).
    pub(crate) fn arrival(&self, mut pick: impl FnMut(&str) -> bool) -> Option<Duration> {
        let st = lock(&self.state);
        st.lines.iter().position(|l| pick(l)).map(|i| st.arrived[i])
    }

    /// Time since the console was attached (QEMU started).
    pub(crate) fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether QEMU closed its stdout.
    pub(crate) fn closed(&self) -> bool {
        lock(&self.state).closed
    }

    /// The failure report: the guest's output (the lines `guest_text` extracts, under `guest` as heading), the end
    /// of the serial console (under `console`) and QEMU's stderr.
    pub(crate) fn report(&self, guest: &str, console: &str, guest_text: impl Fn(&str) -> Option<&str>) -> String {
        let st = lock(&self.state);
        let mut text = format!("--- {guest} ---\n");
        for l in st.lines.iter().filter_map(|l| guest_text(l)) {
            text.push_str(l);
            text.push('\n');
        }
        text.push_str(&format!("--- {console} ---\n"));
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
        text
    }
}

/// What the nested harnesses' builders share: the guest app, its command line, RAM, port forwards and the bound of
/// each wait.
#[derive(Clone, Debug)]
pub(crate) struct GuestSpec {
    /// The run's name (names the log file).
    pub name: String,
    /// The app.
    pub app: String,
    /// Guest RAM in MiB.
    pub mem_mib: u32,
    /// Kernel options `key=value`.
    pub kernel_options: Vec<(String, String)>,
    /// App arguments.
    pub app_args: Vec<String>,
    /// Guest ports to forward host ports to (picked at boot).
    pub forwards: Vec<(Protocol, u16)>,
    /// Bound of each wait.
    pub timeout: Duration,
}

/// What [`GuestSpec::prepare`] gives a harness.
pub(crate) struct PreparedGuest {
    /// The app's ELF.
    pub kernel: PathBuf,
    /// The guest's command line exactly as `images run` writes it (words with spaces quoted).
    pub cmdline: String,
    /// The forwards with their host ports.
    pub forwards: Vec<PortForward>,
}

impl GuestSpec {
    /// A spec for run `name` of `app` with `mem_mib` MiB and wait bound `timeout`, no arguments, no forwards.
    pub(crate) fn new(name: &str, app: &str, mem_mib: u32, timeout: Duration) -> Self {
        GuestSpec {
            name: name.to_owned(),
            app: app.to_owned(),
            mem_mib,
            kernel_options: Vec::new(),
            app_args: Vec::new(),
            forwards: Vec::new(),
            timeout,
        }
    }

    /// Checks the name, the host tools ([`crate::host_tools`]), builds the app, renders the command line and picks
    /// the host ports. Errors: an invalid name or command line, missing tools, the build.
    pub(crate) fn prepare(&self) -> Result<PreparedGuest, VmError> {
        let valid = !self.name.is_empty() && self.name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
        if !valid {
            return Err(VmError::InvalidName(self.name.clone()));
        }
        crate::host_tools()?;
        let kernel = crate::image(&self.app)?;
        let mut opts = RunOptions::new("", Accel::Tcg);
        for (k, v) in &self.kernel_options {
            opts.kernel_options.push(KernelOption::new(k, v)?);
        }
        opts.app_args = self.app_args.clone();
        opts.validate()?;
        let mut forwards = Vec::new();
        for &(protocol, guest) in &self.forwards {
            forwards.push(PortForward { protocol, host: crate::free_port(protocol)?, guest });
        }
        Ok(PreparedGuest { kernel, cmdline: opts.kernel_command_line(), forwards })
    }

    /// Creates `target/test-logs/<kind>/<name>.log` starting with `header`. Errors: the file cannot be created.
    pub(crate) fn create_log(&self, kind: &str, header: &str) -> Result<(PathBuf, File), VmError> {
        let io = |what: String| move |source| VmError::Io { what, source };
        let dir = images::cargo::target_dir().join("test-logs").join(kind);
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let path = dir.join(format!("{}.log", self.name));
        let mut log = File::create(&path).map_err(io(format!("creating {}", path.display())))?;
        let _ = log.write_all(header.as_bytes());
        Ok((path, log))
    }
}

/// The builder methods every nested harness has, for a builder with a `spec: GuestSpec` field; `$mem` is the
/// default RAM for the docs.
macro_rules! guest_spec_methods {
    ($mem:literal) => {
        /// App arguments (after `--` on the guest's command line).
        pub fn args<I, S>(mut self, args: I) -> Self
        where
            I: IntoIterator<Item = S>,
            S: Into<String>,
        {
            self.spec.app_args.extend(args.into_iter().map(Into::into));
            self
        }

        /// A kernel option `key=value` (checked at boot).
        pub fn kernel_option(mut self, key: &str, value: &str) -> Self {
            self.spec.kernel_options.push((key.to_owned(), value.to_owned()));
            self
        }

        #[doc = concat!("Guest RAM in MiB (default ", $mem, ").")]
        pub fn mem_mib(mut self, mib: u32) -> Self {
            self.spec.mem_mib = mib;
            self
        }

        /// Bound of each wait (default 10 minutes).
        pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
            self.spec.timeout = timeout;
            self
        }
    };
}
pub(crate) use guest_spec_methods;

/// The host port of the forward to `protocol` port `guest` in `forwards`. Errors: [`VmError::NoForward`] naming
/// VM `name`.
pub(crate) fn forwarded_port(
    forwards: &[PortForward],
    name: &str,
    protocol: Protocol,
    guest: u16,
) -> Result<u16, VmError> {
    forwards.iter().find(|f| f.protocol == protocol && f.guest == guest).map(|f| f.host).ok_or(VmError::NoForward {
        name: name.to_owned(),
        protocol,
        guest,
    })
}
