//! Multiboot2 boot information → `BootInfo` (`libos::bootinfo::multiboot2`, Multiboot2 Specification 1.0 §3.6):
//! the input is the MBI a loader left at a physical address; its tags are walked (`Mbi::tags`) and normalised
//! (`BootInfo::from_multiboot2`, which also undoes GRUB's command-line escaping in place), then the free
//! physical ranges and frame allocator are built from the result as at boot. Invariants: no panic; tags lie
//! inside `total_size`, 8-byte aligned, in order and disjoint, and the walk ends after an error; regions and
//! modules are within their limits and modules do not end before they start; the command line is trimmed
//! UTF-8; the RSDP copy and the loader data lie inside the MBI; GRUB's escaping undoes what escaping does; the
//! free-range and allocator checks of `zirvium_fuzz::boot`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libos::bootinfo::multiboot2::{unescape_grub, Mbi};
use libos::bootinfo::{BootInfo, MAX_MODULES, MAX_REGIONS};
use libos::cmdline::Cmdline;
use zirvium_fuzz::boot::check_boot_memory;

/// Where the MBI "is" in physical memory (non-zero, 8-byte aligned, as the entry code requires).
const PADDR: u64 = 0x9000;

fuzz_target!(|data: &[u8]| {
    tags(data);
    grub_escaping(data);
    let raw: *mut [u8] = Box::into_raw(data.to_vec().into_boxed_slice());
    // SAFETY: `raw` is live until freed below; `boot` (which borrows it) is dropped inside `check`.
    check(unsafe { &mut *raw });
    // SAFETY: allocated by `Box::into_raw` above and no longer borrowed.
    drop(unsafe { Box::from_raw(raw) });
});

fn tags(data: &[u8]) {
    let Ok(mbi) = Mbi::new_checked(data) else { return };
    let total = mbi.total_size() as usize;
    assert!(total <= data.len());
    let mut end = 8;
    let mut failed = false;
    for t in mbi.tags() {
        assert!(!failed, "the tag walk went on after an error");
        match t {
            Ok(t) => {
                assert!(t.offset % 8 == 0 && t.offset >= end, "tag at {} overlaps or is unaligned", t.offset);
                assert!(t.bytes.len() >= 8 && t.offset + t.bytes.len() <= total, "tag outside total_size");
                end = t.offset + t.bytes.len();
            }
            Err(e) => {
                let _ = e.to_string();
                failed = true;
            }
        }
    }
}

/// GRUB escapes `\`, `'` and `"` with a backslash; `unescape_grub` must undo exactly that.
fn grub_escaping(data: &[u8]) {
    let mut escaped = Vec::with_capacity(data.len() * 2);
    for &c in data {
        if matches!(c, b'\\' | b'\'' | b'"') {
            escaped.push(b'\\');
        }
        escaped.push(c);
    }
    let n = unescape_grub(&mut escaped);
    assert_eq!(&escaped[..n], data, "unescape(escape(s)) != s");
    let mut raw = data.to_vec();
    assert!(unescape_grub(&mut raw) <= data.len());
}

fn check(mbi: &'static mut [u8]) {
    let boot = match BootInfo::from_multiboot2(mbi, PADDR) {
        Ok(boot) => boot,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let (start, end) = boot.loader_data().expect("Multiboot2 keeps its loader data");
    assert!(start == PADDR && end > start + 8, "loader data {start:#x}..{end:#x}");
    assert!(boot.regions().len() <= MAX_REGIONS && boot.modules().len() <= MAX_MODULES);
    assert!(!boot.regions().is_empty(), "a BootInfo without a memory map");
    assert_eq!(boot.cmdline, boot.cmdline.trim());
    if let Some(rsdp) = boot.rsdp {
        assert!(rsdp >= start + 16 && rsdp < end, "RSDP copy at {rsdp:#x} outside the MBI");
    }
    let _ = (boot.entry().to_string(), boot.ram_bytes(), boot.loader.map(str::len));
    let _ = Cmdline::parse(boot.cmdline).map_err(|e| e.to_string());
    check_boot_memory(&boot);
}
