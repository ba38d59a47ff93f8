//! Multiboot2 boot information (MBI): checked views over the tags a Multiboot2 loader (GRUB) leaves for the
//! kernel, and [`BootInfo::from_multiboot2`], which normalises them into a [`BootInfo`].
//!
//! Source: The Multiboot2 Specification version 1.0 (2016), §3.1.1 (header magic `0xE85250D6`), §3.3 (machine
//! state: EAX = [`BOOTLOADER_MAGIC`], EBX = MBI physical address), §3.6 (boot information format: `total_size`,
//! `reserved`, then 8-byte-aligned tags of `type`, `size`, ending with a type-0 tag of size 8); tag layouts
//! §3.6.3 (command line, 1), §3.6.4 (boot loader name, 2), §3.6.5 (modules, 3), §3.6.8 (memory map, 6),
//! §3.6.11–12 (EFI system table, 11/12), §3.6.16–17 (ACPI old/new RSDP, 14/15), §3.6.18 (EFI memory map, 17).
//! EFI memory types: UEFI Specification 2.10 §7.2.3 (`EFI_MEMORY_TYPE`, `EFI_MEMORY_DESCRIPTOR`).
//!
//! Everything here is pure and host-tested; the caller hands in the MBI bytes (`total_size` of them).
#![forbid(unsafe_code)]

use super::{BootInfo, BootInfoError, BootProtocol, Firmware, MemoryRegion, Module, RegionKind};
use crate::wire::{self, Field};
use core::fmt;

/// The value a Multiboot2 loader leaves in EAX (§3.3).
pub const BOOTLOADER_MAGIC: u32 = 0x36d7_6289;
/// The magic of the Multiboot2 header in the kernel image (§3.1.1).
pub const HEADER_MAGIC: u32 = 0xe852_50d6;
/// Largest MBI the kernel accepts (bytes); GRUB's are a few KiB, with an EFI memory map tens of KiB.
pub const MAX_MBI_LEN: u32 = 1 << 20;

/// Tag types (§3.6).
pub mod tag {
    /// End of the tag list.
    pub const END: u32 = 0;
    /// Boot command line (§3.6.3).
    pub const CMDLINE: u32 = 1;
    /// Boot loader name (§3.6.4).
    pub const BOOT_LOADER_NAME: u32 = 2;
    /// One module (§3.6.5).
    pub const MODULE: u32 = 3;
    /// Memory map, E820 types (§3.6.8).
    pub const MMAP: u32 = 6;
    /// EFI 32-bit system table pointer (§3.6.11).
    pub const EFI32: u32 = 11;
    /// EFI 64-bit system table pointer (§3.6.12).
    pub const EFI64: u32 = 12;
    /// Copy of the ACPI 1.0 RSDP (§3.6.16).
    pub const ACPI_OLD: u32 = 14;
    /// Copy of the ACPI 2.0+ RSDP (§3.6.17).
    pub const ACPI_NEW: u32 = 15;
    /// EFI memory map (§3.6.18).
    pub const EFI_MMAP: u32 = 17;
    /// EFI boot services not terminated (§3.6.19): the kernel never requests it.
    pub const EFI_BS: u32 = 18;
}

/// Why a Multiboot2 information structure was refused; each names the tag and the offending value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Multiboot2Error {
    /// EAX at the Multiboot2 entry was not [`BOOTLOADER_MAGIC`]: the loader is not a Multiboot2 loader.
    BadMagic(u32),
    /// `total_size` is below the 16 bytes of header and end tag, above [`MAX_MBI_LEN`], or past the bytes given.
    BadTotalSize {
        /// The MBI's `total_size` (bytes).
        total_size: u32,
        /// Bytes available to read.
        available: usize,
    },
    /// The MBI address is 0 or not 8-byte aligned (§3.6: "the boot information must be 64-bit aligned").
    BadAddress(u64),
    /// A tag's `size` is below its fixed part (8 bytes for any tag).
    TagTooShort {
        /// The tag's `type`.
        tag: u32,
        /// Its offset in the MBI (bytes).
        offset: usize,
        /// Its `size` field (bytes).
        size: u32,
        /// The smallest size that type can have (bytes).
        min: usize,
    },
    /// A tag's `size` reaches past `total_size`.
    TagOverrun {
        /// The tag's `type`.
        tag: u32,
        /// Its offset in the MBI (bytes).
        offset: usize,
        /// Its `size` field (bytes).
        size: u32,
        /// The MBI's `total_size` (bytes).
        total_size: usize,
    },
    /// A memory map's `entry_size` / `descriptor_size` is below the entry layout (24 or 40 bytes).
    BadEntrySize {
        /// The tag's `type` (6: memory map, 17: EFI memory map).
        tag: u32,
        /// Its `entry_size` field (bytes).
        entry_size: u32,
    },
    /// A string tag (command line, loader name, module string) has no NUL terminator.
    StringNotTerminated {
        /// The tag's `type`.
        tag: u32,
        /// Its offset in the MBI (bytes).
        offset: usize,
    },
    /// A module's `mod_end` lies below its `mod_start`.
    BadModule {
        /// `mod_start` (physical address).
        start: u32,
        /// `mod_end` (physical address, exclusive).
        end: u32,
    },
    /// The tags end without a type-0 end tag.
    NoEndTag,
    /// Neither a memory map tag (6) nor an EFI memory map tag (17), or the map tag holds no whole entry.
    NoMemoryMap,
}

impl fmt::Display for Multiboot2Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic(m) => write!(f, "EAX is {m:#x} at the Multiboot2 entry, expected {BOOTLOADER_MAGIC:#x}"),
            Self::BadTotalSize { total_size, available } => write!(
                f,
                "total_size {total_size} bytes: expected 16..={MAX_MBI_LEN} and at most the {available} bytes present"
            ),
            Self::BadAddress(a) => write!(f, "boot information at {a:#x}: expected a non-zero 8-byte-aligned address"),
            Self::TagTooShort { tag, offset, size, min } => {
                write!(f, "tag type {tag} at offset {offset}: size {size} is below its {min}-byte layout")
            }
            Self::TagOverrun { tag, offset, size, total_size } => {
                write!(f, "tag type {tag} at offset {offset}: size {size} reaches past total_size {total_size}")
            }
            Self::BadEntrySize { tag, entry_size } => {
                write!(f, "tag type {tag}: entry size {entry_size} is below the entry layout")
            }
            Self::StringNotTerminated { tag, offset } => {
                write!(f, "tag type {tag} at offset {offset}: string has no NUL terminator")
            }
            Self::BadModule { start, end } => write!(f, "module [{start:#x}, {end:#x}): end below start"),
            Self::NoEndTag => write!(f, "the tag list has no end tag"),
            Self::NoMemoryMap => write!(f, "no memory map tag (6) or EFI memory map tag (17) with an entry"),
        }
    }
}

impl From<Multiboot2Error> for BootInfoError {
    fn from(e: Multiboot2Error) -> Self {
        BootInfoError::Multiboot2(e)
    }
}

mod field {
    use crate::wire::Field;
    // MBI header (§3.6.1).
    pub const TOTAL_SIZE: Field = 0..4;
    pub const RESERVED: Field = 4..8;
    pub const HEADER_LEN: usize = 8;
    // Every tag.
    pub const TAG_TYPE: Field = 0..4;
    pub const TAG_SIZE: Field = 4..8;
    pub const TAG_HEADER_LEN: usize = 8;
    // Module tag (§3.6.5).
    pub const MOD_START: Field = 8..12;
    pub const MOD_END: Field = 12..16;
    pub const MOD_STRING: usize = 16;
    // Memory map tag (§3.6.8) and its entries.
    pub const MMAP_ENTRY_SIZE: Field = 8..12;
    // 12..16: entry_version, 0 (later versions may only append fields, so it is not checked).
    pub const MMAP_ENTRIES: usize = 16;
    pub const MMAP_BASE: Field = 0..8;
    pub const MMAP_LENGTH: Field = 8..16;
    pub const MMAP_TYPE: Field = 16..20;
    pub const MMAP_ENTRY_LEN: usize = 24;
    // EFI memory map tag (§3.6.18) and `EFI_MEMORY_DESCRIPTOR` (UEFI 2.10 §7.2.3).
    pub const EFI_DESC_SIZE: Field = 8..12;
    // 12..16: descriptor_version (1); the layout is fixed by UEFI, `descriptor_size` gives the stride.
    pub const EFI_DESCRIPTORS: usize = 16;
    pub const EFI_TYPE: Field = 0..4;
    pub const EFI_PHYSICAL_START: Field = 8..16;
    pub const EFI_NUMBER_OF_PAGES: Field = 24..32;
    pub const EFI_DESC_LEN: usize = 40;
    // ACPI tags (§3.6.16–17): the RSDP copy follows the tag header.
    pub const RSDP: usize = 8;
}

/// A checked view of a whole MBI: `total_size` bytes starting with the 8-byte header.
#[derive(Clone, Copy, Debug)]
pub struct Mbi<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Mbi<T> {
    /// Wraps `buffer` without checks (accessors may panic on a short buffer).
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self, Multiboot2Error> {
        let m = Self::new_unchecked(buffer);
        m.check_len()?;
        Ok(m)
    }

    /// Errors: [`Multiboot2Error::BadTotalSize`] when the buffer is shorter than the header, `total_size` is
    /// below 16 or above [`MAX_MBI_LEN`], or the buffer holds fewer than `total_size` bytes.
    pub fn check_len(&self) -> Result<(), Multiboot2Error> {
        let b = self.buffer.as_ref();
        let total_size = wire::get_u32(b, field::TOTAL_SIZE.start).unwrap_or(0);
        let ok = (16..=MAX_MBI_LEN).contains(&total_size) && total_size as usize <= b.len();
        if ok {
            Ok(())
        } else {
            Err(Multiboot2Error::BadTotalSize { total_size, available: b.len() })
        }
    }

    /// `total_size` (bytes, header and tags).
    pub fn total_size(&self) -> u32 {
        wire::read_u32(self.buffer.as_ref(), field::TOTAL_SIZE)
    }

    /// `reserved` (0 from conforming loaders; ignored).
    pub fn reserved(&self) -> u32 {
        wire::read_u32(self.buffer.as_ref(), field::RESERVED)
    }

    /// The tags up to the end tag, each checked against `total_size`; iteration stops after an error.
    pub fn tags(&self) -> Tags<'_> {
        Tags::new(self.buffer.as_ref(), self.total_size())
    }
}

/// One tag: its type, its offset in the MBI and its `size` bytes (header included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag<'a> {
    /// Tag type (see [`tag`]).
    pub ty: u32,
    /// Offset of the tag in the MBI (bytes).
    pub offset: usize,
    /// The tag's bytes, `size` of them, starting with the 8-byte tag header.
    pub bytes: &'a [u8],
}

impl<'a> Tag<'a> {
    /// Errors unless the tag holds at least `min` bytes.
    fn require(&self, min: usize) -> Result<(), Multiboot2Error> {
        if self.bytes.len() < min {
            return Err(Multiboot2Error::TagTooShort {
                tag: self.ty,
                offset: self.offset,
                size: self.bytes.len() as u32,
                min,
            });
        }
        Ok(())
    }

    /// The NUL-terminated string from byte `at` of the tag, without the NUL.
    fn string(&self, at: usize) -> Result<&'a [u8], Multiboot2Error> {
        self.require(at)?;
        let s = &self.bytes[at..];
        let nul = s
            .iter()
            .position(|&c| c == 0)
            .ok_or(Multiboot2Error::StringNotTerminated { tag: self.ty, offset: self.offset })?;
        Ok(&s[..nul])
    }

    /// Entries of a memory-map-like tag: fixed part `header`, `entry_size` from `size_field`, at least `min`.
    fn entries(&self, header: usize, size_field: Field, min: usize) -> Result<Entries<'a>, Multiboot2Error> {
        self.require(header)?;
        let entry_size = wire::read_u32(self.bytes, size_field);
        if (entry_size as usize) < min {
            return Err(Multiboot2Error::BadEntrySize { tag: self.ty, entry_size });
        }
        Ok(Entries { bytes: &self.bytes[header..], size: entry_size as usize })
    }
}

/// Fixed-size entries of a memory map tag; a partial entry at the end is ignored.
struct Entries<'a> {
    bytes: &'a [u8],
    size: usize,
}

impl<'a> Iterator for Entries<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.bytes.len() < self.size {
            return None;
        }
        let (e, rest) = self.bytes.split_at(self.size);
        self.bytes = rest;
        Some(e)
    }
}

/// Iterator over the tags of an [`Mbi`]: yields `Err` once on a malformed tag or a missing end tag, then stops.
pub struct Tags<'a> {
    bytes: &'a [u8],
    offset: usize,
    done: bool,
}

impl<'a> Tags<'a> {
    /// The tags of the MBI `bytes` whose `total_size` is `total_size` (checked by [`Mbi::check_len`]).
    fn new(bytes: &'a [u8], total_size: u32) -> Self {
        Tags { bytes: &bytes[..(total_size as usize).min(bytes.len())], offset: field::HEADER_LEN, done: false }
    }
}

impl<'a> Iterator for Tags<'a> {
    type Item = Result<Tag<'a>, Multiboot2Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let at = self.offset;
        let header_end = at.checked_add(field::TAG_HEADER_LEN)?;
        if header_end > self.bytes.len() {
            self.done = true;
            return Some(Err(Multiboot2Error::NoEndTag));
        }
        let head = &self.bytes[at..header_end];
        let ty = wire::read_u32(head, field::TAG_TYPE);
        let size = wire::read_u32(head, field::TAG_SIZE);
        if (size as usize) < field::TAG_HEADER_LEN {
            self.done = true;
            return Some(Err(Multiboot2Error::TagTooShort { tag: ty, offset: at, size, min: field::TAG_HEADER_LEN }));
        }
        let end = at.saturating_add(size as usize);
        if end > self.bytes.len() {
            self.done = true;
            return Some(Err(Multiboot2Error::TagOverrun { tag: ty, offset: at, size, total_size: self.bytes.len() }));
        }
        if ty == tag::END {
            self.done = true;
            return None;
        }
        // The next tag starts at the next 8-byte boundary (§3.6: "tags are padded ... 8 bytes").
        self.offset = end.next_multiple_of(8);
        Some(Ok(Tag { ty, offset: at, bytes: &self.bytes[at..end] }))
    }
}

/// Kind of an E820-numbered Multiboot2 memory map entry (§3.6.8: 1 available, 3 ACPI, 4 preserve on
/// hibernation, 5 defective, anything else reserved).
fn mmap_kind(ty: u32) -> RegionKind {
    RegionKind::from_e820(ty)
}

/// Kind of an `EFI_MEMORY_TYPE` after ExitBootServices (UEFI 2.10 §7.2.3, Table 7-6 "Memory Type Usage
/// after ExitBootServices()"): loader and boot-services code/data and conventional memory are free RAM;
/// runtime-services memory, MMIO and unknown types stay reserved.
pub fn efi_kind(ty: u32) -> RegionKind {
    match ty {
        1..=4 | 7 => RegionKind::Ram,
        8 => RegionKind::Unusable,
        9 => RegionKind::AcpiReclaimable,
        10 => RegionKind::AcpiNvs,
        _ => RegionKind::Reserved,
    }
}

/// Undoes GRUB's escaping of a command line in place and returns the new length: GRUB 2 (`grub_create_loader_cmdline`)
/// writes `\\`, `\'` and `\"` for `\`, `'` and `"` in the `multiboot2` command's words and wraps words with
/// spaces in `"`, which the kernel's command line parser groups (see `cmdline`). Other backslashes stay.
pub fn unescape_grub(s: &mut [u8]) -> usize {
    let (mut r, mut w) = (0, 0);
    while r < s.len() {
        if s[r] == b'\\' && matches!(s.get(r + 1), Some(b'\\' | b'\'' | b'"')) {
            r += 1;
        }
        s[w] = s[r];
        r += 1;
        w += 1;
    }
    w
}

/// The command line's bytes (without its NUL) within the MBI, and whether the loader is GRUB.
fn grub_cmdline(mbi: &[u8], total_size: u32) -> (Option<core::ops::Range<usize>>, bool) {
    let (mut cmdline, mut grub) = (None, false);
    for t in Tags::new(mbi, total_size).flatten() {
        match t.ty {
            tag::CMDLINE => {
                cmdline = t.string(field::TAG_HEADER_LEN).ok().map(|s| {
                    let start = t.offset + field::TAG_HEADER_LEN;
                    start..start + s.len()
                })
            }
            tag::BOOT_LOADER_NAME => grub = t.string(field::TAG_HEADER_LEN).is_ok_and(|n| n.starts_with(b"GRUB")),
            _ => {}
        }
    }
    (cmdline, grub)
}

fn utf8(b: &'static [u8]) -> Result<&'static str, BootInfoError> {
    core::str::from_utf8(b).map_err(|_| BootInfoError::CmdlineNotUtf8)
}

impl BootInfo {
    /// Builds a `BootInfo` from the MBI bytes `mbi` (exactly what the loader left at physical address `paddr`;
    /// `'static` because the command line and module strings keep pointing into it, mutable because GRUB's
    /// escaping of the command line is undone in place, see [`unescape_grub`]).
    ///
    /// Memory map from tag 6, else from the EFI memory map tag 17 (adjacent ranges of one kind merged); command
    /// line (1), loader name (2), modules (3) with their strings; the RSDP is the copy inside tag 15 (else 14),
    /// recorded by its physical address; firmware UEFI when an EFI system table (11/12) or EFI memory map tag is
    /// present. Unknown tags are skipped.
    ///
    /// # Errors
    /// [`BootInfoError::Multiboot2`] for malformed tags, a missing end tag or memory map; too many regions or
    /// modules; a command line or string that is not UTF-8.
    pub fn from_multiboot2(mbi: &'static mut [u8], paddr: u64) -> Result<Self, BootInfoError> {
        if paddr == 0 || !paddr.is_multiple_of(8) {
            return Err(Multiboot2Error::BadAddress(paddr).into());
        }
        let total_size = Mbi::new_checked(&*mbi)?.total_size();
        if let (Some(r), true) = grub_cmdline(mbi, total_size) {
            let n = unescape_grub(&mut mbi[r.clone()]);
            mbi[r.start + n..r.end].fill(0);
        }
        let mbi: &'static [u8] = mbi;
        let tags = || Tags::new(mbi, total_size);
        let firmware = if tags().any(|t| t.is_ok_and(|t| matches!(t.ty, tag::EFI32 | tag::EFI64 | tag::EFI_MMAP))) {
            Firmware::Uefi
        } else {
            Firmware::Bios
        };
        let mut bi = BootInfo::new(BootProtocol::Multiboot2 { mbi: paddr, mbi_len: total_size, firmware });
        let mut efi_map = None;
        let mut have_map = false;
        let mut rsdp_old = None;
        for t in tags() {
            let t = t?;
            match t.ty {
                tag::CMDLINE => bi.cmdline = utf8(t.string(field::TAG_HEADER_LEN)?)?.trim(),
                tag::BOOT_LOADER_NAME => bi.loader = Some(utf8(t.string(field::TAG_HEADER_LEN)?)?.trim()),
                tag::MODULE => {
                    t.require(field::MOD_STRING)?;
                    let (start, end) =
                        (wire::read_u32(t.bytes, field::MOD_START), wire::read_u32(t.bytes, field::MOD_END));
                    if end < start {
                        return Err(Multiboot2Error::BadModule { start, end }.into());
                    }
                    let s = t.string(field::MOD_STRING)?;
                    let cmdline = if s.is_empty() { None } else { Some(utf8(s)?) };
                    bi.push_module(Module { start: start.into(), len: u64::from(end - start), cmdline })?;
                }
                tag::MMAP if !have_map => {
                    for e in t.entries(field::MMAP_ENTRIES, field::MMAP_ENTRY_SIZE, field::MMAP_ENTRY_LEN)? {
                        let kind = mmap_kind(wire::read_u32(e, field::MMAP_TYPE));
                        bi.push_region_merged(MemoryRegion {
                            start: wire::read_u64(e, field::MMAP_BASE),
                            len: wire::read_u64(e, field::MMAP_LENGTH),
                            kind,
                        })?;
                    }
                    have_map = true;
                }
                tag::EFI_MMAP => efi_map = Some(t),
                tag::ACPI_NEW => {
                    t.require(field::RSDP + 1)?;
                    bi.rsdp = Some(paddr + (t.offset + field::RSDP) as u64);
                }
                tag::ACPI_OLD => {
                    t.require(field::RSDP + 1)?;
                    rsdp_old = Some(paddr + (t.offset + field::RSDP) as u64);
                }
                _ => {}
            }
        }
        if !have_map {
            let t = efi_map.ok_or(Multiboot2Error::NoMemoryMap)?;
            for d in t.entries(field::EFI_DESCRIPTORS, field::EFI_DESC_SIZE, field::EFI_DESC_LEN)? {
                let pages = wire::read_u64(d, field::EFI_NUMBER_OF_PAGES);
                bi.push_region_merged(MemoryRegion {
                    start: wire::read_u64(d, field::EFI_PHYSICAL_START),
                    len: pages.saturating_mul(4096),
                    kind: efi_kind(wire::read_u32(d, field::EFI_TYPE)),
                })?;
            }
        }
        // A map tag too short for one entry describes no memory, like a missing map (PVH refuses both too).
        if bi.regions().is_empty() {
            return Err(Multiboot2Error::NoMemoryMap.into());
        }
        if bi.rsdp.is_none() {
            bi.rsdp = rsdp_old;
        }
        Ok(bi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootinfo::MAX_REGIONS;
    use alloc::boxed::Box;
    use alloc::vec::Vec;

    /// Builds an MBI from `(type, payload)` tags, each padded to 8 bytes, plus the end tag.
    fn mbi(tags: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let mut b = alloc::vec![0u8; 8];
        for (ty, payload) in tags {
            let size = 8 + payload.len() as u32;
            b.extend_from_slice(&ty.to_le_bytes());
            b.extend_from_slice(&size.to_le_bytes());
            b.extend_from_slice(payload);
            while !b.len().is_multiple_of(8) {
                b.push(0);
            }
        }
        b.extend_from_slice(&[0, 0, 0, 0, 8, 0, 0, 0]);
        let total = b.len() as u32;
        b[..4].copy_from_slice(&total.to_le_bytes());
        b
    }

    fn leak(b: Vec<u8>) -> &'static mut [u8] {
        Box::leak(b.into_boxed_slice())
    }

    fn string(s: &str) -> Vec<u8> {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        v
    }

    fn mmap(entries: &[(u64, u64, u32)]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&24u32.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        for &(base, len, ty) in entries {
            v.extend_from_slice(&base.to_le_bytes());
            v.extend_from_slice(&len.to_le_bytes());
            v.extend_from_slice(&ty.to_le_bytes());
            v.extend_from_slice(&0u32.to_le_bytes());
        }
        v
    }

    fn efi_mmap(desc_size: u32, descs: &[(u32, u64, u64)]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&desc_size.to_le_bytes());
        v.extend_from_slice(&1u32.to_le_bytes());
        for &(ty, start, pages) in descs {
            let mut d = alloc::vec![0u8; desc_size as usize];
            d[0..4].copy_from_slice(&ty.to_le_bytes());
            d[8..16].copy_from_slice(&start.to_le_bytes());
            d[16..24].copy_from_slice(&start.to_le_bytes());
            d[24..32].copy_from_slice(&pages.to_le_bytes());
            d[32..40].copy_from_slice(&0xfu64.to_le_bytes());
            v.extend_from_slice(&d);
        }
        v
    }

    fn module(start: u32, end: u32, s: &str) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&start.to_le_bytes());
        v.extend_from_slice(&end.to_le_bytes());
        v.extend_from_slice(&string(s));
        v
    }

    const RSDP_V2: [u8; 36] =
        *b"RSD PTR \x00BOCHS \x02\x00\x00\x00\x00\x24\x00\x00\x00\x00\x10\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";

    /// The map QEMU 10 q35 + SeaBIOS gives GRUB 2.06 for `-m 64M` (GRUB passes the E820 map through).
    fn bios_map() -> Vec<u8> {
        mmap(&[
            (0, 0x9fc00, 1),
            (0x9fc00, 0x400, 2),
            (0xf0000, 0x10000, 2),
            (0x100000, 0x3ee0000, 1),
            (0x3fe0000, 0x20000, 2),
            (0xb000_0000, 0x1000_0000, 2),
            (0xfed1_c000, 0x4000, 2),
            (0xfeff_c000, 0x4000, 2),
            (0xfffc_0000, 0x40000, 2),
        ])
    }

    #[test]
    fn parses_a_grub_bios_mbi() {
        let b = mbi(&[
            (tag::CMDLINE, string(" loglevel=debug -- a b ")),
            (tag::BOOT_LOADER_NAME, string("GRUB 2.06-13+deb12u2")),
            (4, alloc::vec![0x7f, 2, 0, 0, 0x80, 0xf9, 0, 0]), // basic meminfo: skipped
            (5, alloc::vec![0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), // bootdev
            (tag::MMAP, bios_map()),
            (tag::ACPI_OLD, RSDP_V2[..20].to_vec()),
        ]);
        let bi = BootInfo::from_multiboot2(leak(b), 0x9000).unwrap();
        assert_eq!(
            bi.protocol,
            BootProtocol::Multiboot2 { mbi: 0x9000, mbi_len: bi_len(&bi), firmware: Firmware::Bios }
        );
        assert_eq!(bi.cmdline, "loglevel=debug -- a b");
        assert_eq!(bi.loader, Some("GRUB 2.06-13+deb12u2"));
        assert_eq!(bi.regions().len(), 9);
        assert_eq!(bi.regions()[3], MemoryRegion { start: 0x100000, len: 0x3ee0000, kind: RegionKind::Ram });
        assert_eq!(bi.ram_bytes(), 0x9fc00 + 0x3ee0000);
        assert!(bi.modules().is_empty());
        // The RSDP copy: tag offset + 8, at its physical address.
        let off = 8 + 32 + 32 + 16 + 24 + (16 + 9 * 24);
        assert_eq!(bi.rsdp, Some(0x9000 + off as u64 + 8));
        assert_eq!(alloc::format!("{}", bi.entry()), "Multiboot2 (GRUB 2.06-13+deb12u2, BIOS)");
    }

    fn bi_len(bi: &BootInfo) -> u32 {
        match bi.protocol {
            BootProtocol::Multiboot2 { mbi_len, .. } => mbi_len,
            _ => 0,
        }
    }

    /// Boot information GRUB 2.06-13+deb12u2 gave a `images package` disk on QEMU 10 q35 `-m 64M`, TCG: through
    /// SeaBIOS (tags 21, 1, 2, 10, 6, 9, 4, 5, 14) and through OVMF (21, 1, 2, 6, 9, 4, 12, 14, 15, 17).
    const RECORDED_BIOS: &[u8] = include_bytes!("testdata/grub-bios.mbi");
    const RECORDED_UEFI: &[u8] = include_bytes!("testdata/grub-uefi.mbi");

    #[test]
    fn parses_recorded_grub_mbis() {
        let bi = BootInfo::from_multiboot2(leak(RECORDED_BIOS.to_vec()), 0x10000).unwrap();
        assert_eq!(alloc::format!("{}", bi.entry()), "Multiboot2 (GRUB 2.06-13+deb12u2, BIOS)");
        assert_eq!((bi.cmdline, bi.regions().len(), bi.modules().len()), ("", 9, 0));
        assert_eq!(bi.regions()[3], MemoryRegion { start: 0x100000, len: 0x3edd000, kind: RegionKind::Ram });
        assert_eq!(bi.ram_bytes(), 0x9fc00 + 0x3edd000);
        assert_eq!(bi.rsdp, Some(0x10000 + 1040 + 8), "the ACPI 1.0 RSDP copy in tag 14");
        assert_eq!(bi.loader_data(), Some((0x10000, 0x10000 + 1080)));

        let bi = BootInfo::from_multiboot2(leak(RECORDED_UEFI.to_vec()), 0x20000).unwrap();
        assert_eq!(alloc::format!("{}", bi.entry()), "Multiboot2 (GRUB 2.06-13+deb12u2, UEFI)");
        // 18 entries; three adjacent reserved ones (types 2, 20, 2) merge.
        assert_eq!((bi.regions().len(), bi.ram_bytes()), (16, 0x398e000));
        assert_eq!(bi.rsdp, Some(0x20000 + 1248 + 8), "the ACPI 2.0 RSDP copy in tag 15 wins over tag 14");
        // Without tag 6, the EFI memory map (124 descriptors of 48 bytes) gives the same RAM in 16 regions.
        let mut efi_only = RECORDED_UEFI.to_vec();
        efi_only[72..76].copy_from_slice(&0xffu32.to_le_bytes());
        let bi = BootInfo::from_multiboot2(leak(efi_only), 0x20000).unwrap();
        assert_eq!((bi.regions().len(), bi.ram_bytes()), (16, 0x398e000));
    }

    #[test]
    fn efi_memory_map_is_used_without_an_e820_map_and_merged() {
        let descs = [
            (7, 0, 0xa0),              // conventional
            (6, 0x100000 - 0x1000, 1), // runtime data: reserved
            (2, 0x100000, 0x300),      // loader data (the kernel): RAM after ExitBootServices
            (4, 0x400000, 0x100),      // boot services data: RAM, merges with the next
            (7, 0x500000, 0x3b00),
            (9, 0x4000000, 0x10),     // ACPI reclaim
            (10, 0x4010000, 0x10),    // ACPI NVS
            (11, 0xffc0_0000, 0x400), // MMIO
        ];
        for desc_size in [40, 48] {
            let b = mbi(&[
                (tag::BOOT_LOADER_NAME, string("GRUB 2.06-13+deb12u2")),
                (tag::EFI64, 0x7fbee018u64.to_le_bytes().to_vec()),
                (tag::EFI_MMAP, efi_mmap(desc_size, &descs)),
                (tag::ACPI_NEW, RSDP_V2.to_vec()),
            ]);
            let bi = BootInfo::from_multiboot2(leak(b), 0x100_0000).unwrap();
            assert!(matches!(bi.protocol, BootProtocol::Multiboot2 { firmware: Firmware::Uefi, .. }));
            let kinds: Vec<_> = bi.regions().iter().map(|r| (r.start, r.len, r.kind)).collect();
            assert_eq!(
                kinds,
                [
                    (0, 0xa0000, RegionKind::Ram),
                    (0xff000, 0x1000, RegionKind::Reserved),
                    (0x100000, 0x300000 + 0x100000 + 0x3b00000, RegionKind::Ram),
                    (0x4000000, 0x10000, RegionKind::AcpiReclaimable),
                    (0x4010000, 0x10000, RegionKind::AcpiNvs),
                    (0xffc0_0000, 0x40_0000, RegionKind::Reserved),
                ],
                "descriptor size {desc_size}"
            );
            let acpi_at = 8 + 32 + 16 + (16 + 8 * desc_size as u64);
            assert_eq!(bi.rsdp, Some(0x100_0000 + acpi_at + 8));
            assert_eq!(alloc::format!("{}", bi.entry()), "Multiboot2 (GRUB 2.06-13+deb12u2, UEFI)");
        }
    }

    #[test]
    fn e820_map_wins_over_the_efi_map_and_new_rsdp_over_old() {
        let b = mbi(&[
            (tag::EFI_MMAP, efi_mmap(48, &[(7, 0, 0x10)])),
            (tag::ACPI_OLD, RSDP_V2[..20].to_vec()),
            (tag::MMAP, mmap(&[(0, 0x9fc00, 1), (0x100000, 0x100000, 1)])),
            (tag::ACPI_NEW, RSDP_V2.to_vec()),
        ]);
        let bi = BootInfo::from_multiboot2(leak(b.clone()), 0x8000).unwrap();
        assert_eq!(bi.regions().len(), 2);
        let new_at = b.len() - 8 - 48; // the ACPI_NEW tag is the last before the end tag (8 + 36 padded to 48)
        assert_eq!(bi.rsdp, Some(0x8000 + new_at as u64 + 8));
        assert_eq!(bi.loader, None);
        assert_eq!(alloc::format!("{}", bi.entry()), "Multiboot2 (UEFI)");
    }

    #[test]
    fn modules_and_their_strings() {
        let b = mbi(&[
            (tag::MMAP, mmap(&[(0x100000, 0x1000000, 1)])),
            (tag::MODULE, module(0x200000, 0x280000, "initrd.tar")),
            (tag::MODULE, module(0x300000, 0x300000, "")),
        ]);
        let bi = BootInfo::from_multiboot2(leak(b), 0x8000).unwrap();
        assert_eq!(
            bi.modules(),
            [
                Module { start: 0x200000, len: 0x80000, cmdline: Some("initrd.tar") },
                Module { start: 0x300000, len: 0, cmdline: None },
            ]
        );
        let bad = mbi(&[(tag::MMAP, mmap(&[(0, 1, 1)])), (tag::MODULE, module(0x3000, 0x2000, "x"))]);
        assert_eq!(
            BootInfo::from_multiboot2(leak(bad), 0x8000).err(),
            Some(BootInfoError::Multiboot2(Multiboot2Error::BadModule { start: 0x3000, end: 0x2000 }))
        );
    }

    #[test]
    fn grub_escapes_are_undone() {
        // What GRUB 2.06 passes for `multiboot2 /k loglevel=debug -- a 'b c' "it's" 'x\y' 'q"'`.
        let line = r#"loglevel=debug -- a "b c" it\'s x\\y q\" z\n"#;
        let grub = mbi(&[
            (tag::CMDLINE, string(line)),
            (tag::BOOT_LOADER_NAME, string("GRUB 2.06-13+deb12u2")),
            (tag::MMAP, mmap(&[(0, 0x1000, 1)])),
        ]);
        let bi = BootInfo::from_multiboot2(leak(grub), 0x8000).unwrap();
        assert_eq!(bi.cmdline, r#"loglevel=debug -- a "b c" it's x\y q" z\n"#);
        // Another loader's command line is taken as is.
        let other = mbi(&[(tag::CMDLINE, string(line)), (tag::MMAP, mmap(&[(0, 0x1000, 1)]))]);
        assert_eq!(BootInfo::from_multiboot2(leak(other), 0x8000).unwrap().cmdline, line);
        // A lone trailing backslash stays.
        let mut b = *b"a\\";
        assert_eq!(unescape_grub(&mut b), 2);
    }

    #[test]
    fn unknown_tags_are_skipped() {
        let b = mbi(&[(99, alloc::vec![1, 2, 3]), (tag::MMAP, mmap(&[(0, 0x1000, 1)])), (1000, Vec::new())]);
        assert_eq!(BootInfo::from_multiboot2(leak(b), 0x8000).unwrap().regions().len(), 1);
    }

    fn err(b: Vec<u8>) -> Option<BootInfoError> {
        BootInfo::from_multiboot2(leak(b), 0x8000).err()
    }

    fn mb2(e: Multiboot2Error) -> Option<BootInfoError> {
        Some(BootInfoError::Multiboot2(e))
    }

    #[test]
    fn rejects_bad_sizes_and_truncation() {
        let good = mbi(&[(tag::MMAP, mmap(&[(0, 0x1000, 1)]))]);
        let total = good.len();
        // Buffer shorter than total_size.
        assert_eq!(
            err(good[..total - 8].to_vec()),
            mb2(Multiboot2Error::BadTotalSize { total_size: total as u32, available: total - 8 })
        );
        // Empty, and total_size below header + end tag.
        assert_eq!(err(Vec::new()), mb2(Multiboot2Error::BadTotalSize { total_size: 0, available: 0 }));
        let mut tiny = good.clone();
        tiny[..4].copy_from_slice(&8u32.to_le_bytes());
        assert_eq!(err(tiny), mb2(Multiboot2Error::BadTotalSize { total_size: 8, available: total }));
        // total_size cuts the end tag off.
        let mut cut = good.clone();
        cut[..4].copy_from_slice(&((total - 8) as u32).to_le_bytes());
        assert_eq!(err(cut), mb2(Multiboot2Error::NoEndTag));
        // A tag size below 8, and one past total_size.
        let mut small = good.clone();
        small[12..16].copy_from_slice(&4u32.to_le_bytes());
        assert_eq!(err(small), mb2(Multiboot2Error::TagTooShort { tag: tag::MMAP, offset: 8, size: 4, min: 8 }));
        let mut over = good.clone();
        over[12..16].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        assert_eq!(
            err(over),
            mb2(Multiboot2Error::TagOverrun { tag: tag::MMAP, offset: 8, size: 0xffff_fff0, total_size: total })
        );
        // An mmap entry size below 24.
        let mut m = mmap(&[(0, 0x1000, 1)]);
        m[..4].copy_from_slice(&16u32.to_le_bytes());
        assert_eq!(err(mbi(&[(tag::MMAP, m)])), mb2(Multiboot2Error::BadEntrySize { tag: tag::MMAP, entry_size: 16 }));
        // An mmap tag too short for its own fixed part.
        assert_eq!(
            err(mbi(&[(tag::MMAP, alloc::vec![24, 0, 0, 0])])),
            mb2(Multiboot2Error::TagTooShort { tag: tag::MMAP, offset: 8, size: 12, min: 16 })
        );
        // A truncated last entry is ignored, not read past the tag.
        let mut m = mmap(&[(0, 0x1000, 1), (0x100000, 0x1000, 1)]);
        m.truncate(m.len() - 4);
        assert_eq!(BootInfo::from_multiboot2(leak(mbi(&[(tag::MMAP, m)])), 0x8000).unwrap().regions().len(), 1);
    }

    #[test]
    fn rejects_bad_strings_maps_and_addresses() {
        let map = (tag::MMAP, mmap(&[(0, 0x1000, 1)]));
        assert_eq!(
            err(mbi(&[map.clone(), (tag::CMDLINE, b"no-nul".to_vec())])),
            mb2(Multiboot2Error::StringNotTerminated { tag: tag::CMDLINE, offset: 48 })
        );
        assert_eq!(
            err(mbi(&[map.clone(), (tag::CMDLINE, b"\xff\xfe\0".to_vec())])),
            Some(BootInfoError::CmdlineNotUtf8)
        );
        assert_eq!(err(mbi(&[(tag::CMDLINE, string("x"))])), mb2(Multiboot2Error::NoMemoryMap));
        // Found by the multiboot2 fuzz target: map tags holding no whole entry gave a BootInfo without memory.
        assert_eq!(err(mbi(&[(tag::MMAP, mmap(&[]))])), mb2(Multiboot2Error::NoMemoryMap));
        let mut short_efi = efi_mmap(48, &[(7, 0x10_0000, 16)]);
        short_efi.truncate(short_efi.len() - 1);
        assert_eq!(err(mbi(&[(tag::EFI_MMAP, short_efi)])), mb2(Multiboot2Error::NoMemoryMap));
        assert_eq!(
            BootInfo::from_multiboot2(leak(mbi(std::slice::from_ref(&map))), 0).err(),
            mb2(Multiboot2Error::BadAddress(0))
        );
        assert_eq!(
            BootInfo::from_multiboot2(leak(mbi(&[map])), 0x8004).err(),
            mb2(Multiboot2Error::BadAddress(0x8004))
        );
        let many: Vec<_> = (0..MAX_REGIONS as u64 + 1).map(|i| (i * 0x2000, 0x1000, 1)).collect();
        assert!(matches!(err(mbi(&[(tag::MMAP, mmap(&many))])), Some(BootInfoError::TooManyRegions(_))));
    }

    #[test]
    fn tag_iterator_reports_the_tags() {
        let b = mbi(&[(tag::CMDLINE, string("a")), (tag::MMAP, mmap(&[]))]);
        let view = Mbi::new_checked(&b[..]).unwrap();
        assert_eq!(view.reserved(), 0);
        let tags: Vec<_> = view.tags().map(|t| t.map(|t| (t.ty, t.offset, t.bytes.len()))).collect();
        assert_eq!(tags, [Ok((tag::CMDLINE, 8, 10)), Ok((tag::MMAP, 24, 16))]);
    }

    #[test]
    fn efi_types() {
        assert_eq!(efi_kind(7), RegionKind::Ram);
        assert_eq!(efi_kind(3), RegionKind::Ram);
        assert_eq!(efi_kind(5), RegionKind::Reserved);
        assert_eq!(efi_kind(0x7000_0000), RegionKind::Reserved);
    }
}
