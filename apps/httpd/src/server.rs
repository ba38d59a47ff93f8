//! The TCP glue every HTTP appliance shares: app arguments ([`parse_args`]), the accept loop ([`run`]) and the
//! per-connection driver that feeds a [`Connection`] from a `zirvium::net::TcpStream` and writes its output
//! back, with keep-alive, an idle timeout and a cap on open connections.
//!
//! App arguments (`key=value`, after `--` on the kernel command line), common to `httpd` and `kv`:
//! - `port=80` TCP port to listen on;
//! - `message=TEXT` the root page's message (quote it: `message="hello there"`);
//! - `max_connections=1024` concurrent connections; more are accepted and closed at once;
//! - `backlog=128` listening sockets kept ready: smoltcp has no SYN queue, so a burst of more simultaneous
//!   connection attempts than this within one network poll is refused with RST;
//! - `idle_timeout_ms=30000` a connection with no complete request for this long is closed (408 if a request
//!   was half received);
//! - `max_body_bytes=1048576` largest request body (413 beyond).
//!
//! An app adds its own keys through the `extra` callback of [`parse_args`].

use crate::http::{self, Connection, Handler};
use alloc::string::String;
use alloc::vec;
use core::fmt;
use core::future::Future;
use core::sync::atomic::{AtomicU64, Ordering};
use zirvium::net::{TcpListener, TcpStream};
use zirvium::time::{timeout, Duration, Instant};

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
    /// Limits of each connection.
    pub http: http::Config,
}

impl Settings {
    /// The defaults: port 80, `message`, 1024 connections, backlog 128, 30 s idle timeout, [`http::Config`]'s
    /// defaults.
    pub fn new(message: &str) -> Settings {
        Settings {
            port: 80,
            message: String::from(message),
            max_connections: 1024,
            backlog: 128,
            idle_timeout: Duration::from_secs(30),
            http: http::Config::default(),
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
            "max_body_bytes" => s.http.max_body_bytes = num(v)?,
            _ => {
                let sep = if known.is_empty() { "" } else { ", " };
                return Err(ArgError(alloc::format!(
                    "{app}: unknown argument `{k}` (known: port, message, max_connections, backlog, idle_timeout_ms, \
                     max_body_bytes{sep}{known})"
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

/// Requests answered, all connections (reported by `/health`).
static REQUESTS: AtomicU64 = AtomicU64::new(0);
/// Connections open now.
static OPEN: AtomicU64 = AtomicU64::new(0);
/// Set when the first response has been written (the boot timeline is logged then).
static FIRST_RESPONSE: AtomicU64 = AtomicU64::new(0);

/// Listens on `settings.port` and serves every connection with `handler` for the routes the HTTP core does not
/// own; prints `APP listening on port N` once ready. Returns `Ok` after a graceful shutdown requested by the host
/// ([`zirvium::shutdown`]: open connections get up to 5 s), `Err` when the port cannot be bound.
pub async fn run(app: &'static str, settings: Settings, handler: &'static dyn Handler) -> Result<(), ArgError> {
    let settings: &'static Settings = alloc::boxed::Box::leak(alloc::boxed::Box::new(settings));
    let listener = TcpListener::bind(settings.port)
        .map_err(|e| ArgError(alloc::format!("{app}: bind port {}: {e}", settings.port)))?;
    log::info!("{app} listening on port {} (max {} connections)", settings.port, settings.max_connections);
    zirvium::println!("{app} listening on port {}", settings.port);
    loop {
        // The next connection, unless the host asks the VM to shut down first.
        let accepted = {
            let mut accept = core::pin::pin!(listener.accept());
            let mut stop = core::pin::pin!(zirvium::shutdown::requested());
            core::future::poll_fn(|cx| {
                if let core::task::Poll::Ready(kind) = stop.as_mut().poll(cx) {
                    return core::task::Poll::Ready(Err(kind));
                }
                accept.as_mut().poll(cx).map(Ok)
            })
            .await
        };
        let accepted = match accepted {
            Ok(a) => a,
            Err(kind) => {
                drain(app, kind).await;
                return Ok(());
            }
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                log::warn!("accept: {e}");
                zirvium::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if OPEN.load(Ordering::Relaxed) >= settings.max_connections {
            log::warn!("connection from {peer} refused: {} connections open", settings.max_connections);
            stream.abort();
            continue;
        }
        OPEN.fetch_add(1, Ordering::Relaxed);
        zirvium::task::spawn(async move {
            serve(stream, settings, handler).await;
            OPEN.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// How long a graceful shutdown waits for open connections to finish (they are idle or mid-response).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// After a host shutdown request: stops accepting and waits up to [`DRAIN_TIMEOUT`] for open connections.
async fn drain(app: &str, kind: zirvium::shutdown::ShutdownKind) {
    let open = OPEN.load(Ordering::Relaxed);
    log::info!("{app}: {kind:?} requested by the host; waiting up to 5 s for {open} open connections");
    let deadline = zirvium::time::Instant::now() + DRAIN_TIMEOUT;
    while OPEN.load(Ordering::Relaxed) > 0 && zirvium::time::Instant::now() < deadline {
        zirvium::time::sleep(Duration::from_millis(20)).await;
    }
    zirvium::println!("{app}: shut down gracefully ({kind:?})");
}

/// Drives one connection until it closes.
async fn serve(mut stream: TcpStream, s: &'static Settings, handler: &'static dyn Handler) {
    let mut conn = Connection::with_handler(&s.http, handler);
    let mut rx = vec![0u8; 4096];
    let mut tx = vec![0u8; 16 * 1024];
    loop {
        let n = match timeout(s.idle_timeout, stream.read(&mut rx)).await {
            Ok(Ok(0)) => {
                conn.receive_eof();
                0
            }
            Ok(Ok(n)) => n,
            Ok(Err(_)) => return,
            Err(_) => {
                // Idle timeout: answer 408 if a request was half received (else just close).
                if !conn.is_idle() {
                    let _ = conn.timeout();
                }
                let _ = write_out(&mut conn, &mut stream, &mut tx).await;
                let _ = stream.shutdown().await;
                return;
            }
        };
        let mut off = 0;
        loop {
            let ctx = http::Context {
                platform: zirvium::env::platform(),
                root_message: &s.message,
                uptime_ms: Instant::now().as_nanos() / 1_000_000,
                requests: REQUESTS.load(Ordering::Relaxed),
                connections: OPEN.load(Ordering::Relaxed),
            };
            let r = conn.receive(&rx[off..n], &ctx);
            off += r.consumed;
            REQUESTS.fetch_add(r.requests, Ordering::Relaxed);
            if let Some(e) = r.error {
                log::debug!("bad request: {e} ({})", e.status_code());
            }
            if write_out(&mut conn, &mut stream, &mut tx).await.is_err() {
                return;
            }
            if conn.wants_close() || n == 0 {
                let _ = stream.shutdown().await;
                return;
            }
            if off >= n {
                break;
            }
        }
    }
}

/// Writes all queued output; logs a response whose content failed part-way (the connection then closes).
async fn write_out(
    conn: &mut Connection<'_>,
    stream: &mut TcpStream,
    tx: &mut [u8],
) -> Result<(), zirvium::net::Error> {
    let mut wrote = false;
    while conn.has_output() {
        let m = conn.poll_output(tx);
        stream.write_all(&tx[..m]).await?;
        wrote = true;
    }
    if let Some(e) = conn.take_content_error() {
        log::warn!("{e}; closing the connection");
    }
    if wrote && FIRST_RESPONSE.swap(1, Ordering::Relaxed) == 0 {
        #[cfg(target_os = "none")]
        {
            let t = zirvium::env::boot_timeline();
            let parts: alloc::vec::Vec<String> = t.iter().map(|(n, us)| alloc::format!("{n} {us} us")).collect();
            log::info!(
                "first response at {} us after entry; boot timeline: {}",
                Instant::now().as_nanos() / 1000,
                parts.join(", ")
            );
        }
    }
    Ok(())
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
