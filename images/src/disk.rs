//! Raw disk images for the guest's `/data` mount: `images disk create --size 64M [--from DIR] FILE` formats a
//! FAT file system with the cluster size of [`cluster_bytes`] (FAT12, FAT16 or FAT32 as the resulting cluster
//! count requires; Microsoft "FAT: General Overview of On-Disk Format" §3.5) and copies a directory tree into it.
//! The result is checked by `fsck.fat -n` in the tests.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Smallest disk `images disk create` makes (bytes): below this FAT's own overhead leaves no room.
pub const MIN_DISK_BYTES: u64 = 1 << 20;

/// Largest cluster [`cluster_bytes`] picks (bytes).
pub const MAX_CLUSTER_BYTES: u32 = 16 * 1024;

/// Fewest clusters [`cluster_bytes`] aims for, so small disks still hold a few thousand files.
pub const MIN_CLUSTERS: u64 = 8192;

/// The cluster size (bytes) for a disk of `size` bytes: the largest power of two from 512 B up to
/// [`MAX_CLUSTER_BYTES`] that leaves at least [`MIN_CLUSTERS`] clusters (512 B when none does). Large
/// clusters matter for speed: the guest's FAT library moves file data one cluster per step and follows the
/// cluster chain one FAT entry at a time, so 16 KiB clusters on a 128 MiB disk (FAT16, 8,188 clusters) write
/// about 1.7 times as fast as 4 KiB ones and 3 times as fast as the 1 KiB FAT32 clusters used before.
pub fn cluster_bytes(size: u64) -> u32 {
    let mut cs = MAX_CLUSTER_BYTES;
    while cs > 512 && size / u64::from(cs) < MIN_CLUSTERS {
        cs /= 2;
    }
    cs
}

/// Failures of [`create`] and [`parse_size`].
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The size is not N, NK, NM or NG within [`MIN_DISK_BYTES`]..=2 TiB.
    #[error("disk size `{0}`: expected a whole number of bytes or K/M/G like 64M (1M..=2048G)")]
    Size(String),
    /// The output exists and `--force` was not given.
    #[error("{0} exists (use --force to overwrite it)")]
    Exists(PathBuf),
    /// `--from` names something that is not a directory.
    #[error("{0}: not a directory")]
    NotADirectory(PathBuf),
    /// A source entry that FAT cannot hold (a symlink, a device, a name FAT rejects).
    #[error("{path}: {why}")]
    Unsupported {
        /// The entry.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The files do not fit (bytes needed vs free after formatting).
    #[error("the files need {needed} bytes but the {size}-byte disk has {free} bytes free after formatting")]
    NoSpace {
        /// Bytes of file data to copy.
        needed: u64,
        /// Free bytes on the new file system.
        free: u64,
        /// Disk size (bytes).
        size: u64,
    },
    /// An I/O error on `path`.
    #[error("{path}: {source}")]
    Io {
        /// The file or the disk image.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// What [`create`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSummary {
    /// Disk size (bytes).
    pub size: u64,
    /// "FAT12", "FAT16" or "FAT32".
    pub fat_type: &'static str,
    /// Files copied.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Bytes of file data copied.
    pub bytes: u64,
    /// Free bytes left.
    pub free: u64,
}

/// Parses `64M`-style sizes: bytes, or K/M/G (binary multiples). Errors: [`DiskError::Size`].
pub fn parse_size(s: &str) -> Result<u64, DiskError> {
    let bad = || DiskError::Size(s.to_owned());
    let (num, mult) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 1 << 20),
        Some(b'G' | b'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let bytes = n.checked_mul(mult).ok_or_else(bad)?;
    if !(MIN_DISK_BYTES..=(2048u64 << 30)).contains(&bytes) || bytes % 512 != 0 {
        return Err(bad());
    }
    Ok(bytes)
}

/// Creates `out` as a `size`-byte raw disk (sparse where the host file system allows), formats FAT on the
/// whole disk (no partition table: the guest mounts the device itself) and copies `from`'s tree into it.
///
/// Errors: [`DiskError::Exists`] unless `force`; [`DiskError::NoSpace`] when the tree does not fit;
/// [`DiskError::Unsupported`] for symlinks and special files; [`DiskError::Io`].
pub fn create(out: &Path, size: u64, from: Option<&Path>, force: bool) -> Result<DiskSummary, DiskError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| DiskError::Io { path, source }
    };
    if out.exists() && !force {
        return Err(DiskError::Exists(out.to_owned()));
    }
    if let Some(dir) = from {
        if !dir.is_dir() {
            return Err(DiskError::NotADirectory(dir.to_owned()));
        }
    }
    let file = File::options().read(true).write(true).create(true).truncate(true).open(out).map_err(io(out))?;
    file.set_len(size).map_err(io(out))?;
    let mut label = *b"ZIRVIUM    ";
    label[7..].copy_from_slice(b"DATA");
    let summary = format_fat(&file, out, size, label, from)?;
    file.sync_all().map_err(io(out))?;
    Ok(summary)
}

/// Formats FAT on `storage` (`size` bytes: a whole disk image or one partition of it, see
/// [`crate::region::Region`]) with volume label `label` and the cluster size of [`cluster_bytes`], and copies
/// `from`'s tree into it. `path` names the image in errors.
///
/// Errors: [`DiskError::NoSpace`] when the tree does not fit; [`DiskError::Unsupported`] for symlinks and
/// special files; [`DiskError::Io`].
pub fn format_fat<S: std::io::Read + std::io::Write + std::io::Seek>(
    storage: S,
    path: &Path,
    size: u64,
    label: [u8; 11],
    from: Option<&Path>,
) -> Result<DiskSummary, DiskError> {
    let out = path;
    // No FAT type: the library picks the one the cluster count requires.
    let options = fatfs::FormatVolumeOptions::new().volume_label(label).bytes_per_cluster(cluster_bytes(size));
    let fat = |path: &Path| {
        let path = path.to_owned();
        move |e: fatfs::Error<std::io::Error>| DiskError::Io { path, source: e.into() }
    };
    let mut storage = fatfs::StdIoWrapper::from(storage);
    fatfs::format_volume(&mut storage, options).map_err(fat(out))?;
    let fs = fatfs::FileSystem::new(storage, fatfs::FsOptions::new()).map_err(fat(out))?;
    let mut summary = DiskSummary {
        size,
        fat_type: match fs.fat_type() {
            fatfs::FatType::Fat12 => "FAT12",
            fatfs::FatType::Fat16 => "FAT16",
            fatfs::FatType::Fat32 => "FAT32",
        },
        files: 0,
        dirs: 0,
        bytes: 0,
        free: 0,
    };
    if let Some(dir) = from {
        let needed = tree_bytes(dir)?;
        let stats = fs.stats().map_err(fat(out))?;
        let free = stats.free_clusters() as u64 * stats.cluster_size() as u64;
        if needed > free {
            return Err(DiskError::NoSpace { needed, free, size });
        }
        copy_tree(dir, &fs.root_dir(), &mut summary)?;
    }
    let stats = fs.stats().map_err(fat(out))?;
    summary.free = stats.free_clusters() as u64 * stats.cluster_size() as u64;
    fs.unmount().map_err(fat(out))?;
    Ok(summary)
}

/// Sorted entries of `dir`, so images are reproducible.
fn entries(dir: &Path) -> Result<Vec<std::fs::DirEntry>, DiskError> {
    let io = |source| DiskError::Io { path: dir.to_owned(), source };
    let mut v = std::fs::read_dir(dir).map_err(io)?.collect::<Result<Vec<_>, _>>().map_err(io)?;
    v.sort_by_key(|e| e.file_name());
    Ok(v)
}

/// Bytes of regular-file data under `dir` (for sizing a file system before making it). Errors: [`DiskError::Io`].
pub fn tree_bytes(dir: &Path) -> Result<u64, DiskError> {
    let mut n = 0;
    for e in entries(dir)? {
        let path = e.path();
        let meta = std::fs::symlink_metadata(&path).map_err(|source| DiskError::Io { path: path.clone(), source })?;
        if meta.is_dir() {
            n += tree_bytes(&path)?;
        } else {
            n += meta.len();
        }
    }
    Ok(n)
}

fn copy_tree<IO: fatfs::ReadWriteSeek<Error = std::io::Error>, TP: fatfs::TimeProvider, OCC: fatfs::OemCpConverter>(
    src: &Path,
    dst: &fatfs::Dir<'_, IO, TP, OCC>,
    summary: &mut DiskSummary,
) -> Result<(), DiskError> {
    for e in entries(src)? {
        let path = e.path();
        let io = |source| DiskError::Io { path: path.clone(), source };
        let meta = std::fs::symlink_metadata(&path).map_err(io)?;
        let name = e.file_name();
        let Some(name) = name.to_str() else {
            return Err(DiskError::Unsupported { path, why: "name is not UTF-8".into() });
        };
        let unsupported = |why: String| DiskError::Unsupported { path: path.clone(), why };
        if meta.is_dir() {
            let sub = dst.create_dir(name).map_err(|e| unsupported(format!("FAT refused the directory: {e}")))?;
            summary.dirs += 1;
            copy_tree(&path, &sub, summary)?;
        } else if meta.is_file() {
            let mut f = dst.create_file(name).map_err(|e| unsupported(format!("FAT refused the file: {e}")))?;
            let mut src = File::open(&path).map_err(io)?;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = src.read(&mut buf).map_err(io)?;
                if n == 0 {
                    break;
                }
                fatfs::Write::write_all(&mut f, &buf[..n])
                    .map_err(|e| DiskError::Io { path: path.clone(), source: e.into() })?;
                summary.bytes += n as u64;
            }
            fatfs::Write::flush(&mut f).map_err(|e| DiskError::Io { path: path.clone(), source: e.into() })?;
            summary.files += 1;
        } else {
            return Err(unsupported("only regular files and directories can be copied to FAT".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("images-disk-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        for bad in ["", "M", "0", "512K", "64X", "-1M", "1048577", "99999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn creates_and_populates_a_disk() {
        let d = tmp("populate");
        let src = d.join("src");
        std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
        std::fs::write(src.join("a long file name.txt"), b"hello").unwrap();
        std::fs::write(src.join("sub/deeper/big.bin"), vec![7u8; 300_000]).unwrap();
        let img = d.join("disk.img");
        let s = create(&img, 64 << 20, Some(&src), false).unwrap();
        assert_eq!((s.fat_type, s.files, s.dirs, s.bytes), ("FAT16", 2, 2, 300_005));
        assert!(s.free > 60 << 20 && s.free < 64 << 20, "{s:?}");
        // Read back through the library.
        let f = File::options().read(true).write(true).open(&img).unwrap();
        let fs = fatfs::FileSystem::new(&f, fatfs::FsOptions::new()).unwrap();
        let read_all = |path: &str| {
            let mut file = fs.root_dir().open_file(path).unwrap();
            let mut out = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = fatfs::Read::read(&mut file, &mut buf).unwrap();
                if n == 0 {
                    break out;
                }
                out.extend_from_slice(&buf[..n]);
            }
        };
        assert_eq!(read_all("a long file name.txt"), b"hello");
        assert_eq!(read_all("sub/deeper/big.bin"), vec![7u8; 300_000]);
        // Refuses to overwrite without --force.
        assert!(matches!(create(&img, 64 << 20, None, false), Err(DiskError::Exists(_))));
        assert!(create(&img, 8 << 20, None, true).is_ok());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn cluster_size_follows_the_disk_size() {
        assert_eq!(cluster_bytes(1 << 20), 512);
        assert_eq!(cluster_bytes(8 << 20), 1024);
        assert_eq!(cluster_bytes(64 << 20), 8192);
        assert_eq!(cluster_bytes(128 << 20), 16384);
        assert_eq!(cluster_bytes(64 << 30), 16384);
        let d = tmp("clusters");
        let img = d.join("disk.img");
        for (size, fat_type, cluster) in [
            (1u64 << 20, "FAT12", 512u32),
            (16 << 20, "FAT16", 2048),
            (128 << 20, "FAT16", 16384),
            (2 << 30, "FAT32", 16384),
        ] {
            let s = create(&img, size, None, true).unwrap();
            let f = File::open(&img).unwrap();
            let fs = fatfs::FileSystem::new(&f, fatfs::FsOptions::new()).unwrap();
            assert_eq!((s.fat_type, fs.cluster_size()), (fat_type, cluster), "{size} bytes");
            // fsck.fat (dosfstools) is what the integration tests trust; check with it when installed.
            if let Ok(out) = std::process::Command::new("fsck.fat").arg("-n").arg(&img).output() {
                assert!(out.status.success(), "{size} bytes: {}", String::from_utf8_lossy(&out.stdout));
            }
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn too_much_data_is_no_space() {
        let d = tmp("nospace");
        let src = d.join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("big"), vec![1u8; 3 << 20]).unwrap();
        let e = create(&d.join("disk.img"), 2 << 20, Some(&src), false).unwrap_err();
        assert!(matches!(e, DiskError::NoSpace { needed: 3145728, .. }), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_refused() {
        let d = tmp("symlink");
        let src = d.join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("link")).unwrap();
        let e = create(&d.join("disk.img"), 8 << 20, Some(&src), false).unwrap_err();
        assert!(matches!(e, DiskError::Unsupported { .. }), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
