//! App arguments every HTTP appliance shares ([`parse_args`] into [`Settings`]), given as `key=value` after `--`
//! on the kernel command line, common to `httpd` and `kv`:
//! - `port=80` TCP port to listen on;
//! - `message=TEXT` the root page's message (quote it: `message="hello there"`);
//! - `max_connections=1024` concurrent connections; more are accepted and closed at once;
//! - `backlog=8` listening sockets kept ready: smoltcp has no SYN queue, so each SYN takes one, and the stack
//!   makes a new one after every received frame that took one — a few absorb bursts of hundreds of connects
//!   (`wrk -c256` with `Connection: close` had no connect refused even with 1), while every idle one costs
//!   time: smoltcp walks all sockets for each segment it sends (with 128, 10 MiB downloads were 1.3–1.5× and
//!   `Connection: close` requests 1.2× slower under TCG);
//! - `idle_timeout_ms=30000` a connection with no complete request for this long is closed (408 if a request
//!   was half received);
//! - `header_timeout_ms=20000` a request head must arrive whole within this long of its first byte (the first
//!   request's: of the connection's start), however slowly it trickles in; else 408 and close (what nginx's
//!   `client_header_timeout` and Apache's `RequestReadTimeout header=` do against slowloris clients);
//! - `max_body_bytes=1048576` largest request body (413 beyond).
//!
//! An app adds its own keys through the `extra` callback of [`parse_args`].

use crate::config::Config;
use alloc::string::String;
use core::fmt;
use libos::time::Duration;

/// Server settings from the app arguments.
#[derive(Debug, Clone)]
pub struct Settings {
    /// TCP port to listen on.
    pub port: u16,
    /// The root page's message.
    pub message: String,
    /// Concurrent connections; more are closed at once.
    pub max_connections: u64,
    /// Listening sockets kept ready (smoltcp has no SYN queue).
    pub backlog: usize,
    /// A connection with no complete request for this long is closed.
    pub idle_timeout: Duration,
    /// A request head must be complete this long after its first byte (the first request's: after the
    /// connection starts), else 408 and close.
    pub header_timeout: Duration,
    /// Limits of each connection.
    pub http: Config,
}

impl Settings {
    /// The defaults: port 80, `message`, 1024 connections, backlog 8, 30 s idle timeout, 20 s header timeout,
    /// [`Config`]'s defaults.
    pub fn new(message: &str) -> Settings {
        Settings {
            port: 80,
            message: String::from(message),
            max_connections: 1024,
            backlog: 8,
            idle_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(20),
            http: Config::default(),
        }
    }
}

/// A bad app argument, or a server that cannot start; the text names the app and what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgError(pub String);

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses `key=value` app arguments into `settings` (see the module docs for the keys). Each argument is first
/// offered to `extra(settings, key, value)`, which returns `Ok(true)` when it took it. Errors: an argument that
/// is not `key=value`, a bad number, an unknown key (the message lists `known`, the keys `extra` takes).
pub fn parse_args<'a>(
    app: &str,
    mut settings: Settings,
    args: impl Iterator<Item = &'a str>,
    known: &str,
    mut extra: impl FnMut(&mut Settings, &str, &str) -> Result<bool, ArgError>,
) -> Result<Settings, ArgError> {
    let s = &mut settings;
    for a in args {
        let (k, v) =
            a.split_once('=').ok_or_else(|| ArgError(alloc::format!("{app}: argument `{a}` is not key=value")))?;
        if extra(s, k, v)? {
            continue;
        }
        let num = |v: &str| parse_number(app, k, v);
        match k {
            "port" => {
                s.port =
                    u16::try_from(num(v)?).map_err(|_| ArgError(alloc::format!("{app}: port={v}: out of range")))?
            }
            "message" => s.message = String::from(v),
            "max_connections" => s.max_connections = num(v)?.max(1),
            "backlog" => s.backlog = usize::try_from(num(v)?.max(1)).unwrap_or(usize::MAX),
            "idle_timeout_ms" => s.idle_timeout = Duration::from_millis(num(v)?.max(1)),
            "header_timeout_ms" => s.header_timeout = Duration::from_millis(num(v)?.max(1)),
            "max_body_bytes" => s.http.max_body_bytes = num(v)?,
            _ => {
                let sep = if known.is_empty() { "" } else { ", " };
                return Err(ArgError(alloc::format!(
                    "{app}: unknown argument `{k}` (known: port, message, max_connections, backlog, idle_timeout_ms, \
                     header_timeout_ms, max_body_bytes{sep}{known})"
                )));
            }
        }
    }
    Ok(settings)
}

/// `value` of argument `key` as a decimal number. Errors: not a number.
pub fn parse_number(app: &str, key: &str, value: &str) -> Result<u64, ArgError> {
    value.parse::<u64>().map_err(|_| ArgError(alloc::format!("{app}: {key}={value}: expected a number")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, ArgError> {
        parse_args("httpd", Settings::new("hi"), args.iter().copied(), "", |_, _, _| Ok(false))
    }

    #[test]
    fn parses_arguments() {
        let s = parse(&["port=8080", "message=hi there", "idle_timeout_ms=500", "max_body_bytes=7"]).unwrap();
        assert_eq!(s.port, 8080);
        assert_eq!(s.message, "hi there");
        assert_eq!(s.idle_timeout, Duration::from_millis(500));
        assert_eq!(s.http.max_body_bytes, 7);
        assert_eq!(parse(&[]).unwrap().port, 80);
        assert!(parse(&["port=70000"]).unwrap_err().0.contains("out of range"));
        assert!(parse(&["bogus=1"]).unwrap_err().0.contains("bogus"));
        assert!(parse(&["port"]).unwrap_err().0.contains("key=value"));
        assert!(parse(&["backlog=x"]).unwrap_err().0.contains("expected a number"));
    }

    #[test]
    fn apps_add_their_own_arguments() {
        let mut seen = 0;
        let s = parse_args("kv", Settings::new("kv"), ["limit=5", "port=81"].into_iter(), "limit", |s, k, v| {
            if k == "limit" {
                seen = parse_number("kv", k, v)?;
                s.http.max_body_bytes = seen;
                return Ok(true);
            }
            Ok(false)
        })
        .unwrap();
        assert_eq!((seen, s.http.max_body_bytes, s.port), (5, 5, 81));
        let e = parse_args("kv", Settings::new("kv"), ["nope=1"].into_iter(), "limit", |_, _, _| Ok(false));
        assert!(e.unwrap_err().0.contains("max_body_bytes, limit)"));
    }
}
