//! A minimal HTTP/1.1 client for the integration tests (RFC 9112): one request per connection
//! (`Connection: close`) or several on a keep-alive one, responses framed by `Content-Length` as Zirvium's
//! servers always send them; and many connections with requests in flight together ([`concurrent_gets`]).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use crate::{Vm, VmError};

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code, e.g. 200.
    pub status: u16,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// Content (empty for HEAD).
    pub body: Vec<u8>,
}

impl Response {
    /// The first field named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The content as text (lossy UTF-8), for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `method path` with `headers` and `body` (a `Content-Length` is added when `body` is non-empty or the
/// method is PUT/POST) to 127.0.0.1:`port` and reads the response. Timeout: 60 s per read/write.
/// Errors: connection failures, timeouts, a malformed or truncated response.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.set_write_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "PUT" || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut w = &s;
    w.write_all(head.as_bytes())?;
    w.write_all(body)?;
    let mut r = BufReader::new(&s);
    read_response(&mut r, method == "HEAD")
}

/// The memory figures of httpd's `/health` document (`"memory":{"total_bytes":N,"free_bytes":N,
/// "ballooned_bytes":N}`, libos `MemStats`): (total, free, ballooned) bytes; `None` when it has none.
pub fn health_memory(json: &str) -> Option<(u64, u64, u64)> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let m = v.get("memory")?;
    let n = |k: &str| m.get(k).and_then(serde_json::Value::as_u64);
    Some((n("total_bytes")?, n("free_bytes")?, n("ballooned_bytes")?))
}

/// `r`, or a [`VmError::Io`] saying what was being done (`what`) in VM `vm`.
pub fn io<T>(vm: &Vm, what: &str, r: std::io::Result<T>) -> Result<T, VmError> {
    r.map_err(|e| {
        let _ = vm.ensure(false, format_args!("{what}: {e}"));
        VmError::Io { what: format!("{}: {what}", vm.name()), source: e }
    })
}

/// `GET path`.
pub fn get(port: u16, path: &str) -> std::io::Result<Response> {
    request(port, "GET", path, &[], &[])
}

/// A keep-alive connection to 127.0.0.1:`port` (requests without `Connection: close`), 60 s timeouts.
pub fn keep_alive(port: u16) -> std::io::Result<BufReader<TcpStream>> {
    let s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.set_write_timeout(Some(Duration::from_secs(60)))?;
    Ok(BufReader::new(s))
}

/// `GET path` on the connection `c`; with `close`, its last request (`Connection: close`).
pub fn get_on(c: &mut BufReader<TcpStream>, path: &str, close: bool) -> std::io::Result<Response> {
    let connection = if close { "Connection: close\r\n" } else { "" };
    write!(c.get_mut(), "GET {path} HTTP/1.1\r\nHost: test\r\n{connection}\r\n")?;
    read_response(c, false)
}

/// `n` connections to 127.0.0.1:`port` open at once, each with a `GET path` in flight at the same moment;
/// returns the `n` last responses in connection order.
///
/// The connections are opened one after another, each making a first (keep-alive) request before the next
/// opens; then all `n` send their second request together (`Connection: close`) from `n` threads. Not all at
/// once from the start: QEMU's user networking (libslirp) listens on a forwarded port with a backlog of 1
/// (`ss -ltn`), so a burst of simultaneous connects overflows the host kernel's accept queue (`ListenOverflows`
/// in /proc/net/netstat) and the connections that did not fit wait out Linux's SYN and SYN-ACK retransmission
/// backoff (1, 3, 7, 15, 31, 63 s) before slirp sends the guest a SYN at all. Errors: the first failed
/// connection or request (its message names it).
pub fn concurrent_gets(port: u16, n: usize, path: &str) -> std::io::Result<Vec<Response>> {
    let named = |what: String| move |e: std::io::Error| std::io::Error::new(e.kind(), format!("{what}: {e}"));
    let mut conns = Vec::new();
    for i in 0..n {
        let mut c = keep_alive(port).map_err(named(format!("connection {i}")))?;
        let first = get_on(&mut c, path, false).map_err(named(format!("first request on connection {i}")))?;
        if first.status != 200 {
            return Err(std::io::Error::other(format!("first request on connection {i}: status {}", first.status)));
        }
        conns.push(c);
    }
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            let (barrier, path) = (barrier.clone(), path.to_owned());
            std::thread::spawn(move || {
                barrier.wait();
                get_on(&mut c, &path, true)
            })
        })
        .collect();
    let mut responses = Vec::new();
    for (i, t) in threads.into_iter().enumerate() {
        let r = t.join().map_err(|_| std::io::Error::other(format!("client thread {i} panicked")))?;
        responses.push(r.map_err(named(format!("concurrent request on connection {i}")))?);
    }
    Ok(responses)
}

/// Reads one `Content-Length`-framed response from `r`.
pub fn read_response<R: BufRead>(r: &mut R, head_only: bool) -> std::io::Result<Response> {
    let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(bad("connection closed before a status line".into()));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("connection closed inside the header section".into()));
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').ok_or_else(|| bad(format!("bad header line {l:?}")))?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let len: usize = match headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
        Some((_, v)) => v.parse().map_err(|_| bad(format!("bad Content-Length {v:?}")))?,
        None => 0,
    };
    let mut body = vec![0; if head_only { 0 } else { len }];
    r.read_exact(&mut body)?;
    Ok(Response { status, headers, body })
}
