//! Host side of Zirvium: build app images for `x86_64-unknown-none` and boot them under QEMU through PVH
//! (`-kernel`), with the command line fixed by the project contract (QEMU 10, `isa-debug-exit`, serial on stdio),
//! as Xen PVH domUs, or on a nested Hyper-V-style host. Two binaries share one command line ([`cli`]): `images`
//! in this repository and `cargo zirvium` for an app crate anywhere.
//!
//! Layers, each depending only on those above it:
//! - [`shell`], [`host_tools`] (the host programs and their Debian packages), [`forward`], [`exit`], [`project`]
//!   (the app crate, from `cargo metadata`), [`initrd`], [`disk`], [`cargo`] (image builds), [`symbols`]
//!   (backtrace frames named on the host), [`new`] (`cargo zirvium new`);
//! - for the nested hosts: [`debian`] (package cache), [`initramfs`] (cpio archives, kernel modules), [`lines`]
//!   (a QEMU console as lines);
//! - [`qemu`] (run options, QEMU's arguments, host probing), [`xen`] (xl configs, the nested Xen host) and
//!   [`hyperv`] (the nested Hyper-V host);
//! - [`run`]: `images run`'s options, shared by the runners [`qemu::run`], [`xen::run`] and [`hyperv::run`];
//! - [`error`] and [`cli`], the command-line front-end of the `images` binary.
//!
//! The `zirvium-tests` harness reuses [`qemu::qemu_command`], so tests boot exactly what `images run` boots, and
//! [`host_tools::ensure`], so `cargo test` installs or names what it needs.

pub mod cargo;
pub mod cli;
pub mod debian;
pub mod disk;
pub mod diskboot;
pub mod error;
pub mod exit;
pub mod forward;
pub mod host_tools;
pub mod hyperv;
pub mod initramfs;
pub mod initrd;
pub mod inspect;
pub mod lines;
pub mod new;
pub mod package;
pub mod project;
pub mod qemu;
pub mod region;
pub mod run;
pub mod shell;
pub mod symbols;
pub mod xen;

pub use cargo::{build, build_app, workspace_root, BuildError, Image, Profile, KERNEL_RUSTFLAGS, KERNEL_TARGET};
pub use error::Error;
pub use exit::Outcome;
pub use forward::{ForwardError, PortForward, Protocol};
pub use project::{App, AppKind, CrateArgs};
pub use qemu::{qemu_command, Accel, ConfigError, DiskBus, KernelOption, Machine, Network, RunOptions};
