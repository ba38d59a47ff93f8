//! The `virtio_mmio.device=SIZE@BASE:IRQ[:ID]` kernel argument that QEMU's microvm (with `acpi=off`) and
//! Firecracker append to the command line. Source: Linux `drivers/virtio/virtio_mmio.c`
//! (`vm_cmdline_set`: `SIZE` through `memparse`, so a `K`/`M`/`G` suffix is allowed; `BASE` and `IRQ` C-style
//! numbers; optional platform-device `ID`) and `Documentation/admin-guide/kernel-parameters.txt`.
#![forbid(unsafe_code)]

use alloc::string::{String, ToString};
use core::fmt;

/// Smallest register window a virtio-mmio device can have (bytes): the registers end at 0x100, where the
/// device-specific configuration starts (virtio 1.2 §4.2.2).
pub const MIN_SIZE: u64 = 0x100;

/// One virtio-mmio device window from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioSlot {
    /// Guest-physical base of the register window (bytes).
    pub base: u64,
    /// Size of the register window (bytes), at least [`MIN_SIZE`].
    pub size: u64,
    /// Interrupt line: an I/O APIC GSI on x86.
    pub gsi: u32,
}

/// A malformed `virtio_mmio.device=` value. Every variant carries the whole token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MmioArgError {
    /// The value is not `SIZE@BASE:IRQ[:ID]` (a separator is missing or there are extra fields).
    Shape {
        /// The whole `virtio_mmio.device=` value.
        token: String,
    },
    /// One field is not a number (or a size with a bad suffix, or does not fit its type).
    BadNumber {
        /// The whole `virtio_mmio.device=` value.
        token: String,
        /// Which field: "size", "base address", "irq" or "id".
        field: &'static str,
        /// The field's text.
        text: String,
    },
    /// The window is smaller than the 0x100 bytes of virtio-mmio registers.
    TooSmall {
        /// The whole `virtio_mmio.device=` value.
        token: String,
        /// The window's size (bytes).
        size: u64,
    },
    /// `BASE + SIZE` wraps around the 64-bit address space, or the base is not 4-byte aligned.
    BadRange {
        /// The whole `virtio_mmio.device=` value.
        token: String,
    },
}

impl fmt::Display for MmioArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shape { token } => {
                write!(f, "virtio_mmio.device={token}: expected SIZE@BASE:IRQ[:ID], e.g. 512@0xfeb00e00:12")
            }
            Self::BadNumber { token, field, text } => {
                write!(f, "virtio_mmio.device={token}: {field} `{text}` is not a valid number")
            }
            Self::TooSmall { token, size } => write!(
                f,
                "virtio_mmio.device={token}: window of {size:#x} bytes is smaller than the {MIN_SIZE:#x} bytes of \
                 virtio-mmio registers"
            ),
            Self::BadRange { token } => {
                write!(f, "virtio_mmio.device={token}: base is not 4-byte aligned or base + size overflows")
            }
        }
    }
}

/// Parses a C-style unsigned number: `0x`/`0X` hexadecimal, a leading `0` octal, else decimal.
fn parse_c_number(s: &str) -> Option<u64> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return u64::from_str_radix(hex, 16).ok();
    }
    if s.len() > 1 && s.starts_with('0') {
        return u64::from_str_radix(&s[1..], 8).ok();
    }
    s.parse().ok()
}

/// Linux `memparse`: a C-style number with an optional binary suffix `K`, `M`, `G` (either case).
fn parse_memsize(s: &str) -> Option<u64> {
    let (num, shift) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 10),
        b'm' | b'M' => (&s[..s.len() - 1], 20),
        b'g' | b'G' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    parse_c_number(num)?.checked_mul(1u64 << shift)
}

/// Parses one value of `virtio_mmio.device=` (the part after `=`), e.g. `512@0xfeb00e00:12`.
/// Errors: [`MmioArgError`], naming the token and the field at fault.
pub fn parse(token: &str) -> Result<MmioSlot, MmioArgError> {
    let shape = || MmioArgError::Shape { token: token.to_string() };
    let bad = |field: &'static str, text: &str| MmioArgError::BadNumber {
        token: token.to_string(),
        field,
        text: text.to_string(),
    };
    let (size_s, rest) = token.split_once('@').ok_or_else(shape)?;
    let mut fields = rest.split(':');
    let base_s = fields.next().ok_or_else(shape)?;
    let irq_s = fields.next().ok_or_else(shape)?;
    let id_s = fields.next();
    if fields.next().is_some() || size_s.is_empty() || base_s.is_empty() || irq_s.is_empty() {
        return Err(shape());
    }
    let size = parse_memsize(size_s).ok_or_else(|| bad("size", size_s))?;
    let base = parse_c_number(base_s).ok_or_else(|| bad("base address", base_s))?;
    let gsi = parse_c_number(irq_s).and_then(|v| u32::try_from(v).ok()).ok_or_else(|| bad("irq", irq_s))?;
    if let Some(id) = id_s {
        // The platform-device id only names the Linux device; check it is a number and ignore it.
        parse_c_number(id).ok_or_else(|| bad("id", id))?;
    }
    if size < MIN_SIZE {
        return Err(MmioArgError::TooSmall { token: token.to_string(), size });
    }
    if base % 4 != 0 || base.checked_add(size).is_none() {
        return Err(MmioArgError::BadRange { token: token.to_string() });
    }
    Ok(MmioSlot { base, size, gsi })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_microvm_token() {
        assert_eq!(parse("512@0xfeb00e00:12"), Ok(MmioSlot { base: 0xfeb0_0e00, size: 512, gsi: 12 }));
    }

    #[test]
    fn suffixes_radixes_and_id() {
        assert_eq!(parse("4K@0xd0000000:5:3"), Ok(MmioSlot { base: 0xd000_0000, size: 4096, gsi: 5 }));
        assert_eq!(parse("0x200@4096:010"), Ok(MmioSlot { base: 4096, size: 512, gsi: 8 }));
        assert_eq!(parse("1m@0X10000000:23").map(|s| s.size), Ok(1 << 20));
    }

    #[test]
    fn malformed_tokens_name_the_token() {
        for t in ["", "512", "512@0xfeb00e00", "@0x1000:5", "512@:5", "512@0x1000:", "512@0x1000:5:1:2"] {
            assert_eq!(parse(t), Err(MmioArgError::Shape { token: t.into() }), "{t}");
        }
        let e = parse("512@0xzz:5").unwrap_err();
        assert_eq!(
            e,
            MmioArgError::BadNumber { token: "512@0xzz:5".into(), field: "base address", text: "0xzz".into() }
        );
        assert!(e.to_string().contains("512@0xzz:5"));
        assert!(matches!(parse("5Q@0x1000:5"), Err(MmioArgError::BadNumber { field: "size", .. })));
        assert!(matches!(parse("512@0x1000:4294967296"), Err(MmioArgError::BadNumber { field: "irq", .. })));
        assert!(matches!(parse("512@0x1000:5:x"), Err(MmioArgError::BadNumber { field: "id", .. })));
        assert!(matches!(parse("99999999999G@0x1000:5"), Err(MmioArgError::BadNumber { field: "size", .. })));
    }

    #[test]
    fn bad_ranges() {
        assert_eq!(parse("16@0x1000:5"), Err(MmioArgError::TooSmall { token: "16@0x1000:5".into(), size: 16 }));
        assert!(matches!(parse("512@0xfffffffffffffe01:5"), Err(MmioArgError::BadRange { .. })));
        assert!(matches!(parse("512@0xffffffffffffff00:5"), Err(MmioArgError::BadRange { .. })));
    }
}
