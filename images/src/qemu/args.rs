//! QEMU's argument list for a [`RunOptions`]: PVH boot with `-kernel` (QEMU `docs/system/i386/pvh.rst`), serial
//! console on stdout, `isa-debug-exit` for the exit status, virtio-net on virtio-mmio (microvm) or PCI (q35/pc),
//! disks on virtio-blk, virtio-scsi (`scsi-hd` per disk) or NVMe (`nvme` per disk, PCI only) as
//! [`RunOptions::disk_bus`] says.
//!
//! The command line is fixed by the project contract; changing an argument here changes it for `images run` and
//! for every test at once.

use std::ffi::OsString;
use std::process::{Command, Stdio};

use super::host::QEMU_BINARY;
use super::options::{ConfigError, DiskBus, Machine, Network, RunOptions};

/// QEMU's arguments (without the program name) for `opts`, in a fixed order. Errors: [`RunOptions::validate`].
pub fn qemu_args(opts: &RunOptions) -> Result<Vec<OsString>, ConfigError> {
    opts.validate()?;
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |a: &[&str]| args.extend(a.iter().map(OsString::from));
    push(&["-M", opts.machine.qemu_machine(), "-accel", opts.accel.name(), "-cpu", "qemu64"]);
    push(&["-m", &format!("{}M", opts.mem_mib), "-smp", &opts.smp.to_string()]);
    push(&["-display", "none", "-nodefaults", "-no-reboot"]);
    push(&["-chardev", "stdio,id=s0,signal=off", "-serial", "chardev:s0"]);
    push(&["-device", "isa-debug-exit,iobase=0xf4,iosize=4"]);
    if let Some(port) = opts.gdb_port {
        // Halted until the debugger continues; the stub only on the loopback interface.
        push(&["-S", "-gdb", &format!("tcp:127.0.0.1:{port}")]);
    }
    if opts.machine == Machine::Microvm {
        // Modern (v2) virtio-mmio transport; QEMU's default is legacy v1.
        push(&["-global", "virtio-mmio.force-legacy=false"]);
    }
    if let Some(boot) = &opts.boot_disk {
        // First on the PCI bus, so the guest finds the boot disk (and its data partition) first.
        push(&boot.qemu_args().iter().map(String::as_str).collect::<Vec<_>>());
    }
    let netdev = match &opts.network {
        Network::None => None,
        Network::User { forwards } => {
            let mut s = "user,id=n0".to_owned();
            for f in forwards {
                s.push_str(",hostfwd=");
                s.push_str(&f.hostfwd());
            }
            Some(s)
        }
        // No `vhost=on`: there is no /dev/vhost-net on these machines (TESTING.md, "Devices").
        Network::Tap { ifname } => Some(format!("tap,id=n0,ifname={ifname},script=no,downscript=no")),
    };
    if let Some(netdev) = netdev {
        push(&["-netdev", &netdev, "-device", &format!("{},netdev=n0", opts.machine.virtio_net_device())]);
        if let Some(pcap) = &opts.pcap {
            // QEMU `net/dump.c`: every frame through netdev n0, both directions, as pcap (LINKTYPE_ETHERNET).
            let file = pcap.as_os_str().to_string_lossy().replace(',', ",,");
            push(&["-object", &format!("filter-dump,id=f0,netdev=n0,file={file}")]);
        }
    }
    if opts.disk_bus == DiskBus::VirtioScsi && !opts.disks.is_empty() {
        args.push("-device".into());
        args.push(format!("{},id=scsi0", opts.machine.virtio_scsi_device()).into());
    }
    for (i, disk) in opts.disks.iter().enumerate() {
        // QEMU's option syntax escapes a comma in a value by doubling it.
        let mut file = OsString::from(format!("if=none,id=d{i},format=raw,file="));
        file.push(disk.as_os_str().to_string_lossy().replace(',', ",,"));
        if opts.read_only_disks.contains(&i) {
            file.push(",readonly=on");
        }
        args.push("-drive".into());
        args.push(file);
        args.push("-device".into());
        args.push(match opts.disk_bus {
            DiskBus::VirtioBlk => format!("{},drive=d{i}", opts.machine.virtio_blk_device()).into(),
            // Disk i is target i, LUN 0: the guest scans targets in order, so the first disk stays first.
            DiskBus::VirtioScsi => format!("scsi-hd,drive=d{i},bus=scsi0.0,channel=0,scsi-id={i},lun=0").into(),
            DiskBus::Nvme => format!("nvme,serial=zirvium-d{i},drive=d{i}").into(),
        });
    }
    if opts.boot_disk.is_some() {
        // Firmware boots the disk: no -kernel, -initrd or -append (they are inside the packaged disk).
        return Ok(args);
    }
    if let Some(initrd) = &opts.initrd {
        args.push("-initrd".into());
        args.push(initrd.clone().into_os_string());
    }
    args.push("-kernel".into());
    args.push(opts.kernel.clone().into_os_string());
    let cmdline = opts.kernel_command_line();
    if !cmdline.is_empty() {
        args.push("-append".into());
        args.push(cmdline.into());
    }
    Ok(args)
}

/// A `Command` running [`QEMU_BINARY`] (found on `PATH`) with [`qemu_args`], stdin from `/dev/null`.
///
/// stdin is not the terminal, so QEMU leaves the terminal alone and Ctrl-C stops it. The caller chooses stdout
/// (the guest's serial console) and stderr (QEMU's messages).
pub fn qemu_command(opts: &RunOptions) -> Result<Command, ConfigError> {
    let mut cmd = Command::new(QEMU_BINARY);
    cmd.args(qemu_args(opts)?).stdin(Stdio::null());
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::forward::PortForward;
    use crate::qemu::options::DiskSpec;
    use crate::qemu::Accel;
    use crate::shell::shell_line;

    fn args(opts: &RunOptions) -> Vec<String> {
        qemu_args(opts).unwrap().into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    const COMMON: &str = "-display none -nodefaults -no-reboot -chardev stdio,id=s0,signal=off -serial chardev:s0 \
                          -device isa-debug-exit,iobase=0xf4,iosize=4";

    #[test]
    fn microvm_user_net_command() {
        let mut o = RunOptions::new("/t/httpd", Accel::Kvm);
        o.network = Network::User { forwards: vec![PortForward::tcp(8080, 80), PortForward::udp(5353, 53)] };
        o.kernel_options = vec!["loglevel=debug".parse().unwrap()];
        let mut want = words("-M microvm,acpi=off -accel kvm -cpu qemu64 -m 64M -smp 1");
        want.extend(words(COMMON));
        want.extend(words("-global virtio-mmio.force-legacy=false"));
        want.extend(words("-netdev user,id=n0,hostfwd=tcp::8080-:80,hostfwd=udp::5353-:53"));
        want.extend(words("-device virtio-net-device,netdev=n0 -kernel /t/httpd -append loglevel=debug"));
        assert_eq!(args(&o), want);
    }

    #[test]
    fn q35_and_pc_use_virtio_pci_and_no_mmio_global() {
        for (machine, m) in [(Machine::Q35, "q35"), (Machine::Pc, "pc")] {
            let mut o = RunOptions::new("/t/hello", Accel::Tcg);
            o.machine = machine;
            o.mem_mib = 128;
            o.smp = 2;
            o.network = Network::Tap { ifname: "zt0".into() };
            o.app_args = vec!["a".into(), "b".into()];
            let mut want = words(&format!("-M {m} -accel tcg -cpu qemu64 -m 128M -smp 2"));
            want.extend(words(COMMON));
            want.extend(words("-netdev tap,id=n0,ifname=zt0,script=no,downscript=no"));
            want.extend(words("-device virtio-net-pci,netdev=n0 -kernel /t/hello -append"));
            want.push("-- a b".into());
            assert_eq!(args(&o), want, "{m}");
        }
    }

    #[test]
    fn gdb_stub_and_pcap() {
        let mut o = RunOptions::new("/t/httpd", Accel::Tcg);
        o.network = Network::User { forwards: vec![] };
        o.gdb_port = Some(1234);
        o.pcap = Some("/t/a,b.pcap".into());
        let line = args(&o).join(" ");
        assert!(line.contains("iosize=4 -S -gdb tcp:127.0.0.1:1234 -global"), "{line}");
        assert!(
            line.contains("-device virtio-net-device,netdev=n0 -object filter-dump,id=f0,netdev=n0,file=/t/a,,b.pcap"),
            "{line}"
        );
        let plain = args(&RunOptions::new("/t/hello", Accel::Tcg)).join(" ");
        assert!(!plain.contains("-gdb") && !plain.contains("filter-dump"), "{plain}");
    }

    #[test]
    fn no_network_no_append_when_empty() {
        let o = RunOptions::new("/t/hello", Accel::Tcg);
        let a = args(&o);
        assert!(!a.iter().any(|w| w == "-netdev" || w == "-append"), "{a:?}");
        assert_eq!(a[a.len() - 2..], ["-kernel".to_owned(), "/t/hello".to_owned()]);
    }

    #[test]
    fn rejects_bad_app_args_and_smp() {
        let mut o = RunOptions::new("/k", Accel::Tcg);
        o.app_args = vec!["a\"b".into()];
        assert_eq!(qemu_args(&o), Err(ConfigError::AppArg("a\"b".into())));
        o.app_args = vec!["message=a b".into()];
        assert_eq!(o.kernel_command_line(), "-- \"message=a b\"");
        o.app_args = vec![String::new()];
        assert_eq!(qemu_args(&o), Err(ConfigError::AppArg(String::new())));
        o.app_args.clear();
        o.smp = 0;
        assert_eq!(qemu_args(&o), Err(ConfigError::Smp(0)));
    }

    #[test]
    fn shell_line_quotes() {
        let mut o = RunOptions::new("/t/hello", Accel::Tcg);
        o.app_args = vec!["a".into(), "it's".into()];
        let line = shell_line(&qemu_command(&o).unwrap());
        assert!(line.starts_with("qemu-system-x86_64 -M microvm,acpi=off -accel tcg "), "{line}");
        assert!(line.ends_with(r"-kernel /t/hello -append '-- a it'\''s'"), "{line}");
    }

    #[test]
    fn read_only_disks_get_readonly_on() {
        let dir = std::env::temp_dir().join(format!("images-qemu-ro-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.img"), dir.join("b,c.img"));
        std::fs::write(&a, [0u8; 512]).unwrap();
        std::fs::write(&b, [0u8; 512]).unwrap();
        let mut o = RunOptions::new("/t/kv", Accel::Tcg);
        o.push_disk(&DiskSpec { path: a.clone(), read_only: false });
        o.push_disk(&DiskSpec { path: b.clone(), read_only: true });
        assert_eq!(o.read_only_disks, BTreeSet::from([1]));
        let line = args(&o).join(" ");
        let (a, b) = (a.display(), b.display().to_string().replace(',', ",,"));
        assert!(
            line.contains(&format!(
                "-drive if=none,id=d0,format=raw,file={a} -device virtio-blk-device,drive=d0 \
                 -drive if=none,id=d1,format=raw,file={b},readonly=on -device virtio-blk-device,drive=d1 "
            )),
            "{line}"
        );
        o.machine = Machine::Q35;
        assert!(args(&o).join(" ").contains(",readonly=on -device virtio-blk-pci,drive=d1"));
        o.read_only_disks.insert(2);
        assert_eq!(qemu_args(&o), Err(ConfigError::ReadOnlyIndex { index: 2, disks: 2 }));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn disk_buses() {
        let dir = std::env::temp_dir().join(format!("images-qemu-bus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.img"), dir.join("b.img"));
        std::fs::write(&a, [0u8; 512]).unwrap();
        std::fs::write(&b, [0u8; 512]).unwrap();
        let mut o = RunOptions::new("/t/kv", Accel::Tcg);
        o.push_disk(&DiskSpec { path: a.clone(), read_only: false });
        o.push_disk(&DiskSpec { path: b.clone(), read_only: false });
        let (a, b) = (a.display(), b.display());
        o.disk_bus = DiskBus::VirtioScsi;
        assert!(args(&o).join(" ").contains(&format!(
            "-device virtio-scsi-device,id=scsi0 -drive if=none,id=d0,format=raw,file={a} \
             -device scsi-hd,drive=d0,bus=scsi0.0,channel=0,scsi-id=0,lun=0 -drive if=none,id=d1,format=raw,file={b} \
             -device scsi-hd,drive=d1,bus=scsi0.0,channel=0,scsi-id=1,lun=0 "
        )));
        o.machine = Machine::Q35;
        assert!(args(&o).join(" ").contains("-device virtio-scsi-pci,id=scsi0 -drive "));
        o.disk_bus = DiskBus::Nvme;
        let line = args(&o).join(" ");
        assert!(line.contains(&format!("file={a} -device nvme,serial=zirvium-d0,drive=d0 -drive ")), "{line}");
        assert!(line.contains("-device nvme,serial=zirvium-d1,drive=d1"), "{line}");
        o.machine = Machine::Microvm;
        assert_eq!(qemu_args(&o), Err(ConfigError::NvmeNeedsPci(Machine::Microvm)));
        assert_eq!(
            ConfigError::NvmeNeedsPci(Machine::Microvm).to_string(),
            "--disk-bus nvme needs a PCI bus, which --machine microvm has not: use --machine q35 (or pc)"
        );
        o.disks.clear();
        assert!(qemu_args(&o).is_ok(), "no disks: nothing to attach");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
