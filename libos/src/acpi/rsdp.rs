//! The Root System Description Pointer: signature "RSD PTR ", the ACPI 1.0 part (20 bytes, RSDT address) and
//! from revision 2 the extended part (36 bytes, XSDT address), each with its own checksum.
//! Source: ACPI 6.5 §5.2.5.3 (RSDP structure), §5.2.5.1 (finding the RSDP on IA-PC systems).
#![forbid(unsafe_code)]

use super::{checksum_ok, fill_checksum, Malformed};
use crate::wire::{self, Field};

/// The RSDP's signature.
pub const SIGNATURE: &[u8; 8] = b"RSD PTR ";
/// Length of the ACPI 1.0 part, covered by `checksum` (bytes).
pub const V1_LEN: usize = 20;
/// Length of the revision 2 structure, covered by `extended_checksum` (bytes).
pub const V2_LEN: usize = 36;

mod field {
    use crate::wire::Field;
    pub const SIGNATURE: Field = 0..8;
    pub const CHECKSUM: Field = 8..9;
    pub const OEM_ID: Field = 9..15;
    pub const REVISION: Field = 15..16;
    pub const RSDT_ADDRESS: Field = 16..20;
    pub const LENGTH: Field = 20..24;
    pub const XSDT_ADDRESS: Field = 24..32;
    pub const EXTENDED_CHECKSUM: Field = 32..33;
    pub const RESERVED: Field = 33..36;
}

/// A checked view of an RSDP: at least [`V1_LEN`] bytes, and [`V2_LEN`] when `revision` is 2 or more.
#[derive(Debug, Clone, Copy)]
pub struct Rsdp<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Rsdp<T> {
    /// Wraps `buffer` without checks (accessors may panic on a short buffer).
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let r = Self::new_unchecked(buffer);
        r.check_len()?;
        Ok(r)
    }

    /// Checks that the buffer holds the ACPI 1.0 part and, for revision 2 and later, the extended part, so no
    /// accessor panics. Errors: [`Malformed::Truncated`].
    pub fn check_len(&self) -> Result<(), Malformed> {
        let len = self.buffer.as_ref().len();
        if len < V1_LEN {
            return Err(Malformed::Truncated { len, need: V1_LEN });
        }
        if self.revision() >= 2 && len < V2_LEN {
            return Err(Malformed::Truncated { len, need: V2_LEN });
        }
        Ok(())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// `Signature` (should be [`SIGNATURE`]).
    pub fn signature(&self) -> &[u8] {
        &self.buffer.as_ref()[field::SIGNATURE]
    }

    /// `OEMID`: six ASCII bytes.
    pub fn oem_id(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OEM_ID]
    }

    /// `Revision`: 0 for ACPI 1.0 (RSDT only), 2 and later with the extended part.
    pub fn revision(&self) -> u8 {
        wire::read_u8(self.buffer.as_ref(), field::REVISION)
    }

    /// `RsdtAddress`: physical address of the RSDT.
    pub fn rsdt_address(&self) -> u32 {
        wire::read_u32(self.buffer.as_ref(), field::RSDT_ADDRESS)
    }

    /// `Length` of the whole structure (bytes; revision 2 and later).
    pub fn length(&self) -> u32 {
        wire::read_u32(self.buffer.as_ref(), field::LENGTH)
    }

    /// `XsdtAddress`: physical address of the XSDT (revision 2 and later; 0 = none).
    pub fn xsdt_address(&self) -> u64 {
        wire::read_u64(self.buffer.as_ref(), field::XSDT_ADDRESS)
    }

    /// Whether the ACPI 1.0 part sums to 0 (mod 256).
    pub fn checksum_ok(&self) -> bool {
        checksum_ok(&self.buffer.as_ref()[..V1_LEN])
    }

    /// Whether the whole revision 2 structure sums to 0 (mod 256).
    pub fn extended_checksum_ok(&self) -> bool {
        checksum_ok(&self.buffer.as_ref()[..V2_LEN])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Rsdp<T> {
    fn set(&mut self, f: Field, bytes: &[u8]) {
        self.buffer.as_mut()[f].copy_from_slice(bytes);
    }

    /// Sets `Signature`.
    pub fn set_signature(&mut self, v: &[u8; 8]) {
        self.set(field::SIGNATURE, v);
    }

    /// Sets `OEMID`.
    pub fn set_oem_id(&mut self, v: &[u8; 6]) {
        self.set(field::OEM_ID, v);
    }

    /// Sets `Revision`.
    pub fn set_revision(&mut self, v: u8) {
        wire::write_u8(self.buffer.as_mut(), field::REVISION, v);
    }

    /// Sets `RsdtAddress`.
    pub fn set_rsdt_address(&mut self, v: u32) {
        wire::write_u32(self.buffer.as_mut(), field::RSDT_ADDRESS, v);
    }

    /// Sets `Length` (revision 2 and later).
    pub fn set_length(&mut self, v: u32) {
        wire::write_u32(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Sets `XsdtAddress` (revision 2 and later).
    pub fn set_xsdt_address(&mut self, v: u64) {
        wire::write_u64(self.buffer.as_mut(), field::XSDT_ADDRESS, v);
    }

    /// Computes `Checksum` and, for revision 2 and later, `ExtendedChecksum` (in that order: the extended
    /// checksum covers the first).
    pub fn fill_checksums(&mut self) {
        let rev2 = self.revision() >= 2;
        let b = self.buffer.as_mut();
        fill_checksum(&mut b[..V1_LEN], field::CHECKSUM.start);
        if rev2 {
            fill_checksum(&mut b[..V2_LEN], field::EXTENDED_CHECKSUM.start);
        }
    }
}

/// The RSDP's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RsdpRepr {
    /// `Revision`.
    pub revision: u8,
    /// `OEMID`.
    pub oem_id: [u8; 6],
    /// `RsdtAddress`.
    pub rsdt_address: u32,
    /// `XsdtAddress` when the revision has one and it is not 0.
    pub xsdt_address: Option<u64>,
}

impl RsdpRepr {
    /// Parses a checked view: signature, the ACPI 1.0 checksum and, from revision 2, `Length` (at least
    /// [`V2_LEN`]) and the extended checksum. Errors: [`Malformed`].
    pub fn parse<T: AsRef<[u8]>>(r: &Rsdp<T>) -> Result<Self, Malformed> {
        r.check_len()?;
        if r.signature() != SIGNATURE {
            return Err(Malformed::Signature);
        }
        if !r.checksum_ok() {
            return Err(Malformed::Checksum);
        }
        let mut oem_id = [0; 6];
        oem_id.copy_from_slice(r.oem_id());
        let mut xsdt_address = None;
        if r.revision() >= 2 {
            if (r.length() as usize) < V2_LEN {
                return Err(Malformed::Length { len: r.length() });
            }
            if !r.extended_checksum_ok() {
                return Err(Malformed::Checksum);
            }
            xsdt_address = Some(r.xsdt_address()).filter(|&a| a != 0);
        }
        Ok(Self { revision: r.revision(), oem_id, rsdt_address: r.rsdt_address(), xsdt_address })
    }

    /// Bytes [`emit`](Self::emit) writes: [`V1_LEN`] before revision 2, else [`V2_LEN`].
    pub fn buffer_len(&self) -> usize {
        if self.revision >= 2 {
            V2_LEN
        } else {
            V1_LEN
        }
    }

    /// Writes the structure with valid checksums into `r` (at least [`buffer_len`](Self::buffer_len) bytes).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, r: &mut Rsdp<T>) {
        r.set_signature(SIGNATURE);
        r.set_oem_id(&self.oem_id);
        r.set_revision(self.revision);
        r.set_rsdt_address(self.rsdt_address);
        if self.revision >= 2 {
            r.set_length(V2_LEN as u32);
            r.set_xsdt_address(self.xsdt_address.unwrap_or(0));
            r.buffer.as_mut()[field::RESERVED].fill(0);
        }
        r.fill_checksums();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU: RsdpRepr = RsdpRepr { revision: 0, oem_id: *b"BOCHS ", rsdt_address: 0x7fe_2000, xsdt_address: None };

    #[test]
    fn round_trips_both_revisions() {
        let mut b = [0xaau8; V1_LEN];
        QEMU.emit(&mut Rsdp::new_unchecked(&mut b[..]));
        assert_eq!(&b[..8], b"RSD PTR ");
        let r = Rsdp::new_checked(&b[..]).unwrap();
        assert!(r.checksum_ok());
        assert_eq!(RsdpRepr::parse(&r), Ok(QEMU));
        let v2 = RsdpRepr { revision: 2, xsdt_address: Some(0x1_0000_0000), ..QEMU };
        let mut b = [0xaau8; V2_LEN];
        v2.emit(&mut Rsdp::new_unchecked(&mut b[..]));
        let r = Rsdp::new_checked(&b[..]).unwrap();
        assert_eq!(r.length(), 36);
        assert!(r.extended_checksum_ok());
        assert_eq!(RsdpRepr::parse(&r), Ok(v2));
        let no_xsdt = RsdpRepr { revision: 2, ..QEMU };
        no_xsdt.emit(&mut Rsdp::new_unchecked(&mut b[..]));
        assert_eq!(RsdpRepr::parse(&Rsdp::new_unchecked(&b[..])).unwrap().xsdt_address, None, "0 means none");
    }

    #[test]
    fn short_buffers_and_bad_fields() {
        assert_eq!(Rsdp::new_checked(&[0u8; 19][..]).err(), Some(Malformed::Truncated { len: 19, need: 20 }));
        let mut b = [0u8; V2_LEN];
        RsdpRepr { revision: 2, ..QEMU }.emit(&mut Rsdp::new_unchecked(&mut b[..]));
        assert_eq!(Rsdp::new_checked(&b[..20]).err(), Some(Malformed::Truncated { len: 20, need: 36 }));
        let mut bad = b;
        bad[0] = b'X';
        assert_eq!(RsdpRepr::parse(&Rsdp::new_unchecked(&bad[..])), Err(Malformed::Signature));
        let mut bad = b;
        bad[30] ^= 1; // extended part only
        assert_eq!(RsdpRepr::parse(&Rsdp::new_unchecked(&bad[..])), Err(Malformed::Checksum));
        let mut short = b;
        Rsdp::new_unchecked(&mut short[..]).set_length(20);
        Rsdp::new_unchecked(&mut short[..]).fill_checksums();
        assert_eq!(RsdpRepr::parse(&Rsdp::new_unchecked(&short[..])), Err(Malformed::Length { len: 20 }));
    }
}
