//! Port forwards for QEMU user networking (slirp), written `[tcp:|udp:]HOST:GUEST` on the command line.
//!
//! Each becomes one `hostfwd=PROTO::HOST-:GUEST` entry of `-netdev user` (QEMU manual, "Network options",
//! `-netdev user,...,hostfwd=[tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport`).

use std::fmt;
use std::str::FromStr;

/// Transport protocol of a [`PortForward`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP (the default when no prefix is given).
    Tcp,
    /// UDP (`udp:` prefix).
    Udp,
}

impl Protocol {
    /// The lower-case name QEMU's `hostfwd=` uses: `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One forward from a host port to a guest port (both 1..=65535).
///
/// Parsed from `HOST:GUEST` (TCP), `tcp:HOST:GUEST` or `udp:HOST:GUEST`; see [`ForwardError`] for rejected input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortForward {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Port QEMU listens on, on all host addresses.
    pub host: u16,
    /// Port inside the guest (guest address 10.0.2.15 from slirp's DHCP).
    pub guest: u16,
}

impl PortForward {
    /// A TCP forward `host` → `guest`.
    pub fn tcp(host: u16, guest: u16) -> Self {
        PortForward { protocol: Protocol::Tcp, host, guest }
    }

    /// A UDP forward `host` → `guest`.
    pub fn udp(host: u16, guest: u16) -> Self {
        PortForward { protocol: Protocol::Udp, host, guest }
    }

    /// The value of one `hostfwd=` entry of `-netdev user`, e.g. `tcp::8080-:80`.
    pub fn hostfwd(&self) -> String {
        format!("{}::{}-:{}", self.protocol, self.host, self.guest)
    }
}

impl fmt::Display for PortForward {
    /// The command-line syntax, always with the protocol: `tcp:8080:80`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.protocol, self.host, self.guest)
    }
}

/// Why a `--port` value was rejected. Every variant carries the whole input so the message can be acted on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// Not two or three `:`-separated fields.
    #[error("port forward `{input}`: expected [tcp:|udp:]HOST:GUEST, e.g. 8080:80 or udp:5353:53")]
    Syntax {
        /// The rejected value.
        input: String,
    },
    /// The prefix is neither `tcp` nor `udp`.
    #[error("port forward `{input}`: unknown protocol `{protocol}` (use tcp or udp)")]
    Protocol {
        /// The rejected value.
        input: String,
        /// The prefix found.
        protocol: String,
    },
    /// A port is not a decimal number in 1..=65535.
    #[error("port forward `{input}`: {side} port `{value}` is not a number in 1..=65535")]
    Port {
        /// The rejected value.
        input: String,
        /// `host` or `guest`.
        side: &'static str,
        /// The field found.
        value: String,
    },
}

impl FromStr for PortForward {
    type Err = ForwardError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fields: Vec<&str> = input.split(':').collect();
        let (protocol, host, guest) = match fields.as_slice() {
            [host, guest] => (Protocol::Tcp, *host, *guest),
            [proto, host, guest] => {
                let protocol = match proto.to_ascii_lowercase().as_str() {
                    "tcp" => Protocol::Tcp,
                    "udp" => Protocol::Udp,
                    _ => return Err(ForwardError::Protocol { input: input.to_owned(), protocol: (*proto).to_owned() }),
                };
                (protocol, *host, *guest)
            }
            _ => return Err(ForwardError::Syntax { input: input.to_owned() }),
        };
        let port = |side: &'static str, value: &str| -> Result<u16, ForwardError> {
            // `u16::from_str` accepts a leading `+`; only plain digits are a port here.
            let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
            match value.parse::<u16>() {
                Ok(p) if digits && p != 0 => Ok(p),
                _ => Err(ForwardError::Port { input: input.to_owned(), side, value: value.to_owned() }),
            }
        };
        Ok(PortForward { protocol, host: port("host", host)?, guest: port("guest", guest)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_default_and_prefixes() {
        assert_eq!("8080:80".parse(), Ok(PortForward::tcp(8080, 80)));
        assert_eq!("tcp:1:65535".parse(), Ok(PortForward::tcp(1, 65535)));
        assert_eq!("udp:5353:53".parse(), Ok(PortForward::udp(5353, 53)));
        assert_eq!("UDP:7000:7".parse(), Ok(PortForward::udp(7000, 7)));
    }

    #[test]
    fn hostfwd_and_display() {
        assert_eq!(PortForward::tcp(8080, 80).hostfwd(), "tcp::8080-:80");
        assert_eq!(PortForward::udp(5555, 7).hostfwd(), "udp::5555-:7");
        assert_eq!(PortForward::udp(5555, 7).to_string(), "udp:5555:7");
    }

    #[test]
    fn rejects_bad_syntax() {
        for bad in ["", "8080", "8080-80", "a:b:c:d", "tcp:1:2:3"] {
            assert_eq!(bad.parse::<PortForward>(), Err(ForwardError::Syntax { input: bad.into() }), "{bad}");
        }
    }

    #[test]
    fn rejects_bad_protocol() {
        let err = "sctp:1:2".parse::<PortForward>().unwrap_err();
        assert_eq!(err, ForwardError::Protocol { input: "sctp:1:2".into(), protocol: "sctp".into() });
        assert_eq!(err.to_string(), "port forward `sctp:1:2`: unknown protocol `sctp` (use tcp or udp)");
    }

    #[test]
    fn rejects_bad_ports() {
        let cases = [
            ("0:80", "host", "0"),
            ("80:0", "guest", "0"),
            ("65536:80", "host", "65536"),
            ("+80:80", "host", "+80"),
            ("80:-1", "guest", "-1"),
            (":80", "host", ""),
            ("udp:80:", "guest", ""),
            ("http:80", "host", "http"),
            (" 80:80", "host", " 80"),
        ];
        for (input, side, value) in cases {
            assert_eq!(
                input.parse::<PortForward>(),
                Err(ForwardError::Port { input: input.into(), side, value: value.into() }),
                "{input}"
            );
        }
        assert_eq!(
            "0:80".parse::<PortForward>().unwrap_err().to_string(),
            "port forward `0:80`: host port `0` is not a number in 1..=65535"
        );
    }
}
