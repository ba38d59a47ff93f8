//! Test harness for booting Zirvium images under QEMU: build once per test binary, boot with the exact
//! `images run` command line ([`images::qemu_command`]), capture the serial console, wait for lines and for the
//! exit status (QEMU `isa-debug-exit`, see [`images::exit`]) with hard timeouts.
//!
//! ```no_run
//! use zirvium_tests::{Accel, Protocol, Vm, VmError};
//! # fn main() -> Result<(), VmError> {
//! let vm = Vm::builder("httpd_serves", "httpd", Accel::Tcg).forward(Protocol::Tcp, 80).boot()?;
//! vm.wait_for("listening")?;
//! let port = vm.host_port(Protocol::Tcp, 80)?; // connect to 127.0.0.1:port
//! # Ok(()) }
//! ```
//!
//! At most [`MAX_VMS`] QEMUs run at once per test binary (the machine has 2 cores); each VM logs its console to
//! `target/test-logs/<test binary>/<name>.log`. Before its first VM a test binary makes sure the host tools the
//! tests run are there ([`host_tools`]): as root it installs the missing ones, otherwise every VM test fails
//! with the one command that installs them.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub mod disk;
pub mod http;
pub mod hyperv;
mod nested;
pub mod netns;
pub mod qmp;
pub mod xen;

pub use images::{Accel, ConfigError, DiskBus, KernelOption, Machine, Outcome, PortForward, Protocol};
use images::{Network, Profile, RunOptions};

/// Default hard timeout for [`Vm::wait_for`] and [`Vm::wait_exit`]: 60 s (TCG on a busy 2-core machine is slow).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Most QEMU processes one test binary runs at the same time.
pub const MAX_VMS: usize = 2;

/// Bytes of console kept at the end of an error message; the whole console is in the log file.
const CONSOLE_TAIL: usize = 16 * 1024;

/// Writes `zirvium-tests: MSG` to the process's stderr directly, so it shows even when libtest captures output
/// (capture only covers `print!`/`eprint!`).
pub fn note(msg: impl fmt::Display) {
    let _ = writeln!(std::io::stderr().lock(), "zirvium-tests: {msg}");
}

/// Whether `accel` can be used here. When it cannot, prints `SKIP <test>: ...` with the reason via [`note`] and
/// returns false, so the skip is never silent.
pub fn accel_usable(test: &str, accel: Accel) -> bool {
    match accel {
        Accel::Tcg => true,
        Accel::Kvm => match images::qemu::kvm_usable() {
            Ok(()) => true,
            Err(reason) => {
                note(format_args!("SKIP {test}: KVM unavailable ({reason})"));
                false
            }
        },
    }
}

/// Makes sure the host tools the tests run ([`images::host_tools::TEST_TOOLS`]: QEMU, `fsck.fat`, `tc`, python3,
/// ...) are installed, once per test binary: as root missing ones are installed with apt-get
/// ([`images::host_tools::ensure`]; other test binaries wait on its lock file), otherwise the error names them
/// with the one command that installs them.
/// Later calls (and failures) are answered from the first.
pub fn host_tools() -> Result<(), VmError> {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let checked = CHECKED.get_or_init(|| {
        images::host_tools::ensure(&images::host_tools::TEST_TOOLS, &mut |m| note(m)).map_err(|e| e.to_string())
    });
    checked.clone().map_err(VmError::HostTools)
}

/// Failures of a VM test. `Debug` prints the same text as `Display`, so a test returning `Result<(), VmError>`
/// fails with a readable message that includes the console.
pub enum VmError {
    /// A host tool the tests run is missing and was not installed; the message has the command that installs it.
    HostTools(String),
    /// The image did not build.
    Build {
        /// The app.
        app: String,
        /// The build error's text.
        message: String,
    },
    /// The run options are invalid or the environment cannot run them (e.g. KVM requested but unavailable).
    Config(ConfigError),
    /// A host-side operation failed (QEMU spawn, log file, port probe).
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The VM name is already used in this test binary (log files would collide).
    DuplicateName(String),
    /// The VM name is not `[A-Za-z0-9_.-]+` (it names a file).
    InvalidName(String),
    /// No forward was requested for that guest port.
    NoForward {
        /// The VM.
        name: String,
        /// TCP or UDP.
        protocol: Protocol,
        /// The guest port asked for.
        guest: u16,
    },
    /// A check against the VM's behaviour failed; carries the console.
    Failed {
        /// The VM.
        name: String,
        /// What was expected and what happened.
        what: String,
        /// The end of the serial console and QEMU's stderr.
        console: String,
        /// The full log.
        log: PathBuf,
    },
}

impl fmt::Display for VmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmError::HostTools(message) => write!(f, "{message}"),
            VmError::Build { app, message } => write!(f, "building {app} failed: {message}"),
            VmError::Config(e) => write!(f, "{e}"),
            VmError::Io { what, source } => write!(f, "{what}: {source}"),
            VmError::DuplicateName(n) => {
                write!(f, "VM name `{n}` used twice in this test binary; names must be unique")
            }
            VmError::InvalidName(n) => {
                write!(f, "VM name `{n}`: use letters, digits, `_`, `.` and `-` (it names the log file)")
            }
            VmError::NoForward { name, protocol, guest } => {
                write!(f, "VM {name}: no {protocol} forward to guest port {guest} was requested (use .forward())")
            }
            VmError::Failed { name, what, console, log } => {
                write!(f, "VM {name}: {what}\n--- console (full log: {}) ---\n{console}\n--- end ---", log.display())
            }
        }
    }
}

impl fmt::Debug for VmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for VmError {}

impl From<ConfigError> for VmError {
    fn from(e: ConfigError) -> Self {
        VmError::Config(e)
    }
}

/// Locks `m`, ignoring poisoning: a panicking test thread must not hide the console from the others.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Builds `app` (release, `x86_64-unknown-none`) once per test binary and returns its ELF; later calls (and
/// failures) are answered from the first build.
pub fn image(app: &str) -> Result<PathBuf, VmError> {
    image_with_initrd(app, None)
}

/// Builds `app` with the ustar archive `initrd` embedded (or none) once per test binary and returns a private
/// copy of the boot ELF (`target/test-images/<binary>/<app>-<n>.elf`): builds with and without an initrd write the
/// same cargo artifact, so VMs must not boot that path directly.
pub fn image_with_initrd(app: &str, initrd: Option<&Path>) -> Result<PathBuf, VmError> {
    built(app, initrd).map(|(boot, _)| boot)
}

/// The linked ELF with its symbol table of `app` as [`image`] builds it (the boot image has none): for naming
/// backtrace frames (`<app>-<n>.symbols.elf` beside the boot copy).
pub fn image_symbols(app: &str) -> Result<PathBuf, VmError> {
    built(app, None).map(|(_, symbols)| symbols)
}

/// The boot ELF and the linked ELF with symbols of `app` built with `initrd`, copied once per test binary.
fn built(app: &str, initrd: Option<&Path>) -> Result<(PathBuf, PathBuf), VmError> {
    type Builds = HashMap<(String, Option<PathBuf>), Result<(PathBuf, PathBuf), String>>;
    static BUILDS: OnceLock<Mutex<Builds>> = OnceLock::new();
    // Held across the build: one cargo at a time, and nobody builds the same image twice.
    let mut builds = lock(BUILDS.get_or_init(Default::default));
    let n = builds.len();
    let result = builds.entry((app.to_owned(), initrd.map(Path::to_owned))).or_insert_with(|| {
        let with = initrd.map(|p| format!(" with initrd {}", p.display())).unwrap_or_default();
        note(format_args!("building {app} (release, {}){with}", images::KERNEL_TARGET));
        let img = images::cargo::build_app_with_initrd(app, Profile::Release, initrd).map_err(|e| e.to_string())?;
        let dir = log_dir().join("images");
        // A std app is named by its crate directory: flatten it into one file name.
        let stem = format!("{}-{n}", app.replace('/', "_"));
        let copy = |from: &Path, to: PathBuf| {
            std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::copy(from, &to))
                .map(|_| to.clone())
                .map_err(|e| format!("copying {} to {}: {e}", from.display(), to.display()))
        };
        let boot = copy(&img.path, dir.join(format!("{stem}.elf")))?;
        let symbols = copy(&img.symbols, dir.join(format!("{stem}.symbols.elf")))?;
        Ok((boot, symbols))
    });
    result.clone().map_err(|message| VmError::Build { app: app.to_owned(), message })
}

/// Builds the libtest harness of the std crate in directory `app` (`images run --test`) and returns its ELF,
/// for [`VmBuilder::kernel`].
pub fn test_image(app: &str) -> Result<PathBuf, VmError> {
    note(format_args!("building the tests of {app} (release, {})", images::stdapp::STD_TARGET));
    let build = |message: String| VmError::Build { app: app.to_owned(), message };
    let krate = images::project::workspace_app(app).map_err(|e| build(e.to_string()))?;
    let img = images::stdapp::build_test_image(&krate, Profile::Release, None).map_err(|e| build(e.to_string()))?;
    Ok(img.path)
}

/// A free host port for `protocol`: binds port 0 on all addresses (as QEMU's `hostfwd` does) and never returns
/// the same port twice in one process. Another process may still take it before QEMU binds it.
pub fn free_port(protocol: Protocol) -> Result<u16, VmError> {
    static GIVEN: OnceLock<Mutex<HashSet<(Protocol, u16)>>> = OnceLock::new();
    let io = |source| VmError::Io { what: format!("finding a free {protocol} port"), source };
    for _ in 0..64 {
        let port = match protocol {
            Protocol::Tcp => TcpListener::bind(("0.0.0.0", 0)).and_then(|l| l.local_addr()).map_err(io)?.port(),
            Protocol::Udp => UdpSocket::bind(("0.0.0.0", 0)).and_then(|s| s.local_addr()).map_err(io)?.port(),
        };
        if lock(GIVEN.get_or_init(Default::default)).insert((protocol, port)) {
            return Ok(port);
        }
    }
    Err(io(std::io::Error::other("the kernel kept returning ports already handed out")))
}

/// Counting semaphore limiting concurrent QEMUs to [`MAX_VMS`].
struct Slots {
    used: Mutex<usize>,
    freed: Condvar,
}

static SLOTS: Slots = Slots { used: Mutex::new(0), freed: Condvar::new() };

/// One of the [`MAX_VMS`] slots; released on drop.
struct Permit;

impl Permit {
    fn acquire() -> Permit {
        let mut used = lock(&SLOTS.used);
        while *used >= MAX_VMS {
            used = SLOTS.freed.wait(used).unwrap_or_else(PoisonError::into_inner);
        }
        *used += 1;
        Permit
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        *lock(&SLOTS.used) -= 1;
        SLOTS.freed.notify_one();
    }
}

/// Requested network of a [`VmBuilder`]; host ports are picked at boot.
#[derive(Clone, Debug)]
enum NetRequest {
    None,
    User(Vec<(Protocol, u16)>),
    Tap(String),
    /// QEMU's `-netdev dgram` between these UDP ports of 127.0.0.1: (QEMU's, the peer's).
    Dgram(u16, u16),
}

/// Configuration of a VM before boot; see [`Vm::builder`]. Defaults are the contract's: microvm, 64 MiB,
/// 1 vCPU, no network, timeouts [`DEFAULT_TIMEOUT`].
#[derive(Clone, Debug)]
pub struct VmBuilder {
    name: String,
    app: String,
    accel: Accel,
    machine: Machine,
    cpu: String,
    mem_mib: u32,
    smp: u16,
    net: NetRequest,
    kernel_options: Vec<(String, String)>,
    app_args: Vec<String>,
    timeout: Duration,
    disks: Vec<images::qemu::DiskSpec>,
    disk_bus: DiskBus,
    initrd: Option<PathBuf>,
    kernel: Option<PathBuf>,
    boot_disk: Option<(PathBuf, images::diskboot::Firmware)>,
    balloon: bool,
    /// Disk index → blkdebug rules file.
    blkdebug: Vec<(usize, PathBuf)>,
    /// Network namespace QEMU runs in.
    netns: Option<String>,
}

impl VmBuilder {
    /// Gives the guest a virtio-balloon device (`images run --balloon`) and a QMP server on a free host port
    /// (`--qmp`) that resizes it: see [`Vm::qmp`].
    pub fn balloon(mut self) -> Self {
        self.balloon = true;
        self
    }

    /// Boots this ELF (e.g. from [`test_image`]) instead of building the app.
    pub fn kernel(mut self, path: impl Into<PathBuf>) -> Self {
        self.kernel = Some(path.into());
        self
    }

    /// Boots the packaged disk `image` (`images package`) through `firmware` on q35 instead of building the app
    /// — what `images run --image FILE --boot bios|uefi` does. The app name only names the VM in notes.
    pub fn boot_disk(mut self, image: impl Into<PathBuf>, firmware: images::diskboot::Firmware) -> Self {
        self.boot_disk = Some((image.into(), firmware));
        self
    }

    /// Attaches a raw disk image as a virtio-blk device (in call order).
    pub fn disk(mut self, path: impl Into<PathBuf>) -> Self {
        self.disks.push(images::qemu::DiskSpec { path: path.into(), read_only: false });
        self
    }

    /// Attaches a raw disk image like [`VmBuilder::disk`], read through QEMU's `blkdebug` driver with the rules
    /// file `rules` (`[inject-error]` with `event = "read_aio"`, `"write_aio"` or `"flush_to_disk"`, `errno`,
    /// `once`; `[set-state]` to arm it later; QEMU `docs/devel/blkdebug.rst`): the guest sees the errors the
    /// rules inject as failed requests (virtio-blk `VIRTIO_BLK_S_IOERR`, an NVMe error status).
    pub fn disk_blkdebug(mut self, path: impl Into<PathBuf>, rules: impl Into<PathBuf>) -> Self {
        self.blkdebug.push((self.disks.len(), rules.into()));
        self.disk(path)
    }

    /// Attaches a raw disk image read-only (`readonly=on`: the device offers `VIRTIO_BLK_F_RO`), in call order
    /// with [`VmBuilder::disk`] — what `images run --disk FILE:ro` does.
    pub fn disk_read_only(mut self, path: impl Into<PathBuf>) -> Self {
        self.disks.push(images::qemu::DiskSpec { path: path.into(), read_only: true });
        self
    }

    /// The controller the disks are attached to (`images run --disk-bus`); virtio-blk unless set.
    pub fn disk_bus(mut self, bus: DiskBus) -> Self {
        self.disk_bus = bus;
        self
    }

    /// Embeds an initrd in the image (mounted read-only at `/`): a ustar archive, or a directory packed into
    /// one (`<log dir>/<name>.tar`) at boot — what `images run --initrd` does.
    pub fn initrd(mut self, path: impl Into<PathBuf>) -> Self {
        self.initrd = Some(path.into());
        self
    }

    /// QEMU machine (`-M`).
    pub fn machine(mut self, machine: Machine) -> Self {
        self.machine = machine;
        self
    }

    /// QEMU CPU model (`-cpu`), `qemu64` unless set; `max` under TCG offers SMEP, SMAP and UMIP.
    pub fn cpu(mut self, model: &str) -> Self {
        model.clone_into(&mut self.cpu);
        self
    }

    /// Guest RAM in MiB (`-m`).
    pub fn mem_mib(mut self, mib: u32) -> Self {
        self.mem_mib = mib;
        self
    }

    /// vCPU count (`-smp`), 1..=255.
    pub fn smp(mut self, cpus: u16) -> Self {
        self.smp = cpus;
        self
    }

    /// Adds kernel option `key=value` (before `--`); checked at [`VmBuilder::boot`].
    pub fn kernel_option(mut self, key: &str, value: &str) -> Self {
        self.kernel_options.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Appends app arguments (after `--`); each must be non-empty without whitespace.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.app_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// User networking (slirp; guest 10.0.2.15) with no forwards yet.
    pub fn user_net(mut self) -> Self {
        if !matches!(self.net, NetRequest::User(_)) {
            self.net = NetRequest::User(Vec::new());
        }
        self
    }

    /// User networking plus a forward from a free host port (picked at boot, see [`Vm::host_port`]) to
    /// `guest_port`.
    pub fn forward(mut self, protocol: Protocol, guest_port: u16) -> Self {
        self = self.user_net();
        if let NetRequest::User(fwds) = &mut self.net {
            fwds.push((protocol, guest_port));
        }
        self
    }

    /// Tap networking on host interface `ifname`, which the test created and configured beforehand.
    pub fn tap(mut self, ifname: &str) -> Self {
        self.net = NetRequest::Tap(ifname.to_owned());
        self
    }

    /// Runs QEMU inside network namespace `ns` (`ip netns exec`) on its tap [`netns::TAP`], with the guest at
    /// [`netns::GUEST_ADDR`]/24 (kernel option `ip=`).
    pub fn netns(mut self, ns: &netns::NetNs) -> Self {
        self.netns = Some(ns.name().to_owned());
        let (key, value) = netns::NetNs::guest_ip_option();
        self.tap(netns::TAP).kernel_option(key, &value)
    }

    /// Runs QEMU inside network namespace `ns` like [`VmBuilder::netns`], but its NIC sends and receives
    /// Ethernet frames as UDP datagrams (`-netdev dgram`) from port `qemu_port` of the namespace's 127.0.0.1 to
    /// `peer_port`, where a relay the test started (`tests/floods/impair.py`) passes them to and from the tap.
    pub fn netns_dgram(self, ns: &netns::NetNs, qemu_port: u16, peer_port: u16) -> Self {
        let mut b = self.netns(ns);
        b.net = NetRequest::Dgram(qemu_port, peer_port);
        b
    }

    /// Default timeout of this VM's waits (instead of [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Checks the host tools ([`host_tools`], once per test binary), builds the app (once per test binary),
    /// waits for a free VM slot, and starts QEMU.
    ///
    /// Prints (unconditionally, via [`note`]) the VM's name, app, machine and accelerator. Errors: a missing host
    /// tool, build failure, invalid options, KVM requested but unavailable, name reused, QEMU or log file failures.
    pub fn boot(self) -> Result<Vm, VmError> {
        claim_name(&self.name)?;
        host_tools()?;
        if self.accel == Accel::Kvm {
            images::qemu::kvm_usable().map_err(ConfigError::KvmUnavailable)?;
        }
        // A directory is packed into a ustar archive first; the archive is embedded in the image.
        let initrd = match &self.initrd {
            Some(dir) if dir.is_dir() => {
                let out = log_dir().join(format!("{}.tar", self.name));
                images::initrd::pack(dir, &out).map_err(|e| VmError::Io {
                    what: format!("packing {} into {}", dir.display(), out.display()),
                    source: std::io::Error::other(e.to_string()),
                })?;
                Some(out)
            }
            other => other.clone(),
        };
        let kernel = match (&self.boot_disk, &self.kernel) {
            (Some(_), _) => PathBuf::new(),
            (None, Some(k)) => k.clone(),
            (None, None) => image_with_initrd(&self.app, initrd.as_deref())?,
        };
        let mut opts = RunOptions::new(kernel, self.accel);
        opts.machine = self.machine;
        if let Some((image, firmware)) = &self.boot_disk {
            let io = |e: images::diskboot::DiskBootError| VmError::Io {
                what: format!("preparing the boot of {}", image.display()),
                source: std::io::Error::other(e.to_string()),
            };
            std::fs::create_dir_all(log_dir())
                .map_err(|source| VmError::Io { what: format!("creating {}", log_dir().display()), source })?;
            let vars = log_dir().join(format!("{}.ovmf-vars.fd", self.name));
            let format = images::diskboot::image_format(image).map_err(io)?;
            opts.boot_disk = Some(images::diskboot::DiskBoot::new(image, &format, *firmware, &vars).map_err(io)?);
            if opts.machine == Machine::Microvm {
                opts.machine = Machine::Q35;
            }
        }
        opts.cpu.clone_from(&self.cpu);
        opts.mem_mib = self.mem_mib;
        opts.smp = self.smp;
        opts.network = match &self.net {
            NetRequest::None => Network::None,
            NetRequest::Tap(ifname) => Network::Tap { ifname: ifname.clone() },
            NetRequest::Dgram(..) => Network::None,
            NetRequest::User(reqs) => {
                let mut forwards = Vec::new();
                for &(protocol, guest) in reqs {
                    forwards.push(PortForward { protocol, host: free_port(protocol)?, guest });
                }
                Network::User { forwards }
            }
        };
        for (k, v) in &self.kernel_options {
            opts.kernel_options.push(KernelOption::new(k, v)?);
        }
        opts.app_args = self.app_args.clone();
        for disk in &self.disks {
            opts.push_disk(disk);
        }
        opts.disk_bus = self.disk_bus;
        opts.blkdebug = self.blkdebug.iter().cloned().collect();
        opts.initrd = None;
        if self.balloon {
            opts.balloon = true;
            opts.qmp_port = Some(free_port(Protocol::Tcp)?);
        }
        let mut cmd = images::qemu_command(&opts)?;
        if let NetRequest::Dgram(local, remote) = self.net {
            let netdev = format!(
                "dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port={local},\
                 remote.type=inet,remote.host=127.0.0.1,remote.port={remote}"
            );
            let device = format!("{},netdev=n0", opts.machine.virtio_net_device());
            cmd.args(["-netdev", &netdev, "-device", &device]);
        }
        if let Some(ns) = &self.netns {
            // `ip netns exec` execs QEMU in place: the child's pid stays QEMU's, so kill and wait reach it.
            let mut inside = std::process::Command::new("ip");
            inside.args(["netns", "exec", ns]).arg(cmd.get_program()).args(cmd.get_args()).stdin(Stdio::null());
            cmd = inside;
        }
        let command_line = images::shell::shell_line(&cmd);

        let log_path = log_dir().join(format!("{}.log", self.name));
        let io = |what: String| move |source| VmError::Io { what, source };
        std::fs::create_dir_all(log_dir()).map_err(io(format!("creating {}", log_dir().display())))?;
        let mut log = File::create(&log_path).map_err(io(format!("creating {}", log_path.display())))?;
        writeln!(log, "# {command_line}").map_err(io(format!("writing {}", log_path.display())))?;

        let permit = Permit::acquire();
        note(format_args!(
            "{}: booting {} on {} under {} (log {})",
            self.name,
            self.boot_disk.as_ref().map_or(self.app.clone(), |(i, f)| format!("{} through {f}", i.display())),
            opts.machine,
            self.accel,
            log_path.display()
        ));
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(io(format!("starting {command_line}")))?;
        let console = Arc::new(Console::default());
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            let console = Arc::clone(&console);
            readers.push(std::thread::spawn(move || console.pump(out, log)));
        }
        if let Some(mut err) = child.stderr.take() {
            let stderr = Arc::clone(&stderr);
            readers.push(std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = err.read_to_end(&mut buf);
                lock(&stderr).extend_from_slice(&buf);
            }));
        }
        Ok(Vm {
            name: self.name,
            qmp_port: opts.qmp_port,
            accel: self.accel,
            machine: opts.machine,
            timeout: self.timeout,
            forwards: opts.forwards().to_vec(),
            command_line,
            log_path,
            console,
            stderr,
            run: Mutex::new(Run { child: Some(child), readers, outcome: None, permit: Some(permit) }),
        })
    }
}

/// Reserves `name` for this test binary (log file names must not collide).
fn claim_name(name: &str) -> Result<(), VmError> {
    static NAMES: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    if !valid {
        return Err(VmError::InvalidName(name.to_owned()));
    }
    if !lock(NAMES.get_or_init(Default::default)).insert(name.to_owned()) {
        return Err(VmError::DuplicateName(name.to_owned()));
    }
    Ok(())
}

/// `target/test-logs/<test binary name without its hash>`.
fn log_dir() -> PathBuf {
    let exe = std::env::current_exe().ok();
    let stem = exe.as_deref().and_then(Path::file_stem).map(|s| s.to_string_lossy().into_owned());
    let stem = stem.unwrap_or_else(|| "tests".to_owned());
    // cargo names test binaries `<name>-<16 hex digits>`.
    let name = match stem.rsplit_once('-') {
        Some((base, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => base.to_owned(),
        _ => stem,
    };
    images::cargo::target_dir().join("test-logs").join(name)
}

/// The serial console as it arrives, shared between the reader thread and waiters.
#[derive(Default)]
struct Console {
    state: Mutex<ConsoleState>,
    changed: Condvar,
}

#[derive(Default)]
struct ConsoleState {
    bytes: Vec<u8>,
    /// QEMU closed its stdout (it exited).
    closed: bool,
}

impl Console {
    /// Reader thread: copies QEMU's stdout into the buffer and the log file until EOF.
    fn pump(&self, mut out: impl Read, mut log: File) {
        let mut buf = [0u8; 4096];
        loop {
            let n = out.read(&mut buf).unwrap_or(0);
            if n > 0 {
                let _ = log.write_all(&buf[..n]);
            }
            let mut st = lock(&self.state);
            if n == 0 {
                st.closed = true;
            } else {
                st.bytes.extend_from_slice(&buf[..n]);
            }
            self.changed.notify_all();
            if n == 0 {
                return;
            }
        }
    }
}

/// Process state of a VM, behind one lock.
struct Run {
    child: Option<Child>,
    readers: Vec<JoinHandle<()>>,
    outcome: Option<Outcome>,
    permit: Option<Permit>,
}

/// A booted VM. Dropping it kills QEMU if it still runs. All methods take `&self`, so a test may share it.
pub struct Vm {
    name: String,
    accel: Accel,
    machine: Machine,
    timeout: Duration,
    forwards: Vec<PortForward>,
    command_line: String,
    log_path: PathBuf,
    console: Arc<Console>,
    /// QEMU's stderr, complete once the process is reaped.
    stderr: Arc<Mutex<Vec<u8>>>,
    run: Mutex<Run>,
    /// The host port of QEMU's QMP server ([`VmBuilder::balloon`]).
    qmp_port: Option<u16>,
}

impl Vm {
    /// A builder for VM `name` (unique per test binary; names the log file) running app `app` under `accel`.
    pub fn builder(name: &str, app: &str, accel: Accel) -> VmBuilder {
        VmBuilder {
            name: name.to_owned(),
            app: app.to_owned(),
            accel,
            machine: Machine::Microvm,
            cpu: "qemu64".to_owned(),
            mem_mib: 64,
            smp: 1,
            net: NetRequest::None,
            kernel_options: Vec::new(),
            app_args: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            disks: Vec::new(),
            disk_bus: DiskBus::VirtioBlk,
            initrd: None,
            kernel: None,
            boot_disk: None,
            balloon: false,
            blkdebug: Vec::new(),
            netns: None,
        }
    }

    /// A QMP session with this VM's QEMU (connecting until the timeout). Errors: no QMP server (use
    /// [`VmBuilder::balloon`]), the connection failed.
    pub fn qmp(&self) -> Result<qmp::Qmp, VmError> {
        let port = self.qmp_port.ok_or_else(|| self.failed("QMP was not requested (use .balloon())".into()))?;
        qmp::Qmp::connect(port, self.timeout).map_err(|e| self.failed(format!("connecting to QMP: {e}")))
    }

    /// The default timeout of this VM's waits ([`VmBuilder::timeout`]).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The VM's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The accelerator it runs under.
    pub fn accel(&self) -> Accel {
        self.accel
    }

    /// Its machine type.
    pub fn machine(&self) -> Machine {
        self.machine
    }

    /// The QEMU command line, shell-quoted.
    pub fn command_line(&self) -> &str {
        &self.command_line
    }

    /// The log file with the command line, the console and, after exit, QEMU's stderr and the outcome.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// All forwards with their host ports.
    pub fn forwards(&self) -> &[PortForward] {
        &self.forwards
    }

    /// Host port forwarded to guest port `guest` for `protocol`. Errors: no such forward was requested.
    pub fn host_port(&self, protocol: Protocol, guest: u16) -> Result<u16, VmError> {
        nested::forwarded_port(&self.forwards, &self.name, protocol, guest)
    }

    /// The console so far (lossy UTF-8).
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&lock(&self.console.state).bytes).into_owned()
    }

    /// Waits up to the VM's timeout for a complete console line containing `needle`; returns the first such line
    /// (without the line end). See [`Vm::wait_for_within`].
    pub fn wait_for(&self, needle: &str) -> Result<String, VmError> {
        self.wait_for_within(needle, self.timeout)
    }

    /// Waits up to `timeout` for a complete console line containing `needle`, searching from the start of the
    /// console. Errors: timeout (QEMU is killed) or QEMU exited first; both carry the console.
    pub fn wait_for_within(&self, needle: &str, timeout: Duration) -> Result<String, VmError> {
        let deadline = Instant::now() + timeout;
        let mut scanned = 0;
        let mut st = lock(&self.console.state);
        loop {
            // Only complete lines, so the caller sees all of the line it waited for.
            let complete = st.bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let end = if st.closed { st.bytes.len() } else { complete };
            if let Some(line) = find_line(&st.bytes[scanned..end], needle) {
                return Ok(line);
            }
            scanned = scanned.max(end);
            if st.closed {
                drop(st);
                let outcome = self.wait_exit_within(Duration::from_secs(5)).map(|o| o.to_string());
                let how = outcome.unwrap_or_else(|e| e.to_string());
                return Err(self.failed(format!("QEMU stopped ({how}) before a line containing {needle:?}")));
            }
            let now = Instant::now();
            if now >= deadline {
                drop(st);
                self.kill();
                return Err(self.failed(format!("no line containing {needle:?} within {timeout:?}; QEMU killed")));
            }
            st = self.console.changed.wait_timeout(st, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// Waits up to the VM's timeout for QEMU to exit; see [`Vm::wait_exit_within`].
    pub fn wait_exit(&self) -> Result<Outcome, VmError> {
        self.wait_exit_within(self.timeout)
    }

    /// Waits up to `timeout` for QEMU to exit and returns how it ended. On timeout QEMU is killed and the error
    /// carries the console.
    pub fn wait_exit_within(&self, timeout: Duration) -> Result<Outcome, VmError> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut run = lock(&self.run);
                if let Some(outcome) = run.outcome {
                    return Ok(outcome);
                }
                // `child` is `None` only after `reap`, which sets `outcome`: handled above.
                if let Some(child) = run.child.as_mut() {
                    let waited = child.try_wait();
                    match waited {
                        Ok(Some(status)) => return Ok(self.reap(&mut run, status, "")),
                        Ok(None) => {}
                        Err(e) => return Err(VmError::Io { what: format!("waiting for VM {}", self.name), source: e }),
                    }
                }
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(self.failed(format!("QEMU did not exit within {timeout:?}; killed")));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for exit (VM timeout) and checks the guest exit status is `status`; else the error carries the
    /// console.
    pub fn expect_exit(&self, status: u8) -> Result<(), VmError> {
        let outcome = self.wait_exit()?;
        if outcome == Outcome::Guest(status) {
            Ok(())
        } else {
            Err(self.failed(format!("expected guest exit status {status}, got: {outcome}")))
        }
    }

    /// Succeeds when `condition` holds, else fails with `what` and the console.
    pub fn ensure(&self, condition: bool, what: impl fmt::Display) -> Result<(), VmError> {
        if condition {
            Ok(())
        } else {
            Err(self.failed(what.to_string()))
        }
    }

    /// The first complete console line containing `needle`, without waiting; else fails with the console.
    pub fn line_with(&self, needle: &str) -> Result<String, VmError> {
        let line = find_line(&lock(&self.console.state).bytes, needle);
        line.ok_or_else(|| self.failed(format!("no console line contains {needle:?}")))
    }

    /// Kills QEMU (by its own pid) if it still runs and reaps it; returns how it ended.
    pub fn kill(&self) -> Option<Outcome> {
        let mut run = lock(&self.run);
        if run.outcome.is_none() {
            let child = run.child.as_mut()?;
            let _ = child.kill();
            let status = child.wait().ok()?;
            return Some(self.reap(&mut run, status, "killed by the test harness: "));
        }
        run.outcome
    }

    /// Joins the readers, records the outcome, appends stderr and outcome to the log, frees the VM slot.
    fn reap(&self, run: &mut Run, status: std::process::ExitStatus, why: &str) -> Outcome {
        run.child = None;
        for r in run.readers.drain(..) {
            let _ = r.join();
        }
        let stderr = String::from_utf8_lossy(&lock(&self.stderr)).into_owned();
        let outcome = Outcome::from_status(status, &stderr);
        run.outcome = Some(outcome);
        run.permit = None;
        if let Ok(mut log) = std::fs::OpenOptions::new().append(true).open(&self.log_path) {
            let _ = write!(log, "\n--- qemu stderr ---\n{stderr}--- {why}{outcome} ({status}) ---\n");
        }
        outcome
    }

    /// A [`VmError::Failed`] with `what`, the end of the console and QEMU's stderr so far.
    fn failed(&self, what: String) -> VmError {
        let mut console = self.console();
        if console.len() > CONSOLE_TAIL {
            let mut cut = console.len() - CONSOLE_TAIL;
            while !console.is_char_boundary(cut) {
                cut += 1;
            }
            console = format!("[... {cut} bytes ...]{}", &console[cut..]);
        }
        let stderr = String::from_utf8_lossy(&lock(&self.stderr)).into_owned();
        if !stderr.trim().is_empty() {
            console.push_str("\n--- qemu stderr ---\n");
            console.push_str(stderr.trim_end());
        }
        VmError::Failed { name: self.name.clone(), what, console, log: self.log_path.clone() }
    }
}

impl fmt::Debug for Vm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vm")
            .field("name", &self.name)
            .field("accel", &self.accel)
            .field("machine", &self.machine)
            .field("command_line", &self.command_line)
            .finish_non_exhaustive()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The first line of `bytes` containing `needle`, lossy UTF-8, without `\r\n`.
fn find_line(bytes: &[u8], needle: &str) -> Option<String> {
    bytes
        .split(|&b| b == b'\n')
        .find(|line| line.windows(needle.len().max(1)).any(|w| w == needle.as_bytes()))
        .map(|line| String::from_utf8_lossy(line).trim_end_matches('\r').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_line_returns_whole_line() {
        let console = b"[ 0.1 INFO libos] boot\r\n[ 0.2 INFO libos] platform: kvm (x)\r\nhello\n";
        assert_eq!(find_line(console, "platform: ").as_deref(), Some("[ 0.2 INFO libos] platform: kvm (x)"));
        assert_eq!(find_line(console, "hello").as_deref(), Some("hello"));
        assert_eq!(find_line(console, "absent"), None);
    }

    #[test]
    fn free_ports_are_distinct() {
        let a = free_port(Protocol::Tcp).unwrap();
        let b = free_port(Protocol::Tcp).unwrap();
        let u = free_port(Protocol::Udp).unwrap();
        assert!(a != 0 && b != 0 && u != 0);
        assert_ne!(a, b);
    }

    #[test]
    fn names_are_unique_and_safe() {
        assert!(claim_name("unit-name_1").is_ok());
        assert!(matches!(claim_name("unit-name_1"), Err(VmError::DuplicateName(_))));
        assert!(matches!(claim_name("../etc"), Err(VmError::InvalidName(_))));
        assert!(matches!(claim_name(""), Err(VmError::InvalidName(_))));
    }

    #[test]
    fn builder_collects_forwards() {
        let b = Vm::builder("b", "httpd", Accel::Tcg).forward(Protocol::Tcp, 80).forward(Protocol::Udp, 7);
        match b.net {
            NetRequest::User(f) => assert_eq!(f, [(Protocol::Tcp, 80), (Protocol::Udp, 7)]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn semaphore_limits_slots() {
        let permits: Vec<Permit> = (0..MAX_VMS).map(|_| Permit::acquire()).collect();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let p = Permit::acquire();
            let _ = tx.send(());
            drop(p);
        });
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err(), "a third slot was granted");
        drop(permits);
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_ok(), "slot not granted after release");
        waiter.join().unwrap();
    }
}
