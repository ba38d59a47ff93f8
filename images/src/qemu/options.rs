//! What one QEMU run of an image is: machine (`-M`), accelerator, memory, vCPUs, network, disks, boot module and
//! the kernel command line, as [`RunOptions`], with the parsers of `images run`'s options and [`ConfigError`].
//!
//! [`super::args`] turns these into QEMU's arguments; nothing here touches the host.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::forward::PortForward;

/// QEMU machine type (`-M`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Machine {
    /// `-M microvm,acpi=off`: no firmware, virtio-mmio devices announced on the kernel command line.
    #[default]
    Microvm,
    /// `-M q35`: SeaBIOS, PCIe (ECAM), virtio-pci.
    Q35,
    /// `-M pc` (i440FX): SeaBIOS, PCI, virtio-pci.
    Pc,
}

impl Machine {
    /// All machines, in the order tests boot them.
    pub const ALL: [Machine; 3] = [Machine::Microvm, Machine::Q35, Machine::Pc];

    /// Name as given to `--machine`: `microvm`, `q35`, `pc`.
    pub fn name(self) -> &'static str {
        match self {
            Machine::Microvm => "microvm",
            Machine::Q35 => "q35",
            Machine::Pc => "pc",
        }
    }

    /// Value of QEMU's `-M`. microvm runs without ACPI so QEMU lists virtio-mmio devices on the command line.
    pub fn qemu_machine(self) -> &'static str {
        match self {
            Machine::Microvm => "microvm,acpi=off",
            Machine::Q35 => "q35",
            Machine::Pc => "pc",
        }
    }

    /// The virtio-net device model: microvm has no PCI bus, so virtio-mmio (`virtio-net-device`).
    pub fn virtio_net_device(self) -> &'static str {
        match self {
            Machine::Microvm => "virtio-net-device",
            Machine::Q35 | Machine::Pc => "virtio-net-pci",
        }
    }

    /// The virtio-blk device model (`virtio-blk-device` over virtio-mmio on microvm).
    pub fn virtio_blk_device(self) -> &'static str {
        match self {
            Machine::Microvm => "virtio-blk-device",
            Machine::Q35 | Machine::Pc => "virtio-blk-pci",
        }
    }

    /// The virtio-scsi host adapter model (`virtio-scsi-device` over virtio-mmio on microvm).
    pub fn virtio_scsi_device(self) -> &'static str {
        match self {
            Machine::Microvm => "virtio-scsi-device",
            Machine::Q35 | Machine::Pc => "virtio-scsi-pci",
        }
    }

    /// Whether the machine has a PCI bus (NVMe controllers are PCI functions).
    pub fn has_pci(self) -> bool {
        self != Machine::Microvm
    }
}

/// The disk controller the `--disk` images are attached to (`--disk-bus`): what each cloud presents.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DiskBus {
    /// virtio-blk, one device per disk (`virtio-blk-device` / `virtio-blk-pci`): the default.
    #[default]
    VirtioBlk,
    /// One virtio-scsi host adapter with a `scsi-hd` per disk at target 0, 1, ... (GCE's boot disk).
    VirtioScsi,
    /// One NVMe controller per disk, namespace 1 (`-device nvme`: AWS Nitro, GCE, Azure); needs PCI.
    Nvme,
}

impl DiskBus {
    /// All buses, in the order tests use them.
    pub const ALL: [DiskBus; 3] = [DiskBus::VirtioBlk, DiskBus::VirtioScsi, DiskBus::Nvme];

    /// Name as given to `--disk-bus`: `virtio-blk`, `virtio-scsi`, `nvme`.
    pub fn name(self) -> &'static str {
        match self {
            DiskBus::VirtioBlk => "virtio-blk",
            DiskBus::VirtioScsi => "virtio-scsi",
            DiskBus::Nvme => "nvme",
        }
    }
}

impl fmt::Display for DiskBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DiskBus {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DiskBus::ALL.into_iter().find(|b| b.name() == s).ok_or_else(|| ConfigError::DiskBus(s.to_owned()))
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Machine {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Machine::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| ConfigError::Machine(s.to_owned()))
    }
}

/// QEMU accelerator (`-accel`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Accel {
    /// Hardware virtualization through `/dev/kvm`.
    Kvm,
    /// QEMU's binary translator; always available, slower, deterministic enough for tests.
    Tcg,
}

impl Accel {
    /// Name as given to `--accel` and QEMU's `-accel`: `kvm` or `tcg`.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Accel {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            _ => Err(ConfigError::Accel(s.to_owned())),
        }
    }
}
/// The guest's network.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Network {
    /// No network device.
    #[default]
    None,
    /// QEMU user networking (slirp: guest 10.0.2.15, gateway 10.0.2.2, DNS 10.0.2.3) with host port forwards.
    User {
        /// `hostfwd=` entries, in order.
        forwards: Vec<PortForward>,
    },
    /// A host tap device that the caller created and configured beforehand (`ip tuntap add dev NAME mode tap`).
    Tap {
        /// Interface name (1..=15 bytes, no `,` `/` or whitespace).
        ifname: String,
    },
}

/// Network kind as chosen with `--net`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetKind {
    /// `--net user`.
    User,
    /// `--net tap` (needs `--tap NAME`).
    Tap,
    /// `--net none`.
    None,
}

impl FromStr for NetKind {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(NetKind::User),
            "tap" => Ok(NetKind::Tap),
            "none" => Ok(NetKind::None),
            _ => Err(ConfigError::NetKind(s.to_owned())),
        }
    }
}

/// Chooses the network for an app that declares the forwards `app_ports` (`[package.metadata.zirvium] ports`,
/// see [`crate::project::App::ports`]) from `--net`, `--port` and `--tap`.
///
/// Without `--net`: user networking for apps that declare ports or when ports are given, a tap when `--tap` is
/// given, else none. User networking without `--port` gets the app's forwards (httpd: 8080→80).
/// Errors: ports without user networking, `--tap` without tap networking, tap networking without `--tap`,
/// a host port forwarded twice for one protocol, a bad tap name.
pub fn resolve_network(
    app_ports: &[PortForward],
    net: Option<NetKind>,
    ports: &[PortForward],
    tap: Option<&str>,
) -> Result<Network, ConfigError> {
    let kind = net.unwrap_or(if tap.is_some() {
        NetKind::Tap
    } else if !app_ports.is_empty() || !ports.is_empty() {
        NetKind::User
    } else {
        NetKind::None
    });
    if kind != NetKind::User && !ports.is_empty() {
        return Err(ConfigError::PortsNeedUserNet);
    }
    if kind != NetKind::Tap && tap.is_some() {
        return Err(ConfigError::TapNeedsTapNet);
    }
    match kind {
        NetKind::None => Ok(Network::None),
        NetKind::Tap => {
            let ifname = tap.ok_or(ConfigError::TapMissing)?;
            check_tap_name(ifname)?;
            Ok(Network::Tap { ifname: ifname.to_owned() })
        }
        NetKind::User => {
            let forwards = if ports.is_empty() { app_ports.to_vec() } else { ports.to_vec() };
            for (i, f) in forwards.iter().enumerate() {
                if forwards[..i].iter().any(|g| g.protocol == f.protocol && g.host == f.host) {
                    return Err(ConfigError::DuplicateHostPort(*f));
                }
            }
            Ok(Network::User { forwards })
        }
    }
}

/// Checks a Linux interface name: 1..=15 bytes (IFNAMSIZ 16 with the NUL), no `/`, `,` (QEMU's option separator)
/// or whitespace.
fn check_tap_name(name: &str) -> Result<(), ConfigError> {
    let ok = (1..=15).contains(&name.len()) && !name.chars().any(|c| c == '/' || c == ',' || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(ConfigError::TapName(name.to_owned()))
    }
}

/// One kernel option `key=value` for the part of the kernel command line before `--` (e.g. `loglevel=debug`).
///
/// The key is 1+ characters of `[A-Za-z0-9_.-]`; the value is non-empty with no whitespace (the command line is
/// split on spaces).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelOption {
    key: String,
    value: String,
}

impl KernelOption {
    /// Builds `key=value`; see the type's rules. Errors: [`ConfigError::KernelOption`].
    pub fn new(key: &str, value: &str) -> Result<Self, ConfigError> {
        let bad = |why: &'static str| ConfigError::KernelOption { input: format!("{key}={value}"), why };
        if key.is_empty() {
            return Err(bad("the key is empty"));
        }
        if !key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) || key.starts_with('-') {
            return Err(bad("the key may only use letters, digits, `_`, `.` and `-`, and not start with `-`"));
        }
        if value.is_empty() {
            return Err(bad("the value is empty"));
        }
        if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("the value contains whitespace or control characters"));
        }
        Ok(KernelOption { key: key.to_owned(), value: value.to_owned() })
    }

    /// The key, e.g. `loglevel`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The value, e.g. `debug`.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl fmt::Display for KernelOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

impl FromStr for KernelOption {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (key, value) = s
            .split_once('=')
            .ok_or_else(|| ConfigError::KernelOption { input: s.to_owned(), why: "expected key=value" })?;
        KernelOption::new(key, value)
    }
}

/// Parses a memory size for `-m`: a whole number of MiB written `N`, `NM` or `NG` (as QEMU's `-m`, whose default
/// unit is MiB), between 1 MiB and 1 TiB. Errors: [`ConfigError::Memory`].
pub fn parse_mem_mib(s: &str) -> Result<u32, ConfigError> {
    let bad = || ConfigError::Memory(s.to_owned());
    let (digits, scale) = match s.as_bytes().last() {
        Some(b'M' | b'm') => (&s[..s.len() - 1], 1u64),
        Some(b'G' | b'g') => (&s[..s.len() - 1], 1024),
        _ => (s, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let mib = digits.parse::<u64>().map_err(|_| bad())?.checked_mul(scale).ok_or_else(bad)?;
    match u32::try_from(mib) {
        Ok(m) if (1..=1024 * 1024).contains(&m) => Ok(m),
        _ => Err(bad()),
    }
}

/// One `--disk FILE[:ro|:rw]` argument: a raw image and whether the guest may write it. The suffix `:ro`
/// attaches the image read-only; `:rw` (the default) read-write, and lets a file whose name ends in `:ro` be
/// given as `NAME:ro:rw`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSpec {
    /// The raw image file.
    pub path: PathBuf,
    /// Attach with `readonly=on`.
    pub read_only: bool,
}

impl FromStr for DiskSpec {
    type Err = ConfigError;

    /// Errors: an empty file name.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let (path, read_only) = match (s.strip_suffix(":ro"), s.strip_suffix(":rw")) {
            (Some(p), _) => (p, true),
            (_, Some(p)) => (p, false),
            _ => (s, false),
        };
        if path.is_empty() {
            return Err(ConfigError::DiskSpec(s.to_owned()));
        }
        Ok(DiskSpec { path: path.into(), read_only })
    }
}

/// Everything needed for one QEMU run of an image. Build with [`RunOptions::new`] and set fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// The app's ELF (PVH entry), passed as `-kernel`.
    pub kernel: PathBuf,
    /// `-M` machine type.
    pub machine: Machine,
    /// `-accel`.
    pub accel: Accel,
    /// Guest RAM in MiB (`-m`).
    pub mem_mib: u32,
    /// Number of vCPUs (`-smp`), 1..=255.
    pub smp: u16,
    /// Network device and backend.
    pub network: Network,
    /// Kernel options, before `--` on the kernel command line.
    pub kernel_options: Vec<KernelOption>,
    /// App arguments, after `--`; each non-empty without whitespace.
    pub app_args: Vec<String>,
    /// Raw disk images attached as virtio-blk devices (`virtio-blk-device` on microvm, `virtio-blk-pci`
    /// otherwise), in order; QEMU's default write-back cache, so the guest sees a volatile write cache and
    /// must flush (virtio 1.2 §5.2.6.2, `VIRTIO_BLK_F_FLUSH`).
    pub disks: Vec<PathBuf>,
    /// Indices into `disks` of the images attached read-only: `readonly=on` on the `-drive`, so QEMU opens the
    /// file read-only and the device offers `VIRTIO_BLK_F_RO` (virtio 1.2 §5.2.3). Add with
    /// [`RunOptions::push_disk`].
    pub read_only_disks: BTreeSet<usize>,
    /// The controller the disks are attached to.
    pub disk_bus: DiskBus,
    /// A boot module (`-initrd`), e.g. a tar archive the guest mounts read-only at `/`.
    pub initrd: Option<PathBuf>,
    /// Boot this packaged disk through firmware instead of `kernel` (`images run --image`): replaces
    /// `-kernel`, `-append` and `-initrd` with the firmware and boot-disk arguments of [`crate::diskboot`].
    pub boot_disk: Option<crate::diskboot::DiskBoot>,
    /// Start halted with QEMU's gdb stub listening on this TCP port of 127.0.0.1 (`-S -gdb tcp:127.0.0.1:PORT`):
    /// the guest runs when the debugger continues.
    pub gdb_port: Option<u16>,
    /// Record the NIC's frames, both directions, in this pcap file (`-object filter-dump` on the netdev).
    pub pcap: Option<PathBuf>,
}

impl RunOptions {
    /// Defaults of the contract: microvm, 64 MiB, 1 vCPU, no network, no options or arguments.
    pub fn new(kernel: impl Into<PathBuf>, accel: Accel) -> Self {
        RunOptions {
            kernel: kernel.into(),
            machine: Machine::Microvm,
            accel,
            mem_mib: 64,
            smp: 1,
            network: Network::None,
            kernel_options: Vec::new(),
            app_args: Vec::new(),
            disks: Vec::new(),
            read_only_disks: BTreeSet::new(),
            disk_bus: DiskBus::VirtioBlk,
            initrd: None,
            boot_disk: None,
            gdb_port: None,
            pcap: None,
        }
    }

    /// Attaches `disk` after the disks already there (the guest mounts the first at /data).
    pub fn push_disk(&mut self, disk: &DiskSpec) {
        if disk.read_only {
            self.read_only_disks.insert(self.disks.len());
        }
        self.disks.push(disk.path.clone());
    }

    /// Checks what the types do not: vCPU count, app arguments, tap name, disk files, an NVMe bus on a machine
    /// without PCI.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.disk_bus == DiskBus::Nvme && !self.machine.has_pci() && !self.disks.is_empty() {
            return Err(ConfigError::NvmeNeedsPci(self.machine));
        }
        if !(1..=255).contains(&self.smp) {
            return Err(ConfigError::Smp(self.smp));
        }
        for arg in &self.app_args {
            if arg.is_empty() || arg.contains('"') || arg.chars().any(|c| c.is_control()) {
                return Err(ConfigError::AppArg(arg.clone()));
            }
        }
        let boot_disk = self.boot_disk.as_ref().map(|b| &b.image);
        for path in self.disks.iter().chain(self.initrd.iter()).chain(boot_disk) {
            if !path.is_file() {
                return Err(ConfigError::NoFile(path.clone()));
            }
        }
        if let Some(&index) = self.read_only_disks.iter().find(|&&i| i >= self.disks.len()) {
            return Err(ConfigError::ReadOnlyIndex { index, disks: self.disks.len() });
        }
        if let Network::Tap { ifname } = &self.network {
            check_tap_name(ifname)?;
        }
        if self.pcap.is_some() && self.network == Network::None {
            return Err(ConfigError::PcapNeedsNetwork);
        }
        if self.gdb_port == Some(0) {
            return Err(ConfigError::GdbPort);
        }
        Ok(())
    }

    /// The kernel command line (`-append`): kernel options, then `--` and the app arguments if there are any,
    /// separated by single spaces, e.g. `loglevel=debug -- a b`. Empty when there is nothing to pass.
    pub fn kernel_command_line(&self) -> String {
        let mut words: Vec<String> = self.kernel_options.iter().map(KernelOption::to_string).collect();
        if !self.app_args.is_empty() {
            words.push("--".to_owned());
            // The guest splits on spaces; a word with spaces travels in double quotes (libos `cmdline.rs`).
            words.extend(self.app_args.iter().map(|a| if a.contains(' ') { format!("\"{a}\"") } else { a.clone() }));
        }
        words.join(" ")
    }

    /// The TCP and UDP forwards of user networking (empty for other networks).
    pub fn forwards(&self) -> &[PortForward] {
        match &self.network {
            Network::User { forwards } => forwards,
            _ => &[],
        }
    }
}

/// Errors in a run's configuration or environment; each message says what to change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `--machine` is not microvm, q35 or pc.
    #[error("unknown machine `{0}` (use microvm, q35 or pc)")]
    Machine(String),
    /// `--accel` is not kvm or tcg.
    #[error("unknown accelerator `{0}` (use kvm or tcg)")]
    Accel(String),
    /// `--net` is not user, tap or none.
    #[error("unknown network `{0}` (use user, tap or none)")]
    NetKind(String),
    /// `--mem` is not N, NM or NG within 1 MiB..=1 TiB.
    #[error("memory size `{0}`: expected a whole number of MiB like 64M or 1G (1M..=1024G)")]
    Memory(String),
    /// `--disk-bus` is not virtio-blk, virtio-scsi or nvme.
    #[error("unknown disk bus `{0}` (use virtio-blk, virtio-scsi or nvme)")]
    DiskBus(String),
    /// `--disk-bus nvme` on a machine without PCI.
    #[error("--disk-bus nvme needs a PCI bus, which --machine {0} has not: use --machine q35 (or pc)")]
    NvmeNeedsPci(Machine),
    /// A `--disk` argument without a file name.
    #[error("--disk `{0}`: expected FILE, FILE:ro or FILE:rw")]
    DiskSpec(String),
    /// A `--disk` or `--initrd` file does not exist.
    #[error("{0}: no such file (create a disk with `images disk create`)")]
    NoFile(PathBuf),
    /// `read_only_disks` names a disk that `disks` does not have.
    #[error("read-only disk index {index}: only {disks} disks attached")]
    ReadOnlyIndex {
        /// The index given.
        index: usize,
        /// How many disks there are.
        disks: usize,
    },
    /// `--smp` outside 1..=255.
    #[error("vCPU count {0}: expected 1..=255")]
    Smp(u16),
    /// A kernel option is malformed.
    #[error("kernel option `{input}`: {why}")]
    KernelOption {
        /// The rejected option.
        input: String,
        /// What rule it breaks.
        why: &'static str,
    },
    /// An app argument is empty or has a `"` or control character, which the kernel command line cannot carry.
    #[error("app argument {0:?}: arguments must be non-empty, without `\"` or control characters (words with spaces are quoted for the kernel command line)")]
    AppArg(String),
    /// `--port` given without user networking.
    #[error("--port needs user networking (--net user); with a tap the guest is reached at its own address")]
    PortsNeedUserNet,
    /// `--tap` given without tap networking.
    #[error("--tap NAME only applies with --net tap")]
    TapNeedsTapNet,
    /// `--net tap` without `--tap`.
    #[error("--net tap needs --tap NAME (create it first: ip tuntap add dev NAME mode tap; ip link set NAME up)")]
    TapMissing,
    /// A tap name Linux or QEMU would refuse.
    #[error("tap name `{0}`: expected 1 to 15 characters without `/`, `,` or whitespace")]
    TapName(String),
    /// Two forwards for the same host port and protocol.
    #[error("port forward {0}: host port {h} is forwarded twice", h = .0.host)]
    DuplicateHostPort(PortForward),
    /// `--accel kvm` but KVM cannot be used.
    #[error("--accel kvm: {0}; use --accel tcg or fix the permissions of /dev/kvm")]
    KvmUnavailable(String),
    /// An option of the nested Hyper-V host given for another hypervisor.
    #[error("{0} only applies with --hypervisor hyperv")]
    HypervOnly(&'static str),
    /// An option `images run --image` cannot apply: the packaged disk carries its own kernel command line and
    /// initrd, and needs firmware.
    #[error("{0} does not apply to --image: the kernel command line and initrd are inside the packaged disk (set them with `images package`), and it boots through firmware on q35 or pc")]
    ImageOption(&'static str),
    /// `--pcap` without a network device to record.
    #[error("--pcap records the NIC's traffic: give the guest one with --net user, --port or --tap")]
    PcapNeedsNetwork,
    /// `--gdb=0`.
    #[error("--gdb=PORT: expected a TCP port 1..=65535")]
    GdbPort,
    /// An option that only applies to `images run --image`.
    #[error("{0} applies only to --image FILE")]
    NeedsImage(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::Protocol;

    #[test]
    fn kernel_options_go_before_double_dash() {
        let mut o = RunOptions::new("/k", Accel::Tcg);
        o.kernel_options = vec!["loglevel=trace".parse().unwrap(), "ip=10.0.2.15/24".parse().unwrap()];
        o.app_args = vec!["fault=panic".into()];
        assert_eq!(o.kernel_command_line(), "loglevel=trace ip=10.0.2.15/24 -- fault=panic");
        o.app_args.clear();
        assert_eq!(o.kernel_command_line(), "loglevel=trace ip=10.0.2.15/24");
    }

    #[test]
    fn kernel_option_rules() {
        assert_eq!("bogus=1".parse::<KernelOption>().unwrap().to_string(), "bogus=1");
        assert_eq!("gw=10.0.2.2".parse::<KernelOption>().unwrap().value(), "10.0.2.2");
        for (bad, why) in [
            ("bogus", "expected key=value"),
            ("=1", "the key is empty"),
            ("a=", "the value is empty"),
            ("a b=1", "the key may only use letters, digits, `_`, `.` and `-`, and not start with `-`"),
            ("--=x", "the key may only use letters, digits, `_`, `.` and `-`, and not start with `-`"),
            ("a=1 2", "the value contains whitespace or control characters"),
        ] {
            assert_eq!(bad.parse::<KernelOption>(), Err(ConfigError::KernelOption { input: bad.into(), why }), "{bad}");
        }
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_mem_mib("64M"), Ok(64));
        assert_eq!(parse_mem_mib("64"), Ok(64));
        assert_eq!(parse_mem_mib("2G"), Ok(2048));
        assert_eq!(parse_mem_mib("1g"), Ok(1024));
        for bad in ["", "M", "0M", "64K", "-1M", "1.5G", "2048G", "99999999999999999999M", " 64M"] {
            assert_eq!(parse_mem_mib(bad), Err(ConfigError::Memory(bad.into())), "{bad}");
        }
    }

    /// httpd's and udpecho's `[package.metadata.zirvium] ports`.
    const HTTPD: [PortForward; 1] = [PortForward { protocol: Protocol::Tcp, host: 8080, guest: 80 }];
    const UDPECHO: [PortForward; 1] = [PortForward { protocol: Protocol::Udp, host: 8007, guest: 7 }];

    #[test]
    fn network_resolution() {
        let tcp = PortForward::tcp(9000, 80);
        assert_eq!(resolve_network(&[], None, &[], None), Ok(Network::None));
        assert_eq!(
            resolve_network(&HTTPD, None, &[], None),
            Ok(Network::User { forwards: vec![PortForward::tcp(8080, 80)] })
        );
        assert_eq!(resolve_network(&HTTPD, None, &[tcp], None), Ok(Network::User { forwards: vec![tcp] }));
        assert_eq!(
            resolve_network(&UDPECHO, None, &[], None),
            Ok(Network::User { forwards: vec![PortForward { protocol: Protocol::Udp, host: 8007, guest: 7 }] })
        );
        assert_eq!(resolve_network(&[], None, &[tcp], None), Ok(Network::User { forwards: vec![tcp] }));
        assert_eq!(resolve_network(&HTTPD, Some(NetKind::None), &[], None), Ok(Network::None));
        assert_eq!(resolve_network(&HTTPD, None, &[], Some("zt0")), Ok(Network::Tap { ifname: "zt0".into() }));
        assert_eq!(
            resolve_network(&HTTPD, Some(NetKind::Tap), &[], Some("zt0")),
            Ok(Network::Tap { ifname: "zt0".into() })
        );
    }

    #[test]
    fn network_resolution_errors() {
        let tcp = PortForward::tcp(9000, 80);
        assert_eq!(resolve_network(&[], Some(NetKind::None), &[tcp], None), Err(ConfigError::PortsNeedUserNet));
        assert_eq!(resolve_network(&HTTPD, Some(NetKind::Tap), &[tcp], Some("t")), Err(ConfigError::PortsNeedUserNet));
        assert_eq!(resolve_network(&HTTPD, Some(NetKind::Tap), &[], None), Err(ConfigError::TapMissing));
        assert_eq!(resolve_network(&HTTPD, Some(NetKind::User), &[], Some("t")), Err(ConfigError::TapNeedsTapNet));
        assert_eq!(resolve_network(&HTTPD, None, &[], Some("a,b")), Err(ConfigError::TapName("a,b".into())));
        assert_eq!(
            resolve_network(&HTTPD, None, &[], Some("sixteen-chars-xx")),
            Err(ConfigError::TapName("sixteen-chars-xx".into()))
        );
        let dup = PortForward::tcp(9000, 81);
        assert_eq!(resolve_network(&HTTPD, None, &[tcp, dup], None), Err(ConfigError::DuplicateHostPort(dup)));
        // The same host port may carry TCP and UDP.
        let udp = PortForward::udp(9000, 80);
        assert_eq!(resolve_network(&HTTPD, None, &[tcp, udp], None), Ok(Network::User { forwards: vec![tcp, udp] }));
    }

    #[test]
    fn pcap_needs_a_nic_and_gdb_a_port() {
        let mut o = RunOptions::new("/k", Accel::Tcg);
        o.pcap = Some("/tmp/x.pcap".into());
        assert_eq!(o.validate(), Err(ConfigError::PcapNeedsNetwork));
        o.network = Network::User { forwards: vec![] };
        assert_eq!(o.validate(), Ok(()));
        o.gdb_port = Some(0);
        assert_eq!(o.validate(), Err(ConfigError::GdbPort));
    }

    #[test]
    fn machine_and_accel_names() {
        assert_eq!("q35".parse(), Ok(Machine::Q35));
        assert_eq!("microvm".parse(), Ok(Machine::Microvm));
        assert_eq!("virt".parse::<Machine>(), Err(ConfigError::Machine("virt".into())));
        assert_eq!("kvm".parse(), Ok(Accel::Kvm));
        assert_eq!("hvf".parse::<Accel>(), Err(ConfigError::Accel("hvf".into())));
        assert_eq!("tap".parse(), Ok(NetKind::Tap));
        assert_eq!("bridge".parse::<NetKind>(), Err(ConfigError::NetKind("bridge".into())));
        assert_eq!("nvme".parse(), Ok(DiskBus::Nvme));
        assert_eq!("virtio-scsi".parse(), Ok(DiskBus::VirtioScsi));
        assert_eq!("ide".parse::<DiskBus>(), Err(ConfigError::DiskBus("ide".into())));
        assert_eq!(DiskBus::default().to_string(), "virtio-blk");
    }

    #[test]
    fn disk_specs() {
        let spec = |s: &str| s.parse::<DiskSpec>();
        assert_eq!(spec("d.img"), Ok(DiskSpec { path: "d.img".into(), read_only: false }));
        assert_eq!(spec("d.img:ro"), Ok(DiskSpec { path: "d.img".into(), read_only: true }));
        assert_eq!(spec("/a:b/d.img:rw"), Ok(DiskSpec { path: "/a:b/d.img".into(), read_only: false }));
        assert_eq!(spec("x:ro:rw"), Ok(DiskSpec { path: "x:ro".into(), read_only: false }));
        assert_eq!(spec(":ro"), Err(ConfigError::DiskSpec(":ro".into())));
        assert_eq!(spec(""), Err(ConfigError::DiskSpec("".into())));
        assert_eq!(ConfigError::DiskSpec(":ro".into()).to_string(), "--disk `:ro`: expected FILE, FILE:ro or FILE:rw");
    }
}
