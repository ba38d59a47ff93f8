//! Files and directories behind descriptors, over the kernel's VFS (`fs::vfs()`: `/` initrd, `/tmp` ramfs,
//! `/data` FAT): `open` flag decoding, `stat` records, `lseek`, and `getdents64` records. Closing a file that
//! was written makes it durable (`sync_all`: data, directory entry and FAT on the disk, cache flushed),
//! because the pinned `std`'s `File::sync_all` returns `EINVAL` on Hermit without calling the kernel
//! (`library/std/src/sys/fs/hermit.rs`, `fsync`).
#![forbid(unsafe_code)]

use crate::abi::{self, dirent64, stat, timespec};
use crate::errno::{AbiResult, Errno};
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};
use spin::Mutex;

/// What an `open` flags word asks for. Errors: `EINVAL` for an access mode of 3.
pub fn open_options(flags: i32) -> AbiResult<fs::OpenOptions> {
    let mut o = fs::OpenOptions::new();
    match flags & abi::O_ACCMODE {
        abi::O_RDONLY => o.read(true),
        abi::O_WRONLY => o.write(true),
        abi::O_RDWR => o.read(true).write(true),
        _ => return Err(Errno::EINVAL),
    };
    if flags & abi::O_APPEND != 0 {
        o.append(true);
    }
    if flags & abi::O_TRUNC != 0 {
        o.truncate(true);
    }
    if flags & abi::O_CREAT != 0 {
        if flags & abi::O_EXCL != 0 {
            o.create_new(true);
        } else {
            o.create(true);
        }
    }
    Ok(o)
}

/// `path` made absolute: as is when it starts with `/`, else under `cwd` (the `cwd=` kernel option; std on
/// Hermit has no working directory of its own, so this is where relative paths of unmodified programs land).
pub fn absolute(path: &str, cwd: &str) -> String {
    if path.starts_with('/') {
        return String::from(path);
    }
    let base = cwd.trim_end_matches('/');
    alloc::format!("{base}/{path}")
}

/// The working directory for relative paths: the `cwd=` kernel option, `/` without one.
pub fn cwd() -> &'static str {
    #[cfg(target_os = "none")]
    return zirvium::env::kernel_option("cwd").unwrap_or("/");
    #[cfg(not(target_os = "none"))]
    "/"
}

/// A `stat` record for `m`: regular files `0o644` (`0o444` read-only), directories `0o755`, one 512-byte
/// block per started 512 bytes, the modification time in all three times.
pub fn stat_of(m: &fs::Metadata, ino: u64) -> stat {
    let (kind, perm) = if m.is_dir() { (abi::S_IFDIR, 0o755) } else { (abi::S_IFREG, 0o644) };
    let perm = if m.read_only() { perm & 0o555 } else { perm };
    let t = timespec { tv_sec: m.modified().map_or(0, |s| i64::try_from(s).unwrap_or(i64::MAX)), tv_nsec: 0 };
    stat {
        st_ino: ino,
        st_nlink: 1,
        st_mode: kind | perm,
        st_size: i64::try_from(m.len()).unwrap_or(i64::MAX),
        st_blksize: 4096,
        st_blocks: i64::try_from(m.len().div_ceil(512)).unwrap_or(i64::MAX),
        st_atim: t,
        st_mtim: t,
        st_ctim: t,
        ..stat::default()
    }
}

/// A stable inode number for a path (FNV-1a; the VFS has no inode numbers).
pub fn ino_of(path: &str) -> u64 {
    path.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)).max(1)
}

/// An open regular file.
pub struct OpenFile {
    file: Mutex<fs::File>,
    wrote: AtomicBool,
}

impl OpenFile {
    /// Wraps an opened VFS file.
    pub fn new(file: fs::File) -> Self {
        Self { file: Mutex::new(file), wrote: AtomicBool::new(false) }
    }

    /// Reads at the position. Errors: `EBADF` (not opened for reading), `EIO`.
    pub fn read(&self, buf: &mut [u8]) -> AbiResult<usize> {
        Ok(self.file.lock().read(buf)?)
    }

    /// Writes at the position (at the end with `O_APPEND`). Errors: `EBADF`, `ENOSPC`, `EFBIG`, `EROFS`, `EIO`.
    pub fn write(&self, buf: &[u8]) -> AbiResult<usize> {
        let n = self.file.lock().write(buf)?;
        self.wrote.store(true, Ordering::Relaxed);
        Ok(n)
    }

    /// Moves the position (`SEEK_SET`/`SEEK_CUR`/`SEEK_END`). Errors: `EINVAL` (bad whence, before 0).
    pub fn lseek(&self, offset: isize, whence: i32) -> AbiResult<isize> {
        let pos = match whence {
            abi::SEEK_SET => fs::SeekFrom::Start(u64::try_from(offset).map_err(|_| Errno::EINVAL)?),
            abi::SEEK_CUR => fs::SeekFrom::Current(offset as i64),
            abi::SEEK_END => fs::SeekFrom::End(offset as i64),
            _ => return Err(Errno::EINVAL),
        };
        let new = self.file.lock().seek(pos)?;
        isize::try_from(new).map_err(|_| Errno::EINVAL)
    }

    /// The file's `stat` record.
    pub fn stat(&self) -> AbiResult<stat> {
        let f = self.file.lock();
        Ok(stat_of(&f.metadata()?, ino_of(f.path())))
    }
}

impl Drop for OpenFile {
    /// The last close makes written data durable (see the module docs); failures are logged, as `close`
    /// cannot report them any more.
    fn drop(&mut self) {
        if self.wrote.load(Ordering::Relaxed) {
            let f = self.file.lock();
            if let Err(e) = f.sync_all() {
                log::warn!("std: closing {}: {e}", f.path());
            }
        }
    }
}

/// An open directory: a snapshot of its entries and how many `getdents64` handed out.
pub struct OpenDir {
    path: String,
    entries: Vec<(String, bool)>,
    pos: Mutex<usize>,
}

impl OpenDir {
    /// Reads directory `path`. Errors: `ENOENT`, `ENOTDIR`, `EIO`.
    pub fn open(path: &str) -> AbiResult<Self> {
        let entries = fs::vfs()
            .read_dir(path)?
            .filter_map(Result::ok)
            .map(|e| (String::from(e.file_name()), e.metadata().is_ok_and(|m| m.is_dir())))
            .collect();
        Ok(Self { path: String::from(path), entries, pos: Mutex::new(0) })
    }

    /// The directory's `stat` record.
    pub fn stat(&self) -> AbiResult<stat> {
        Ok(stat_of(&fs::vfs().metadata(&self.path)?, ino_of(&self.path)))
    }

    /// Fills `buf` with one [`dirent64`] per remaining entry (each a whole struct, `d_reclen` =
    /// `size_of::<dirent64>()`), all or none: the pinned `std` reads the whole directory in one call and
    /// retries with a larger buffer on `EINVAL`. Returns the bytes written, 0 at the end. Names longer than 255
    /// bytes are cut.
    pub fn getdents64(&self, buf: &mut [u8]) -> AbiResult<usize> {
        let mut pos = self.pos.lock();
        let rest = self.entries.get(*pos..).unwrap_or(&[]);
        let rec = core::mem::size_of::<dirent64>();
        let need = rest.len() * rec;
        if need > buf.len() {
            return Err(Errno::EINVAL);
        }
        for (i, (name, is_dir)) in rest.iter().enumerate() {
            let mut d = dirent64 {
                d_ino: ino_of(name),
                d_off: ((*pos + i + 1) * rec) as i64,
                d_reclen: rec as u16,
                d_type: if *is_dir { abi::DT_DIR } else { abi::DT_REG },
                d_name: [0; 256],
            };
            let n = name.len().min(255);
            d.d_name[..n].copy_from_slice(&name.as_bytes()[..n]);
            encode_dirent(&d, &mut buf[i * rec..(i + 1) * rec]);
        }
        *pos += rest.len();
        Ok(need)
    }
}

/// The bytes of `d` in its C layout (little-endian), into `out` (`size_of::<dirent64>()` bytes).
fn encode_dirent(d: &dirent64, out: &mut [u8]) {
    out.fill(0);
    out[0..8].copy_from_slice(&d.d_ino.to_le_bytes());
    out[8..16].copy_from_slice(&d.d_off.to_le_bytes());
    out[16..18].copy_from_slice(&d.d_reclen.to_le_bytes());
    out[18] = d.d_type;
    out[19..19 + 256].copy_from_slice(&d.d_name);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_start_at_the_working_directory() {
        assert_eq!(absolute("/etc/x", "/data"), "/etc/x");
        assert_eq!(absolute("test.ini", "/data"), "/data/test.ini");
        assert_eq!(absolute("a/b", "/"), "/a/b");
        assert_eq!(absolute("x", "/data/"), "/data/x");
    }

    #[test]
    fn open_flags_decode_like_posix() {
        assert_eq!(open_options(abi::O_RDONLY).unwrap(), *fs::OpenOptions::new().read(true));
        assert_eq!(
            open_options(abi::O_WRONLY | abi::O_CREAT | abi::O_TRUNC).unwrap(),
            *fs::OpenOptions::new().write(true).create(true).truncate(true)
        );
        assert_eq!(
            open_options(abi::O_RDWR | abi::O_CREAT | abi::O_EXCL).unwrap(),
            *fs::OpenOptions::new().read(true).write(true).create_new(true)
        );
        assert_eq!(open_options(3), Err(Errno::EINVAL));
    }

    #[test]
    fn stat_records_carry_type_size_and_time() {
        let m = fs::Metadata { len: 1000, file_type: fs::FileType::File, read_only: true, modified: Some(7) };
        let s = stat_of(&m, 9);
        assert_eq!(s.st_mode, abi::S_IFREG | 0o444);
        assert_eq!((s.st_size, s.st_blocks, s.st_mtim.tv_sec, s.st_ino), (1000, 2, 7, 9));
        let d = fs::Metadata { len: 0, file_type: fs::FileType::Dir, read_only: false, modified: None };
        assert_eq!(stat_of(&d, 1).st_mode & abi::S_IFMT, abi::S_IFDIR);
    }

    #[test]
    fn dirents_are_whole_structs_all_or_none() {
        let dir = OpenDir {
            path: "/d".into(),
            entries: alloc::vec![("a.txt".into(), false), ("sub".into(), true)],
            pos: Mutex::new(0),
        };
        let rec = core::mem::size_of::<dirent64>();
        let mut small = alloc::vec![0u8; rec];
        assert_eq!(dir.getdents64(&mut small), Err(Errno::EINVAL), "two entries do not fit in one record");
        let mut buf = alloc::vec![0u8; 4 * rec];
        assert_eq!(dir.getdents64(&mut buf), Ok(2 * rec));
        assert_eq!(u16::from_le_bytes([buf[16], buf[17]]) as usize, rec);
        assert_eq!(buf[18], abi::DT_REG);
        assert_eq!(&buf[19..25], b"a.txt\0");
        assert_eq!(buf[rec + 18], abi::DT_DIR);
        assert_eq!(&buf[rec + 19..rec + 23], b"sub\0");
        assert_eq!(dir.getdents64(&mut buf), Ok(0), "the end");
    }
}
