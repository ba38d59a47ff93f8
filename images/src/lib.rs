//! Host side of Zirvium: build app images for `x86_64-unknown-none` and boot them under QEMU through PVH
//! (`-kernel`), with the command line fixed by the project contract (QEMU 10, `isa-debug-exit`, serial on stdio),
//! or as Xen PVH domUs.
//!
//! Layers, each depending only on those above it:
//! - [`shell`], [`host_tools`] (the host programs and their Debian packages), [`forward`], [`exit`], [`initrd`],
//!   [`disk`], [`cargo`] (image builds);
//! - [`qemu`] (run options, QEMU's arguments, host probing) and [`xen`] (xl configs, the nested Xen host);
//! - [`run`]: `images run`'s options, shared by the runners [`qemu::run`] and [`xen::run`];
//! - [`error`] and [`cli`], the command-line front-end of the `images` binary.
//!
//! The `zirvium-tests` harness reuses [`qemu::qemu_command`], so tests boot exactly what `images run` boots, and
//! [`host_tools::ensure`], so `cargo test` installs or names what it needs.

pub mod cargo;
pub mod cli;
pub mod disk;
pub mod error;
pub mod exit;
pub mod forward;
pub mod host_tools;
pub mod initrd;
pub mod qemu;
pub mod run;
pub mod shell;
pub mod strip;
pub mod xen;

pub use cargo::{build_app, workspace_root, BuildError, Image, Profile, KERNEL_TARGET};
pub use error::Error;
pub use exit::Outcome;
pub use forward::{ForwardError, PortForward, Protocol};
pub use qemu::{qemu_command, Accel, ConfigError, KernelOption, Machine, Network, RunOptions};
