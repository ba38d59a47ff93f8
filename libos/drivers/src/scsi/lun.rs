//! Logical unit numbers: the 8-byte single-level LUN structure of REPORT LUNS, in the peripheral device
//! addressing method (bus 0, LUN 0..=255) or the flat space addressing method (LUN 0..=16383).
//! Source: SAM-5 §4.7.2 (eight-byte LUN structure), §4.7.7.2 (peripheral device addressing), §4.7.7.4 (flat
//! space addressing).
#![forbid(unsafe_code)]

use core::fmt;

/// Largest LUN of the flat space addressing method.
pub const MAX_FLAT: u16 = 0x3fff;
/// ADDRESS METHOD (byte 0 bits 7..6) 00b: peripheral device addressing.
const METHOD_PERIPHERAL: u8 = 0b00;
/// ADDRESS METHOD 01b: flat space addressing.
const METHOD_FLAT: u8 = 0b01;

/// A single-level LUN, 0..=16383.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lun(u16);

/// An 8-byte LUN this module does not address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LunError(pub [u8; 8]);

impl fmt::Display for LunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LUN {:02x?} is not a single-level peripheral or flat space LUN", self.0)
    }
}

impl Lun {
    /// LUN 0, which every target with a logical unit addresses (SAM-5 §4.6.5).
    pub const ZERO: Lun = Lun(0);

    /// LUN `n`; `None` above [`MAX_FLAT`].
    pub const fn new(n: u16) -> Option<Self> {
        if n <= MAX_FLAT {
            Some(Self(n))
        } else {
            None
        }
    }

    /// The number.
    pub fn get(self) -> u16 {
        self.0
    }

    /// Decodes a REPORT LUNS entry: peripheral device addressing with bus identifier 0, or flat space
    /// addressing, bytes 2..8 zero (single level). Errors: [`LunError`] otherwise.
    pub fn from_bytes(b: [u8; 8]) -> Result<Self, LunError> {
        if b[2..].iter().any(|&x| x != 0) {
            return Err(LunError(b));
        }
        match b[0] >> 6 {
            // The bus identifier (byte 0 bits 5..0) must be 0: no bus below the target.
            METHOD_PERIPHERAL if b[0] == 0 => Ok(Self(u16::from(b[1]))),
            METHOD_FLAT => Ok(Self(u16::from(b[0] & 0x3f) << 8 | u16::from(b[1]))),
            _ => Err(LunError(b)),
        }
    }

    /// The 8-byte structure: peripheral device addressing below 256 (as SAM-5 prefers for them), flat space
    /// addressing above.
    pub fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        if self.0 < 256 {
            b[1] = self.0 as u8;
        } else {
            b[0] = METHOD_FLAT << 6 | (self.0 >> 8) as u8;
            b[1] = self.0 as u8;
        }
        b
    }

    /// The first two bytes in flat space addressing whatever the number (what virtio-scsi's `lun[2..4]`
    /// carries, virtio 1.2 §5.6.6.1).
    pub fn flat(self) -> [u8; 2] {
        [METHOD_FLAT << 6 | (self.0 >> 8) as u8, self.0 as u8]
    }
}

impl fmt::Display for Lun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_single_level_methods() {
        for n in [0u16, 1, 255, 256, 0x3fff] {
            let l = Lun::new(n).unwrap();
            assert_eq!(Lun::from_bytes(l.to_bytes()), Ok(l), "{n}");
            let [a, b] = l.flat();
            assert_eq!(Lun::from_bytes([a, b, 0, 0, 0, 0, 0, 0]), Ok(l), "flat {n}");
        }
        assert_eq!(Lun::new(0x4000), None);
        assert_eq!(Lun::new(5).unwrap().to_bytes(), [0, 5, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Lun::new(0x123).unwrap().to_bytes()[..2], [0x41, 0x23]);
        assert_eq!(Lun::new(7).unwrap().flat(), [0x40, 7]);
    }

    #[test]
    fn other_formats_are_refused() {
        for b in [
            [0x01, 0, 0, 0, 0, 0, 0, 0], // peripheral with bus 1
            [0x80, 1, 0, 0, 0, 0, 0, 0], // logical unit addressing
            [0xC0, 1, 0, 0, 0, 0, 0, 0], // extended
            [0, 1, 0, 2, 0, 0, 0, 0],    // second level
        ] {
            assert_eq!(Lun::from_bytes(b), Err(LunError(b)));
        }
        assert!(LunError([0xC0, 0, 0, 0, 0, 0, 0, 0]).to_string().contains("c0"));
    }
}
