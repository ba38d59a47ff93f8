//! A [`BlockDevice`] in memory for host tests (this crate's and apps'), modelling a volatile write cache:
//! reads see every completed write; only what was there at the last completed flush survives a simulated power
//! cut ([`MemDisk::after_power_cut`]). Failures can be injected: every request failing ([`MemDisk::broken`]) or
//! the power going after a number of writes and flushes ([`MemDisk::budget`]).

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use libos::dev::{BlockDevice, BlockError, BlockFuture, BlockInfo};
use spin::Mutex;

/// A disk of 512-byte sectors held in memory.
pub struct MemDisk {
    /// Name "memdisk0", 512-byte sectors, the image's capacity, flush supported, 64 KiB max transfer.
    pub info: BlockInfo,
    /// What reads see: every completed write.
    pub current: Mutex<Vec<u8>>,
    /// What survives a power cut: the contents at the last completed flush.
    pub durable: Mutex<Vec<u8>>,
    /// Flushes completed.
    pub flushes: AtomicU64,
    /// Writes completed.
    pub writes: AtomicU64,
    /// Fail every request with an I/O error ("medium error").
    pub broken: AtomicBool,
    /// Writes and flushes left before the power goes; later ones fail with "power lost" (`u64::MAX`: never).
    pub budget: AtomicU64,
}

impl MemDisk {
    /// A zeroed disk of `bytes` bytes (a multiple of 512).
    pub fn new(bytes: usize) -> Arc<Self> {
        Self::from_image(vec![0; bytes], false)
    }

    /// A disk holding `image`, both as current and as durable contents.
    pub fn from_image(image: Vec<u8>, read_only: bool) -> Arc<Self> {
        let info = BlockInfo {
            name: "memdisk0".into(),
            sector_size: 512,
            capacity: image.len() as u64 / 512,
            read_only,
            flush: true,
            max_transfer: 64 * 1024,
        };
        Arc::new(Self {
            info,
            durable: Mutex::new(image.clone()),
            current: Mutex::new(image),
            flushes: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            broken: AtomicBool::new(false),
            budget: AtomicU64::new(u64::MAX),
        })
    }

    /// A zeroed disk of `bytes` bytes formatted with FAT ([`crate::FatFs::format`]).
    ///
    /// # Panics
    /// When formatting fails (the size is too small for FAT).
    pub fn formatted(bytes: usize) -> Arc<Self> {
        let d = Self::new(bytes);
        crate::FatFs::format(d.clone()).expect("formatting the memory disk");
        d
    }

    /// A new disk holding what survived a power cut of this one.
    pub fn after_power_cut(&self) -> Arc<Self> {
        Self::from_image(self.durable.lock().clone(), false)
    }

    fn error(&self, sector: u64, detail: &str) -> BlockError {
        BlockError::Io { device: self.info.name.clone(), sector, detail: detail.into() }
    }

    /// The error a write or flush at `sector` meets now, if any; spends one unit of the power budget.
    fn fails(&self, sector: u64) -> Option<BlockError> {
        if self.broken.load(Ordering::Relaxed) {
            return Some(self.error(sector, "medium error"));
        }
        let powered = self.budget.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1)).is_ok();
        (!powered).then(|| self.error(sector, "power lost"))
    }
}

impl BlockDevice for MemDisk {
    fn info(&self) -> &BlockInfo {
        &self.info
    }

    fn read<'a>(&'a self, sector: u64, buf: &'a mut [u8]) -> BlockFuture<'a> {
        Box::pin(async move {
            self.info.check(sector, buf.len())?;
            if self.broken.load(Ordering::Relaxed) {
                return Err(self.error(sector, "medium error"));
            }
            let at = sector as usize * 512;
            buf.copy_from_slice(&self.current.lock()[at..at + buf.len()]);
            Ok(())
        })
    }

    fn write<'a>(&'a self, sector: u64, buf: &'a [u8]) -> BlockFuture<'a> {
        Box::pin(async move {
            self.info.check(sector, buf.len())?;
            if self.info.read_only {
                return Err(BlockError::ReadOnly { device: self.info.name.clone() });
            }
            if let Some(e) = self.fails(sector) {
                return Err(e);
            }
            self.writes.fetch_add(1, Ordering::Relaxed);
            let at = sector as usize * 512;
            self.current.lock()[at..at + buf.len()].copy_from_slice(buf);
            Ok(())
        })
    }

    fn flush(&self) -> BlockFuture<'_> {
        Box::pin(async move {
            if let Some(e) = self.fails(0) {
                return Err(e);
            }
            self.flushes.fetch_add(1, Ordering::Relaxed);
            let now = self.current.lock().clone();
            *self.durable.lock() = now;
            Ok(())
        })
    }
}
