//! GUID Partition Tables as the disk probe reads them (`fs::gpt::partitions`, UEFI 2.10 §5.3): the input is a
//! disk of 512-byte sectors; when the first byte asks for it the target fixes the CRC32s of the primary (and
//! backup) header and entry array after the fuzzer's bytes, so the fields behind the CRCs are reached. Each
//! partition found is opened as a `PartitionDevice`. Invariants: no panic; partitions are listed by ascending
//! 1-based index with first ≤ last; a partition device opened on the disk lies inside it and refuses sectors
//! past its end; the partitions written back as a fresh GPT (`HeaderRepr::emit`, `Partition::emit`) read back
//! identical.
#![no_main]

use fs::gpt::{partitions, HeaderRepr, Partition, ENTRY_LEN, HEADER_LEN};
use fs::memdisk::MemDisk;
use fs::partition::PartitionDevice;
use libfuzzer_sys::fuzz_target;
use libos::dev::BlockDevice;
use libos::wire::Guid;
use std::sync::Arc;

const SECTOR: usize = 512;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let sectors = rest.len().div_ceil(SECTOR).max(3);
    let mut image = vec![0u8; sectors * SECTOR];
    image[..rest.len()].copy_from_slice(rest);
    if flags & 1 != 0 {
        fix_crcs(&mut image, 1);
    }
    if flags & 2 != 0 {
        fix_crcs(&mut image, sectors as u64 - 1);
    }
    let disk = MemDisk::from_image(image, true);
    let parts = match partitions(&*disk) {
        Ok(Some(parts)) => parts,
        Ok(None) => return,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let mut last_index = 0;
    for p in &parts {
        assert!(p.index > last_index && p.first_lba <= p.last_lba, "{p:?}");
        last_index = p.index;
        let _ = p.is_data();
        let Some(dev) = PartitionDevice::new(disk.clone() as Arc<dyn BlockDevice>, p) else { continue };
        let capacity = dev.info().capacity;
        assert_eq!(capacity, p.last_lba - p.first_lba + 1);
        assert!(p.first_lba + capacity <= disk.info().capacity, "partition {p:?} past the disk");
        let mut buf = [0u8; SECTOR];
        assert!(libos::task::wait(dev.read(0, &mut buf)).is_ok(), "first sector of {p:?} unreadable");
        assert!(libos::task::wait(dev.read(capacity, &mut buf)).is_err(), "read past the end of {p:?}");
    }
    round_trip(&parts);
});

/// Gives the header at `lba` (if its size field is sane) the CRC32s `validate` and `parse_entries` check.
fn fix_crcs(image: &mut [u8], lba: u64) {
    let at = lba as usize * SECTOR;
    let Some(h) = image.get(at..at + SECTOR) else { return };
    let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().expect("4 bytes"));
    let size = u32_at(12) as usize;
    if !(HEADER_LEN..=SECTOR).contains(&size) {
        return;
    }
    let entry_lba = u64::from_le_bytes(h[72..80].try_into().expect("8 bytes"));
    let len = u32_at(80) as usize * u32_at(84) as usize;
    let start = usize::try_from(entry_lba).ok().and_then(|l| l.checked_mul(SECTOR));
    if let Some(array) = start.and_then(|s| image.get(s..s.checked_add(len)?)) {
        let crc = crc32fast::hash(array);
        image[at + 88..at + 92].copy_from_slice(&crc.to_le_bytes());
    }
    image[at + 16..at + 20].fill(0);
    let crc = crc32fast::hash(&image[at..at + size]);
    image[at + 16..at + 20].copy_from_slice(&crc.to_le_bytes());
}

/// Writes `parts` as a fresh GPT (header at LBA 1, entries from LBA 2 at their indices) and reads it back.
fn round_trip(parts: &[Partition]) {
    let count = parts.iter().map(|p| p.index).max().unwrap_or(1);
    let array_sectors = (count as usize * ENTRY_LEN).div_ceil(SECTOR);
    let capacity = 2 + array_sectors as u64 + 1;
    let mut image = vec![0u8; capacity as usize * SECTOR];
    let array = &mut image[2 * SECTOR..2 * SECTOR + count as usize * ENTRY_LEN];
    for p in parts {
        let at = (p.index as usize - 1) * ENTRY_LEN;
        p.emit(Guid([p.index as u8; 16]), &mut array[at..at + ENTRY_LEN]);
    }
    let header = HeaderRepr {
        my_lba: 1,
        alternate_lba: capacity - 1,
        first_usable_lba: 0,
        last_usable_lba: u64::MAX,
        disk_guid: Guid([7; 16]),
        entry_lba: 2,
        num_entries: count,
        entry_size: ENTRY_LEN as u32,
        entries_crc32: crc32fast::hash(array),
    };
    header.emit(&mut image[SECTOR..2 * SECTOR]);
    let disk = MemDisk::from_image(image, true);
    let again = partitions(&*disk).unwrap_or_else(|e| panic!("re-emitted GPT of {parts:?} is refused: {e}"));
    assert_eq!(again.as_deref(), Some(parts), "partitions changed through emit");
}
