//! Zirvium apps as Xen PVH domUs: xl configs, and a real Xen 4.17 host nested under QEMU TCG for machines that
//! are not a Xen dom0 (the recipe of `shared/xen-host`, rebuilt here from Debian packages).
//!
//! - [`xl`]: the domU's xl config (`images xl-config`).
//! - [`host`]: Debian's Xen, dom0 kernel and tools, fetched once into `target/xen-host/`.
//! - [`dom0`]: dom0's initramfs (cpio), with `/init` and `run-domu` from `images/xen/`.
//! - [`nested`]: the QEMU command line of Xen + dom0.
//! - [`console`]: what the lines of Xen's serial console mean; [`status`]: the domU's exit status.
//! - [`run`]: `images run --hypervisor xen`, on a dom0 (`xl` on `PATH`) or nested.

pub mod console;
pub mod dom0;
pub mod host;
pub mod nested;
pub mod run;
pub mod status;
pub mod xl;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::forward::PortForward;
pub use host::{HostError, XenHost};
pub use nested::{NestedOptions, PathWithSpace};
pub use xl::{DomainConfig, XlError};

/// The nested dom0's path of the domU's boot module.
pub const NESTED_RAMDISK: &str = "/images/ramdisk";

/// Where the domU's dom0 is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dom0Kind {
    /// This machine is dom0 (`xl` on `PATH`): host paths are dom0 paths.
    Local,
    /// The nested harness's dom0: the app is `/images/<file>` in its initramfs, disks are its `/dev/vdX`.
    Nested,
}

/// A Zirvium app to run as a PVH domU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Domu {
    /// The app's package name, e.g. `httpd`; the domain is [`Domu::name`].
    pub app: String,
    /// The app's ELF on this machine.
    pub kernel: PathBuf,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// vCPUs.
    pub vcpus: u16,
    /// Kernel command line: kernel options, `--`, app arguments (as for QEMU's `-append`).
    pub cmdline: String,
    /// The bridge of the domU's vif (netfront in the guest), if it has one; [`xl::DEFAULT_BRIDGE`] usually.
    pub bridge: Option<String>,
    /// A boot module on this machine (`ramdisk`), e.g. a tar archive the guest mounts at `/`.
    pub ramdisk: Option<PathBuf>,
    /// Raw disk images on this machine, in order (`xvda`, ...).
    pub disks: Vec<PathBuf>,
}

impl Domu {
    /// The domain name: `zirvium-<app>`.
    pub fn name(&self) -> String {
        format!("zirvium-{}", self.app)
    }

    /// The xl config for a dom0 of kind `kind`. Disks on a local dom0 are absolute host paths; errors: see
    /// [`XlError`].
    pub fn config(&self, kind: Dom0Kind) -> Result<DomainConfig, XlError> {
        let file_name = self.kernel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let kernel = match kind {
            Dom0Kind::Local => absolute(&self.kernel),
            Dom0Kind::Nested => PathBuf::from(format!("/images/{file_name}")),
        };
        let disks = self
            .disks
            .iter()
            .enumerate()
            .map(|(i, d)| xl::Disk {
                target: match kind {
                    Dom0Kind::Local => absolute(d),
                    Dom0Kind::Nested => nested::dom0_disk(i),
                },
                writable: true,
            })
            .collect();
        let vifs = self.bridge.iter().map(|b| xl::Vif { bridge: b.clone(), mac: xl::Mac::xen_for(&self.name()) });
        let ramdisk = self.ramdisk.as_deref().map(|r| match kind {
            Dom0Kind::Local => absolute(r),
            Dom0Kind::Nested => PathBuf::from(NESTED_RAMDISK),
        });
        Ok(DomainConfig {
            name: self.name(),
            kernel,
            memory_mib: self.memory_mib,
            vcpus: self.vcpus,
            cmdline: self.cmdline.clone(),
            ramdisk,
            vifs: vifs.collect(),
            disks,
        })
    }
}

/// `p` made absolute against the current directory (without touching the file system otherwise).
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Failures of the Xen side of `images`; [`Error::exit_code`] maps each to the command's exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An option that does not apply under Xen, with what to do instead (exit 2).
    #[error("{0}")]
    Options(String),
    /// Bad options or environment shared with the QEMU runner (exit 2).
    #[error(transparent)]
    Config(#[from] crate::qemu::ConfigError),
    /// The app did not build (exit 1).
    #[error(transparent)]
    Build(#[from] crate::cargo::BuildError),
    /// Packing the domU's initrd failed (exit 1).
    #[error(transparent)]
    Initrd(#[from] crate::initrd::InitrdError),
    /// QEMU, which runs the nested host, is missing and was not installed (exit 2).
    #[error(transparent)]
    HostTools(#[from] crate::host_tools::HostToolsError),
    /// QEMU or xl could not be started or waited for (exit 125).
    #[error("{what}: {source}")]
    Spawn {
        /// The program.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// Preparing the nested host failed.
    #[error(transparent)]
    Host(#[from] HostError),
    /// Writing dom0's initramfs failed.
    #[error("dom0 initramfs: {0}")]
    Dom0(#[from] crate::initramfs::ArchiveError),
    /// The xl config cannot be written.
    #[error(transparent)]
    Xl(#[from] XlError),
    /// A path QEMU cannot take.
    #[error(transparent)]
    Path(#[from] PathWithSpace),
    /// A file operation failed.
    #[error("{what} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl Error {
    /// The exit code of `images` for this error: 2 for usage and environment, 1 for a failed build, else 125.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Options(_)
            | Error::Config(_)
            | Error::Xl(_)
            | Error::Path(_)
            | Error::Host(_)
            | Error::HostTools(_) => 2,
            Error::Build(e) if e.is_usage() => 2,
            Error::Build(_) | Error::Initrd(_) => 1,
            Error::Spawn { .. } | Error::Dom0(_) | Error::Io { .. } => crate::exit::QEMU_FAILED_EXIT,
        }
    }
}

/// A prepared nested run: QEMU's options and the per-run initramfs, deleted when this is dropped.
#[derive(Debug)]
pub struct NestedRun {
    /// The QEMU options ([`nested::qemu_command`]).
    pub options: NestedOptions,
    /// The domain name.
    pub name: String,
    /// The xl config dom0 uses.
    pub config: String,
}

impl Drop for NestedRun {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.options.initrd);
    }
}

/// Prepares a nested run of `domu` on `host`: renders its config, writes the per-run initramfs under
/// `<work>/runs/`, and returns the QEMU options with `forwards` to the domU. With `control` dom0 takes shell
/// commands on its console (the test harness); else it powers off when the domU ends.
pub fn prepare_nested(
    host: &XenHost,
    domu: &Domu,
    forwards: &[PortForward],
    control: bool,
) -> Result<NestedRun, Error> {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let config = domu.config(Dom0Kind::Nested)?.render()?;
    let runs = host.work.join("runs");
    std::fs::create_dir_all(&runs).map_err(|source| Error::Io { what: "creating", path: runs.clone(), source })?;
    let initrd =
        runs.join(format!("{}-{}-{}.cpio", domu.name(), std::process::id(), RUNS.fetch_add(1, Ordering::Relaxed)));
    let files = dom0::RunFiles {
        name: domu.name(),
        kernel: domu.kernel.clone(),
        ramdisk: domu.ramdisk.clone(),
        config: config.clone(),
        control,
        dom0_address: nested::DOM0_ADDRESS.to_owned(),
    };
    let options = NestedOptions {
        xen: host.xen.clone(),
        vmlinuz: host.vmlinuz.clone(),
        initrd: initrd.clone(),
        mem_mib: nested::DEFAULT_MEM_MIB,
        forwards: forwards.to_vec(),
        disks: domu.disks.clone(),
    };
    // Check the paths before writing tens of MB.
    nested::qemu_args(&options)?;
    let run = NestedRun { options, name: domu.name(), config };
    crate::initramfs::write_initrd(&[&host.base_initrd], &dom0::run_archive(&files), &initrd)?;
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domu() -> Domu {
        Domu {
            app: "httpd".into(),
            kernel: "/w/target/x86_64-unknown-none/release/httpd".into(),
            memory_mib: 64,
            vcpus: 1,
            cmdline: "loglevel=info".into(),
            bridge: Some("xenbr0".into()),
            ramdisk: Some("/w/root.tar".into()),
            disks: vec!["/w/disk.img".into()],
        }
    }

    #[test]
    fn nested_config_uses_dom0_paths() {
        let c = domu().config(Dom0Kind::Nested).unwrap();
        assert_eq!(c.name, "zirvium-httpd");
        assert_eq!(c.kernel, PathBuf::from("/images/httpd"));
        assert_eq!(c.disks, [xl::Disk { target: "/dev/vda".into(), writable: true }]);
        assert_eq!(c.vifs.len(), 1);
        assert_eq!(c.vifs[0].bridge, "xenbr0");
        assert_eq!(c.ramdisk, Some(PathBuf::from(NESTED_RAMDISK)));
    }

    #[test]
    fn local_config_uses_host_paths() {
        let mut d = domu();
        d.bridge = None;
        d.disks = vec!["rel/disk.img".into()];
        let c = d.config(Dom0Kind::Local).unwrap();
        assert_eq!(c.kernel, PathBuf::from("/w/target/x86_64-unknown-none/release/httpd"));
        assert!(c.vifs.is_empty());
        assert_eq!(c.ramdisk, Some(PathBuf::from("/w/root.tar")));
        assert!(c.disks[0].target.is_absolute() && c.disks[0].target.ends_with("rel/disk.img"));
    }
}
