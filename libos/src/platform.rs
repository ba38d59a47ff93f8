//! The platform layer: each hypervisor's crate implements [`Platform`]; at boot the candidate that matches
//! the CPUID detection ([`crate::hypervisor`]) and boot hints is chosen and brings up its clock and devices.
//! The choice is logged in one `platform:` line with the signature, leaf and features used.

use crate::bootinfo::BootInfo;
use crate::cmdline::Cmdline;
use crate::hypervisor::Detection;
use alloc::string::String;
use core::fmt;

/// Why a platform failed to come up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformError {
    /// The platform's name.
    pub platform: &'static str,
    /// What went wrong, for a person.
    pub detail: String,
}

impl fmt::Display for PlatformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "platform {}: {}", self.platform, self.detail)
    }
}

/// How well a platform fits the machine, from [`Platform::probe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fit {
    /// Higher wins: 100 = its hypervisor's signature was found, 10 = generic fallback.
    pub score: u32,
    /// For the `platform:` log line, e.g. `signature "KVMKVMKVM" at leaf 0x40000000`.
    pub reason: String,
}

/// What [`Platform::init`] brought up, for the boot log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Brought {
    /// Features in use, e.g. `["kvmclock"]` (the boot code appends the shared drivers', e.g. "virtio-mmio").
    pub features: alloc::vec::Vec<String>,
}

/// A hypervisor platform.
pub trait Platform: Sync {
    /// Short name: "kvm", "qemu-tcg", "xen", "hyperv".
    fn name(&self) -> &'static str;
    /// Whether (and how well) this platform fits, from CPUID detection and boot hints; `None` = not at all.
    fn probe(&self, detection: &Detection, boot: &BootInfo) -> Option<Fit>;
    /// Brings up the clock, interrupts and the hypervisor's own devices (Xen's netfront, Hyper-V's VMBus
    /// devices); registers devices with [`crate::dev`]. Devices any platform may have (virtio-mmio, PCI) are
    /// started by the boot code after this.
    fn init(&self, detection: &Detection, boot: &BootInfo, cmdline: &Cmdline) -> Result<Brought, PlatformError>;
}

static CURRENT: spin::Once<&'static str> = spin::Once::new();

/// Records the chosen platform's name.
pub fn set_current(name: &'static str) {
    CURRENT.call_once(|| name);
}

/// The chosen platform's name ("none" before selection).
pub fn current() -> &'static str {
    CURRENT.get().copied().unwrap_or("none")
}

static APP_NAME: spin::Once<&'static str> = spin::Once::new();

/// Records the app's name (its package name, set by `zirvium::app!` at boot; first call wins), which platforms
/// report to the host (e.g. Hyper-V's KVP integration service).
pub fn set_app_name(name: &'static str) {
    APP_NAME.call_once(|| name);
}

/// The app's name ("zirvium" before it is set).
pub fn app_name() -> &'static str {
    APP_NAME.get().copied().unwrap_or("zirvium")
}
