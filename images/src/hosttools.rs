//! Host tools and files the disk-image commands (`package`, `inspect`, `run --image`) need, each with the Debian
//! package that provides it, so a missing one is reported as "install PACKAGE" rather than a bare "not found".
//! Probing follows [`crate::qemu::find_qemu`]: look on `PATH` (or at a fixed path), never install by itself.

use std::path::{Path, PathBuf};

/// A host tool or file and the Debian package that provides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostTool {
    /// Executable name looked up on `PATH`, or an absolute file path.
    pub name: &'static str,
    /// Debian package that installs it.
    pub package: &'static str,
    /// What it is needed for, for the error message.
    pub purpose: &'static str,
}

/// `qemu-img`: converts the raw disk to qcow2, VHD, VHDX and VMDK, and reads images for `inspect` and `run`.
pub const QEMU_IMG: HostTool =
    HostTool { name: "qemu-img", package: "qemu-utils", purpose: "converting and reading disk images" };
/// GNU `tar` (with gzip): writes the sparse GCE image archive.
pub const TAR: HostTool = HostTool { name: "tar", package: "tar", purpose: "writing the GCE image archive" };
/// `grub-mkimage`: builds GRUB's BIOS core image and EFI application.
pub const GRUB_MKIMAGE: HostTool =
    HostTool { name: "grub-mkimage", package: "grub-common", purpose: "building the GRUB boot images" };
/// GRUB's i386-pc (BIOS) modules, `boot.img` and `diskboot.img`.
pub const GRUB_PC: HostTool = HostTool {
    name: "/usr/lib/grub/i386-pc/boot.img",
    package: "grub-pc-bin",
    purpose: "BIOS boot (--boot bios|both)",
};
/// GRUB's x86_64-efi modules.
pub const GRUB_EFI: HostTool = HostTool {
    name: "/usr/lib/grub/x86_64-efi/multiboot2.mod",
    package: "grub-efi-amd64-bin",
    purpose: "UEFI boot (--boot uefi|both)",
};
/// OVMF's code image (read-only pflash) for UEFI boots under QEMU.
pub const OVMF_CODE: HostTool =
    HostTool { name: "/usr/share/OVMF/OVMF_CODE_4M.fd", package: "ovmf", purpose: "booting through UEFI (OVMF)" };
/// OVMF's variable store template, copied per run (writable pflash).
pub const OVMF_VARS: HostTool =
    HostTool { name: "/usr/share/OVMF/OVMF_VARS_4M.fd", package: "ovmf", purpose: "booting through UEFI (OVMF)" };

/// A host tool or file is missing; the message names the Debian package.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{name} not found (needed for {purpose}); install it with: apt-get install {package}")]
pub struct MissingTool {
    /// The executable or file.
    pub name: &'static str,
    /// Debian package to install.
    pub package: &'static str,
    /// What needed it.
    pub purpose: &'static str,
}

/// A host tool could not be started or exited unsuccessfully.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The tool is not installed; the message names the package.
    #[error(transparent)]
    Missing(#[from] MissingTool),
    /// Starting it failed.
    #[error("could not run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// It ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// Its stderr, trimmed.
        stderr: String,
    },
}

impl HostTool {
    /// Runs the tool with `args` and returns its stdout. Errors: [`ToolError`] (missing tool naming the package,
    /// spawn failure, non-zero exit with its stderr).
    pub fn run<I, S>(&self, args: I) -> Result<Vec<u8>, ToolError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = std::process::Command::new(self.find()?);
        cmd.args(args).stdin(std::process::Stdio::null());
        let command = crate::qemu::shell_line(&cmd);
        let out = cmd.output().map_err(|source| ToolError::Spawn { command: command.clone(), source })?;
        if !out.status.success() {
            return Err(ToolError::Failed {
                command,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(out.stdout)
    }

    /// The tool's path: `PATH` lookup for a bare name, an existence check for an absolute path.
    /// Errors: [`MissingTool`] naming the package.
    pub fn find(&self) -> Result<PathBuf, MissingTool> {
        let found = if self.name.starts_with('/') {
            Some(PathBuf::from(self.name)).filter(|p| p.is_file())
        } else {
            crate::qemu::find_in_path(self.name)
        };
        found.ok_or(MissingTool { name: self.name, package: self.package, purpose: self.purpose })
    }

    /// The directory holding the tool's file (e.g. GRUB's module directory for [`GRUB_PC`]).
    pub fn dir(&self) -> Result<PathBuf, MissingTool> {
        let p = self.find()?;
        Ok(p.parent().map(Path::to_owned).unwrap_or(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_names_the_package() {
        let t = HostTool { name: "zirvium-no-such-tool", package: "zirvium-pkg", purpose: "testing" };
        let e = t.find().unwrap_err();
        assert_eq!(
            e.to_string(),
            "zirvium-no-such-tool not found (needed for testing); install it with: apt-get install zirvium-pkg"
        );
        let f = HostTool { name: "/nonexistent/zirvium/file", package: "p", purpose: "x" };
        assert_eq!(f.find().unwrap_err().package, "p");
        let sh = HostTool { name: "sh", package: "dash", purpose: "x" };
        assert!(sh.find().is_ok());
    }
}
