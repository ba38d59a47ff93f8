//! A system description table: the 36-byte header every ACPI table after the RSDP starts with (signature,
//! length, revision, checksum over the whole table, OEM and creator identification), the body after it, and
//! the root tables' bodies (RSDT: 32-bit, XSDT: 64-bit physical addresses of the other tables).
//! Source: ACPI 6.5 §5.2.6 (system description table header), §5.2.7 (RSDT), §5.2.8 (XSDT).
#![forbid(unsafe_code)]

use super::{checksum_ok, fill_checksum, Malformed};
use crate::wire;

/// Length of the header (bytes).
pub const HEADER_LEN: usize = 36;

mod field {
    use crate::wire::{Field, Rest};
    pub const SIGNATURE: Field = 0..4;
    pub const LENGTH: Field = 4..8;
    pub const REVISION: Field = 8..9;
    pub const CHECKSUM: Field = 9..10;
    pub const OEM_ID: Field = 10..16;
    pub const OEM_TABLE_ID: Field = 16..24;
    pub const OEM_REVISION: Field = 24..28;
    pub const CREATOR_ID: Field = 28..32;
    pub const CREATOR_REVISION: Field = 32..36;
    pub const BODY: Rest = 36..;
}

/// A checked view of a system description table: the header, and as much of the table as the buffer holds
/// (a buffer of exactly [`HEADER_LEN`] bytes is a header read ahead of the whole table).
#[derive(Debug, Clone, Copy)]
pub struct Sdt<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Sdt<T> {
    /// Wraps `buffer` without checks (accessors may panic on a short buffer).
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let t = Self::new_unchecked(buffer);
        t.check_len()?;
        Ok(t)
    }

    /// Checks that the buffer holds the header, so no accessor panics. Errors: [`Malformed::Truncated`].
    pub fn check_len(&self) -> Result<(), Malformed> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Malformed::Truncated { len, need: HEADER_LEN });
        }
        Ok(())
    }

    /// Checks that the buffer holds the whole table `Length` names, and that `Length` covers the header.
    /// Errors: [`Malformed::Length`] for a `Length` below the header, [`Malformed::Truncated`].
    pub fn check_whole(&self) -> Result<(), Malformed> {
        self.check_len()?;
        let (len, have) = (self.length(), self.buffer.as_ref().len());
        if (len as usize) < HEADER_LEN {
            return Err(Malformed::Length { len });
        }
        if have < len as usize {
            return Err(Malformed::Truncated { len: have, need: len as usize });
        }
        Ok(())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// `Signature`: four ASCII bytes such as `b"MCFG"`.
    pub fn signature(&self) -> &[u8] {
        &self.buffer.as_ref()[field::SIGNATURE]
    }

    /// `Length` of the whole table, header included (bytes).
    pub fn length(&self) -> u32 {
        wire::read_u32(self.buffer.as_ref(), field::LENGTH)
    }

    /// `Revision` of the table's layout.
    pub fn revision(&self) -> u8 {
        wire::read_u8(self.buffer.as_ref(), field::REVISION)
    }

    /// `OEMID`.
    pub fn oem_id(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OEM_ID]
    }

    /// `OEM Table ID`.
    pub fn oem_table_id(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OEM_TABLE_ID]
    }

    /// `OEM Revision`.
    pub fn oem_revision(&self) -> u32 {
        wire::read_u32(self.buffer.as_ref(), field::OEM_REVISION)
    }

    /// `Creator ID`.
    pub fn creator_id(&self) -> &[u8] {
        &self.buffer.as_ref()[field::CREATOR_ID]
    }

    /// `Creator Revision`.
    pub fn creator_revision(&self) -> u32 {
        wire::read_u32(self.buffer.as_ref(), field::CREATOR_REVISION)
    }

    /// Whether the whole buffer sums to 0 (mod 256); call after [`check_whole`](Self::check_whole) on a
    /// buffer of exactly `Length` bytes.
    pub fn checksum_ok(&self) -> bool {
        checksum_ok(self.buffer.as_ref())
    }

    /// The bytes after the header, up to `Length` (or the end of the buffer, if shorter).
    pub fn body(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = (self.length() as usize).clamp(HEADER_LEN, b.len());
        &b[field::BODY][..end - HEADER_LEN]
    }

    /// The table addresses a root table lists: 4-byte entries for the RSDT (`wide` false), 8-byte entries for
    /// the XSDT (`wide` true). A partial last entry is ignored.
    pub fn entries(&self, wide: bool) -> impl Iterator<Item = u64> + '_ {
        let size = if wide { 8 } else { 4 };
        self.body().chunks_exact(size).map(move |e| {
            if wide {
                wire::read_u64(e, 0..8)
            } else {
                u64::from(wire::read_u32(e, 0..4))
            }
        })
    }
}

/// A system description table header's contents (everything but `Length` and `Checksum`, which
/// [`emit`](Self::emit) computes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdtRepr {
    /// `Signature`.
    pub signature: [u8; 4],
    /// `Revision`.
    pub revision: u8,
    /// `OEMID`.
    pub oem_id: [u8; 6],
    /// `OEM Table ID`.
    pub oem_table_id: [u8; 8],
    /// `OEM Revision`.
    pub oem_revision: u32,
    /// `Creator ID`.
    pub creator_id: [u8; 4],
    /// `Creator Revision`.
    pub creator_revision: u32,
}

impl SdtRepr {
    /// Parses the header of a checked view whose signature must be `signature`. Checks the checksum when the
    /// buffer holds the whole table. Errors: [`Malformed::Signature`], [`Malformed::Length`],
    /// [`Malformed::Checksum`].
    pub fn parse<T: AsRef<[u8]>>(t: &Sdt<T>, signature: &[u8; 4]) -> Result<Self, Malformed> {
        t.check_len()?;
        if t.signature() != signature {
            return Err(Malformed::Signature);
        }
        if (t.length() as usize) < HEADER_LEN {
            return Err(Malformed::Length { len: t.length() });
        }
        if t.buffer.as_ref().len() == t.length() as usize && !t.checksum_ok() {
            return Err(Malformed::Checksum);
        }
        let copy = |s: &[u8], out: &mut [u8]| out.copy_from_slice(s);
        let mut r = Self {
            signature: *signature,
            revision: t.revision(),
            oem_id: [0; 6],
            oem_table_id: [0; 8],
            oem_revision: t.oem_revision(),
            creator_id: [0; 4],
            creator_revision: t.creator_revision(),
        };
        copy(t.oem_id(), &mut r.oem_id);
        copy(t.oem_table_id(), &mut r.oem_table_id);
        copy(t.creator_id(), &mut r.creator_id);
        Ok(r)
    }

    /// Writes the header into `buffer`, whose length is the table's (header and body, the body already in
    /// place), with `Length` and `Checksum` computed. `buffer` must hold at least [`HEADER_LEN`] bytes.
    pub fn emit(&self, buffer: &mut [u8]) {
        let len = buffer.len() as u32;
        buffer[field::SIGNATURE].copy_from_slice(&self.signature);
        wire::write_u32(buffer, field::LENGTH, len);
        wire::write_u8(buffer, field::REVISION, self.revision);
        buffer[field::OEM_ID].copy_from_slice(&self.oem_id);
        buffer[field::OEM_TABLE_ID].copy_from_slice(&self.oem_table_id);
        wire::write_u32(buffer, field::OEM_REVISION, self.oem_revision);
        buffer[field::CREATOR_ID].copy_from_slice(&self.creator_id);
        wire::write_u32(buffer, field::CREATOR_REVISION, self.creator_revision);
        fill_checksum(buffer, field::CHECKSUM.start);
    }
}

/// QEMU's (SeaBIOS's) table header, for tests.
#[cfg(test)]
pub(super) const BOCHS: SdtRepr = SdtRepr {
    signature: *b"XSDT",
    revision: 1,
    oem_id: *b"BOCHS ",
    oem_table_id: *b"BXPC    ",
    oem_revision: 1,
    creator_id: *b"BXPC",
    creator_revision: 1,
};

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    fn xsdt(entries: &[u64]) -> Vec<u8> {
        let mut t = vec![0u8; HEADER_LEN];
        entries.iter().for_each(|e| t.extend_from_slice(&e.to_le_bytes()));
        BOCHS.emit(&mut t);
        t
    }

    #[test]
    fn round_trip_and_entries() {
        let t = xsdt(&[0x7fe_1000, 0x1_0000_2000]);
        let v = Sdt::new_checked(&t[..]).unwrap();
        v.check_whole().unwrap();
        assert_eq!(v.length(), 52);
        assert!(v.checksum_ok());
        assert_eq!(SdtRepr::parse(&v, b"XSDT"), Ok(BOCHS));
        assert_eq!(v.entries(true).collect::<Vec<_>>(), [0x7fe_1000, 0x1_0000_2000]);
        assert_eq!(v.entries(false).collect::<Vec<_>>(), [0x7fe_1000, 0, 0x2000, 1], "the same bytes as an RSDT");
        assert_eq!(SdtRepr::parse(&Sdt::new_unchecked(&t[..HEADER_LEN]), b"XSDT"), Ok(BOCHS), "header read ahead");
    }

    #[test]
    fn short_buffers_and_bad_headers() {
        let t = xsdt(&[1]);
        assert_eq!(Sdt::new_checked(&t[..35]).err(), Some(Malformed::Truncated { len: 35, need: 36 }));
        assert_eq!(Sdt::new_unchecked(&t[..40]).check_whole(), Err(Malformed::Truncated { len: 40, need: 44 }));
        assert_eq!(Sdt::new_unchecked(&t[..40]).body().len(), 4, "body clamped to the buffer");
        assert_eq!(SdtRepr::parse(&Sdt::new_unchecked(&t[..]), b"RSDT"), Err(Malformed::Signature));
        let mut bad = t.clone();
        bad[40] ^= 1;
        assert_eq!(SdtRepr::parse(&Sdt::new_unchecked(&bad[..]), b"XSDT"), Err(Malformed::Checksum));
        let mut bad = t.clone();
        wire::write_u32(&mut bad, field::LENGTH, 3);
        assert_eq!(Sdt::new_unchecked(&bad[..]).check_whole(), Err(Malformed::Length { len: 3 }));
        assert_eq!(Sdt::new_unchecked(&bad[..]).body(), &[] as &[u8], "a length below the header has no body");
        assert_eq!(SdtRepr::parse(&Sdt::new_unchecked(&bad[..]), b"XSDT"), Err(Malformed::Length { len: 3 }));
    }
}
