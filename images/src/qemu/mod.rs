//! QEMU for Zirvium images: PVH boot with `-kernel`, serial console on stdout, `isa-debug-exit` for the exit
//! status, virtio devices on virtio-mmio (microvm) or PCI (q35/pc), disks on virtio-blk, virtio-scsi or NVMe.
//!
//! - [`options`]: what one run is ([`RunOptions`]: machine, accelerator, memory, network, disks, kernel command
//!   line), the option parsers and [`ConfigError`].
//! - [`args`]: QEMU's argument list for a run ([`qemu_command`]), fixed by the project contract: `images run` and
//!   every test boot exactly this.
//! - [`host`]: this host's QEMU (installed when missing) and KVM, and the accelerator a run gets.
//! - [`run`]: `images run` under QEMU.

pub mod args;
pub mod host;
pub mod options;
pub mod run;

pub use args::{qemu_args, qemu_command};
pub use host::{choose_accel, detect_accel, ensure_qemu, kvm_usable, qemu_version, QEMU_BINARY};
pub use options::{
    parse_mem_mib, resolve_network, Accel, ConfigError, DiskBus, DiskSpec, KernelOption, Machine, NetKind, Network,
    RunOptions,
};
