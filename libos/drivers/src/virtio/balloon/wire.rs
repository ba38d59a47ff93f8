//! virtio-balloon's wire formats: the feature bits, the configuration layout (`num_pages`, `actual`), the page
//! frame number arrays of the inflate and deflate virtqueues and the statistics buffer of the stats virtqueue.
//! Source: virtio 1.2 §5.5.3 (feature bits), §5.5.4 (`struct virtio_balloon_config`), §5.5.6 (le32 page frame
//! numbers of 4096-byte pages), §5.5.6.3 (`struct virtio_balloon_stat`, packed: le16 tag, le64 val).
#![forbid(unsafe_code)]

use alloc::vec::Vec;
use core::fmt;
use libos::mem::balloon::PageRange;
use libos::wire::{read_u32, write_u16, write_u32, write_u64, Field};

/// `VIRTIO_BALLOON_F_MUST_TELL_HOST`: the host must be told (and must have used the deflateq buffer) before
/// the guest uses deflated pages (§5.5.6.1).
pub const F_MUST_TELL_HOST: u64 = 1 << 0;
/// `VIRTIO_BALLOON_F_STATS_VQ`: the stats virtqueue (queue 2) is present.
pub const F_STATS_VQ: u64 = 1 << 1;
/// `VIRTIO_BALLOON_F_DEFLATE_ON_OOM`: the guest may deflate when it runs out of memory.
pub const F_DEFLATE_ON_OOM: u64 = 1 << 2;
/// `VIRTIO_BALLOON_F_FREE_PAGE_HINT`: the free page hinting virtqueue is present (not used).
pub const F_FREE_PAGE_HINT: u64 = 1 << 3;
/// `VIRTIO_BALLOON_F_PAGE_POISON`: the guest poisons free pages with `poison_val` (not used).
pub const F_PAGE_POISON: u64 = 1 << 4;
/// `VIRTIO_BALLOON_F_PAGE_REPORTING`: the free page reporting virtqueue is present (not used).
pub const F_PAGE_REPORTING: u64 = 1 << 5;

/// The feature bits' names, for the boot log (§5.5.3, and `VERSION_1` from §6).
pub const FEATURE_NAMES: &[(u64, &str)] = &[
    (F_MUST_TELL_HOST, "MUST_TELL_HOST"),
    (F_STATS_VQ, "STATS_VQ"),
    (F_DEFLATE_ON_OOM, "DEFLATE_ON_OOM"),
    (F_FREE_PAGE_HINT, "FREE_PAGE_HINT"),
    (F_PAGE_POISON, "PAGE_POISON"),
    (F_PAGE_REPORTING, "PAGE_REPORTING"),
    (crate::virtio::net::F_VERSION_1, "VERSION_1"),
];

/// Index of the inflate virtqueue (inflateq).
pub const QUEUE_INFLATE: u16 = 0;
/// Index of the deflate virtqueue (deflateq).
pub const QUEUE_DEFLATE: u16 = 1;
/// Index of the stats virtqueue (statsq; with [`F_STATS_VQ`]).
pub const QUEUE_STATS: u16 = 2;

/// Bytes per balloon page: page frame numbers count 4096-byte pages whatever the guest's page size (§5.5.6).
pub const BALLOON_PAGE_SIZE: u64 = 4096;

/// Configuration space fields (§5.5.4), little-endian also on the legacy interface (§5.5.4.1).
pub mod config {
    use super::Field;
    /// `num_pages`: the balloon size the device wants (pages); written by the device.
    pub const NUM_PAGES: Field = 0..4;
    /// `actual`: the balloon size the driver has reached (pages); written by the driver.
    pub const ACTUAL: Field = 4..8;
    /// Bytes the driver reads and writes.
    pub const LEN: usize = 8;
}

/// The configuration fields the driver uses (§5.5.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigRepr {
    /// Pages the device wants in the balloon.
    pub num_pages: u32,
    /// Pages the driver has given.
    pub actual: u32,
}

impl ConfigRepr {
    /// Parses the first [`config::LEN`] bytes. `None` when `b` is shorter.
    pub fn parse(b: &[u8]) -> Option<Self> {
        (b.len() >= config::LEN)
            .then(|| ConfigRepr { num_pages: read_u32(b, config::NUM_PAGES), actual: read_u32(b, config::ACTUAL) })
    }
}

/// A page frame number the le32 arrays cannot carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PfnTooLarge {
    /// The page frame number (physical address / 4096).
    pub pfn: u64,
}

impl fmt::Display for PfnTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "page frame number {:#x} does not fit the le32 of virtio-balloon's arrays", self.pfn)
    }
}

/// The inflateq/deflateq buffer for `ranges`: one le32 page frame number per page (§5.5.6). Errors: a frame at or
/// above 2^32 (16 TiB).
pub fn pfn_array(ranges: &[PageRange]) -> Result<Vec<u8>, PfnTooLarge> {
    let pages: u64 = ranges.iter().map(|r| r.count).sum();
    let mut out = Vec::with_capacity(pages as usize * 4);
    for r in ranges {
        for pfn in r.start..r.end() {
            let v = u32::try_from(pfn).map_err(|_| PfnTooLarge { pfn })?;
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    Ok(out)
}

/// Statistics tags (§5.5.6.3).
pub mod tag {
    /// `VIRTIO_BALLOON_S_SWAP_IN`: pages swapped in.
    pub const SWAP_IN: u16 = 0;
    /// `VIRTIO_BALLOON_S_SWAP_OUT`: pages swapped out.
    pub const SWAP_OUT: u16 = 1;
    /// `VIRTIO_BALLOON_S_MAJFLT`: major page faults.
    pub const MAJFLT: u16 = 2;
    /// `VIRTIO_BALLOON_S_MINFLT`: minor page faults.
    pub const MINFLT: u16 = 3;
    /// `VIRTIO_BALLOON_S_MEMFREE`: memory not used for any purpose (bytes).
    pub const MEMFREE: u16 = 4;
    /// `VIRTIO_BALLOON_S_MEMTOT`: memory available to the guest (bytes).
    pub const MEMTOT: u16 = 5;
    /// `VIRTIO_BALLOON_S_AVAIL`: memory that can be allocated without reclaim, an estimate (bytes).
    pub const AVAIL: u16 = 6;
}

/// Bytes of one `struct virtio_balloon_stat` (packed).
pub const STAT_LEN: usize = 10;

mod stat {
    use super::Field;
    pub const TAG: Field = 0..2;
    pub const VAL: Field = 2..10;
}

/// The stats virtqueue buffer for `stats`: one packed `(le16 tag, le64 val)` per entry, in order (§5.5.6.3).
pub fn stats_buffer(stats: &[(u16, u64)]) -> Vec<u8> {
    let mut out = alloc::vec![0u8; stats.len() * STAT_LEN];
    for (chunk, &(t, v)) in out.chunks_exact_mut(STAT_LEN).zip(stats) {
        write_u16(chunk, stat::TAG, t);
        write_u64(chunk, stat::VAL, v);
    }
    out
}

/// Writes `actual` into a configuration image `b` of at least [`config::LEN`] bytes (for models and tests).
pub fn set_actual(b: &mut [u8], actual: u32) {
    write_u32(b, config::ACTUAL, actual);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_and_short_buffers_are_refused() {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&8192u32.to_le_bytes());
        set_actual(&mut b, 7);
        assert_eq!(ConfigRepr::parse(&b), Some(ConfigRepr { num_pages: 8192, actual: 7 }));
        assert_eq!(ConfigRepr::parse(&b[..7]), None);
    }

    #[test]
    fn pfn_arrays_are_le32_per_page() {
        let a = pfn_array(&[PageRange { start: 0x1000, count: 2 }, PageRange { start: 0x20, count: 1 }]).unwrap();
        assert_eq!(a, [0x00, 0x10, 0, 0, 0x01, 0x10, 0, 0, 0x20, 0, 0, 0]);
        assert_eq!(pfn_array(&[PageRange { start: 1 << 32, count: 1 }]), Err(PfnTooLarge { pfn: 1 << 32 }));
        assert!(pfn_array(&[]).unwrap().is_empty());
    }

    #[test]
    fn stats_are_packed_tag_value_pairs() {
        let b = stats_buffer(&[(tag::MEMFREE, 0x1122), (tag::MEMTOT, 1 << 40)]);
        assert_eq!(b.len(), 20);
        assert_eq!(&b[0..10], &[4, 0, 0x22, 0x11, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[10..20], &[5, 0, 0, 0, 0, 0, 0, 1, 0, 0]);
    }
}
