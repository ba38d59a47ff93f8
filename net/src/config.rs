//! Stack configuration: the tunables ([`Config`]: buffer sizes, socket limit, backlog, timeouts) and the IPv4
//! setup ([`IpSetup`]: static from the kernel options `ip=A.B.C.D/N gw=A.B.C.D dns=A.B.C.D`, else DHCPv4,
//! RFC 2131).

use crate::error::{Error, Result};
use alloc::string::{String, ToString};
use core::net::Ipv4Addr;
use core::time::Duration;
use libos::cmdline::Cmdline;

/// Tunables of one stack. Set them with [`crate::configure`] before [`crate::start`], or pass them to
/// [`crate::Stack::new`]. The defaults fit a 64 MiB VM serving 1024 concurrent connections: TCP sockets get
/// the large buffers (`tcp_rx_buffer + tcp_tx_buffer` = 768 KiB: windows of several 64 KiB segmentation-offload
/// frames, which a bulk transfer needs to keep the path full — a 10 MiB upload went 1.5x and a download 1.2x
/// faster than with 64 + 128 KiB under TCG) while those fit `tcp_buffer_budget` (an eighth of RAM: 8 MiB, ten
/// sockets, at 64 MiB), and 8 + 16 KiB beyond, so `max_sockets` sockets cost at most the budget + 30 MiB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Receive buffer per TCP socket (bytes); bounds the advertised window (scaled beyond 64 KiB, RFC 7323
    /// §2). Default 256 KiB; 8 KiB for sockets beyond `tcp_buffer_budget`.
    pub tcp_rx_buffer: usize,
    /// Send buffer per TCP socket (bytes); data stays here until the peer acknowledges it. Default 512 KiB;
    /// 16 KiB for sockets beyond `tcp_buffer_budget`.
    pub tcp_tx_buffer: usize,
    /// Most bytes of `tcp_rx_buffer + tcp_tx_buffer` buffers held at once; further sockets get 8 + 16 KiB.
    /// Default `None`: an eighth of RAM.
    pub tcp_buffer_budget: Option<usize>,
    /// Most TCP + UDP sockets at once: listening sockets, connections (also those closing after the app
    /// dropped them) and UDP sockets. Over it, bind/accept/connect return [`Error::TooManySockets`].
    /// DHCP and DNS sockets are not counted. Default 1280; fewer on a heap that cannot hold this many sockets'
    /// smallest buffers (heap / 24 KiB: ~100 at `-m 5`), since the socket table is allocated at its size.
    pub max_sockets: usize,
    /// Listening sockets kept ready per [`crate::TcpListener`] (smoltcp answers one SYN per listening
    /// socket; the stack tops them up after every received frame and every accept). Default 8.
    pub backlog: usize,
    /// Receive buffer per UDP socket (payload bytes). Default 16 KiB.
    pub udp_rx_buffer: usize,
    /// Send buffer per UDP socket (payload bytes). Default 16 KiB.
    pub udp_tx_buffer: usize,
    /// Datagrams each UDP buffer holds at most. Default 32.
    pub udp_packets: usize,
    /// A TCP connection is aborted when the peer acknowledges nothing for this long while data or a FIN
    /// is outstanding (smoltcp `set_timeout`). Default 60 s.
    pub tcp_timeout: Duration,
    /// [`crate::TcpStream::connect`] gives up with [`Error::TimedOut`] after this long. Default 20 s.
    pub connect_timeout: Duration,
    /// A connection the app dropped may finish its close handshake for this long; then it is reset and
    /// reclaimed. Default 30 s.
    pub close_timeout: Duration,
    /// DNS lookups that may run at once. Default 4.
    pub dns_queries: usize,
    /// New TCP sockets start with Nagle's algorithm off (as after `set_nodelay(true)`). Default false, as
    /// in std; servers writing whole responses at once may prefer true.
    pub tcp_nodelay: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            tcp_rx_buffer: 256 * 1024,
            tcp_tx_buffer: 512 * 1024,
            tcp_buffer_budget: None,
            max_sockets: 1280,
            backlog: 8,
            udp_rx_buffer: 16 * 1024,
            udp_tx_buffer: 16 * 1024,
            udp_packets: 32,
            tcp_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(20),
            close_timeout: Duration::from_secs(30),
            dns_queries: 4,
            tcp_nodelay: false,
        }
    }
}

fn check(key: &'static str, value: usize, min: usize, max: usize, expected: &'static str) -> Result<()> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(Error::InvalidConfig { key, value: value.to_string(), expected })
    }
}

impl Config {
    /// Checks every field. Errors: [`Error::InvalidConfig`] naming the field (e.g. a TCP buffer under
    /// 1 KiB or over smoltcp's 1 GiB window limit, RFC 7323 §2.3).
    pub fn validate(&self) -> Result<()> {
        check("tcp_rx_buffer", self.tcp_rx_buffer, 1024, 1 << 30, "1024..=1073741824 bytes")?;
        check("tcp_tx_buffer", self.tcp_tx_buffer, 1024, 1 << 30, "1024..=1073741824 bytes")?;
        check("max_sockets", self.max_sockets, 1, 1 << 20, "1..=1048576 sockets")?;
        check("backlog", self.backlog, 1, self.max_sockets, "1..=max_sockets")?;
        check("udp_rx_buffer", self.udp_rx_buffer, 64, 1 << 30, "64..=1073741824 bytes")?;
        check("udp_tx_buffer", self.udp_tx_buffer, 64, 1 << 30, "64..=1073741824 bytes")?;
        check("udp_packets", self.udp_packets, 1, 1 << 16, "1..=65536 datagrams")?;
        check("dns_queries", self.dns_queries, 1, 256, "1..=256 lookups")?;
        for (key, d) in [
            ("tcp_timeout", self.tcp_timeout),
            ("connect_timeout", self.connect_timeout),
            ("close_timeout", self.close_timeout),
        ] {
            if d.is_zero() {
                return Err(Error::InvalidConfig { key, value: "0".into(), expected: "a non-zero duration" });
            }
        }
        Ok(())
    }
}

/// A static IPv4 configuration (kernel options `ip=A.B.C.D/N gw=A.B.C.D dns=A.B.C.D`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticIpv4 {
    /// The interface address.
    pub address: Ipv4Addr,
    /// Prefix length of the on-link subnet (bits, 0..=32).
    pub prefix_len: u8,
    /// Default gateway, inside the subnet.
    pub gateway: Option<Ipv4Addr>,
    /// DNS server.
    pub dns: Option<Ipv4Addr>,
}

/// How the interface gets its IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpSetup {
    /// DHCPv4 (RFC 2131) with smoltcp's client; the lease brings address, gateway and DNS servers.
    Dhcp,
    /// A fixed configuration.
    Static(StaticIpv4),
}

const IP_EXPECTED: &str = "an IPv4 address with prefix length, e.g. 10.0.2.15/24";

fn bad(key: &'static str, value: &str, expected: &'static str) -> Error {
    Error::InvalidConfig { key, value: String::from(value), expected }
}

fn parse_addr(key: &'static str, value: &str, expected: &'static str) -> Result<Ipv4Addr> {
    let a: Ipv4Addr = value.parse().map_err(|_| bad(key, value, expected))?;
    if a.is_unspecified() || a.is_broadcast() || a.is_multicast() {
        return Err(bad(key, value, "a unicast IPv4 address (not 0.0.0.0, 255.255.255.255 or multicast)"));
    }
    Ok(a)
}

fn mask(prefix_len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix_len)).unwrap_or(0)
}

impl IpSetup {
    /// Reads `ip=`, `gw=` and `dns=` from the kernel command line: static when `ip=` is given, else DHCP.
    /// Errors: see [`IpSetup::parse`].
    pub fn from_cmdline(cmdline: &Cmdline) -> Result<Self> {
        Self::parse(cmdline.option("ip"), cmdline.option("gw"), cmdline.option("dns"))
    }

    /// Parses the option values. Errors: [`Error::InvalidConfig`] when `ip` is not `A.B.C.D/N` with
    /// N ≤ 32 and a unicast host address (not the subnet's network or broadcast address), when `gw` is
    /// not a unicast address inside that subnet (other than `ip` itself), when `dns` is not a unicast
    /// address, or when `gw`/`dns` come without `ip`.
    pub fn parse(ip: Option<&str>, gw: Option<&str>, dns: Option<&str>) -> Result<Self> {
        let Some(ip) = ip else {
            if let Some(g) = gw {
                return Err(bad("gw", g, "ip= as well (without ip= the gateway comes from DHCP)"));
            }
            if let Some(d) = dns {
                return Err(bad("dns", d, "ip= as well (without ip= the DNS server comes from DHCP)"));
            }
            return Ok(Self::Dhcp);
        };
        let (addr, prefix) = ip.split_once('/').ok_or_else(|| bad("ip", ip, IP_EXPECTED))?;
        let address = parse_addr("ip", addr, IP_EXPECTED)?;
        let prefix_len: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| bad("ip", ip, "a prefix length 0..=32 after `/`, e.g. 10.0.2.15/24"))?;
        let m = mask(prefix_len);
        let host = u32::from(address) & !m;
        if prefix_len <= 30 && (host == 0 || host == !m) {
            return Err(bad("ip", ip, "a host address, not the subnet's network or broadcast address"));
        }
        let gateway = match gw {
            None => None,
            Some(g) => {
                let a = parse_addr("gw", g, "an IPv4 address, e.g. 10.0.2.2")?;
                if (u32::from(a) ^ u32::from(address)) & m != 0 {
                    return Err(bad("gw", g, "a gateway inside the subnet of ip="));
                }
                if a == address {
                    return Err(bad("gw", g, "a gateway other than the interface address ip="));
                }
                Some(a)
            }
        };
        let dns = dns.map(|d| parse_addr("dns", d, "an IPv4 address, e.g. 10.0.2.3")).transpose()?;
        Ok(Self::Static(StaticIpv4 { address, prefix_len, gateway, dns }))
    }
}
