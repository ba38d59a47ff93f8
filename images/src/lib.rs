//! Host side of Zirvium: build app images for `x86_64-unknown-none` and boot them under QEMU through PVH
//! (`-kernel`), with the command line fixed by the project contract (QEMU 10, `isa-debug-exit`, serial on stdio).
//!
//! Used by the `images` binary ([`cli`]) and by the `zirvium-tests` harness, which reuses [`qemu::qemu_command`]
//! so tests boot exactly what `images run` boots.

pub mod cargo;
pub mod cli;
pub mod disk;
pub mod diskboot;
pub mod exit;
pub mod forward;
pub mod hosttools;
pub mod initrd;
pub mod inspect;
pub mod package;
pub mod qemu;
pub mod region;
pub mod xen;

pub use cargo::{build_app, workspace_root, BuildError, Image, Profile, KERNEL_TARGET};
pub use exit::Outcome;
pub use forward::{ForwardError, PortForward, Protocol};
pub use qemu::{qemu_command, Accel, ConfigError, KernelOption, Machine, Network, RunOptions};
