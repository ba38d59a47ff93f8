//! `httpd`: the HTTP/1.1 appliance. Routes `/` (HTML), `/health` (JSON), `/bytes/N` (N pattern bytes);
//! keep-alive, pipelining, bounded memory per connection, idle connections closed after a timeout.
//!
//! App arguments (`key=value`, after `--` on the kernel command line):
//! - `port=80` TCP port to listen on;
//! - `message=TEXT` the root page's message (quote it: `message="hello there"`);
//! - `max_connections=1024` concurrent connections; more are accepted and closed at once;
//! - `backlog=128` listening sockets kept ready: smoltcp has no SYN queue, so a burst of more simultaneous
//!   connection attempts than this within one network poll is refused with RST;
//! - `idle_timeout_ms=30000` a connection with no complete request for this long is closed (408 if a request
//!   was half received).
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

mod http;

use alloc::string::String;
use alloc::vec;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};
use zirvium::net::{TcpListener, TcpStream};
use zirvium::time::{timeout, Duration, Instant};

zirvium::app!(run);

/// Server settings from the app arguments.
#[derive(Debug, Clone)]
struct Settings {
    port: u16,
    message: String,
    max_connections: u64,
    backlog: usize,
    idle_timeout: Duration,
    http: http::Config,
}

/// A bad app argument.
#[derive(Debug)]
struct ArgError(String);

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "httpd: {}", self.0)
    }
}

fn parse_args<'a>(args: impl Iterator<Item = &'a str>) -> Result<Settings, ArgError> {
    let mut s = Settings {
        port: 80,
        message: String::from("Hello from a Zirvium appliance."),
        max_connections: 1024,
        backlog: 128,
        idle_timeout: Duration::from_secs(30),
        http: http::Config::default(),
    };
    for a in args {
        let (k, v) = a.split_once('=').ok_or_else(|| ArgError(alloc::format!("argument `{a}` is not key=value")))?;
        let num = |v: &str| v.parse::<u64>().map_err(|_| ArgError(alloc::format!("{k}={v}: expected a number")));
        match k {
            "port" => {
                s.port = u16::try_from(num(v)?).map_err(|_| ArgError(alloc::format!("port={v}: out of range")))?
            }
            "message" => s.message = String::from(v),
            "max_connections" => s.max_connections = num(v)?.max(1),
            "backlog" => s.backlog = usize::try_from(num(v)?.max(1)).unwrap_or(usize::MAX),
            "idle_timeout_ms" => s.idle_timeout = Duration::from_millis(num(v)?.max(1)),
            "max_body_bytes" => s.http.max_body_bytes = num(v)?,
            _ => {
                return Err(ArgError(alloc::format!(
                    "unknown argument `{k}` (known: port, message, max_connections, backlog, idle_timeout_ms, max_body_bytes)"
                )))
            }
        }
    }
    Ok(s)
}

static REQUESTS: AtomicU64 = AtomicU64::new(0);
static OPEN: AtomicU64 = AtomicU64::new(0);
static FIRST_RESPONSE: AtomicU64 = AtomicU64::new(0);

async fn run() -> Result<(), ArgError> {
    let settings: &'static Settings =
        alloc::boxed::Box::leak(alloc::boxed::Box::new(parse_args(zirvium::env::args())?));
    let listener =
        TcpListener::bind(settings.port).map_err(|e| ArgError(alloc::format!("bind port {}: {e}", settings.port)))?;
    log::info!("httpd listening on port {} (max {} connections)", settings.port, settings.max_connections);
    zirvium::println!("listening on port {}", settings.port);
    loop {
        let (stream, peer) = match listener.accept().await {
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
            serve(stream, settings).await;
            OPEN.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn serve(mut stream: TcpStream, s: &'static Settings) {
    let mut conn = http::Connection::new(&s.http);
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

async fn write_out(
    conn: &mut http::Connection,
    stream: &mut TcpStream,
    tx: &mut [u8],
) -> Result<(), zirvium::net::Error> {
    let mut wrote = false;
    while conn.has_output() {
        let m = conn.poll_output(tx);
        stream.write_all(&tx[..m]).await?;
        wrote = true;
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

    #[test]
    fn parses_arguments() {
        let s = parse_args(["port=8080", "message=hi there", "idle_timeout_ms=500"].into_iter()).unwrap();
        assert_eq!(s.port, 8080);
        assert_eq!(s.message, "hi there");
        assert_eq!(s.idle_timeout, Duration::from_millis(500));
        assert!(parse_args(["port=70000"].into_iter()).is_err());
        assert!(parse_args(["bogus=1"].into_iter()).unwrap_err().0.contains("bogus"));
        assert!(parse_args(["port"].into_iter()).is_err());
    }
}
