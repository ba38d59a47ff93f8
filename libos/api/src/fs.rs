//! Files, with the shape of `std::fs` (synchronous; `Read`/`Write`/`Seek` are inherent methods since `no_std` has
//! no `std::io` traits). Paths are `&str`, absolute (a relative path starts at `/`); `.`/`..` and repeated
//! slashes are resolved lexically (POSIX.1-2017 §4.13, no symbolic links).
//!
//! What is mounted at boot (see the `fs` crate):
//! - `/` — the initrd: the tar archive given as the first boot module (`images run --initrd`), read-only;
//!   an empty read-only root without one.
//! - `/tmp` — ramfs: read-write, in memory, gone when the VM stops.
//! - `/data` — the FAT filesystem of the first disk (`images run --disk`), when it has one.
//!
//! Durability: on `/data`, [`File::sync_all`](crate::fs::File::sync_all) returns after the file's data and metadata reached the disk and
//! a disk cache flush completed; other calls write to the disk when they return but the disk may still cache
//! the data. A disk operation blocks the calling task and every other task until it completes.
//!
//! ```no_run
//! use zirvium::fs::{self, OpenOptions};
//! fn start() -> Result<(), fs::Error> {
//!     let _page = fs::read_to_string("/www/index.html")?;
//!     let mut log = OpenOptions::new().append(true).create(true).open("/data/log")?;
//!     log.write_all(b"started\n")?;
//!     log.sync_all()
//! }
//! ```

use alloc::string::String;
use alloc::vec::Vec;

pub use ::fs::{human_bytes, DirEntry, Error, FileType, FsStats, Metadata, ReadDir, SeekFrom};

/// Result of a file operation.
pub type Result<T, E = Error> = core::result::Result<T, E>;

fn vfs() -> &'static ::fs::Vfs {
    ::fs::vfs()
}

/// An open file, like `std::fs::File`: a position plus the access it was opened with. Closed when dropped.
#[derive(Debug)]
pub struct File(::fs::File);

impl File {
    /// Opens an existing file for reading. Errors: [`Error::NotFound`], [`Error::IsADirectory`],
    /// [`Error::NotADirectory`], path errors.
    pub fn open(path: impl AsRef<str>) -> Result<File> {
        OpenOptions::new().read(true).open(path)
    }

    /// Opens a file for writing, creating it or cutting it to 0 bytes. Errors: [`Error::PermissionDenied`]
    /// on a read-only mount, [`Error::NotFound`] when the directory does not exist, [`Error::NoSpace`], ...
    pub fn create(path: impl AsRef<str>) -> Result<File> {
        OpenOptions::new().write(true).create(true).truncate(true).open(path)
    }

    /// Creates a new file for reading and writing; fails with [`Error::AlreadyExists`] when it exists.
    pub fn create_new(path: impl AsRef<str>) -> Result<File> {
        OpenOptions::new().read(true).write(true).create_new(true).open(path)
    }

    /// A new [`OpenOptions`] (all off).
    pub fn options() -> OpenOptions {
        OpenOptions::new()
    }

    /// Reads up to `buf.len()` bytes at the position; `Ok(0)` at the end. Errors: [`Error::InvalidInput`] when
    /// not opened for reading; disk errors.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.0.read(buf)
    }

    /// Fills `buf`, or fails with [`Error::InvalidInput`] ("unexpected end of file").
    pub fn read_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        self.0.read_exact(buf)
    }

    /// Reads to the end, appending to `buf`; returns the bytes read.
    pub fn read_to_end(&mut self, buf: &mut Vec<u8>) -> Result<usize> {
        self.0.read_to_end(buf)
    }

    /// Reads to the end as UTF-8, appending to `buf`; [`Error::InvalidInput`] when it is not UTF-8.
    pub fn read_to_string(&mut self, buf: &mut String) -> Result<usize> {
        self.0.read_to_string(buf)
    }

    /// Writes `buf` at the position (at the end in append mode); returns the bytes written (fewer only when the
    /// disk filled up part-way). Errors: [`Error::InvalidInput`] when not opened for writing,
    /// [`Error::NoSpace`], [`Error::FileTooLarge`], disk errors.
    pub fn write(&mut self, buf: &[u8]) -> Result<usize> {
        self.0.write(buf)
    }

    /// Writes all of `buf`.
    pub fn write_all(&mut self, buf: &[u8]) -> Result<()> {
        self.0.write_all(buf)
    }

    /// Does nothing, as `std::fs::File::flush`: writes are not buffered in the file; use
    /// [`sync_all`](Self::sync_all) for durability.
    pub fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    /// Moves the position; returns it (bytes from the start). Past the end is allowed (a write there fills
    /// the gap with zeros). Errors: [`Error::InvalidInput`] before byte 0.
    pub fn seek(&mut self, pos: SeekFrom) -> Result<u64> {
        self.0.seek(pos)
    }

    /// Moves the position to the start.
    pub fn rewind(&mut self) -> Result<()> {
        self.0.seek(SeekFrom::Start(0)).map(drop)
    }

    /// The position (bytes from the start).
    pub fn stream_position(&mut self) -> Result<u64> {
        Ok(self.0.stream_position())
    }

    /// Returns after the file's data and metadata are durable on the disk (`/data`: written and the disk cache
    /// flushed). A no-op on `/tmp` and `/`.
    pub fn sync_all(&self) -> Result<()> {
        self.0.sync_all()
    }

    /// As [`sync_all`](Self::sync_all) (FAT keeps no metadata worth skipping).
    pub fn sync_data(&self) -> Result<()> {
        self.0.sync_all()
    }

    /// Cuts or extends (with zeros) the file to `size` bytes. Errors: [`Error::InvalidInput`] when not opened
    /// for writing; as [`write`](Self::write).
    pub fn set_len(&self, size: u64) -> Result<()> {
        self.0.set_len(size)
    }

    /// Size, type, read-only flag and modification time of the open file.
    pub fn metadata(&self) -> Result<Metadata> {
        self.0.metadata()
    }
}

/// How to open a file, like `std::fs::OpenOptions`.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions(::fs::OpenOptions);

impl OpenOptions {
    /// All options off; set at least one of read/write/append.
    pub fn new() -> Self {
        Self::default()
    }

    /// Read access.
    pub fn read(&mut self, read: bool) -> &mut Self {
        self.0.read(read);
        self
    }

    /// Write access.
    pub fn write(&mut self, write: bool) -> &mut Self {
        self.0.write(write);
        self
    }

    /// Every write goes to the end of the file (implies write access).
    pub fn append(&mut self, append: bool) -> &mut Self {
        self.0.append(append);
        self
    }

    /// Cut an existing file to 0 bytes (needs write access; not with append).
    pub fn truncate(&mut self, truncate: bool) -> &mut Self {
        self.0.truncate(truncate);
        self
    }

    /// Create the file when missing (needs write or append).
    pub fn create(&mut self, create: bool) -> &mut Self {
        self.0.create(create);
        self
    }

    /// Create the file; fail with [`Error::AlreadyExists`] when it exists (needs write or append).
    pub fn create_new(&mut self, create_new: bool) -> &mut Self {
        self.0.create_new(create_new);
        self
    }

    /// Opens `path` with these options. Errors: [`Error::InvalidInput`] for an invalid combination (as
    /// `std`), [`Error::PermissionDenied`] for write access on a read-only mount, [`Error::NotFound`],
    /// [`Error::AlreadyExists`], [`Error::IsADirectory`], ...
    pub fn open(&self, path: impl AsRef<str>) -> Result<File> {
        vfs().open(path.as_ref(), &self.0).map(File)
    }
}

/// The entries of a directory (without `.` and `..`; mount points inside it included).
pub fn read_dir(path: impl AsRef<str>) -> Result<ReadDir> {
    vfs().read_dir(path.as_ref())
}

/// Creates a directory; its parent must exist. Errors: [`Error::AlreadyExists`], [`Error::NotFound`],
/// [`Error::PermissionDenied`], [`Error::NoSpace`].
pub fn create_dir(path: impl AsRef<str>) -> Result<()> {
    vfs().create_dir(path.as_ref())
}

/// Creates a directory and its missing parents; fine when it exists.
pub fn create_dir_all(path: impl AsRef<str>) -> Result<()> {
    vfs().create_dir_all(path.as_ref())
}

/// Removes a file. Errors: [`Error::NotFound`], [`Error::IsADirectory`], [`Error::PermissionDenied`].
pub fn remove_file(path: impl AsRef<str>) -> Result<()> {
    vfs().remove_file(path.as_ref())
}

/// Removes an empty directory. Errors: [`Error::NotFound`], [`Error::DirectoryNotEmpty`],
/// [`Error::NotADirectory`], [`Error::PermissionDenied`].
pub fn remove_dir(path: impl AsRef<str>) -> Result<()> {
    vfs().remove_dir(path.as_ref())
}

/// Renames `from` to `to`, replacing a file (or an empty directory when `from` is one) at `to`, as POSIX
/// `rename()`. Errors: [`Error::CrossesMount`] between mounts (copy instead), [`Error::NotFound`],
/// [`Error::IsADirectory`], [`Error::DirectoryNotEmpty`], [`Error::PermissionDenied`], ...
pub fn rename(from: impl AsRef<str>, to: impl AsRef<str>) -> Result<()> {
    vfs().rename(from.as_ref(), to.as_ref())
}

/// Metadata of `path`. Errors: [`Error::NotFound`], [`Error::NotADirectory`].
pub fn metadata(path: impl AsRef<str>) -> Result<Metadata> {
    vfs().metadata(path.as_ref())
}

/// Whether `path` exists (`Ok(false)` for [`Error::NotFound`]; other errors are returned).
pub fn exists(path: impl AsRef<str>) -> Result<bool> {
    match vfs().metadata(path.as_ref()) {
        Ok(_) => Ok(true),
        Err(Error::NotFound) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The whole file as bytes.
pub fn read(path: impl AsRef<str>) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    File::open(path)?.read_to_end(&mut v)?;
    Ok(v)
}

/// The whole file as UTF-8 text ([`Error::InvalidInput`] when it is not UTF-8).
pub fn read_to_string(path: impl AsRef<str>) -> Result<String> {
    let mut s = String::new();
    File::open(path)?.read_to_string(&mut s)?;
    Ok(s)
}

/// Writes `contents` as the whole file, creating or truncating it. Not durable by itself on `/data`: open
/// the file and call [`File::sync_all`] for that.
pub fn write(path: impl AsRef<str>, contents: impl AsRef<[u8]>) -> Result<()> {
    File::create(path)?.write_all(contents.as_ref())
}

/// Writes every mounted filesystem's buffered data to its disk and flushes the disk caches.
pub fn sync() -> Result<()> {
    vfs().sync_all()
}

/// Space on the filesystem mounted at or above `path` (bytes: capacity, free; file count where cheap), like
/// `statvfs(3)`. Errors: [`Error::NotFound`] when nothing is mounted there.
pub fn stats(path: impl AsRef<str>) -> Result<FsStats> {
    vfs().stats(path.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_mounted_on_the_host() {
        assert_eq!(File::open("/x").unwrap_err(), Error::NotFound);
        assert_eq!(exists("/x"), Ok(false));
        assert_eq!(read("").unwrap_err(), Error::InvalidPath);
        assert!(matches!(OpenOptions::new().open("/x"), Err(Error::InvalidInput(_))));
    }
}
