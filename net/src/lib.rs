//! Zirvium's network stack: smoltcp (Ethernet, ARP, IPv4, TCP RFC 9293, UDP RFC 768, DHCPv4 RFC 2131,
//! DNS RFC 1035) over any [`libos::dev::NetDevice`], with async std-like sockets.
//!
//! Boot: the kernel calls [`start`] with the NICs it found and the command line. The first NIC gets a
//! [`Stack`]; IPv4 comes from `ip=A.B.C.D/N gw=A.B.C.D dns=A.B.C.D` when given, else DHCPv4 (the lease is
//! logged as `DHCP lease 10.0.2.15/24 gw 10.0.2.2 dns 10.0.2.3`). A gratuitous ARP announces the address at
//! link-up (static) or once the lease is bound, so QEMU's slirp knows our MAC before the first request.
//! Tunables ([`Config`]: buffer sizes, socket limit, backlog, timeouts) are set with [`configure`] before
//! [`start`]; the defaults suit a 64 MiB VM with 1024 concurrent connections.
//!
//! Apps use [`TcpListener`], [`TcpStream`], [`UdpSocket`] and [`resolve`] on the kernel's stack, or the
//! `*_on` constructors on a [`Stack`] of their own. The net task ([`Stack::run`]) polls smoltcp, flushes the
//! device once per round and sleeps until the device interrupts, a socket operation needs a poll, or a
//! smoltcp timer is due — an idle stack takes no wake-ups.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

mod arp;
mod config;
mod dns;
mod error;
mod gso;
mod phy;
mod readiness;
mod stack;
mod table;
mod tcp;
mod udp;

#[cfg(test)]
mod tests;

pub use config::{Config, IpSetup, StaticIpv4};
pub use dns::resolve_on;
pub use error::{DnsError, Error, Result};
pub use readiness::Readiness;
pub use stack::Stack;
pub use tcp::{TcpListener, TcpStream};
pub use udp::UdpSocket;

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::net::{IpAddr, Ipv4Addr};
use libos::cmdline::Cmdline;
use libos::dev::NetDevice;

/// The interface's IPv4 configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Config {
    /// Interface address.
    pub address: Ipv4Addr,
    /// On-link prefix length (bits).
    pub prefix_len: u8,
    /// Default gateway.
    pub gateway: Option<Ipv4Addr>,
    /// DNS servers, in order of preference.
    pub dns_servers: Vec<Ipv4Addr>,
}

impl fmt::Display for Ipv4Config {
    /// `10.0.2.15/24 gw 10.0.2.2 dns 10.0.2.3` (`none` for a missing gateway or DNS server; several DNS
    /// servers are comma-separated).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} gw ", self.address, self.prefix_len)?;
        match self.gateway {
            Some(g) => write!(f, "{g}")?,
            None => f.write_str("none")?,
        }
        f.write_str(" dns ")?;
        if self.dns_servers.is_empty() {
            f.write_str("none")?;
        }
        for (i, d) in self.dns_servers.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Where the interface's IPv4 address stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Ipv4State {
    /// No stack (not started).
    #[default]
    NotStarted,
    /// Static configuration from the command line.
    Static,
    /// DHCP client looking for a lease (no address yet, or the lease was lost).
    DhcpDiscovering,
    /// DHCP lease bound.
    DhcpBound,
}

/// Counters and state of a stack ([`stats`], [`Stack::stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetStats {
    /// The NIC's name ("" when not started).
    pub nic: String,
    /// Frames received (all, including ones smoltcp then dropped).
    pub rx_frames: u64,
    /// Bytes received (Ethernet frames without FCS).
    pub rx_bytes: u64,
    /// Frames transmitted.
    pub tx_frames: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Frames the device refused (ring full, too large).
    pub tx_dropped: u64,
    /// Device errors on receive/recycle.
    pub rx_errors: u64,
    /// Received frames dropped for a bad TCP/UDP checksum found in software (behind receive offload).
    pub rx_bad_checksum: u64,
    /// Large TCP frames handed to the NIC to segment (TSO); each also counts in `tx_frames`.
    pub tx_gso_frames: u64,
    /// Poll rounds of the net task (an idle stack adds none).
    pub polls: u64,
    /// TCP sockets held: listening, waiting for accept, connected, and closing after the app dropped them.
    pub tcp_sockets: usize,
    /// Live [`TcpStream`] handles (connections the app holds).
    pub tcp_connections: usize,
    /// Live [`TcpListener`]s.
    pub tcp_listeners: usize,
    /// UDP sockets held (including dropped ones still sending).
    pub udp_sockets: usize,
    /// Slots of smoltcp's socket table, used or empty: smoltcp walks them all for every segment. After a burst
    /// of connections the stack takes the table back in (within about a second of it ending).
    pub socket_slots: usize,
    /// IPv4 address state.
    pub ipv4_state: Ipv4State,
    /// IPv4 configuration in effect.
    pub ipv4: Option<Ipv4Config>,
}

static CONFIG: spin::Mutex<Option<Config>> = spin::Mutex::new(None);
static STACK: spin::Once<Arc<Stack>> = spin::Once::new();

/// Sets the tunables the kernel's stack is built with. Call before [`start`]. Errors:
/// [`Error::AlreadyStarted`], [`Error::InvalidConfig`] naming the bad field.
pub fn configure(cfg: Config) -> Result<()> {
    if STACK.is_completed() {
        return Err(Error::AlreadyStarted);
    }
    cfg.validate()?;
    *CONFIG.lock() = Some(cfg);
    Ok(())
}

/// Starts the kernel's network stack on the first of `nics` (others are logged and left alone) with IPv4
/// from `cmdline` (`ip=`/`gw=`/`dns=`, else DHCP) and the tunables from [`configure`] (else defaults), and
/// spawns its net task. Errors: [`Error::InvalidConfig`] for malformed `ip=`/`gw=`/`dns=`, [`Error::NoNic`],
/// [`Error::AlreadyStarted`], and [`Stack::new`]'s errors.
pub fn start(nics: Vec<Box<dyn NetDevice>>, cmdline: &Cmdline) -> Result<()> {
    if STACK.is_completed() {
        return Err(Error::AlreadyStarted);
    }
    let setup = IpSetup::from_cmdline(cmdline)?;
    let mut nics = nics.into_iter();
    let nic = nics.next().ok_or(Error::NoNic)?;
    for other in nics {
        log::warn!("ignoring {} (one NIC per stack for now)", other.info().name);
    }
    let cfg = CONFIG.lock().clone().unwrap_or_default();
    let stack = Stack::new(nic, setup, cfg)?;
    let mut installed = false;
    STACK.call_once(|| {
        installed = true;
        stack.clone()
    });
    if !installed {
        return Err(Error::AlreadyStarted);
    }
    libos::platform::set_ipv4_hook(ipv4_info);
    libos::task::spawn(async move {
        if let Err(e) = stack.run().await {
            log::error!("net task stopped: {e}");
        }
    });
    Ok(())
}

/// The kernel's stack. Errors: [`Error::NotStarted`].
pub fn stack() -> Result<Arc<Stack>> {
    STACK.get().cloned().ok_or(Error::NotStarted)
}

/// Counters and state of the kernel's stack (all zero, [`Ipv4State::NotStarted`], before [`start`]).
pub fn stats() -> NetStats {
    STACK.get().map(|s| s.stats()).unwrap_or_default()
}

/// The kernel's stack's IPv4 configuration as platforms report it to the host (the hook [`start`] installs in
/// `libos::platform`); `None` before the stack has an address.
fn ipv4_info() -> Option<libos::platform::Ipv4Info> {
    let s = stats();
    let c = s.ipv4?;
    Some(libos::platform::Ipv4Info {
        address: c.address,
        prefix_len: c.prefix_len,
        gateway: c.gateway,
        dns_servers: c.dns_servers,
        dhcp: s.ipv4_state == Ipv4State::DhcpBound,
    })
}

/// Waits until the kernel's stack has an IPv4 address and returns its configuration. Errors:
/// [`Error::NotStarted`].
pub async fn wait_configured() -> Result<Ipv4Config> {
    Ok(stack()?.wait_configured().await)
}

/// Resolves `name` to its IPv4 addresses (DNS A records, RFC 1035) through the DNS servers of the
/// kernel's stack; an IP literal is returned as is. Errors: [`Error::NotStarted`], [`Error::Dns`].
pub async fn resolve(name: &str) -> Result<Vec<IpAddr>> {
    resolve_on(&stack()?, name).await
}
