//! QEMU command line of the nested Xen host: Xen 4.17 as QEMU's Multiboot1 `-kernel` under TCG with `-cpu max`
//! (emulated AMD SVM with nested paging; Xen cannot boot under this machine's nested KVM), dom0's Linux and
//! initramfs as the two Multiboot modules (`-initrd "KERNEL ARGS,INITRD"`, QEMU `hw/i386/multiboot.c`).
//!
//! dom0 gets QEMU's user network on a virtio-net NIC, which its init enslaves to the bridge `xenbr0`; the domU's
//! vif joins the same bridge, so slirp's DHCP gives the domU [`DOMU_ADDRESS`] (its first lease) and host port
//! forwards name that address. Disks are dom0's virtio-blk `/dev/vda`, `/dev/vdb`, ..., which the xl config
//! hands to blkback.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::forward::PortForward;

/// Xen's command line: log on COM1 (QEMU's serial, stdout), everything logged including guests' port 0xe9
/// output, dom0 fixed at 1 GiB.
pub const XEN_CMDLINE: &str = "console=com1 com1=115200,8n1 loglvl=all guest_loglvl=all dom0_mem=1024M,max:1024M";

/// dom0 Linux's command line: its console is Xen's (`hvc0`, shown on COM1), kernel messages from warnings up.
pub const DOM0_CMDLINE: &str = "console=hvc0 loglevel=4";

/// dom0's address on `xenbr0`, outside slirp's DHCP pool (which starts at .15).
pub const DOM0_ADDRESS: &str = "10.0.2.10/24";

/// The domU's address: slirp's first DHCP lease, the only one handed out on this network.
pub const DOMU_ADDRESS: &str = "10.0.2.15";

/// RAM of the QEMU machine in MiB: 1 GiB dom0, the domU, and Xen's own.
pub const DEFAULT_MEM_MIB: u32 = 3072;

/// One run of the nested host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NestedOptions {
    /// Xen's ELF.
    pub xen: PathBuf,
    /// dom0's kernel.
    pub vmlinuz: PathBuf,
    /// dom0's initramfs (base + per-run archive).
    pub initrd: PathBuf,
    /// QEMU RAM in MiB.
    pub mem_mib: u32,
    /// Host ports forwarded to the domU at [`DOMU_ADDRESS`].
    pub forwards: Vec<PortForward>,
    /// Raw images given to dom0 as virtio-blk disks, in order (`/dev/vda`, ...).
    pub disks: Vec<PathBuf>,
}

/// A path QEMU's Multiboot module list cannot carry: the list splits a module's file from its arguments at the
/// first space.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: QEMU's Multiboot module list cannot hold a path with a space; move the workspace or set CARGO_TARGET_DIR to a path without spaces", .0.display())]
pub struct PathWithSpace(pub PathBuf);

/// The module list of `-initrd`: `KERNEL ARGS,INITRD`, commas in paths doubled (QEMU's escape).
pub fn module_list(vmlinuz: &Path, args: &str, initrd: &Path) -> Result<String, PathWithSpace> {
    let esc = |p: &Path| {
        let s = p.to_string_lossy();
        if s.contains(' ') {
            Err(PathWithSpace(p.to_path_buf()))
        } else {
            Ok(s.replace(',', ",,"))
        }
    };
    Ok(format!("{} {},{}", esc(vmlinuz)?, args.replace(',', ",,"), esc(initrd)?))
}

/// QEMU's arguments (without the program): `-M pc -accel tcg -cpu max -smp 2`, serial on stdio, no reboot, the
/// NIC with forwards, disks, Xen and its modules. See the module docs.
pub fn qemu_args(opts: &NestedOptions) -> Result<Vec<OsString>, PathWithSpace> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |a: &[&str]| args.extend(a.iter().map(OsString::from));
    push(&["-M", "pc", "-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", &format!("{}M", opts.mem_mib)]);
    push(&["-display", "none", "-monitor", "none", "-nodefaults", "-no-reboot"]);
    push(&["-chardev", "stdio,id=s0,signal=off", "-serial", "chardev:s0"]);
    let mut netdev = "user,id=n0".to_owned();
    for f in &opts.forwards {
        netdev.push_str(&format!(",hostfwd={}::{}-{DOMU_ADDRESS}:{}", f.protocol, f.host, f.guest));
    }
    push(&["-netdev", &netdev, "-device", "virtio-net-pci,netdev=n0"]);
    for (i, disk) in opts.disks.iter().enumerate() {
        let mut drive = OsString::from(format!("if=none,id=d{i},format=raw,file="));
        drive.push(disk.to_string_lossy().replace(',', ",,"));
        args.extend(["-drive".into(), drive, "-device".into(), format!("virtio-blk-pci,drive=d{i}").into()]);
    }
    args.extend(["-kernel".into(), opts.xen.clone().into_os_string()]);
    args.extend(["-append".into(), XEN_CMDLINE.into()]);
    args.extend(["-initrd".into(), module_list(&opts.vmlinuz, DOM0_CMDLINE, &opts.initrd)?.into()]);
    Ok(args)
}

/// `qemu-system-x86_64` with [`qemu_args`]; stdin from /dev/null (the caller may pipe it for dom0's control
/// channel), stdout and stderr inherited until the caller sets them.
pub fn qemu_command(opts: &NestedOptions) -> Result<Command, PathWithSpace> {
    let mut cmd = Command::new(crate::qemu::QEMU_BINARY);
    cmd.args(qemu_args(opts)?).stdin(Stdio::null());
    Ok(cmd)
}

/// dom0's name of the `index`-th disk: `/dev/vda`, `/dev/vdb`, ... (virtio-blk in probe order; index < 26).
pub fn dom0_disk(index: usize) -> PathBuf {
    PathBuf::from(format!("/dev/vd{}", char::from(b'a' + (index % 26) as u8)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> NestedOptions {
        NestedOptions {
            xen: "/c/xen.elf".into(),
            vmlinuz: "/c/vmlinuz".into(),
            initrd: "/c/run,1.cpio".into(),
            mem_mib: DEFAULT_MEM_MIB,
            forwards: vec![PortForward::tcp(8080, 80), PortForward::udp(8007, 7)],
            disks: vec!["/d/disk.img".into()],
        }
    }

    #[test]
    fn command_line() {
        let args: Vec<String> = qemu_args(&opts()).unwrap().into_iter().map(|a| a.into_string().unwrap()).collect();
        let want = "-M pc -accel tcg -cpu max -smp 2 -m 3072M -display none -monitor none -nodefaults -no-reboot \
                    -chardev stdio,id=s0,signal=off -serial chardev:s0 \
                    -netdev user,id=n0,hostfwd=tcp::8080-10.0.2.15:80,hostfwd=udp::8007-10.0.2.15:7 \
                    -device virtio-net-pci,netdev=n0 \
                    -drive if=none,id=d0,format=raw,file=/d/disk.img -device virtio-blk-pci,drive=d0 \
                    -kernel /c/xen.elf -append";
        let n = want.split(' ').count();
        assert_eq!(args[..n], want.split(' ').collect::<Vec<_>>()[..]);
        assert_eq!(args[n], XEN_CMDLINE);
        assert_eq!(args[n + 1], "-initrd");
        assert_eq!(args[n + 2], "/c/vmlinuz console=hvc0 loglevel=4,/c/run,,1.cpio");
        assert_eq!(args.len(), n + 3);
    }

    #[test]
    fn spaces_in_module_paths_are_refused() {
        let mut o = opts();
        o.vmlinuz = "/my dir/vmlinuz".into();
        assert_eq!(qemu_args(&o), Err(PathWithSpace("/my dir/vmlinuz".into())));
        assert!(PathWithSpace("/a b".into()).to_string().contains("CARGO_TARGET_DIR"));
    }

    #[test]
    fn dom0_disk_names() {
        assert_eq!(dom0_disk(0), PathBuf::from("/dev/vda"));
        assert_eq!(dom0_disk(2), PathBuf::from("/dev/vdc"));
    }
}
