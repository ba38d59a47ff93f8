//! The kernel command line: `key=value` kernel options, then `--`, then the app's arguments. Tokens are
//! separated by spaces; double quotes group a token with spaces (`msg="hello world"`). QEMU's microvm
//! appends `virtio_mmio.device=SIZE@ADDR:IRQ` tokens (Linux `Documentation/admin-guide/kernel-parameters.txt`,
//! "virtio_mmio.device") at the end; they are collected separately wherever they appear.

use alloc::vec::Vec;
use core::fmt;

/// Kernel options libos and its platforms understand, with the values they take (for error messages).
pub const KNOWN_OPTIONS: &[(&str, &str)] = &[
    ("loglevel", "off|error|warn|info|debug|trace"),
    ("ip", "static IPv4 address with prefix length, e.g. 10.0.2.15/24"),
    ("gw", "IPv4 default gateway, e.g. 10.0.2.2"),
    ("dns", "IPv4 DNS server, e.g. 10.0.2.3"),
];

/// Errors in the command line; each names the offending token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmdlineError {
    /// A kernel option nobody knows.
    UnknownOption(&'static str),
    /// A kernel token that is not `key=value`.
    NotKeyValue(&'static str),
    /// A value that does not parse.
    BadValue {
        /// The option's key, e.g. `loglevel`.
        key: &'static str,
        /// The value as given on the command line.
        value: &'static str,
        /// What the key accepts, e.g. "off|error|warn|info|debug|trace".
        expected: &'static str,
    },
    /// A `"` without its closing partner.
    UnterminatedQuote,
}

impl fmt::Display for CmdlineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownOption(k) => {
                write!(f, "unknown kernel option `{k}`; known options:")?;
                for (k, v) in KNOWN_OPTIONS {
                    write!(f, " {k}=<{v}>")?;
                }
                write!(f, " (app arguments go after `--`)")
            }
            Self::NotKeyValue(t) => write!(f, "kernel option `{t}` is not key=value (app arguments go after `--`)"),
            Self::BadValue { key, value, expected } => write!(f, "kernel option {key}={value}: expected {expected}"),
            Self::UnterminatedQuote => write!(f, "unterminated `\"` in the kernel command line"),
        }
    }
}

/// The parsed command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmdline {
    /// Kernel options in order, `(key, value)`.
    pub options: Vec<(&'static str, &'static str)>,
    /// Values of `virtio_mmio.device=` tokens (`SIZE@ADDR:IRQ`).
    pub virtio_mmio: Vec<&'static str>,
    /// The app's arguments (after `--`), quotes removed.
    pub app_args: Vec<&'static str>,
}

fn tokens(s: &'static str) -> Result<Vec<&'static str>, CmdlineError> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        if i == b.len() {
            break;
        }
        let start = i;
        let mut quoted = false;
        while i < b.len() && (quoted || b[i] != b' ') {
            if b[i] == b'"' {
                quoted = !quoted;
            }
            i += 1;
        }
        if quoted {
            return Err(CmdlineError::UnterminatedQuote);
        }
        out.push(&s[start..i]);
    }
    Ok(out)
}

/// Removes one pair of quotes around a whole token or around a value after `=`. Only borrowed slices are
/// returned, so inner quotes are kept as they are.
fn unquote(t: &'static str) -> &'static str {
    if t.len() >= 2 && t.starts_with('"') && t.ends_with('"') {
        return &t[1..t.len() - 1];
    }
    t
}

impl Cmdline {
    /// Parses `s`. Errors: unknown option, non key=value kernel token, bad value, unterminated quote.
    pub fn parse(s: &'static str) -> Result<Self, CmdlineError> {
        let mut c = Cmdline::default();
        let mut in_app = false;
        for t in tokens(s)? {
            if let Some(v) = t.strip_prefix("virtio_mmio.device=") {
                c.virtio_mmio.push(v);
                continue;
            }
            if in_app {
                c.app_args.push(unquote(t));
                continue;
            }
            if t == "--" {
                in_app = true;
                continue;
            }
            let (k, v) = t.split_once('=').ok_or(CmdlineError::NotKeyValue(t))?;
            let v = unquote(v);
            let Some((_, expected)) = KNOWN_OPTIONS.iter().find(|(name, _)| *name == k) else {
                return Err(CmdlineError::UnknownOption(k));
            };
            if k == "loglevel" && parse_level(v).is_none() {
                return Err(CmdlineError::BadValue { key: k, value: v, expected });
            }
            c.options.push((k, v));
        }
        Ok(c)
    }

    /// The last value given for kernel option `key`.
    pub fn option(&self, key: &str) -> Option<&'static str> {
        self.options.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// The log level from `loglevel=` (default `info`).
    pub fn log_level(&self) -> log::LevelFilter {
        self.option("loglevel").and_then(parse_level).unwrap_or(log::LevelFilter::Info)
    }
}

fn parse_level(v: &str) -> Option<log::LevelFilter> {
    Some(match v {
        "off" => log::LevelFilter::Off,
        "error" => log::LevelFilter::Error,
        "warn" => log::LevelFilter::Warn,
        "info" => log::LevelFilter::Info,
        "debug" => log::LevelFilter::Debug,
        "trace" => log::LevelFilter::Trace,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn splits_kernel_options_app_args_and_virtio_mmio() {
        let c = Cmdline::parse("loglevel=debug ip=10.0.2.15/24 -- a \"b c\" x=1 virtio_mmio.device=512@0xfeb00e00:12")
            .unwrap();
        assert_eq!(c.options, vec![("loglevel", "debug"), ("ip", "10.0.2.15/24")]);
        assert_eq!(c.app_args, vec!["a", "b c", "x=1"]);
        assert_eq!(c.virtio_mmio, vec!["512@0xfeb00e00:12"]);
        assert_eq!(c.log_level(), log::LevelFilter::Debug);
        assert_eq!(c.option("ip"), Some("10.0.2.15/24"));
    }

    #[test]
    fn empty_and_spaces() {
        assert_eq!(Cmdline::parse("").unwrap(), Cmdline::default());
        assert_eq!(Cmdline::parse("   --   ").unwrap().app_args.len(), 0);
    }

    #[test]
    fn errors_name_the_token() {
        assert_eq!(Cmdline::parse("bogus=1").unwrap_err(), CmdlineError::UnknownOption("bogus"));
        assert!(alloc::format!("{}", Cmdline::parse("bogus=1").unwrap_err()).contains("bogus"));
        assert_eq!(Cmdline::parse("hello").unwrap_err(), CmdlineError::NotKeyValue("hello"));
        assert!(matches!(Cmdline::parse("loglevel=loud"), Err(CmdlineError::BadValue { .. })));
        assert_eq!(Cmdline::parse("-- \"open").unwrap_err(), CmdlineError::UnterminatedQuote);
    }
}
