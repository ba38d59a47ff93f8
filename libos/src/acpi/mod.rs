//! ACPI tables, as far as Zirvium reads them: the RSDP (from the boot info or found in the BIOS area), the root
//! table (RSDT or XSDT) and MCFG, whose allocations are the PCI Express ECAM windows `libos::pci` uses. Each
//! structure is a checked view over bytes ([`rsdp`], [`sdt`], [`mcfg`]); the walk from the RSDP to a table goes
//! through [`PhysRead`], so all of it is host-tested against fake memory.
//! Source: ACPI 6.5 §5.2.5 (RSDP, checksums), §5.2.6 (system description table header), §5.2.7/§5.2.8
//! (RSDT/XSDT); PCI Firmware Specification 3.3 §4.1.2 (MCFG).

pub mod mcfg;
#[cfg(target_os = "none")]
mod memory;
pub mod rsdp;
pub mod sdt;

use alloc::vec::Vec;
use core::fmt;

pub use mcfg::{parse_mcfg, EcamWindow};
#[cfg(target_os = "none")]
pub use memory::LowMemory;
use rsdp::{Rsdp, RsdpRepr};
use sdt::{Sdt, SdtRepr, HEADER_LEN};

/// Start of the BIOS read-only area scanned for the RSDP when the loader did not pass one (bytes).
pub const BIOS_AREA_START: u64 = 0xE0000;
/// End (exclusive) of the BIOS read-only area (bytes).
pub const BIOS_AREA_END: u64 = 0x100000;
/// Largest ACPI table accepted (bytes); QEMU's are a few KiB.
const MAX_TABLE_LEN: u32 = 1 << 20;

/// Reads guest-physical memory.
pub trait PhysRead {
    /// `len` bytes at `paddr`, or `None` when the range is not readable (not mapped, or out of range).
    fn read(&self, paddr: u64, len: usize) -> Option<Vec<u8>>;
}

/// What is wrong with a structure's bytes, as a view sees them (without knowing where they came from).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// The buffer holds `len` bytes, the structure needs `need`.
    Truncated {
        /// Bytes available in the buffer.
        len: usize,
        /// Bytes the structure needs.
        need: usize,
    },
    /// The signature is not the one expected.
    Signature,
    /// The bytes do not sum to 0 mod 256.
    Checksum,
    /// The length field is shorter than the fixed part (or, for a table walk, implausibly large).
    Length {
        /// The table header's `Length` field (bytes).
        len: u32,
    },
}

/// Why the ACPI tables could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcpiError {
    /// A table at `paddr` could not be read.
    Unreadable {
        /// The table being read, by signature or role ("RSDP", "XSDT", "MADT", ...).
        what: &'static str,
        /// Physical address of the table.
        paddr: u64,
    },
    /// Wrong signature at `paddr`.
    Signature {
        /// The table expected there, by signature or role ("RSDP", "XSDT", "MADT", ...).
        what: &'static str,
        /// Physical address of the table.
        paddr: u64,
    },
    /// The bytes of a table do not sum to 0 mod 256.
    Checksum {
        /// The table whose checksum failed, by signature or role.
        what: &'static str,
        /// Physical address of the table.
        paddr: u64,
    },
    /// A table's length field is shorter than its fixed part or implausibly large.
    Length {
        /// The table, by signature or role.
        what: &'static str,
        /// Physical address of the table.
        paddr: u64,
        /// The header's `Length` field (bytes).
        len: u32,
    },
}

impl AcpiError {
    /// The walk's error for the structure `what` at `paddr` whose bytes are malformed. A truncated structure
    /// is one whose bytes could not all be read.
    fn at(what: &'static str, paddr: u64, m: Malformed) -> Self {
        match m {
            Malformed::Truncated { .. } => Self::Unreadable { what, paddr },
            Malformed::Signature => Self::Signature { what, paddr },
            Malformed::Checksum => Self::Checksum { what, paddr },
            Malformed::Length { len } => Self::Length { what, paddr, len },
        }
    }
}

impl fmt::Display for AcpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreadable { what, paddr } => write!(f, "ACPI {what} at {paddr:#x} is not readable"),
            Self::Signature { what, paddr } => write!(f, "ACPI {what} at {paddr:#x} has a wrong signature"),
            Self::Checksum { what, paddr } => write!(f, "ACPI {what} at {paddr:#x} has a bad checksum"),
            Self::Length { what, paddr, len } => write!(f, "ACPI {what} at {paddr:#x} has a bad length {len}"),
        }
    }
}

/// Whether `bytes` sum to 0 (mod 256), the ACPI checksum rule.
fn checksum_ok(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
}

/// Sets the checksum byte at `at` so that `bytes` sum to 0 (mod 256).
fn fill_checksum(bytes: &mut [u8], at: usize) {
    bytes[at] = 0;
    let sum = bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    bytes[at] = 0u8.wrapping_sub(sum);
}

/// Finds a valid RSDP ("RSD PTR ", 16-byte aligned, ACPI 1.0 checksum good) in `area`, which holds the
/// bytes at physical address `area_base`. Returns its physical address.
pub fn find_rsdp_in(area: &[u8], area_base: u64) -> Option<u64> {
    let first = (area_base.next_multiple_of(16) - area_base) as usize;
    (first..area.len().saturating_sub(rsdp::V1_LEN - 1))
        .step_by(16)
        .find(|&i| {
            // Only the ACPI 1.0 part is looked at, and it lies inside `area` (the range above).
            let r = Rsdp::new_unchecked(&area[i..i + rsdp::V1_LEN]);
            r.signature() == rsdp::SIGNATURE && r.checksum_ok()
        })
        .map(|i| area_base + i as u64)
}

/// The root table an RSDP points to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Root {
    Rsdt(u64),
    Xsdt(u64),
}

fn read_rsdp(mem: &dyn PhysRead, paddr: u64) -> Result<Root, AcpiError> {
    let what = "RSDP";
    let unreadable = AcpiError::Unreadable { what, paddr };
    let mut b = mem.read(paddr, rsdp::V1_LEN).ok_or(unreadable.clone())?;
    // `Revision` lies in the ACPI 1.0 part just read; revision 2 and later have the extended part too.
    if Rsdp::new_unchecked(&b[..]).revision() >= 2 {
        b = mem.read(paddr, rsdp::V2_LEN).ok_or(unreadable)?;
    }
    let r = RsdpRepr::parse(&Rsdp::new_unchecked(&b[..])).map_err(|m| AcpiError::at(what, paddr, m))?;
    Ok(match r.xsdt_address {
        Some(x) => Root::Xsdt(x),
        None => Root::Rsdt(u64::from(r.rsdt_address)),
    })
}

/// Reads a whole system description table at `paddr`, checking signature, length and checksum.
fn read_table(mem: &dyn PhysRead, paddr: u64, sig: &[u8; 4], what: &'static str) -> Result<Vec<u8>, AcpiError> {
    let at = |m| AcpiError::at(what, paddr, m);
    let head = mem.read(paddr, HEADER_LEN).ok_or(AcpiError::Unreadable { what, paddr })?;
    let h = Sdt::new_checked(&head[..]).map_err(at)?;
    SdtRepr::parse(&h, sig).map_err(at)?;
    let len = h.length();
    if len > MAX_TABLE_LEN {
        return Err(AcpiError::Length { what, paddr, len });
    }
    let t = mem.read(paddr, len as usize).ok_or(AcpiError::Unreadable { what, paddr })?;
    let whole = Sdt::new_unchecked(&t[..]);
    whole.check_whole().map_err(at)?;
    if !whole.checksum_ok() {
        return Err(AcpiError::Checksum { what, paddr });
    }
    Ok(t)
}

/// Physical address of the first table with signature `sig` listed by the RSDT/XSDT the RSDP at `rsdp`
/// points to, or `None` when it is not listed. Errors: [`AcpiError`] for a broken RSDP or root table.
pub fn find_table(mem: &dyn PhysRead, rsdp: u64, sig: &[u8; 4]) -> Result<Option<u64>, AcpiError> {
    let (wide, t) = match read_rsdp(mem, rsdp)? {
        Root::Rsdt(a) => (false, read_table(mem, a, b"RSDT", "RSDT")?),
        Root::Xsdt(a) => (true, read_table(mem, a, b"XSDT", "XSDT")?),
    };
    let found =
        Sdt::new_unchecked(&t[..]).entries(wide).find(|&addr| mem.read(addr, 4).is_some_and(|s| s[..] == sig[..]));
    Ok(found)
}

/// The ECAM windows MCFG lists, via the RSDP at `rsdp`; empty when there is no MCFG (e.g. QEMU pc, whose
/// i440FX has no ECAM, or a Xen PVH guest). Errors: [`AcpiError`].
pub fn ecam_windows(mem: &dyn PhysRead, rsdp: u64) -> Result<Vec<EcamWindow>, AcpiError> {
    let Some(at) = find_table(mem, rsdp, b"MCFG")? else {
        return Ok(Vec::new());
    };
    Ok(parse_mcfg(&read_table(mem, at, b"MCFG", "MCFG")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// Fake physical memory: a list of (address, bytes).
    struct Mem(Vec<(u64, Vec<u8>)>);

    impl PhysRead for Mem {
        fn read(&self, paddr: u64, len: usize) -> Option<Vec<u8>> {
            self.0.iter().find_map(|(a, b)| {
                let off = paddr.checked_sub(*a)? as usize;
                b.get(off..off.checked_add(len)?).map(<[u8]>::to_vec)
            })
        }
    }

    fn table(sig: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut t = vec![0u8; HEADER_LEN];
        t.extend_from_slice(body);
        SdtRepr { signature: *sig, ..sdt::BOCHS }.emit(&mut t);
        t
    }

    /// A 36-byte RSDP (only the first 20 bytes are meaningful before revision 2).
    fn rsdp(rev: u8, rsdt: u32, xsdt: u64) -> Vec<u8> {
        let mut r = vec![0u8; rsdp::V2_LEN];
        let repr = RsdpRepr { revision: rev, oem_id: *b"BOCHS ", rsdt_address: rsdt, xsdt_address: Some(xsdt) };
        repr.emit(&mut Rsdp::new_unchecked(&mut r[..]));
        r
    }

    fn mcfg_q35() -> Vec<u8> {
        let mut body = vec![0u8; 8 + mcfg::ALLOCATION_LEN];
        let w = EcamWindow { base: 0xB000_0000, segment: 0, start_bus: 0, end_bus: 0xff };
        w.emit(&mut mcfg::Allocation::new_unchecked(&mut body[8..]));
        table(b"MCFG", &body)
    }

    #[test]
    fn q35_like_rsdt_with_mcfg() {
        let rsdt = table(b"RSDT", &[0x00, 0x20, 0, 0, 0x00, 0x30, 0, 0]);
        let mem = Mem(vec![
            (0xF5000, rsdp(0, 0x1000, 0)),
            (0x1000, rsdt),
            (0x2000, table(b"FACP", &[0; 8])),
            (0x3000, mcfg_q35()),
        ]);
        let w = ecam_windows(&mem, 0xF5000).unwrap();
        assert_eq!(w, vec![EcamWindow { base: 0xB000_0000, segment: 0, start_bus: 0, end_bus: 255 }]);
    }

    #[test]
    fn xsdt_preferred_and_no_mcfg_is_empty() {
        let xsdt = table(b"XSDT", &0x2000u64.to_le_bytes());
        let mem = Mem(vec![(0xF5000, rsdp(2, 0x9999, 0x1000)), (0x1000, xsdt), (0x2000, table(b"APIC", &[]))]);
        assert_eq!(ecam_windows(&mem, 0xF5000), Ok(vec![]));
    }

    #[test]
    fn broken_tables_are_errors() {
        let mut bad = rsdp(0, 0x1000, 0);
        bad[10] ^= 1;
        let mem = Mem(vec![(0xF5000, bad)]);
        assert_eq!(ecam_windows(&mem, 0xF5000), Err(AcpiError::Checksum { what: "RSDP", paddr: 0xF5000 }));
        let mem = Mem(vec![(0xF5000, rsdp(0, 0x1000, 0))]);
        assert_eq!(ecam_windows(&mem, 0xF5000), Err(AcpiError::Unreadable { what: "RSDT", paddr: 0x1000 }));
        let mut rsdt = table(b"RSDT", &[0, 0x20, 0, 0]);
        rsdt[4] = 200; // length beyond the bytes present
        let mem = Mem(vec![(0xF5000, rsdp(0, 0x1000, 0)), (0x1000, rsdt)]);
        assert!(matches!(ecam_windows(&mem, 0xF5000), Err(AcpiError::Unreadable { what: "RSDT", .. })));
        let mut rsdt = table(b"RSDT", &[]);
        rsdt[4] = 3;
        let mem = Mem(vec![(0xF5000, rsdp(0, 0x1000, 0)), (0x1000, rsdt)]);
        assert_eq!(ecam_windows(&mem, 0xF5000), Err(AcpiError::Length { what: "RSDT", paddr: 0x1000, len: 3 }));
        let mut mcfg = mcfg_q35();
        mcfg[50] ^= 0xff;
        let rsdt = table(b"RSDT", &[0, 0x20, 0, 0]);
        let mem = Mem(vec![(0xF5000, rsdp(0, 0x1000, 0)), (0x1000, rsdt), (0x2000, mcfg)]);
        assert_eq!(ecam_windows(&mem, 0xF5000), Err(AcpiError::Checksum { what: "MCFG", paddr: 0x2000 }));
    }

    #[test]
    fn rsdp_scan() {
        let mut area = vec![0u8; 0x100];
        area[0x10..0x18].copy_from_slice(b"RSD PTR "); // bad checksum: skipped
        area[0x10 + 8] = 1;
        area[0x41..0x49].copy_from_slice(b"RSD PTR "); // unaligned: skipped
        let good = rsdp(0, 0x1000, 0);
        area[0x80..0x80 + 36].copy_from_slice(&good);
        assert_eq!(find_rsdp_in(&area, 0xE0000), Some(0xE0080));
        assert_eq!(find_rsdp_in(&area[..0x90], 0xE0000), None, "truncated candidate is not read past the end");
        assert_eq!(find_rsdp_in(&[], 0xE0000), None);
    }

    #[test]
    fn mcfg_drops_inverted_ranges_and_tolerates_short_tables() {
        let mut body = vec![0u8; 8];
        body.extend_from_slice(&0xE000_0000u64.to_le_bytes());
        body.extend_from_slice(&[1, 0, 5, 4, 0, 0, 0, 0]);
        assert_eq!(parse_mcfg(&table(b"MCFG", &body)), vec![]);
        assert_eq!(parse_mcfg(&[0u8; 10]), vec![]);
    }
}
