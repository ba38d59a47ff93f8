//! Parameter data the block drivers read: standard INQUIRY data, READ CAPACITY(16) data and the REPORT LUNS
//! list, each a checked view with an owned `Repr`. Source: SPC-5 §6.6.2 (standard INQUIRY data), §6.29.2
//! (REPORT LUNS parameter data); SBC-4 §5.20.2 (READ CAPACITY(16) parameter data).
#![forbid(unsafe_code)]

use super::lun::Lun;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use libos::wire::{read_u32_be, read_u64_be, read_u8, write_u32_be, write_u64_be, write_u8};

mod field {
    pub mod inquiry {
        use libos::wire::Field;
        /// PERIPHERAL QUALIFIER (bits 7..5) and PERIPHERAL DEVICE TYPE (bits 4..0).
        pub const PERIPHERAL: Field = 0..1;
        /// RMB (bit 7).
        pub const RMB: Field = 1..2;
        pub const VERSION: Field = 2..3;
        /// RESPONSE DATA FORMAT (bits 3..0).
        pub const FORMAT: Field = 3..4;
        pub const ADDITIONAL_LENGTH: Field = 4..5;
        pub const VENDOR: Field = 8..16;
        pub const PRODUCT: Field = 16..32;
        pub const REVISION: Field = 32..36;
    }

    pub mod capacity {
        use libos::wire::Field;
        pub const RETURNED_LBA: Field = 0..8;
        pub const BLOCK_LENGTH: Field = 8..12;
        /// P_TYPE (bits 3..1), PROT_EN (bit 0).
        pub const PROTECTION: Field = 12..13;
        /// LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT (bits 3..0).
        pub const EXPONENTS: Field = 13..14;
    }

    pub mod luns {
        use libos::wire::Field;
        pub const LIST_LENGTH: Field = 0..4;
        pub const LIST: usize = 8;
    }
}

/// Standard INQUIRY data length: the fields up to PRODUCT REVISION LEVEL (bytes; SPC-5 §6.6.2).
pub const INQUIRY_LEN: usize = 36;
/// READ CAPACITY(16) parameter data length (bytes).
pub const CAPACITY16_LEN: usize = 32;
/// READ CAPACITY(16) fields the drivers need: RETURNED LOGICAL BLOCK ADDRESS and LOGICAL BLOCK LENGTH (bytes).
pub const CAPACITY16_MIN_LEN: usize = 12;
/// REPORT LUNS header (bytes), before the 8-byte LUN entries.
pub const REPORT_LUNS_HEADER: usize = 8;

/// PERIPHERAL DEVICE TYPE 00h: direct access block device (SBC).
pub const TYPE_DISK: u8 = 0x00;
/// PERIPHERAL QUALIFIER 000b: a device of the type is connected to this logical unit.
pub const QUALIFIER_CONNECTED: u8 = 0;

/// Parameter data shorter than the fields read from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShortData {
    /// What it is, e.g. "INQUIRY data".
    pub what: &'static str,
    /// Bytes the device returned.
    pub len: usize,
    /// Bytes needed.
    pub need: usize,
}

impl fmt::Display for ShortData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {} bytes, needs {}", self.what, self.len, self.need)
    }
}

fn check(what: &'static str, b: &[u8], need: usize) -> Result<(), ShortData> {
    if b.len() < need {
        return Err(ShortData { what, len: b.len(), need });
    }
    Ok(())
}

/// ASCII text of an INQUIRY string field, trailing spaces removed, anything non-printable as `?`.
fn ascii(b: &[u8]) -> String {
    b.iter().map(|&c| if (0x20..0x7f).contains(&c) { c as char } else { '?' }).collect::<String>().trim_end().into()
}

/// A checked view of standard INQUIRY data: [`Inquiry::new_checked`] proves the 36 bytes are there.
#[derive(Debug, Clone, Copy)]
pub struct Inquiry<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Inquiry<T> {
    /// Wraps `buffer` after checking it holds [`INQUIRY_LEN`] bytes. Errors: [`ShortData`].
    pub fn new_checked(buffer: T) -> Result<Self, ShortData> {
        check("INQUIRY data", buffer.as_ref(), INQUIRY_LEN)?;
        Ok(Self { buffer })
    }

    /// PERIPHERAL QUALIFIER.
    pub fn qualifier(&self) -> u8 {
        read_u8(self.buffer.as_ref(), field::inquiry::PERIPHERAL) >> 5
    }

    /// PERIPHERAL DEVICE TYPE.
    pub fn device_type(&self) -> u8 {
        read_u8(self.buffer.as_ref(), field::inquiry::PERIPHERAL) & 0x1f
    }

    /// RMB: removable medium.
    pub fn removable(&self) -> bool {
        read_u8(self.buffer.as_ref(), field::inquiry::RMB) & 0x80 != 0
    }

    /// VERSION (the SPC version claimed).
    pub fn version(&self) -> u8 {
        read_u8(self.buffer.as_ref(), field::inquiry::VERSION)
    }
}

/// Standard INQUIRY data, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InquiryRepr {
    /// PERIPHERAL QUALIFIER (0: connected).
    pub qualifier: u8,
    /// PERIPHERAL DEVICE TYPE (0: disk).
    pub device_type: u8,
    /// Removable medium.
    pub removable: bool,
    /// VERSION.
    pub version: u8,
    /// T10 VENDOR IDENTIFICATION, trimmed.
    pub vendor: String,
    /// PRODUCT IDENTIFICATION, trimmed.
    pub product: String,
    /// PRODUCT REVISION LEVEL, trimmed.
    pub revision: String,
}

impl InquiryRepr {
    /// Decodes standard INQUIRY data. Errors: [`ShortData`].
    pub fn parse(b: &[u8]) -> Result<Self, ShortData> {
        let v = Inquiry::new_checked(b)?;
        Ok(Self {
            qualifier: v.qualifier(),
            device_type: v.device_type(),
            removable: v.removable(),
            version: v.version(),
            vendor: ascii(&b[field::inquiry::VENDOR]),
            product: ascii(&b[field::inquiry::PRODUCT]),
            revision: ascii(&b[field::inquiry::REVISION]),
        })
    }

    /// Whether this logical unit is a connected direct-access block device (a disk the driver can use).
    pub fn is_disk(&self) -> bool {
        self.qualifier == QUALIFIER_CONNECTED && self.device_type == TYPE_DISK
    }

    /// Writes the data into the first [`INQUIRY_LEN`] bytes of `b` (response data format 2, SPC-3 and later).
    pub fn emit(&self, b: &mut [u8]) {
        let b = &mut b[..INQUIRY_LEN];
        b.fill(b' ');
        b[..8].fill(0);
        write_u8(b, field::inquiry::PERIPHERAL, self.qualifier << 5 | self.device_type & 0x1f);
        write_u8(b, field::inquiry::RMB, if self.removable { 0x80 } else { 0 });
        write_u8(b, field::inquiry::VERSION, self.version);
        write_u8(b, field::inquiry::FORMAT, 2);
        write_u8(b, field::inquiry::ADDITIONAL_LENGTH, (INQUIRY_LEN - 5) as u8);
        for (f, s) in [
            (field::inquiry::VENDOR, &self.vendor),
            (field::inquiry::PRODUCT, &self.product),
            (field::inquiry::REVISION, &self.revision),
        ] {
            let n = s.len().min(f.len());
            b[f.start..f.start + n].copy_from_slice(&s.as_bytes()[..n]);
        }
    }
}

/// READ CAPACITY(16) parameter data, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapacityRepr {
    /// RETURNED LOGICAL BLOCK ADDRESS: the last LBA.
    pub last_lba: u64,
    /// LOGICAL BLOCK LENGTH IN BYTES.
    pub block_length: u32,
    /// PROT_EN: protection information is enabled (each block carries 8 more bytes on the wire).
    pub protection: bool,
    /// LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT.
    pub blocks_per_physical_exp: u8,
}

/// A READ CAPACITY(16) answer the drivers cannot use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapacityError {
    /// Fewer than 12 bytes.
    Short(ShortData),
    /// LOGICAL BLOCK LENGTH is not a power of two in 512..=65536 bytes.
    BlockLength(u32),
    /// RETURNED LOGICAL BLOCK ADDRESS is `u64::MAX`: the block count does not fit 64 bits.
    Lba(u64),
    /// PROT_EN is set: the drivers do not transfer protection information.
    Protection,
}

impl fmt::Display for CapacityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Short(s) => write!(f, "{s}"),
            Self::BlockLength(b) => write!(f, "logical block length {b} is not a power of two in 512..=65536 bytes"),
            Self::Lba(l) => write!(f, "returned logical block address {l:#x} leaves no block count"),
            Self::Protection => {
                write!(f, "protection information is enabled (PROT_EN), which the driver does not support")
            }
        }
    }
}

impl CapacityRepr {
    /// Decodes READ CAPACITY(16) data (the first 12 bytes suffice; bytes 12 and 13 count when present).
    /// Errors: [`CapacityError::Short`].
    pub fn parse(b: &[u8]) -> Result<Self, CapacityError> {
        check("READ CAPACITY(16) data", b, CAPACITY16_MIN_LEN).map_err(CapacityError::Short)?;
        let byte = |f: libos::wire::Field| b.get(f.start).copied().unwrap_or(0);
        Ok(Self {
            last_lba: read_u64_be(b, field::capacity::RETURNED_LBA),
            block_length: read_u32_be(b, field::capacity::BLOCK_LENGTH),
            protection: byte(field::capacity::PROTECTION) & 1 != 0,
            blocks_per_physical_exp: byte(field::capacity::EXPONENTS) & 0xf,
        })
    }

    /// `(blocks, block length)` for a block device. Errors: a block length outside 512..=65536 or not a power
    /// of two, a last LBA of `u64::MAX`, protection information enabled.
    pub fn geometry(&self) -> Result<(u64, u32), CapacityError> {
        let bl = self.block_length;
        if !bl.is_power_of_two() || !(512..=65536).contains(&bl) {
            return Err(CapacityError::BlockLength(bl));
        }
        if self.protection {
            return Err(CapacityError::Protection);
        }
        let blocks = self.last_lba.checked_add(1).ok_or(CapacityError::Lba(self.last_lba))?;
        Ok((blocks, bl))
    }

    /// Writes the data into the first [`CAPACITY16_LEN`] bytes of `b`.
    pub fn emit(&self, b: &mut [u8]) {
        let b = &mut b[..CAPACITY16_LEN];
        b.fill(0);
        write_u64_be(b, field::capacity::RETURNED_LBA, self.last_lba);
        write_u32_be(b, field::capacity::BLOCK_LENGTH, self.block_length);
        write_u8(b, field::capacity::PROTECTION, u8::from(self.protection));
        write_u8(b, field::capacity::EXPONENTS, self.blocks_per_physical_exp & 0xf);
    }
}

/// The REPORT LUNS list, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportLunsRepr {
    /// The LUNs in the buffer, in the device's order; entries in a format the drivers do not address are left
    /// out (counted in `skipped`).
    pub luns: Vec<Lun>,
    /// Entries whose addressing method is not peripheral-device or flat-space single level.
    pub skipped: usize,
    /// LUN LIST LENGTH announced more entries than the buffer holds (ask again with a larger allocation).
    pub truncated: bool,
}

impl ReportLunsRepr {
    /// Decodes REPORT LUNS parameter data: as many whole 8-byte entries as both LUN LIST LENGTH and the buffer
    /// hold. Errors: [`ShortData`] without the 8-byte header.
    pub fn parse(b: &[u8]) -> Result<Self, ShortData> {
        check("REPORT LUNS data", b, REPORT_LUNS_HEADER)?;
        let listed = read_u32_be(b, field::luns::LIST_LENGTH) as usize / 8;
        let present = (b.len() - field::luns::LIST) / 8;
        let mut r = Self { luns: Vec::new(), skipped: 0, truncated: listed > present };
        for e in b[field::luns::LIST..].chunks_exact(8).take(listed) {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(e);
            match Lun::from_bytes(raw) {
                Ok(l) => r.luns.push(l),
                Err(_) => r.skipped += 1,
            }
        }
        Ok(r)
    }

    /// The parameter data for `luns` (header and entries; a device model's answer).
    pub fn emit(luns: &[Lun]) -> Vec<u8> {
        let mut v = alloc::vec![0u8; REPORT_LUNS_HEADER + 8 * luns.len()];
        write_u32_be(&mut v, field::luns::LIST_LENGTH, (8 * luns.len()) as u32);
        for (e, l) in v[field::luns::LIST..].chunks_exact_mut(8).zip(luns) {
            e.copy_from_slice(&l.to_bytes());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inquiry_round_trip() {
        let i = InquiryRepr {
            qualifier: 0,
            device_type: TYPE_DISK,
            removable: false,
            version: 5,
            vendor: "QEMU".into(),
            product: "QEMU HARDDISK".into(),
            revision: "2.5+".into(),
        };
        let mut b = [0u8; 96];
        i.emit(&mut b);
        assert_eq!(&b[8..16], b"QEMU    ");
        assert_eq!(InquiryRepr::parse(&b[..36]), Ok(i.clone()));
        assert!(i.is_disk());
        let cd = InquiryRepr { device_type: 5, ..i.clone() };
        assert!(!cd.is_disk());
        let absent = InquiryRepr { qualifier: 3, ..i };
        assert!(!absent.is_disk());
        assert_eq!(InquiryRepr::parse(&b[..35]), Err(ShortData { what: "INQUIRY data", len: 35, need: 36 }));
        b[20] = 0x01;
        assert_eq!(InquiryRepr::parse(&b).unwrap().product, "QEMU?HARDDISK");
    }

    #[test]
    fn capacity_geometry() {
        let c = CapacityRepr { last_lba: 131071, block_length: 512, protection: false, blocks_per_physical_exp: 3 };
        let mut b = [0u8; 32];
        c.emit(&mut b);
        assert_eq!(&b[..12], &[0, 0, 0, 0, 0, 1, 0xff, 0xff, 0, 0, 2, 0]);
        assert_eq!(CapacityRepr::parse(&b), Ok(c));
        assert_eq!(CapacityRepr::parse(&b[..12]).unwrap().blocks_per_physical_exp, 0, "short data: defaults");
        assert_eq!(c.geometry(), Ok((131072, 512)));
        assert!(matches!(CapacityRepr::parse(&b[..11]), Err(CapacityError::Short(_))));
        let bad = |c: CapacityRepr| c.geometry().unwrap_err().to_string();
        assert!(bad(CapacityRepr { block_length: 0, ..c }).contains("block length 0"));
        assert!(bad(CapacityRepr { block_length: 520, ..c }).contains("520"));
        assert!(bad(CapacityRepr { block_length: 1 << 20, ..c }).contains("1048576"));
        assert!(bad(CapacityRepr { last_lba: u64::MAX, ..c }).contains("0xffffffffffffffff"));
        assert!(bad(CapacityRepr { protection: true, ..c }).contains("PROT_EN"));
    }

    #[test]
    fn report_luns_list() {
        let luns = [Lun::new(0).unwrap(), Lun::new(1).unwrap(), Lun::new(300).unwrap()];
        let b = ReportLunsRepr::emit(&luns);
        assert_eq!(&b[..4], &[0, 0, 0, 24]);
        assert_eq!(&b[24..26], &[0x41, 0x2c], "flat space addressing above 255");
        let r = ReportLunsRepr::parse(&b).unwrap();
        assert_eq!((r.luns.as_slice(), r.skipped, r.truncated), (&luns[..], 0, false));
        // The list says 3 entries; the buffer holds 2 and a half.
        let r = ReportLunsRepr::parse(&b[..28]).unwrap();
        assert_eq!((r.luns.len(), r.truncated), (2, true));
        // A list length past any buffer, an entry in an unsupported addressing method.
        let mut h = b.clone();
        h[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        h[16] = 0xC0;
        let r = ReportLunsRepr::parse(&h).unwrap();
        assert_eq!((r.luns.len(), r.skipped, r.truncated), (2, 1, true));
        assert!(ReportLunsRepr::parse(&b[..7]).is_err());
    }
}
