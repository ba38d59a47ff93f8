//! `BootInfo`: what every boot protocol (PVH and Multiboot2 today; the Hermit entry later) tells the
//! kernel, normalised into one shape. Parsing is pure and host-testable.
//!
//! Source for PVH: Xen `xen/include/public/arch-x86/hvm/start_info.h` (struct `hvm_start_info`,
//! `hvm_memmap_table_entry`, `hvm_modlist_entry`), read through the `pvh` crate's types. Multiboot2: see
//! [`multiboot2`].
#![allow(unsafe_code)]

use core::fmt;

pub mod multiboot2;

pub use multiboot2::Multiboot2Error;

/// Most memory-map entries kept; QEMU gives 3–6, Xen a handful. Extra entries are an error.
pub const MAX_REGIONS: usize = 64;
/// Most boot modules (initrd and friends) kept.
pub const MAX_MODULES: usize = 8;

/// Kind of a memory-map range, from `hvm_memmap_table_entry.type` (E820 numbering).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// Usable RAM (E820 type 1).
    Ram,
    /// Reserved (E820 type 2) or an unknown type.
    Reserved,
    /// ACPI reclaimable (type 3).
    AcpiReclaimable,
    /// ACPI NVS (type 4).
    AcpiNvs,
    /// Bad memory (type 5).
    Unusable,
}

impl RegionKind {
    /// Maps an E820 type number to a kind; unknown numbers are `Reserved` (never used as RAM).
    pub fn from_e820(ty: u32) -> Self {
        match ty {
            1 => Self::Ram,
            3 => Self::AcpiReclaimable,
            4 => Self::AcpiNvs,
            5 => Self::Unusable,
            _ => Self::Reserved,
        }
    }
}

/// One physical address range, `[start, start + len)` in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    /// Guest-physical start address (bytes).
    pub start: u64,
    /// Length (bytes).
    pub len: u64,
    /// What the range is.
    pub kind: RegionKind,
}

impl MemoryRegion {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }
}

/// A boot module (e.g. an initrd): a physical byte range plus its own command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Module {
    /// Guest-physical start (bytes).
    pub start: u64,
    /// Size (bytes).
    pub len: u64,
    /// The module's command line, if the loader gave one.
    pub cmdline: Option<&'static str>,
}

impl Module {
    /// The module's bytes (e.g. an initrd archive), `len` bytes from `start`.
    ///
    /// Guest only: boot maps all RAM 1:1 and keeps module ranges out of the frame allocator, so the range is
    /// mapped, readable and never reused for the life of the VM.
    #[cfg(target_os = "none")]
    pub fn bytes(&self) -> &'static [u8] {
        // SAFETY: see above — identity-mapped RAM reserved for the module, never written by us.
        unsafe { core::slice::from_raw_parts(self.start as *const u8, self.len as usize) }
    }
}

/// Which entry point the image was started through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootProtocol {
    /// Xen PVH direct boot (QEMU `-kernel`, Xen, Firecracker, cloud-hypervisor). `start_info` is the
    /// physical address of `hvm_start_info`; `version` its version field (0 or 1).
    Pvh {
        /// Physical address of `hvm_start_info` (EBX at entry).
        start_info: u64,
        /// `hvm_start_info.version` (0 or 1).
        version: u32,
    },
    /// Multiboot2 (GRUB from a disk, through BIOS or UEFI firmware). `mbi` is the physical address of the boot
    /// information, `mbi_len` its `total_size` (bytes); `firmware` what started the loader.
    Multiboot2 {
        /// Physical address of the boot information (EBX at entry).
        mbi: u64,
        /// The boot information's `total_size` (bytes).
        mbi_len: u32,
        /// What started the loader.
        firmware: Firmware,
    },
}

/// The firmware that ran the boot loader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// PC BIOS (SeaBIOS; Hyper-V Gen1, GCE and AWS BIOS boot).
    Bios,
    /// UEFI (OVMF; Hyper-V Gen2): the loader passed EFI tags and exited boot services before the kernel ran.
    Uefi,
}

impl fmt::Display for Firmware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Bios => "BIOS",
            Self::Uefi => "UEFI",
        })
    }
}

/// How the image was entered, for the first boot log line: `PVH`, `Multiboot2 (GRUB 2.06-13+deb12u2, UEFI)`.
pub struct Entry<'a>(&'a BootInfo);

impl fmt::Display for Entry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.protocol {
            BootProtocol::Pvh { .. } => f.write_str("PVH"),
            BootProtocol::Multiboot2 { firmware, .. } => match self.0.loader {
                Some(name) => write!(f, "Multiboot2 ({name}, {firmware})"),
                None => write!(f, "Multiboot2 ({firmware})"),
            },
        }
    }
}

/// Everything the boot protocol told us.
#[derive(Clone)]
pub struct BootInfo {
    /// The entry point used.
    pub protocol: BootProtocol,
    regions: [MemoryRegion; MAX_REGIONS],
    region_count: usize,
    modules: [Module; MAX_MODULES],
    module_count: usize,
    /// Kernel command line (UTF-8; empty when none was given).
    pub cmdline: &'static str,
    /// Physical address of the ACPI RSDP, when the loader gave one (for Multiboot2: of the copy inside the
    /// boot information's ACPI tag).
    pub rsdp: Option<u64>,
    /// The boot loader's name (Multiboot2 tag 2, e.g. `GRUB 2.06-13+deb12u2`), when it gave one.
    pub loader: Option<&'static str>,
}

/// Why a boot structure was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootInfoError {
    /// `hvm_start_info.magic` was not 0x336ec578.
    BadMagic(u32),
    /// More memory-map entries than [`MAX_REGIONS`].
    TooManyRegions(usize),
    /// More modules than [`MAX_MODULES`].
    TooManyModules(usize),
    /// A version-0 start info has no memory map and no E820 fallback here.
    NoMemoryMap,
    /// The command line (or a module or loader string) is not UTF-8.
    CmdlineNotUtf8,
    /// The Multiboot2 boot information is malformed.
    Multiboot2(Multiboot2Error),
}

impl fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic(m) => write!(f, "hvm_start_info magic {m:#x}, expected 0x336ec578"),
            Self::TooManyRegions(n) => write!(f, "memory map has {n} entries, at most {MAX_REGIONS} are supported"),
            Self::TooManyModules(n) => write!(f, "{n} boot modules, at most {MAX_MODULES} are supported"),
            Self::NoMemoryMap => write!(f, "the loader gave no memory map (hvm_start_info version 0)"),
            Self::CmdlineNotUtf8 => write!(f, "the kernel command line is not UTF-8"),
            Self::Multiboot2(e) => write!(f, "Multiboot2 boot information: {e}"),
        }
    }
}

const EMPTY_REGION: MemoryRegion = MemoryRegion { start: 0, len: 0, kind: RegionKind::Reserved };
const EMPTY_MODULE: Module = Module { start: 0, len: 0, cmdline: None };

impl BootInfo {
    /// An empty `BootInfo` for `protocol`, to be filled with [`push_region`](Self::push_region) etc.
    pub const fn new(protocol: BootProtocol) -> Self {
        Self {
            protocol,
            regions: [EMPTY_REGION; MAX_REGIONS],
            region_count: 0,
            modules: [EMPTY_MODULE; MAX_MODULES],
            module_count: 0,
            cmdline: "",
            rsdp: None,
            loader: None,
        }
    }

    /// Appends a memory-map range. Errors: [`BootInfoError::TooManyRegions`].
    pub fn push_region(&mut self, r: MemoryRegion) -> Result<(), BootInfoError> {
        if self.region_count == MAX_REGIONS {
            return Err(BootInfoError::TooManyRegions(self.region_count + 1));
        }
        self.regions[self.region_count] = r;
        self.region_count += 1;
        Ok(())
    }

    /// Appends a memory-map range, extending the last one instead when `r` starts where it ends and has its kind
    /// (UEFI maps split RAM into many descriptors). Errors: [`BootInfoError::TooManyRegions`].
    pub fn push_region_merged(&mut self, r: MemoryRegion) -> Result<(), BootInfoError> {
        if let Some(last) = self.regions[..self.region_count].last_mut() {
            if last.kind == r.kind && last.end() == r.start {
                last.len = last.len.saturating_add(r.len);
                return Ok(());
            }
        }
        self.push_region(r)
    }

    /// Appends a module. Errors: [`BootInfoError::TooManyModules`].
    pub fn push_module(&mut self, m: Module) -> Result<(), BootInfoError> {
        if self.module_count == MAX_MODULES {
            return Err(BootInfoError::TooManyModules(self.module_count + 1));
        }
        self.modules[self.module_count] = m;
        self.module_count += 1;
        Ok(())
    }

    /// The memory map, in loader order.
    pub fn regions(&self) -> &[MemoryRegion] {
        &self.regions[..self.region_count]
    }

    /// The boot modules, in loader order.
    pub fn modules(&self) -> &[Module] {
        &self.modules[..self.module_count]
    }

    /// The entry used, for logs: `PVH` or `Multiboot2 (LOADER, BIOS|UEFI)`.
    pub fn entry(&self) -> Entry<'_> {
        Entry(self)
    }

    /// The physical range `[start, end)` (bytes) of the loader's own structure that the command line, module
    /// strings and RSDP copy point into, which must stay untouched (Multiboot2's boot information); `None` for
    /// PVH, whose strings are reserved one by one.
    pub fn loader_data(&self) -> Option<(u64, u64)> {
        match self.protocol {
            BootProtocol::Pvh { .. } => None,
            BootProtocol::Multiboot2 { mbi, mbi_len, .. } => Some((mbi, mbi + u64::from(mbi_len))),
        }
    }

    /// Total usable RAM (bytes), saturating at `u64::MAX` (a loader's map may list absurd or overlapping regions).
    pub fn ram_bytes(&self) -> u64 {
        self.regions().iter().filter(|r| r.kind == RegionKind::Ram).fold(0, |sum, r| sum.saturating_add(r.len))
    }
}

/// Raw `hvm_start_info` fields, copied out of guest memory by the caller (so this parser never reads
/// memory it was not given). `memmap` and `modules` are the already-copied tables.
pub struct PvhStartInfo<'a> {
    /// Physical address the structure was found at.
    pub paddr: u64,
    /// `magic` (must be `XEN_HVM_START_MAGIC_VALUE` = 0x336ec578).
    pub magic: u32,
    /// `version` (0 or 1; 1 adds the memory map).
    pub version: u32,
    /// `rsdp_paddr` (0 = none).
    pub rsdp_paddr: u64,
    /// The command line bytes up to (not including) the NUL, if any.
    pub cmdline: Option<&'static [u8]>,
    /// `(addr, size, type)` per memory-map entry.
    pub memmap: &'a [(u64, u64, u32)],
    /// `(paddr, size, cmdline)` per module.
    pub modules: &'a [(u64, u64, Option<&'static [u8]>)],
}

/// `XEN_HVM_START_MAGIC_VALUE` from start_info.h.
pub const PVH_MAGIC: u32 = 0x336e_c578;

impl BootInfo {
    /// Builds a `BootInfo` from a PVH start info. Errors: bad magic, no memory map, too many
    /// entries, non-UTF-8 command line.
    pub fn from_pvh(si: &PvhStartInfo<'_>) -> Result<Self, BootInfoError> {
        if si.magic != PVH_MAGIC {
            return Err(BootInfoError::BadMagic(si.magic));
        }
        let mut bi = BootInfo::new(BootProtocol::Pvh { start_info: si.paddr, version: si.version });
        if si.memmap.is_empty() {
            return Err(BootInfoError::NoMemoryMap);
        }
        for &(start, len, ty) in si.memmap {
            bi.push_region(MemoryRegion { start, len, kind: RegionKind::from_e820(ty) })?;
        }
        for &(start, len, cmd) in si.modules {
            let cmdline = match cmd {
                Some(b) => Some(core::str::from_utf8(b).map_err(|_| BootInfoError::CmdlineNotUtf8)?),
                None => None,
            };
            bi.push_module(Module { start, len, cmdline })?;
        }
        if let Some(c) = si.cmdline {
            bi.cmdline = core::str::from_utf8(c).map_err(|_| BootInfoError::CmdlineNotUtf8)?.trim();
        }
        bi.rsdp = (si.rsdp_paddr != 0).then_some(si.rsdp_paddr);
        Ok(bi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn si<'a>(memmap: &'a [(u64, u64, u32)], cmd: Option<&'static [u8]>) -> PvhStartInfo<'a> {
        PvhStartInfo { paddr: 0x1000, magic: PVH_MAGIC, version: 1, rsdp_paddr: 0, cmdline: cmd, memmap, modules: &[] }
    }

    #[test]
    fn parses_qemu_microvm_map() {
        // Recorded from QEMU 10 microvm -m 64M.
        let map = [(0, 0x9fc00, 1), (0x9fc00, 0x400, 2), (0xf0000, 0x10000, 2), (0x100000, 0x3f00000, 1)];
        let bi = BootInfo::from_pvh(&si(&map, Some(b" loglevel=debug -- a b "))).unwrap();
        assert_eq!(bi.regions().len(), 4);
        assert_eq!(bi.regions()[3], MemoryRegion { start: 0x100000, len: 0x3f00000, kind: RegionKind::Ram });
        assert_eq!(bi.ram_bytes(), 0x9fc00 + 0x3f00000);
        assert_eq!(bi.cmdline, "loglevel=debug -- a b");
        assert_eq!(bi.rsdp, None);
    }

    #[test]
    fn rejects_bad_input() {
        let map = [(0, 0x1000, 1)];
        let mut bad = si(&map, None);
        bad.magic = 0xdead;
        assert_eq!(BootInfo::from_pvh(&bad).err(), Some(BootInfoError::BadMagic(0xdead)));
        assert_eq!(BootInfo::from_pvh(&si(&[], None)).err(), Some(BootInfoError::NoMemoryMap));
        assert_eq!(BootInfo::from_pvh(&si(&map, Some(b"\xff\xfe"))).err(), Some(BootInfoError::CmdlineNotUtf8));
        let many = [(0u64, 1u64, 1u32); MAX_REGIONS + 1];
        assert!(matches!(BootInfo::from_pvh(&si(&many, None)), Err(BootInfoError::TooManyRegions(_))));
    }

    #[test]
    fn ram_bytes_saturates() {
        // Found by the pvh_start_info fuzz target: region lengths whose sum passes 2^64 overflowed.
        let map = [(0, u64::MAX - 1, 1), (0x1000, 0x2000, 1)];
        assert_eq!(BootInfo::from_pvh(&si(&map, None)).unwrap().ram_bytes(), u64::MAX);
    }

    #[test]
    fn unknown_e820_type_is_reserved() {
        assert_eq!(RegionKind::from_e820(7), RegionKind::Reserved);
        assert_eq!(RegionKind::from_e820(1), RegionKind::Ram);
    }
}
