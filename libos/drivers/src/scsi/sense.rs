//! SCSI sense data, fixed format (response codes 70h/71h) and descriptor format (72h/73h): the checked view
//! [`Sense`], the owned [`SenseRepr`] with the sense key, ASC/ASCQ and INFORMATION, and their names for error
//! messages. Source: SPC-5 §4.4.1 (response codes), §4.4.2 (descriptor format, information descriptor
//! §4.4.2.2), §4.4.3 (fixed format), Table 49 (sense keys), Annex F.2 (ASC/ASCQ assignments).
#![forbid(unsafe_code)]

use core::fmt;
use libos::wire::{read_u32_be, read_u64_be, read_u8, write_u32_be, write_u64_be, write_u8};

mod field {
    use libos::wire::Field;

    /// Byte 0: VALID (fixed format, bit 7) and RESPONSE CODE (bits 6..0).
    pub const RESPONSE: Field = 0..1;
    /// The ADDITIONAL SENSE LENGTH byte of both formats.
    pub const ADDITIONAL_LENGTH: Field = 7..8;

    /// Fixed format (SPC-5 §4.4.3).
    pub mod fixed {
        use libos::wire::Field;
        pub const SENSE_KEY: Field = 2..3;
        pub const INFORMATION: Field = 3..7;
        pub const ASC: Field = 12..13;
        pub const ASCQ: Field = 13..14;
    }

    /// Descriptor format (SPC-5 §4.4.2).
    pub mod descriptor {
        use libos::wire::Field;
        pub const SENSE_KEY: Field = 1..2;
        pub const ASC: Field = 2..3;
        pub const ASCQ: Field = 3..4;
        /// First sense data descriptor.
        pub const DESCRIPTORS: usize = 8;
        /// Information descriptor (§4.4.2.2): type, additional length (0Ah), VALID, reserved, INFORMATION.
        pub const INFO_TYPE: usize = 0;
        pub const INFO_VALID: usize = 2;
        pub const INFO_VALUE: core::ops::Range<usize> = 4..12;
        pub const INFO_LEN: usize = 12;
    }
}

/// RESPONSE CODE 70h: fixed format, current error.
pub const FIXED_CURRENT: u8 = 0x70;
/// RESPONSE CODE 71h: fixed format, deferred error.
pub const FIXED_DEFERRED: u8 = 0x71;
/// RESPONSE CODE 72h: descriptor format, current error.
pub const DESCRIPTOR_CURRENT: u8 = 0x72;
/// RESPONSE CODE 73h: descriptor format, deferred error.
pub const DESCRIPTOR_DEFERRED: u8 = 0x73;
/// Fixed-format bytes up to and including ASCQ, the least that carries a sense key and ASC/ASCQ.
pub const FIXED_MIN_LEN: usize = 14;
/// Fixed-format sense data as devices usually return it (bytes; ADDITIONAL SENSE LENGTH 10).
pub const FIXED_LEN: usize = 18;
/// Descriptor-format header (bytes).
pub const DESCRIPTOR_MIN_LEN: usize = 8;

/// A SENSE KEY (SPC-5 Table 49).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenseKey(pub u8);

impl SenseKey {
    /// NO SENSE.
    pub const NO_SENSE: Self = Self(0x0);
    /// RECOVERED ERROR.
    pub const RECOVERED_ERROR: Self = Self(0x1);
    /// NOT READY.
    pub const NOT_READY: Self = Self(0x2);
    /// MEDIUM ERROR.
    pub const MEDIUM_ERROR: Self = Self(0x3);
    /// HARDWARE ERROR.
    pub const HARDWARE_ERROR: Self = Self(0x4);
    /// ILLEGAL REQUEST.
    pub const ILLEGAL_REQUEST: Self = Self(0x5);
    /// UNIT ATTENTION: the unit was reset, its medium or parameters changed; the command was not run.
    pub const UNIT_ATTENTION: Self = Self(0x6);
    /// DATA PROTECT (e.g. a write-protected medium).
    pub const DATA_PROTECT: Self = Self(0x7);
    /// ABORTED COMMAND.
    pub const ABORTED_COMMAND: Self = Self(0xB);

    /// The key's name, e.g. "MEDIUM ERROR"; "reserved" for 0Ch.
    pub fn name(self) -> &'static str {
        match self.0 & 0xf {
            0x0 => "NO SENSE",
            0x1 => "RECOVERED ERROR",
            0x2 => "NOT READY",
            0x3 => "MEDIUM ERROR",
            0x4 => "HARDWARE ERROR",
            0x5 => "ILLEGAL REQUEST",
            0x6 => "UNIT ATTENTION",
            0x7 => "DATA PROTECT",
            0x8 => "BLANK CHECK",
            0x9 => "VENDOR SPECIFIC",
            0xA => "COPY ABORTED",
            0xB => "ABORTED COMMAND",
            0xD => "VOLUME OVERFLOW",
            0xE => "MISCOMPARE",
            0xF => "COMPLETED",
            _ => "reserved",
        }
    }
}

impl fmt::Display for SenseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:#x})", self.name(), self.0)
    }
}

/// The description of an ADDITIONAL SENSE CODE / QUALIFIER pair block drivers meet (SPC-5 Annex F.2), `None`
/// for the others (the numbers are printed either way).
pub fn asc_name(asc: u8, ascq: u8) -> Option<&'static str> {
    Some(match (asc, ascq) {
        (0x00, 0x00) => "no additional sense information",
        (0x04, 0x00) => "logical unit not ready, cause not reportable",
        (0x04, 0x01) => "logical unit is in process of becoming ready",
        (0x04, 0x02) => "logical unit not ready, initializing command required",
        (0x0C, 0x00) => "write error",
        (0x11, 0x00) => "unrecovered read error",
        (0x20, 0x00) => "invalid command operation code",
        (0x21, 0x00) => "logical block address out of range",
        (0x24, 0x00) => "invalid field in CDB",
        (0x25, 0x00) => "logical unit not supported",
        (0x27, 0x00) => "write protected",
        (0x28, 0x00) => "not ready to ready change, medium may have changed",
        (0x29, 0x00) => "power on, reset, or bus device reset occurred",
        (0x29, 0x01) => "power on occurred",
        (0x29, 0x02) => "SCSI bus reset occurred",
        (0x2A, 0x01) => "mode parameters changed",
        (0x2A, 0x09) => "capacity data has changed",
        (0x3A, 0x00) => "medium not present",
        (0x3F, 0x0E) => "reported LUNs data has changed",
        (0x44, 0x00) => "internal target failure",
        _ => return None,
    })
}

/// Why bytes are not sense data this module decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenseError {
    /// Shorter than the format's minimum (`need` bytes) — empty when the device returned none.
    Short {
        /// Bytes of sense data returned (0: none).
        len: usize,
        /// Bytes the format needs ([`FIXED_MIN_LEN`] or [`DESCRIPTOR_MIN_LEN`]; 1 when none were returned).
        need: usize,
    },
    /// A RESPONSE CODE other than 70h–73h (7Fh is vendor specific, others reserved).
    ResponseCode(u8),
}

impl fmt::Display for SenseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Short { len: 0, .. } => write!(f, "no sense data"),
            Self::Short { len, need } => write!(f, "sense data of {len} bytes, the format needs {need}"),
            Self::ResponseCode(c) => write!(f, "sense data with unknown response code {c:#04x}"),
        }
    }
}

/// Sense data format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Fixed format (70h/71h).
    Fixed,
    /// Descriptor format (72h/73h).
    Descriptor,
}

/// A checked view of sense data of either format: [`Sense::new_checked`] proves the buffer holds the fields of
/// its format (14 bytes fixed, 8 descriptor), so the key and ASC/ASCQ accessors cannot panic.
#[derive(Debug, Clone, Copy)]
pub struct Sense<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Sense<T> {
    /// Wraps `buffer` without checks.
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self, SenseError> {
        let s = Self::new_unchecked(buffer);
        s.check_len()?;
        Ok(s)
    }

    /// Errors: [`SenseError::Short`] (no response code, or fewer bytes than the format's fields),
    /// [`SenseError::ResponseCode`].
    pub fn check_len(&self) -> Result<(), SenseError> {
        let len = self.buffer.as_ref().len();
        let need = match self.buffer.as_ref().first() {
            None => return Err(SenseError::Short { len, need: 1 }),
            Some(_) => match self.format()? {
                Format::Fixed => FIXED_MIN_LEN,
                Format::Descriptor => DESCRIPTOR_MIN_LEN,
            },
        };
        if len < need {
            return Err(SenseError::Short { len, need });
        }
        Ok(())
    }

    /// RESPONSE CODE (byte 0, bits 6..0).
    pub fn response_code(&self) -> u8 {
        read_u8(self.buffer.as_ref(), field::RESPONSE) & 0x7f
    }

    /// The format the response code names. Errors: [`SenseError::ResponseCode`].
    pub fn format(&self) -> Result<Format, SenseError> {
        match self.response_code() {
            FIXED_CURRENT | FIXED_DEFERRED => Ok(Format::Fixed),
            DESCRIPTOR_CURRENT | DESCRIPTOR_DEFERRED => Ok(Format::Descriptor),
            other => Err(SenseError::ResponseCode(other)),
        }
    }

    /// Whether the error is deferred (71h, 73h).
    pub fn deferred(&self) -> bool {
        matches!(self.response_code(), FIXED_DEFERRED | DESCRIPTOR_DEFERRED)
    }

    fn is_fixed(&self) -> bool {
        self.format() == Ok(Format::Fixed)
    }

    /// SENSE KEY.
    pub fn sense_key(&self) -> SenseKey {
        let f = if self.is_fixed() { field::fixed::SENSE_KEY } else { field::descriptor::SENSE_KEY };
        SenseKey(read_u8(self.buffer.as_ref(), f) & 0xf)
    }

    /// ADDITIONAL SENSE CODE.
    pub fn asc(&self) -> u8 {
        let f = if self.is_fixed() { field::fixed::ASC } else { field::descriptor::ASC };
        read_u8(self.buffer.as_ref(), f)
    }

    /// ADDITIONAL SENSE CODE QUALIFIER.
    pub fn ascq(&self) -> u8 {
        let f = if self.is_fixed() { field::fixed::ASCQ } else { field::descriptor::ASCQ };
        read_u8(self.buffer.as_ref(), f)
    }

    /// The INFORMATION field when valid: fixed format with VALID set, or a descriptor-format information
    /// descriptor (type 00h) with VALID set that lies inside both the buffer and ADDITIONAL SENSE LENGTH.
    pub fn information(&self) -> Option<u64> {
        let b = self.buffer.as_ref();
        if self.is_fixed() {
            return (read_u8(b, field::RESPONSE) & 0x80 != 0)
                .then(|| u64::from(read_u32_be(b, field::fixed::INFORMATION)));
        }
        use field::descriptor::*;
        let end = (DESCRIPTORS + usize::from(read_u8(b, field::ADDITIONAL_LENGTH))).min(b.len());
        let mut at = DESCRIPTORS;
        while at + 2 <= end {
            let len = 2 + usize::from(b[at + 1]);
            if b[at + INFO_TYPE] == 0 && len >= INFO_LEN && at + INFO_LEN <= end {
                let d = &b[at..at + INFO_LEN];
                return (d[INFO_VALID] & 0x80 != 0).then(|| read_u64_be(d, INFO_VALUE));
            }
            at += len;
        }
        None
    }
}

/// Decoded sense data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenseRepr {
    /// Fixed or descriptor format.
    pub format: Format,
    /// A deferred error (from an earlier command), not this command's.
    pub deferred: bool,
    /// SENSE KEY.
    pub key: SenseKey,
    /// ADDITIONAL SENSE CODE.
    pub asc: u8,
    /// ADDITIONAL SENSE CODE QUALIFIER.
    pub ascq: u8,
    /// INFORMATION (e.g. the first failing LBA) when the device marked it valid.
    pub information: Option<u64>,
}

impl SenseRepr {
    /// Decodes `sense`. Errors: [`SenseError`].
    pub fn parse(sense: &Sense<&[u8]>) -> Result<Self, SenseError> {
        sense.check_len()?;
        Ok(Self {
            format: sense.format()?,
            deferred: sense.deferred(),
            key: sense.sense_key(),
            asc: sense.asc(),
            ascq: sense.ascq(),
            information: sense.information(),
        })
    }

    /// Decodes the bytes `b` (a convenience over [`Sense::new_checked`] and [`parse`](Self::parse)).
    pub fn from_bytes(b: &[u8]) -> Result<Self, SenseError> {
        Self::parse(&Sense::new_checked(b)?)
    }

    /// Current-error sense data of `key`/`asc`/`ascq` in fixed format, as a device would return it.
    pub fn current(key: SenseKey, asc: u8, ascq: u8) -> Self {
        Self { format: Format::Fixed, deferred: false, key, asc, ascq, information: None }
    }

    /// Bytes [`emit`](Self::emit) writes: 18 fixed, 8 (+ 12 with INFORMATION) descriptor.
    pub fn buffer_len(&self) -> usize {
        match self.format {
            Format::Fixed => FIXED_LEN,
            Format::Descriptor => DESCRIPTOR_MIN_LEN + if self.information.is_some() { 12 } else { 0 },
        }
    }

    /// Writes the sense data into the first [`buffer_len`](Self::buffer_len) bytes of `b`. An INFORMATION value
    /// above 32 bits is truncated in fixed format (as the standard's fixed field is 4 bytes).
    pub fn emit(&self, b: &mut [u8]) {
        let b = &mut b[..self.buffer_len()];
        b.fill(0);
        let code = match (self.format, self.deferred) {
            (Format::Fixed, false) => FIXED_CURRENT,
            (Format::Fixed, true) => FIXED_DEFERRED,
            (Format::Descriptor, false) => DESCRIPTOR_CURRENT,
            (Format::Descriptor, true) => DESCRIPTOR_DEFERRED,
        };
        match self.format {
            Format::Fixed => {
                write_u8(b, field::RESPONSE, code | if self.information.is_some() { 0x80 } else { 0 });
                write_u8(b, field::fixed::SENSE_KEY, self.key.0 & 0xf);
                write_u32_be(b, field::fixed::INFORMATION, self.information.unwrap_or(0) as u32);
                write_u8(b, field::ADDITIONAL_LENGTH, (FIXED_LEN - 8) as u8);
                write_u8(b, field::fixed::ASC, self.asc);
                write_u8(b, field::fixed::ASCQ, self.ascq);
            }
            Format::Descriptor => {
                use field::descriptor::*;
                write_u8(b, field::RESPONSE, code);
                write_u8(b, SENSE_KEY, self.key.0 & 0xf);
                write_u8(b, ASC, self.asc);
                write_u8(b, ASCQ, self.ascq);
                if let Some(info) = self.information {
                    write_u8(b, field::ADDITIONAL_LENGTH, INFO_LEN as u8);
                    let d = &mut b[DESCRIPTORS..DESCRIPTORS + INFO_LEN];
                    d[1] = (INFO_LEN - 2) as u8;
                    d[INFO_VALID] = 0x80;
                    write_u64_be(d, INFO_VALUE, info);
                }
            }
        }
    }
}

impl fmt::Display for SenseRepr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sense key {}, ASC/ASCQ {:#04x}/{:#04x}", self.key, self.asc, self.ascq)?;
        if let Some(name) = asc_name(self.asc, self.ascq) {
            write!(f, " ({name})")?;
        }
        if let Some(info) = self.information {
            write!(f, ", information {info:#x}")?;
        }
        if self.deferred {
            f.write_str(", deferred")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_format_round_trip_and_layout() {
        let s = SenseRepr { information: Some(0x1234), ..SenseRepr::current(SenseKey::MEDIUM_ERROR, 0x11, 0) };
        let mut b = [0u8; 18];
        s.emit(&mut b);
        assert_eq!(b[0], 0xF0, "VALID | 70h");
        assert_eq!((b[2], b[7], b[12], b[13]), (0x3, 10, 0x11, 0));
        assert_eq!(&b[3..7], &[0, 0, 0x12, 0x34]);
        assert_eq!(SenseRepr::from_bytes(&b), Ok(s));
        assert_eq!(
            s.to_string(),
            "sense key MEDIUM ERROR (0x3), ASC/ASCQ 0x11/0x00 (unrecovered read error), information 0x1234"
        );
        // Without VALID the INFORMATION field is not reported.
        b[0] = 0x70;
        assert_eq!(SenseRepr::from_bytes(&b).unwrap().information, None);
        // The 14 bytes up to ASCQ suffice (storvsc's 18/20-byte buffers and QEMU's 18 both pass).
        assert_eq!(SenseRepr::from_bytes(&b[..14]).unwrap().asc, 0x11);
        assert_eq!(SenseRepr::from_bytes(&b[..13]), Err(SenseError::Short { len: 13, need: 14 }));
    }

    #[test]
    fn descriptor_format_with_information() {
        let s = SenseRepr {
            format: Format::Descriptor,
            deferred: true,
            key: SenseKey::UNIT_ATTENTION,
            asc: 0x29,
            ascq: 0x00,
            information: Some(0x1_0000_0000),
        };
        let mut b = [0u8; 32];
        s.emit(&mut b);
        assert_eq!(&b[..4], &[0x73, 0x6, 0x29, 0]);
        assert_eq!(b[7], 12);
        assert_eq!(SenseRepr::from_bytes(&b[..20]), Ok(s));
        assert!(s
            .to_string()
            .ends_with("(power on, reset, or bus device reset occurred), information 0x100000000, deferred"));
        // The header alone: key and codes, no information.
        let plain = SenseRepr { information: None, deferred: false, ..s };
        let mut h = [0u8; 8];
        plain.emit(&mut h);
        assert_eq!(SenseRepr::from_bytes(&h), Ok(plain));
    }

    #[test]
    fn hostile_descriptor_lengths_stay_in_bounds() {
        // ADDITIONAL SENSE LENGTH claims 244 bytes of descriptors in an 10-byte buffer; a descriptor of length 255.
        let mut b = [0u8; 10];
        b[0] = 0x72;
        b[1] = 0x5;
        b[7] = 244;
        b[8] = 0;
        b[9] = 0xff;
        let s = SenseRepr::from_bytes(&b).unwrap();
        assert_eq!((s.key, s.information), (SenseKey::ILLEGAL_REQUEST, None));
        // A descriptor of another type first, then the information descriptor.
        let mut b = [0u8; 24];
        b[..4].copy_from_slice(&[0x72, 0x3, 0x11, 0]);
        b[7] = 16;
        b[8..12].copy_from_slice(&[0x02, 0x02, 0, 0]); // type 2, 4 bytes in all
        b[12..24].copy_from_slice(&[0, 0x0A, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 42]);
        assert_eq!(SenseRepr::from_bytes(&b).unwrap().information, Some(42));
        b[7] = 15; // the information descriptor no longer fits ADDITIONAL SENSE LENGTH
        assert_eq!(SenseRepr::from_bytes(&b).unwrap().information, None);
    }

    #[test]
    fn unknown_or_missing_sense() {
        assert_eq!(SenseRepr::from_bytes(&[]), Err(SenseError::Short { len: 0, need: 1 }));
        assert_eq!(SenseError::Short { len: 0, need: 1 }.to_string(), "no sense data");
        assert_eq!(SenseRepr::from_bytes(&[0x7f; 18]), Err(SenseError::ResponseCode(0x7f)));
        assert_eq!(SenseRepr::from_bytes(&[0; 18]), Err(SenseError::ResponseCode(0)));
        assert_eq!(SenseRepr::from_bytes(&[0x72, 0, 0]), Err(SenseError::Short { len: 3, need: 8 }));
        assert_eq!(SenseKey(0xC).name(), "reserved");
        assert_eq!(asc_name(0x99, 0x99), None);
    }
}
