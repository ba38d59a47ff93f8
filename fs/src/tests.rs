//! Host tests: path resolution through the mount table, ramfs semantics, initrd parsing (valid and malformed
//! archives built with the `tar` crate or by hand), and FAT over an in-memory block device that models a
//! volatile write cache (what was not flushed is lost at a simulated power cut).

use crate::memdisk::MemDisk;
use crate::*;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use libos::dev::BlockDevice;
use spin::Mutex;

fn formatted(bytes: usize) -> Arc<MemDisk> {
    MemDisk::formatted(bytes)
}

fn fat_vfs(disk: &Arc<MemDisk>) -> Vfs {
    let vfs = Vfs::new();
    vfs.mount("/", Arc::new(RamFs::new())).unwrap();
    vfs.mount("/data", Arc::new(FatFs::mount(disk.clone()).unwrap())).unwrap();
    vfs
}

// ---------------------------------------------------------------------------------------------------------
// Helpers.

fn opts() -> OpenOptions {
    OpenOptions::new()
}

fn write_file(vfs: &Vfs, path: &str, data: &[u8]) -> Result<()> {
    let mut f = vfs.open(path, opts().write(true).create(true).truncate(true))?;
    f.write_all(data)
}

fn read_file(vfs: &Vfs, path: &str) -> Result<Vec<u8>> {
    let mut f = vfs.open(path, opts().read(true))?;
    let mut v = Vec::new();
    f.read_to_end(&mut v)?;
    Ok(v)
}

fn names(vfs: &Vfs, path: &str) -> Vec<String> {
    let mut v: Vec<String> = vfs.read_dir(path).unwrap().map(|e| e.unwrap().file_name().to_string()).collect();
    v.sort();
    v
}

fn ram_vfs() -> Vfs {
    let vfs = Vfs::new();
    vfs.mount("/", Arc::new(RamFs::new())).unwrap();
    vfs
}

// ---------------------------------------------------------------------------------------------------------
// Mount table and path resolution.

#[test]
fn longest_prefix_mount_wins_on_whole_components() {
    let root = RamFs::new();
    let tmp = RamFs::new();
    let deep = RamFs::new();
    let vfs = Vfs::new();
    vfs.mount("/", Arc::new(root.clone())).unwrap();
    vfs.mount("/tmp", Arc::new(tmp.clone())).unwrap();
    vfs.mount("/tmp/deep/", Arc::new(deep.clone())).unwrap();
    write_file(&vfs, "/tmp/a", b"tmp").unwrap();
    write_file(&vfs, "/tmp/deep/a", b"deep").unwrap();
    write_file(&vfs, "/tmpx", b"root").unwrap();
    assert_eq!(root.metadata("tmpx").unwrap().len, 4);
    assert_eq!(tmp.metadata("a").unwrap().len, 3);
    assert_eq!(deep.metadata("a").unwrap().len, 4);
    assert_eq!(root.metadata("tmp"), Err(Error::NotFound), "nothing leaks into the parent fs");
    // Lexical `..` crosses mounts before resolution, and never climbs over `/`.
    assert_eq!(read_file(&vfs, "/tmp/deep/../a").unwrap(), b"tmp");
    assert_eq!(read_file(&vfs, "/../../tmp//deep/./a").unwrap(), b"deep");
    assert_eq!(read_file(&vfs, "tmp/a").unwrap(), b"tmp", "relative paths start at /");
    assert_eq!(vfs.mount("/tmp/", Arc::new(RamFs::new())), Err(Error::AlreadyExists));
    assert_eq!(vfs.mounts().iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(), ["/", "/tmp", "/tmp/deep"]);
}

#[test]
fn mount_points_are_listed_and_protected() {
    let vfs = ram_vfs();
    vfs.mount("/tmp", Arc::new(RamFs::new())).unwrap();
    vfs.create_dir("/etc").unwrap();
    assert_eq!(names(&vfs, "/"), ["etc", "tmp"]);
    let paths: Vec<String> = vfs.read_dir("/").unwrap().map(|e| e.unwrap().path().to_string()).collect();
    assert_eq!(paths, ["/etc", "/tmp"]);
    assert!(vfs.metadata("/tmp").unwrap().is_dir());
    assert_eq!(vfs.remove_dir("/tmp"), Err(Error::InvalidInput("a mount point cannot be removed")));
    assert_eq!(vfs.create_dir("/tmp"), Err(Error::AlreadyExists));
    assert!(matches!(vfs.rename("/tmp", "/x"), Err(Error::InvalidInput(_))));
    assert_eq!(vfs.open("/tmp", opts().read(true)).unwrap_err(), Error::IsADirectory);
    vfs.create_dir_all("/tmp/a/b/c").unwrap();
    vfs.create_dir_all("/tmp/a/b/c").unwrap();
    assert!(vfs.metadata("/tmp/a/b/c/").unwrap().is_dir());
}

#[test]
fn nothing_mounted_is_not_found() {
    let vfs = Vfs::new();
    assert_eq!(vfs.metadata("/x"), Err(Error::NotFound));
    assert_eq!(vfs.open("/x", opts().read(true)).unwrap_err(), Error::NotFound);
}

#[test]
fn bad_paths_are_refused_before_the_backend() {
    let vfs = ram_vfs();
    assert_eq!(vfs.metadata(""), Err(Error::InvalidPath));
    assert_eq!(vfs.open("/a\0b", opts().write(true).create(true)).unwrap_err(), Error::InvalidPath);
    let long = "n".repeat(256);
    assert_eq!(vfs.create_dir(&alloc::format!("/{long}")), Err(Error::NameTooLong));
    let ok = "n".repeat(255);
    vfs.create_dir(&alloc::format!("/{ok}")).unwrap();
    assert_eq!(vfs.metadata(&"/x".repeat(2049)), Err(Error::NameTooLong));
}

#[test]
fn trailing_slash_needs_a_directory() {
    let vfs = ram_vfs();
    write_file(&vfs, "/f", b"x").unwrap();
    vfs.create_dir("/d").unwrap();
    assert_eq!(vfs.metadata("/f/"), Err(Error::NotADirectory));
    assert_eq!(vfs.metadata("/f/."), Err(Error::NotADirectory));
    assert!(vfs.metadata("/d/").unwrap().is_dir());
    assert_eq!(vfs.open("/f/", opts().read(true)).unwrap_err(), Error::NotADirectory);
    assert_eq!(vfs.open("/new/", opts().write(true).create(true)).unwrap_err(), Error::IsADirectory);
    assert_eq!(vfs.remove_file("/f/"), Err(Error::NotADirectory));
    assert_eq!(vfs.remove_file("/d/"), Err(Error::IsADirectory));
    assert_eq!(vfs.rename("/f/", "/g"), Err(Error::NotADirectory));
    assert_eq!(vfs.rename("/f", "/g/"), Err(Error::NotADirectory));
    vfs.create_dir("/e/").unwrap();
    vfs.rename("/d/", "/d2/").unwrap();
    assert_eq!(names(&vfs, "/"), ["d2", "e", "f"]);
}

#[test]
fn rename_across_mounts_is_refused() {
    let vfs = ram_vfs();
    vfs.mount("/tmp", Arc::new(RamFs::new())).unwrap();
    write_file(&vfs, "/tmp/a", b"x").unwrap();
    assert_eq!(vfs.rename("/tmp/a", "/a"), Err(Error::CrossesMount));
    assert_eq!(Error::CrossesMount.to_string(), "rename across mount points; copy the file and remove the source");
    assert_eq!(read_file(&vfs, "/tmp/a").unwrap(), b"x");
}

// ---------------------------------------------------------------------------------------------------------
// ramfs through the VFS.

#[test]
fn ramfs_create_write_seek_read() {
    let vfs = ram_vfs();
    let mut f = vfs.open("/f", opts().read(true).write(true).create(true)).unwrap();
    f.write_all(b"hello world").unwrap();
    assert_eq!(f.seek(SeekFrom::Start(6)).unwrap(), 6);
    let mut buf = [0u8; 5];
    f.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"world");
    assert_eq!(f.read(&mut buf).unwrap(), 0, "end of file");
    assert_eq!(f.seek(SeekFrom::End(-5)).unwrap(), 6);
    f.write_all(b"there").unwrap();
    assert_eq!(f.seek(SeekFrom::Current(-11)).unwrap(), 0);
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "hello there");
    assert_eq!(
        f.seek(SeekFrom::Current(-12)),
        Err(Error::InvalidInput("seek to a position before byte 0 or past 2^64"))
    );
    // A write past the end fills the gap with zeros.
    f.seek(SeekFrom::Start(13)).unwrap();
    f.write_all(b"!").unwrap();
    assert_eq!(read_file(&vfs, "/f").unwrap(), b"hello there\0\0!");
    assert_eq!(f.metadata().unwrap().len, 14);
    // read_to_end appends, from the position, whatever spare capacity the vector has.
    let mut v = Vec::with_capacity(1000);
    v.extend_from_slice(b">>");
    f.seek(SeekFrom::Start(6)).unwrap();
    assert_eq!(f.read_to_end(&mut v).unwrap(), 8);
    assert_eq!(v, b">>there\0\0!");
    assert_eq!(f.read_to_end(&mut v).unwrap(), 0);
    assert_eq!(vfs.metadata("/f").unwrap().len, 14);
    f.sync_all().unwrap();
}

#[test]
fn ramfs_open_options() {
    let vfs = ram_vfs();
    assert_eq!(vfs.open("/f", opts().read(true)).unwrap_err(), Error::NotFound);
    assert!(matches!(vfs.open("/f", &opts()), Err(Error::InvalidInput(_))));
    assert!(matches!(vfs.open("/f", opts().read(true).create(true)), Err(Error::InvalidInput(_))));
    assert!(matches!(vfs.open("/f", opts().append(true).truncate(true)), Err(Error::InvalidInput(_))));
    write_file(&vfs, "/f", b"0123456789").unwrap();
    assert_eq!(vfs.open("/f", opts().write(true).create_new(true)).unwrap_err(), Error::AlreadyExists);
    // Truncate.
    drop(vfs.open("/f", opts().write(true).truncate(true)).unwrap());
    assert_eq!(vfs.metadata("/f").unwrap().len, 0);
    // Append: every write goes to the end, whatever the position.
    write_file(&vfs, "/f", b"abc").unwrap();
    let mut a = vfs.open("/f", opts().read(true).append(true)).unwrap();
    assert_eq!(a.stream_position(), 3);
    a.seek(SeekFrom::Start(0)).unwrap();
    a.write_all(b"def").unwrap();
    assert_eq!(a.stream_position(), 6);
    assert_eq!(read_file(&vfs, "/f").unwrap(), b"abcdef");
    // Access checks.
    let mut r = vfs.open("/f", opts().read(true)).unwrap();
    assert_eq!(r.write(b"x"), Err(Error::InvalidInput("file not opened for writing")));
    assert_eq!(r.set_len(0), Err(Error::InvalidInput("file not opened for writing")));
    let mut w = vfs.open("/f", opts().write(true)).unwrap();
    assert_eq!(w.read(&mut [0u8; 4]), Err(Error::InvalidInput("file not opened for reading")));
    // set_len cuts and extends.
    w.set_len(2).unwrap();
    assert_eq!(read_file(&vfs, "/f").unwrap(), b"ab");
    w.set_len(4).unwrap();
    assert_eq!(read_file(&vfs, "/f").unwrap(), b"ab\0\0");
    // Opening a directory, a file below a file.
    vfs.create_dir("/d").unwrap();
    assert_eq!(vfs.open("/d", opts().read(true)).unwrap_err(), Error::IsADirectory);
    assert_eq!(vfs.open("/f/x", opts().read(true)).unwrap_err(), Error::NotADirectory);
    assert_eq!(vfs.open("/nope/x", opts().write(true).create(true)).unwrap_err(), Error::NotFound);
}

#[test]
fn ramfs_directories_remove_and_rename() {
    let vfs = ram_vfs();
    vfs.create_dir("/d").unwrap();
    assert_eq!(vfs.create_dir("/d"), Err(Error::AlreadyExists));
    assert_eq!(vfs.create_dir("/x/y"), Err(Error::NotFound));
    write_file(&vfs, "/d/b", b"b").unwrap();
    write_file(&vfs, "/d/a", b"a").unwrap();
    vfs.create_dir("/d/sub").unwrap();
    let listing: Vec<(String, bool, u64)> = vfs
        .read_dir("/d")
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            assert_eq!(e.path(), alloc::format!("/d/{}", e.file_name()));
            (e.file_name().to_string(), e.file_type().unwrap().is_dir(), e.metadata().unwrap().len)
        })
        .collect();
    assert_eq!(listing, [("a".into(), false, 1), ("b".into(), false, 1), ("sub".into(), true, 0)]);
    assert_eq!(vfs.read_dir("/d/a").unwrap_err(), Error::NotADirectory);
    assert_eq!(vfs.remove_dir("/d"), Err(Error::DirectoryNotEmpty));
    assert_eq!(vfs.remove_dir("/d/a"), Err(Error::NotADirectory));
    assert_eq!(vfs.remove_file("/d/sub"), Err(Error::IsADirectory));
    assert_eq!(vfs.remove_file("/d/zzz"), Err(Error::NotFound));
    // rename: file over file replaces; file over dir and dir over file are refused; dir into itself too.
    vfs.rename("/d/a", "/d/b").unwrap();
    assert_eq!(read_file(&vfs, "/d/b").unwrap(), b"a");
    assert_eq!(vfs.metadata("/d/a"), Err(Error::NotFound));
    assert_eq!(vfs.rename("/d/b", "/d/sub"), Err(Error::IsADirectory));
    write_file(&vfs, "/f", b"f").unwrap();
    assert_eq!(vfs.rename("/d/sub", "/f"), Err(Error::NotADirectory));
    assert!(matches!(vfs.rename("/d", "/d/sub/d"), Err(Error::InvalidInput(_))));
    vfs.create_dir("/e").unwrap();
    write_file(&vfs, "/e/x", b"").unwrap();
    assert_eq!(vfs.rename("/d/sub", "/e"), Err(Error::DirectoryNotEmpty));
    vfs.remove_file("/e/x").unwrap();
    vfs.rename("/d/sub", "/e").unwrap();
    vfs.rename("/d", "/e/d").unwrap();
    assert_eq!(read_file(&vfs, "/e/d/b").unwrap(), b"a");
    vfs.rename("/f", "/f").unwrap();
    assert_eq!(vfs.rename("/nope", "/x"), Err(Error::NotFound));
    vfs.remove_file("/e/d/b").unwrap();
    vfs.remove_dir("/e/d").unwrap();
    assert_eq!(names(&vfs, "/"), ["e", "f"]);
}

#[test]
fn ramfs_unlinked_file_lives_until_closed() {
    let ram = RamFs::with_limit(1000);
    let vfs = Vfs::new();
    vfs.mount("/", Arc::new(ram.clone())).unwrap();
    write_file(&vfs, "/f", &[7u8; 600]).unwrap();
    let mut f = vfs.open("/f", opts().read(true).write(true)).unwrap();
    vfs.remove_file("/f").unwrap();
    assert_eq!(vfs.metadata("/f"), Err(Error::NotFound));
    let mut buf = [0u8; 600];
    f.read_exact(&mut buf).unwrap();
    assert_eq!(buf, [7u8; 600]);
    // Its bytes still count against the limit while open.
    assert_eq!(write_file(&vfs, "/g", &[1u8; 600]), Err(Error::NoSpace));
    drop(f);
    assert_eq!(ram.stats().unwrap().free_bytes, 1000);
    write_file(&vfs, "/g", &[1u8; 600]).unwrap();
    // A replaced file is also kept for its open handle.
    let mut old = vfs.open("/g", opts().read(true)).unwrap();
    write_file(&vfs, "/h", b"new").unwrap();
    vfs.rename("/h", "/g").unwrap();
    let mut v = Vec::new();
    old.read_to_end(&mut v).unwrap();
    assert_eq!(v, [1u8; 600]);
    assert_eq!(read_file(&vfs, "/g").unwrap(), b"new");
}

#[test]
fn ramfs_huge_sparse_write_is_no_space_not_an_abort() {
    let vfs = ram_vfs();
    let mut f = vfs.open("/f", opts().write(true).create(true)).unwrap();
    f.seek(SeekFrom::Start(1 << 60)).unwrap();
    assert_eq!(f.write(b"x"), Err(Error::NoSpace));
    f.seek(SeekFrom::Start(u64::MAX)).unwrap();
    assert_eq!(f.write(b"x"), Err(Error::FileTooLarge));
    assert_eq!(vfs.metadata("/f").unwrap().len, 0);
}

// ---------------------------------------------------------------------------------------------------------
// initrd.

fn leak(v: Vec<u8>) -> &'static [u8] {
    Vec::leak(v)
}

fn file_header(size: usize) -> ::tar::Header {
    let mut h = ::tar::Header::new_gnu();
    h.set_size(size as u64);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h
}

/// An archive as GNU tar writes it: directories, long names (GNU `L`), a ustar entry with a prefix, a hard
/// link, a symlink.
fn sample_archive() -> Vec<u8> {
    let mut b = ::tar::Builder::new(Vec::new());
    let mut d = ::tar::Header::new_gnu();
    d.set_entry_type(::tar::EntryType::Directory);
    d.set_size(0);
    d.set_mtime(1_600_000_000);
    b.append_data(&mut d, "./www/", std::io::empty()).unwrap();
    b.append_data(&mut file_header(5), "./www/index.html", &b"hello"[..]).unwrap();
    let long = alloc::format!("deep/{}/file.txt", "x".repeat(150));
    b.append_data(&mut file_header(4), &long, &b"long"[..]).unwrap();
    let mut u = ::tar::Header::new_ustar();
    u.set_size(3);
    u.set_mtime(5);
    let prefixed = alloc::format!("{}/p.txt", "y".repeat(120));
    b.append_data(&mut u, &prefixed, &b"pre"[..]).unwrap();
    let mut hl = ::tar::Header::new_gnu();
    hl.set_entry_type(::tar::EntryType::Link);
    hl.set_size(0);
    b.append_link(&mut hl, "www/alias.html", "www/index.html").unwrap();
    let mut sl = ::tar::Header::new_gnu();
    sl.set_entry_type(::tar::EntryType::Symlink);
    sl.set_size(0);
    b.append_link(&mut sl, "www/sym", "index.html").unwrap();
    b.append_data(&mut file_header(0), "empty", std::io::empty()).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn initrd_mounts_a_gnu_tar_archive() {
    let bytes = leak(sample_archive());
    let initrd = Initrd::parse(bytes).unwrap();
    assert_eq!(initrd.files(), 5);
    assert_eq!(initrd.bytes(), 5 + 4 + 3 + 5);
    assert_eq!(initrd.skipped(), 1);
    assert_eq!(initrd.describe(), "initrd (5 files, 17 B) [1 links/devices skipped]");
    let vfs = Vfs::new();
    vfs.mount("/", Arc::new(initrd)).unwrap();
    assert_eq!(read_file(&vfs, "/www/index.html").unwrap(), b"hello");
    assert_eq!(read_file(&vfs, "/www/alias.html").unwrap(), b"hello");
    assert_eq!(read_file(&vfs, &alloc::format!("/deep/{}/file.txt", "x".repeat(150))).unwrap(), b"long");
    assert_eq!(read_file(&vfs, &alloc::format!("/{}/p.txt", "y".repeat(120))).unwrap(), b"pre");
    assert_eq!(read_file(&vfs, "/empty").unwrap(), b"");
    let mut root = names(&vfs, "/");
    root.retain(|n| n.len() < 20);
    assert_eq!(root, ["deep", "empty", "www"]);
    assert_eq!(names(&vfs, "/www"), ["alias.html", "index.html"]);
    let m = vfs.metadata("/www/index.html").unwrap();
    assert_eq!((m.len, m.read_only, m.modified), (5, true, Some(1_700_000_000)));
    assert_eq!(vfs.metadata("/www").unwrap().modified, Some(1_600_000_000));
    assert_eq!(vfs.metadata("/deep").unwrap().modified, None, "implied directory");
    // Zero-copy: reads come from the module's bytes; the archive holds "hello" once.
    assert_eq!(bytes.windows(5).filter(|w| w == b"hello").count(), 1);
    // Read-only.
    assert_eq!(vfs.open("/www/index.html", opts().write(true)).unwrap_err(), Error::PermissionDenied);
    assert_eq!(vfs.open("/new", opts().write(true).create(true)).unwrap_err(), Error::PermissionDenied);
    assert_eq!(vfs.create_dir("/x"), Err(Error::PermissionDenied));
    assert_eq!(vfs.remove_file("/empty"), Err(Error::PermissionDenied));
    assert_eq!(vfs.rename("/empty", "/e2"), Err(Error::PermissionDenied));
    // Partial reads at offsets.
    let mut f = vfs.open("/www/index.html", opts().read(true)).unwrap();
    f.seek(SeekFrom::Start(3)).unwrap();
    let mut buf = [0u8; 10];
    assert_eq!(f.read(&mut buf).unwrap(), 2);
    assert_eq!(&buf[..2], b"lo");
    f.seek(SeekFrom::Start(100)).unwrap();
    assert_eq!(f.read(&mut buf).unwrap(), 0);
}

#[test]
fn initrd_reads_pax_extended_headers() {
    // A pax 'x' header with a path and mtime, then the member it describes (as `tar --format=posix` writes).
    let path = alloc::format!("pax/{}/f", "z".repeat(200));
    let rec = |k: &str, v: &str| {
        // "<len> <k>=<v>\n" where len counts its own digits too.
        let rest = 1 + k.len() + 1 + v.len() + 1;
        let mut n = rest + 1;
        while n != rest + n.to_string().len() {
            n = rest + n.to_string().len();
        }
        alloc::format!("{n} {k}={v}\n")
    };
    let records = alloc::format!("{}{}", rec("path", &path), rec("mtime", "1700000001.5"));
    let mut b = ::tar::Builder::new(Vec::new());
    let mut x = ::tar::Header::new_ustar();
    x.set_entry_type(::tar::EntryType::XHeader);
    x.set_size(records.len() as u64);
    b.append_data(&mut x, "PaxHeaders/f", records.as_bytes()).unwrap();
    b.append_data(&mut file_header(2), "short-name", &b"px"[..]).unwrap();
    let bytes = leak(b.into_inner().unwrap());
    let vfs = Vfs::new();
    vfs.mount("/", Arc::new(Initrd::parse(bytes).unwrap())).unwrap();
    assert_eq!(read_file(&vfs, &alloc::format!("/{path}")).unwrap(), b"px");
    assert_eq!(vfs.metadata(&alloc::format!("/{path}")).unwrap().modified, Some(1_700_000_001));
    assert_eq!(vfs.metadata("/short-name"), Err(Error::NotFound));
}

/// One GNU header block with `name` written directly (bypassing the `tar` crate's path checks).
fn raw_header(name: &[u8], size: usize, kind: ::tar::EntryType) -> ::tar::Header {
    let mut h = file_header(size);
    h.set_entry_type(kind);
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_cksum();
    h
}

fn raw_archive(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut b = ::tar::Builder::new(Vec::new());
    for (name, data) in entries {
        b.append(&raw_header(name, data.len(), ::tar::EntryType::Regular), *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn parse_err(v: Vec<u8>) -> String {
    match Initrd::parse(leak(v)) {
        Ok(_) => panic!("archive accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn initrd_refuses_traversal_and_absolute_paths() {
    let e = parse_err(raw_archive(&[(b"ok", b"1"), (b"../evil", b"x")]));
    assert_eq!(e, "entry \"../evil\" (header at byte 1024): \"..\" components are not allowed");
    let e = parse_err(raw_archive(&[(b"a/../../b", b"x")]));
    assert_eq!(e, "entry \"a/../../b\" (header at byte 0): \"..\" components are not allowed");
    let e = parse_err(raw_archive(&[(b"/etc/passwd", b"x")]));
    assert_eq!(e, "entry \"/etc/passwd\" (header at byte 0): absolute paths are not allowed");
    // A hard link may not point outside either.
    let mut b = ::tar::Builder::new(Vec::new());
    let mut h = raw_header(b"link", 0, ::tar::EntryType::Link);
    h.as_old_mut().linkname[..9].copy_from_slice(b"../passwd");
    h.set_cksum();
    b.append(&h, std::io::empty()).unwrap();
    let e = parse_err(b.into_inner().unwrap());
    assert_eq!(e, "entry \"../passwd\" (header at byte 0): \"..\" components are not allowed");
}

#[test]
fn initrd_refuses_truncated_and_corrupt_archives() {
    let good = raw_archive(&[(b"a.txt", &[b'a'; 700]), (b"b.txt", b"bbb")]);
    assert!(Initrd::parse(leak(good.clone())).is_ok());
    // b.txt's header starts at 512 + 1024 (700 bytes of data padded to two blocks).
    let e = parse_err(good[..1536 + 100].to_vec());
    assert_eq!(e, "truncated archive: a header at byte 1536 needs 512 bytes but only 100 remain");
    let e = parse_err(good[..512 + 300].to_vec());
    assert_eq!(e, "truncated archive: entry \"a.txt\" (header at byte 0) has 700 bytes of data but only 300 remain");
    let e = parse_err(good[..2048 + 512].to_vec());
    assert_eq!(e, "truncated archive: it ends at byte 2560 without the end-of-archive (zero) block");
    let mut bad = good.clone();
    bad[1536] = b'c'; // the checksum no longer matches "b.txt" → "c.txt"
    let e = parse_err(bad);
    assert!(e.starts_with("entry \"c.txt\" (header at byte 1536): header checksum"), "{e}");
    let mut bad = good.clone();
    bad[1536 + 124] = b'9'; // size field: not octal
    let sum: u64 =
        bad[1536..2048].iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { b as u64 }).sum();
    let field = alloc::format!("{sum:06o}\0 ");
    bad[1536 + 148..1536 + 156].copy_from_slice(field.as_bytes());
    let e = parse_err(bad);
    assert_eq!(e, "entry \"b.txt\" (header at byte 1536): field size is not an octal number");
    let mut bad = good.clone();
    bad[1536 + 257..1536 + 263].copy_from_slice(b"nottar");
    assert_eq!(parse_err(bad), "block at byte 1536 is not a ustar/GNU tar header");
    // A file where a directory is needed, and the reverse.
    let e = parse_err(raw_archive(&[(b"a", b"1"), (b"a/b", b"2")]));
    assert_eq!(e, "entry \"a/b\" (header at byte 1024): \"a\" is a file in the archive");
    let e = parse_err(raw_archive(&[(b"a/b", b"1"), (b"a", b"2")]));
    assert_eq!(e, "entry \"a\" (header at byte 1024): a directory of that name exists");
    // Non-UTF-8 names.
    let e = parse_err(raw_archive(&[(b"\xff\xfe", b"1")]));
    assert_eq!(e, "entry with header at byte 0: name is not UTF-8 or contains a NUL byte");
    // Garbage that is not a tar archive at all.
    assert_eq!(parse_err(vec![0x42; 4096]), "block at byte 0 is not a ustar/GNU tar header");
    assert_eq!(parse_err(Vec::new()), "truncated archive: it ends at byte 0 without the end-of-archive (zero) block");
}

#[test]
fn initrd_later_member_wins_and_names_may_fill_the_field() {
    // A 100-byte name has no NUL terminator in the field (legal ustar).
    let name = [b'n'; 100];
    let bytes = leak(raw_archive(&[(&name, b"first"), (&name, b"second")]));
    let vfs = Vfs::new();
    vfs.mount("/", Arc::new(Initrd::parse(bytes).unwrap())).unwrap();
    let path = alloc::format!("/{}", "n".repeat(100));
    assert_eq!(read_file(&vfs, &path).unwrap(), b"second");
}

#[test]
fn tar_numbers() {
    use crate::tar::parse_number;
    assert_eq!(parse_number(b"0000644\0"), Some(0o644));
    assert_eq!(parse_number(b"  644 \0\0"), Some(0o644));
    assert_eq!(parse_number(b"\0\0\0\0"), Some(0));
    assert_eq!(parse_number(b"12 3"), None);
    assert_eq!(parse_number(b"8"), None);
    assert_eq!(parse_number(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]), Some(0x1_0000));
    assert_eq!(parse_number(&[0xff; 12]), None, "negative base-256");
    assert_eq!(parse_number(&[0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), None);
}

#[test]
fn human_byte_counts() {
    assert_eq!(human_bytes(0), "0 B");
    assert_eq!(human_bytes(1023), "1023 B");
    assert_eq!(human_bytes(1536), "1.5 KiB");
    assert_eq!(human_bytes(1_300_000), "1.2 MiB");
    assert_eq!(human_bytes(64 << 20), "64.0 MiB");
    assert_eq!(human_bytes(3 << 30), "3.0 GiB");
}

// ---------------------------------------------------------------------------------------------------------
// FAT over a block device.

#[test]
fn fat_sync_all_survives_a_power_cut() {
    let disk = formatted(8 << 20);
    let vfs = fat_vfs(&disk);
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
    let free_before = vfs.stats("/data").unwrap().free_bytes;
    let mut f = vfs.open("/data/dir/../kv.log", opts().write(true).create(true)).unwrap();
    f.write_all(&data).unwrap();
    let flushes = disk.flushes.load(Ordering::Relaxed);
    f.sync_all().unwrap();
    // One flush makes the data durable, a second one the cleared dirty bit and FSInfo written after it.
    assert_eq!(disk.flushes.load(Ordering::Relaxed), flushes + 2, "sync_all issued device flushes");
    f.sync_all().unwrap();
    assert_eq!(disk.flushes.load(Ordering::Relaxed), flushes + 3, "nothing new to mark clean: one flush");
    drop(f);
    let after = disk.after_power_cut();
    assert!(!volume_dirty(&after), "a synced volume is clean for fsck");
    let vfs2 = fat_vfs(&after);
    assert_eq!(read_file(&vfs2, "/data/kv.log").unwrap(), data);
    assert_eq!(vfs2.metadata("/data/kv.log").unwrap().len, 100_000);
    // The FSInfo free count written at the sync (which a clean mount trusts) lost exactly the file's clusters.
    let cluster = u64::from(raw_fat(&after).cluster_size());
    let trusted = vfs2.stats("/data").unwrap().free_bytes;
    assert_eq!(free_before - trusted, 100_000u64.div_ceil(cluster) * cluster);
    // A write after the sync sets the dirty bit on the device; the handle keeps working across the remount.
    write_file(&vfs, "/data/more", b"more").unwrap();
    assert!(volume_dirty(&MemDisk::from_image(disk.current.lock().clone(), false)));
    assert!(!volume_dirty(&disk.after_power_cut()));
}

/// The library's own view of the FAT volume on `disk`.
fn raw_fat(disk: &Arc<MemDisk>) -> fatfs::FileSystem<crate::cache::Storage> {
    let cache = Arc::new(Mutex::new(crate::cache::SectorCache::new(disk.clone(), 64 * 1024)));
    fatfs::FileSystem::new(crate::cache::Storage::new(cache), fatfs::FsOptions::new()).unwrap()
}

/// Whether the FAT volume on `disk` has its dirty (unclean shutdown) bit set.
fn volume_dirty(disk: &Arc<MemDisk>) -> bool {
    raw_fat(disk).read_status_flags().unwrap().dirty()
}

#[test]
fn fat_without_sync_a_power_cut_loses_the_write() {
    let disk = formatted(8 << 20);
    let vfs = fat_vfs(&disk);
    write_file(&vfs, "/data/volatile", b"not synced").unwrap();
    // Written to the device (a remount sees it) but not flushed from its cache.
    assert_eq!(
        read_file(&fat_vfs(&MemDisk::from_image(disk.current.lock().clone(), false)), "/data/volatile").unwrap(),
        b"not synced"
    );
    assert_eq!(fat_vfs(&disk.after_power_cut()).metadata("/data/volatile"), Err(Error::NotFound));
    vfs.sync_all().unwrap();
    assert_eq!(read_file(&fat_vfs(&disk.after_power_cut()), "/data/volatile").unwrap(), b"not synced");
}

#[test]
fn fat_files_and_directories() {
    let disk = formatted(8 << 20);
    let vfs = fat_vfs(&disk);
    vfs.create_dir("/data/a").unwrap();
    vfs.create_dir("/data/b").unwrap();
    assert_eq!(vfs.create_dir("/data/a"), Err(Error::AlreadyExists));
    write_file(&vfs, "/data/a/Long File Name.txt", b"lfn").unwrap();
    write_file(&vfs, "/data/a/x", b"x").unwrap();
    assert_eq!(names(&vfs, "/data/a"), ["Long File Name.txt", "x"]);
    assert_eq!(read_file(&vfs, "/data/A/LONG FILE NAME.TXT").unwrap(), b"lfn", "FAT names ignore case");
    assert_eq!(vfs.open("/data/a/x", opts().write(true).create_new(true)).unwrap_err(), Error::AlreadyExists);
    assert_eq!(vfs.open("/data/a", opts().read(true)).unwrap_err(), Error::IsADirectory);
    assert_eq!(vfs.open("/data/a/x/y", opts().read(true)).unwrap_err(), Error::NotADirectory);
    assert_eq!(vfs.open("/data/a/bad:name", opts().write(true).create(true)).unwrap_err(), Error::InvalidPath);
    // Seek, overwrite, sparse extension, append, truncate.
    let mut f = vfs.open("/data/a/x", opts().read(true).write(true)).unwrap();
    f.seek(SeekFrom::Start(5000)).unwrap();
    f.write_all(b"end").unwrap();
    assert_eq!(f.metadata().unwrap().len, 5003);
    let mut v = Vec::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut v).unwrap();
    assert_eq!(v.len(), 5003);
    assert_eq!(&v[..1], b"x");
    assert!(v[1..5000].iter().all(|&b| b == 0));
    f.set_len(2).unwrap();
    drop(f);
    let mut ap = vfs.open("/data/a/x", opts().append(true)).unwrap();
    ap.write_all(b"yz").unwrap();
    drop(ap);
    assert_eq!(read_file(&vfs, "/data/a/x").unwrap(), b"x\0yz");
    // Errors.
    assert_eq!(vfs.remove_dir("/data/a"), Err(Error::DirectoryNotEmpty));
    assert_eq!(vfs.remove_dir("/data/a/x"), Err(Error::NotADirectory));
    assert_eq!(vfs.remove_file("/data/a"), Err(Error::IsADirectory));
    assert_eq!(vfs.remove_file("/data/zz"), Err(Error::NotFound));
    // Rename: replace, move between directories, directory move (its `..` follows), into itself.
    write_file(&vfs, "/data/a/y", b"new").unwrap();
    vfs.rename("/data/a/y", "/data/a/x").unwrap();
    assert_eq!(read_file(&vfs, "/data/a/x").unwrap(), b"new");
    vfs.rename("/data/a/x", "/data/b/x").unwrap();
    assert_eq!(vfs.rename("/data/b/x", "/data/a"), Err(Error::IsADirectory));
    vfs.create_dir("/data/a/sub").unwrap();
    write_file(&vfs, "/data/a/sub/s", b"s").unwrap();
    assert!(matches!(vfs.rename("/data/a", "/data/A/sub/z"), Err(Error::InvalidInput(_))));
    vfs.rename("/data/a/sub", "/data/b/sub").unwrap();
    assert_eq!(read_file(&vfs, "/data/b/sub/s").unwrap(), b"s");
    assert_eq!(dotdot_cluster(&disk, "b/sub"), first_cluster(&disk, "b"), ".. points at the new parent");
    vfs.rename("/data/b/sub", "/data/sub").unwrap();
    assert_eq!(dotdot_cluster(&disk, "sub"), 0, ".. of a directory in the root is cluster 0");
    vfs.remove_file("/data/a/Long File Name.txt").unwrap();
    vfs.remove_dir("/data/a").unwrap();
    assert_eq!(names(&vfs, "/data"), ["b", "sub"]);
    assert_eq!(names(&vfs, "/"), ["data"]);
    vfs.sync_all().unwrap();
    let vfs2 = fat_vfs(&disk.after_power_cut());
    assert_eq!(read_file(&vfs2, "/data/b/x").unwrap(), b"new");
    assert_eq!(read_file(&vfs2, "/data/sub/s").unwrap(), b"s");
}

/// The first cluster of the directory at `path`, from the library (its `.` entry).
fn first_cluster(disk: &Arc<MemDisk>, path: &str) -> u32 {
    raw_dir_entry(disk, path, 0)
}

/// The cluster in the `..` entry of the directory at `path`.
fn dotdot_cluster(disk: &Arc<MemDisk>, path: &str) -> u32 {
    raw_dir_entry(disk, path, 32)
}

fn raw_dir_entry(disk: &Arc<MemDisk>, path: &str, offset: u64) -> u32 {
    use fatfs::{Read, Seek};
    let fs = raw_fat(disk);
    let dir = fs.root_dir().open_dir(path).unwrap();
    let mut f = dir.as_file().unwrap().clone();
    f.seek(fatfs::SeekFrom::Start(offset)).unwrap();
    let mut e = [0u8; 32];
    f.read_exact(&mut e).unwrap();
    u32::from(u16::from_le_bytes([e[20], e[21]])) << 16 | u32::from(u16::from_le_bytes([e[26], e[27]]))
}

#[test]
fn fat_open_handles_follow_renames_and_fail_after_removal() {
    let disk = formatted(4 << 20);
    let vfs = fat_vfs(&disk);
    vfs.create_dir("/data/d").unwrap();
    write_file(&vfs, "/data/d/f", b"abc").unwrap();
    let mut f = vfs.open("/data/d/f", opts().read(true).write(true)).unwrap();
    vfs.rename("/data/d", "/data/e").unwrap();
    let mut buf = [0u8; 3];
    f.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"abc");
    f.write_all(b"def").unwrap();
    assert_eq!(read_file(&vfs, "/data/e/f").unwrap(), b"abcdef");
    vfs.remove_file("/data/e/f").unwrap();
    assert_eq!(f.read(&mut buf), Err(Error::NotFound));
    write_file(&vfs, "/data/e/f", b"other").unwrap();
    assert_eq!(f.write(b"x"), Err(Error::NotFound), "a stale handle never reaches the new file");
}

#[test]
fn fat_full_disk_is_no_space() {
    let disk = formatted(1 << 20);
    let vfs = fat_vfs(&disk);
    let free = vfs.stats("/data").unwrap().free_bytes;
    assert!(free > 900_000 && free < 1 << 20, "{free}");
    let big = vec![0x5a; 2 << 20];
    let mut f = vfs.open("/data/big", opts().write(true).create(true)).unwrap();
    assert_eq!(f.write_all(&big), Err(Error::NoSpace));
    let len = f.metadata().unwrap().len;
    assert_eq!(len, free, "the file got every free cluster");
    assert_eq!(vfs.stats("/data").unwrap().free_bytes, 0);
    assert_eq!(vfs.create_dir("/data/d"), Err(Error::NoSpace));
    drop(f);
    assert_eq!(read_file(&vfs, "/data/big").unwrap(), big[..len as usize]);
    vfs.remove_file("/data/big").unwrap();
    assert_eq!(vfs.stats("/data").unwrap().free_bytes, free);
    write_file(&vfs, "/data/small", b"fits again").unwrap();
}

#[test]
fn fat_device_errors_name_device_and_sector() {
    let disk = formatted(4 << 20);
    let vfs = fat_vfs(&disk);
    write_file(&vfs, "/data/f", &[1u8; 4096]).unwrap();
    disk.broken.store(true, Ordering::Relaxed);
    let e = read_file(&vfs, "/data/f").unwrap_err();
    let Error::Io { device, detail, .. } = &e else { panic!("{e:?}") };
    assert_eq!((device.as_str(), detail.as_str()), ("memdisk0", "medium error"));
    assert!(e.to_string().starts_with("memdisk0: I/O error at sector "), "{e}");
    disk.broken.store(false, Ordering::Relaxed);
    assert_eq!(read_file(&vfs, "/data/f").unwrap(), [1u8; 4096]);
}

#[test]
fn fat_on_a_read_only_device_refuses_writes() {
    let disk = formatted(4 << 20);
    write_file(&fat_vfs(&disk), "/data/f", b"ro").unwrap();
    let ro = MemDisk::from_image(disk.current.lock().clone(), true);
    let vfs = fat_vfs(&ro);
    assert_eq!(read_file(&vfs, "/data/f").unwrap(), b"ro");
    assert!(vfs.metadata("/data/f").unwrap().read_only);
    assert_eq!(write_file(&vfs, "/data/f", b"x"), Err(Error::PermissionDenied));
    assert_eq!(vfs.create_dir("/data/d"), Err(Error::PermissionDenied));
}

#[test]
fn fat_unmount_marks_the_volume_clean() {
    let disk = formatted(4 << 20);
    let vfs = fat_vfs(&disk);
    write_file(&vfs, "/data/f", b"x").unwrap();
    let fat = vfs.unmount("/data").unwrap();
    assert_eq!(fat.metadata(""), Err(Error::InvalidInput("the FAT filesystem was unmounted")));
    assert!(!volume_dirty(&disk.after_power_cut()), "clean-shutdown bit set");
}

#[test]
fn blank_disk_is_not_fat() {
    let e = FatFs::mount(MemDisk::new(1 << 20)).err().unwrap();
    assert_eq!(e, Error::Corrupt("memdisk0: no valid FAT boot sector (BPB) at sector 0".into()));
}

#[test]
fn boot_mounts_initrd_ramfs_and_fat() {
    let vfs = Vfs::new();
    let disk = formatted(8 << 20);
    let lines = mount_boot_on(&vfs, Some(leak(sample_archive())), vec![disk.clone() as Arc<dyn BlockDevice>]).unwrap();
    assert_eq!(lines[0], "/ initrd (5 files, 17 B) [1 links/devices skipped]");
    assert_eq!(lines[1], "/tmp ramfs");
    assert!(lines[2].starts_with("/data fat16 on memdisk0 (7.9 MiB, 7.9 MiB free"), "{}", lines[2]);
    let mut root = names(&vfs, "/");
    root.retain(|n| n.len() < 20);
    assert_eq!(root, ["data", "deep", "empty", "tmp", "www"]);
    write_file(&vfs, "/tmp/t", b"t").unwrap();
    write_file(&vfs, "/data/d", b"d").unwrap();
    assert_eq!(vfs.rename("/tmp/t", "/data/t"), Err(Error::CrossesMount));
    assert_eq!(write_file(&vfs, "/www/new", b"x"), Err(Error::PermissionDenied));

    // No initrd → an empty read-only root; a blank disk stays unmounted.
    let vfs = Vfs::new();
    let lines = mount_boot_on(&vfs, None, vec![MemDisk::new(1 << 20) as Arc<dyn BlockDevice>]).unwrap();
    assert_eq!(lines, ["/ initrd (0 files, 0 B)", "/tmp ramfs"]);
    assert_eq!(names(&vfs, "/"), ["tmp"]);
    assert_eq!(vfs.metadata("/data/x"), Err(Error::NotFound));

    // A bad initrd refuses to boot with the entry named.
    let e = mount_boot_on(&Vfs::new(), Some(leak(raw_archive(&[(b"../x", b"")]))), Vec::new()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "filesystem corrupt: initrd: entry \"../x\" (header at byte 0): \"..\" components are not allowed"
    );
}

/// A 16 MiB GPT disk like `images package` writes: an ESP (partition 1, empty) and, when `data`, a FAT data
/// partition 2 holding `/hello`.
fn packaged_disk(data: bool) -> Arc<MemDisk> {
    use crate::gpt::{Partition, EFI_SYSTEM, ZIRVIUM_DATA};
    let sectors = 16 * 2048;
    let mut parts =
        vec![Partition { index: 1, type_guid: EFI_SYSTEM, first_lba: 2048, last_lba: 6143, name: "EFI".into() }];
    if data {
        parts.push(Partition {
            index: 2,
            type_guid: ZIRVIUM_DATA,
            first_lba: 6144,
            last_lba: sectors - 2049,
            name: "zirvium-data".into(),
        });
    }
    let disk = MemDisk::from_image(crate::gpt::tests::gpt_image(sectors, &parts), false);
    if data {
        let part = Arc::new(crate::partition::PartitionDevice::new(disk.clone(), &parts[1]).unwrap());
        FatFs::format(part.clone()).unwrap();
        let vfs = Vfs::new();
        vfs.mount("/", Arc::new(FatFs::mount(part).unwrap())).unwrap();
        write_file(&vfs, "/hello", b"from the data partition").unwrap();
        vfs.unmount("/").unwrap();
    }
    disk
}

#[test]
fn boot_mounts_the_data_partition_of_a_gpt_disk() {
    let vfs = Vfs::new();
    let lines = mount_boot_on(&vfs, None, vec![packaged_disk(true) as Arc<dyn BlockDevice>]).unwrap();
    assert!(lines[2].starts_with("/data fat16 on memdisk0:gpt2 ("), "{}", lines[2]);
    assert_eq!(read_file(&vfs, "/data/hello").unwrap(), b"from the data partition");
    // The GPT and the ESP around it are untouched by FAT writes through the partition.
    write_file(&vfs, "/data/more", &[5u8; 100_000]).unwrap();
    vfs.unmount("/data").unwrap();

    // A boot disk without a data partition is skipped for the next disk (an unpartitioned FAT disk).
    let vfs = Vfs::new();
    let plain = formatted(8 << 20);
    let disks = vec![packaged_disk(false) as Arc<dyn BlockDevice>, plain as Arc<dyn BlockDevice>];
    let lines = mount_boot_on(&vfs, None, disks).unwrap();
    assert!(lines[2].starts_with("/data fat16 on memdisk0 ("), "{}", lines[2]);
    // Alone, it leaves /data unmounted.
    let lines = mount_boot_on(&Vfs::new(), None, vec![packaged_disk(false) as Arc<dyn BlockDevice>]).unwrap();
    assert_eq!(lines.len(), 2, "{lines:?}");
}

#[test]
fn damaged_primary_gpt_falls_back_to_the_backup() {
    let disk = packaged_disk(true);
    disk.current.lock()[512 + 24] ^= 0xff; // MyLBA of the primary header: its CRC no longer matches
    let parts = crate::gpt::partitions(disk.as_ref()).unwrap().unwrap();
    assert_eq!(parts.iter().map(|p| p.index).collect::<Vec<_>>(), [1, 2]);
    // Both damaged: the primary's error, and the disk is not used for /data.
    let last = (disk.info.capacity - 1) as usize * 512;
    disk.current.lock()[last + 24] ^= 0xff;
    let e = crate::gpt::partitions(disk.as_ref()).unwrap_err();
    assert!(matches!(e, crate::gpt::GptError::HeaderCrc { lba: 1, .. }), "{e}");
    let lines = mount_boot_on(&Vfs::new(), None, vec![disk as Arc<dyn BlockDevice>]).unwrap();
    assert_eq!(lines.len(), 2, "{lines:?}");
}

#[test]
fn partition_device_stays_inside_its_partition() {
    let disk = MemDisk::new(1 << 20);
    let p = crate::gpt::Partition {
        index: 4,
        type_guid: crate::gpt::ZIRVIUM_DATA,
        first_lba: 100,
        last_lba: 199,
        name: String::new(),
    };
    let dev = crate::partition::PartitionDevice::new(disk.clone(), &p).unwrap();
    assert_eq!((dev.info().capacity, dev.info().name.as_str()), (100, "memdisk0:gpt4"));
    libos::task::wait(dev.write(99, &[9u8; 512])).unwrap();
    assert_eq!(disk.current.lock()[199 * 512], 9);
    let e = libos::task::wait(dev.write(99, &[0u8; 1024])).unwrap_err();
    assert_eq!(
        e,
        libos::dev::BlockError::OutOfRange { device: "memdisk0:gpt4".into(), sector: 99, count: 2, capacity: 100 }
    );
    let mut buf = [0u8; 512];
    assert!(libos::task::wait(dev.read(100, &mut buf)).is_err());
    // A partition past the end of the disk is refused.
    let past = crate::gpt::Partition { last_lba: 4096, ..p };
    assert!(crate::partition::PartitionDevice::new(disk, &past).is_none());
}

// ---------------------------------------------------------------------------------------------------------
// Sector cache: write-behind runs and read-ahead windows against a plain byte model.

/// A deterministic pseudo-random sequence (64-bit LCG, Knuth MMIX constants).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn cache_coalesces_sequential_whole_sector_writes() {
    let disk = MemDisk::new(1 << 20);
    let mut cache = cache::SectorCache::new(disk.clone(), 64 * 1024);
    let data: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    // One cluster-sized (1 KiB) write at a time, as the FAT library does.
    for (i, c) in data.chunks(1024).enumerate() {
        assert_eq!(cache.write_at(4096 + i as u64 * 1024, c).unwrap(), 1024);
    }
    assert_eq!(disk.writes.load(Ordering::Relaxed), 0, "held in the write-behind run");
    cache.write_back().unwrap();
    assert_eq!(cache.stats().writes, 1, "one run of 256 KiB");
    assert_eq!(&disk.current.lock()[4096..4096 + data.len()], &data[..]);
    // Sequential reads of 1 KiB: the read-ahead window grows, so far fewer device reads than calls.
    let mut back = vec![0u8; data.len()];
    for (i, c) in back.chunks_mut(1024).enumerate() {
        assert_eq!(cache.read_at(4096 + i as u64 * 1024, c).unwrap(), 1024);
    }
    assert_eq!(back, data);
    assert!(cache.stats().reads < 16, "{:?}", cache.stats());
}

/// A device error on a write never makes the cache forget the write: the failed write-behind run, a failed
/// large write and failed dirty sectors are retried by the next sync, so a sync that succeeds after the fault
/// clears means the data is on the device (never a sync that succeeds over lost writes).
#[test]
fn cache_keeps_writes_the_device_failed_until_a_sync_succeeds() {
    let disk = MemDisk::new(4 << 20);
    let mut cache = cache::SectorCache::new(disk.clone(), 64 * 1024);
    let run: Vec<u8> = (0..8 * 1024).map(|i| (i % 251) as u8).collect();
    let big: Vec<u8> = (0..cache::WRITE_BEHIND_MAX).map(|i| (i % 241) as u8).collect();
    cache.write_at(100, b"partial sector").unwrap();
    cache.write_at(4096, &run).unwrap();
    assert_eq!(disk.writes.load(Ordering::Relaxed), 0, "both still in the cache");
    disk.broken.store(true, Ordering::Relaxed);
    assert!(cache.sync().is_err(), "the write-behind run fails");
    assert!(cache.write_at(2 << 20, &big).is_err(), "the pending run is retried first and fails again");
    let mut back = vec![0u8; run.len()];
    assert!(cache.read_at(4096, &mut back).is_err(), "a read sends the pending run first and fails with it");
    disk.broken.store(false, Ordering::Relaxed);
    assert_eq!(cache.write_at(2 << 20, &big).unwrap(), big.len());
    disk.broken.store(true, Ordering::Relaxed);
    assert!(cache.sync().is_err());
    disk.broken.store(false, Ordering::Relaxed);
    cache.sync().unwrap();
    let durable = disk.durable.lock();
    assert_eq!(&durable[4096..4096 + run.len()], &run[..], "the failed run reached the device");
    assert_eq!(&durable[100..114], b"partial sector", "the failed dirty sector reached the device");
    assert_eq!(&durable[2 << 20..(2 << 20) + big.len()], &big[..], "the failed large write reached the device");
}

#[test]
fn cache_matches_a_byte_model_under_mixed_access() {
    const SIZE: usize = 256 * 1024;
    let disk = MemDisk::new(SIZE);
    // 16 slots: evictions of dirty sectors happen all the time.
    let mut cache = cache::SectorCache::new(disk.clone(), 8 * 1024);
    let mut model = vec![0u8; SIZE];
    let mut rng = Lcg(7);
    let mut seq = 0u64;
    for round in 0..4000 {
        // Mostly runs that continue the previous access (read-ahead and write-behind), some random, some
        // partial sectors (the slot path), some large.
        let pos = match rng.below(4) {
            0 => rng.below(SIZE as u64),
            1 => rng.below(SIZE as u64 / 512) * 512,
            _ => seq,
        };
        let len = match rng.below(5) {
            0 => 1 + rng.below(700) as usize,
            1 => 64 * 1024,
            _ => 512 * (1 + rng.below(4) as usize),
        };
        let len = len.min(SIZE - pos as usize);
        seq = (pos + len as u64) % SIZE as u64;
        let at = pos as usize;
        if rng.below(2) == 0 {
            let buf: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
            assert_eq!(cache.write_at(pos, &buf).unwrap(), len);
            model[at..at + len].copy_from_slice(&buf);
        } else {
            let mut buf = vec![0u8; len];
            assert_eq!(cache.read_at(pos, &mut buf).unwrap(), len);
            assert!(buf == model[at..at + len], "round {round}: read of {len} bytes at {pos} differs");
        }
        if rng.below(50) == 0 {
            cache.write_back().unwrap();
            assert!(*disk.current.lock() == model, "round {round}: device differs after write_back");
        }
    }
    cache.sync().unwrap();
    assert!(*disk.durable.lock() == model);
}

#[test]
fn fat_reads_see_writes_through_other_handles() {
    let disk = formatted(4 << 20);
    let vfs = fat_vfs(&disk);
    let a: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    write_file(&vfs, "/data/f", &a).unwrap();
    let mut reader = vfs.open("/data/f", opts().read(true)).unwrap();
    let mut got = vec![0u8; a.len()];
    reader.read_exact(&mut got).unwrap();
    assert_eq!(got, a);
    // Overwrite the middle and grow the file through another handle; the reader's extent map is stale.
    let mut writer = vfs.open("/data/f", opts().write(true)).unwrap();
    writer.seek(SeekFrom::Start(100_000)).unwrap();
    writer.write_all(&[9u8; 250_000]).unwrap();
    let mut want = a.clone();
    want.truncate(100_000);
    want.extend_from_slice(&[9u8; 250_000]);
    reader.seek(SeekFrom::Start(0)).unwrap();
    let mut got = vec![0u8; want.len() + 10];
    let mut n = 0;
    while let Ok(k @ 1..) = reader.read(&mut got[n..]) {
        n += k;
    }
    assert_eq!(&got[..n], &want[..]);
    // Shrink: reads stop at the new end.
    writer.set_len(1000).unwrap();
    reader.seek(SeekFrom::Start(900)).unwrap();
    let mut tail = [0u8; 500];
    assert_eq!(reader.read(&mut tail).unwrap(), 100);
    assert_eq!(&tail[..100], &want[900..1000]);
    // Removed: the open reader fails instead of reading freed clusters.
    drop(writer);
    vfs.remove_file("/data/f").unwrap();
    assert_eq!(reader.read(&mut tail), Err(Error::NotFound));
}

#[test]
fn cache_evicting_a_dirty_sector_never_loses_to_an_older_write_behind_run() {
    let disk = MemDisk::new(1 << 20);
    let mut cache = cache::SectorCache::new(disk.clone(), 8 * 1024); // 16 slots
    let mut one = [0u8; 1];
    cache.read_at(0, &mut one).unwrap(); // slots 0..8
    cache.read_at(8 * 512, &mut one).unwrap(); // slots 8..16: full
    cache.write_at(0, &[1u8; 512]).unwrap(); // write-behind run, slot 0 refreshed
    cache.write_at(10, &[2u8]).unwrap(); // slot 0 dirty and newer than the run
    for s in 1..16u64 {
        cache.read_at(s * 512, &mut one).unwrap(); // slot 0 becomes the least recently used
    }
    cache.read_at(100 * 512, &mut one).unwrap(); // a miss evicts slot 0
    cache.write_back().unwrap();
    let mut want = [1u8; 512];
    want[10] = 2;
    assert_eq!(&disk.current.lock()[..512], &want[..]);
}

#[test]
fn fat_listing_skips_names_no_path_can_reach() {
    // Found by the fat fuzz target: a corrupted short name holding `/` was listed as a directory entry.
    let disk = formatted(256 * 1024);
    let fat = FatFs::mount(disk.clone()).unwrap();
    fat.create_file("/AB.TXT").unwrap();
    fat.create_file("/KEEP.TXT").unwrap();
    fat.sync().unwrap();
    drop(fat);
    let mut image = disk.current.lock().clone();
    let at = image.windows(11).position(|w| w == b"AB      TXT").expect("the short name is on disk");
    image[at + 1] = b'/';
    let fat = FatFs::mount(MemDisk::from_image(image, false)).unwrap();
    let names: Vec<String> = fat.read_dir("/").unwrap().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["KEEP.TXT"]);
}

fn u16_at(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// Where a FAT12/16 image keeps things (BPB fields, bytes): sector size, sectors per cluster, reserved sectors,
/// FAT count and size, root directory and data area offsets.
struct Layout {
    sector: usize,
    per_cluster: usize,
    reserved: usize,
    fats: usize,
    fat_sectors: usize,
    root: usize,
    data: usize,
}

impl Layout {
    fn of(image: &[u8]) -> Layout {
        let (sector, reserved, fats, fat_sectors) =
            (u16_at(image, 11), u16_at(image, 14), usize::from(image[16]), u16_at(image, 22));
        let root = (reserved + fats * fat_sectors) * sector;
        let data = root + u16_at(image, 17) * 32;
        Layout { sector, per_cluster: usize::from(image[13]), reserved, fats, fat_sectors, root, data }
    }

    /// Byte offset of the root directory entry with short name `name`.
    fn root_entry(&self, image: &[u8], name: &[u8; 11]) -> usize {
        image[self.root..self.data].chunks(32).position(|e| &e[..11] == name).expect("entry") * 32 + self.root
    }
}

/// A FAT16 volume whose directory `/LOOP` has a cluster chain that points back at itself and no end-of-directory
/// entry: the image and the directory's first cluster.
fn fat16_with_looping_dir() -> Vec<u8> {
    let disk = formatted(16 << 20);
    let fat = FatFs::mount(disk.clone()).unwrap();
    fat.create_dir("/LOOP").unwrap();
    fat.sync().unwrap();
    drop(fat);
    let mut image = disk.current.lock().clone();
    assert_eq!(&image[54..62], b"FAT16   ");
    let l = Layout::of(&image);
    let (sector, per_cluster, reserved, fats, fat_sectors, data) =
        (l.sector, l.per_cluster, l.reserved, l.fats, l.fat_sectors, l.data);
    let entry = l.root_entry(&image, b"LOOP       ");
    let cluster = u16_at(&image, entry + 26);
    for f in 0..fats {
        let at = (reserved + f * fat_sectors) * sector + cluster * 2;
        image[at..at + 2].copy_from_slice(&(cluster as u16).to_le_bytes());
    }
    let start = data + (cluster - 2) * per_cluster * sector;
    for slot in image[start + 64..start + per_cluster * sector].chunks_mut(32) {
        slot[0] = 0xe5; // deleted: never the end of the directory
    }
    image
}

#[test]
fn fat_cluster_chain_loops_are_errors_not_hangs() {
    let fat = FatFs::mount(MemDisk::from_image(fat16_with_looping_dir(), false)).unwrap();
    assert!(matches!(fat.read_dir("/LOOP"), Err(Error::Corrupt(_))), "a looping directory chain is corrupt");
    assert!(fat.read_dir("/").is_ok());
}

/// A FAT16 volume with `/A.TXT` of `len` bytes whose cluster chain's entry for cluster `from` (its `from`th
/// cluster, 0 = first) points back at its first cluster: a loop.
fn fat16_with_looping_file(len: usize, from: usize) -> (Vec<u8>, Vec<u8>) {
    let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
    let disk = formatted(16 << 20);
    let fat = FatFs::mount(disk.clone()).unwrap();
    let mut f = fat.create_file("/A.TXT").unwrap();
    f.write_at(0, &data).unwrap();
    f.sync_all().unwrap();
    drop((f, fat));
    let mut image = disk.current.lock().clone();
    let l = Layout::of(&image);
    let first = u16_at(&image, l.root_entry(&image, b"A       TXT") + 26);
    let entry_at = |f: usize, cluster: usize| (l.reserved + f * l.fat_sectors) * l.sector + cluster * 2;
    let mut cluster = first;
    for _ in 0..from {
        cluster = u16_at(&image, entry_at(0, cluster));
    }
    for f in 0..l.fats {
        let at = entry_at(f, cluster);
        image[at..at + 2].copy_from_slice(&(first as u16).to_le_bytes());
    }
    (image, data)
}

#[test]
fn fat_file_chain_loops_end() {
    // Found by the fat fuzz target: a file whose chain loops after its last cluster hung every read (the chain
    // was followed past the file's end forever).
    let (image, data) = fat16_with_looping_file(5000, 2);
    let fat = FatFs::mount(MemDisk::from_image(image, false)).unwrap();
    let mut f = fat.open_file("/A.TXT").unwrap();
    let mut back = vec![0u8; data.len()];
    assert_eq!(f.read_at(0, &mut back).unwrap(), data.len());
    assert_eq!(back, data, "the loop lies beyond the file's bytes");
    // A loop inside the file's bytes ends too (the bytes repeat: the volume is corrupt, the reader is not stuck).
    let (image, data) = fat16_with_looping_file(5000, 0);
    let fat = FatFs::mount(MemDisk::from_image(image, false)).unwrap();
    let mut f = fat.open_file("/A.TXT").unwrap();
    let mut back = vec![0u8; data.len()];
    assert_eq!(f.read_at(0, &mut back).unwrap(), data.len());
}

#[test]
fn fat_looping_chain_under_a_huge_size_is_corrupt() {
    // Found by the fat fuzz target's slowest inputs: a looping chain under a size field of nearly 4 GiB was
    // followed to that size (2 million steps here, a run recorded for each) before the file could be read.
    let (mut image, _) = fat16_with_looping_file(5000, 0);
    let entry = Layout::of(&image).root_entry(&image, b"A       TXT");
    image[entry + 28..entry + 32].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    let fat = FatFs::mount(MemDisk::from_image(image, false)).unwrap();
    let mut f = fat.open_file("/A.TXT").unwrap();
    let err = f.read_at(0, &mut [0; 512]).unwrap_err();
    assert!(matches!(&err, Error::Corrupt(m) if m.contains("loops")), "{err}");
}

#[test]
fn fat_entry_naming_a_reserved_cluster_is_an_error() {
    // Found by the fat fuzz target: a file whose first cluster is 1 (reserved) overflowed computing its sector.
    let disk = formatted(256 * 1024);
    let fat = FatFs::mount(disk.clone()).unwrap();
    let mut f = fat.create_file("/A.TXT").unwrap();
    f.write_at(0, &[7; 3000]).unwrap();
    f.sync_all().unwrap();
    drop((f, fat));
    let mut image = disk.current.lock().clone();
    let entry = Layout::of(&image).root_entry(&image, b"A       TXT");
    image[entry + 26..entry + 28].copy_from_slice(&1u16.to_le_bytes());
    let fat = FatFs::mount(MemDisk::from_image(image, false)).unwrap();
    let mut f = fat.open_file("/A.TXT").unwrap();
    assert!(f.read_at(0, &mut [0; 512]).is_err(), "reading a reserved cluster fails");
}
