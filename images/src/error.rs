//! Failures of the `images` commands and the exit code of each ([`Error::exit_code`]): 2 for usage and
//! environment (bad options, no app crate, a missing Rust target or QEMU), 1 for a failed build, disk or initrd,
//! 125 when QEMU failed (see [`crate::exit`]).

use crate::cargo::BuildError;
use crate::disk::DiskError;
use crate::host_tools::HostToolsError;
use crate::initrd::InitrdError;
use crate::qemu::ConfigError;

/// Failures of the `images` commands, each mapped to an exit code by [`Error::exit_code`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad options or environment (exit 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The image did not build (exit 1), or the app could not be picked or its target is missing (exit 2).
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A host tool (QEMU, `fsck.fat`, ...) is missing and was not installed (exit 2); the message has the
    /// command that installs it.
    #[error(transparent)]
    HostTools(#[from] HostToolsError),
    /// `images disk create` failed (exit 1).
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// Packing an initrd failed (exit 1).
    #[error(transparent)]
    Initrd(#[from] InitrdError),
    /// QEMU could not be started or waited for (exit 125).
    #[error("QEMU: {0}")]
    Qemu(std::io::Error),
    /// A Xen run failed before the domU could report (exit code from [`crate::xen::Error::exit_code`]).
    #[error(transparent)]
    Xen(#[from] crate::xen::Error),
    /// A nested Hyper-V run failed before the guest could report (exit code from
    /// [`crate::hyperv::Error::exit_code`]).
    #[error(transparent)]
    Hyperv(#[from] crate::hyperv::Error),
    /// `images package` failed (exit 1).
    #[error(transparent)]
    Package(#[from] crate::package::PackageError),
    /// `images inspect` could not read the file (exit 1).
    #[error(transparent)]
    Inspect(#[from] crate::inspect::InspectError),
    /// `cargo zirvium new` cannot write the crate (exit 2).
    #[error(transparent)]
    New(#[from] crate::new::NewError),
    /// `images run --image` cannot boot the disk as given (exit 2).
    #[error(transparent)]
    DiskBoot(#[from] crate::diskboot::DiskBootError),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::HostTools(_) | Error::DiskBoot(_) | Error::New(_) => 2,
            Error::Build(e) if e.is_usage() => 2,
            Error::Package(crate::package::PackageError::Build(e)) if e.is_usage() => 2,
            Error::Build(_) | Error::Disk(_) | Error::Initrd(_) | Error::Package(_) | Error::Inspect(_) => 1,
            Error::Qemu(_) => crate::exit::QEMU_FAILED_EXIT,
            Error::Xen(e) => e.exit_code(),
            Error::Hyperv(e) => e.exit_code(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_exit_codes() {
        assert_eq!(Error::from(ConfigError::Smp(0)).exit_code(), 2);
        assert_eq!(Error::from(HostToolsError::StillMissing(vec![crate::host_tools::QEMU])).exit_code(), 2);
        // A missing target is the environment's to fix, like a missing QEMU.
        assert_eq!(Error::from(BuildError::TargetMissing { why: "no rustup".into() }).exit_code(), 2);
        let not_an_app = crate::project::ProjectError::NoApp("/w".into());
        assert_eq!(Error::from(BuildError::from(not_an_app)).exit_code(), 2);
        let failed = BuildError::NoExecutable { command: "cargo build".into(), app: "a".into() };
        assert_eq!(Error::from(failed).exit_code(), 1);
        assert_eq!(Error::Qemu(std::io::Error::other("x")).exit_code(), 125);
        assert_eq!(Error::from(crate::xen::Error::Options("x".into())).exit_code(), 2);
    }
}
