//! The dom0 initramfs of the nested Xen harness ([`crate::initramfs`] archives) holding busybox, the `xl`
//! toolstack, xenstored, xenconsoled, the backend modules and the scripts of `images/xen/`.
//!
//! Two archives make one initramfs: the base (packages only, built once per cache, [`base_archive`]) and a small
//! per-run one with `/init`, the app's ELF and its xl config ([`run_archive`]).

use std::fs;
use std::path::{Path, PathBuf};

use crate::initramfs::{add_kernel_modules, Archive, ArchiveError};

/// `/init` of dom0 (`images/xen/dom0-init`).
pub const DOM0_INIT: &str = include_str!("../../xen/dom0-init");

/// `/images/run-domu` (`images/xen/run-domu`): creates the domU and reports its console and its end.
pub const RUN_DOMU: &str = include_str!("../../xen/run-domu");

/// Kernel modules dom0 loads (with their dependencies, found in each module's `.modinfo`): Xen's device files
/// and backends, the bridge, loop devices, and virtio for QEMU's NIC and disks.
pub const MODULES: [&str; 13] = [
    "xen-privcmd",
    "xenfs",
    "xen-evtchn",
    "xen-gntdev",
    "xen-gntalloc",
    "bridge",
    "loop",
    "tun",
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
    "xen-netback",
    "xen-blkback",
];

/// Where dom0's init finds the module load order, one module name per line.
pub const MODULE_LIST: &str = "etc/images/modules";

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io { what: "reading", path: path.to_path_buf(), source }
}

/// The base archive from the unpacked packages in `root` for kernel `release`: busybox (its applet links are
/// made by `/init`), bash, flock, the Xen tools and libraries, `/etc/xen`, the C runtime, [`MODULES`] with their
/// dependencies (load order in [`MODULE_LIST`]), `/dev/console`.
pub fn base_archive(root: &Path, release: &str) -> Result<Archive, ArchiveError> {
    let mut a = Archive::new();
    for d in ["bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "run", "tmp", "root", "mnt", "images"] {
        a.dir(d);
    }
    for d in ["var/lib/xen", "var/lib/xenstored", "var/log/xen", "etc/images"] {
        a.dir(d);
    }
    // The kernel opens /dev/console for init before devtmpfs is mounted.
    a.char_dev("dev/console", 5, 1, 0o600);
    a.symlink("var/run", "../run");
    a.copy_tree(root, "bin/busybox")?;
    a.symlink("bin/sh", "busybox");
    // libxl's hotplug scripts are bash scripts and take their lock with util-linux flock.
    a.copy_tree(root, "bin/bash")?;
    a.copy_tree(root, "usr/bin/flock")?;
    for tree in ["lib64", "lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "usr/lib/xen-4.17/bin"] {
        a.copy_tree(root, tree)?;
    }
    a.copy_tree(root, "usr/lib/xen-4.17/lib/x86_64-linux-gnu")?;
    a.copy_tree(root, "etc/xen")?;
    let usr_bin = root.join("usr/bin");
    let mut xenstore = Vec::new();
    for entry in fs::read_dir(&usr_bin).map_err(read_err(&usr_bin))? {
        let name = entry.map_err(read_err(&usr_bin))?.file_name().to_string_lossy().into_owned();
        if name.starts_with("xenstore") {
            xenstore.push(name);
        }
    }
    xenstore.sort();
    for name in xenstore {
        a.copy_tree(root, &format!("usr/bin/{name}"))?;
    }
    // Debian's /usr/sbin/xl is a wrapper looking for the Xen version at run time; link the tools directly.
    for tool in ["xl", "xenstored", "xenconsoled", "xen-init-dom0", "xenconsole"] {
        a.symlink(&format!("usr/sbin/{tool}"), &format!("../lib/xen-4.17/bin/{tool}"));
    }
    add_kernel_modules(&mut a, root, release, &MODULES, MODULE_LIST)?;
    Ok(a)
}

/// What one run puts into dom0 besides the base archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunFiles {
    /// The domU's name (checked by [`super::xl::check_name`]).
    pub name: String,
    /// The app's ELF on the host; it becomes `/images/<file name>`.
    pub kernel: PathBuf,
    /// The domU's boot module on the host, if any; it becomes [`super::NESTED_RAMDISK`].
    pub ramdisk: Option<PathBuf>,
    /// The xl config text, whose `kernel` is `/images/<file name>`.
    pub config: String,
    /// When true dom0 reads shell commands from its console after starting the domU (the test harness's
    /// control channel) and powers off only on request; else it powers off when the domU ends.
    pub control: bool,
    /// dom0's address on the bridge, `A.B.C.D/N`.
    pub dom0_address: String,
}

/// The per-run archive: `/init`, `/images/run-domu`, `/images/domu.cfg`, the app ELF and `/etc/images/run.conf`.
pub fn run_archive(files: &RunFiles) -> Archive {
    let mut a = Archive::new();
    a.data("init", DOM0_INIT, 0o755);
    a.data("images/run-domu", RUN_DOMU, 0o755);
    a.data("images/domu.cfg", files.config.as_bytes(), 0o644);
    let file_name = files.kernel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    a.file(&format!("images/{file_name}"), files.kernel.clone(), 0o644);
    if let Some(ramdisk) = &files.ramdisk {
        a.file(super::NESTED_RAMDISK.trim_start_matches('/'), ramdisk.clone(), 0o644);
    }
    // Shell assignments: the values are a checked domain name, a flag and an address, none with a quote.
    let conf =
        format!("NAME='{}'\nCONTROL={}\nDOM0_ADDRESS='{}'\n", files.name, u8::from(files.control), files.dom0_address);
    a.data("etc/images/run.conf", conf, 0o644);
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::initramfs::{read_all, write_initrd};
    use std::fs::File;

    #[test]
    fn concatenated_initrd_holds_both_archives() {
        let dir = std::env::temp_dir().join(format!("images-initrd-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mut base = Archive::new();
        base.data("bin/busybox", vec![7u8; 1000], 0o755);
        let mut f = File::create(dir.join("base.cpio")).unwrap();
        base.write(&mut f).unwrap();
        drop(f);
        fs::write(dir.join("app"), b"\x7fELF app").unwrap();
        let files = RunFiles {
            name: "zirvium-hello".into(),
            kernel: dir.join("app"),
            ramdisk: None,
            config: "name = \"zirvium-hello\"\n".into(),
            control: true,
            dom0_address: "10.0.2.10/24".into(),
        };
        write_initrd(&[&dir.join("base.cpio")], &run_archive(&files), &dir.join("initrd")).unwrap();
        let entries = read_all(&fs::read(dir.join("initrd")).unwrap());
        let find = |n: &str| entries.iter().find(|e| e.0 == n).map(|e| e.2.clone());
        assert_eq!(find("bin/busybox"), Some(vec![7u8; 1000]));
        assert_eq!(find("images/app").as_deref(), Some(&b"\x7fELF app"[..]));
        assert_eq!(find("init").as_deref(), Some(DOM0_INIT.as_bytes()));
        let conf = String::from_utf8(find("etc/images/run.conf").unwrap()).unwrap();
        assert_eq!(conf, "NAME='zirvium-hello'\nCONTROL=1\nDOM0_ADDRESS='10.0.2.10/24'\n");
        fs::remove_dir_all(&dir).unwrap();
    }
}
