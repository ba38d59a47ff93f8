//! Identify data the driver reads: the Identify Controller data structure (model, serial, firmware, MDTS, queue
//! entry sizes, number of namespaces, ONCS, VWC), the NVM command set's Identify Namespace data structure
//! (size, LBA formats, write protection) and the Active Namespace ID list — each a checked view of the 4096
//! bytes with an owned `Repr`. Source: NVMe Base 2.0 §5.17.2.1 (Identify Controller, Figure 275), §5.17.2.2
//! (Active Namespace ID list); NVM Command Set 1.0 §4.1.5.1 (Identify Namespace, Figure 97, LBA Format
//! Figure 98).
#![forbid(unsafe_code)]

use super::command::IDENTIFY_LEN;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use libos::wire::{read_u16, read_u32, read_u64, read_u8, write_u16, write_u32, write_u64, write_u8};

mod field {
    pub mod controller {
        use libos::wire::Field;
        pub const VID: Field = 0..2;
        pub const SN: Field = 4..24;
        pub const MN: Field = 24..64;
        pub const FR: Field = 64..72;
        pub const MDTS: Field = 77..78;
        pub const CNTLID: Field = 78..80;
        pub const VER: Field = 80..84;
        pub const SQES: Field = 512..513;
        pub const CQES: Field = 513..514;
        pub const NN: Field = 516..520;
        pub const ONCS: Field = 520..522;
        pub const VWC: Field = 525..526;
    }

    pub mod namespace {
        use libos::wire::Field;
        pub const NSZE: Field = 0..8;
        pub const NCAP: Field = 8..16;
        pub const NLBAF: Field = 25..26;
        pub const FLBAS: Field = 26..27;
        pub const NSATTR: Field = 99..100;
        /// LBA Format 0; format `i` is at `LBAF + 4 i`, 64 of them.
        pub const LBAF: usize = 128;
    }
}

/// Most LBA formats a namespace lists (NLBAF is 0-based, up to 63).
pub const MAX_LBA_FORMATS: usize = 64;

/// Optional NVM Command Support bits (ONCS) and their names.
pub const ONCS_NAMES: [(u16, &str); 9] = [
    (1 << 0, "COMPARE"),
    (1 << 1, "WRITE_UNCORRECTABLE"),
    (1 << 2, "DSM"),
    (1 << 3, "WRITE_ZEROES"),
    (1 << 4, "SAVE_SELECT"),
    (1 << 5, "RESERVATIONS"),
    (1 << 6, "TIMESTAMP"),
    (1 << 7, "VERIFY"),
    (1 << 8, "COPY"),
];

/// Fewer than 4096 bytes of Identify data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShortIdentify(pub usize);

impl fmt::Display for ShortIdentify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identify data of {} bytes, needs {IDENTIFY_LEN}", self.0)
    }
}

fn check(b: &[u8]) -> Result<(), ShortIdentify> {
    if b.len() < IDENTIFY_LEN {
        return Err(ShortIdentify(b.len()));
    }
    Ok(())
}

/// ASCII text of a string field, trailing spaces and NULs removed, non-printable bytes as `?`.
fn ascii(b: &[u8]) -> String {
    let s: String = b.iter().map(|&c| if (0x20..0x7f).contains(&c) || c == 0 { c as char } else { '?' }).collect();
    s.trim_end_matches([' ', '\0']).into()
}

/// The Identify Controller data the driver uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerRepr {
    /// PCI Vendor ID.
    pub vid: u16,
    /// Serial Number, trimmed.
    pub serial: String,
    /// Model Number, trimmed.
    pub model: String,
    /// Firmware Revision, trimmed.
    pub firmware: String,
    /// MDTS: largest transfer, `2 ^ mdts` minimum memory pages; 0 = no limit.
    pub mdts: u8,
    /// Controller ID.
    pub cntlid: u16,
    /// VER (as VS), 0 when not reported.
    pub version: u32,
    /// SQES: required (bits 3..0) and maximum (bits 7..4) submission queue entry size exponents.
    pub sqes: u8,
    /// CQES: required and maximum completion queue entry size exponents.
    pub cqes: u8,
    /// NN: largest namespace ID.
    pub nn: u32,
    /// ONCS: optional NVM commands supported.
    pub oncs: u16,
    /// VWC bit 0: a volatile write cache is present (Flush empties it).
    pub volatile_write_cache: bool,
}

impl ControllerRepr {
    /// Decodes Identify Controller data. Errors: [`ShortIdentify`].
    pub fn parse(b: &[u8]) -> Result<Self, ShortIdentify> {
        check(b)?;
        use field::controller::*;
        Ok(Self {
            vid: read_u16(b, VID),
            serial: ascii(&b[SN]),
            model: ascii(&b[MN]),
            firmware: ascii(&b[FR]),
            mdts: read_u8(b, MDTS),
            cntlid: read_u16(b, CNTLID),
            version: read_u32(b, VER),
            sqes: read_u8(b, SQES),
            cqes: read_u8(b, CQES),
            nn: read_u32(b, NN),
            oncs: read_u16(b, ONCS),
            volatile_write_cache: read_u8(b, VWC) & 1 != 0,
        })
    }

    /// Writes the data into the first 4096 bytes of `b` (strings space padded), for device models.
    pub fn emit(&self, b: &mut [u8]) {
        use field::controller::*;
        let b = &mut b[..IDENTIFY_LEN];
        b.fill(0);
        write_u16(b, VID, self.vid);
        for (f, s) in [(SN, &self.serial), (MN, &self.model), (FR, &self.firmware)] {
            b[f.clone()].fill(b' ');
            let n = s.len().min(f.len());
            b[f.start..f.start + n].copy_from_slice(&s.as_bytes()[..n]);
        }
        write_u8(b, MDTS, self.mdts);
        write_u16(b, CNTLID, self.cntlid);
        write_u32(b, VER, self.version);
        write_u8(b, SQES, self.sqes);
        write_u8(b, CQES, self.cqes);
        write_u32(b, NN, self.nn);
        write_u16(b, ONCS, self.oncs);
        write_u8(b, VWC, u8::from(self.volatile_write_cache));
    }

    /// Whether the controller takes `2 ^ exp`-byte entries in both the required..=maximum ranges of SQES
    /// (`sq`) and CQES (`cq`).
    pub fn accepts_entry_sizes(&self, sq: u8, cq: u8) -> bool {
        let ok = |field: u8, e: u8| (field & 0xf) <= e && e <= (field >> 4).max(field & 0xf);
        ok(self.sqes, sq) && ok(self.cqes, cq)
    }

    /// The names of the ONCS bits set, comma-separated ("DSM,WRITE_ZEROES"), "none" when none is.
    pub fn oncs_names(&self) -> String {
        let names: Vec<&str> = ONCS_NAMES.iter().filter(|(b, _)| self.oncs & b != 0).map(|(_, n)| *n).collect();
        if names.is_empty() {
            String::from("none")
        } else {
            names.join(",")
        }
    }
}

#[cfg(test)]
impl ControllerRepr {
    /// What QEMU 10's `nvme` device says (serial `zirvium-d0`), for the tests and the controller model.
    pub(crate) fn qemu() -> Self {
        Self {
            vid: 0x1b36,
            serial: "zirvium-d0".into(),
            model: "QEMU NVMe Ctrl".into(),
            firmware: "10.0.2".into(),
            mdts: 7,
            cntlid: 0,
            version: 0x0001_0400,
            sqes: 0x66,
            cqes: 0x44,
            nn: 256,
            oncs: 0x15d,
            volatile_write_cache: true,
        }
    }
}

/// One LBA Format: metadata bytes and data size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LbaFormat {
    /// MS: metadata bytes per LBA.
    pub metadata: u16,
    /// LBADS: LBA data size `2 ^ lbads` bytes.
    pub lbads: u8,
}

/// The Identify Namespace data the driver uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceRepr {
    /// NSZE: size in logical blocks (0: the NSID is not an active namespace).
    pub size: u64,
    /// NCAP: capacity in logical blocks.
    pub capacity: u64,
    /// FLBAS: the LBA format in use (index, both nibbles of NVMe 2.0 combined).
    pub format_index: u8,
    /// FLBAS bit 4: metadata transferred at the end of each block's data (extended LBA).
    pub extended_metadata: bool,
    /// The LBA formats listed (NLBAF + 1 of them).
    pub formats: Vec<LbaFormat>,
    /// NSATTR bit 0: the namespace is write protected.
    pub write_protected: bool,
}

/// A namespace the driver cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceError {
    /// Too little data.
    Short(ShortIdentify),
    /// NSZE is 0: not an active namespace.
    Inactive,
    /// FLBAS names a format beyond the NLBAF + 1 listed.
    FormatIndex {
        /// The LBA format index FLBAS selects.
        index: u8,
        /// LBA formats listed (NLBAF + 1).
        formats: usize,
    },
    /// The format's LBADS is outside 9..=16 (512 B to 64 KiB blocks).
    BlockSize {
        /// LBA Data Size (LBADS): the block size as a power of two (bytes = 2^lbads).
        lbads: u8,
    },
    /// The format carries metadata, which the driver does not transfer.
    Metadata {
        /// Metadata Size (MS) of the format: bytes of metadata per logical block.
        bytes: u16,
    },
    /// MDTS allows fewer bytes per command (`max`) than one block.
    Transfer {
        /// Maximum Data Transfer Size (MDTS) in bytes (2^MDTS pages of CAP.MPSMIN).
        max: usize,
        /// The namespace's logical block size (bytes).
        block: u32,
    },
}

impl fmt::Display for NamespaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Short(s) => write!(f, "{s}"),
            Self::Inactive => write!(f, "namespace size 0 (not active)"),
            Self::FormatIndex { index, formats } => {
                write!(f, "FLBAS names LBA format {index} but only {formats} are listed")
            }
            Self::BlockSize { lbads } => write!(f, "LBA data size 2^{lbads} bytes is outside 512..=65536"),
            Self::Metadata { bytes } => {
                write!(f, "LBA format with {bytes} bytes of metadata per block (not supported)")
            }
            Self::Transfer { max, block } => {
                write!(f, "MDTS allows {max} bytes per command, less than one {block}-byte block")
            }
        }
    }
}

impl NamespaceRepr {
    /// Decodes Identify Namespace data (at most 64 LBA formats are read). Errors: [`NamespaceError::Short`].
    pub fn parse(b: &[u8]) -> Result<Self, NamespaceError> {
        check(b).map_err(NamespaceError::Short)?;
        use field::namespace::*;
        let count = usize::from(read_u8(b, NLBAF)) + 1;
        let flbas = read_u8(b, FLBAS);
        let formats = (0..count.min(MAX_LBA_FORMATS))
            .map(|i| {
                let at = LBAF + 4 * i;
                LbaFormat { metadata: read_u16(b, at..at + 2), lbads: read_u8(b, at + 2..at + 3) }
            })
            .collect();
        Ok(Self {
            size: read_u64(b, NSZE),
            capacity: read_u64(b, NCAP),
            format_index: (flbas & 0xf) | (flbas >> 5 & 3) << 4,
            extended_metadata: flbas & 0x10 != 0,
            formats,
            write_protected: read_u8(b, NSATTR) & 1 != 0,
        })
    }

    /// Writes the data into the first 4096 bytes of `b`, for device models.
    pub fn emit(&self, b: &mut [u8]) {
        use field::namespace::*;
        let b = &mut b[..IDENTIFY_LEN];
        b.fill(0);
        write_u64(b, NSZE, self.size);
        write_u64(b, NCAP, self.capacity);
        write_u64(b, 16..24, self.capacity);
        write_u8(b, NLBAF, self.formats.len().clamp(1, MAX_LBA_FORMATS) as u8 - 1);
        let i = self.format_index;
        write_u8(b, FLBAS, (i & 0xf) | (i >> 4 & 3) << 5 | if self.extended_metadata { 0x10 } else { 0 });
        write_u8(b, NSATTR, u8::from(self.write_protected));
        for (n, f) in self.formats.iter().take(MAX_LBA_FORMATS).enumerate() {
            let at = LBAF + 4 * n;
            write_u16(b, at..at + 2, f.metadata);
            write_u8(b, at + 2..at + 3, f.lbads);
        }
    }

    /// `(blocks, block size in bytes)` of the format in use. Errors: an inactive namespace, a format index past
    /// the list, a block size outside 512..=65536, metadata per block.
    pub fn geometry(&self) -> Result<(u64, u32), NamespaceError> {
        if self.size == 0 {
            return Err(NamespaceError::Inactive);
        }
        let f = self
            .formats
            .get(usize::from(self.format_index))
            .ok_or(NamespaceError::FormatIndex { index: self.format_index, formats: self.formats.len() })?;
        if !(9..=16).contains(&f.lbads) {
            return Err(NamespaceError::BlockSize { lbads: f.lbads });
        }
        if f.metadata != 0 {
            return Err(NamespaceError::Metadata { bytes: f.metadata });
        }
        Ok((self.size, 1 << f.lbads))
    }
}

/// The Active Namespace ID list: the non-zero NSIDs, ascending, at most 1024 (4096 bytes of u32).
/// Errors: [`ShortIdentify`].
pub fn active_namespaces(b: &[u8]) -> Result<Vec<u32>, ShortIdentify> {
    check(b)?;
    Ok(b[..IDENTIFY_LEN].chunks_exact(4).map(|c| read_u32(c, 0..4)).take_while(|&id| id != 0).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_round_trip() {
        let c = ControllerRepr::qemu();
        let mut b = vec![0u8; IDENTIFY_LEN];
        c.emit(&mut b);
        assert_eq!(&b[4..14], b"zirvium-d0");
        assert_eq!(b[14], b' ', "space padded");
        assert_eq!((b[77], b[512], b[513], b[525]), (7, 0x66, 0x44, 1));
        assert_eq!(ControllerRepr::parse(&b), Ok(c.clone()));
        assert_eq!(ControllerRepr::parse(&b[..4095]), Err(ShortIdentify(4095)));
        assert_eq!(c.oncs_names(), "COMPARE,DSM,WRITE_ZEROES,SAVE_SELECT,TIMESTAMP,COPY");
        assert_eq!(ControllerRepr { oncs: 0, ..c.clone() }.oncs_names(), "none");
        assert!(c.accepts_entry_sizes(6, 4));
        assert!(!c.accepts_entry_sizes(7, 4));
        assert!(!ControllerRepr { cqes: 0x55, ..c }.accepts_entry_sizes(6, 4));
        b[24] = 0xff;
        assert!(ControllerRepr::parse(&b).unwrap().model.starts_with('?'));
    }

    #[test]
    fn namespace_geometry() {
        let ns = NamespaceRepr {
            size: 131072,
            capacity: 131072,
            format_index: 1,
            extended_metadata: false,
            formats: vec![
                LbaFormat { metadata: 0, lbads: 9 },
                LbaFormat { metadata: 0, lbads: 12 },
                LbaFormat { metadata: 8, lbads: 12 },
            ],
            write_protected: true,
        };
        let mut b = vec![0u8; IDENTIFY_LEN];
        ns.emit(&mut b);
        assert_eq!((b[25], b[26], b[99], b[128 + 6]), (2, 1, 1, 12));
        let back = NamespaceRepr::parse(&b).unwrap();
        assert_eq!(back, ns);
        assert_eq!(back.geometry(), Ok((131072, 4096)));
        let bad = |n: NamespaceRepr| n.geometry().unwrap_err().to_string();
        assert_eq!(
            bad(NamespaceRepr { format_index: 2, ..ns.clone() }),
            "LBA format with 8 bytes of metadata per block (not supported)"
        );
        assert_eq!(
            bad(NamespaceRepr { format_index: 5, ..ns.clone() }),
            "FLBAS names LBA format 5 but only 3 are listed"
        );
        assert_eq!(bad(NamespaceRepr { size: 0, ..ns.clone() }), "namespace size 0 (not active)");
        let huge = NamespaceRepr { formats: vec![LbaFormat { metadata: 0, lbads: 40 }], format_index: 0, ..ns.clone() };
        assert_eq!(bad(huge), "LBA data size 2^40 bytes is outside 512..=65536");
        // NVMe 2.0's upper FLBAS bits select formats 16..63.
        let mut formats = vec![LbaFormat { metadata: 0, lbads: 9 }; 20];
        formats[17].lbads = 12;
        let high = NamespaceRepr { format_index: 17, formats, ..ns };
        high.emit(&mut b);
        assert_eq!(b[26], 0x21);
        assert_eq!(NamespaceRepr::parse(&b).unwrap().geometry(), Ok((131072, 4096)));
        assert!(matches!(NamespaceRepr::parse(&b[..100]), Err(NamespaceError::Short(_))));
    }

    #[test]
    fn namespace_list() {
        let mut b = vec![0u8; IDENTIFY_LEN];
        b[..12].copy_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0, 9, 0, 0, 0]);
        assert_eq!(active_namespaces(&b), Ok(vec![1, 2, 9]));
        b.fill(0xff);
        assert_eq!(active_namespaces(&b).unwrap().len(), 1024, "a full list stays within the 4096 bytes");
        assert!(active_namespaces(&b[..8]).is_err());
    }
}
