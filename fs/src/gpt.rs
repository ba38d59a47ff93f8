//! GUID Partition Table: checked views of the GPT header and partition entries, and finding Zirvium's data
//! partition on a disk (what `images package --data` writes).
//!
//! Source: UEFI Specification 2.10 §5.3.2 (GPT header, Table 5-5: signature "EFI PART", header size and
//! CRC32, MyLBA, AlternateLBA, usable LBAs, disk GUID, entry array LBA, count, size and CRC32), §5.3.3
//! (partition entry, Table 5-6: type GUID, unique GUID, starting/ending LBA inclusive, attributes, a 36-unit
//! UTF-16LE name), Appendix A (GUID byte order: the first three fields little-endian, [`libos::wire::Guid`]).
//! The CRC32 is the IEEE 802.3 one (`crc32fast`). When the primary header is damaged the backup at the disk's
//! last LBA is used, as §5.3.2 prescribes.
#![forbid(unsafe_code)]

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use libos::dev::BlockDevice;
use libos::wire::{self, Guid};

/// The GPT header signature.
pub const SIGNATURE: &[u8; 8] = b"EFI PART";
/// Smallest header (bytes) — revision 1.0's 92.
pub const HEADER_LEN: usize = 92;
/// Smallest partition entry (bytes); sizes are 128 × 2^n.
pub const ENTRY_LEN: usize = 128;
/// Largest entry array this reader loads (bytes): 128 entries of 128 bytes is the usual 16 KiB.
pub const MAX_ENTRY_ARRAY: usize = 1 << 20;

/// Partition type of Zirvium's data partition: 280FD53C-11F1-417A-9BB9-14BDED155400 (`images package`).
pub const ZIRVIUM_DATA: Guid = Guid::new(0x280f_d53c, 0x11f1, 0x417a, [0x9b, 0xb9, 0x14, 0xbd, 0xed, 0x15, 0x54, 0x00]);
/// The GPT name that also marks a data partition, whatever its type.
pub const DATA_NAME: &str = "zirvium-data";
/// EFI system partition type, C12A7328-F81F-11D2-BA4B-00A0C93EC93B (§5.3.3).
pub const EFI_SYSTEM: Guid = Guid::new(0xc12a_7328, 0xf81f, 0x11d2, [0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b]);

/// Why a GPT was refused; each names the header (by LBA) and the offending value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GptError {
    /// `HeaderSize` below 92 or above the sector size.
    BadHeaderSize {
        /// LBA of the header.
        lba: u64,
        /// Its `HeaderSize` field (bytes).
        size: u32,
    },
    /// The header CRC32 does not match.
    HeaderCrc {
        /// LBA of the header.
        lba: u64,
        /// `HeaderCRC32` as stored.
        stored: u32,
        /// CRC32 computed over the header.
        computed: u32,
    },
    /// `MyLBA` is not where the header was read.
    WrongLba {
        /// LBA the header was read from.
        lba: u64,
        /// Its `MyLBA` field.
        my_lba: u64,
    },
    /// Entry size not 128 × 2^n, or the array larger than [`MAX_ENTRY_ARRAY`] or outside the disk.
    BadEntryArray {
        /// LBA of the header.
        lba: u64,
        /// `NumberOfPartitionEntries`.
        count: u32,
        /// `SizeOfPartitionEntry` (bytes).
        size: u32,
        /// `PartitionEntryLBA`.
        at: u64,
    },
    /// The entry array CRC32 does not match.
    EntriesCrc {
        /// LBA of the header naming the array.
        lba: u64,
        /// `PartitionEntryArrayCRC32` as stored.
        stored: u32,
        /// CRC32 computed over the entry array.
        computed: u32,
    },
    /// A used entry's LBAs are reversed or outside the usable range.
    BadPartition {
        /// Index of the entry in the array (from 0).
        index: u32,
        /// Its `StartingLBA`.
        first: u64,
        /// Its `EndingLBA` (inclusive).
        last: u64,
    },
    /// Reading the disk failed.
    Device(String),
}

impl fmt::Display for GptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadHeaderSize { lba, size } => write!(f, "GPT header at LBA {lba}: header size {size} is invalid"),
            Self::HeaderCrc { lba, stored, computed } => {
                write!(f, "GPT header at LBA {lba}: CRC32 {stored:#010x}, computed {computed:#010x}")
            }
            Self::WrongLba { lba, my_lba } => write!(f, "GPT header at LBA {lba} says it is at LBA {my_lba}"),
            Self::BadEntryArray { lba, count, size, at } => write!(
                f,
                "GPT header at LBA {lba}: entry array of {count} entries of {size} bytes at LBA {at} is invalid"
            ),
            Self::EntriesCrc { lba, stored, computed } => {
                write!(f, "GPT header at LBA {lba}: entry array CRC32 {stored:#010x}, computed {computed:#010x}")
            }
            Self::BadPartition { index, first, last } => {
                write!(f, "GPT partition {index}: LBAs {first}..={last} are reversed or outside the usable range")
            }
            Self::Device(e) => write!(f, "reading the GPT: {e}"),
        }
    }
}

mod field {
    use libos::wire::Field;
    pub const SIGNATURE: Field = 0..8;
    pub const REVISION: Field = 8..12;
    pub const HEADER_SIZE: Field = 12..16;
    pub const HEADER_CRC32: Field = 16..20;
    pub const MY_LBA: Field = 24..32;
    pub const ALTERNATE_LBA: Field = 32..40;
    pub const FIRST_USABLE_LBA: Field = 40..48;
    pub const LAST_USABLE_LBA: Field = 48..56;
    pub const DISK_GUID: Field = 56..72;
    pub const ENTRY_LBA: Field = 72..80;
    pub const NUM_ENTRIES: Field = 80..84;
    pub const ENTRY_SIZE: Field = 84..88;
    pub const ENTRIES_CRC32: Field = 88..92;
    // Partition entry.
    pub const TYPE_GUID: Field = 0..16;
    pub const UNIQUE_GUID: Field = 16..32;
    pub const STARTING_LBA: Field = 32..40;
    pub const ENDING_LBA: Field = 40..48;
    pub const ATTRIBUTES: Field = 48..56;
    pub const NAME: Field = 56..128;
}

/// A checked view of a GPT header at the start of a sector.
#[derive(Clone, Copy, Debug)]
pub struct Header<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Header<T> {
    /// Wraps `buffer` without checks (accessors may panic on a short buffer).
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` when it holds [`HEADER_LEN`] bytes and starts with the signature; `None` otherwise (no
    /// GPT there).
    pub fn new_checked(buffer: T) -> Option<Self> {
        let b = buffer.as_ref();
        (b.len() >= HEADER_LEN && &b[field::SIGNATURE] == SIGNATURE).then_some(Self { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// `Revision` (0x0001_0000 for 1.0).
    pub fn revision(&self) -> u32 {
        wire::read_u32(self.b(), field::REVISION)
    }
    /// `HeaderSize` (bytes).
    pub fn header_size(&self) -> u32 {
        wire::read_u32(self.b(), field::HEADER_SIZE)
    }
    /// `HeaderCRC32`.
    pub fn header_crc32(&self) -> u32 {
        wire::read_u32(self.b(), field::HEADER_CRC32)
    }
    /// `MyLBA`.
    pub fn my_lba(&self) -> u64 {
        wire::read_u64(self.b(), field::MY_LBA)
    }
    /// `AlternateLBA`.
    pub fn alternate_lba(&self) -> u64 {
        wire::read_u64(self.b(), field::ALTERNATE_LBA)
    }
    /// `FirstUsableLBA`.
    pub fn first_usable_lba(&self) -> u64 {
        wire::read_u64(self.b(), field::FIRST_USABLE_LBA)
    }
    /// `LastUsableLBA` (inclusive).
    pub fn last_usable_lba(&self) -> u64 {
        wire::read_u64(self.b(), field::LAST_USABLE_LBA)
    }
    /// `DiskGUID`.
    pub fn disk_guid(&self) -> Guid {
        wire::read_guid(self.b(), field::DISK_GUID)
    }
    /// `PartitionEntryLBA`.
    pub fn entry_lba(&self) -> u64 {
        wire::read_u64(self.b(), field::ENTRY_LBA)
    }
    /// `NumberOfPartitionEntries`.
    pub fn num_entries(&self) -> u32 {
        wire::read_u32(self.b(), field::NUM_ENTRIES)
    }
    /// `SizeOfPartitionEntry` (bytes).
    pub fn entry_size(&self) -> u32 {
        wire::read_u32(self.b(), field::ENTRY_SIZE)
    }
    /// `PartitionEntryArrayCRC32`.
    pub fn entries_crc32(&self) -> u32 {
        wire::read_u32(self.b(), field::ENTRIES_CRC32)
    }

    /// The CRC32 of the header's `HeaderSize` bytes with the CRC field taken as zero. The caller checked
    /// `HeaderSize` against the buffer.
    fn computed_crc32(&self) -> u32 {
        let mut h = crc32fast::Hasher::new();
        let b = &self.b()[..self.header_size() as usize];
        h.update(&b[..field::HEADER_CRC32.start]);
        h.update(&[0; 4]);
        h.update(&b[field::HEADER_CRC32.end..]);
        h.finalize()
    }

    /// Checks size, CRC and `MyLBA` for a header read from `lba`; returns the entry array's byte length.
    /// `capacity` is the disk's size in sectors of `sector_size` bytes.
    pub fn validate(&self, lba: u64, capacity: u64, sector_size: usize) -> Result<usize, GptError> {
        let size = self.header_size();
        if (size as usize) < HEADER_LEN || size as usize > self.b().len().min(sector_size) {
            return Err(GptError::BadHeaderSize { lba, size });
        }
        let computed = self.computed_crc32();
        if computed != self.header_crc32() {
            return Err(GptError::HeaderCrc { lba, stored: self.header_crc32(), computed });
        }
        if self.my_lba() != lba {
            return Err(GptError::WrongLba { lba, my_lba: self.my_lba() });
        }
        let (count, esize, at) = (self.num_entries(), self.entry_size(), self.entry_lba());
        let bytes = (count as usize).checked_mul(esize as usize).filter(|&n| n <= MAX_ENTRY_ARRAY);
        let sectors = bytes.map(|n| n.div_ceil(sector_size) as u64);
        let fits = sectors.is_some_and(|s| at.checked_add(s).is_some_and(|end| end <= capacity));
        if (esize as usize) < ENTRY_LEN || !esize.is_power_of_two() || !fits {
            return Err(GptError::BadEntryArray { lba, count, size: esize, at });
        }
        Ok(bytes.unwrap_or(0))
    }
}

/// A checked view of one partition entry.
#[derive(Clone, Copy, Debug)]
pub struct Entry<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Entry<T> {
    /// Wraps `buffer` without checks.
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` when it holds [`ENTRY_LEN`] bytes.
    pub fn new_checked(buffer: T) -> Option<Self> {
        (buffer.as_ref().len() >= ENTRY_LEN).then_some(Self { buffer })
    }

    /// `PartitionTypeGUID` (all zero: unused entry).
    pub fn type_guid(&self) -> Guid {
        wire::read_guid(self.buffer.as_ref(), field::TYPE_GUID)
    }
    /// `UniquePartitionGUID`.
    pub fn unique_guid(&self) -> Guid {
        wire::read_guid(self.buffer.as_ref(), field::UNIQUE_GUID)
    }
    /// `StartingLBA`.
    pub fn starting_lba(&self) -> u64 {
        wire::read_u64(self.buffer.as_ref(), field::STARTING_LBA)
    }
    /// `EndingLBA` (inclusive).
    pub fn ending_lba(&self) -> u64 {
        wire::read_u64(self.buffer.as_ref(), field::ENDING_LBA)
    }
    /// `Attributes`.
    pub fn attributes(&self) -> u64 {
        wire::read_u64(self.buffer.as_ref(), field::ATTRIBUTES)
    }
    /// `PartitionName`, UTF-16LE up to the first NUL (unpaired surrogates become U+FFFD).
    pub fn name(&self) -> String {
        let units = self.buffer.as_ref()[field::NAME].chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]));
        char::decode_utf16(units.take_while(|&u| u != 0)).map(|c| c.unwrap_or('\u{fffd}')).collect()
    }
}

/// One used partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// 1-based entry index (GRUB's `gptN`).
    pub index: u32,
    /// Partition type.
    pub type_guid: Guid,
    /// First sector.
    pub first_lba: u64,
    /// Last sector (inclusive).
    pub last_lba: u64,
    /// Name.
    pub name: String,
}

impl Partition {
    /// Whether this is Zirvium's data partition: its type, or its name.
    pub fn is_data(&self) -> bool {
        self.type_guid == ZIRVIUM_DATA || self.name == DATA_NAME
    }
}

/// The used entries of the entry array `bytes` described by `header` (already validated, read from `lba`).
///
/// Errors: CRC mismatch; an entry outside `FirstUsableLBA..=LastUsableLBA` or reversed.
pub fn parse_entries<T: AsRef<[u8]>>(header: &Header<T>, lba: u64, bytes: &[u8]) -> Result<Vec<Partition>, GptError> {
    let computed = crc32fast::hash(bytes);
    if computed != header.entries_crc32() {
        return Err(GptError::EntriesCrc { lba, stored: header.entries_crc32(), computed });
    }
    let mut out = Vec::new();
    for (i, raw) in bytes.chunks_exact(header.entry_size() as usize).enumerate() {
        // The chunk is entry_size >= ENTRY_LEN bytes (checked by `validate`).
        let Some(e) = Entry::new_checked(raw) else { break };
        if e.type_guid() == Guid([0; 16]) {
            continue;
        }
        let (first, last) = (e.starting_lba(), e.ending_lba());
        let index = i as u32 + 1;
        if first > last || first < header.first_usable_lba() || last > header.last_usable_lba() {
            return Err(GptError::BadPartition { index, first, last });
        }
        out.push(Partition { index, type_guid: e.type_guid(), first_lba: first, last_lba: last, name: e.name() });
    }
    Ok(out)
}

fn read(dev: &dyn BlockDevice, lba: u64, len: usize) -> Result<Vec<u8>, GptError> {
    let ss = dev.info().sector_size as usize;
    let mut buf = vec![0u8; len.div_ceil(ss).max(1) * ss];
    libos::task::wait(dev.read(lba, &mut buf)).map_err(|e| GptError::Device(alloc::format!("{e}")))?;
    Ok(buf)
}

/// The header at `lba` and its partitions.
fn read_at(dev: &dyn BlockDevice, lba: u64) -> Result<Option<Vec<Partition>>, GptError> {
    let info = dev.info();
    let sector = read(dev, lba, info.sector_size as usize)?;
    let Some(h) = Header::new_checked(&sector[..]) else { return Ok(None) };
    let len = h.validate(lba, info.capacity, info.sector_size as usize)?;
    let entries = read(dev, h.entry_lba(), len)?;
    parse_entries(&h, lba, &entries[..len]).map(Some)
}

/// The partitions of `dev`'s GPT: `Ok(None)` when the disk has no GPT (e.g. a FAT volume written over the
/// whole disk by `images disk create`); the backup header at the last LBA is used when the primary is damaged.
///
/// Errors: both headers damaged (the primary's error), a bad entry, a device error.
pub fn partitions(dev: &dyn BlockDevice) -> Result<Option<Vec<Partition>>, GptError> {
    let capacity = dev.info().capacity;
    if capacity < 3 {
        return Ok(None);
    }
    match read_at(dev, 1) {
        Ok(p) if p.is_some() => Ok(p),
        primary => match read_at(dev, capacity - 1) {
            Ok(Some(p)) => {
                log::warn!("fs: {}: primary GPT unusable, using the backup at LBA {}", dev.info().name, capacity - 1);
                Ok(Some(p))
            }
            _ => primary,
        },
    }
}

/// An owned GPT header for emitting (host tests and tools that write disks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderRepr {
    /// `MyLBA`.
    pub my_lba: u64,
    /// `AlternateLBA`.
    pub alternate_lba: u64,
    /// `FirstUsableLBA`.
    pub first_usable_lba: u64,
    /// `LastUsableLBA`.
    pub last_usable_lba: u64,
    /// `DiskGUID`.
    pub disk_guid: Guid,
    /// `PartitionEntryLBA`.
    pub entry_lba: u64,
    /// `NumberOfPartitionEntries`.
    pub num_entries: u32,
    /// `SizeOfPartitionEntry`.
    pub entry_size: u32,
    /// `PartitionEntryArrayCRC32`.
    pub entries_crc32: u32,
}

impl HeaderRepr {
    /// Writes the header (92 bytes, revision 1.0, with its CRC32) into `buf` (at least [`HEADER_LEN`] bytes).
    pub fn emit(&self, buf: &mut [u8]) {
        let b = &mut buf[..HEADER_LEN];
        b.fill(0);
        b[field::SIGNATURE].copy_from_slice(SIGNATURE);
        wire::write_u32(b, field::REVISION, 0x0001_0000);
        wire::write_u32(b, field::HEADER_SIZE, HEADER_LEN as u32);
        wire::write_u64(b, field::MY_LBA, self.my_lba);
        wire::write_u64(b, field::ALTERNATE_LBA, self.alternate_lba);
        wire::write_u64(b, field::FIRST_USABLE_LBA, self.first_usable_lba);
        wire::write_u64(b, field::LAST_USABLE_LBA, self.last_usable_lba);
        b[field::DISK_GUID].copy_from_slice(&self.disk_guid.0);
        wire::write_u64(b, field::ENTRY_LBA, self.entry_lba);
        wire::write_u32(b, field::NUM_ENTRIES, self.num_entries);
        wire::write_u32(b, field::ENTRY_SIZE, self.entry_size);
        wire::write_u32(b, field::ENTRIES_CRC32, self.entries_crc32);
        let crc = crc32fast::hash(b);
        wire::write_u32(b, field::HEADER_CRC32, crc);
    }
}

impl Partition {
    /// Writes this partition as an entry into `buf` (at least [`ENTRY_LEN`] bytes; unique GUID `unique`, no
    /// attributes; the name cut at 36 UTF-16 units).
    pub fn emit(&self, unique: Guid, buf: &mut [u8]) {
        let b = &mut buf[..ENTRY_LEN];
        b.fill(0);
        b[field::TYPE_GUID].copy_from_slice(&self.type_guid.0);
        b[field::UNIQUE_GUID].copy_from_slice(&unique.0);
        wire::write_u64(b, field::STARTING_LBA, self.first_lba);
        wire::write_u64(b, field::ENDING_LBA, self.last_lba);
        wire::write_u64(b, field::ATTRIBUTES, 0);
        for (i, u) in self.name.encode_utf16().take(36).enumerate() {
            let at = field::NAME.start + 2 * i;
            wire::write_u16(b, at..at + 2, u);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A GPT disk image of `sectors` 512-byte sectors with `parts`, primary and backup, as `images package`
    /// writes it (128 entries from LBA 2).
    pub(crate) fn gpt_image(sectors: u64, parts: &[Partition]) -> Vec<u8> {
        let mut img = vec![0u8; sectors as usize * 512];
        let mut entries = vec![0u8; 128 * ENTRY_LEN];
        for p in parts {
            let at = (p.index as usize - 1) * ENTRY_LEN;
            p.emit(Guid([p.index as u8; 16]), &mut entries[at..at + ENTRY_LEN]);
        }
        let mut h = HeaderRepr {
            my_lba: 1,
            alternate_lba: sectors - 1,
            first_usable_lba: 34,
            last_usable_lba: sectors - 34,
            disk_guid: Guid([7; 16]),
            entry_lba: 2,
            num_entries: 128,
            entry_size: ENTRY_LEN as u32,
            entries_crc32: crc32fast::hash(&entries),
        };
        h.emit(&mut img[512..1024]);
        img[1024..1024 + entries.len()].copy_from_slice(&entries);
        let backup_entries = (sectors - 33) as usize * 512;
        img[backup_entries..backup_entries + entries.len()].copy_from_slice(&entries);
        (h.my_lba, h.alternate_lba, h.entry_lba) = (sectors - 1, 1, sectors - 33);
        let last = (sectors - 1) as usize * 512;
        h.emit(&mut img[last..last + 512]);
        img
    }

    fn data_part(index: u32, first: u64, last: u64) -> Partition {
        Partition { index, type_guid: ZIRVIUM_DATA, first_lba: first, last_lba: last, name: DATA_NAME.into() }
    }

    #[test]
    fn guids_print_in_the_standard_form() {
        assert_eq!(ZIRVIUM_DATA.to_string(), "280fd53c-11f1-417a-9bb9-14bded155400");
        assert_eq!(EFI_SYSTEM.to_string(), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        // On-disk order of the ESP type (UEFI 2.10 Appendix A example bytes).
        assert_eq!(&EFI_SYSTEM.0[..4], &[0x28, 0x73, 0x2a, 0xc1]);
    }

    #[test]
    fn header_and_entries_round_trip() {
        let esp = Partition {
            index: 1,
            type_guid: EFI_SYSTEM,
            first_lba: 2048,
            last_lba: 4095,
            name: "EFI system partition".into(),
        };
        let data = data_part(3, 4096, 8191);
        let img = gpt_image(10_000, &[esp.clone(), data.clone()]);
        let h = Header::new_checked(&img[512..1024]).unwrap();
        assert_eq!((h.revision(), h.header_size(), h.my_lba(), h.alternate_lba()), (0x10000, 92, 1, 9999));
        assert_eq!((h.first_usable_lba(), h.last_usable_lba(), h.disk_guid()), (34, 9966, Guid([7; 16])));
        let len = h.validate(1, 10_000, 512).unwrap();
        assert_eq!(len, 128 * 128);
        let parts = parse_entries(&h, 1, &img[1024..1024 + len]).unwrap();
        assert_eq!(parts, [esp, data.clone()]);
        assert!(parts[1].is_data() && !parts[0].is_data());
        let e = Entry::new_checked(&img[1024 + 256..1024 + 384]).unwrap();
        assert_eq!((e.unique_guid(), e.attributes(), e.name()), (Guid([3; 16]), 0, String::from("zirvium-data")));
        // Named "zirvium-data" with another type counts too.
        let named = Partition { type_guid: EFI_SYSTEM, ..data };
        assert!(named.is_data());
    }

    #[test]
    fn damaged_headers_and_entries_are_refused() {
        let img = gpt_image(10_000, &[data_part(1, 100, 200)]);
        let mut h = img[512..1024].to_vec();
        h[40] ^= 1; // FirstUsableLBA changed, CRC not updated
        let e = Header::new_checked(&h[..]).unwrap().validate(1, 10_000, 512).unwrap_err();
        assert!(matches!(e, GptError::HeaderCrc { lba: 1, .. }), "{e}");
        let hdr = Header::new_checked(&img[512..1024]).unwrap();
        assert_eq!(hdr.validate(2, 10_000, 512), Err(GptError::WrongLba { lba: 2, my_lba: 1 }));
        assert!(matches!(hdr.validate(1, 20, 512), Err(GptError::BadEntryArray { .. })), "array past the end");
        let mut entries = img[1024..1024 + 16384].to_vec();
        entries[33] ^= 1;
        assert!(matches!(parse_entries(&hdr, 1, &entries), Err(GptError::EntriesCrc { .. })));
        assert!(Header::new_checked(&[0u8; 512][..]).is_none(), "no signature: no GPT");
        assert!(Header::new_checked(&img[512..560]).is_none(), "short buffer");
        // An entry outside the usable range.
        let bad = gpt_image(10_000, &[data_part(1, 10, 200)]);
        let h = Header::new_checked(&bad[512..1024]).unwrap();
        assert_eq!(
            parse_entries(&h, 1, &bad[1024..1024 + 16384]),
            Err(GptError::BadPartition { index: 1, first: 10, last: 200 })
        );
        let mut big = img[512..1024].to_vec();
        wire::write_u32(&mut big, field::ENTRY_SIZE, 100);
        let crc_fixed = {
            let mut b = big.clone();
            wire::write_u32(&mut b, field::HEADER_CRC32, 0);
            crc32fast::hash(&b[..92])
        };
        wire::write_u32(&mut big, field::HEADER_CRC32, crc_fixed);
        assert!(matches!(
            Header::new_checked(&big[..]).unwrap().validate(1, 10_000, 512),
            Err(GptError::BadEntryArray { size: 100, .. })
        ));
    }
}
