//! The packaged raw disk in each cloud's format: `qemu-img convert` for qcow2 (OpenStack, Proxmox), fixed VHD
//! (Azure), VHDX (Hyper-V) and streamOptimized VMDK (vSphere), and GCE's `disk.raw` alone in a gzip'd tar.
//!
//! Sources: QEMU `docs/system/images.rst` and `qemu-img.rst` (format options `subformat`, `force_size`);
//! Azure "Prepare a Windows VHD or VHDX to upload" / "generic Linux" notes (fixed VHD, virtual size a whole
//! number of MiB); Microsoft VHD Image Format Specification 1.0 (the 512-byte footer at the end of the file,
//! cookie "conectix"); Google Compute Engine "Import boot disk images manually" (a file named `disk.raw` in a
//! gzip-compressed tar, oldgnu format, made sparse with GNU tar; size a whole number of GiB); VMware "Virtual Disk Format 5.0"
//! (streamOptimized: compressed grains, what vSphere imports from an OVA).

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::host_tools;

use super::gpt::MIB;

/// One GiB (bytes).
pub const GIB: u64 = 1 << 30;
/// Length of the VHD footer (bytes).
pub const VHD_FOOTER_LEN: u64 = 512;
/// The cookie a VHD footer starts with.
pub const VHD_COOKIE: &[u8; 8] = b"conectix";
/// The one member of a GCE image archive.
pub const GCE_MEMBER: &str = "disk.raw";

/// Output format of `images package --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Raw disk (AWS import, Firecracker-less QEMU, `dd`).
    Raw,
    /// QEMU copy-on-write v3 (OpenStack, Proxmox, libvirt).
    Qcow2,
    /// Fixed VHD with a whole-MiB virtual size (Azure).
    Vhd,
    /// VHDX, dynamic (Hyper-V).
    Vhdx,
    /// streamOptimized VMDK (vSphere, ESXi).
    Vmdk,
    /// GCE: `disk.raw` in a gzip'd tar (oldgnu), the disk a whole number of GiB.
    Gce,
}

impl Format {
    /// All formats, in `--format` order.
    pub const ALL: [Format; 6] = [Format::Raw, Format::Qcow2, Format::Vhd, Format::Vhdx, Format::Vmdk, Format::Gce];

    /// Name as given to `--format`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vhd => "vhd",
            Format::Vhdx => "vhdx",
            Format::Vmdk => "vmdk",
            Format::Gce => "gce",
        }
    }

    /// Who takes this format, for the summary line.
    pub fn clouds(self) -> &'static str {
        match self {
            Format::Raw => "raw disk",
            Format::Qcow2 => "OpenStack, Proxmox, libvirt",
            Format::Vhd => "Azure, fixed",
            Format::Vhdx => "Hyper-V",
            Format::Vmdk => "vSphere, streamOptimized",
            Format::Gce => "Google Compute Engine image archive",
        }
    }

    /// `qemu-img convert -O` arguments, `None` for raw and GCE (no conversion).
    pub fn qemu_img_args(self) -> Option<&'static [&'static str]> {
        match self {
            Format::Raw | Format::Gce => None,
            Format::Qcow2 => Some(&["-O", "qcow2"]),
            // force_size: the virtual size stays exactly the raw size instead of QEMU's CHS rounding.
            Format::Vhd => Some(&["-O", "vpc", "-o", "subformat=fixed,force_size=on"]),
            Format::Vhdx => Some(&["-O", "vhdx", "-o", "subformat=dynamic"]),
            Format::Vmdk => Some(&["-O", "vmdk", "-o", "subformat=streamOptimized"]),
        }
    }

    /// The disk size this format stores for a request of `bytes`: whole MiB everywhere (the VHD rule; the
    /// partition layout needs it too), whole GiB for GCE.
    pub fn disk_bytes(self, bytes: u64) -> u64 {
        let unit = if self == Format::Gce { GIB } else { MIB };
        bytes.div_ceil(unit) * unit
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Format::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| format!("unknown format `{s}` (use raw, qcow2, vhd, vhdx, vmdk or gce)"))
    }
}

/// Failures converting the raw disk.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// qemu-img is missing (the message names qemu-utils), could not run or failed.
    #[error(transparent)]
    QemuImg(#[from] host_tools::ToolError),
    /// An I/O error on a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ConvertError {
    let path = path.to_owned();
    move |source| ConvertError::Io { path, source }
}

/// Runs `qemu-img ARGS` and returns its stdout. Errors: qemu-utils missing, qemu-img failing.
pub fn qemu_img(args: &[&std::ffi::OsStr]) -> Result<String, ConvertError> {
    Ok(String::from_utf8_lossy(&host_tools::QEMU_IMG.run(args)?).into_owned())
}

/// Writes `raw` (a raw disk) to `out` in `format`. For raw the caller renames instead.
/// Errors: qemu-img missing or failing, I/O.
pub fn convert(raw: &Path, out: &Path, format: Format) -> Result<(), ConvertError> {
    match format.qemu_img_args() {
        Some(args) => {
            let mut a: Vec<&std::ffi::OsStr> = vec!["convert".as_ref(), "-f".as_ref(), "raw".as_ref()];
            a.extend(args.iter().map(std::ffi::OsStr::new));
            a.push(raw.as_os_str());
            a.push(out.as_os_str());
            qemu_img(&a).map(drop)
        }
        None if format == Format::Gce => gce_archive(raw, out),
        None => std::fs::copy(raw, out).map(drop).map_err(io(out)),
    }
}

/// Writes `raw` as the single member `disk.raw` of a gzip'd tar at `out` with GNU tar, exactly as GCE's import
/// documentation makes it (`tar --format=oldgnu -Sczf`): sparse, so the zeros of a GiB-sized disk cost nothing.
/// Owner, group and time are zeroed for reproducible archives. Errors: GNU tar (or gzip) missing or failing.
pub fn gce_archive(raw: &Path, out: &Path) -> Result<(), ConvertError> {
    let dir = raw.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = raw
        .file_name()
        .ok_or_else(|| ConvertError::Io { path: raw.to_owned(), source: std::io::Error::other("not a file name") })?;
    let mut args: Vec<&std::ffi::OsStr> = Vec::new();
    for a in ["--format=oldgnu", "-S", "-cz", "--owner=0", "--group=0", "--numeric-owner", "--mtime=@0"] {
        args.push(a.as_ref());
    }
    let transform = format!("--transform=s,.*,{GCE_MEMBER},");
    args.extend([transform.as_ref(), "-f".as_ref(), out.as_os_str(), "-C".as_ref(), dir.as_os_str(), name]);
    host_tools::TAR.run(args)?;
    Ok(())
}

/// The member names of a gzip'd tar (for checks and `inspect`). Errors: I/O, not a gzip'd tar.
pub fn archive_members(path: &Path) -> Result<Vec<(String, u64)>, ConvertError> {
    let f = File::open(path).map_err(io(path))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(f)));
    let mut names = Vec::new();
    for e in tar.entries().map_err(io(path))? {
        let e = e.map_err(io(path))?;
        names.push((e.path().map_err(io(path))?.to_string_lossy().into_owned(), e.size()));
    }
    Ok(names)
}

/// Extracts the member `disk.raw` of a GCE archive to `out`. Errors: I/O, no such member.
pub fn extract_gce_disk(path: &Path, out: &Path) -> Result<(), ConvertError> {
    let f = File::open(path).map_err(io(path))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(f)));
    for e in tar.entries().map_err(io(path))? {
        let mut e = e.map_err(io(path))?;
        if e.path().map_err(io(path))?.to_str() == Some(GCE_MEMBER) {
            // Sparse copy: zero blocks become holes, so a GiB-sized disk costs only its data.
            let dst = File::create(out).map_err(io(out))?;
            static ZEROS: [u8; 1 << 16] = [0; 1 << 16];
            let (mut buf, mut at) = (vec![0u8; 1 << 16], 0u64);
            loop {
                let n = e.read(&mut buf).map_err(io(path))?;
                if n == 0 {
                    break;
                }
                if buf[..n] != ZEROS[..n] {
                    std::os::unix::fs::FileExt::write_all_at(&dst, &buf[..n], at).map_err(io(out))?;
                }
                at += n as u64;
            }
            return dst.set_len(at).map_err(io(out));
        }
    }
    Err(ConvertError::Io { path: path.to_owned(), source: std::io::Error::other("no disk.raw in the archive") })
}

/// Whether `path` ends with a VHD footer (cookie "conectix" in its last 512 bytes).
pub fn has_vhd_footer(path: &Path) -> Result<bool, ConvertError> {
    let mut f = File::open(path).map_err(io(path))?;
    let len = f.metadata().map_err(io(path))?.len();
    if len < VHD_FOOTER_LEN {
        return Ok(false);
    }
    f.seek(SeekFrom::Start(len - VHD_FOOTER_LEN)).map_err(io(path))?;
    let mut cookie = [0u8; 8];
    f.read_exact(&mut cookie).map_err(io(path))?;
    Ok(&cookie == VHD_COOKIE)
}

/// `qemu-img info --output=json` fields: `(format, virtual size in bytes)`. QEMU probes a fixed VHD as raw (it
/// has no header, only the footer), so a raw-looking file ending in a VHD footer is read as `vpc`.
/// Errors: qemu-img missing or failing, output without those fields.
pub fn image_info(path: &Path) -> Result<(String, u64), ConvertError> {
    let mut args: Vec<&std::ffi::OsStr> = vec!["info".as_ref(), "--output=json".as_ref()];
    if has_vhd_footer(path)? {
        args.extend(["-f", "vpc"].map(std::ffi::OsStr::new));
    }
    args.push(path.as_os_str());
    let out = qemu_img(&args)?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| ConvertError::Io {
        path: path.to_owned(),
        source: std::io::Error::other(format!("qemu-img info output: {e}")),
    })?;
    let format = v["format"].as_str().unwrap_or("unknown").to_owned();
    let size = v["virtual-size"].as_u64().ok_or_else(|| ConvertError::Io {
        path: path.to_owned(),
        source: std::io::Error::other("qemu-img info gave no virtual-size"),
    })?;
    Ok((format, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_name_themselves() {
        for f in Format::ALL {
            assert_eq!(f.name().parse::<Format>(), Ok(f));
        }
        assert_eq!(
            "vpc".parse::<Format>().unwrap_err(),
            "unknown format `vpc` (use raw, qcow2, vhd, vhdx, vmdk or gce)"
        );
        assert_eq!(Format::Vhd.qemu_img_args(), Some(&["-O", "vpc", "-o", "subformat=fixed,force_size=on"][..]));
        assert_eq!(Format::Raw.qemu_img_args(), None);
    }

    #[test]
    fn vhd_and_gce_size_rules() {
        // Azure: a whole number of MiB.
        assert_eq!(Format::Vhd.disk_bytes(64 * MIB), 64 * MIB);
        assert_eq!(Format::Vhd.disk_bytes(64 * MIB + 512), 65 * MIB);
        assert_eq!(Format::Qcow2.disk_bytes(1), MIB);
        // GCE: a whole number of GiB.
        assert_eq!(Format::Gce.disk_bytes(64 * MIB), GIB);
        assert_eq!(Format::Gce.disk_bytes(GIB + 1), 2 * GIB);
    }

    #[test]
    fn gce_archive_holds_only_disk_raw() {
        let dir = std::env::temp_dir().join(format!("images-gce-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let raw = dir.join("in.raw"); // renamed to disk.raw in the archive
        let f = File::create(&raw).unwrap();
        f.set_len(4 * MIB).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"GPT!", 512).unwrap();
        let out = dir.join("out.tar.gz");
        gce_archive(&raw, &out).unwrap();
        assert_eq!(archive_members(&out).unwrap(), [("disk.raw".to_owned(), 4 * MIB)]);
        let mut head = [0u8; 512];
        let mut gz = flate2::read::GzDecoder::new(File::open(&out).unwrap());
        gz.read_exact(&mut head).unwrap();
        // GNU tar's oldgnu magic "ustar  \0".
        assert_eq!(&head[257..265], b"ustar  \0");
        let back = dir.join("back.raw");
        extract_gce_disk(&out, &back).unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&raw).unwrap());
        assert!(!has_vhd_footer(&raw).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
