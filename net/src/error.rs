//! Errors of the network stack: one [`Error`] enum for configuration, sockets, DNS and the device, each with
//! `Display` text a person can act on.

use alloc::string::String;
use core::fmt;
use libos::dev::DeviceError;

/// Result of a network operation.
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// What went wrong in the network stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The stack has not been started (`net::start`) — no NIC, or the call failed.
    NotStarted,
    /// `net::start` or `net::configure` was called after the stack had already started.
    AlreadyStarted,
    /// No network device was found, so there is nothing to start the stack on.
    NoNic,
    /// A configuration value (kernel option `ip=`/`gw=`/`dns=` or a [`crate::Config`] field) is malformed.
    InvalidConfig {
        /// The option or field, e.g. "ip" or "tcp_rx_buffer".
        key: &'static str,
        /// The value given.
        value: String,
        /// What was expected instead.
        expected: &'static str,
    },
    /// The TCP or UDP port is already bound by another socket of this stack.
    AddrInUse(u16),
    /// The stack already holds its maximum number of TCP/UDP sockets ([`crate::Config::max_sockets`]).
    TooManySockets {
        /// The configured limit.
        limit: usize,
    },
    /// The kernel heap is nearly full (`libos::mem::pressure`) or cannot spare a socket's buffers: a listener
    /// keeps no listening socket, so new connections are refused (RST), and `connect` fails, until memory is freed.
    LowMemory,
    /// All ephemeral ports (49152..=65535, RFC 6335 §6) are in use by open connections.
    EphemeralPortsExhausted,
    /// The peer reset the connection (RST), or it was aborted after a retransmission timeout.
    ConnectionReset,
    /// The peer refused the connection (RST in reply to our SYN).
    ConnectionRefused,
    /// The peer did not answer within the timeout.
    TimedOut,
    /// The socket is not connected.
    NotConnected,
    /// The sending half of the connection was shut down (write after `shutdown`).
    BrokenPipe,
    /// The interface has no IPv4 address yet (DHCP still running) or no route to the destination.
    NoRoute,
    /// The request needs something this stack does not implement (e.g. IPv6).
    Unsupported(&'static str),
    /// A port number that cannot be used here (e.g. 0 as a destination port).
    InvalidPort(u16),
    /// A datagram larger than the socket or the link can carry (bytes).
    MessageTooLarge {
        /// Datagram payload length (bytes).
        len: usize,
        /// Largest payload that can be sent (bytes).
        max: usize,
    },
    /// A DNS lookup failed.
    Dns(DnsError),
    /// The network device failed.
    Io(DeviceError),
}

/// Why a DNS lookup (RFC 1035) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    /// No DNS server is known: no `dns=` kernel option and no DHCP lease with one (yet).
    NoServer,
    /// The name is not a valid DNS name (empty label, label over 63 bytes).
    InvalidName(String),
    /// The name exceeds the 255-byte limit of RFC 1035 §2.3.4.
    NameTooLong(String),
    /// Every query slot is busy ([`crate::Config::dns_queries`] lookups run at once).
    TooManyQueries,
    /// The servers did not answer, or answered with an error or without an address.
    Failed(String),
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoServer => f.write_str("no DNS server configured (give dns= with ip=, or wait for the DHCP lease)"),
            Self::InvalidName(n) => write!(f, "`{n}` is not a valid DNS name"),
            Self::NameTooLong(n) => write!(f, "DNS name `{n}` is longer than 255 bytes"),
            Self::TooManyQueries => f.write_str("too many DNS lookups at once; retry later"),
            Self::Failed(n) => write!(f, "lookup of `{n}` failed (no answer or no IPv4 address)"),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotStarted => f.write_str("network stack not started (no NIC, or net::start failed)"),
            Self::AlreadyStarted => f.write_str("network stack already started; configure it before net::start"),
            Self::NoNic => f.write_str("no network device found (QEMU: add -device virtio-net-...,netdev=...)"),
            Self::InvalidConfig { key, value, expected } => {
                write!(f, "network option {key}={value}: expected {expected}")
            }
            Self::AddrInUse(p) => write!(f, "port {p} is already in use"),
            Self::TooManySockets { limit } => {
                write!(f, "socket limit of {limit} reached; close connections or raise Config::max_sockets")
            }
            Self::LowMemory => {
                f.write_str("the heap is nearly full: new connections are refused until memory is freed")
            }
            Self::EphemeralPortsExhausted => f.write_str("all ephemeral ports 49152..=65535 are in use"),
            Self::ConnectionReset => f.write_str("connection reset by peer"),
            Self::ConnectionRefused => f.write_str("connection refused"),
            Self::TimedOut => f.write_str("connection timed out"),
            Self::NotConnected => f.write_str("socket is not connected"),
            Self::BrokenPipe => f.write_str("write after shutdown"),
            Self::NoRoute => f.write_str("no IPv4 address or route yet (DHCP not bound, or no gateway)"),
            Self::Unsupported(what) => write!(f, "{what} is not supported"),
            Self::InvalidPort(p) => write!(f, "port {p} cannot be used here"),
            Self::MessageTooLarge { len, max } => write!(f, "datagram of {len} bytes exceeds the maximum of {max}"),
            Self::Dns(e) => write!(f, "DNS: {e}"),
            Self::Io(e) => write!(f, "network device: {e}"),
        }
    }
}

impl From<DeviceError> for Error {
    fn from(e: DeviceError) -> Self {
        Self::Io(e)
    }
}

impl From<DnsError> for Error {
    fn from(e: DnsError) -> Self {
        Self::Dns(e)
    }
}

impl core::error::Error for Error {}
impl core::error::Error for DnsError {}
