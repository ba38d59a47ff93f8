//! GRUB for the packaged disk: the BIOS core image and the EFI application (`grub-mkimage` from Debian's
//! grub-pc-bin / grub-efi-amd64-bin, with an embedded early config), `grub.cfg` (serial console, no menu,
//! `multiboot2` with the kernel command line), and what `grub-setup` would patch: boot.img in the protective
//! MBR pointed at core.img, and core.img's blocklist naming its own sectors in the BIOS boot partition.
//!
//! Layout facts (GRUB 2.06 `include/grub/i386/pc/boot.h`, `grub-core/boot/i386/pc/boot.S` and `diskboot.S`,
//! `util/setup.c`): boot.img is one sector whose bytes 0x3..0x5a are the BPB area, 0x5c holds the LBA of
//! core.img's first sector (u64), 0x64 the boot drive (0xff: use the drive the BIOS passed in DL), 0x66 a
//! 2-byte jump over the "is DL a hard disk" check that setup replaces with two NOPs for hard disks, 0x1b8..
//! 0x1fe the disk signature and partition table (kept from the disk). core.img starts with diskboot.img, whose
//! last 12 bytes are the first blocklist entry {start LBA u64, sector count u16, load segment u16}, further
//! entries growing downward, a zero entry ending the list; the rest of core.img loads at segment 0x820.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::host_tools::{self, MissingTool};

/// Bytes of the MBR boot code area (the rest is the disk signature and partition table).
pub const MBR_CODE_LEN: usize = 440;
/// Offset of the BPB area in boot.img (zeroed: the disk has no BPB).
const BPB: std::ops::Range<usize> = 0x3..0x5a;
/// Offset of `kernel_sector` (u64 LBA of core.img) in boot.img.
const KERNEL_SECTOR: usize = 0x5c;
/// Offset of `boot_drive` in boot.img.
const BOOT_DRIVE: usize = 0x64;
/// Offset of the drive-check jump in boot.img.
const DRIVE_CHECK: usize = 0x66;
/// Length of one blocklist entry in diskboot.img.
const BLOCKLIST_LEN: usize = 12;
/// Load segment of core.img's second sector (0x800 + 512 / 16).
const CORE_SEGMENT: u16 = 0x820;
/// GRUB's sector size.
const SECTOR: usize = 512;

/// GRUB modules built into the BIOS core image: disk and partition access, FAT, the normal mode that reads
/// grub.cfg (with `test` for its `if`), Multiboot2, the serial terminal.
pub const BIOS_MODULES: &[&str] =
    &["biosdisk", "part_gpt", "fat", "normal", "test", "echo", "multiboot2", "serial", "terminal", "boot"];
/// GRUB modules built into the EFI application (disk access is the firmware's).
pub const EFI_MODULES: &[&str] =
    &["part_gpt", "fat", "normal", "test", "echo", "multiboot2", "serial", "terminal", "boot"];
/// Where grub.cfg lives on the EFI system partition.
pub const CFG_DIR: &str = "boot/grub";
/// Path of the removable-media EFI loader on the ESP (UEFI 2.10 §3.5.1.1), what firmware boots with no
/// boot entries configured.
pub const EFI_LOADER: &str = "EFI/BOOT/BOOTX64.EFI";

/// Failures building or patching GRUB images.
#[derive(Debug, thiserror::Error)]
pub enum GrubError {
    /// A GRUB package is not installed.
    #[error(transparent)]
    Missing(#[from] MissingTool),
    /// grub-mkimage could not run or failed.
    #[error(transparent)]
    Mkimage(#[from] host_tools::ToolError),
    /// core.img is not what grub-mkimage makes for i386-pc.
    #[error("core.img: {0}")]
    BadCore(String),
    /// An I/O error on a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The early config built into both images: a serial console (COM1, 115200 8N1) from the first message on,
/// so a missing grub.cfg is visible on the serial line clouds capture.
pub const EARLY_CONFIG: &str = "serial --unit=0 --speed=115200\nterminal_input serial\nterminal_output serial\n";

/// `grub-mkimage --version`'s version, e.g. `2.06-13+deb12u2`. Errors: grub-common missing or failing.
pub fn version() -> Result<String, GrubError> {
    let out = host_tools::GRUB_MKIMAGE.run(["--version"])?;
    Ok(String::from_utf8_lossy(&out).split_whitespace().last().unwrap_or("unknown").to_owned())
}

/// Runs grub-mkimage for `format` (`i386-pc` or `x86_64-efi`) with modules from `dir`, prefix `prefix`, the
/// [`EARLY_CONFIG`] and `modules`; returns the image bytes. `work` is a scratch directory.
fn mkimage(format: &str, dir: &Path, prefix: &str, modules: &[&str], work: &Path) -> Result<Vec<u8>, GrubError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| GrubError::Io { path, source }
    };
    let cfg = work.join(format!("early-{format}.cfg"));
    std::fs::write(&cfg, EARLY_CONFIG).map_err(io(&cfg))?;
    let out = work.join(format!("grub-{format}.img"));
    let mut args: Vec<&std::ffi::OsStr> = Vec::new();
    for a in ["-O", format, "-p", prefix] {
        args.push(a.as_ref());
    }
    args.extend(["-d".as_ref(), dir.as_os_str(), "-c".as_ref(), cfg.as_os_str(), "-o".as_ref(), out.as_os_str()]);
    args.extend(modules.iter().map(std::ffi::OsStr::new));
    host_tools::GRUB_MKIMAGE.run(args)?;
    std::fs::read(&out).map_err(io(&out))
}

/// GRUB's BIOS core image, reading grub.cfg from partition `esp_index` (1-based) of the disk the BIOS booted
/// (`(,gptN)`: GRUB fills in the boot drive). Errors: grub-pc-bin or grub-common missing, grub-mkimage failing.
pub fn core_img(esp_index: u32, work: &Path) -> Result<Vec<u8>, GrubError> {
    let dir = host_tools::GRUB_PC.dir()?;
    mkimage("i386-pc", &dir, &format!("(,gpt{esp_index})/{CFG_DIR}"), BIOS_MODULES, work)
}

/// GRUB's EFI application (`BOOTX64.EFI`), reading grub.cfg from the partition it was loaded from.
/// Errors: grub-efi-amd64-bin or grub-common missing, grub-mkimage failing.
pub fn efi_app(work: &Path) -> Result<Vec<u8>, GrubError> {
    let dir = host_tools::GRUB_EFI.dir()?;
    mkimage("x86_64-efi", &dir, &format!("/{CFG_DIR}"), EFI_MODULES, work)
}

/// GRUB's boot.img from grub-pc-bin. Errors: missing package, unreadable or not one sector.
pub fn boot_img() -> Result<[u8; SECTOR], GrubError> {
    let path = host_tools::GRUB_PC.require()?;
    let bytes = std::fs::read(&path).map_err(|source| GrubError::Io { path: path.clone(), source })?;
    bytes.try_into().map_err(|b: Vec<u8>| GrubError::Io {
        path,
        source: std::io::Error::other(format!("{} bytes, expected one 512-byte sector", b.len())),
    })
}

/// The MBR boot code: boot.img's first 440 bytes with `kernel_sector` = `core_lba`, the boot drive taken
/// from the BIOS, the hard-disk workaround enabled, and no BPB (what `grub-setup` writes to a fresh GPT disk).
pub fn mbr_boot_code(boot_img: &[u8; SECTOR], core_lba: u64) -> [u8; MBR_CODE_LEN] {
    let mut code = [0u8; MBR_CODE_LEN];
    code.copy_from_slice(&boot_img[..MBR_CODE_LEN]);
    code[BPB].fill(0);
    code[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&core_lba.to_le_bytes());
    code[BOOT_DRIVE] = 0xff;
    code[DRIVE_CHECK..DRIVE_CHECK + 2].copy_from_slice(&[0x90, 0x90]);
    code
}

/// Pads core.img to whole sectors and rewrites its blocklist for being stored contiguously from `first_lba`:
/// one entry {first_lba + 1, sectors - 1, 0x820} and a terminator, as `grub-setup` does when it embeds core.img
/// in a BIOS boot partition. Returns the sector count.
///
/// Errors: [`GrubError::BadCore`] when the image is shorter than two sectors, its blocklist has no terminator,
/// or it has more sectors than a blocklist entry can count.
pub fn patch_core_img(core: &mut Vec<u8>, first_lba: u64) -> Result<u64, GrubError> {
    if core.len() < 2 * SECTOR {
        return Err(GrubError::BadCore(format!("{} bytes, expected at least two sectors", core.len())));
    }
    core.resize(core.len().next_multiple_of(SECTOR), 0);
    let sectors = core.len() / SECTOR;
    let rest = u16::try_from(sectors - 1)
        .map_err(|_| GrubError::BadCore(format!("{sectors} sectors do not fit one blocklist entry")))?;
    let first = SECTOR - BLOCKLIST_LEN;
    // Clear the entries grub-mkimage left (it assumes core.img right after the MBR), down to the terminator.
    let mut at = first;
    loop {
        let len = u16::from_le_bytes([core[at + 8], core[at + 9]]);
        if len == 0 {
            break;
        }
        core[at..at + BLOCKLIST_LEN].fill(0);
        at = at
            .checked_sub(BLOCKLIST_LEN)
            .filter(|&a| a >= BLOCKLIST_LEN)
            .ok_or_else(|| GrubError::BadCore("the blocklist has no terminator".into()))?;
    }
    core[first..first + 8].copy_from_slice(&(first_lba + 1).to_le_bytes());
    core[first + 8..first + 10].copy_from_slice(&rest.to_le_bytes());
    core[first + 10..first + 12].copy_from_slice(&CORE_SEGMENT.to_le_bytes());
    core[first - BLOCKLIST_LEN..first].fill(0);
    Ok(sectors as u64)
}

/// One word of a GRUB script in single quotes (GRUB manual §6.3 "Quoting": no escapes inside; a `'` is
/// written `'\''`).
pub fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// grub.cfg: serial console at 115200, no menu (timeout 0), one entry loading `kernel` (a path on the ESP) with
/// `multiboot2` and the kernel command line's `words` (kernel options, `--`, app arguments; each one GRUB word).
/// GRUB hands the words to the kernel joined by spaces, a word with spaces wrapped in `"`, and `\`, `'`, `"`
/// escaped with a backslash, which the kernel undoes (`libos::bootinfo::multiboot2::unescape_grub`).
pub fn config(app: &str, kernel: &str, words: &[String]) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "# Written by `images package`: boots {app} through Multiboot2, from BIOS and UEFI alike.");
    c.push_str("serial --unit=0 --speed=115200\nterminal_input serial\nterminal_output serial\n");
    c.push_str("set timeout=0\nset timeout_style=hidden\n");
    let _ = writeln!(c, "menuentry {} {{", quote(&format!("Zirvium {app}")));
    let mut line = format!("    multiboot2 {}", quote(kernel));
    for w in words {
        line.push(' ');
        line.push_str(&quote(w));
    }
    let _ = writeln!(c, "{line}");
    c.push_str("    boot\n}\n");
    c
}

/// The kernel command line the guest reads for GRUB `words`: joined by spaces, a word with spaces in `"`
/// (after the kernel undid GRUB's escapes; what `images run` passes with `-append` for the same options).
pub fn guest_command_line(words: &[String]) -> String {
    let quoted = words.iter().map(|w| if w.contains(' ') { format!("\"{w}\"") } else { w.clone() });
    quoted.collect::<Vec<_>>().join(" ")
}

/// Reads the `multiboot2` line of a grub.cfg written by [`config`]: `(kernel path, the guest's command line)`.
pub fn parse_config(cfg: &str) -> Option<(String, String)> {
    let line = cfg.lines().map(str::trim).find(|l| l.starts_with("multiboot2 "))?;
    let mut words = unquote_words(line.strip_prefix("multiboot2 ")?).into_iter();
    let kernel = words.next()?;
    Some((kernel, guest_command_line(&words.collect::<Vec<_>>())))
}

/// Splits GRUB-script words, removing single quotes (with `'\''` for a quote) — the inverse of [`quote`].
fn unquote_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if !quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A boot.img-shaped sector: a jump, the BPB area, the fields and the drive-check jump as GRUB 2.06 ships.
    fn fake_boot_img() -> [u8; SECTOR] {
        let mut b = [0u8; SECTOR];
        b[..3].copy_from_slice(&[0xeb, 0x63, 0x90]);
        b[0x10] = 0x55; // something in the BPB area
        b[0x5a..0x5c].copy_from_slice(&0x8000u16.to_le_bytes());
        b[KERNEL_SECTOR] = 1;
        b[BOOT_DRIVE] = 0xff;
        b[DRIVE_CHECK..DRIVE_CHECK + 2].copy_from_slice(&[0xeb, 0x05]);
        b[0x180..0x185].copy_from_slice(b"GRUB ");
        b[0x1b8] = 0x77; // disk signature area: not part of the boot code
        b[510..].copy_from_slice(&[0x55, 0xaa]);
        b
    }

    #[test]
    fn mbr_boot_code_points_at_core_img() {
        let code = mbr_boot_code(&fake_boot_img(), 2048);
        assert_eq!(code.len(), 440);
        assert_eq!(&code[..3], &[0xeb, 0x63, 0x90]);
        assert!(code[BPB].iter().all(|&b| b == 0), "BPB cleared");
        assert_eq!(&code[0x5a..0x5c], &[0x00, 0x80], "kernel_address untouched");
        assert_eq!(u64::from_le_bytes(code[0x5c..0x64].try_into().unwrap()), 2048);
        assert_eq!((code[0x64], code[0x66], code[0x67]), (0xff, 0x90, 0x90));
        assert_eq!(&code[0x180..0x185], b"GRUB ");
    }

    /// A core.img-shaped buffer: diskboot.img's default blocklist {2, n - 1, 0x820} and a terminator.
    fn fake_core(sectors: usize, tail: usize) -> Vec<u8> {
        let mut c = vec![0xaau8; (sectors - 1) * SECTOR + tail];
        c[..SECTOR].fill(0);
        let first = SECTOR - BLOCKLIST_LEN;
        c[first..first + 8].copy_from_slice(&2u64.to_le_bytes());
        c[first + 8..first + 10].copy_from_slice(&((sectors - 1) as u16).to_le_bytes());
        c[first + 10..first + 12].copy_from_slice(&0x820u16.to_le_bytes());
        c
    }

    #[test]
    fn core_img_blocklist_names_its_sectors() {
        let mut core = fake_core(301, 100);
        let sectors = patch_core_img(&mut core, 2048).unwrap();
        assert_eq!((sectors, core.len()), (301, 301 * SECTOR));
        let e = &core[500..512];
        assert_eq!(u64::from_le_bytes(e[..8].try_into().unwrap()), 2049);
        assert_eq!(u16::from_le_bytes([e[8], e[9]]), 300);
        assert_eq!(u16::from_le_bytes([e[10], e[11]]), 0x820);
        assert!(core[488..500].iter().all(|&b| b == 0), "terminator");
        assert!(core[301 * SECTOR - 412..].iter().all(|&b| b == 0), "padding is zero");
        // Stale extra entries from an earlier placement are cleared.
        let mut core = fake_core(4, SECTOR);
        core[488..496].copy_from_slice(&9u64.to_le_bytes());
        core[496..498].copy_from_slice(&1u16.to_le_bytes());
        patch_core_img(&mut core, 100).unwrap();
        assert!(core[476..500].iter().all(|&b| b == 0));
        assert_eq!(u64::from_le_bytes(core[500..508].try_into().unwrap()), 101);
    }

    #[test]
    fn core_img_errors() {
        assert!(matches!(patch_core_img(&mut vec![0; 600], 1), Err(GrubError::BadCore(_))));
        let mut no_end = vec![1u8; 4 * SECTOR];
        let e = patch_core_img(&mut no_end, 1).unwrap_err();
        assert_eq!(e.to_string(), "core.img: the blocklist has no terminator");
    }

    #[test]
    fn config_quotes_the_command_line() {
        let words: Vec<String> = ["loglevel=debug", "--", "message=a b", "it's"].map(String::from).to_vec();
        let c = config("httpd", "/zirvium/httpd.elf", &words);
        assert!(c.contains("terminal_output serial\n"), "{c}");
        assert!(c.contains("set timeout=0\n"), "{c}");
        assert!(
            c.contains(r"    multiboot2 '/zirvium/httpd.elf' 'loglevel=debug' '--' 'message=a b' 'it'\''s'"),
            "{c}"
        );
        assert_eq!(
            parse_config(&c),
            Some(("/zirvium/httpd.elf".to_owned(), "loglevel=debug -- \"message=a b\" it's".to_owned()))
        );
        assert_eq!(parse_config("menuentry x {\n boot\n}\n"), None);
        assert_eq!(config("hello", "/k", &[]).lines().find(|l| l.contains("multiboot2")), Some("    multiboot2 '/k'"));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("a"), "'a'");
        assert_eq!(quote("a'b"), r"'a'\''b'");
        assert_eq!(unquote_words(r"'a b' c 'd'\''e'"), ["a b", "c", "d'e"]);
        assert_eq!(guest_command_line(&["a".into(), "b c".into()]), "a \"b c\"");
    }
}
