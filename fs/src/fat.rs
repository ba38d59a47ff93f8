//! FAT12/16/32 (Microsoft "FAT: General Overview of On-Disk Format" 1.03, with VFAT long names) on any
//! [`BlockDevice`], through the `starry-fatfs` crate (a `no_std` fork of rust-fatfs) over a [`SectorCache`].
//! Mounted at `/data`.
//!
//! # Durability contract
//! - Every VFS operation on this filesystem ends by writing all sectors it dirtied back to the device
//!   ([`SectorCache::write_back`]): after a call returns, the device has the data, but it may still sit in the
//!   device's volatile write cache.
//! - [`FileHandle::sync_all`] (`File::sync_all`) returns only after the file's data and metadata — the data
//!   clusters, its directory entry (size, first cluster, time) and the FAT chain — reached the device **and** a
//!   device flush ([`BlockDevice::flush`]: virtio `VIRTIO_BLK_T_FLUSH`, blkif `BLKIF_OP_FLUSH_DISKCACHE`)
//!   completed. [`FileSystem::sync`] does the same for everything written so far.
//! - FAT has no journal: a crash between writes can leave lost clusters or a file shorter than written; what
//!   `sync_all` returned for survives.
//!
//! # Notes
//! - Names compare case-insensitively (FAT); a rename that only changes case does nothing.
//! - Open files are identified by path: renames update open handles; removing (or replacing by rename) a file
//!   makes its open handles fail with [`Error::NotFound`], since FAT frees the clusters at once.
//! - The first write after a mount or a sync sets the volume's "dirty" bit (FAT32 BPB offset 0x41 / FAT16
//!   0x25, bit 0); a sync that had something to write then writes the FSInfo free-cluster count, clears the bit
//!   and flushes a second time. A VM stopped after its last sync leaves a volume `fsck.fat -n` passes; one
//!   stopped with unsynced writes leaves the dirty bit set, which `fsck.fat` reports (as after any unclean
//!   shutdown); a volume mounted dirty stays dirty until `fsck.fat` clears it.

use crate::cache::{SectorCache, Storage, StorageError, DEFAULT_CACHE_BYTES};
use crate::error::{Error, Result};
use crate::path;
use crate::vfs::{check_replace, FileHandle, FileSystem, FileType, FsStats, Metadata};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use fatfs::{Read as _, Seek as _, Write as _};
use libos::dev::BlockDevice;
use spin::Mutex;

type Fs = fatfs::FileSystem<Storage, Clock, fatfs::LossyOemCpConverter>;
type Dir<'a> = fatfs::Dir<'a, Storage, Clock, fatfs::LossyOemCpConverter>;
type File<'a> = fatfs::File<'a, Storage, Clock, fatfs::LossyOemCpConverter>;
type Entry<'a> = fatfs::DirEntry<'a, Storage, Clock, fatfs::LossyOemCpConverter>;
type FatError = fatfs::Error<StorageError>;

/// The wall clock for FAT timestamps (UTC; FAT has no time zone). Before the platform knows the time, and
/// outside FAT's range 1980..=2107, the nearest representable time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock;

impl Clock {
    fn now() -> fatfs::DateTime {
        let secs = libos::time::SystemTime::now().map_or(0, |t| t.since_epoch().as_secs());
        to_fat(secs)
    }
}

impl fatfs::TimeProvider for Clock {
    fn get_current_date(&self) -> fatfs::Date {
        Self::now().date
    }

    fn get_current_date_time(&self) -> fatfs::DateTime {
        Self::now()
    }
}

/// Unix seconds → FAT date/time, clamped to 1980-01-01 00:00:00 ..= 2107-12-31 23:59:58.
fn to_fat(secs: u64) -> fatfs::DateTime {
    let min = libos::time::days_from_civil(1980, 1, 1) as u64 * 86400;
    let max = libos::time::days_from_civil(2107, 12, 31) as u64 * 86400 + 86398;
    let secs = secs.clamp(min, max);
    let (y, m, d) = libos::time::civil_from_days((secs / 86400) as i64);
    let s = secs % 86400;
    // Clamped into FAT's range above, so every field is within the asserts of `Date::new`/`Time::new`.
    fatfs::DateTime::new(
        fatfs::Date::new(y as u16, m as u16, d as u16),
        fatfs::Time::new((s / 3600) as u16, (s / 60 % 60) as u16, (s % 60) as u16, 0),
    )
}

/// FAT date/time → Unix seconds; `None` for a field out of range (a never-set or corrupt timestamp).
fn from_fat(t: fatfs::DateTime) -> Option<u64> {
    let (d, tm) = (t.date, t.time);
    if !(1980..=2107).contains(&d.year) || !(1..=12).contains(&d.month) || !(1..=31).contains(&d.day) {
        return None;
    }
    if tm.hour > 23 || tm.min > 59 || tm.sec > 59 {
        return None;
    }
    let days = libos::time::days_from_civil(i64::from(d.year), u32::from(d.month), u32::from(d.day));
    Some(days as u64 * 86400 + u64::from(tm.hour) * 3600 + u64::from(tm.min) * 60 + u64::from(tm.sec))
}

/// Largest FAT file (bytes): the directory entry's size is 32 bits.
const MAX_FILE: u64 = u32::MAX as u64;

/// Open files by handle id: their path, or `None` once the file was removed or replaced.
#[derive(Default)]
struct OpenTable {
    next: u64,
    files: BTreeMap<u64, Option<String>>,
}

/// FAT compares names case-insensitively (upper-case folding, as the library's `eq_name`).
fn same_name(a: &str, b: &str) -> bool {
    a.to_uppercase() == b.to_uppercase()
}

/// Whether `path` is `dir` or below it, case-insensitively.
fn at_or_below(path: &str, dir: &str) -> bool {
    let (p, d) = (path.to_uppercase(), dir.to_uppercase());
    p == d || p.strip_prefix(&d).is_some_and(|rest| rest.starts_with('/'))
}

struct Inner {
    fs: Mutex<Option<Fs>>,
    cache: Arc<Mutex<SectorCache>>,
    device: String,
    read_only: bool,
    fat_type: fatfs::FatType,
    open: Mutex<OpenTable>,
    /// The cache's device-write count when the volume was last marked clean (see [`Inner::sync`]).
    clean_at: Mutex<u64>,
    /// Bumped by every operation that may change the volume; an [`Extents`] map is valid only for the
    /// generation it was built in.
    generation: AtomicU64,
}

/// Where an open file's bytes are on the device, built once per [`Inner::generation`] so reads and seeks
/// neither resolve the path nor walk the cluster chain (FAT spec §4) again.
struct Extents {
    generation: u64,
    /// File size (bytes).
    size: u64,
    /// Contiguous runs `(file offset, device byte offset, length)`, ascending by file offset, covering
    /// `0..size`.
    runs: Vec<(u64, u64, u64)>,
}

impl Extents {
    /// The device offset of file byte `offset` and how many bytes from there are contiguous on the device.
    fn locate(&self, offset: u64) -> Option<(u64, u64)> {
        let i = self.runs.partition_point(|&(start, _, _)| start <= offset).checked_sub(1)?;
        let (start, dev, len) = self.runs[i];
        (offset < start + len).then(|| (dev + (offset - start), start + len - offset))
    }
}

/// Mount options: our clock, no access-date updates (a read must not write).
fn options() -> fatfs::FsOptions<Clock, fatfs::LossyOemCpConverter> {
    fatfs::FsOptions::new().time_provider(Clock).update_accessed_date(false)
}

/// A mounted FAT filesystem; clones share it.
#[derive(Clone)]
pub struct FatFs {
    inner: Arc<Inner>,
}

impl FatFs {
    /// Mounts the FAT filesystem on `dev` (the whole device; no partition table).
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the device holds no valid FAT boot sector; [`Error::Io`] when it cannot be read.
    pub fn mount(dev: Arc<dyn BlockDevice>) -> Result<Self> {
        let info = dev.info().clone();
        let cache = Arc::new(Mutex::new(SectorCache::new(dev, DEFAULT_CACHE_BYTES)));
        let fs = Fs::new(Storage::new(cache.clone()), options()).map_err(|e| match e {
            fatfs::Error::Io(s) => Error::from(s),
            _ => Error::Corrupt(format!("{}: no valid FAT boot sector (BPB) at sector 0", info.name)),
        })?;
        let fat_type = fs.fat_type();
        Ok(Self {
            inner: Arc::new(Inner {
                fs: Mutex::new(Some(fs)),
                cache,
                device: info.name,
                read_only: info.read_only,
                fat_type,
                open: Mutex::new(OpenTable::default()),
                clean_at: Mutex::new(0),
                generation: AtomicU64::new(0),
            }),
        })
    }

    /// Formats the whole of `dev` as FAT (type and cluster size chosen from its size by the library, as
    /// `mkfs.fat` would), then flushes the device. Destroys everything on it; never called at boot.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the device is too small or too large for FAT; device errors.
    pub fn format(dev: Arc<dyn BlockDevice>) -> Result<()> {
        let cache = Arc::new(Mutex::new(SectorCache::new(dev, DEFAULT_CACHE_BYTES)));
        let mut storage = Storage::new(cache.clone());
        fatfs::format_volume(&mut storage, fatfs::FormatVolumeOptions::new()).map_err(|e| match e {
            fatfs::Error::Io(s) => Error::from(s),
            _ => Error::InvalidInput("the device is too small or too large for FAT"),
        })?;
        cache.lock().sync()?;
        Ok(())
    }

    /// Device request counters of the cache (reads, writes, flushes).
    pub fn cache_stats(&self) -> crate::cache::CacheStats {
        self.inner.cache.lock().stats()
    }
}

impl Inner {
    fn conv(&self, e: FatError) -> Error {
        match e {
            fatfs::Error::Io(s) => s.into(),
            fatfs::Error::NotFound => Error::NotFound,
            fatfs::Error::AlreadyExists => Error::AlreadyExists,
            fatfs::Error::DirectoryIsNotEmpty => Error::DirectoryNotEmpty,
            fatfs::Error::NotEnoughSpace => Error::NoSpace,
            fatfs::Error::InvalidFileNameLength => Error::NameTooLong,
            fatfs::Error::UnsupportedFileNameCharacter => Error::InvalidPath,
            fatfs::Error::InvalidInput => Error::InvalidInput("the FAT library refused the request"),
            fatfs::Error::CorruptedFileSystem => {
                Error::Corrupt(format!("{}: invalid FAT structures (run fsck.fat)", self.device))
            }
            fatfs::Error::UnexpectedEof => {
                Error::Corrupt(format!("{}: a FAT structure reaches past its end (run fsck.fat)", self.device))
            }
            fatfs::Error::WriteZero => {
                Error::Corrupt(format!("{}: a write reached past the end of the disk", self.device))
            }
            _ => Error::Corrupt(format!("{}: unexpected FAT library error", self.device)),
        }
    }

    /// Runs `f` on the mounted filesystem, then writes back what it dirtied (the durability contract's first
    /// point). The first error wins.
    fn with_fs<R>(&self, f: impl FnOnce(&Self, &Fs) -> Result<R>) -> Result<R> {
        let guard = self.fs.lock();
        self.generation.fetch_add(1, Ordering::Relaxed);
        let fs = guard.as_ref().ok_or(Error::InvalidInput("the FAT filesystem was unmounted"))?;
        let r = f(self, fs);
        let wb = self.cache.lock().write_back();
        drop(guard);
        let v = r?;
        wb?;
        Ok(v)
    }

    /// The entry named `name` in `dir` (case-insensitive).
    fn find_in<'a>(&self, dir: &Dir<'a>, name: &str) -> Result<Option<Entry<'a>>> {
        for e in dir.iter() {
            let e = e.map_err(|e| self.conv(e))?;
            if e.eq_name(name) {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    /// The entry at `path` (`None` for the root).
    fn find<'a>(&self, fs: &'a Fs, path: &str) -> Result<Option<Entry<'a>>> {
        let mut dir = fs.root_dir();
        let mut found = None;
        let mut comps = path::components(path).peekable();
        while let Some(c) = comps.next() {
            let e = self.find_in(&dir, c)?.ok_or(Error::NotFound)?;
            if comps.peek().is_some() {
                if !e.is_dir() {
                    return Err(Error::NotADirectory);
                }
                dir = e.to_dir();
            }
            found = Some(e);
        }
        Ok(found)
    }

    fn dir<'a>(&self, fs: &'a Fs, path: &str) -> Result<Dir<'a>> {
        match self.find(fs, path)? {
            None => Ok(fs.root_dir()),
            Some(e) if e.is_dir() => Ok(e.to_dir()),
            Some(_) => Err(Error::NotADirectory),
        }
    }

    fn file<'a>(&self, fs: &'a Fs, path: &str) -> Result<File<'a>> {
        match self.find(fs, path)? {
            Some(e) if e.is_file() => Ok(e.to_file()),
            _ => Err(Error::IsADirectory),
        }
    }

    fn meta(&self, e: &Entry<'_>) -> Metadata {
        Metadata {
            len: e.len(),
            file_type: if e.is_dir() { FileType::Dir } else { FileType::File },
            read_only: self.read_only || e.attributes().contains(fatfs::FileAttributes::READ_ONLY),
            modified: from_fat(e.modified()),
        }
    }

    fn is_empty_dir(&self, dir: &Dir<'_>) -> Result<bool> {
        for e in dir.iter() {
            let e = e.map_err(|e| self.conv(e))?;
            let n = e.short_file_name_as_bytes();
            if n != b"." && n != b".." {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Marks open handles of `path` stale (the file is gone).
    fn forget_open(&self, path: &str) {
        for p in self.open.lock().files.values_mut() {
            if p.as_deref().is_some_and(|p| same_name(p, path)) {
                *p = None;
            }
        }
    }

    /// Points open handles at or below `from` to the same place below `to`.
    fn move_open(&self, from: &str, to: &str) {
        for p in self.open.lock().files.values_mut() {
            if let Some(old) = p.as_deref() {
                if at_or_below(old, from) {
                    *p = Some(format!("{to}{}", &old[from.len()..]));
                }
            }
        }
    }

    /// After moving directory `moved` under a new parent, points its `..` entry (the second 32-byte entry)
    /// at the new parent's first cluster (0 for the root, FAT spec §6.3), which the library leaves unchanged.
    fn fix_dotdot(&self, fs: &Fs, moved: &str, new_parent: &str) -> Result<()> {
        const ENTRY: usize = 32;
        let dir = self.dir(fs, moved)?;
        let Some(file) = dir.as_file() else { return Ok(()) };
        let mut file = file.clone();
        let mut dotdot = [0u8; ENTRY];
        file.seek(fatfs::SeekFrom::Start(ENTRY as u64)).map_err(|e| self.conv(e))?;
        file.read_exact(&mut dotdot).map_err(|e| self.conv(e))?;
        if &dotdot[..11] != b"..         " {
            return Ok(());
        }
        let mut cluster = [0u8; 4]; // hi (offset 20..22) and lo (26..28) halves, little-endian
        let parent = self.dir(fs, new_parent)?;
        if let Some(pf) = parent.as_file().filter(|_| !new_parent.is_empty()) {
            let mut pf = pf.clone();
            let mut dot = [0u8; ENTRY];
            pf.seek(fatfs::SeekFrom::Start(0)).map_err(|e| self.conv(e))?;
            pf.read_exact(&mut dot).map_err(|e| self.conv(e))?;
            if &dot[..11] == b".          " {
                cluster[..2].copy_from_slice(&dot[20..22]);
                cluster[2..].copy_from_slice(&dot[26..28]);
            }
        }
        dotdot[20..22].copy_from_slice(&cluster[..2]);
        dotdot[26..28].copy_from_slice(&cluster[2..]);
        file.seek(fatfs::SeekFrom::Start(ENTRY as u64)).map_err(|e| self.conv(e))?;
        file.write_all(&dotdot).map_err(|e| self.conv(e))?;
        file.flush().map_err(|e| self.conv(e))
    }

    /// The durable point of the contract: writes back everything, flushes the device; then, when anything was
    /// written since the volume was last marked clean, writes the FSInfo free-cluster count and clears the
    /// clean-shutdown ("dirty") bit — through an unmount/mount cycle of the library, which open files survive
    /// since they are known by path — and flushes again. So a VM stopped after a sync leaves a volume that
    /// `fsck.fat -n` finds clean, and the dirty bit is never clear while unflushed data is on the way. A
    /// volume that was already dirty when mounted stays dirty (the library keeps that bit, as Linux does).
    fn sync(&self) -> Result<()> {
        let mut guard = self.fs.lock();
        if guard.is_none() {
            return Err(Error::InvalidInput("the FAT filesystem was unmounted"));
        }
        self.cache.lock().sync()?;
        let writes = self.cache.lock().stats().writes;
        if writes == *self.clean_at.lock() || self.read_only {
            return Ok(());
        }
        let Some(fs) = guard.take() else { return Ok(()) };
        let unmounted = fs.unmount().map_err(|e| self.conv(e));
        let flushed = self.cache.lock().sync();
        *guard = Some(Fs::new(Storage::new(self.cache.clone()), options()).map_err(|e| match e {
            fatfs::Error::Io(s) => Error::from(s),
            _ => Error::Corrupt(format!("{}: the volume could not be mounted again after a sync", self.device)),
        })?);
        *self.clean_at.lock() = self.cache.lock().stats().writes;
        unmounted?;
        Ok(flushed?)
    }

    fn path_of(&self, id: u64) -> Result<String> {
        self.open.lock().files.get(&id).cloned().flatten().ok_or(Error::NotFound)
    }

    fn handle(self: &Arc<Self>, path: &str) -> Box<dyn FileHandle> {
        let mut t = self.open.lock();
        let id = t.next;
        t.next += 1;
        t.files.insert(id, Some(String::from(path)));
        Box::new(FatHandle { inner: self.clone(), id, extents: None })
    }
}

/// Writes `n` zero bytes at the position of `file`.
fn write_zeros(file: &mut File<'_>, mut n: u64) -> core::result::Result<(), FatError> {
    let zeros = [0u8; 512];
    while n > 0 {
        let k = n.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..k])?;
        n -= k as u64;
    }
    Ok(())
}

impl FileSystem for FatFs {
    fn describe(&self) -> String {
        let kind = match self.inner.fat_type {
            fatfs::FatType::Fat12 => "fat12",
            fatfs::FatType::Fat16 => "fat16",
            fatfs::FatType::Fat32 => "fat32",
        };
        let ro = if self.inner.read_only { ", read-only" } else { "" };
        match self.stats() {
            Ok(s) => format!(
                "{kind} on {} ({}, {} free{ro})",
                self.inner.device,
                crate::human_bytes(s.total_bytes),
                crate::human_bytes(s.free_bytes)
            ),
            Err(e) => format!("{kind} on {} ({e}{ro})", self.inner.device),
        }
    }

    fn read_only(&self) -> bool {
        self.inner.read_only
    }

    fn metadata(&self, path: &str) -> Result<Metadata> {
        self.inner.with_fs(|me, fs| {
            Ok(match me.find(fs, path)? {
                Some(e) => me.meta(&e),
                None => Metadata { len: 0, file_type: FileType::Dir, read_only: me.read_only, modified: None },
            })
        })
    }

    fn open_file(&self, path: &str) -> Result<Box<dyn FileHandle>> {
        self.inner.with_fs(|me, fs| me.file(fs, path).map(drop))?;
        Ok(self.inner.handle(path))
    }

    fn create_file(&self, path: &str) -> Result<Box<dyn FileHandle>> {
        let (parent, name) = path::split_parent(path).ok_or(Error::AlreadyExists)?;
        self.inner.with_fs(|me, fs| {
            let dir = me.dir(fs, parent)?;
            if me.find_in(&dir, name)?.is_some() {
                return Err(Error::AlreadyExists);
            }
            dir.create_file(name).map(drop).map_err(|e| me.conv(e))
        })?;
        Ok(self.inner.handle(path))
    }

    fn read_dir(&self, path: &str) -> Result<Vec<(String, Metadata)>> {
        self.inner.with_fs(|me, fs| {
            let dir = me.dir(fs, path)?;
            let mut out = Vec::new();
            for e in dir.iter() {
                let e = e.map_err(|e| me.conv(e))?;
                let sfn = e.short_file_name_as_bytes();
                if sfn == b"." || sfn == b".." {
                    continue;
                }
                let name = e.file_name();
                // A corrupted directory can hold names no path reaches (empty, `.` or `..` as a long name, `/` or
                // NUL inside): skipped, so a listing never names something a path would resolve elsewhere.
                if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
                    log::warn!("{}: skipping a directory entry with an invalid name {name:?} in {path}", me.device);
                    continue;
                }
                out.push((name, me.meta(&e)));
            }
            Ok(out)
        })
    }

    fn create_dir(&self, path: &str) -> Result<()> {
        let (parent, name) = path::split_parent(path).ok_or(Error::AlreadyExists)?;
        self.inner.with_fs(|me, fs| {
            let dir = me.dir(fs, parent)?;
            if me.find_in(&dir, name)?.is_some() {
                return Err(Error::AlreadyExists);
            }
            dir.create_dir(name).map(drop).map_err(|e| me.conv(e))
        })
    }

    fn remove_file(&self, path: &str) -> Result<()> {
        let (parent, name) = path::split_parent(path).ok_or(Error::IsADirectory)?;
        self.inner.with_fs(|me, fs| {
            let dir = me.dir(fs, parent)?;
            let e = me.find_in(&dir, name)?.ok_or(Error::NotFound)?;
            if e.is_dir() {
                return Err(Error::IsADirectory);
            }
            dir.remove(name).map_err(|e| me.conv(e))?;
            me.forget_open(path);
            Ok(())
        })
    }

    fn remove_dir(&self, path: &str) -> Result<()> {
        let (parent, name) = path::split_parent(path).ok_or(Error::InvalidInput("the root cannot be removed"))?;
        self.inner.with_fs(|me, fs| {
            let dir = me.dir(fs, parent)?;
            let e = me.find_in(&dir, name)?.ok_or(Error::NotFound)?;
            if !e.is_dir() {
                return Err(Error::NotADirectory);
            }
            dir.remove(name).map_err(|e| me.conv(e))
        })
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (src_parent, src_name) =
            path::split_parent(from).ok_or(Error::InvalidInput("the root cannot be renamed"))?;
        let (dst_parent, dst_name) =
            path::split_parent(to).ok_or(Error::InvalidInput("the root cannot be replaced"))?;
        if same_name(from, to) {
            // The same entry under FAT's case-insensitive names: nothing to do (case changes are not kept).
            return self.metadata(from).map(drop);
        }
        if at_or_below(to, from) {
            return Err(Error::InvalidInput("a directory cannot be moved into itself"));
        }
        self.inner.with_fs(|me, fs| {
            let sdir = me.dir(fs, src_parent)?;
            let src = me.find_in(&sdir, src_name)?.ok_or(Error::NotFound)?;
            let src_is_dir = src.is_dir();
            let ddir = me.dir(fs, dst_parent)?;
            if let Some(dst) = me.find_in(&ddir, dst_name)? {
                check_replace(src_is_dir, &me.meta(&dst), || me.is_empty_dir(&dst.to_dir()))?;
                ddir.remove(dst_name).map_err(|e| me.conv(e))?;
                me.forget_open(to);
            }
            sdir.rename(src_name, &ddir, dst_name).map_err(|e| me.conv(e))?;
            if src_is_dir && !same_name(src_parent, dst_parent) {
                me.fix_dotdot(fs, to, dst_parent)?;
            }
            me.move_open(from, to);
            Ok(())
        })
    }

    fn stats(&self) -> Result<FsStats> {
        self.inner.with_fs(|me, fs| {
            let s = fs.stats().map_err(|e| me.conv(e))?;
            let cluster = u64::from(s.cluster_size());
            Ok(FsStats {
                total_bytes: u64::from(s.total_clusters()) * cluster,
                free_bytes: u64::from(s.free_clusters()) * cluster,
                files: None,
            })
        })
    }

    fn sync(&self) -> Result<()> {
        self.inner.with_fs(|_, _| Ok(()))?;
        self.inner.sync()
    }

    fn unmount(&self) -> Result<()> {
        let fs = self.inner.fs.lock().take().ok_or(Error::InvalidInput("the FAT filesystem was unmounted"))?;
        let device = self.inner.device.clone();
        fs.unmount().map_err(|e| match e {
            fatfs::Error::Io(s) => Error::from(s),
            _ => Error::Corrupt(format!("{device}: unmount failed")),
        })?;
        Ok(self.inner.cache.lock().sync()?)
    }
}

/// An open FAT file, known by its path (see the module notes).
struct FatHandle {
    inner: Arc<Inner>,
    id: u64,
    /// Where the file's bytes are, for [`FileHandle::read_at`].
    extents: Option<Extents>,
}

impl Drop for FatHandle {
    fn drop(&mut self) {
        self.inner.open.lock().files.remove(&self.id);
    }
}

impl FileHandle for FatHandle {
    /// Reads through the file's [`Extents`] (rebuilt when the volume changed since): one cache request per
    /// contiguous run instead of one per cluster. Reads never change the volume (no access dates).
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let path = self.inner.path_of(self.id)?;
        let guard = self.inner.fs.lock();
        let fs = guard.as_ref().ok_or(Error::InvalidInput("the FAT filesystem was unmounted"))?;
        let me = &*self.inner;
        let generation = me.generation.load(Ordering::Relaxed);
        if self.extents.as_ref().is_none_or(|x| x.generation != generation) {
            self.extents = None;
            let mut f = me.file(fs, &path)?;
            let size = u64::from(f.size().unwrap_or(0));
            // A chain without a loop names each cluster once, so it covers at most the device's bytes; a loop
            // under a size field claiming more (up to 4 GiB) would take millions of steps and runs to cover it.
            let device_bytes = me.cache.lock().size();
            let mut runs: Vec<(u64, u64, u64)> = Vec::new();
            let mut at = 0;
            for x in f.extents() {
                // The library follows the chain past the file's end (zero-length extents): a chain that loops
                // back on itself would never end, so stop once the file's bytes are covered.
                if at >= size {
                    break;
                }
                if at > device_bytes {
                    return Err(Error::Corrupt(format!("{}: {path}: cluster chain loops", me.device)));
                }
                let x = x.map_err(|e| me.conv(e))?;
                let len = u64::from(x.size);
                match runs.last_mut() {
                    Some((_, dev, l)) if *dev + *l == x.offset => *l += len,
                    _ => runs.push((at, x.offset, len)),
                }
                at += len;
            }
            if at < size {
                return Err(Error::Corrupt(format!("{}: {path}: cluster chain shorter than the file", me.device)));
            }
            self.extents = Some(Extents { generation, size, runs });
        }
        // Set just above when it was missing or stale.
        let x = self.extents.as_ref().ok_or(Error::NotFound)?;
        if offset >= x.size || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min((x.size - offset) as usize);
        let mut done = 0;
        let mut cache = me.cache.lock();
        while done < want {
            let Some((dev, run)) = x.locate(offset + done as u64) else { break };
            let n = (want - done).min(run as usize);
            match cache.read_at(dev, &mut buf[done..done + n])? {
                0 => break,
                k => done += k,
            }
        }
        Ok(done)
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<usize> {
        if offset >= MAX_FILE {
            return Err(Error::FileTooLarge);
        }
        let buf = &buf[..buf.len().min((MAX_FILE - offset) as usize)];
        let path = self.inner.path_of(self.id)?;
        self.inner.with_fs(|me, fs| {
            let mut f = me.file(fs, &path)?;
            let size = u64::from(f.size().unwrap_or(0));
            if offset > size {
                f.seek(fatfs::SeekFrom::End(0)).map_err(|e| me.conv(e))?;
                write_zeros(&mut f, offset - size).map_err(|e| me.conv(e))?;
            } else {
                f.seek(fatfs::SeekFrom::Start(offset)).map_err(|e| me.conv(e))?;
            }
            let mut done = 0;
            while done < buf.len() {
                match f.write(&buf[done..]) {
                    Ok(0) => break,
                    Ok(n) => done += n,
                    // Part was written: report it; the next write meets the error again.
                    Err(_) if done > 0 => break,
                    Err(e) => return Err(me.conv(e)),
                }
            }
            f.flush().map_err(|e| me.conv(e))?;
            if done == 0 && !buf.is_empty() {
                return Err(Error::NoSpace);
            }
            Ok(done)
        })
    }

    fn size(&self) -> Result<u64> {
        let path = self.inner.path_of(self.id)?;
        self.inner.with_fs(|me, fs| Ok(u64::from(me.file(fs, &path)?.size().unwrap_or(0))))
    }

    fn set_len(&self, len: u64) -> Result<()> {
        if len > MAX_FILE {
            return Err(Error::FileTooLarge);
        }
        let path = self.inner.path_of(self.id)?;
        self.inner.with_fs(|me, fs| {
            let mut f = me.file(fs, &path)?;
            let size = u64::from(f.size().unwrap_or(0));
            if len < size {
                f.seek(fatfs::SeekFrom::Start(len)).map_err(|e| me.conv(e))?;
                f.truncate().map_err(|e| me.conv(e))?;
            } else if len > size {
                f.seek(fatfs::SeekFrom::End(0)).map_err(|e| me.conv(e))?;
                write_zeros(&mut f, len - size).map_err(|e| me.conv(e))?;
            }
            f.flush().map_err(|e| me.conv(e))
        })
    }

    fn metadata(&self) -> Result<Metadata> {
        let path = self.inner.path_of(self.id)?;
        self.inner.with_fs(|me, fs| me.find(fs, &path)?.map(|e| me.meta(&e)).ok_or(Error::NotFound))
    }

    /// See the module's durability contract.
    fn sync_all(&self) -> Result<()> {
        let path = self.inner.path_of(self.id)?;
        // Flushing the library's file object writes its directory entry; `with_fs` then writes every dirty
        // sector (data, entry, FAT) back, and the cache sync flushes the device.
        self.inner.with_fs(|me, fs| me.file(fs, &path)?.flush().map_err(|e| me.conv(e)))?;
        self.inner.sync()
    }
}
