//! Zirvium apps on a real Hyper-V-style host, nested: L0 is QEMU TCG `-cpu max` (emulated AMD SVM with nested
//! paging) running Debian's Linux 6.1 as L1, which loads `kvm_amd` and runs this machine's QEMU with `-accel kvm`,
//! KVM's Hyper-V enlightenments (`hv-*`: SynIC, synthetic timers, reference TSC page, hypercalls) and QEMU's VMBus
//! server with its one VMBus device, `hv-balloon` (Dynamic Memory), around the app's image as L2. This machine's
//! own KVM has no Hyper-V emulation and TCG ignores `hv-*` flags, hence the nesting (the recipe of
//! `shared/hyperv-host`, rebuilt here).
//!
//! - [`host`]: Debian's kernel and busybox, fetched once into `target/hyperv-host/`, and this machine's QEMU with
//!   the libraries and firmware it needs, as initramfs archives.
//! - [`l1`]: L1's per-run archive (`/init` from `images/hyperv/`, the app, the L2 QEMU command).
//! - [`nested`]: the QEMU command lines of L0 and L2, and the port plumbing between them.
//! - [`console`]: what the lines of L0's serial console mean.
//! - [`run`]: `images run --hypervisor hyperv`.

pub mod console;
pub mod host;
pub mod l1;
pub mod nested;
pub mod run;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

pub use host::HypervHost;
pub use nested::{Guest, NestedOptions};

/// Failures of the Hyper-V side of `images`; [`Error::exit_code`] maps each to the command's exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An option that does not apply under Hyper-V, with what to do instead (exit 2).
    #[error("{0}")]
    Options(String),
    /// Bad options or environment shared with the QEMU runner (exit 2).
    #[error(transparent)]
    Config(#[from] crate::qemu::ConfigError),
    /// The app did not build (exit 1).
    #[error(transparent)]
    Build(#[from] crate::cargo::BuildError),
    /// QEMU, which runs both levels, is missing and was not installed (exit 2).
    #[error(transparent)]
    HostTools(#[from] crate::host_tools::HostToolsError),
    /// Preparing the nested host failed (exit 2: what to run is in the message).
    #[error(transparent)]
    Host(#[from] crate::debian::CacheError),
    /// Writing L1's initramfs failed (exit 125).
    #[error("L1 initramfs: {0}")]
    Archive(#[from] crate::initramfs::ArchiveError),
    /// QEMU could not be started or waited for (exit 125).
    #[error("{what}: {source}")]
    Spawn {
        /// The program.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// A file operation failed (exit 125).
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
            Error::Options(_) | Error::Config(_) | Error::Host(_) | Error::HostTools(_) => 2,
            Error::Build(_) => 1,
            Error::Spawn { .. } | Error::Archive(_) | Error::Io { .. } => crate::exit::QEMU_FAILED_EXIT,
        }
    }
}

/// A prepared nested run: L0's QEMU options and the per-run initramfs, deleted when this is dropped.
#[derive(Debug)]
pub struct NestedRun {
    /// L0's QEMU options ([`nested::l0_command`]).
    pub options: NestedOptions,
    /// The L2 QEMU command line as L1 runs it (for logs).
    pub l2_command: String,
}

impl Drop for NestedRun {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.options.initrd);
    }
}

/// Prepares a nested run of `guest` on `host`: writes the per-run initramfs (the cached base and QEMU archives
/// followed by [`l1::run_archive`]) under `<work>/runs/` and returns L0's options. Errors: archive and file
/// failures, options QEMU cannot take.
pub fn prepare_nested(host: &HypervHost, guest: &Guest) -> Result<NestedRun, Error> {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    guest.validate().map_err(Error::Options)?;
    let runs = host.work.join("runs");
    std::fs::create_dir_all(&runs).map_err(|source| Error::Io { what: "creating", path: runs.clone(), source })?;
    let initrd =
        runs.join(format!("{}-{}-{}.cpio", guest.app, std::process::id(), RUNS.fetch_add(1, Ordering::Relaxed)));
    let l2 = nested::l2_args(guest);
    let l2_command = crate::shell::shell_line(std::process::Command::new(crate::qemu::QEMU_BINARY).args(&l2));
    let options = NestedOptions {
        vmlinuz: host.vmlinuz.clone(),
        initrd: initrd.clone(),
        mem_mib: nested::L0_MEM_MIB,
        tsc_page: guest.tsc_page,
        forwards: guest.forwards.clone(),
        qmp_host_port: guest.qmp_host_port,
    };
    let run = NestedRun { options, l2_command };
    let archive = l1::run_archive(guest, &l2);
    crate::initramfs::write_initrd(&[&host.base_initrd, &host.qemu_initrd], &archive, &initrd)?;
    Ok(run)
}
