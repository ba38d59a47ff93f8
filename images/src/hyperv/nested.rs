//! The two QEMU command lines of the nested Hyper-V host and the ports between them.
//!
//! L0 (this machine): QEMU TCG `-cpu max -M pc`, L1's kernel and initramfs, serial console on stdio, QEMU's user
//! network on a virtio NIC that L1 gives [`L1_ADDRESS`]; each host forward `H -> G` becomes
//! `hostfwd=tcp::H-10.0.2.15:G`, and the QMP forward reaches [`L2_QMP_PORT`].
//!
//! L2 (inside L1): QEMU `-accel kvm -M pc -cpu host,` [`HV_FLAGS`], `-device vmbus-bridge -device hv-balloon`, the
//! app's ELF as PVH `-kernel`, `isa-debug-exit` for its exit status, and for networked apps a virtio-net-pci NIC on
//! L2's own user network whose forwards `G -> G` take L1's port G to the guest's port G (so a host port reaches the
//! guest through both slirps). QMP listens on L1's [`L2_QMP_PORT`].

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::forward::{PortForward, Protocol};

/// L1's address on L0's user network (slirp's first DHCP lease, set statically by L1's init).
pub const L1_ADDRESS: &str = "10.0.2.15/24";

/// The port of L2's QMP server in L1 (reached from the host through an L0 forward).
pub const L2_QMP_PORT: u16 = 4444;

/// RAM of L0's machine in MiB: L1's kernel and initramfs (~70 MB unpacked), QEMU, and L2's RAM.
pub const L0_MEM_MIB: u32 = 2048;

/// Hyper-V enlightenments L2 gets (QEMU `docs/system/i386/hyperv.rst`): relaxed timing, VP index, SynIC,
/// reference time (counter and TSC page), synthetic timers with direct mode, frequency MSRs, APIC access MSRs, VP
/// runtime, TLB flush and IPI hypercalls.
pub const HV_FLAGS: &str = "hv-relaxed,hv-vpindex,hv-synic,hv-time,hv-stimer,hv-frequencies,hv-vapic,hv-runtime,\
                            hv-stimer-direct,hv-tlbflush,hv-ipi";

/// What runs as L2 and how it is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guest {
    /// The app's package name (names the run's files).
    pub app: String,
    /// The app's ELF on this machine.
    pub kernel: PathBuf,
    /// L2 RAM in MiB.
    pub mem_mib: u32,
    /// The kernel command line (kernel options, `--`, app arguments), empty for none.
    pub cmdline: String,
    /// Whether the host publishes a valid reference TSC page: L1 runs with clocksource `tsc` (`tsc=reliable`),
    /// which KVM needs for the page; else with `hpet`, and the guest falls back to the reference counter MSR.
    pub tsc_page: bool,
    /// Whether L2 gets a virtio-net-pci NIC on QEMU's user network.
    pub nic: bool,
    /// Host port forwards to the guest (each needs [`Guest::nic`]).
    pub forwards: Vec<PortForward>,
    /// Host port forwarded to L2's QMP server, if any.
    pub qmp_host_port: Option<u16>,
    /// L1 kills L2 after this many seconds.
    pub l2_timeout_secs: u64,
}

impl Guest {
    /// Checks what QEMU and the port plumbing cannot take. Errors: a text saying what to change.
    pub fn validate(&self) -> Result<(), String> {
        if !self.forwards.is_empty() && !self.nic {
            return Err("port forwards need the guest's NIC".into());
        }
        if let Some(f) = self.forwards.iter().find(|f| f.guest == L2_QMP_PORT && f.protocol == Protocol::Tcp) {
            return Err(format!("--port {f}: guest port {L2_QMP_PORT} is L2's QMP port in L1; use another"));
        }
        Ok(())
    }
}

/// One run of L0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NestedOptions {
    /// L1's kernel.
    pub vmlinuz: PathBuf,
    /// L1's initramfs (base + QEMU + per-run archives).
    pub initrd: PathBuf,
    /// L0 RAM in MiB.
    pub mem_mib: u32,
    /// See [`Guest::tsc_page`].
    pub tsc_page: bool,
    /// Host forwards to the guest (L0 forwards each to L1's port of the same number as the guest port).
    pub forwards: Vec<PortForward>,
    /// Host port forwarded to L2's QMP server in L1.
    pub qmp_host_port: Option<u16>,
}

/// L1's kernel command line: console on COM1 (L0's stdio), warnings only, reboot on panic (and L0 exits, as it
/// runs with `-no-reboot`), and the clocksource that decides whether KVM publishes the reference TSC page.
pub fn l1_cmdline(tsc_page: bool) -> String {
    let clock = if tsc_page { "tsc=reliable clocksource=tsc" } else { "clocksource=hpet" };
    format!("console=ttyS0 loglevel=4 panic=-1 {clock}")
}

/// L0's QEMU arguments (without the program). See the module docs.
pub fn l0_args(opts: &NestedOptions) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |a: &[&str]| args.extend(a.iter().map(OsString::from));
    push(&["-M", "pc", "-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", &format!("{}M", opts.mem_mib)]);
    push(&["-display", "none", "-monitor", "none", "-nodefaults", "-no-reboot"]);
    push(&["-chardev", "stdio,id=s0,signal=off", "-serial", "chardev:s0"]);
    let l1_ip = L1_ADDRESS.split('/').next().unwrap_or(L1_ADDRESS);
    let mut netdev = "user,id=n0".to_owned();
    for f in &opts.forwards {
        netdev.push_str(&format!(",hostfwd={}::{}-{l1_ip}:{}", f.protocol, f.host, f.guest));
    }
    if let Some(q) = opts.qmp_host_port {
        netdev.push_str(&format!(",hostfwd=tcp::{q}-{l1_ip}:{L2_QMP_PORT}"));
    }
    push(&["-netdev", &netdev, "-device", "virtio-net-pci,netdev=n0,romfile="]);
    args.extend(["-kernel".into(), opts.vmlinuz.clone().into_os_string()]);
    args.extend(["-initrd".into(), opts.initrd.clone().into_os_string()]);
    args.extend(["-append".into(), l1_cmdline(opts.tsc_page).into()]);
    args
}

/// `qemu-system-x86_64` with [`l0_args`]; stdin from /dev/null.
pub fn l0_command(opts: &NestedOptions) -> Command {
    let mut cmd = Command::new(crate::qemu::QEMU_BINARY);
    cmd.args(l0_args(opts)).stdin(Stdio::null());
    cmd
}

/// Where L1's initramfs holds the app's ELF.
pub const L2_KERNEL: &str = "/images/guest.elf";

/// L2's QEMU arguments (without the program), as L1 runs them. See the module docs.
pub fn l2_args(guest: &Guest) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    let mut push = |a: &[&str]| args.extend(a.iter().map(|s| (*s).to_owned()));
    push(&["-accel", "kvm", "-M", "pc", "-cpu", &format!("host,{HV_FLAGS}")]);
    push(&["-m", &format!("{}M", guest.mem_mib), "-smp", "1"]);
    push(&["-display", "none", "-nodefaults", "-no-reboot", "-monitor", "none"]);
    push(&["-chardev", "stdio,id=s0,signal=off", "-serial", "chardev:s0"]);
    push(&["-device", "isa-debug-exit,iobase=0xf4,iosize=4"]);
    push(&["-device", "vmbus-bridge", "-device", "hv-balloon,id=balloon0,status-report=on"]);
    if guest.nic {
        let mut netdev = "user,id=n0".to_owned();
        for f in &guest.forwards {
            netdev.push_str(&format!(",hostfwd={}::{}-:{}", f.protocol, f.guest, f.guest));
        }
        // No option ROM: L1 has no iPXE images, and the guest boots with -kernel.
        push(&["-netdev", &netdev, "-device", "virtio-net-pci,netdev=n0,romfile="]);
    }
    if guest.qmp_host_port.is_some() {
        push(&["-qmp", &format!("tcp:0.0.0.0:{L2_QMP_PORT},server=on,wait=off")]);
    }
    push(&["-kernel", L2_KERNEL]);
    if !guest.cmdline.is_empty() {
        push(&["-append", &guest.cmdline]);
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest() -> Guest {
        Guest {
            app: "httpd".into(),
            kernel: "/w/httpd".into(),
            mem_mib: 128,
            cmdline: "loglevel=debug -- port=80".into(),
            tsc_page: true,
            nic: true,
            forwards: vec![PortForward::tcp(18080, 80)],
            qmp_host_port: Some(14444),
            l2_timeout_secs: 600,
        }
    }

    #[test]
    fn l0_forwards_reach_l1_and_qmp() {
        let g = guest();
        let opts = NestedOptions {
            vmlinuz: "/c/vmlinuz".into(),
            initrd: "/r/run.cpio".into(),
            mem_mib: L0_MEM_MIB,
            tsc_page: g.tsc_page,
            forwards: g.forwards.clone(),
            qmp_host_port: g.qmp_host_port,
        };
        let line = l0_args(&opts).iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ");
        assert!(line.starts_with("-M pc -accel tcg -cpu max -smp 2 -m 2048M "), "{line}");
        assert!(
            line.contains("-netdev user,id=n0,hostfwd=tcp::18080-10.0.2.15:80,hostfwd=tcp::14444-10.0.2.15:4444 "),
            "{line}"
        );
        assert!(
            line.ends_with("-kernel /c/vmlinuz -initrd /r/run.cpio -append console=ttyS0 loglevel=4 panic=-1 tsc=reliable clocksource=tsc"),
            "{line}"
        );
        assert!(l1_cmdline(false).ends_with("clocksource=hpet"));
    }

    #[test]
    fn l2_has_vmbus_balloon_nic_and_qmp() {
        let line = l2_args(&guest()).join(" ");
        assert!(line.starts_with("-accel kvm -M pc -cpu host,hv-relaxed,hv-vpindex,hv-synic,"), "{line}");
        assert!(line.contains("-device vmbus-bridge -device hv-balloon,id=balloon0,status-report=on"), "{line}");
        assert!(line.contains("-netdev user,id=n0,hostfwd=tcp::80-:80 -device virtio-net-pci,netdev=n0,romfile="));
        assert!(line.contains("-qmp tcp:0.0.0.0:4444,server=on,wait=off"), "{line}");
        assert!(line.ends_with("-kernel /images/guest.elf -append loglevel=debug -- port=80"), "{line}");
        let mut hello = guest();
        hello.nic = false;
        hello.forwards.clear();
        hello.qmp_host_port = None;
        hello.cmdline.clear();
        let line = l2_args(&hello).join(" ");
        assert!(!line.contains("-netdev") && !line.contains("-qmp") && !line.contains("-append"), "{line}");
    }

    #[test]
    fn validation() {
        assert_eq!(guest().validate(), Ok(()));
        let mut g = guest();
        g.nic = false;
        assert!(g.validate().unwrap_err().contains("need the guest's NIC"));
        let mut g = guest();
        g.forwards = vec![PortForward::tcp(1, L2_QMP_PORT)];
        assert!(g.validate().unwrap_err().contains("QMP port"));
    }
}
