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

/// The guest's IPv4 configuration as platforms report it to the host (Hyper-V's KVP `NetworkAddressIPv4` and
/// `KVP_OP_GET_IP_INFO`), read through the hook the network stack installs ([`set_ipv4_hook`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Info {
    /// Interface address.
    pub address: core::net::Ipv4Addr,
    /// On-link prefix length (bits, 0..=32).
    pub prefix_len: u8,
    /// Default gateway.
    pub gateway: Option<core::net::Ipv4Addr>,
    /// DNS servers, in order of preference.
    pub dns_servers: alloc::vec::Vec<core::net::Ipv4Addr>,
    /// Whether a DHCP lease configured the address (else it is static).
    pub dhcp: bool,
}

/// Reads the current IPv4 configuration: `None` while the interface has no address.
pub type Ipv4Hook = fn() -> Option<Ipv4Info>;

static IPV4_HOOK: spin::Once<Ipv4Hook> = spin::Once::new();

/// Installs the network stack's IPv4 reader (first call wins), so platforms report the address without
/// depending on the network crate.
pub fn set_ipv4_hook(hook: Ipv4Hook) {
    IPV4_HOOK.call_once(|| hook);
}

/// The guest's IPv4 configuration now: `None` without a network stack or before it has an address.
pub fn ipv4() -> Option<Ipv4Info> {
    IPV4_HOOK.get().and_then(|h| h())
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    fn ten() -> Option<Ipv4Info> {
        Some(Ipv4Info {
            address: Ipv4Addr::new(10, 0, 0, 2),
            prefix_len: 24,
            gateway: None,
            dns_servers: alloc::vec![],
            dhcp: false,
        })
    }

    #[test]
    fn ipv4_comes_from_the_installed_hook() {
        assert_eq!(ipv4(), None, "no network stack: no address");
        set_ipv4_hook(ten);
        set_ipv4_hook(|| None);
        assert_eq!(ipv4().map(|i| i.address), Some(Ipv4Addr::new(10, 0, 0, 2)), "the first hook wins");
    }
}
