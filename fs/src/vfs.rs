//! The virtual filesystem: a mount table (longest-prefix match on whole path components), the [`FileSystem`]
//! and [`FileHandle`] traits backends implement, and the open-file object [`File`] with a position, like a POSIX
//! open file description (POSIX.1-2017 `open()`, `read()`, `write()`, `lseek()`, `rename()`, `unlink()`,
//! `rmdir()`, `mkdir()`, `fsync()`).
//!
//! The VFS does everything that is the same for every backend — path normalisation ([`crate::path`]), mount
//! resolution, read-only mounts, trailing-slash rules, open-option logic (create / create_new / truncate /
//! append), the file position — so a backend only implements primitives on paths relative to its root.

use crate::error::{Error, Result};
use crate::path::{self, Normalized};
use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use spin::Mutex;

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

impl FileType {
    /// Whether this is a regular file.
    pub fn is_file(self) -> bool {
        self == Self::File
    }

    /// Whether this is a directory.
    pub fn is_dir(self) -> bool {
        self == Self::Dir
    }
}

/// What `stat` tells about a file or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metadata {
    /// Size (bytes); 0 for directories.
    pub len: u64,
    /// File or directory.
    pub file_type: FileType,
    /// Writes are refused: the mount is read-only, or the entry has the FAT `ATTR_READ_ONLY` bit.
    pub read_only: bool,
    /// Last modification, seconds since the Unix epoch (UTC); `None` when unknown (no wall clock when it was
    /// written, or a FAT timestamp before 1980).
    pub modified: Option<u64>,
}

impl Metadata {
    /// Size (bytes); 0 for directories.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the size is 0.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// File or directory.
    pub fn file_type(&self) -> FileType {
        self.file_type
    }

    /// Whether this is a regular file.
    pub fn is_file(&self) -> bool {
        self.file_type.is_file()
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.file_type.is_dir()
    }

    /// Whether writes are refused (read-only mount or read-only entry).
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Last modification (seconds since the Unix epoch, UTC), when known.
    pub fn modified(&self) -> Option<u64> {
        self.modified
    }
}

/// One entry of [`Vfs::read_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    name: String,
    path: String,
    metadata: Metadata,
}

impl DirEntry {
    /// The entry's name (one path component).
    pub fn file_name(&self) -> &str {
        &self.name
    }

    /// The entry's absolute, normalised path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The entry's metadata as read with the directory (never fails; `Result` as in `std`).
    pub fn metadata(&self) -> Result<Metadata> {
        Ok(self.metadata)
    }

    /// File or directory (never fails; `Result` as in `std`).
    pub fn file_type(&self) -> Result<FileType> {
        Ok(self.metadata.file_type)
    }
}

/// The entries of a directory, read at the call (a snapshot). Items are `Result` as in `std::fs::ReadDir`.
#[derive(Debug)]
pub struct ReadDir {
    entries: alloc::vec::IntoIter<DirEntry>,
}

impl Iterator for ReadDir {
    type Item = Result<DirEntry>;
    fn next(&mut self) -> Option<Self::Item> {
        self.entries.next().map(Ok)
    }
}

/// How to open a file; the same flags and rules as `std::fs::OpenOptions` (POSIX `O_RDONLY`, `O_WRONLY`,
/// `O_RDWR`, `O_APPEND`, `O_TRUNC`, `O_CREAT`, `O_CREAT|O_EXCL`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// Reading allowed.
    pub read: bool,
    /// Writing allowed (at the position).
    pub write: bool,
    /// Every write goes to the end of the file (implies writing).
    pub append: bool,
    /// An existing file is cut to 0 bytes (needs `write`, not allowed with `append`).
    pub truncate: bool,
    /// A missing file is created (needs `write` or `append`).
    pub create: bool,
    /// The file is created and must not exist yet (needs `write` or `append`; `create`/`truncate` ignored).
    pub create_new: bool,
}

impl OpenOptions {
    /// No access at all; set at least one of read/write/append.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets read access.
    pub fn read(&mut self, on: bool) -> &mut Self {
        self.read = on;
        self
    }

    /// Sets write access.
    pub fn write(&mut self, on: bool) -> &mut Self {
        self.write = on;
        self
    }

    /// Sets append mode.
    pub fn append(&mut self, on: bool) -> &mut Self {
        self.append = on;
        self
    }

    /// Sets truncation of an existing file.
    pub fn truncate(&mut self, on: bool) -> &mut Self {
        self.truncate = on;
        self
    }

    /// Sets creation of a missing file.
    pub fn create(&mut self, on: bool) -> &mut Self {
        self.create = on;
        self
    }

    /// Sets exclusive creation.
    pub fn create_new(&mut self, on: bool) -> &mut Self {
        self.create_new = on;
        self
    }

    fn writes(&self) -> bool {
        self.write || self.append
    }

    /// The rules of `std::fs::OpenOptions` (Linux `open(2)` EINVAL cases).
    fn check(&self) -> Result<()> {
        if !self.read && !self.writes() {
            return Err(Error::InvalidInput("open needs read, write or append access"));
        }
        if (self.truncate || self.create || self.create_new) && !self.writes() {
            return Err(Error::InvalidInput("create and truncate need write or append access"));
        }
        if self.truncate && self.append && !self.create_new {
            return Err(Error::InvalidInput("truncate and append cannot be combined"));
        }
        Ok(())
    }
}

/// Where [`File::seek`] moves the position to (as `std::io::SeekFrom`, POSIX `SEEK_SET`/`SEEK_END`/`SEEK_CUR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekFrom {
    /// This many bytes from the start.
    Start(u64),
    /// The file size plus this many bytes.
    End(i64),
    /// The current position plus this many bytes.
    Current(i64),
}

/// Space on a filesystem, for logs and `df`-like reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsStats {
    /// Capacity (bytes); for ramfs the byte limit (`u64::MAX` when unlimited), for the initrd its data size.
    pub total_bytes: u64,
    /// Free space (bytes).
    pub free_bytes: u64,
    /// Regular files (counted where cheap: initrd, ramfs; `None` on FAT).
    pub files: Option<u64>,
}

/// A filesystem the VFS can mount. Paths are relative to the filesystem's root and already normalised by the
/// VFS: components joined by single `/`, none empty, `.` or `..`, none longer than 255 bytes, `""` for the root.
/// Methods take `&self`; a backend locks its own state.
pub trait FileSystem: Send + Sync {
    /// How the mount line describes this filesystem, e.g. `initrd (12 files, 1.2 MiB)`,
    /// `fat32 on virtio-blk@mmio:0xfeb00000 (64 MiB, 63 MiB free)`.
    fn describe(&self) -> String;

    /// Whether every write is refused with [`Error::PermissionDenied`].
    fn read_only(&self) -> bool;

    /// Metadata of `path`. Errors: [`Error::NotFound`], [`Error::NotADirectory`] (a component on the way is a
    /// file), device errors.
    fn metadata(&self, path: &str) -> Result<Metadata>;

    /// Opens the existing regular file `path`. Errors: as `metadata`, plus [`Error::IsADirectory`].
    fn open_file(&self, path: &str) -> Result<Box<dyn FileHandle>>;

    /// Creates the regular file `path`, which must not exist, and opens it. Errors: [`Error::AlreadyExists`],
    /// [`Error::NotFound`]/[`Error::NotADirectory`] for the parent, [`Error::NoSpace`], [`Error::NameTooLong`],
    /// [`Error::InvalidPath`], [`Error::PermissionDenied`].
    fn create_file(&self, path: &str) -> Result<Box<dyn FileHandle>>;

    /// The entries of directory `path` (without `.` and `..`): name and metadata. Errors: as `metadata`, plus
    /// [`Error::NotADirectory`] when `path` is a file.
    fn read_dir(&self, path: &str) -> Result<Vec<(String, Metadata)>>;

    /// Creates directory `path`. Errors: as `create_file`.
    fn create_dir(&self, path: &str) -> Result<()>;

    /// Removes regular file `path`. Errors: [`Error::NotFound`], [`Error::IsADirectory`], ...
    fn remove_file(&self, path: &str) -> Result<()>;

    /// Removes empty directory `path` (never the root). Errors: [`Error::NotFound`], [`Error::NotADirectory`],
    /// [`Error::DirectoryNotEmpty`], ...
    fn remove_dir(&self, path: &str) -> Result<()>;

    /// Renames `from` to `to` with POSIX `rename()` semantics: an existing `to` is replaced when both are files
    /// or `to` is an empty directory and `from` a directory; `from == to` (the same entry) succeeds and does
    /// nothing. The VFS has already refused moving a directory into itself and renaming the root. Errors:
    /// [`Error::NotFound`], [`Error::IsADirectory`] (file over a directory), [`Error::NotADirectory`] (directory
    /// over a file), [`Error::DirectoryNotEmpty`], ...
    fn rename(&self, from: &str, to: &str) -> Result<()>;

    /// Space figures.
    fn stats(&self) -> Result<FsStats>;

    /// Writes everything buffered to the device and flushes the device's write cache.
    fn sync(&self) -> Result<()> {
        Ok(())
    }

    /// Makes the on-disk state clean for the next mount (e.g. FAT: FSInfo sector, clean-shutdown bit) after a
    /// [`sync`](Self::sync). Later operations fail.
    fn unmount(&self) -> Result<()> {
        self.sync()
    }
}

/// An open regular file of a backend. The VFS keeps the position; the backend reads and writes at offsets.
pub trait FileHandle: Send {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many (0 at or after the end).
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize>;

    /// Writes `buf` at `offset`, filling any gap after the old end with zeros; returns how many bytes were written:
    /// all of `buf`, or fewer (≥ 1) when the filesystem filled up part-way — the next call then reports the error.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<usize>;

    /// Current size (bytes).
    fn size(&self) -> Result<u64>;

    /// Cuts or extends (with zeros) the file to `len` bytes.
    fn set_len(&self, len: u64) -> Result<()>;

    /// Metadata of the open file.
    fn metadata(&self) -> Result<Metadata>;

    /// Returns after the file's data and metadata are durable on the device (see the backend's contract).
    fn sync_all(&self) -> Result<()>;
}

/// An open file: a backend handle, a position, and the access it was opened with.
pub struct File {
    handle: Box<dyn FileHandle>,
    path: String,
    pos: u64,
    read: bool,
    write: bool,
    append: bool,
}

impl core::fmt::Debug for File {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("File").field("path", &self.path).field("pos", &self.pos).finish()
    }
}

/// Chunk used by `read_to_end` when the size is unknown or the file grows (bytes).
const READ_CHUNK: usize = 16 * 1024;

impl File {
    /// The normalised absolute path the file was opened with.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Reads up to `buf.len()` bytes at the position and advances it; `Ok(0)` at the end of the file.
    /// Errors: [`Error::InvalidInput`] when not opened for reading; device errors.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        if !self.read {
            return Err(Error::InvalidInput("file not opened for reading"));
        }
        let n = self.handle.read_at(self.pos, buf)?;
        self.pos += n as u64;
        Ok(n)
    }

    /// Fills `buf` completely. Errors: [`Error::InvalidInput`] ("unexpected end of file") when the file ends
    /// first (the position is then at the end); as [`read`](Self::read).
    pub fn read_exact(&mut self, mut buf: &mut [u8]) -> Result<()> {
        while !buf.is_empty() {
            let n = self.read(buf)?;
            if n == 0 {
                return Err(Error::InvalidInput("unexpected end of file"));
            }
            buf = &mut buf[n..];
        }
        Ok(())
    }

    /// Reads from the position to the end of the file, appending to `out`; returns the bytes read. Reserves the
    /// remaining size up front, so reading a whole file allocates once. Errors: [`Error::NoSpace`] when the heap
    /// cannot hold the data; as [`read`](Self::read) (`out` keeps what was read before the error).
    pub fn read_to_end(&mut self, out: &mut Vec<u8>) -> Result<usize> {
        let start = out.len();
        let hint = usize::try_from(self.handle.size()?.saturating_sub(self.pos)).map_err(|_| Error::NoSpace)?;
        out.try_reserve(hint).map_err(|_| Error::NoSpace)?;
        loop {
            if out.len() == out.capacity() {
                // Most files end where the size said: probe with a small buffer before growing the vector.
                let mut probe = [0u8; 64];
                let n = self.read(&mut probe)?;
                if n == 0 {
                    return Ok(out.len() - start);
                }
                out.try_reserve(READ_CHUNK).map_err(|_| Error::NoSpace)?;
                out.extend_from_slice(&probe[..n]);
                continue;
            }
            let old = out.len();
            out.resize(out.capacity(), 0);
            match self.read(&mut out[old..]) {
                Ok(0) => {
                    out.truncate(old);
                    return Ok(out.len() - start);
                }
                Ok(n) => out.truncate(old + n),
                Err(e) => {
                    out.truncate(old);
                    return Err(e);
                }
            }
        }
    }

    /// Reads from the position to the end as UTF-8 text, appending to `out`. Errors: [`Error::InvalidInput`]
    /// when the bytes are not UTF-8 (nothing is appended then); as [`read`](Self::read).
    pub fn read_to_string(&mut self, out: &mut String) -> Result<usize> {
        let mut bytes = Vec::new();
        let n = self.read_to_end(&mut bytes)?;
        let s = core::str::from_utf8(&bytes).map_err(|_| Error::InvalidInput("file is not valid UTF-8"))?;
        out.push_str(s);
        Ok(n)
    }

    /// Writes `buf` at the position (at the end in append mode) and advances the position; returns the bytes
    /// written (fewer than `buf.len()` only when the filesystem filled up part-way). Errors:
    /// [`Error::InvalidInput`] when not opened for writing, [`Error::NoSpace`], [`Error::FileTooLarge`],
    /// [`Error::PermissionDenied`], device errors.
    pub fn write(&mut self, buf: &[u8]) -> Result<usize> {
        if !self.write && !self.append {
            return Err(Error::InvalidInput("file not opened for writing"));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        if self.append {
            self.pos = self.handle.size()?;
        }
        let n = self.handle.write_at(self.pos, buf)?;
        self.pos += n as u64;
        Ok(n)
    }

    /// Writes all of `buf`. Errors: as [`write`](Self::write) (part of `buf` may have been written).
    pub fn write_all(&mut self, mut buf: &[u8]) -> Result<()> {
        while !buf.is_empty() {
            let n = self.write(buf)?;
            if n == 0 {
                return Err(Error::NoSpace);
            }
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Moves the position; returns the new position (bytes from the start). A position past the end is allowed:
    /// a later write fills the gap with zeros. Errors: [`Error::InvalidInput`] for a position before byte 0 or
    /// past `u64::MAX`.
    pub fn seek(&mut self, pos: SeekFrom) -> Result<u64> {
        let new = match pos {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.handle.size()?.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let new = new.ok_or(Error::InvalidInput("seek to a position before byte 0 or past 2^64"))?;
        self.pos = new;
        Ok(new)
    }

    /// The current position (bytes from the start).
    pub fn stream_position(&self) -> u64 {
        self.pos
    }

    /// Cuts or extends (with zeros) the file to `len` bytes; the position is unchanged. Errors:
    /// [`Error::InvalidInput`] when not opened for writing; as [`write`](Self::write).
    pub fn set_len(&self, len: u64) -> Result<()> {
        if !self.write && !self.append {
            return Err(Error::InvalidInput("file not opened for writing"));
        }
        self.handle.set_len(len)
    }

    /// Metadata of the open file.
    pub fn metadata(&self) -> Result<Metadata> {
        self.handle.metadata()
    }

    /// Returns once the file's data and metadata are durable on the device: for FAT on a block device, after
    /// the data, the directory entry and the FAT reached the device and a device cache flush completed. A no-op
    /// on ramfs and the initrd (nothing there survives the VM).
    pub fn sync_all(&self) -> Result<()> {
        self.handle.sync_all()
    }
}

/// One mount: a normalised absolute path and the filesystem there.
struct Mount {
    path: String,
    fs: Arc<dyn FileSystem>,
}

/// A mount table and the operations on absolute paths.
pub struct Vfs {
    mounts: Mutex<Vec<Mount>>,
}

impl Default for Vfs {
    fn default() -> Self {
        Self::new()
    }
}

/// A path resolved to its mount.
struct Resolved {
    fs: Arc<dyn FileSystem>,
    /// The mount point (normalised absolute path).
    mount: String,
    /// The normalised absolute path.
    abs: Normalized,
    /// `abs` relative to the mount's root.
    rel: String,
}

impl Resolved {
    fn writable(&self) -> Result<()> {
        if self.fs.read_only() {
            Err(Error::PermissionDenied)
        } else {
            Ok(())
        }
    }

    /// POSIX §4.13: a path ending in `/` must name a directory.
    fn check_must_be_dir(&self, meta: &Metadata) -> Result<()> {
        if self.abs.must_be_dir && !meta.is_dir() {
            Err(Error::NotADirectory)
        } else {
            Ok(())
        }
    }
}

impl Vfs {
    /// An empty mount table: every path is [`Error::NotFound`] until something is mounted at `/`.
    pub const fn new() -> Self {
        Self { mounts: Mutex::new(Vec::new()) }
    }

    /// Mounts `fs` at `path` (normalised; it need not exist in the parent filesystem — mount points show up in
    /// their parent's listing). Errors: [`Error::AlreadyExists`] when something is mounted there; path errors.
    pub fn mount(&self, path: &str, fs: Arc<dyn FileSystem>) -> Result<()> {
        let n = path::normalize(path)?;
        let mut mounts = self.mounts.lock();
        if mounts.iter().any(|m| m.path == n.path) {
            return Err(Error::AlreadyExists);
        }
        mounts.push(Mount { path: n.path, fs });
        Ok(())
    }

    /// Unmounts the filesystem at `path` after [`FileSystem::unmount`]; returns it. Errors: [`Error::NotFound`]
    /// when nothing is mounted there; the backend's unmount errors (it stays mounted then).
    pub fn unmount(&self, path: &str) -> Result<Arc<dyn FileSystem>> {
        let n = path::normalize(path)?;
        let fs = {
            let mounts = self.mounts.lock();
            mounts.iter().find(|m| m.path == n.path).map(|m| m.fs.clone()).ok_or(Error::NotFound)?
        };
        fs.unmount()?;
        let mut mounts = self.mounts.lock();
        mounts.retain(|m| m.path != n.path);
        Ok(fs)
    }

    /// The mounts as `(mount point, description)`, in mount order.
    pub fn mounts(&self) -> Vec<(String, String)> {
        let list: Vec<(String, Arc<dyn FileSystem>)> =
            self.mounts.lock().iter().map(|m| (m.path.clone(), m.fs.clone())).collect();
        list.into_iter().map(|(p, fs)| (p, fs.describe())).collect()
    }

    /// [`FileSystem::sync`] on every mount; returns the first error after trying all.
    pub fn sync_all(&self) -> Result<()> {
        let list: Vec<Arc<dyn FileSystem>> = self.mounts.lock().iter().map(|m| m.fs.clone()).collect();
        let mut first = Ok(());
        for fs in list {
            if let Err(e) = fs.sync() {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    /// Space figures of the filesystem holding `path`.
    pub fn stats(&self, path: &str) -> Result<FsStats> {
        self.resolve(path)?.fs.stats()
    }

    fn resolve(&self, path: &str) -> Result<Resolved> {
        let abs = path::normalize(path)?;
        let mounts = self.mounts.lock();
        let mut best: Option<(&Mount, &str)> = None;
        for m in mounts.iter() {
            if let Some(rel) = path::below(&abs.path, &m.path) {
                if best.is_none_or(|(b, _)| m.path.len() > b.path.len()) {
                    best = Some((m, rel));
                }
            }
        }
        let (m, rel) = best.ok_or(Error::NotFound)?;
        let (fs, mount, rel) = (m.fs.clone(), m.path.clone(), String::from(rel));
        drop(mounts);
        Ok(Resolved { fs, mount, abs, rel })
    }

    /// Opens `path` with `opts` (see [`OpenOptions`]). Errors: [`Error::InvalidInput`] for invalid option
    /// combinations; [`Error::PermissionDenied`] for write access on a read-only mount; [`Error::NotFound`]
    /// (missing and not creating); [`Error::AlreadyExists`] (`create_new`); [`Error::IsADirectory`];
    /// [`Error::NotADirectory`] (a file named with a trailing `/`); the backend's errors.
    pub fn open(&self, path: &str, opts: &OpenOptions) -> Result<File> {
        opts.check()?;
        let r = self.resolve(path)?;
        if opts.writes() {
            r.writable()?;
        }
        let creating = opts.create || opts.create_new;
        let handle = match r.fs.metadata(&r.rel) {
            Ok(meta) if meta.is_dir() => return Err(Error::IsADirectory),
            Ok(meta) => {
                r.check_must_be_dir(&meta)?;
                if opts.create_new {
                    return Err(Error::AlreadyExists);
                }
                let h = r.fs.open_file(&r.rel)?;
                if opts.truncate {
                    h.set_len(0)?;
                }
                h
            }
            Err(Error::NotFound) if creating => {
                if r.abs.must_be_dir {
                    // Linux open(2): O_CREAT on a name ending in '/' is EISDIR.
                    return Err(Error::IsADirectory);
                }
                r.fs.create_file(&r.rel)?
            }
            Err(e) => return Err(e),
        };
        let pos = if opts.append { handle.size()? } else { 0 };
        Ok(File {
            handle,
            path: r.abs.path,
            pos,
            read: opts.read,
            write: opts.write || opts.append,
            append: opts.append,
        })
    }

    /// Metadata of `path`. Errors: [`Error::NotFound`], [`Error::NotADirectory`], device errors.
    pub fn metadata(&self, path: &str) -> Result<Metadata> {
        let r = self.resolve(path)?;
        let mut meta = r.fs.metadata(&r.rel)?;
        r.check_must_be_dir(&meta)?;
        meta.read_only |= r.fs.read_only();
        Ok(meta)
    }

    /// The entries of directory `path` (without `.` and `..`), plus mount points directly inside it that the
    /// directory itself does not list. Errors: [`Error::NotFound`], [`Error::NotADirectory`], device errors.
    pub fn read_dir(&self, path: &str) -> Result<ReadDir> {
        let r = self.resolve(path)?;
        let ro = r.fs.read_only();
        let mut entries: Vec<DirEntry> =
            r.fs.read_dir(&r.rel)?
                .into_iter()
                .map(|(name, mut metadata)| {
                    metadata.read_only |= ro;
                    let path = path::join(&r.abs.path, &name);
                    DirEntry { name, path, metadata }
                })
                .collect();
        let children: Vec<(String, Arc<dyn FileSystem>)> = {
            let mounts = self.mounts.lock();
            mounts
                .iter()
                .filter(|m| m.path != r.mount)
                .filter_map(|m| {
                    let (parent, name) = m.path.rsplit_once('/')?;
                    let parent = if parent.is_empty() { "/" } else { parent };
                    (parent == r.abs.path).then(|| (String::from(name), m.fs.clone()))
                })
                .collect()
        };
        for (name, fs) in children {
            if !entries.iter().any(|e| e.name == name) {
                let metadata = Metadata {
                    len: 0,
                    file_type: FileType::Dir,
                    read_only: fs.read_only(),
                    modified: fs.metadata("").ok().and_then(|m| m.modified),
                };
                let path = path::join(&r.abs.path, &name);
                entries.push(DirEntry { name, path, metadata });
            }
        }
        Ok(ReadDir { entries: entries.into_iter() })
    }

    /// Creates directory `path` (its parent must exist). Errors: [`Error::AlreadyExists`] (also for a mount
    /// point), [`Error::NotFound`], [`Error::NotADirectory`], [`Error::PermissionDenied`], [`Error::NoSpace`].
    pub fn create_dir(&self, path: &str) -> Result<()> {
        let r = self.resolve(path)?;
        if r.rel.is_empty() {
            return Err(Error::AlreadyExists);
        }
        r.writable()?;
        r.fs.create_dir(&r.rel)
    }

    /// Creates directory `path` and any missing parents; succeeds when it already exists as a directory.
    /// Errors: [`Error::NotADirectory`] when a component is a file; as [`create_dir`](Self::create_dir).
    pub fn create_dir_all(&self, path: &str) -> Result<()> {
        let n = path::normalize(path)?;
        let mut prefix = String::new();
        for c in n.components() {
            prefix.push('/');
            prefix.push_str(c);
            match self.create_dir(&prefix) {
                Ok(()) => {}
                Err(Error::AlreadyExists) => {
                    if !self.metadata(&prefix)?.is_dir() {
                        return Err(Error::NotADirectory);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Removes regular file `path`. Errors: [`Error::NotFound`], [`Error::IsADirectory`],
    /// [`Error::NotADirectory`] (trailing `/`), [`Error::PermissionDenied`], device errors.
    pub fn remove_file(&self, path: &str) -> Result<()> {
        let r = self.resolve(path)?;
        if r.rel.is_empty() {
            return Err(Error::IsADirectory);
        }
        if r.abs.must_be_dir {
            let meta = r.fs.metadata(&r.rel)?;
            return Err(if meta.is_dir() { Error::IsADirectory } else { Error::NotADirectory });
        }
        r.writable()?;
        r.fs.remove_file(&r.rel)
    }

    /// Removes empty directory `path`. Errors: [`Error::NotFound`], [`Error::NotADirectory`],
    /// [`Error::DirectoryNotEmpty`], [`Error::InvalidInput`] for a mount point, [`Error::PermissionDenied`].
    pub fn remove_dir(&self, path: &str) -> Result<()> {
        let r = self.resolve(path)?;
        if r.rel.is_empty() {
            return Err(Error::InvalidInput("a mount point cannot be removed"));
        }
        r.writable()?;
        r.fs.remove_dir(&r.rel)
    }

    /// Renames `from` to `to` with POSIX `rename()` semantics (see [`FileSystem::rename`]). Errors:
    /// [`Error::CrossesMount`] when they are on different mounts; [`Error::InvalidInput`] for a mount point or
    /// a directory moved into itself; [`Error::PermissionDenied`]; the backend's errors.
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        let src = self.resolve(from)?;
        let dst = self.resolve(to)?;
        if src.rel.is_empty() || dst.rel.is_empty() {
            return Err(Error::InvalidInput("a mount point cannot be renamed or replaced"));
        }
        if src.mount != dst.mount {
            return Err(Error::CrossesMount);
        }
        let meta = src.fs.metadata(&src.rel)?;
        src.check_must_be_dir(&meta)?;
        if dst.abs.must_be_dir && !meta.is_dir() {
            return Err(Error::NotADirectory);
        }
        if src.abs.path == dst.abs.path {
            return Ok(());
        }
        if path::below(&dst.abs.path, &src.abs.path).is_some() {
            return Err(Error::InvalidInput("a directory cannot be moved into itself"));
        }
        src.writable()?;
        src.fs.rename(&src.rel, &dst.rel)
    }
}

/// The POSIX `rename()` rules for an existing destination, shared by the backends: a file may replace a file,
/// a directory may replace an empty directory. `dst_is_empty_dir` is asked only when both are directories.
pub fn check_replace(src_is_dir: bool, dst: &Metadata, dst_is_empty_dir: impl FnOnce() -> Result<bool>) -> Result<()> {
    match (src_is_dir, dst.is_dir()) {
        (false, true) => Err(Error::IsADirectory),
        (true, false) => Err(Error::NotADirectory),
        (true, true) if !dst_is_empty_dir()? => Err(Error::DirectoryNotEmpty),
        _ => Ok(()),
    }
}
