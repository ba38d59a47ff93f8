//! virtio-blk configuration space → the geometry the driver uses: logical sector size, capacity in logical
//! sectors, largest transfer per descriptor chain; feature-bit names for the boot log.
//! Source: virtio 1.2 §5.2.3 (feature bits), §5.2.4 (`struct virtio_blk_config`), §5.2.5 (initialisation).
#![forbid(unsafe_code)]

use alloc::string::String;
use core::fmt;

use super::{F_BLK_SIZE, F_CONFIG_WCE, F_DISCARD, F_FLUSH, F_GEOMETRY, F_MQ, F_RO, F_SEG_MAX, F_SIZE_MAX};
use super::{F_TOPOLOGY, F_WRITE_ZEROES};
use crate::virtio::net::{F_ACCESS_PLATFORM, F_RING_EVENT_IDX, F_RING_INDIRECT_DESC, F_VERSION_1};

/// Offset of `le64 capacity` (512-byte sectors) in the configuration space (bytes).
pub const CONFIG_CAPACITY: usize = 0;
/// Offset of `le32 size_max` (bytes per segment, valid with `VIRTIO_BLK_F_SIZE_MAX`).
pub const CONFIG_SIZE_MAX: usize = 8;
/// Offset of `le32 seg_max` (segments per request, valid with `VIRTIO_BLK_F_SEG_MAX`).
pub const CONFIG_SEG_MAX: usize = 12;
/// Offset of `le32 blk_size` (logical block size in bytes, valid with `VIRTIO_BLK_F_BLK_SIZE`).
pub const CONFIG_BLK_SIZE: usize = 20;

/// The unit of virtio-blk sector numbers and of `capacity`, whatever the logical block size (bytes).
pub const VIRTIO_SECTOR: u32 = 512;
/// Largest logical block size accepted (bytes); larger values are not in use by any device we know.
pub const MAX_BLK_SIZE: u32 = 64 * 1024;

/// The configuration fields the driver reads, as the device gave them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawConfig {
    /// Capacity (512-byte sectors).
    pub capacity: u64,
    /// Largest segment (bytes).
    pub size_max: u32,
    /// Most segments per request.
    pub seg_max: u32,
    /// Logical block size (bytes).
    pub blk_size: u32,
}

/// A configuration value the driver cannot work with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeometryError {
    /// `blk_size` is not a power of two in 512..=[`MAX_BLK_SIZE`] bytes.
    BlockSize(u32),
    /// `size_max` (bytes) is smaller than one logical sector, so no chain could carry a sector.
    SizeMax {
        /// `size_max` from the configuration space (bytes per segment).
        size_max: u32,
        /// The logical sector size (bytes).
        sector_size: u32,
    },
    /// `seg_max` is 0: no request could carry data.
    SegMax,
}

impl fmt::Display for GeometryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BlockSize(b) => {
                write!(f, "blk_size {b} is not a power of two between 512 and {MAX_BLK_SIZE} bytes")
            }
            Self::SizeMax { size_max, sector_size } => {
                write!(f, "size_max {size_max} bytes is smaller than one {sector_size}-byte sector")
            }
            Self::SegMax => write!(f, "seg_max is 0 (no data segment allowed per request)"),
        }
    }
}

/// What the driver uses of the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Logical sector size (bytes): `blk_size` with `VIRTIO_BLK_F_BLK_SIZE`, else 512.
    pub sector_size: u32,
    /// Capacity in logical sectors (the 512-byte capacity divided down; a partial last sector is unusable).
    pub capacity: u64,
    /// Largest data length of one chain (bytes, a multiple of the sector size): the bounce buffer size, or
    /// `size_max` when smaller (the driver puts the data in one segment).
    pub max_transfer: usize,
}

impl Geometry {
    /// The geometry from negotiated `features` and the `raw` configuration, with bounce buffers of
    /// `bounce` bytes. Fields whose feature is not negotiated are ignored.
    ///
    /// # Errors
    /// [`GeometryError`] for a `blk_size`, `size_max` or `seg_max` no request could satisfy.
    pub fn new(features: u64, raw: &RawConfig, bounce: usize) -> Result<Self, GeometryError> {
        let sector_size = if features & F_BLK_SIZE != 0 {
            let b = raw.blk_size;
            if !b.is_power_of_two() || !(VIRTIO_SECTOR..=MAX_BLK_SIZE).contains(&b) {
                return Err(GeometryError::BlockSize(b));
            }
            b
        } else {
            VIRTIO_SECTOR
        };
        if features & F_SEG_MAX != 0 && raw.seg_max == 0 {
            return Err(GeometryError::SegMax);
        }
        let mut limit = bounce;
        if features & F_SIZE_MAX != 0 {
            limit = limit.min(raw.size_max as usize);
        }
        let ss = sector_size as usize;
        let max_transfer = limit / ss * ss;
        if max_transfer == 0 {
            return Err(GeometryError::SizeMax { size_max: raw.size_max, sector_size });
        }
        let capacity = raw.capacity / u64::from(sector_size / VIRTIO_SECTOR);
        Ok(Self { sector_size, capacity, max_transfer })
    }
}

const FEATURE_NAMES: &[(u64, &str)] = &[
    (F_SIZE_MAX, "SIZE_MAX"),
    (F_SEG_MAX, "SEG_MAX"),
    (F_GEOMETRY, "GEOMETRY"),
    (F_RO, "RO"),
    (F_BLK_SIZE, "BLK_SIZE"),
    (F_FLUSH, "FLUSH"),
    (F_TOPOLOGY, "TOPOLOGY"),
    (F_CONFIG_WCE, "CONFIG_WCE"),
    (F_MQ, "MQ"),
    (F_DISCARD, "DISCARD"),
    (F_WRITE_ZEROES, "WRITE_ZEROES"),
    (F_RING_INDIRECT_DESC, "INDIRECT_DESC"),
    (F_RING_EVENT_IDX, "EVENT_IDX"),
    (F_VERSION_1, "VERSION_1"),
    (F_ACCESS_PLATFORM, "ACCESS_PLATFORM"),
];

/// Names of the known virtio-blk feature bits in `bits`, comma-separated (unknown bits as `bitN`).
pub fn feature_names(bits: u64) -> String {
    crate::virtio::feature_list(bits, FEATURE_NAMES)
}

/// The disk size for boot logs (moved to [`crate::block`], shared by every disk driver).
pub use crate::block::human_size;

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(capacity: u64, size_max: u32, seg_max: u32, blk_size: u32) -> RawConfig {
        RawConfig { capacity, size_max, seg_max, blk_size }
    }

    #[test]
    fn default_geometry_is_512_byte_sectors_and_the_bounce_size() {
        let g = Geometry::new(F_VERSION_1 | F_FLUSH, &raw(131072, 0, 0, 0), 128 * 1024).unwrap();
        assert_eq!(g, Geometry { sector_size: 512, capacity: 131072, max_transfer: 128 * 1024 });
    }

    #[test]
    fn blk_size_converts_capacity_and_rounds_transfers() {
        let g = Geometry::new(F_BLK_SIZE | F_SIZE_MAX, &raw(131073, 10000, 0, 4096), 128 * 1024).unwrap();
        assert_eq!(g.sector_size, 4096);
        assert_eq!(g.capacity, 16384, "131073 512-byte sectors hold 16384 whole 4 KiB sectors");
        assert_eq!(g.max_transfer, 8192, "size_max 10000 rounded down to whole sectors");
        // Fields of features not negotiated are ignored.
        let g = Geometry::new(0, &raw(8, 1, 0, 3), 4096).unwrap();
        assert_eq!((g.sector_size, g.max_transfer), (512, 4096));
    }

    #[test]
    fn unusable_configurations_are_errors() {
        for b in [0, 256, 1000, 128 * 1024] {
            assert_eq!(Geometry::new(F_BLK_SIZE, &raw(8, 0, 0, b), 4096), Err(GeometryError::BlockSize(b)));
        }
        let e = Geometry::new(F_SIZE_MAX | F_BLK_SIZE, &raw(8, 2048, 0, 4096), 65536).unwrap_err();
        assert_eq!(e, GeometryError::SizeMax { size_max: 2048, sector_size: 4096 });
        assert_eq!(e.to_string(), "size_max 2048 bytes is smaller than one 4096-byte sector");
        assert_eq!(Geometry::new(F_SEG_MAX, &raw(8, 0, 0, 0), 4096), Err(GeometryError::SegMax));
    }

    #[test]
    fn names_and_sizes() {
        assert_eq!(feature_names(F_SEG_MAX | F_BLK_SIZE | F_FLUSH | F_VERSION_1), "SEG_MAX,BLK_SIZE,FLUSH,VERSION_1");
        assert_eq!(feature_names(F_RO | (1 << 40)), "RO,bit40");
        assert_eq!(human_size(64 << 20), "64 MiB");
        assert_eq!(human_size(3 << 29), "1.5 GiB");
        assert_eq!(human_size(512), "512 bytes");
        assert_eq!(human_size(1536), "1.5 KiB");
    }
}
