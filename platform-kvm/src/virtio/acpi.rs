//! Just enough ACPI to find PCI Express ECAM windows: RSDP (found from the boot info or by scanning the BIOS
//! area), RSDT/XSDT, and the MCFG table. Source: ACPI 6.5 §5.2.5 (RSDP, checksums), §5.2.6 (system
//! description table header), §5.2.7/§5.2.8 (RSDT/XSDT); PCI Firmware Specification 3.3 §4.1.2 (MCFG).
//! Parsing goes through [`PhysRead`], so it is host-tested against fake memory.
#![forbid(unsafe_code)]

use alloc::vec::Vec;
use core::fmt;

/// Start of the BIOS read-only area scanned for the RSDP when the loader did not pass one (bytes).
pub const BIOS_AREA_START: u64 = 0xE0000;
/// End (exclusive) of the BIOS read-only area (bytes).
pub const BIOS_AREA_END: u64 = 0x100000;
/// Largest ACPI table accepted (bytes); QEMU's are a few KiB.
const MAX_TABLE_LEN: u32 = 1 << 20;
const HEADER_LEN: usize = 36;

/// Reads guest-physical memory.
pub trait PhysRead {
    /// `len` bytes at `paddr`, or `None` when the range is not readable (not mapped, or out of range).
    fn read(&self, paddr: u64, len: usize) -> Option<Vec<u8>>;
}

/// Why the ACPI tables could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcpiError {
    /// A table at `paddr` could not be read.
    Unreadable { what: &'static str, paddr: u64 },
    /// Wrong signature at `paddr`.
    Signature { what: &'static str, paddr: u64 },
    /// The bytes of a table do not sum to 0 mod 256.
    Checksum { what: &'static str, paddr: u64 },
    /// A table's length field is shorter than its fixed part or implausibly large.
    Length { what: &'static str, paddr: u64, len: u32 },
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

/// One ECAM window from MCFG: configuration space of buses `start_bus..=end_bus` of `segment` at
/// `base + (bus << 20 | device << 15 | function << 12)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EcamWindow {
    /// Physical address of bus 0's configuration space (bytes), even when `start_bus` > 0.
    pub base: u64,
    /// PCI segment group.
    pub segment: u16,
    /// First bus decoded.
    pub start_bus: u8,
    /// Last bus decoded.
    pub end_bus: u8,
}

fn checksum_ok(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut w = [0; 4];
    w.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut w = [0; 8];
    w.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(w)
}

/// Finds a valid RSDP ("RSD PTR ", 16-byte aligned, ACPI 1.0 checksum good) in `area`, which holds the
/// bytes at physical address `area_base`. Returns its physical address.
pub fn find_rsdp_in(area: &[u8], area_base: u64) -> Option<u64> {
    let first = (area_base.next_multiple_of(16) - area_base) as usize;
    (first..area.len().saturating_sub(19))
        .step_by(16)
        .find(|&i| &area[i..i + 8] == b"RSD PTR " && checksum_ok(&area[i..i + 20]))
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
    let b = mem.read(paddr, 20).ok_or(AcpiError::Unreadable { what, paddr })?;
    if &b[..8] != b"RSD PTR " {
        return Err(AcpiError::Signature { what, paddr });
    }
    if !checksum_ok(&b) {
        return Err(AcpiError::Checksum { what, paddr });
    }
    let revision = b[15];
    if revision >= 2 {
        let x = mem.read(paddr, 36).ok_or(AcpiError::Unreadable { what, paddr })?;
        let len = u32_at(&x, 20);
        if len < 36 {
            return Err(AcpiError::Length { what, paddr, len });
        }
        if !checksum_ok(&x) {
            return Err(AcpiError::Checksum { what, paddr });
        }
        let xsdt = u64_at(&x, 24);
        if xsdt != 0 {
            return Ok(Root::Xsdt(xsdt));
        }
    }
    Ok(Root::Rsdt(u64::from(u32_at(&b, 16))))
}

/// Reads a whole system description table at `paddr`, checking signature, length and checksum.
fn read_table(mem: &dyn PhysRead, paddr: u64, sig: &[u8; 4], what: &'static str) -> Result<Vec<u8>, AcpiError> {
    let head = mem.read(paddr, HEADER_LEN).ok_or(AcpiError::Unreadable { what, paddr })?;
    if &head[..4] != sig {
        return Err(AcpiError::Signature { what, paddr });
    }
    let len = u32_at(&head, 4);
    if (len as usize) < HEADER_LEN || len > MAX_TABLE_LEN {
        return Err(AcpiError::Length { what, paddr, len });
    }
    let t = mem.read(paddr, len as usize).ok_or(AcpiError::Unreadable { what, paddr })?;
    if !checksum_ok(&t) {
        return Err(AcpiError::Checksum { what, paddr });
    }
    Ok(t)
}

/// Physical address of the first table with signature `sig` listed by the RSDT/XSDT the RSDP at `rsdp`
/// points to, or `None` when it is not listed. Errors: [`AcpiError`] for a broken RSDP or root table.
pub fn find_table(mem: &dyn PhysRead, rsdp: u64, sig: &[u8; 4]) -> Result<Option<u64>, AcpiError> {
    let (entry_len, t) = match read_rsdp(mem, rsdp)? {
        Root::Rsdt(a) => (4, read_table(mem, a, b"RSDT", "RSDT")?),
        Root::Xsdt(a) => (8, read_table(mem, a, b"XSDT", "XSDT")?),
    };
    for e in t[HEADER_LEN..].chunks_exact(entry_len) {
        let addr = if entry_len == 4 { u64::from(u32_at(e, 0)) } else { u64_at(e, 0) };
        if mem.read(addr, 4).is_some_and(|s| s[..] == sig[..]) {
            return Ok(Some(addr));
        }
    }
    Ok(None)
}

/// Parses an MCFG table (its whole bytes, checked by [`read_table`]): 36-byte header, 8 reserved bytes,
/// then 16-byte allocation entries (base u64, segment u16, start bus u8, end bus u8, reserved u32).
/// Entries with `end_bus < start_bus` are dropped.
pub fn parse_mcfg(t: &[u8]) -> Vec<EcamWindow> {
    t.get(HEADER_LEN + 8..)
        .unwrap_or(&[])
        .chunks_exact(16)
        .map(|e| EcamWindow {
            base: u64_at(e, 0),
            segment: u16::from_le_bytes([e[8], e[9]]),
            start_bus: e[10],
            end_bus: e[11],
        })
        .filter(|w| w.end_bus >= w.start_bus)
        .collect()
}

/// The ECAM windows MCFG lists, via the RSDP at `rsdp`; empty when there is no MCFG (e.g. QEMU pc, whose
/// i440FX has no ECAM). Errors: [`AcpiError`].
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

    fn fix_checksum(b: &mut [u8], at: usize, range: core::ops::Range<usize>) {
        b[at] = 0;
        let s = b[range].iter().fold(0u8, |a, x| a.wrapping_add(*x));
        b[at] = 0u8.wrapping_sub(s);
    }

    fn table(sig: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut t = vec![0u8; HEADER_LEN];
        t[..4].copy_from_slice(sig);
        t.extend_from_slice(body);
        let len = t.len() as u32;
        t[4..8].copy_from_slice(&len.to_le_bytes());
        t[8] = 1;
        let n = t.len();
        fix_checksum(&mut t, 9, 0..n);
        t
    }

    fn rsdp(rev: u8, rsdt: u32, xsdt: u64) -> Vec<u8> {
        let mut r = vec![0u8; 36];
        r[..8].copy_from_slice(b"RSD PTR ");
        r[9..15].copy_from_slice(b"BOCHS ");
        r[15] = rev;
        r[16..20].copy_from_slice(&rsdt.to_le_bytes());
        r[20..24].copy_from_slice(&36u32.to_le_bytes());
        r[24..32].copy_from_slice(&xsdt.to_le_bytes());
        fix_checksum(&mut r, 8, 0..20);
        fix_checksum(&mut r, 32, 0..36);
        r
    }

    fn mcfg_q35() -> Vec<u8> {
        let mut body = vec![0u8; 8];
        body.extend_from_slice(&0xB000_0000u64.to_le_bytes());
        body.extend_from_slice(&[0, 0, 0, 0xff, 0, 0, 0, 0]);
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
