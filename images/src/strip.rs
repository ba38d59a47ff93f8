//! The boot image without its symbol table: an ELF64 copy of the linked kernel with `.symtab` and its string
//! table left out (what `strip --strip-all` removes from a static executable; no debug info is built). Loaders
//! (QEMU's PVH `-kernel`, Xen's libelf) read only the program headers and the PT_NOTE; the unstripped ELF stays
//! next to it for `addr2line` on a backtrace and for the size report.
//! Source: System V ABI, ELF-64 Object File Format 1.5 (ELF header, section header table, SHT_SYMTAB/SHT_STRTAB).

/// Errors of [`strip_symbols`]; the image is not a 64-bit little-endian ELF this tool can rewrite.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripError {
    /// Not an ELF64 little-endian file.
    #[error("not a 64-bit little-endian ELF file")]
    NotElf64,
    /// The section header table lies outside the file or has an unexpected entry size.
    #[error("section header table at {offset:#x} ({count} entries of {size} bytes) is outside the {len}-byte file")]
    BadSectionTable {
        /// `e_shoff`: file offset of the table (bytes).
        offset: u64,
        /// `e_shnum`: number of entries.
        count: u16,
        /// `e_shentsize`: bytes per entry (64 expected).
        size: u16,
        /// File length (bytes).
        len: usize,
    },
}

const SHT_SYMTAB: u32 = 2;
const SHT_STRTAB: u32 = 3;
const SHT_NOBITS: u32 = 8;
const SHF_ALLOC: u64 = 2;
const SHDR_LEN: usize = 64;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or([0; 4]))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]))
}

/// `elf` without its symbol table and the string table it links to. The file is cut after the last byte a
/// kept section or program header needs; the section header table follows, renumbered. Errors: [`StripError`].
pub fn strip_symbols(elf: &[u8]) -> Result<Vec<u8>, StripError> {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return Err(StripError::NotElf64);
    }
    let (shoff, shentsize, shnum, shstrndx) =
        (u64_at(elf, 0x28), u16_at(elf, 0x3a), u16_at(elf, 0x3c), u16_at(elf, 0x3e));
    let (phoff, phentsize, phnum) = (u64_at(elf, 0x20), u16_at(elf, 0x36), u16_at(elf, 0x38));
    let table_end = usize::try_from(shoff).ok().and_then(|o| o.checked_add(usize::from(shnum) * SHDR_LEN));
    if usize::from(shentsize) != SHDR_LEN || table_end.is_none_or(|e| e > elf.len()) {
        return Err(StripError::BadSectionTable { offset: shoff, count: shnum, size: shentsize, len: elf.len() });
    }
    let ph_end = usize::try_from(phoff).ok().and_then(|o| o.checked_add(usize::from(phnum) * usize::from(phentsize)));
    if phentsize < 56 && phnum > 0 || ph_end.is_none_or(|e| e > elf.len()) {
        return Err(StripError::NotElf64);
    }
    let shdr = |i: usize| &elf[shoff as usize + i * SHDR_LEN..shoff as usize + (i + 1) * SHDR_LEN];
    let mut drop = vec![false; usize::from(shnum)];
    for i in 0..usize::from(shnum) {
        if u32_at(shdr(i), 4) == SHT_SYMTAB {
            drop[i] = true;
            let link = u32_at(shdr(i), 40) as usize;
            if link != usize::from(shstrndx) && link < drop.len() && u32_at(shdr(link), 4) == SHT_STRTAB {
                drop[link] = true;
            }
        }
    }
    // The new index of every kept section (section 0, the null entry, is always kept).
    let mut index = vec![0u32; drop.len()];
    let mut next = 0u32;
    for (i, d) in drop.iter().enumerate() {
        if !d {
            index[i] = next;
            next += 1;
        }
    }
    // Keep the file up to the end of what is loaded: ELF and program headers, segments, allocated sections.
    // Kept sections that are not loaded (.shstrtab) are copied after it, so the tables between them can go.
    let mut end = 64usize.max(phoff as usize + usize::from(phnum) * usize::from(phentsize));
    for p in 0..usize::from(phnum) {
        let ph = phoff as usize + p * usize::from(phentsize);
        end = end.max((u64_at(elf, ph + 8) + u64_at(elf, ph + 32)) as usize);
    }
    for (i, &dropped) in drop.iter().enumerate() {
        let s = shdr(i);
        let (kind, flags, offset, size) = (u32_at(s, 4), u64_at(s, 8), u64_at(s, 24), u64_at(s, 32));
        if !dropped && kind != SHT_NOBITS && flags & SHF_ALLOC != 0 {
            end = end.max(offset.saturating_add(size) as usize);
        }
    }
    let end = end.min(elf.len());
    let mut out = elf[..end].to_vec();
    let mut headers = Vec::new();
    for (i, &dropped) in drop.iter().enumerate() {
        if dropped {
            continue;
        }
        let mut s = shdr(i).to_vec();
        let (kind, flags, offset, size) = (u32_at(&s, 4), u64_at(&s, 8), u64_at(&s, 24), u64_at(&s, 32));
        if i != 0 && kind != SHT_NOBITS && flags & SHF_ALLOC == 0 {
            let data = elf.get(offset as usize..offset.saturating_add(size) as usize).unwrap_or(&[]);
            s[24..32].copy_from_slice(&(out.len() as u64).to_le_bytes());
            out.extend_from_slice(data);
        }
        let link = u32_at(&s, 40) as usize;
        if link != 0 && link < index.len() {
            s[40..44].copy_from_slice(&index[link].to_le_bytes());
        }
        headers.extend_from_slice(&s);
    }
    out.resize(out.len().next_multiple_of(8), 0);
    let new_shoff = out.len() as u64;
    out.extend_from_slice(&headers);
    out[0x28..0x30].copy_from_slice(&new_shoff.to_le_bytes());
    out[0x3c..0x3e].copy_from_slice(&(next as u16).to_le_bytes());
    let new_shstrndx = index.get(usize::from(shstrndx)).copied().unwrap_or(0) as u16;
    out[0x3e..0x40].copy_from_slice(&new_shstrndx.to_le_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64: header, one PT_LOAD over 16 bytes of text, sections null/.text/.symtab/.shstrtab/.strtab.
    fn sample() -> Vec<u8> {
        let mut e = vec![0u8; 64];
        e[..6].copy_from_slice(b"\x7fELF\x02\x01");
        e[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // phoff
        e[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        e[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        let mut ph = vec![0u8; 56];
        ph[..4].copy_from_slice(&1u32.to_le_bytes());
        ph[8..16].copy_from_slice(&120u64.to_le_bytes());
        ph[32..40].copy_from_slice(&16u64.to_le_bytes());
        e.extend(ph);
        e.extend([0x90u8; 16]); // .text at 120
        e.extend([0xAAu8; 48]); // .symtab at 136
        let shstr = b"\0.text\0.symtab\0.shstrtab\0.strtab\0";
        let shstr_off = e.len() as u64;
        e.extend_from_slice(shstr);
        let str_off = e.len() as u64;
        e.extend_from_slice(b"\0sym\0");
        let shoff = e.len().next_multiple_of(8);
        e.resize(shoff, 0);
        let sec = |name: u32, kind: u32, off: u64, size: u64, link: u32| {
            let mut s = vec![0u8; 64];
            s[..4].copy_from_slice(&name.to_le_bytes());
            s[4..8].copy_from_slice(&kind.to_le_bytes());
            if kind == 1 {
                s[8..16].copy_from_slice(&6u64.to_le_bytes()); // SHF_ALLOC | SHF_EXECINSTR
            }
            s[24..32].copy_from_slice(&off.to_le_bytes());
            s[32..40].copy_from_slice(&size.to_le_bytes());
            s[40..44].copy_from_slice(&link.to_le_bytes());
            s
        };
        e.extend(sec(0, 0, 0, 0, 0));
        e.extend(sec(1, 1, 120, 16, 0));
        e.extend(sec(7, SHT_SYMTAB, 136, 48, 4));
        e.extend(sec(15, SHT_STRTAB, shstr_off, shstr.len() as u64, 0));
        e.extend(sec(25, SHT_STRTAB, str_off, 5, 0));
        e[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        e[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        e[0x3c..0x3e].copy_from_slice(&5u16.to_le_bytes());
        e[0x3e..0x40].copy_from_slice(&3u16.to_le_bytes());
        e
    }

    #[test]
    fn symbols_go_loaded_bytes_and_names_stay() {
        let elf = sample();
        let out = strip_symbols(&elf).unwrap();
        assert!(out.len() < elf.len());
        assert_eq!(out[64..136], elf[64..136], "program header and text unchanged");
        assert_eq!(out[..0x28], elf[..0x28], "ELF header up to e_shoff unchanged");
        assert_eq!(u16_at(&out, 0x3c), 3, "null, .text, .shstrtab");
        assert_eq!(u16_at(&out, 0x3e), 2, "shstrtab renumbered");
        let shoff = u64_at(&out, 0x28) as usize;
        assert_eq!(out.len(), shoff + 3 * 64);
        let shstr = &out[shoff + 2 * 64..shoff + 3 * 64];
        let (off, size) = (u64_at(shstr, 24) as usize, u64_at(shstr, 32) as usize);
        assert_eq!(&out[off..off + size], b"\0.text\0.symtab\0.shstrtab\0.strtab\0");
        assert_eq!(strip_symbols(&out).unwrap(), out, "stripping twice changes nothing");
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert_eq!(strip_symbols(b"not an elf"), Err(StripError::NotElf64));
        let mut elf = sample();
        elf[0x3c..0x3e].copy_from_slice(&500u16.to_le_bytes());
        assert!(matches!(strip_symbols(&elf), Err(StripError::BadSectionTable { count: 500, .. })));
    }
}
