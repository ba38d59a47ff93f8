//! xl domain configuration files for a Zirvium app as a PVH domU (Xen 4.17 `xl.cfg(5)`,
//! `xl-disk-configuration(5)`, `xl-network-configuration(5)`).
//!
//! A config is `KEY = VALUE` lines; strings are quoted with `"` or `'` (libxlu's `libxlu_cfg_l.l`), lists are
//! `[ 'a', 'b' ]`. Values this module cannot quote without escapes (a string holding both quote characters, a
//! backslash or a control character) are refused rather than escaped: libxlu's escapes differ between versions.

use std::fmt;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Default bridge of the vif: the one the nested harness's dom0 creates (and the usual name on Xen hosts).
pub const DEFAULT_BRIDGE: &str = "xenbr0";

/// Default domU memory in MiB, as the contract's QEMU `-m 64M`.
pub const DEFAULT_MEMORY_MIB: u32 = 64;

/// A MAC address (IEEE 802, 6 bytes), written `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// A locally stable MAC in Xen's OUI 00:16:3e (the prefix `xl` itself uses for random vif MACs,
    /// xl-network-configuration(5) "mac"), whose last three bytes are taken from `seed` (an FNV-1a hash), so one
    /// app gets the same MAC, and the same DHCP lease, on every run.
    pub fn xen_for(seed: &str) -> Mac {
        let mut h: u32 = 0x811c_9dc5;
        for b in seed.bytes() {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        let [_, a, b, c] = h.to_be_bytes();
        // Keep the first byte below 0x80 so the address never looks like one of xl's random ones (xl uses the
        // full range) and stays unicast/global as the OUI requires.
        Mac([0x00, 0x16, 0x3e, a & 0x7f, b, c])
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

/// One network interface (`vif = [ 'bridge=B,mac=M' ]`): netback in dom0 plugs it into `bridge`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vif {
    /// The dom0 bridge the backend interface joins (vif-bridge hotplug script).
    pub bridge: String,
    /// The guest's MAC address.
    pub mac: Mac,
}

/// One virtual disk (`disk = [ 'format=raw,vdev=xvdX,access=rw,backendtype=phy,target=PATH' ]`), served by
/// blkback. A regular file as target gets a loop device from the `block` hotplug script; a block device (such as
/// the nested dom0's `/dev/vda`) is used as is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    /// The raw image or block device, as dom0 sees it.
    pub target: PathBuf,
    /// `rw` when true, `ro` otherwise.
    pub writable: bool,
}

/// Everything an xl config for one Zirvium domU says. [`DomainConfig::render`] writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainConfig {
    /// Domain name (`name`): 1..=64 characters of `[A-Za-z0-9_.-]`.
    pub name: String,
    /// The app's ELF with its PVH entry note (`kernel`), as dom0 sees it.
    pub kernel: PathBuf,
    /// Guest RAM in MiB (`memory`).
    pub memory_mib: u32,
    /// vCPUs (`vcpus`), 1..=255.
    pub vcpus: u16,
    /// The kernel command line (`cmdline`): kernel options, `--`, app arguments.
    pub cmdline: String,
    /// A boot module (`ramdisk`), e.g. a tar archive the guest mounts at `/`; PVH passes it in the start info's
    /// module list, as QEMU's `-initrd` does.
    pub ramdisk: Option<PathBuf>,
    /// Network interfaces, in order (the first is the guest's `device/vif/0`).
    pub vifs: Vec<Vif>,
    /// Disks, in order: `xvda`, `xvdb`, ...
    pub disks: Vec<Disk>,
}

/// Why a config cannot be written; each message names the value to change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum XlError {
    /// The domain name is empty, too long or has characters xl or file names would trip over.
    #[error("domain name `{0}`: use 1 to 64 letters, digits, `_`, `.` or `-`")]
    Name(String),
    /// A string has a backslash, a control character, or both `'` and `"`.
    #[error("{what} {value:?} cannot be written in an xl config: it may not hold a backslash, a control character, or both `'` and `\"`")]
    Unquotable {
        /// Which setting.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// A list item (bridge name, disk path) has a `,` before the last field, which xl would split on.
    #[error("{what} {value:?}: xl splits device specifications on `,`; use a value without one")]
    Comma {
        /// Which setting.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// Memory or vCPU count out of range.
    #[error("{what} {value}: expected {range}")]
    Range {
        /// Which setting.
        what: &'static str,
        /// The value.
        value: u64,
        /// The accepted range, for the message.
        range: &'static str,
    },
    /// More disks than this module names (`xvda`..`xvdz`).
    #[error("{0} disks: at most 26 (xvda..xvdz)")]
    TooManyDisks(usize),
}

/// Checks a domain name: 1..=64 of `[A-Za-z0-9_.-]` (it also names dom0's console log file).
pub fn check_name(name: &str) -> Result<(), XlError> {
    let ok = (1..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(XlError::Name(name.to_owned()))
    }
}

/// `value` as an xl config string: in `"..."`, or in `'...'` when it holds a `"`. See [`XlError::Unquotable`].
pub fn quote(what: &'static str, value: &str) -> Result<String, XlError> {
    let bad = value.chars().any(|c| c == '\\' || c.is_control());
    if !bad && !value.contains('"') {
        Ok(format!("\"{value}\""))
    } else if !bad && !value.contains('\'') {
        Ok(format!("'{value}'"))
    } else {
        Err(XlError::Unquotable { what, value: value.to_owned() })
    }
}

fn path_str<'a>(what: &'static str, path: &'a Path) -> Result<&'a str, XlError> {
    path.to_str().ok_or_else(|| XlError::Unquotable { what, value: path.to_string_lossy().into_owned() })
}

impl DomainConfig {
    /// The xl config text, one setting per line, ending with a newline. `on_poweroff`, `on_reboot` and
    /// `on_crash` are all `destroy`: the domain's end is final, and `xl create -F` reports its shutdown reason
    /// before exiting (see [`super::status`]). Errors: see [`XlError`].
    pub fn render(&self) -> Result<String, XlError> {
        check_name(&self.name)?;
        if !(1..=1024 * 1024).contains(&self.memory_mib) {
            return Err(XlError::Range { what: "memory", value: self.memory_mib.into(), range: "1..=1048576 MiB" });
        }
        if !(1..=255).contains(&self.vcpus) {
            return Err(XlError::Range { what: "vcpus", value: self.vcpus.into(), range: "1..=255" });
        }
        if self.disks.len() > 26 {
            return Err(XlError::TooManyDisks(self.disks.len()));
        }
        let mut out = String::new();
        // Writing to a String cannot fail: the `let _` below drop `fmt::Result`s that are always `Ok`.
        let _ = writeln!(out, "# Zirvium app as a Xen PVH domU; written by `images xl-config` (images/src/xen/xl.rs).");
        let _ = writeln!(out, "name = {}", quote("name", &self.name)?);
        let _ = writeln!(out, "type = \"pvh\"");
        let _ = writeln!(out, "kernel = {}", quote("kernel", path_str("kernel", &self.kernel)?)?);
        if !self.cmdline.is_empty() {
            let _ = writeln!(out, "cmdline = {}", quote("cmdline", &self.cmdline)?);
        }
        if let Some(ramdisk) = &self.ramdisk {
            let _ = writeln!(out, "ramdisk = {}", quote("ramdisk", path_str("ramdisk", ramdisk)?)?);
        }
        let _ = writeln!(out, "memory = {}", self.memory_mib);
        let _ = writeln!(out, "vcpus = {}", self.vcpus);
        if !self.vifs.is_empty() {
            let mut items = Vec::new();
            for vif in &self.vifs {
                if vif.bridge.contains(',') || vif.bridge.contains('=') {
                    return Err(XlError::Comma { what: "bridge", value: vif.bridge.clone() });
                }
                items.push(quote("bridge", &format!("bridge={},mac={}", vif.bridge, vif.mac))?);
            }
            let _ = writeln!(out, "vif = [ {} ]", items.join(", "));
        }
        if !self.disks.is_empty() {
            let mut items = Vec::new();
            for (i, disk) in self.disks.iter().enumerate() {
                // `target=` comes last: xl-disk-configuration(5) lets it hold any character but the quotes.
                let access = if disk.writable { "rw" } else { "ro" };
                let vdev = char::from(b'a' + i as u8); // i < 26, checked above
                let target = path_str("disk", &disk.target)?;
                let spec = format!("format=raw,vdev=xvd{vdev},access={access},backendtype=phy,target={target}");
                items.push(quote("disk", &spec)?);
            }
            let _ = writeln!(out, "disk = [ {} ]", items.join(", "));
        }
        let _ = writeln!(out, "on_poweroff = \"destroy\"");
        let _ = writeln!(out, "on_reboot = \"destroy\"");
        let _ = writeln!(out, "on_crash = \"destroy\"");
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DomainConfig {
        DomainConfig {
            name: "zirvium-httpd".into(),
            kernel: "/images/httpd".into(),
            memory_mib: 64,
            vcpus: 1,
            cmdline: "loglevel=debug -- \"message=a b\"".into(),
            ramdisk: Some("/images/httpd.tar".into()),
            vifs: vec![Vif { bridge: "xenbr0".into(), mac: Mac([0, 0x16, 0x3e, 1, 2, 3]) }],
            disks: vec![Disk { target: "/dev/vda".into(), writable: true }],
        }
    }

    #[test]
    fn renders_every_setting() {
        let want = "# Zirvium app as a Xen PVH domU; written by `images xl-config` (images/src/xen/xl.rs).\n\
                    name = \"zirvium-httpd\"\n\
                    type = \"pvh\"\n\
                    kernel = \"/images/httpd\"\n\
                    cmdline = 'loglevel=debug -- \"message=a b\"'\n\
                    ramdisk = \"/images/httpd.tar\"\n\
                    memory = 64\n\
                    vcpus = 1\n\
                    vif = [ \"bridge=xenbr0,mac=00:16:3e:01:02:03\" ]\n\
                    disk = [ \"format=raw,vdev=xvda,access=rw,backendtype=phy,target=/dev/vda\" ]\n\
                    on_poweroff = \"destroy\"\n\
                    on_reboot = \"destroy\"\n\
                    on_crash = \"destroy\"\n";
        assert_eq!(config().render().unwrap(), want);
    }

    #[test]
    fn minimal_config_has_no_device_lists() {
        let c = DomainConfig { cmdline: String::new(), ramdisk: None, vifs: vec![], disks: vec![], ..config() };
        let text = c.render().unwrap();
        assert!(!text.contains("vif") && !text.contains("disk") && !text.contains("cmdline"), "{text}");
        assert!(!text.contains("ramdisk"), "{text}");
    }

    #[test]
    fn second_disk_is_xvdb_and_read_only_is_ro() {
        let mut c = config();
        c.disks.push(Disk { target: "/srv/b, c.img".into(), writable: false });
        let text = c.render().unwrap();
        assert!(text.contains(", \"format=raw,vdev=xvdb,access=ro,backendtype=phy,target=/srv/b, c.img\" ]"), "{text}");
    }

    #[test]
    fn refuses_what_it_cannot_write() {
        let mut c = config();
        c.cmdline = "a\"b'c".into();
        assert_eq!(c.render(), Err(XlError::Unquotable { what: "cmdline", value: "a\"b'c".into() }));
        c = config();
        c.kernel = "/x\\y".into();
        assert!(matches!(c.render(), Err(XlError::Unquotable { what: "kernel", .. })));
        c = config();
        c.name = "a b".into();
        assert_eq!(c.render(), Err(XlError::Name("a b".into())));
        c = config();
        c.vifs[0].bridge = "br,x".into();
        assert_eq!(c.render(), Err(XlError::Comma { what: "bridge", value: "br,x".into() }));
        c = config();
        c.memory_mib = 0;
        assert!(matches!(c.render(), Err(XlError::Range { what: "memory", value: 0, .. })));
        c = config();
        c.vcpus = 0;
        assert!(matches!(c.render(), Err(XlError::Range { what: "vcpus", .. })));
        c = config();
        c.disks = vec![c.disks[0].clone(); 27];
        assert_eq!(c.render(), Err(XlError::TooManyDisks(27)));
        assert!(XlError::Name("a b".into()).to_string().contains("letters, digits"));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("x", "plain").unwrap(), "\"plain\"");
        assert_eq!(quote("x", "say \"hi\"").unwrap(), "'say \"hi\"'");
        assert_eq!(quote("x", "it's").unwrap(), "\"it's\"");
        assert!(quote("x", "a\nb").is_err());
    }

    #[test]
    fn macs_are_stable_xen_ouis() {
        let a = Mac::xen_for("httpd");
        assert_eq!(a, Mac::xen_for("httpd"));
        assert_ne!(a, Mac::xen_for("hello"));
        assert_eq!(a.0[..3], [0x00, 0x16, 0x3e]);
        assert!(a.0[3] < 0x80);
        assert_eq!(Mac([0, 0x16, 0x3e, 0xab, 0, 0xff]).to_string(), "00:16:3e:ab:00:ff");
    }
}
