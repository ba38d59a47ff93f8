//! Errors of the filesystem layer: one [`Error`] enum for path resolution, the VFS and every backend, each with
//! `Display` text a person can act on. Kinds follow POSIX.1-2017 `<errno.h>` (ENOENT, EEXIST, ENOTDIR, EISDIR,
//! ENOTEMPTY, EROFS, ENOSPC, ENAMETOOLONG, EXDEV, EIO, EFBIG, EINVAL).

use alloc::format;
use alloc::string::String;
use core::fmt;
use libos::dev::BlockError;

/// Result of a filesystem operation.
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// What went wrong in a filesystem operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The path, or a directory on the way to it, does not exist (ENOENT).
    NotFound,
    /// The path already exists: `create_new`, `create_dir` on an existing name (EEXIST).
    AlreadyExists,
    /// A component on the way is a file, or a file was named with a trailing `/` (ENOTDIR).
    NotADirectory,
    /// A file operation named a directory (open, `remove_file`, rename of a file over a directory) (EISDIR).
    IsADirectory,
    /// `remove_dir` or a rename over a directory that still has entries (ENOTEMPTY).
    DirectoryNotEmpty,
    /// A write to a read-only mount (the initrd at `/`) or a read-only device (EROFS).
    PermissionDenied,
    /// The filesystem (or, for ramfs, the heap or its byte limit) has no room for the data (ENOSPC).
    NoSpace,
    /// A path component is longer than [`crate::path::NAME_MAX`] (255) bytes, or the whole path longer than
    /// [`crate::path::PATH_MAX`] (4096) bytes; or a name the backend cannot store in full (ENAMETOOLONG).
    NameTooLong,
    /// The path is empty, contains a NUL byte, or names something the backend cannot store (a FAT name with
    /// `\ : * ? " < > |`).
    InvalidPath,
    /// A rename whose source and destination are on different mounts (EXDEV): copy, then remove the source.
    CrossesMount,
    /// The block device failed a request: which device, the request's first sector, and the device's words.
    Io {
        /// Device name, e.g. "virtio-blk@mmio:0xfeb00000".
        device: String,
        /// First sector of the failed request (device sectors).
        sector: u64,
        /// The device's error text.
        detail: String,
    },
    /// On-disk or in-archive structures are invalid (a FAT boot sector or chain, a tar header).
    Corrupt(String),
    /// The file would exceed the largest size the filesystem can hold (FAT: 4 GiB − 1 byte) (EFBIG).
    FileTooLarge,
    /// The call is not valid for this handle or these arguments, e.g. a write to a file opened read-only, a seek
    /// before byte 0, `create` without write access, removing a mount point (EINVAL/EBADF/EBUSY).
    InvalidInput(&'static str),
}

impl Error {
    /// Converts a block-device error of a request starting at `request_sector` into [`Error::Io`] (or
    /// [`Error::PermissionDenied`] for a read-only device).
    pub fn from_block(e: &BlockError, request_sector: u64) -> Self {
        let (device, sector, detail) = match e {
            BlockError::ReadOnly { .. } => return Self::PermissionDenied,
            BlockError::OutOfRange { device, sector, count, capacity } => {
                (device, *sector, format!("{count} sectors exceed the capacity of {capacity} sectors"))
            }
            BlockError::Io { device, sector, detail } => (device, *sector, detail.clone()),
            BlockError::Misaligned { device, len, sector_size } => (
                device,
                request_sector,
                format!("buffer of {len} bytes is not a multiple of the {sector_size}-byte sector"),
            ),
            BlockError::Unsupported { device, what } => (device, request_sector, format!("{what} not supported")),
            BlockError::Protocol { device, detail } => {
                (device, request_sector, format!("protocol violation: {detail}"))
            }
        };
        Self::Io { device: device.clone(), sector, detail }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound => f.write_str("no such file or directory"),
            Self::AlreadyExists => f.write_str("file exists"),
            Self::NotADirectory => f.write_str("not a directory"),
            Self::IsADirectory => f.write_str("is a directory"),
            Self::DirectoryNotEmpty => f.write_str("directory not empty"),
            Self::PermissionDenied => f.write_str("read-only filesystem"),
            Self::NoSpace => f.write_str("no space left on the filesystem"),
            Self::NameTooLong => {
                f.write_str("name too long (a component may have 255 bytes, a path 4096, FAT names 255 UTF-16 units)")
            }
            Self::InvalidPath => f.write_str(
                "invalid path (empty, contains a NUL byte, or a name the filesystem cannot store, e.g. FAT \\:*?\"<>|)",
            ),
            Self::CrossesMount => f.write_str("rename across mount points; copy the file and remove the source"),
            Self::Io { device, sector, detail } => write!(f, "{device}: I/O error at sector {sector}: {detail}"),
            Self::Corrupt(detail) => write!(f, "filesystem corrupt: {detail}"),
            Self::FileTooLarge => f.write_str("file too large for the filesystem (FAT holds at most 4 GiB - 1 byte)"),
            Self::InvalidInput(what) => f.write_str(what),
        }
    }
}

impl core::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_errors_name_device_and_sector() {
        let e = BlockError::Io { device: "vda".into(), sector: 7, detail: "medium error".into() };
        let fe = Error::from_block(&e, 3);
        assert_eq!(fe, Error::Io { device: "vda".into(), sector: 7, detail: "medium error".into() });
        assert_eq!(fe.to_string(), "vda: I/O error at sector 7: medium error");
        let p = BlockError::Protocol { device: "vda".into(), detail: "bad id".into() };
        assert_eq!(Error::from_block(&p, 42).to_string(), "vda: I/O error at sector 42: protocol violation: bad id");
        assert_eq!(Error::from_block(&BlockError::ReadOnly { device: "vda".into() }, 0), Error::PermissionDenied);
    }
}
