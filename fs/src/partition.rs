//! A partition of a disk as a [`BlockDevice`] of its own: sector numbers relative to the partition's first
//! sector, requests checked against its length before they reach the disk.
#![forbid(unsafe_code)]

use alloc::boxed::Box;
use alloc::format;
use alloc::sync::Arc;
use libos::dev::{BlockDevice, BlockFuture, BlockInfo};

use crate::gpt;

/// Sectors `[first, first + capacity)` of `disk`, named `DISK:gptN` (GRUB's partition naming).
pub struct PartitionDevice {
    disk: Arc<dyn BlockDevice>,
    first: u64,
    info: BlockInfo,
}

impl PartitionDevice {
    /// GPT partition `p` of `disk`. `None` when the partition reaches past the disk's capacity.
    pub fn new(disk: Arc<dyn BlockDevice>, p: &gpt::Partition) -> Option<Self> {
        let d = disk.info();
        let capacity = p.last_lba.checked_sub(p.first_lba)?.checked_add(1)?;
        if p.first_lba.checked_add(capacity)? > d.capacity {
            return None;
        }
        let info = BlockInfo { name: format!("{}:gpt{}", d.name, p.index), capacity, ..d.clone() };
        Some(PartitionDevice { disk, first: p.first_lba, info })
    }
}

impl BlockDevice for PartitionDevice {
    fn info(&self) -> &BlockInfo {
        &self.info
    }

    fn read<'a>(&'a self, sector: u64, buf: &'a mut [u8]) -> BlockFuture<'a> {
        Box::pin(async move {
            self.info.check(sector, buf.len())?;
            self.disk.read(self.first + sector, buf).await
        })
    }

    fn write<'a>(&'a self, sector: u64, buf: &'a [u8]) -> BlockFuture<'a> {
        Box::pin(async move {
            self.info.check(sector, buf.len())?;
            self.disk.write(self.first + sector, buf).await
        })
    }

    fn flush(&self) -> BlockFuture<'_> {
        self.disk.flush()
    }
}
