//! PVH start info → `BootInfo` (`libos::bootinfo::BootInfo::from_pvh`), then the free physical ranges and the
//! frame allocator built from it (`libos::mem::frames`). The input is guest memory from physical address 0, with
//! a `struct hvm_start_info` at 0 (xen/include/public/arch-x86/hvm/start_info.h); the tables are copied out
//! the way `libos::start` does (at most `MAX_REGIONS + 1` memory-map entries and `MAX_MODULES + 1` modules, a
//! module command line only inside RAM the map describes, strings up to their NUL). Invariants: no panic;
//! regions and modules are within their limits; the command line is trimmed UTF-8; free ranges are
//! page-aligned, sorted, disjoint, inside RAM, above 1 MiB and outside every reserved range; allocations come
//! from free ranges and never overlap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libos::bootinfo::{BootInfo, PvhStartInfo, MAX_MODULES, MAX_REGIONS};
use libos::cmdline::Cmdline;
use zirvium_fuzz::boot::check_boot_memory;
use zirvium_fuzz::with_static;

/// Guest memory: the input at physical address 0; reads past its end fail.
struct Mem(&'static [u8]);

impl Mem {
    fn bytes(&self, at: u64, len: usize) -> Option<&'static [u8]> {
        let at = usize::try_from(at).ok()?;
        self.0.get(at..at.checked_add(len)?)
    }
    fn u32(&self, at: u64) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(at, 4)?.try_into().ok()?))
    }
    fn u64(&self, at: u64) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(at, 8)?.try_into().ok()?))
    }
    /// The NUL-terminated string at `at` (without the NUL); memory past the end reads as NUL.
    fn cstr(&self, at: u64) -> Option<&'static [u8]> {
        let rest = self.0.get(usize::try_from(at).ok()?..)?;
        Some(&rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())])
    }
}

fuzz_target!(|data: &[u8]| {
    // SAFETY: every value built from the 'static copy is dropped inside the closure.
    unsafe { with_static(data, check) }
});

fn check(data: &'static [u8]) {
    let mem = Mem(data);
    // struct hvm_start_info: magic, version, flags, nr_modules (u32); modlist_paddr, cmdline_paddr, rsdp_paddr,
    // memmap_paddr (u64); memmap_entries, reserved (u32).
    let field = |at| mem.u32(at).unwrap_or(0);
    let (magic, version, nr_modules) = (field(0), field(4), field(12));
    let wide = |at| mem.u64(at).unwrap_or(0);
    let (modlist, cmdline_paddr, rsdp, memmap_paddr) = (wide(16), wide(24), wide(32), wide(40));
    let memmap_entries = if version >= 1 { field(48) } else { 0 };

    let mut map = Vec::new();
    for i in 0..u64::from(memmap_entries).min(MAX_REGIONS as u64 + 1) {
        // struct hvm_memmap_table_entry: addr, size (u64), type, reserved (u32).
        let at = memmap_paddr.wrapping_add(i * 24);
        let (Some(a), Some(s), Some(t)) = (mem.u64(at), mem.u64(at.wrapping_add(8)), mem.u32(at.wrapping_add(16)))
        else {
            break;
        };
        map.push((a, s, t));
    }
    let mut mods = Vec::new();
    for i in 0..u64::from(nr_modules).min(MAX_MODULES as u64 + 1) {
        // struct hvm_modlist_entry: paddr, size, cmdline_paddr, reserved (u64).
        let at = modlist.wrapping_add(i * 32);
        let (Some(p), Some(s), Some(c)) = (mem.u64(at), mem.u64(at.wrapping_add(8)), mem.u64(at.wrapping_add(16)))
        else {
            break;
        };
        let in_ram = map.iter().any(|&(a, len, ty)| ty == 1 && c >= a && c < a.saturating_add(len));
        mods.push((p, s, if c != 0 && in_ram { mem.cstr(c) } else { None }));
    }
    let si = PvhStartInfo {
        paddr: 0,
        magic,
        version,
        rsdp_paddr: rsdp,
        cmdline: if cmdline_paddr != 0 { mem.cstr(cmdline_paddr) } else { None },
        memmap: &map,
        modules: &mods,
    };
    let boot = match BootInfo::from_pvh(&si) {
        Ok(boot) => boot,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert!(boot.regions().len() <= MAX_REGIONS && boot.modules().len() <= MAX_MODULES);
    assert_eq!(boot.regions().len(), map.len());
    assert_eq!(boot.cmdline, boot.cmdline.trim());
    assert_eq!(boot.rsdp, (rsdp != 0).then_some(rsdp));
    let _ = boot.ram_bytes();
    let _ = Cmdline::parse(boot.cmdline).map_err(|e| e.to_string());

    check_boot_memory(&boot);
}
