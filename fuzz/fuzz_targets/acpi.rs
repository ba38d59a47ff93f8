//! ACPI tables as the PCI code reads them (`drivers::virtio::acpi`: RSDP scan and checks, RSDT/XSDT,
//! MCFG; ACPI 6.5 §5.2.5-§5.2.8, PCI Firmware 3.3 §4.1.2). The input is physical memory from address
//! `BASE`, with the RSDP at `BASE`; half of the inputs get their checksums fixed along the path the parser
//! walks (RSDP, extended RSDP, root table, each listed table) so the fuzzer reaches the structure behind them.
//! Invariants: no panic; a found RSDP is 16-byte aligned inside the area with a good checksum; every ECAM
//! window has `start_bus <= end_bus`; MCFG parsing of any bytes never panics; table addresses returned are
//! ones the root table lists.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libos::acpi::{ecam_windows, find_rsdp_in, find_table, parse_mcfg, PhysRead};

const BASE: u64 = 0xE0000;

/// Physical memory: the input at `BASE`; anything else is unreadable.
struct Mem(Vec<u8>);

impl PhysRead for Mem {
    fn read(&self, paddr: u64, len: usize) -> Option<Vec<u8>> {
        let at = usize::try_from(paddr.checked_sub(BASE)?).ok()?;
        self.0.get(at..at.checked_add(len)?).map(<[u8]>::to_vec)
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Sets byte `sum_at` so that `b[range]` sums to 0 mod 256.
fn fix(b: &mut [u8], sum_at: usize, start: usize, len: usize) {
    let Some(region) = b.get(start..start.saturating_add(len)) else { return };
    if sum_at >= b.len() {
        return;
    }
    let others = region.iter().fold(0u8, |a, &x| a.wrapping_add(x)).wrapping_sub(b[sum_at]);
    b[sum_at] = 0u8.wrapping_sub(others);
}

/// Fixes the checksums along the parser's path.
fn fix_checksums(m: &mut [u8]) -> Option<()> {
    fix(m, 8, 0, 20);
    let xsdt = m.len() >= 36 && m[15] >= 2 && u64_at(m, 24) != Some(0);
    if m.len() >= 36 && m[15] >= 2 {
        fix(m, 32, 0, 36);
    }
    let (root, entry) = if xsdt { (u64_at(m, 24)?, 8) } else { (u64::from(u32_at(m, 16)?), 4) };
    let root = usize::try_from(root.checked_sub(BASE)?).ok()?;
    let len = u32_at(m, root.checked_add(4)?)? as usize;
    fix(m, root.checked_add(9)?, root, len);
    let entries = m.get(root.checked_add(36)?..root.checked_add(len)?)?.to_vec();
    for e in entries.chunks_exact(entry) {
        let addr = if entry == 4 { u64::from(u32_at(e, 0)?) } else { u64_at(e, 0)? };
        let Some(t) = addr.checked_sub(BASE).and_then(|a| usize::try_from(a).ok()) else { continue };
        if t != root && t < m.len() {
            if let Some(tl) = t.checked_add(4).and_then(|at| u32_at(m, at)) {
                fix(m, t + 9, t, tl as usize);
            }
        }
    }
    Some(())
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    for w in parse_mcfg(rest) {
        assert!(w.start_bus <= w.end_bus);
    }
    let mut m = rest.to_vec();
    if flags & 1 == 1 {
        let _ = fix_checksums(&mut m);
    }
    if let Some(at) = find_rsdp_in(&m, BASE) {
        assert!(at % 16 == 0 && at >= BASE && at + 20 <= BASE + m.len() as u64);
        let i = (at - BASE) as usize;
        assert_eq!(&m[i..i + 8], b"RSD PTR ");
    }
    let mem = Mem(m);
    match find_table(&mem, BASE, b"MCFG") {
        Ok(Some(at)) => assert_eq!(mem.read(at, 4).as_deref(), Some(&b"MCFG"[..])),
        Ok(None) => {}
        Err(e) => {
            let _ = e.to_string();
        }
    }
    match ecam_windows(&mem, BASE) {
        Ok(windows) => {
            for w in windows {
                assert!(w.start_bus <= w.end_bus);
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
