//! Physical Region Page entries for a physically contiguous buffer: PRP1 is the first byte (any dword-aligned
//! offset in its page), PRP2 the second page when the transfer ends there, else the address of a PRP list
//! whose entries name each further page. One list page holds 512 entries, so one list describes up to 2 MiB
//! plus the first page — more than any transfer the driver makes (it caps transfers at MDTS and its bounce
//! buffer size). Source: NVMe Base 2.0 §4.1.1 (PRP entry and PRP list, memory page size CC.MPS).
#![forbid(unsafe_code)]

use alloc::vec::Vec;
use core::fmt;

/// The memory page size the driver programs (CC.MPS = 0).
pub const PAGE: u64 = 4096;
/// Entries in one PRP list page (8 bytes each).
pub const LIST_ENTRIES: usize = (PAGE / 8) as usize;

/// The data pointer of one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prps {
    /// PRP Entry 1.
    pub prp1: u64,
    /// PRP Entry 2: 0, the second page, or the list's address.
    pub prp2: u64,
    /// Entries to store at the list's address (empty when PRP2 is not a list).
    pub list: Vec<u64>,
}

/// A transfer PRPs cannot describe here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrpError {
    /// The buffer address is not dword aligned (PRP offsets must be).
    Misaligned {
        /// The data buffer's physical address.
        addr: u64,
    },
    /// More pages than one list page describes.
    TooLong {
        /// The transfer's length (bytes).
        len: usize,
        /// The longest transfer one PRP list page describes from that address (bytes; [`max_len`]).
        max: usize,
    },
    /// The list's own address is not page aligned.
    ListMisaligned {
        /// The PRP list's physical address.
        addr: u64,
    },
}

impl fmt::Display for PrpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Misaligned { addr } => write!(f, "data address {addr:#x} is not dword aligned"),
            Self::TooLong { len, max } => write!(f, "transfer of {len} bytes exceeds one PRP list ({max} bytes)"),
            Self::ListMisaligned { addr } => write!(f, "PRP list address {addr:#x} is not page aligned"),
        }
    }
}

/// Largest transfer (bytes) from `addr` that one list page describes.
pub fn max_len(addr: u64) -> usize {
    (PAGE - addr % PAGE) as usize + LIST_ENTRIES * PAGE as usize
}

/// The PRPs of `len` bytes at physically contiguous `addr`, with a list at `list_addr` if one is needed.
/// Errors: [`PrpError`].
pub fn build(addr: u64, len: usize, list_addr: u64) -> Result<Prps, PrpError> {
    if !addr.is_multiple_of(4) {
        return Err(PrpError::Misaligned { addr });
    }
    let first = (PAGE - addr % PAGE) as usize;
    if len <= first {
        return Ok(Prps { prp1: addr, prp2: 0, list: Vec::new() });
    }
    let second = addr - addr % PAGE + PAGE;
    if len <= first + PAGE as usize {
        return Ok(Prps { prp1: addr, prp2: second, list: Vec::new() });
    }
    if len > max_len(addr) {
        return Err(PrpError::TooLong { len, max: max_len(addr) });
    }
    if !list_addr.is_multiple_of(PAGE) {
        return Err(PrpError::ListMisaligned { addr: list_addr });
    }
    let pages = (len - first).div_ceil(PAGE as usize);
    let list = (0..pages as u64).map(|i| second + i * PAGE).collect();
    Ok(Prps { prp1: addr, prp2: list_addr, list })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_two_and_many_pages() {
        let a = 0x10_0000;
        assert_eq!(build(a, 512, 0x9000), Ok(Prps { prp1: a, prp2: 0, list: vec![] }));
        assert_eq!(build(a, 4096, 0x9000), Ok(Prps { prp1: a, prp2: 0, list: vec![] }));
        assert_eq!(build(a, 8192, 0x9000), Ok(Prps { prp1: a, prp2: a + 4096, list: vec![] }));
        let p = build(a, 8193, 0x9000).unwrap();
        assert_eq!((p.prp2, p.list), (0x9000, vec![a + 4096, a + 8192]));
        let p = build(a, 128 * 1024, 0x9000).unwrap();
        assert_eq!(p.list.len(), 31);
        assert_eq!(*p.list.last().unwrap(), a + 31 * 4096);
        assert_eq!(build(a, 0, 0x9000).unwrap().prp2, 0, "no data: PRP1 only");
    }

    #[test]
    fn offsets_and_limits() {
        // An offset in the first page shortens it; the rest is page aligned.
        let p = build(0x10_0e00, 1024, 0).unwrap();
        assert_eq!((p.prp1, p.prp2), (0x10_0e00, 0x10_1000));
        assert_eq!(max_len(0x10_0000), 4096 + 512 * 4096);
        assert_eq!(build(0x10_0000, max_len(0x10_0000), 0x9000).unwrap().list.len(), 512);
        assert_eq!(
            build(0x10_0000, max_len(0x10_0000) + 1, 0x9000),
            Err(PrpError::TooLong { len: 4096 * 513 + 1, max: 4096 * 513 })
        );
        assert_eq!(build(0x10_0002, 8, 0), Err(PrpError::Misaligned { addr: 0x10_0002 }));
        assert_eq!(build(0x10_0000, 3 * 4096, 0x9008), Err(PrpError::ListMisaligned { addr: 0x9008 }));
        assert!(PrpError::TooLong { len: 1, max: 0 }.to_string().contains("exceeds one PRP list"));
    }
}
