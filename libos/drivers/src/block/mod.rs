//! What the disk drivers of this crate share above their hardware queues: the request engine
//! ([`engine::BlockQueue`]: request slots with driver-owned bounce buffers, splitting at the largest transfer,
//! several requests in flight, completion by interrupt, dropped futures handled) used by NVMe and virtio-scsi,
//! the [`engine::Disk`] that makes each NVMe namespace or SCSI logical unit behind one queue a
//! `libos::dev::BlockDevice`, and the boot log's description of a disk.
//! Source: the `libos::dev::BlockDevice` contract (several requests in flight on `&self`, interrupt-driven).
#![forbid(unsafe_code)]

pub mod engine;

use alloc::format;
use alloc::string::String;
use libos::dev::BlockInfo;

pub use engine::{BlockQueue, Disk, Op, Piece, Queue};

/// A heap bounce buffer grown to at least `len` bytes (zero filled), as a slice: what a [`Queue::buffer`] over
/// identity-mapped heap memory (the virtio drivers') returns.
pub fn grow(data: &mut alloc::vec::Vec<u8>, len: usize) -> &mut [u8] {
    if data.len() < len {
        data.resize(len, 0);
    }
    &mut data[..]
}

/// `bytes` in the largest binary unit that gives at least 1, with one decimal unless exact:
/// "64 MiB", "1.5 GiB", "512 bytes".
pub fn human_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (unit, name) in UNITS {
        if bytes >= unit {
            let whole = bytes / unit;
            let tenths = (bytes % unit) * 10 / unit;
            return if bytes.is_multiple_of(unit) {
                format!("{whole} {name}")
            } else {
                format!("{whole}.{tenths} {name}")
            };
        }
    }
    format!("{bytes} bytes")
}

/// The start of every disk's boot log line: `NAME capacity N sectors (SIZE) sector S bytes max transfer K KiB`
/// and ` read-only` when it is; drivers append their own parameters (features, queues, interrupts).
pub fn describe(info: &BlockInfo) -> String {
    format!(
        "{} capacity {} sectors ({}) sector {} bytes max transfer {} KiB{}",
        info.name,
        info.capacity,
        human_size(info.bytes()),
        info.sector_size,
        info.max_transfer / 1024,
        if info.read_only { " read-only" } else { "" },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_descriptions() {
        assert_eq!(human_size(64 << 20), "64 MiB");
        assert_eq!(human_size(3 << 29), "1.5 GiB");
        assert_eq!(human_size(512), "512 bytes");
        assert_eq!(human_size(1536), "1.5 KiB");
        let info = BlockInfo {
            name: "d".into(),
            sector_size: 4096,
            capacity: 16384,
            read_only: true,
            flush: false,
            max_transfer: 65536,
        };
        assert_eq!(
            describe(&info),
            "d capacity 16384 sectors (64 MiB) sector 4096 bytes max transfer 64 KiB read-only"
        );
    }
}
