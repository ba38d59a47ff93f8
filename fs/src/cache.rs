//! A sector cache that turns a [`BlockDevice`] (whole sectors, async requests) into the byte-addressed,
//! synchronous storage a FAT library reads and writes (rust-fatfs `IoBase`/`Read`/`Write`/`Seek`).
//!
//! - Partial sectors go through the cache: read-modify-write, the sector stays dirty in memory.
//! - Runs of whole sectors bypass the per-sector slots, overlaying/refreshing cached copies so the cache never
//!   holds stale data. A FAT library moves file data one cluster (often 512 B–4 KiB) per call, so:
//!   - whole-sector writes that continue the previous one are gathered into one write-behind run of up to
//!     [`WRITE_BEHIND_MAX`] bytes, sent as one request when it is full, when something else needs the device,
//!     and at [`SectorCache::write_back`];
//!   - whole-sector reads that continue the previous one are served from a read-ahead window that doubles on
//!     each sequential refill, from [`READ_AHEAD`] sectors up to [`READ_AHEAD_MAX`] bytes.
//! - A slot miss reads ahead [`READ_AHEAD`] sectors (FAT tables and directories are read entry by entry).
//! - [`SectorCache::write_back`] writes the write-behind run, then dirty sectors in ascending order, contiguous
//!   runs in one request; [`SectorCache::sync`] adds a device cache flush ([`BlockDevice::flush`], e.g. virtio
//!   `VIRTIO_BLK_T_FLUSH`).
//! - When full, the least recently used sector is evicted (written back first when dirty).
//! - Ordering: the write-behind run is older than any dirty slot of the same sector (a whole-sector write
//!   refreshes the slot and marks it clean), so it goes to the device before any slot write and before any
//!   device read.
//!
//! Device requests run to completion from synchronous code with [`libos::task::wait`].

use crate::error::Error;
use alloc::boxed::Box;
use alloc::collections::btree_map::{BTreeMap, Entry};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use libos::dev::{BlockDevice, BlockError};
use spin::Mutex;

/// Sectors read on a cache miss (fewer near the end of the device).
pub const READ_AHEAD: u64 = 8;

/// Largest read-ahead window for sequential whole-sector reads (bytes).
pub const READ_AHEAD_MAX: usize = 128 * 1024;

/// Largest write-behind run of contiguous whole-sector writes (bytes); the driver splits it into requests of
/// at most `BlockInfo::max_transfer`.
pub const WRITE_BEHIND_MAX: usize = 1024 * 1024;

/// Default cache size (bytes of sector data).
pub const DEFAULT_CACHE_BYTES: usize = 256 * 1024;

/// Why a storage access failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageError {
    /// The device failed the request starting at `sector`.
    Device {
        /// First sector of the failed request (0 for a flush).
        sector: u64,
        /// The device's error.
        error: BlockError,
    },
    /// A read ended before the buffer was full (past the end of the device).
    UnexpectedEof,
    /// A write could not store any byte (past the end of the device).
    WriteZero,
}

impl fatfs::IoError for StorageError {
    fn is_interrupted(&self) -> bool {
        false
    }

    fn new_unexpected_eof_error() -> Self {
        Self::UnexpectedEof
    }

    fn new_write_zero_error() -> Self {
        Self::WriteZero
    }
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Device { sector, error } => Error::from_block(&error, sector),
            StorageError::UnexpectedEof => Error::Corrupt(String::from("a structure reaches past the end of the disk")),
            StorageError::WriteZero => Error::Corrupt(String::from("a write reaches past the end of the disk")),
        }
    }
}

struct Slot {
    sector: u64,
    data: Box<[u8]>,
    dirty: bool,
    /// Last use (a tick of the cache's clock), for LRU eviction.
    used: u64,
}

/// Counters of device requests (for logs and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Read requests sent to the device.
    pub reads: u64,
    /// Write requests sent to the device.
    pub writes: u64,
    /// Flush requests sent to the device.
    pub flushes: u64,
}

/// The cache over one device.
pub struct SectorCache {
    dev: Arc<dyn BlockDevice>,
    /// Sector size (bytes).
    ss: usize,
    /// Device size (bytes).
    size: u64,
    /// Cached sectors, in no order; [`index`](Self::index) finds them.
    slots: Vec<Slot>,
    /// Sector -> position in `slots`, ascending (range look-ups, write-back order).
    index: BTreeMap<u64, usize>,
    /// Position in `slots` of the sector used last: a FAT library reads a directory entry field by field, so
    /// most look-ups ask for the same sector again and skip the map (stale when that slot moved: checked).
    hot: usize,
    max_slots: usize,
    tick: u64,
    stats: CacheStats,
    /// Write-behind run: whole sectors written but not yet sent, starting at `.0`.
    pending: Option<(u64, Vec<u8>)>,
    /// Read-ahead window: device contents (plus later whole-sector writes) starting at sector `.0`.
    window: Option<(u64, Vec<u8>)>,
    /// Sector after the last whole-sector read (sequential detection).
    next_read: u64,
    /// Size of the next read-ahead refill (sectors).
    ahead: u64,
}

impl SectorCache {
    /// A cache of about `bytes` bytes (at least 16 sectors) over `dev`.
    pub fn new(dev: Arc<dyn BlockDevice>, bytes: usize) -> Self {
        let info = dev.info();
        let ss = info.sector_size.max(1) as usize;
        let size = info.bytes();
        Self {
            dev,
            ss,
            size,
            slots: Vec::new(),
            index: BTreeMap::new(),
            hot: 0,
            max_slots: (bytes / ss).max(16),
            tick: 0,
            stats: CacheStats::default(),
            pending: None,
            window: None,
            next_read: u64::MAX,
            ahead: READ_AHEAD,
        }
    }

    /// Device size (bytes).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Request counters so far.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    fn dev_read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        self.stats.reads += 1;
        libos::task::wait(self.dev.read(sector, buf)).map_err(|error| StorageError::Device { sector, error })
    }

    fn dev_write(&mut self, sector: u64, buf: &[u8]) -> Result<(), StorageError> {
        self.stats.writes += 1;
        libos::task::wait(self.dev.write(sector, buf)).map_err(|error| StorageError::Device { sector, error })
    }

    /// Sends the write-behind run (see the module's ordering note). When the device fails it, the run stays
    /// pending and the next send retries it: the cache never forgets a write the device did not take, so a
    /// later [`sync`](Self::sync) cannot succeed without it.
    fn send_pending(&mut self) -> Result<(), StorageError> {
        let Some((sector, data)) = self.pending.take() else { return Ok(()) };
        let sent = self.dev_write(sector, &data);
        if sent.is_err() {
            self.pending = Some((sector, data));
        }
        sent
    }

    /// Copies whole sectors `buf` at `sector` into the overlapping part of the read-ahead window, so it always
    /// holds the newest contents.
    fn patch_window(&mut self, sector: u64, buf: &[u8]) {
        let ss = self.ss;
        if let Some((w, data)) = &mut self.window {
            let (ws, we) = (*w, *w + (data.len() / ss) as u64);
            let (from, to) = (sector.max(ws), (sector + (buf.len() / ss) as u64).min(we));
            if from < to {
                let (src, dst) = ((from - sector) as usize * ss, (from - ws) as usize * ss);
                let len = (to - from) as usize * ss;
                data[dst..dst + len].copy_from_slice(&buf[src..src + len]);
            }
        }
    }

    /// Whole sectors `buf` at `sector`: refreshes cached copies and the read-ahead window, then joins the
    /// write-behind run (or starts a new one after sending the old).
    ///
    /// The old run is sent before the cached copies change, so a failed send leaves the cache as it was; a
    /// failed write of a run too large to gather stays pending (retried by the next send).
    fn write_sectors(&mut self, sector: u64, buf: &[u8]) -> Result<(), StorageError> {
        let ss = self.ss;
        let n = (buf.len() / ss) as u64;
        let continues = self.pending.as_ref().is_some_and(|(p, data)| {
            *p + (data.len() / ss) as u64 == sector && data.len() + buf.len() <= WRITE_BEHIND_MAX
        });
        if !continues {
            self.send_pending()?;
        }
        for (&s, &i) in self.index.range(sector..sector + n) {
            let at = (s - sector) as usize * ss;
            let slot = &mut self.slots[i];
            slot.data.copy_from_slice(&buf[at..at + ss]);
            slot.dirty = false;
        }
        self.patch_window(sector, buf);
        match &mut self.pending {
            Some((_, data)) if continues => data.extend_from_slice(buf),
            _ if buf.len() >= WRITE_BEHIND_MAX => {
                if let Err(e) = self.dev_write(sector, buf) {
                    self.pending = Some((sector, buf.to_vec()));
                    return Err(e);
                }
            }
            _ => {
                let mut data = Vec::with_capacity(WRITE_BEHIND_MAX);
                data.extend_from_slice(buf);
                self.pending = Some((sector, data));
            }
        }
        Ok(())
    }

    /// Whole sectors at `sector` into `out`: from the read-ahead window when it holds them, refilling it when
    /// the read continues the previous one, else one device request; cached sectors are overlaid (they may be
    /// dirty).
    fn read_sectors(&mut self, sector: u64, out: &mut [u8]) -> Result<(), StorageError> {
        let ss = self.ss;
        let n = (out.len() / ss) as u64;
        let sequential = sector == self.next_read;
        self.next_read = sector + n;
        let total = self.size / ss as u64;
        let in_window = |w: &Option<(u64, Vec<u8>)>| {
            w.as_ref().is_some_and(|(ws, d)| sector >= *ws && sector + n <= *ws + (d.len() / ss) as u64)
        };
        if !in_window(&self.window) && sequential && out.len() < READ_AHEAD_MAX {
            self.send_pending()?;
            self.ahead = (self.ahead * 2).min((READ_AHEAD_MAX / ss) as u64).max(n);
            let count = self.ahead.min(total.saturating_sub(sector)).max(n);
            let mut data = self.window.take().map(|(_, d)| d).unwrap_or_default();
            data.resize(count as usize * ss, 0);
            self.dev_read(sector, &mut data)?;
            self.window = Some((sector, data));
        } else if !sequential {
            self.ahead = READ_AHEAD;
        }
        match &self.window {
            Some((ws, data)) if in_window(&self.window) => {
                let at = (sector - ws) as usize * ss;
                out.copy_from_slice(&data[at..at + out.len()]);
            }
            _ => {
                self.send_pending()?;
                self.dev_read(sector, out)?;
            }
        }
        for (&s, &i) in self.index.range(sector..sector + n) {
            let at = (s - sector) as usize * ss;
            out[at..at + ss].copy_from_slice(&self.slots[i].data);
        }
        Ok(())
    }

    fn evict_one(&mut self) -> Result<(), StorageError> {
        // Ties (sectors read ahead and never used) go to the lowest sector.
        let Some((at, slot)) = self.slots.iter().enumerate().min_by_key(|(_, s)| (s.used, s.sector)) else {
            return Ok(());
        };
        let victim = slot.sector;
        if slot.dirty {
            let data = slot.data.clone();
            self.send_pending()?;
            self.dev_write(victim, &data)?;
        }
        self.index.remove(&victim);
        self.slots.swap_remove(at);
        if let Some(moved) = self.slots.get(at) {
            self.index.insert(moved.sector, at);
        }
        Ok(())
    }

    /// The cached sector `sector`, read (with read-ahead) on a miss.
    fn slot(&mut self, sector: u64) -> Result<&mut Slot, StorageError> {
        self.tick += 1;
        let tick = self.tick;
        if self.slots.get(self.hot).is_some_and(|s| s.sector == sector) {
            let slot = &mut self.slots[self.hot];
            slot.used = tick;
            return Ok(slot);
        }
        if !self.index.contains_key(&sector) {
            let total = self.size / self.ss as u64;
            let count = READ_AHEAD.min(total.saturating_sub(sector)).max(1);
            // Evict before reading: a dirty victim inside the read-ahead range is then written first, so the
            // read returns its current contents.
            while self.slots.len() + count as usize > self.max_slots && !self.slots.is_empty() {
                self.evict_one()?;
            }
            let mut buf = vec![0u8; count as usize * self.ss];
            self.send_pending()?;
            self.dev_read(sector, &mut buf)?;
            for (s, chunk) in (sector..).zip(buf.chunks_exact(self.ss)) {
                // Sectors already cached may be dirty and newer than the device: keep them.
                if let Entry::Vacant(v) = self.index.entry(s) {
                    v.insert(self.slots.len());
                    self.slots.push(Slot { sector: s, data: chunk.into(), dirty: false, used: 0 });
                }
            }
        }
        // Inserted just above when it was missing.
        self.hot = *self.index.get(&sector).ok_or(StorageError::UnexpectedEof)?;
        let slot = &mut self.slots[self.hot];
        slot.used = tick;
        Ok(slot)
    }

    /// Reads up to `buf.len()` bytes at byte `pos`; fewer at the end of the device (0 past it).
    pub fn read_at(&mut self, pos: u64, buf: &mut [u8]) -> Result<usize, StorageError> {
        let len = (buf.len() as u64).min(self.size.saturating_sub(pos)) as usize;
        let ss = self.ss;
        let mut done = 0;
        while done < len {
            let p = pos + done as u64;
            let sector = p / ss as u64;
            let off = (p % ss as u64) as usize;
            let left = len - done;
            if off == 0 && left >= ss {
                let n = left / ss;
                self.read_sectors(sector, &mut buf[done..done + n * ss])?;
                done += n * ss;
            } else {
                let chunk = (ss - off).min(left);
                let slot = self.slot(sector)?;
                buf[done..done + chunk].copy_from_slice(&slot.data[off..off + chunk]);
                done += chunk;
            }
        }
        Ok(len)
    }

    /// Writes up to `buf.len()` bytes at byte `pos`; fewer at the end of the device (0 past it). Partial
    /// sectors stay dirty in the cache, whole sectors in the write-behind run, until
    /// [`write_back`](Self::write_back).
    pub fn write_at(&mut self, pos: u64, buf: &[u8]) -> Result<usize, StorageError> {
        let len = (buf.len() as u64).min(self.size.saturating_sub(pos)) as usize;
        let ss = self.ss;
        let mut done = 0;
        while done < len {
            let p = pos + done as u64;
            let sector = p / ss as u64;
            let off = (p % ss as u64) as usize;
            let left = len - done;
            if off == 0 && left >= ss {
                let n = left / ss;
                self.write_sectors(sector, &buf[done..done + n * ss])?;
                done += n * ss;
            } else {
                let chunk = (ss - off).min(left);
                let windowed =
                    self.window.as_ref().is_some_and(|(ws, d)| sector >= *ws && sector < ws + (d.len() / ss) as u64);
                let slot = self.slot(sector)?;
                slot.data[off..off + chunk].copy_from_slice(&buf[done..done + chunk]);
                slot.dirty = true;
                if windowed {
                    let data = slot.data.clone();
                    self.patch_window(sector, &data);
                }
                done += chunk;
            }
        }
        Ok(len)
    }

    /// Writes every dirty sector to the device (ascending, contiguous runs as one request). After it, a
    /// completed write is in the device; it is durable after [`sync`](Self::sync).
    pub fn write_back(&mut self) -> Result<(), StorageError> {
        self.send_pending()?;
        let dirty: Vec<u64> = self.index.iter().filter(|(_, &i)| self.slots[i].dirty).map(|(&n, _)| n).collect();
        let max_run = (self.dev.info().max_transfer / self.ss).max(1);
        let mut i = 0;
        while i < dirty.len() {
            let mut j = i + 1;
            while j < dirty.len() && dirty[j] == dirty[j - 1] + 1 && j - i < max_run {
                j += 1;
            }
            let mut buf = Vec::with_capacity((j - i) * self.ss);
            for s in &dirty[i..j] {
                if let Some(&at) = self.index.get(s) {
                    buf.extend_from_slice(&self.slots[at].data);
                }
            }
            self.dev_write(dirty[i], &buf)?;
            for s in &dirty[i..j] {
                if let Some(&at) = self.index.get(s) {
                    self.slots[at].dirty = false;
                }
            }
            i = j;
        }
        Ok(())
    }

    /// [`write_back`](Self::write_back), then a device cache flush: returns when everything written so far is
    /// durable.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.write_back()?;
        self.stats.flushes += 1;
        libos::task::wait(self.dev.flush()).map_err(|error| StorageError::Device { sector: 0, error })
    }
}

/// The storage object the FAT library owns: a byte position over a shared [`SectorCache`].
pub struct Storage {
    cache: Arc<Mutex<SectorCache>>,
    pos: u64,
}

impl Storage {
    /// Storage at byte 0 of `cache`.
    pub fn new(cache: Arc<Mutex<SectorCache>>) -> Self {
        Self { cache, pos: 0 }
    }
}

impl fatfs::IoBase for Storage {
    type Error = StorageError;
}

impl fatfs::Read for Storage {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, StorageError> {
        let n = self.cache.lock().read_at(self.pos, buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl fatfs::Write for Storage {
    fn write(&mut self, buf: &[u8]) -> Result<usize, StorageError> {
        let n = self.cache.lock().write_at(self.pos, buf)?;
        self.pos += n as u64;
        Ok(n)
    }

    /// Writes dirty sectors back (no device flush: that is [`SectorCache::sync`]'s job).
    fn flush(&mut self) -> Result<(), StorageError> {
        self.cache.lock().write_back()
    }
}

impl fatfs::Seek for Storage {
    fn seek(&mut self, pos: fatfs::SeekFrom) -> Result<u64, StorageError> {
        let new = match pos {
            fatfs::SeekFrom::Start(n) => Some(n),
            fatfs::SeekFrom::End(d) => self.cache.lock().size().checked_add_signed(d),
            fatfs::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new.ok_or(StorageError::UnexpectedEof)?;
        Ok(self.pos)
    }
}
