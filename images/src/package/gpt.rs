//! The GPT disk `images package` writes: the layout (which partitions, where, how big; pure, host-tested) and
//! the partition table itself, written with the `gpt` crate (protective MBR, primary and backup headers and
//! entry arrays with their CRC32s).
//!
//! Source: UEFI Specification 2.10 §5.2.3 (protective MBR), §5.3 (GPT header at LBA 1, 128 entries of 128
//! bytes from LBA 2, backup at the last LBA), §5.3.3 (partition type GUIDs: EFI system partition
//! C12A7328-F81F-11D2-BA4B-00A0C93EC93B); GRUB manual §4.4 "BIOS installation" (BIOS boot partition,
//! 21686148-6449-6E6F-744E-656564454649, holding core.img).
//!
//! Layout, 512-byte sectors, everything on 1 MiB boundaries (what clouds and partitioning tools expect):
//! `[0, 1 MiB)` protective MBR + primary GPT; BIOS boot partition (1 MiB, `--boot bios|both`); EFI system
//! partition (FAT, the boot loaders, grub.cfg and the kernel); optional `zirvium-data` partition (FAT, the
//! guest's `/data`) taking the rest; the last MiB holds the backup GPT.

use std::collections::BTreeMap;
use std::fs::File;

use gpt::partition_types::{OperatingSystem, Type};

/// Sector size the images use (bytes).
pub const SECTOR: u64 = 512;
/// Partition alignment and size granule (bytes).
pub const MIB: u64 = 1 << 20;
/// Size of the BIOS boot partition (bytes): GRUB's core.img must fit (BIOS GRUB refuses more than 0x78000 -
/// 0x9000 = 444 KiB; ours is ~150 KiB).
pub const BIOS_BOOT_BYTES: u64 = MIB;
/// Smallest EFI system partition (bytes): 16 MiB gives FAT16 with 2 KiB clusters.
pub const MIN_ESP_BYTES: u64 = 16 * MIB;

/// Partition type GUID of Zirvium's data partition (FAT, mounted at `/data` by the guest); chosen for Zirvium
/// (random version-4 GUID). The guest also accepts any partition named [`DATA_NAME`].
pub const DATA_TYPE_GUID: &str = "280FD53C-11F1-417A-9BB9-14BDED155400";
/// GPT partition name of the data partition.
pub const DATA_NAME: &str = "zirvium-data";
/// GPT partition name of the EFI system partition.
pub const ESP_NAME: &str = "EFI system partition";
/// GPT partition name of the BIOS boot partition.
pub const BIOS_BOOT_NAME: &str = "BIOS boot partition";

/// A partition's place: `[first_lba, first_lba + sectors)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// First sector (LBA).
    pub first_lba: u64,
    /// Length (sectors).
    pub sectors: u64,
}

impl Extent {
    /// Byte offset of the first sector.
    pub fn offset(&self) -> u64 {
        self.first_lba * SECTOR
    }

    /// Length (bytes).
    pub fn bytes(&self) -> u64 {
        self.sectors * SECTOR
    }

    /// Last sector (inclusive, as GPT stores it).
    pub fn last_lba(&self) -> u64 {
        self.first_lba + self.sectors - 1
    }
}

/// What the disk must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayoutRequest {
    /// Disk size asked for (bytes); rounded up to whole MiB.
    pub disk_bytes: u64,
    /// Whether a BIOS boot partition is needed.
    pub bios: bool,
    /// Bytes the EFI system partition must hold (files, before FAT overhead).
    pub esp_payload: u64,
    /// Bytes the data partition must hold, `None` for no data partition.
    pub data_payload: Option<u64>,
}

/// Where each partition goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Disk size (bytes, whole MiB).
    pub disk_bytes: u64,
    /// BIOS boot partition, when BIOS boot was asked for.
    pub bios_boot: Option<Extent>,
    /// EFI system partition (always: it holds grub.cfg and the kernel for both firmware kinds).
    pub esp: Extent,
    /// Data partition: the rest of the disk.
    pub data: Option<Extent>,
}

/// The disk is too small for what it must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a {disk_bytes}-byte disk is too small: the partitions need {needed} bytes ({} MiB); use --size {}M or more", needed / MIB, needed / MIB)]
pub struct TooSmall {
    /// The size given (bytes).
    pub disk_bytes: u64,
    /// The smallest size that fits (bytes, whole MiB).
    pub needed: u64,
}

/// `n` rounded up to whole MiB.
pub fn round_up_mib(n: u64) -> u64 {
    n.div_ceil(MIB) * MIB
}

/// Bytes a FAT volume needs to hold `payload` bytes of files: the payload plus an eighth for cluster slack,
/// directories and the FATs, plus 1 MiB, rounded up to whole MiB.
pub fn fat_bytes_for(payload: u64) -> u64 {
    round_up_mib(payload + payload / 8 + MIB)
}

/// Plans the partitions of `req`. Errors: [`TooSmall`] with the size that would fit.
pub fn plan(req: &LayoutRequest) -> Result<Layout, TooSmall> {
    let disk_bytes = round_up_mib(req.disk_bytes);
    let lba = |bytes: u64| bytes / SECTOR;
    // The first MiB holds the protective MBR and the primary GPT (34 sectors), the last MiB the backup GPT.
    let mut at = MIB;
    let bios_boot = req.bios.then(|| {
        let e = Extent { first_lba: lba(at), sectors: lba(BIOS_BOOT_BYTES) };
        at += BIOS_BOOT_BYTES;
        e
    });
    let esp_bytes = fat_bytes_for(req.esp_payload).max(MIN_ESP_BYTES);
    let esp = Extent { first_lba: lba(at), sectors: lba(esp_bytes) };
    at += esp_bytes;
    let data_min = req.data_payload.map(fat_bytes_for);
    let needed = at + data_min.unwrap_or(0) + MIB;
    if disk_bytes < needed {
        return Err(TooSmall { disk_bytes: req.disk_bytes, needed });
    }
    let data = data_min.map(|_| Extent { first_lba: lba(at), sectors: lba(disk_bytes - MIB - at) });
    Ok(Layout { disk_bytes, bios_boot, esp, data })
}

fn part_type(guid: &str) -> Type {
    // The GUIDs are constants of this module, valid by construction (checked in the tests).
    Type { guid: guid.parse().unwrap_or_default(), os: OperatingSystem::None }
}

/// Writes the protective MBR (with `boot_code` as its first 440 bytes: GRUB's boot.img, or zeros) and both
/// GPTs describing `layout` to `file`, which is already `layout.disk_bytes` long.
///
/// Errors: I/O errors and the `gpt` crate's refusals as `io::Error`s.
pub fn write(file: &File, layout: &Layout, boot_code: &[u8; 440]) -> std::io::Result<()> {
    let err = |e: gpt::GptError| std::io::Error::other(format!("writing the GPT: {e}"));
    let sectors = layout.disk_bytes / SECTOR;
    let mut mbr = gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(sectors - 1).unwrap_or(u32::MAX));
    mbr.set_bootcode(*boot_code);
    let mut dev = file;
    mbr.overwrite_lba0(&mut dev).map_err(|e| std::io::Error::other(format!("writing the protective MBR: {e}")))?;
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .create_from_device(dev, None)
        .map_err(err)?;
    let mut parts = BTreeMap::new();
    let mut add = |e: Extent, ty: Type, name: &str, flags: u64| {
        let id = parts.len() as u32 + 1;
        parts.insert(
            id,
            gpt::partition::Partition {
                part_type_guid: ty,
                part_guid: uuid::Uuid::new_v4(),
                first_lba: e.first_lba,
                last_lba: e.last_lba(),
                flags,
                name: name.to_owned(),
            },
        );
    };
    if let Some(e) = layout.bios_boot {
        add(e, gpt::partition_types::BIOS, BIOS_BOOT_NAME, 0);
    }
    add(layout.esp, gpt::partition_types::EFI, ESP_NAME, 0);
    if let Some(e) = layout.data {
        add(e, part_type(DATA_TYPE_GUID), DATA_NAME, 0);
    }
    disk.update_partitions(parts).map_err(err)?;
    disk.write().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(disk_mib: u64, bios: bool, esp: u64, data: Option<u64>) -> LayoutRequest {
        LayoutRequest { disk_bytes: disk_mib * MIB, bios, esp_payload: esp, data_payload: data }
    }

    #[test]
    fn both_firmwares_with_data() {
        let l = plan(&req(64, true, 2_000_000, Some(10_000))).unwrap();
        assert_eq!(l.bios_boot, Some(Extent { first_lba: 2048, sectors: 2048 }));
        assert_eq!(l.esp, Extent { first_lba: 4096, sectors: 16 * 2048 });
        // The data partition runs to the last MiB, which keeps the backup GPT.
        let data = l.data.unwrap();
        assert_eq!(data, Extent { first_lba: 18 * 2048, sectors: (64 - 18 - 1) * 2048 });
        assert_eq!(data.offset() + data.bytes(), 63 * MIB);
        assert_eq!(l.disk_bytes, 64 * MIB);
    }

    #[test]
    fn uefi_only_has_no_bios_boot_partition() {
        let l = plan(&req(64, false, 1000, None)).unwrap();
        assert_eq!((l.bios_boot, l.data), (None, None));
        assert_eq!(l.esp.first_lba, 2048);
    }

    #[test]
    fn sizes_round_up_to_whole_mib() {
        assert_eq!(round_up_mib(1), MIB);
        assert_eq!(round_up_mib(MIB), MIB);
        assert_eq!(round_up_mib(MIB + 1), 2 * MIB);
        let l = plan(&LayoutRequest { disk_bytes: 40 * MIB + 512, bios: true, esp_payload: 0, data_payload: None });
        assert_eq!(l.unwrap().disk_bytes, 41 * MIB);
        // A big payload grows the ESP past its minimum: 20 MiB + 1/8 + 1 MiB = 23.5 -> 24 MiB.
        assert_eq!(fat_bytes_for(20 * MIB), 24 * MIB);
        assert_eq!(plan(&req(64, true, 20 * MIB, None)).unwrap().esp.bytes(), 24 * MIB);
    }

    #[test]
    fn too_small_names_the_size_needed() {
        // 1 + 1 + 16 + 1 MiB without data.
        assert_eq!(plan(&req(18, true, 0, None)), Err(TooSmall { disk_bytes: 18 * MIB, needed: 19 * MIB }));
        assert!(plan(&req(19, true, 0, None)).is_ok());
        // Data of 30 MiB needs 30 + 3.75 + 1 -> 35 MiB more.
        let e = plan(&req(40, true, 0, Some(30 * MIB))).unwrap_err();
        assert_eq!(e.needed, (1 + 1 + 16 + 35 + 1) * MIB);
        assert_eq!(
            e.to_string(),
            "a 41943040-byte disk is too small: the partitions need 56623104 bytes (54 MiB); use --size 54M or more"
        );
    }

    #[test]
    fn writes_a_table_the_gpt_crate_reads_back() {
        let path = std::env::temp_dir().join(format!("images-gpt-{}", std::process::id()));
        let f = File::options().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        let l = plan(&req(64, true, 0, Some(0))).unwrap();
        f.set_len(l.disk_bytes).unwrap();
        let mut code = [0u8; 440];
        code[0] = 0xeb;
        write(&f, &l, &code).unwrap();
        let disk = gpt::GptConfig::new().open(&path).unwrap();
        let parts: Vec<_> = disk.partitions().values().map(|p| (p.name.clone(), p.first_lba, p.last_lba)).collect();
        assert_eq!(
            parts,
            [
                (BIOS_BOOT_NAME.to_owned(), 2048, 4095),
                (ESP_NAME.to_owned(), 4096, 36863),
                (DATA_NAME.to_owned(), 36864, 63 * 2048 - 1)
            ]
        );
        assert_eq!(disk.partitions()[&3].part_type_guid.guid.to_string().to_uppercase(), DATA_TYPE_GUID);
        let mut lba0 = [0u8; 512];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut lba0, 0).unwrap();
        assert_eq!((lba0[0], lba0[450], &lba0[510..]), (0xeb, 0xee, &[0x55, 0xaa][..]));
        std::fs::remove_file(&path).unwrap();
    }
}
