//! This host's QEMU and KVM: the QEMU binary (installed through [`crate::host_tools`] when missing) and its
//! version, whether `/dev/kvm` can be used, and the accelerator a run gets.

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::options::{Accel, ConfigError};
use crate::host_tools::{self, HostToolsError};

/// Name of the QEMU binary, looked up on `PATH`.
pub const QEMU_BINARY: &str = host_tools::QEMU.program;

/// The QEMU binary, installed first when missing (as root with apt-get from bookworm-backports, see
/// [`host_tools::ensure`]; `progress` gets its steps). Errors: missing and not installable here (the message
/// has the install command), or the install failed.
pub fn ensure_qemu(progress: &mut dyn FnMut(&str)) -> Result<PathBuf, HostToolsError> {
    host_tools::ensure(&[host_tools::QEMU], progress)?;
    host_tools::QEMU.find().ok_or(HostToolsError::StillMissing(vec![host_tools::QEMU]))
}

/// The first line of `qemu --version`, e.g. `QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)`;
/// `None` when it does not run.
pub fn qemu_version(qemu: &Path) -> Option<String> {
    let out = Command::new(qemu).arg("--version").stdin(Stdio::null()).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success().then(|| text.lines().next().unwrap_or_default().trim().to_owned())
}

/// Whether KVM can be used: `Ok` if `/dev/kvm` opens read-write, else the reason, e.g. `/dev/kvm: permission
/// denied`.
pub fn kvm_usable() -> Result<(), String> {
    match OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("/dev/kvm: {}", io_reason(&e))),
    }
}

/// The accelerator to use when none is requested (KVM when `/dev/kvm` opens read-write, else TCG) and why, as
/// printed by `images run`: `(Kvm, "/dev/kvm opened")` or `(Tcg, "/dev/kvm: permission denied")`.
pub fn detect_accel() -> (Accel, String) {
    match kvm_usable() {
        Ok(()) => (Accel::Kvm, "/dev/kvm opened".to_owned()),
        Err(reason) => (Accel::Tcg, reason),
    }
}

/// The accelerator of a run and why: the requested one (KVM only if `/dev/kvm` opens), else [`detect_accel`]'s.
/// Errors: [`ConfigError::KvmUnavailable`] when KVM is requested and cannot be used.
pub fn choose_accel(requested: Option<Accel>) -> Result<(Accel, String), ConfigError> {
    match requested {
        Some(Accel::Kvm) => match kvm_usable() {
            Ok(()) => Ok((Accel::Kvm, "--accel kvm; /dev/kvm opened".to_owned())),
            Err(reason) => Err(ConfigError::KvmUnavailable(reason)),
        },
        Some(Accel::Tcg) => Ok((Accel::Tcg, "--accel tcg".to_owned())),
        None => Ok(detect_accel()),
    }
}

/// Short lower-case reason for an I/O error ("permission denied", "not found"), without the OS error number.
fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "not found".to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_tcg_needs_no_probe() {
        assert_eq!(choose_accel(Some(Accel::Tcg)), Ok((Accel::Tcg, "--accel tcg".to_owned())));
        // KVM requested: either usable or refused with the probe's reason, never silently TCG.
        match (choose_accel(Some(Accel::Kvm)), kvm_usable()) {
            (Ok((Accel::Kvm, _)), Ok(())) => {}
            (Err(ConfigError::KvmUnavailable(r)), Err(reason)) => assert_eq!(r, reason),
            other => panic!("inconsistent KVM probe: {other:?}"),
        }
    }

    #[test]
    fn io_reasons_are_short() {
        assert_eq!(io_reason(&io::Error::from(io::ErrorKind::NotFound)), "not found");
        assert_eq!(io_reason(&io::Error::from(io::ErrorKind::PermissionDenied)), "permission denied");
    }
}
