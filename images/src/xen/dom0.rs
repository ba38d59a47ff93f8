//! The dom0 initramfs of the nested Xen harness: newc cpio archives (Linux
//! `Documentation/driver-api/early-userspace/buffer-format.rst`) holding busybox, the `xl` toolstack, xenstored,
//! xenconsoled, the backend modules and the scripts of `images/xen/`.
//!
//! Two archives make one initramfs: the base (packages only, built once per cache, [`base_archive`]) and a small
//! per-run one with `/init`, the app's ELF and its xl config ([`run_archive`]); Linux unpacks concatenated
//! archives in order.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

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

/// Failures while assembling an archive.
#[derive(Debug, thiserror::Error)]
pub enum Dom0Error {
    /// A file of the unpacked packages could not be read.
    #[error("{what} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A kernel module (or one it depends on) is not in the kernel package.
    #[error("kernel module {name} not found under {}", .dir.display())]
    Module {
        /// The module name.
        name: String,
        /// Where it was looked for.
        dir: PathBuf,
    },
    /// A file is larger than newc's 32-bit size field.
    #[error("{}: {size} bytes is more than a cpio newc entry holds (4 GiB)", .path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Dom0Error + 'a {
    move |source| Dom0Error::Io { what, path: path.to_path_buf(), source }
}

/// What an archive entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// A directory.
    Dir,
    /// A regular file copied from the host when the archive is written.
    File(PathBuf),
    /// A regular file with these bytes.
    Data(Vec<u8>),
    /// A symbolic link to this target.
    Symlink(String),
    /// A character device (major, minor).
    CharDev(u32, u32),
}

/// One entry: a path relative to `/` and permission bits (`0o755`...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Path without a leading `/`, e.g. `usr/sbin/xl`.
    pub path: String,
    /// Permission bits (the file type comes from `node`).
    pub perm: u32,
    /// The content.
    pub node: Node,
}

/// A cpio archive being assembled: entries in order, parents first, each path once (a later add of the same path
/// is ignored, so the first wins).
#[derive(Clone, Debug, Default)]
pub struct Archive {
    entries: Vec<Entry>,
    paths: HashSet<String>,
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Self {
        Archive::default()
    }

    /// The entries, in archive order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    fn push(&mut self, path: &str, perm: u32, node: Node) {
        let path = path.trim_matches('/');
        if path.is_empty() || self.paths.contains(path) {
            return;
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.paths.insert(path.to_owned());
        self.entries.push(Entry { path: path.to_owned(), perm, node });
    }

    /// Adds directory `path` (mode 0755) and its parents.
    pub fn dir(&mut self, path: &str) {
        self.push(path, 0o755, Node::Dir);
    }

    /// Adds a file with `bytes` and permission bits `perm`.
    pub fn data(&mut self, path: &str, bytes: impl Into<Vec<u8>>, perm: u32) {
        self.push(path, perm, Node::Data(bytes.into()));
    }

    /// Adds host file `source` (read when written) with permission bits `perm`.
    pub fn file(&mut self, path: &str, source: impl Into<PathBuf>, perm: u32) {
        self.push(path, perm, Node::File(source.into()));
    }

    /// Adds a symbolic link `path` → `target`.
    pub fn symlink(&mut self, path: &str, target: &str) {
        self.push(path, 0o777, Node::Symlink(target.to_owned()));
    }

    /// Adds character device `path` with numbers `major:minor` and permission bits `perm`.
    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32, perm: u32) {
        self.push(path, perm, Node::CharDev(major, minor));
    }

    /// Adds `root/rel` under `rel`: a file, a symlink (kept as a link), or a directory with everything below it.
    pub fn copy_tree(&mut self, root: &Path, rel: &str) -> Result<(), Dom0Error> {
        let src = root.join(rel);
        let meta = fs::symlink_metadata(&src).map_err(io_err("reading", &src))?;
        let perm = meta.permissions().mode() & 0o7777;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&src).map_err(io_err("reading link", &src))?;
            self.symlink(rel, &target.to_string_lossy());
        } else if meta.is_dir() {
            self.push(rel, perm, Node::Dir);
            let mut names = Vec::new();
            for entry in fs::read_dir(&src).map_err(io_err("reading", &src))? {
                names.push(entry.map_err(io_err("reading", &src))?.file_name().to_string_lossy().into_owned());
            }
            names.sort();
            for name in names {
                self.copy_tree(root, &format!("{}/{name}", rel.trim_end_matches('/')))?;
            }
        } else {
            self.file(rel, src, perm);
        }
        Ok(())
    }

    /// Writes the archive and its `TRAILER!!!` to `w`, padded with zeros to a multiple of 512 bytes so another
    /// archive can follow. Entries are owned by root with mtime 0 and inode numbers 1, 2, ...
    pub fn write(&self, w: &mut impl Write) -> Result<(), Dom0Error> {
        let mut counter = CountingWriter { inner: w, count: 0 };
        for (i, e) in self.entries.iter().enumerate() {
            let (kind, nlink) = match e.node {
                Node::Dir => (0o040000, 2),
                Node::File(_) | Node::Data(_) => (0o100000, 1),
                Node::Symlink(_) => (0o120000, 1),
                Node::CharDev(..) => (0o020000, 1),
            };
            let mut builder = cpio::newc::Builder::new(&e.path)
                .ino(i as u32 + 1) // fewer than 2^32 entries: each is at least one host file
                .mode(kind | e.perm)
                .nlink(nlink);
            if let Node::CharDev(major, minor) = e.node {
                builder = builder.rdev_major(major).rdev_minor(minor);
            }
            let out = |r: io::Result<()>| r.map_err(io_err("writing the archive entry", Path::new(&e.path)));
            match &e.node {
                Node::Dir | Node::CharDev(..) => out(builder.write(&mut counter, 0).finish().map(drop))?,
                Node::Data(bytes) => out(write_all(builder, &mut counter, &mut &bytes[..], bytes.len() as u64))?,
                Node::Symlink(target) => {
                    let t = target.as_bytes();
                    out(write_all(builder, &mut counter, &mut &t[..], t.len() as u64))?
                }
                Node::File(src) => {
                    let mut f = File::open(src).map_err(io_err("opening", src))?;
                    let size = f.metadata().map_err(io_err("reading", src))?.len();
                    if size > u64::from(u32::MAX) {
                        return Err(Dom0Error::TooLarge { path: src.clone(), size });
                    }
                    write_all(builder, &mut counter, &mut f, size).map_err(io_err("copying", src))?
                }
            }
        }
        cpio::newc::trailer(&mut counter).map_err(io_err("writing", Path::new("TRAILER!!!")))?;
        let pad = (512 - counter.count % 512) % 512;
        counter.write_all(&vec![0; pad as usize]).map_err(io_err("writing", Path::new("padding")))
    }
}

/// Writes one entry of `size` bytes from `src` (size checked ≤ 4 GiB by the caller).
fn write_all(builder: cpio::newc::Builder, w: &mut impl Write, src: &mut impl Read, size: u64) -> io::Result<()> {
    let mut writer = builder.write(w, size as u32);
    let copied = io::copy(&mut src.take(size), &mut writer)?;
    if copied != size {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{copied} of {size} bytes read")));
    }
    writer.finish().map(drop)
}

/// Counts bytes written, for the final padding.
struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The `depends=` list of a kernel module's `.modinfo` section (NUL-separated `key=value` strings), e.g.
/// `["virtio_ring", "virtio"]`; empty when the module depends on nothing.
pub fn modinfo_depends(ko: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"depends=";
    let mut i = 0;
    while let Some(off) = ko[i..].windows(KEY.len()).position(|w| w == KEY) {
        let start = i + off;
        if start == 0 || ko[start - 1] == 0 {
            let value = &ko[start + KEY.len()..];
            let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
            return String::from_utf8_lossy(&value[..end])
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
        }
        i = start + 1;
    }
    Vec::new()
}

/// Module names compare with `-` and `_` as one character, as the kernel does.
fn module_key(name: &str) -> String {
    name.replace('-', "_")
}

/// The `.ko` files under `dir` by [`module_key`].
fn index_modules(dir: &Path) -> Result<BTreeMap<String, PathBuf>, Dom0Error> {
    let mut index = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).map_err(io_err("reading", &d))? {
            let path = entry.map_err(io_err("reading", &d))?.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(stem) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".ko")) {
                index.insert(module_key(stem), path);
            }
        }
    }
    Ok(index)
}

/// `wanted` and their dependencies in load order (each after what it depends on), as `(name, file)`, reading
/// `depends=` through `depends_of`. Errors: a module missing from `index`.
fn load_order(
    wanted: &[&str],
    index: &BTreeMap<String, PathBuf>,
    dir: &Path,
    depends_of: &mut dyn FnMut(&Path) -> Result<Vec<String>, Dom0Error>,
) -> Result<Vec<(String, PathBuf)>, Dom0Error> {
    fn visit(
        name: &str,
        index: &BTreeMap<String, PathBuf>,
        dir: &Path,
        depends_of: &mut dyn FnMut(&Path) -> Result<Vec<String>, Dom0Error>,
        done: &mut HashSet<String>,
        order: &mut Vec<(String, PathBuf)>,
    ) -> Result<(), Dom0Error> {
        let key = module_key(name);
        if !done.insert(key.clone()) {
            return Ok(());
        }
        let path = index.get(&key).ok_or_else(|| Dom0Error::Module { name: name.to_owned(), dir: dir.into() })?;
        for dep in depends_of(path)? {
            visit(&dep, index, dir, depends_of, done, order)?;
        }
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| name.to_owned());
        order.push((stem, path.clone()));
        Ok(())
    }
    let mut done = HashSet::new();
    let mut order = Vec::new();
    for name in wanted {
        visit(name, index, dir, depends_of, &mut done, &mut order)?;
    }
    Ok(order)
}

/// The base archive from the unpacked packages in `root` for kernel `release`: busybox (its applet links are
/// made by `/init`), bash, flock, the Xen tools and libraries, `/etc/xen`, the C runtime, [`MODULES`] with their
/// dependencies (load order in [`MODULE_LIST`]), `/dev/console`.
pub fn base_archive(root: &Path, release: &str) -> Result<Archive, Dom0Error> {
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
    for entry in fs::read_dir(&usr_bin).map_err(io_err("reading", &usr_bin))? {
        let name = entry.map_err(io_err("reading", &usr_bin))?.file_name().to_string_lossy().into_owned();
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
    let modules_dir = root.join("lib/modules").join(release).join("kernel");
    let index = index_modules(&modules_dir)?;
    let mut depends_of = |p: &Path| fs::read(p).map(|b| modinfo_depends(&b)).map_err(io_err("reading", p));
    let order = load_order(&MODULES, &index, &modules_dir, &mut depends_of)?;
    let mut list = String::new();
    for (name, path) in &order {
        a.file(&format!("lib/modules/{release}/{name}.ko"), path.clone(), 0o644);
        list.push_str(name);
        list.push('\n');
    }
    a.data(MODULE_LIST, list, 0o644);
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

/// Writes the initramfs `out`: the base archive file `base` followed by `run`.
pub fn write_initrd(base: &Path, run: &Archive, out: &Path) -> Result<(), Dom0Error> {
    let mut w = io::BufWriter::new(File::create(out).map_err(io_err("creating", out))?);
    let mut b = File::open(base).map_err(io_err("opening", base))?;
    io::copy(&mut b, &mut w).map_err(io_err("copying", base))?;
    run.write(&mut w)?;
    w.flush().map_err(io_err("writing", out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads every entry of a (possibly concatenated, zero-padded) newc stream: (name, mode, content).
    fn read_all(mut bytes: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            while bytes.first() == Some(&0) {
                bytes = &bytes[1..];
            }
            if bytes.is_empty() {
                return out;
            }
            let mut reader = cpio::NewcReader::new(bytes).unwrap();
            if reader.entry().is_trailer() {
                bytes = reader.finish().unwrap();
                continue;
            }
            let (name, mode) = (reader.entry().name().to_owned(), reader.entry().mode());
            let mut content = Vec::new();
            reader.read_to_end(&mut content).unwrap();
            out.push((name, mode, content));
            bytes = reader.finish().unwrap();
        }
    }

    #[test]
    fn archive_round_trips_with_parents_first() {
        let mut a = Archive::new();
        a.data("etc/images/run.conf", "X=1\n", 0o644);
        a.symlink("bin/sh", "busybox");
        a.char_dev("dev/console", 5, 1, 0o600);
        a.data("etc/images/run.conf", "ignored: first add wins", 0o644);
        let mut bytes = Vec::new();
        a.write(&mut bytes).unwrap();
        assert_eq!(bytes.len() % 512, 0);
        let entries = read_all(&bytes);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["etc", "etc/images", "etc/images/run.conf", "bin", "bin/sh", "dev", "dev/console"]);
        assert_eq!(entries[0].1, 0o040755);
        assert_eq!((entries[2].1, entries[2].2.as_slice()), (0o100644, &b"X=1\n"[..]));
        assert_eq!((entries[4].1, entries[4].2.as_slice()), (0o120777, &b"busybox"[..]));
        assert_eq!(entries[6].1, 0o020600);
    }

    #[test]
    fn copy_tree_keeps_links_modes_and_order() {
        let root = std::env::temp_dir().join(format!("images-dom0-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("usr/lib/x")).unwrap();
        fs::write(root.join("usr/lib/x/b.so.1.0"), b"elf").unwrap();
        fs::set_permissions(root.join("usr/lib/x/b.so.1.0"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("b.so.1.0", root.join("usr/lib/x/b.so.1")).unwrap();
        let mut a = Archive::new();
        a.copy_tree(&root, "usr/lib/x").unwrap();
        let mut bytes = Vec::new();
        a.write(&mut bytes).unwrap();
        let entries = read_all(&bytes);
        let got: Vec<(&str, u32)> = entries.iter().map(|e| (e.0.as_str(), e.1 & 0o170777)).collect();
        assert_eq!(
            got,
            [
                ("usr", 0o040755),
                ("usr/lib", 0o040755),
                ("usr/lib/x", 0o040755),
                ("usr/lib/x/b.so.1", 0o120777),
                ("usr/lib/x/b.so.1.0", 0o100755)
            ]
        );
        assert_eq!(entries[3].2, b"b.so.1.0");
        assert_eq!(entries[4].2, b"elf");
        assert!(matches!(a.copy_tree(&root, "nope"), Err(Dom0Error::Io { what: "reading", .. })));
        fs::remove_dir_all(&root).unwrap();
    }

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
        write_initrd(&dir.join("base.cpio"), &run_archive(&files), &dir.join("initrd")).unwrap();
        let entries = read_all(&fs::read(dir.join("initrd")).unwrap());
        let find = |n: &str| entries.iter().find(|e| e.0 == n).map(|e| e.2.clone());
        assert_eq!(find("bin/busybox"), Some(vec![7u8; 1000]));
        assert_eq!(find("images/app").as_deref(), Some(&b"\x7fELF app"[..]));
        assert_eq!(find("init").as_deref(), Some(DOM0_INIT.as_bytes()));
        let conf = String::from_utf8(find("etc/images/run.conf").unwrap()).unwrap();
        assert_eq!(conf, "NAME='zirvium-hello'\nCONTROL=1\nDOM0_ADDRESS='10.0.2.10/24'\n");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn modinfo_depends_reads_the_nul_separated_field() {
        let ko = b"\x7fELF...\0license=GPL\0depends=virtio_ring,virtio,net_failover\0retpoline=Y\0";
        assert_eq!(modinfo_depends(ko), ["virtio_ring", "virtio", "net_failover"]);
        assert!(modinfo_depends(b"\0depends=\0name=loop\0").is_empty());
        // `xdepends=` is another key; a missing field means no dependencies.
        assert!(modinfo_depends(b"\0xdepends=a\0").is_empty());
    }

    #[test]
    fn load_order_puts_dependencies_first() {
        let dir = Path::new("/k");
        let index: BTreeMap<String, PathBuf> = ["virtio_net", "virtio", "virtio_ring", "net_failover", "failover"]
            .iter()
            .map(|n| (n.to_string(), dir.join(format!("{n}.ko"))))
            .chain([("xen_netback".to_owned(), dir.join("xen-netback.ko"))])
            .collect();
        let mut deps = |p: &Path| -> Result<Vec<String>, Dom0Error> {
            Ok(match p.file_stem().and_then(|s| s.to_str()) {
                Some("virtio_net") => vec!["virtio_ring".into(), "virtio".into(), "net_failover".into()],
                Some("virtio") => vec!["virtio_ring".into()],
                Some("net_failover") => vec!["failover".into()],
                _ => vec![],
            })
        };
        let order = load_order(&["xen-netback", "virtio_net", "virtio"], &index, dir, &mut deps).unwrap();
        let names: Vec<&str> = order.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["xen-netback", "virtio_ring", "virtio", "failover", "net_failover", "virtio_net"]);
        match load_order(&["bridge"], &index, dir, &mut deps) {
            Err(Dom0Error::Module { name, .. }) => assert_eq!(name, "bridge"),
            other => panic!("{other:?}"),
        }
    }
}
