//! `images inspect FILE`: what an app image or a packaged disk holds.
//!
//! For an ELF: its entry points (the PVH note `XEN_ELFNOTE_PHYS32_ENTRY`, a Multiboot2 header in the first
//! 32 KiB, the ELF entry), the platforms compiled in (from the symbol table), the size of each section and the
//! embedded initrd (a ustar archive inside `.rodata`). For a disk (raw, qcow2, VHD, VHDX, VMDK or a GCE
//! archive): the partition table, the boot loader (GRUB boot.img in the MBR, core.img in the BIOS boot
//! partition, the EFI loader), the kernel command line from grub.cfg and the ELF inside, inspected as above.
//!
//! Sources: ELF-64 Object File Format 1.5 (header, sections, notes); Xen `include/public/elfnote.h` (18 =
//! `XEN_ELFNOTE_PHYS32_ENTRY`); Multiboot2 Specification 1.0 §3.1 (header, checksum, entry address tag 3);
//! POSIX.1-2017 `pax` ustar header (magic "ustar" at 257, checksum at 148); UEFI 2.10 §5.3 (GPT).

use std::fmt::Write as _;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection, ObjectSymbol};

use crate::package::{convert, gpt as layout, grub};
use crate::region::Region;

/// Failures of `images inspect`.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The file is neither an ELF nor a disk image this tool knows.
    #[error("{path}: {why}")]
    Unrecognised {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        why: String,
    },
    /// qemu-img (to read a converted image) failed or is missing.
    #[error(transparent)]
    Convert(#[from] convert::ConvertError),
    /// An I/O error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InspectError {
    let path = path.to_owned();
    move |source| InspectError::Io { path, source }
}

/// `bytes` for people: `512 B`, `4.0 KiB`, `1.1 MiB`, `2.0 GiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// What an app ELF holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ElfReport {
    /// ELF file size (bytes).
    pub bytes: u64,
    /// ELF header entry point (`e_entry`).
    pub elf_entry: u64,
    /// PVH entry (`XEN_ELFNOTE_PHYS32_ENTRY`), when the note is present.
    pub pvh_entry: Option<u64>,
    /// Multiboot2 header: (file offset, entry address from tag 3), when present.
    pub multiboot2: Option<(usize, Option<u32>)>,
    /// Platforms compiled in (`kvm`, `xen`, `hyperv`).
    pub platforms: Vec<&'static str>,
    /// Allocated sections: (name, address, size in bytes).
    pub sections: Vec<(String, u64, u64)>,
    /// Embedded initrd: (entries, archive bytes).
    pub initrd: Option<(usize, u64)>,
}

/// The Xen PVH entry note: `name` "Xen", type 18, the 32-bit entry address.
fn pvh_entry(file: &object::File<'_>) -> Option<u64> {
    const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
    let sec = file.section_by_name(".note.Xen")?;
    let data = sec.data().ok()?;
    let mut at = 0;
    // Notes: namesz u32, descsz u32, type u32, name (4-aligned), desc (4-aligned).
    while at + 12 <= data.len() {
        let word = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().unwrap_or([0; 4]));
        let (namesz, descsz, ty) = (word(at) as usize, word(at + 4) as usize, word(at + 8));
        let name_end = at + 12 + namesz.next_multiple_of(4);
        let desc_end = name_end + descsz.next_multiple_of(4);
        if desc_end > data.len() {
            return None;
        }
        if ty == XEN_ELFNOTE_PHYS32_ENTRY && data.get(at + 12..at + 15) == Some(b"Xen") {
            let d = &data[name_end..name_end + descsz];
            return match d.len() {
                4 => Some(u32::from_le_bytes(d.try_into().ok()?).into()),
                8 => Some(u64::from_le_bytes(d.try_into().ok()?)),
                _ => None,
            };
        }
        at = desc_end;
    }
    None
}

/// The Multiboot2 header magic (Multiboot2 spec §3.1.1).
const MULTIBOOT2_HEADER_MAGIC: u32 = 0xe852_50d6;

/// A Multiboot2 header in the first 32 KiB of `bytes` (8-byte aligned, checksum valid): its offset and the
/// entry address tag's address.
pub fn multiboot2_header(bytes: &[u8]) -> Option<(usize, Option<u32>)> {
    let limit = bytes.len().min(32 * 1024);
    let word = |o: usize| bytes.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    (0..limit.saturating_sub(16)).step_by(8).find_map(|at| {
        if word(at)? != MULTIBOOT2_HEADER_MAGIC {
            return None;
        }
        let (arch, len, sum) = (word(at + 4)?, word(at + 8)?, word(at + 12)?);
        if word(at)?.wrapping_add(arch).wrapping_add(len).wrapping_add(sum) != 0 {
            return None;
        }
        let end = at + len as usize;
        let mut t = at + 16;
        let mut entry = None;
        while t + 8 <= end.min(bytes.len()) {
            let (ty, size) = (u16::from_le_bytes([bytes[t], bytes[t + 1]]), word(t + 4)? as usize);
            if ty == 0 || size < 8 {
                break;
            }
            if ty == 3 && size >= 12 {
                entry = word(t + 8);
            }
            t += size.next_multiple_of(8);
        }
        Some((at, entry))
    })
}

/// The first ustar archive in `data`: (entries, archive bytes up to the end of its last member's data).
fn find_ustar(data: &[u8]) -> Option<(usize, u64)> {
    let valid = |h: &[u8]| {
        let stored = std::str::from_utf8(&h[148..156]).ok()?.trim_matches(|c: char| c == '\0' || c == ' ');
        let stored = u32::from_str_radix(stored, 8).ok()?;
        let sum: u32 =
            h.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u32::from(b) }).sum();
        (sum == stored).then_some(())
    };
    let start = (0..data.len().saturating_sub(512))
        .find(|&o| &data[o + 257..o + 262] == b"ustar" && valid(&data[o..o + 512]).is_some())?;
    let mut archive = tar::Archive::new(&data[start..]);
    let (mut n, mut end) = (0usize, 0u64);
    for e in archive.entries().ok()? {
        let Ok(e) = e else { break };
        n += 1;
        end = end.max(e.raw_file_position() + e.size());
    }
    Some((n, end))
}

/// Reads an app ELF's entries, platforms, sections and embedded initrd. Errors: not an ELF.
pub fn inspect_elf(bytes: &[u8]) -> Result<ElfReport, String> {
    let file = object::File::parse(bytes).map_err(|e| format!("not an ELF: {e}"))?;
    let mut r = ElfReport {
        bytes: bytes.len() as u64,
        elf_entry: file.entry(),
        pvh_entry: pvh_entry(&file),
        multiboot2: multiboot2_header(bytes),
        ..ElfReport::default()
    };
    for (krate, name) in [("platform_kvm", "kvm"), ("platform_xen", "xen"), ("platform_hyperv", "hyperv")] {
        if file.symbols().any(|s| s.name().is_ok_and(|n| n.contains(krate))) {
            r.platforms.push(name);
        }
    }
    for s in file.sections() {
        if s.address() != 0 {
            r.sections.push((s.name().unwrap_or("?").to_owned(), s.address(), s.size()));
        }
    }
    if let Some(data) = file.section_by_name(".rodata").and_then(|s| s.data().ok()) {
        r.initrd = find_ustar(data);
    }
    Ok(r)
}

impl std::fmt::Display for ElfReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "ELF x86_64, {} bytes ({})", self.bytes, human(self.bytes))?;
        let mut entries = Vec::new();
        if let Some(e) = self.pvh_entry {
            entries.push(format!("PVH at {e:#x} (XEN_ELFNOTE_PHYS32_ENTRY)"));
        }
        if let Some((off, e)) = self.multiboot2 {
            let at = e.map(|e| format!(" at {e:#x}")).unwrap_or_default();
            entries.push(format!("Multiboot2{at} (header at file offset {off:#x})"));
        }
        if entries.is_empty() {
            entries.push("none a loader knows".into());
        }
        writeln!(f, "  entries: {}; ELF entry {:#x}", entries.join(", "), self.elf_entry)?;
        let platforms = if self.platforms.is_empty() { "none found".into() } else { self.platforms.join(", ") };
        writeln!(f, "  platforms: {platforms}")?;
        writeln!(f, "  sections:")?;
        for (name, addr, size) in &self.sections {
            writeln!(f, "    {name:<12} {addr:#010x} {size:>9} bytes ({})", human(*size))?;
        }
        match self.initrd {
            Some((n, bytes)) => writeln!(f, "  initrd: embedded ustar archive, {n} entries, {bytes} bytes"),
            None => writeln!(f, "  initrd: none embedded"),
        }
    }
}

/// A temporary file removed on drop.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Inspects `path` (an ELF or a disk image) and returns the report text. Errors: [`InspectError`].
pub fn inspect(path: &Path) -> Result<String, InspectError> {
    let mut head = [0u8; 4];
    let f = File::open(path).map_err(io(path))?;
    let n = f.read_at(&mut head, 0).map_err(io(path))?;
    if head[..n] == *b"\x7fELF" {
        let bytes = std::fs::read(path).map_err(io(path))?;
        let r = inspect_elf(&bytes).map_err(|why| InspectError::Unrecognised { path: path.to_owned(), why })?;
        return Ok(format!("{}: {r}", path.display()));
    }
    let tmp = TempFile(std::env::temp_dir().join(format!("images-inspect-{}.raw", std::process::id())));
    let (raw, what) = if head[..2] == [0x1f, 0x8b] {
        let members = convert::archive_members(path)?;
        convert::extract_gce_disk(path, &tmp.0)?;
        let names: Vec<_> = members.iter().map(|(n, s)| format!("{n} ({s} bytes)")).collect();
        (tmp.0.clone(), format!("GCE image archive (gzip'd tar: {})", names.join(", ")))
    } else {
        let (format, size) = convert::image_info(path)?;
        let mut what = format!("{format} disk image, virtual size {size} bytes ({})", human(size));
        if format == "vpc" && convert::has_vhd_footer(path)? {
            what.push_str(", VHD footer \"conectix\" at the end");
        }
        if format == "raw" {
            (path.to_owned(), what)
        } else {
            convert::qemu_img(&[
                "convert".as_ref(),
                "-O".as_ref(),
                "raw".as_ref(),
                path.as_os_str(),
                tmp.0.as_os_str(),
            ])?;
            (tmp.0.clone(), what)
        }
    };
    let mut out = format!("{}: {what}\n", path.display());
    inspect_disk(&raw, &mut out)?;
    Ok(out)
}

/// Appends the partition table, boot loader, command line and kernel of the raw disk `raw` to `out`.
fn inspect_disk(raw: &Path, out: &mut String) -> Result<(), InspectError> {
    let f = File::open(raw).map_err(io(raw))?;
    let mut mbr = [0u8; 512];
    f.read_exact_at(&mut mbr, 0).map_err(io(raw))?;
    let disk = match ::gpt::GptConfig::new().writable(false).open(raw) {
        Ok(d) => d,
        Err(e) => {
            let _ = writeln!(out, "  no GPT ({e}); an unpartitioned disk is mounted whole at /data if it holds FAT");
            return Ok(());
        }
    };
    let n = disk.partitions().len();
    let _ = writeln!(
        out,
        "  partition table: GPT, disk GUID {}, {n} partition{}",
        disk.guid(),
        if n == 1 { "" } else { "s" }
    );
    if mbr.windows(5).any(|w| w == b"GRUB ") {
        let core_lba = u64::from_le_bytes(mbr[0x5c..0x64].try_into().unwrap_or([0; 8]));
        let _ = writeln!(out, "  MBR boot code: GRUB boot.img, core.img at LBA {core_lba}");
    } else {
        let _ = writeln!(out, "  MBR boot code: none (not BIOS-bootable)");
    }
    for (i, p) in disk.partitions() {
        let extent = layout::Extent { first_lba: p.first_lba, sectors: p.last_lba + 1 - p.first_lba };
        let guid = p.part_type_guid.guid.to_string().to_uppercase();
        let kind = if p.part_type_guid == ::gpt::partition_types::BIOS {
            "BIOS boot"
        } else if p.part_type_guid == ::gpt::partition_types::EFI {
            "EFI system"
        } else if guid == layout::DATA_TYPE_GUID {
            "Zirvium data"
        } else {
            "other"
        };
        let _ = writeln!(
            out,
            "  {i}: {:?} {kind} ({guid}), LBA {}..={}, {}",
            p.name,
            p.first_lba,
            p.last_lba,
            human(extent.bytes())
        );
        match kind {
            "BIOS boot" => {
                let mut s = [0u8; 512];
                f.read_exact_at(&mut s, extent.offset()).map_err(io(raw))?;
                let (start, len) = (
                    u64::from_le_bytes(s[500..508].try_into().unwrap_or([0; 8])),
                    u16::from_le_bytes([s[508], s[509]]),
                );
                let _ = writeln!(
                    out,
                    "     GRUB core.img: {} sectors, the rest loaded from LBA {start}",
                    u64::from(len) + 1
                );
            }
            "EFI system" | "Zirvium data" => describe_fat(&f, raw, extent, kind == "EFI system", out),
            _ => {}
        }
    }
    Ok(())
}

/// Appends what a FAT partition holds; for the ESP also the EFI loader, grub.cfg's kernel and command line,
/// and the kernel ELF.
fn describe_fat(f: &File, raw: &Path, extent: layout::Extent, is_esp: bool, out: &mut String) {
    let fs = match fatfs::FileSystem::new(Region::new(f, extent.offset(), extent.bytes()), fatfs::FsOptions::new()) {
        Ok(fs) => fs,
        Err(e) => {
            let _ = writeln!(out, "     no FAT file system: {e}");
            return;
        }
    };
    let read = |p: &str| -> Option<Vec<u8>> {
        let mut file = fs.root_dir().open_file(p).ok()?;
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut v).ok()?;
        Some(v)
    };
    let stats = fs.stats().ok();
    let free = stats.map(|s| s.free_clusters() as u64 * u64::from(s.cluster_size())).unwrap_or(0);
    let _ = writeln!(out, "     {:?}, label {:?}, {} free", fs.fat_type(), fs.volume_label(), human(free));
    if !is_esp {
        let n = fs.root_dir().iter().filter(|e| e.as_ref().is_ok_and(|e| !e.is_dir())).count();
        let _ = writeln!(out, "     {n} files in its root directory");
        return;
    }
    match read(grub::EFI_LOADER) {
        Some(efi) => {
            let _ =
                writeln!(out, "     UEFI loader: /{} ({}, GRUB x86_64-efi)", grub::EFI_LOADER, human(efi.len() as u64));
        }
        None => {
            let _ = writeln!(out, "     UEFI loader: none (not UEFI-bootable)");
        }
    }
    let cfg_path = format!("{}/grub.cfg", grub::CFG_DIR);
    let Some(cfg) = read(&cfg_path).map(|c| String::from_utf8_lossy(&c).into_owned()) else {
        let _ = writeln!(out, "     no /{cfg_path}");
        return;
    };
    let Some((kernel, cmdline)) = grub::parse_config(&cfg) else {
        let _ = writeln!(out, "     /{cfg_path} has no multiboot2 line");
        return;
    };
    let _ = writeln!(out, "     /{cfg_path}: multiboot2 {kernel}, kernel command line {cmdline:?}");
    match read(kernel.trim_start_matches('/')).map(|b| inspect_elf(&b)) {
        Some(Ok(r)) => {
            let _ = write!(out, "     {kernel}: {}", r.to_string().replace('\n', "\n     ").trim_end());
            out.push('\n');
        }
        Some(Err(e)) => {
            let _ = writeln!(out, "     {kernel}: {e}");
        }
        None => {
            let _ = writeln!(out, "     {kernel}: missing on the ESP of {}", raw.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(64 << 20), "64.0 MiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
    }

    #[test]
    fn finds_a_multiboot2_header_and_its_entry() {
        let mut b = vec![0u8; 0x2000];
        let h: [u32; 10] = [
            0xe852_50d6,
            0,
            40,
            0u32.wrapping_sub(0xe852_50d6 + 40),
            3, /* type 3, flags 0 */
            12,
            0x10_0028,
            0,
            0,
            8,
        ];
        for (i, w) in h.iter().enumerate() {
            b[0x1000 + 4 * i..0x1000 + 4 * i + 4].copy_from_slice(&w.to_le_bytes());
        }
        assert_eq!(multiboot2_header(&b), Some((0x1000, Some(0x10_0028))));
        b[0x100c] ^= 1; // checksum broken
        assert_eq!(multiboot2_header(&b), None);
        assert_eq!(multiboot2_header(&[]), None);
    }

    #[test]
    fn finds_an_embedded_ustar_archive() {
        let mut t = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_cksum();
        t.append_data(&mut h, "index.html", &b"hello"[..]).unwrap();
        let archive = t.into_inner().unwrap();
        let mut rodata = vec![0x11u8; 37];
        rodata.extend_from_slice(&archive);
        rodata.extend_from_slice(&[0x22; 100]);
        assert_eq!(find_ustar(&rodata), Some((1, 512 + 5)));
        assert_eq!(find_ustar(&[0u8; 2000]), None);
    }
}
