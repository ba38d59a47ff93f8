//! The API Zirvium apps use. An app is a `#![no_std]` binary with one entry:
//!
//! ```no_run
//! // In the app's main.rs, also: #![cfg_attr(target_os = "none", no_std, no_main)]
//! zirvium::app!(run);
//! async fn run() -> u8 {
//!     zirvium::println!("hi");
//!     0
//! }
//! ```
//!
//! At boot this crate detects the hypervisor, picks the platform (KVM/QEMU, Xen PVH or Hyper-V, each a
//! [`libos::platform::Platform`]) and brings up its clock and hypervisor devices, then starts the drivers every
//! platform shares (virtio-mmio from the command line, PCI functions through `libos::pci`'s driver table), starts
//! the network stack when a NIC exists,
//! mounts the file systems (initrd at `/`, ramfs at `/tmp`, the first disk's FAT at `/data`), then runs the app's
//! async entry on the executor and exits the VM with its status.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub use libos::{exit, print, println};

/// Time: [`time::Instant`], [`time::SystemTime`], [`time::sleep`], [`time::timeout`].
pub mod time {
    pub use libos::time::{
        sleep, sleep_until, timeout, uptime_ns, Duration, Elapsed, Instant, Sleep, SystemTime, UNIX_EPOCH,
    };
}

/// Tasks: [`task::spawn`], [`task::JoinHandle`], [`task::yield_now`].
pub mod task {
    pub use libos::task::{spawn, stats, yield_now, JoinHandle};
}

/// Networking on the kernel's stack (smoltcp over the NIC found at boot): [`net::TcpListener`],
/// [`net::TcpStream`], [`net::UdpSocket`], DNS with [`net::resolve`], the interface's IPv4 configuration and
/// counters. Sources: RFC 9293 (TCP), RFC 768 (UDP), RFC 2131 (DHCPv4), RFC 1035 (DNS).
pub mod net {
    pub use net::{
        resolve, stats, wait_configured, DnsError, Error, Ipv4Config, Ipv4State, NetStats, Result, TcpListener,
        TcpStream, UdpSocket,
    };
}

/// Graceful shutdown requests from the host (Xen `xl shutdown`, Hyper-V's shutdown integration service):
/// await [`shutdown::requested`] (or check [`shutdown::pending`]) and return from the app's main to end the VM.
pub mod shutdown {
    pub use libos::shutdown::{pending, requested, ShutdownKind};
}

/// Memory: the guest's figures ([`mem::stats`]: total, free and ballooned bytes). The hypervisor's balloon driver
/// (Hyper-V Dynamic Memory, virtio-balloon, Xen) moves free pages between the guest and the host; see
/// `libos::mem::balloon`.
pub mod mem {
    pub use libos::mem::balloon::MemStats;

    /// The memory figures now (bytes): RAM the kernel heap manages, free, and held by the hypervisor's balloon.
    pub fn stats() -> MemStats {
        libos::mem::balloon::stats()
    }
}

/// Disks found at boot ([`dev::block_devices`]: virtio-blk, Xen blkfront, Hyper-V storvsc), for apps that use a
/// raw device instead of the filesystem on `/data`.
pub mod dev {
    pub use libos::dev::{block_devices, BlockDevice, BlockError, BlockFuture, BlockInfo};
}

/// Logging through the kernel's logger (serial console and the platform's console), filtered by the
/// `loglevel=` kernel option: `zirvium::log::info!(...)`.
pub use log;

/// Files: `File`, `OpenOptions`, `read_dir`, `read`/`write`, ... over `/` (initrd), `/tmp` (ramfs) and `/data`
/// (FAT on the first disk) — see the `fs` crate.
pub mod fs;

/// The environment: app arguments, kernel options, the platform.
pub mod env {
    /// The app's arguments (the command-line words after `--`), in order.
    pub fn args() -> impl Iterator<Item = &'static str> {
        crate::boot::cmdline().app_args.iter().copied()
    }

    /// The value of kernel option `key` (`key=value` before `--`).
    pub fn kernel_option(key: &str) -> Option<&'static str> {
        crate::boot::cmdline().option(key)
    }

    /// The platform the image runs on: "kvm", "qemu-tcg", "xen", "hyperv".
    pub fn platform() -> &'static str {
        libos::platform::current()
    }

    /// The boot timeline: `(stamp, µs since the first instruction)` for entry, rust, memory, platform, app.
    #[cfg(target_os = "none")]
    pub fn boot_timeline() -> alloc::vec::Vec<(&'static str, u64)> {
        libos::start::timeline()
    }
}

/// What an app's entry may return; turned into the VM's exit status.
pub trait ExitStatus {
    /// The guest exit status (0..=127).
    fn status(self) -> u8;
}

impl ExitStatus for () {
    fn status(self) -> u8 {
        0
    }
}

impl ExitStatus for u8 {
    fn status(self) -> u8 {
        self.min(127)
    }
}

impl ExitStatus for i32 {
    fn status(self) -> u8 {
        self.clamp(0, 127) as u8
    }
}

impl<E: core::fmt::Display> ExitStatus for Result<(), E> {
    /// `Err` prints `error: …` and gives status 1.
    fn status(self) -> u8 {
        match self {
            Ok(()) => 0,
            Err(e) => {
                println!("error: {e}");
                1
            }
        }
    }
}

/// Declares the app's async entry function `$f: async fn() -> impl ExitStatus`. On the host (where apps
/// cannot run) it generates a `main` that says how to run the image instead.
#[macro_export]
macro_rules! app {
    ($f:path) => {
        #[cfg(target_os = "none")]
        #[no_mangle]
        fn __zirvium_app_main(
        ) -> ::core::pin::Pin<$crate::__private::Box<dyn ::core::future::Future<Output = u8> + Send>> {
            $crate::__private::Box::pin(async { $crate::ExitStatus::status($f().await) })
        }

        #[cfg(target_os = "none")]
        #[no_mangle]
        fn __zirvium_app_name() -> &'static str {
            env!("CARGO_PKG_NAME")
        }

        #[cfg(not(target_os = "none"))]
        fn main() {
            let _ = $f; // the entry is used only in the image
            eprintln!(
                "{} is a Zirvium image for x86_64-unknown-none; run it with `cargo zirvium run` \
                 (in the Zirvium repository: `cargo run -p images -- run {}`)",
                env!("CARGO_PKG_NAME"),
                env!("CARGO_PKG_NAME")
            );
            std::process::exit(2);
        }
    };
}

#[doc(hidden)]
pub mod __private {
    pub use alloc::boxed::Box;
}

#[cfg(target_os = "none")]
mod boot;
#[cfg(not(target_os = "none"))]
mod boot {
    pub fn cmdline() -> &'static libos::cmdline::Cmdline {
        static EMPTY: libos::cmdline::Cmdline = libos::cmdline::Cmdline {
            options: alloc::vec::Vec::new(),
            virtio_mmio: alloc::vec::Vec::new(),
            app_args: alloc::vec::Vec::new(),
        };
        &EMPTY
    }
}
