//! BSD sockets over the kernel's network stack (the `net` crate, smoltcp): TCP and UDP over IPv4. A socket
//! goes from fresh (after `socket`, maybe `bind`) to listening (`listen`), connecting (non-blocking `connect`),
//! connected, or — for UDP — bound with an optional default peer. Blocking calls park the thread until the net
//! task reports readiness (through `net::Readiness` and a waker); non-blocking ones return `EAGAIN` /
//! `EINPROGRESS`. Errno values follow POSIX `socket(2)`..`shutdown(2)` as Linux reports them.
#![forbid(unsafe_code)]

use crate::abi::{self, linger, timeval};
use crate::errno::{AbiResult, Errno};
use crate::wait::{block_until, deadline};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use core::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use core::task::Waker;
use core::time::Duration;
use net::{Readiness, TcpListener, TcpStream, UdpSocket};
use spin::Mutex;

/// Most listening sockets one `listen` keeps (each with the stack's TCP buffers, 24 KiB by default).
pub const MAX_BACKLOG: usize = 64;

/// Stream (TCP) or datagram (UDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SockType {
    /// `SOCK_STREAM`: TCP.
    Stream,
    /// `SOCK_DGRAM`: UDP.
    Dgram,
}

enum State {
    /// TCP before `listen`/`connect`, with the port `bind` chose (0: none).
    Fresh {
        port: u16,
    },
    Listening(Arc<TcpListener>),
    Connecting(Arc<TcpStream>),
    Connected(Arc<TcpStream>),
    /// A TCP connection attempt that failed (the error is in `Socket::error`).
    Failed,
    Udp {
        sock: Option<Arc<UdpSocket>>,
        peer: Option<SocketAddrV4>,
    },
}

/// Socket options kept per socket (most only answer `getsockopt`).
#[derive(Debug, Clone, Copy, Default)]
struct Options {
    rcv_timeout: Option<Duration>,
    snd_timeout: Option<Duration>,
    nodelay: bool,
    reuseaddr: bool,
    keepalive: bool,
    broadcast: bool,
    linger: linger,
    ttl: Option<u32>,
}

/// One socket.
pub struct Socket {
    ty: SockType,
    state: Mutex<State>,
    opts: Mutex<Options>,
    /// Pending error for `SO_ERROR` (0: none).
    error: AtomicI32,
    read_shut: AtomicBool,
}

fn stack() -> AbiResult<Arc<net::Stack>> {
    net::stack().map_err(|e| Errno::from(&e))
}

/// The IPv4 socket address in a caller's `sockaddr` bytes. Errors: `EAFNOSUPPORT` for another family
/// (IPv6 included), `EINVAL` for a short address.
pub fn parse_sockaddr(bytes: &[u8]) -> AbiResult<SocketAddrV4> {
    if bytes.len() < core::mem::size_of::<abi::sockaddr_in>() {
        return Err(Errno::EINVAL);
    }
    if i32::from(bytes[1]) != abi::AF_INET {
        return Err(Errno::EAFNOSUPPORT);
    }
    let port = u16::from_be_bytes([bytes[2], bytes[3]]);
    Ok(SocketAddrV4::new(Ipv4Addr::new(bytes[4], bytes[5], bytes[6], bytes[7]), port))
}

fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
    }
}

fn timeval_of(d: Option<Duration>) -> timeval {
    d.map_or(timeval::default(), |d| timeval {
        tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        tv_usec: d.subsec_micros() as i32,
    })
}

fn duration_of(t: timeval) -> AbiResult<Option<Duration>> {
    if t.tv_sec < 0 || !(0..1_000_000).contains(&t.tv_usec) {
        return Err(Errno::EINVAL);
    }
    let d = Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    Ok((!d.is_zero()).then_some(d))
}

/// An option value from the caller's bytes: an `int` (at least 4 bytes).
fn int_of(v: &[u8]) -> AbiResult<i32> {
    v.get(..4).and_then(|b| b.try_into().ok()).map(i32::from_ne_bytes).ok_or(Errno::EINVAL)
}

fn struct_of<const N: usize>(v: &[u8]) -> AbiResult<[u8; N]> {
    v.get(..N).and_then(|b| b.try_into().ok()).ok_or(Errno::EINVAL)
}

impl Socket {
    /// A fresh socket of `ty`.
    pub fn new(ty: SockType) -> Self {
        let state = match ty {
            SockType::Stream => State::Fresh { port: 0 },
            SockType::Dgram => State::Udp { sock: None, peer: None },
        };
        Self {
            ty,
            state: Mutex::new(state),
            opts: Mutex::new(Options::default()),
            error: AtomicI32::new(0),
            read_shut: AtomicBool::new(false),
        }
    }

    fn connected(stream: TcpStream) -> Self {
        let s = Self::new(SockType::Stream);
        *s.state.lock() = State::Connected(Arc::new(stream));
        s
    }

    /// Stream or datagram.
    pub fn ty(&self) -> SockType {
        self.ty
    }

    /// Moves a connecting TCP socket on once its handshake finished.
    fn refresh(&self) {
        let mut st = self.state.lock();
        if let State::Connecting(s) = &*st {
            match s.connect_result() {
                None => {}
                Some(Ok(())) => {
                    let s = s.clone();
                    if self.opts.lock().nodelay {
                        let _ = s.set_nodelay(true);
                    }
                    *st = State::Connected(s);
                }
                Some(Err(e)) => {
                    self.error.store(Errno::from(&e).0, Ordering::Relaxed);
                    *st = State::Failed;
                }
            }
        }
    }

    /// `bind`: a TCP socket remembers the port for `listen`; a UDP socket binds at once (every local address;
    /// the IP part is not checked). Errors: `EINVAL` when already bound, listening or connected,
    /// `EADDRINUSE`, `ENETDOWN` without a network.
    pub fn bind(&self, addr: SocketAddrV4) -> AbiResult<()> {
        let mut st = self.state.lock();
        match &mut *st {
            State::Fresh { port: p @ 0 } => {
                *p = addr.port();
                Ok(())
            }
            State::Udp { sock: sock @ None, .. } => {
                *sock = Some(Arc::new(UdpSocket::bind_on(&stack()?, addr.port())?));
                Ok(())
            }
            _ => Err(Errno::EINVAL),
        }
    }

    /// `listen`: starts answering SYNs on the bound port (an ephemeral one when unbound), with `backlog`
    /// listening sockets (at least the stack's configured backlog, at most [`MAX_BACKLOG`]; 0 or less: the
    /// configured one; std asks for 128). Each holds its buffers; a SYN that finds none in LISTEN is refused
    /// with a reset (smoltcp answers a segment no socket takes with RST). Listening again is a no-op. Errors:
    /// `EOPNOTSUPP` for UDP, `EINVAL` when connected, `EADDRINUSE`, `ENOBUFS`.
    pub fn listen(&self, backlog: i32) -> AbiResult<()> {
        let mut st = self.state.lock();
        match &*st {
            State::Fresh { port } => {
                let stack = stack()?;
                let min = stack.config().backlog.max(1);
                let backlog =
                    usize::try_from(backlog).ok().filter(|&b| b > 0).map_or(min, |b| b.clamp(min, MAX_BACKLOG));
                let l = TcpListener::bind_with_backlog_on(&stack, *port, backlog)?;
                *st = State::Listening(Arc::new(l));
                Ok(())
            }
            State::Listening(_) => Ok(()),
            State::Udp { .. } => Err(Errno::EOPNOTSUPP),
            _ => Err(Errno::EINVAL),
        }
    }

    /// `accept`: the next connection and its peer; waits (up to `SO_RCVTIMEO`) unless `nonblocking`. The new
    /// socket is blocking. Errors: `EINVAL` when not listening, `EAGAIN`, `ENOBUFS`.
    pub fn accept(&self, nonblocking: bool) -> AbiResult<(Socket, SocketAddrV4)> {
        let l = match &*self.state.lock() {
            State::Listening(l) => l.clone(),
            _ => return Err(Errno::EINVAL),
        };
        let until = deadline(self.opts.lock().rcv_timeout);
        loop {
            if let Some((s, peer)) = l.try_accept()? {
                return Ok((Socket::connected(s), v4(peer)));
            }
            if nonblocking {
                return Err(Errno::EAGAIN);
            }
            block_until(until, |w| l.readiness(Some(w)).readable)?;
        }
    }

    /// `connect`: TCP opens a connection — non-blocking, returns `EINPROGRESS` with the SYN sent (then `poll`
    /// for `POLLOUT` and read `SO_ERROR`); blocking, waits for the network's address and the handshake. UDP
    /// sets the default peer (binding an ephemeral port first). Errors: `EISCONN`, `EALREADY`,
    /// `ECONNREFUSED`, `ETIMEDOUT`, `ENETUNREACH` (no address yet, non-blocking), `EINVAL` (listening).
    pub fn connect(&self, addr: SocketAddrV4, nonblocking: bool) -> AbiResult<()> {
        self.refresh();
        if self.ty == SockType::Dgram {
            self.udp_autobind()?;
            if let State::Udp { peer, .. } = &mut *self.state.lock() {
                *peer = Some(addr);
            }
            return Ok(());
        }
        match &*self.state.lock() {
            State::Fresh { .. } => {}
            State::Connecting(_) => return Err(Errno::EALREADY),
            State::Connected(_) => return Err(Errno::EISCONN),
            State::Failed => return Err(Errno(self.error.swap(0, Ordering::Relaxed)).or_inval()),
            _ => return Err(Errno::EINVAL),
        }
        let stack = stack()?;
        let timeout = stack.config().connect_timeout;
        if !nonblocking && stack.ipv4_config().is_none() {
            // DHCP may still be running right after boot: give it the connect timeout.
            let configured = libos::thread::block_on(libos::time::timeout(timeout, stack.wait_configured()));
            configured.map_err(|_| Errno::ENETUNREACH)?;
        }
        let stream = Arc::new(TcpStream::connect_start_on(&stack, SocketAddr::V4(addr))?);
        *self.state.lock() = State::Connecting(stream.clone());
        if nonblocking {
            return Err(Errno::EINPROGRESS);
        }
        let until = deadline(Some(self.opts.lock().snd_timeout.unwrap_or(timeout).min(timeout)));
        // A timeout shows as still connecting below.
        let _ = block_until(until, |w| {
            let r = stream.readiness(Some(w));
            r.writable || r.error
        });
        self.refresh();
        let result = match &*self.state.lock() {
            State::Connected(_) => Ok(()),
            State::Failed => Err(Errno(self.error.swap(0, Ordering::Relaxed)).or_inval()),
            _ => Err(Errno::ETIMEDOUT),
        };
        if result.is_err() {
            // Give the attempt up (dropping the stream resets it); the socket may connect again.
            *self.state.lock() = State::Fresh { port: 0 };
        }
        result
    }

    fn udp_autobind(&self) -> AbiResult<Arc<UdpSocket>> {
        let mut st = self.state.lock();
        let State::Udp { sock, .. } = &mut *st else { return Err(Errno::EINVAL) };
        if sock.is_none() {
            *sock = Some(Arc::new(UdpSocket::bind_on(&stack()?, 0)?));
        }
        sock.clone().ok_or(Errno::EINVAL)
    }

    fn stream(&self) -> AbiResult<Arc<TcpStream>> {
        self.refresh();
        match &*self.state.lock() {
            State::Connected(s) | State::Connecting(s) => Ok(s.clone()),
            State::Failed => Err(Errno(self.error.swap(0, Ordering::Relaxed)).or(Errno::ENOTCONN)),
            _ => Err(Errno::ENOTCONN),
        }
    }

    /// `recv`/`read`: received bytes (0 at end of stream); with `MSG_PEEK` they stay queued. Waits (up to
    /// `SO_RCVTIMEO`) unless `nonblocking`. UDP returns one datagram (see [`Socket::recv_from`]). Errors:
    /// `ENOTCONN`, `ECONNRESET`, `EAGAIN`, `EINVAL` (unknown flags).
    pub fn recv(&self, buf: &mut [u8], flags: i32, nonblocking: bool) -> AbiResult<usize> {
        if self.ty == SockType::Dgram {
            return self.recv_from(buf, flags, nonblocking).map(|(n, _)| n);
        }
        if flags & !abi::MSG_PEEK != 0 {
            return Err(Errno::EINVAL);
        }
        let s = self.stream()?;
        if self.read_shut.load(Ordering::Relaxed) {
            return Ok(0);
        }
        let until = deadline(self.opts.lock().rcv_timeout);
        loop {
            if let Some(n) = s.try_read(buf, flags & abi::MSG_PEEK != 0)? {
                return Ok(n);
            }
            if nonblocking {
                return Err(Errno::EAGAIN);
            }
            block_until(until, |w| s.readiness(Some(w)).readable)?;
        }
    }

    /// `recvfrom` on UDP: one datagram (cut to `buf`) and its sender. TCP answers like [`Socket::recv`] with the
    /// peer's address. Errors: `EINVAL` for an unbound UDP socket or unknown flags, `EAGAIN`.
    pub fn recv_from(&self, buf: &mut [u8], flags: i32, nonblocking: bool) -> AbiResult<(usize, SocketAddrV4)> {
        if self.ty == SockType::Stream {
            let n = self.recv(buf, flags, nonblocking)?;
            return Ok((n, self.peer_addr()?));
        }
        if flags & !abi::MSG_PEEK != 0 {
            return Err(Errno::EINVAL);
        }
        let sock = match &*self.state.lock() {
            State::Udp { sock: Some(s), .. } => s.clone(),
            _ => return Err(Errno::EINVAL),
        };
        let until = deadline(self.opts.lock().rcv_timeout);
        loop {
            if let Some((n, from)) = sock.try_recv_from(buf, flags & abi::MSG_PEEK != 0)? {
                return Ok((n, v4(from)));
            }
            if nonblocking {
                return Err(Errno::EAGAIN);
            }
            block_until(until, |w| sock.readiness(Some(w)).readable)?;
        }
    }

    /// `send`/`write`: queues bytes (TCP: returns how many fit, at least 1; UDP: one datagram to the default
    /// peer). Waits (up to `SO_SNDTIMEO`) unless `nonblocking`. Errors: `ENOTCONN`, `EPIPE`, `ECONNRESET`,
    /// `EAGAIN`, `EDESTADDRREQ` (UDP without peer), `EMSGSIZE`.
    pub fn send(&self, buf: &[u8], nonblocking: bool) -> AbiResult<usize> {
        if self.ty == SockType::Dgram {
            let peer = match &*self.state.lock() {
                State::Udp { peer, .. } => *peer,
                _ => None,
            };
            return self.send_to(buf, peer.ok_or(Errno::EDESTADDRREQ)?, nonblocking);
        }
        let s = self.stream()?;
        let until = deadline(self.opts.lock().snd_timeout);
        loop {
            if let Some(n) = s.try_write(buf)? {
                return Ok(n);
            }
            if nonblocking {
                return Err(Errno::EAGAIN);
            }
            block_until(until, |w| s.readiness(Some(w)).writable)?;
        }
    }

    /// `sendto`: UDP sends one datagram to `to` (binding an ephemeral port first); TCP ignores `to`.
    pub fn send_to(&self, buf: &[u8], to: SocketAddrV4, nonblocking: bool) -> AbiResult<usize> {
        if self.ty == SockType::Stream {
            return self.send(buf, nonblocking);
        }
        let sock = self.udp_autobind()?;
        let until = deadline(self.opts.lock().snd_timeout);
        loop {
            if let Some(n) = sock.try_send_to(buf, SocketAddr::V4(to))? {
                return Ok(n);
            }
            if nonblocking {
                return Err(Errno::EAGAIN);
            }
            block_until(until, |w| sock.readiness(Some(w)).writable)?;
        }
    }

    /// `shutdown`: `SHUT_RD` makes reads return end of stream, `SHUT_WR` sends FIN after the queued data,
    /// `SHUT_RDWR` both. Errors: `EINVAL` for another `how`, `ENOTCONN`.
    pub fn shutdown(&self, how: i32) -> AbiResult<()> {
        if !matches!(how, abi::SHUT_RD | abi::SHUT_WR | abi::SHUT_RDWR) {
            return Err(Errno::EINVAL);
        }
        if self.ty == SockType::Dgram {
            return match &*self.state.lock() {
                State::Udp { peer: Some(_), .. } => Ok(()),
                _ => Err(Errno::ENOTCONN),
            };
        }
        let s = self.stream()?;
        if how != abi::SHUT_WR {
            self.read_shut.store(true, Ordering::Relaxed);
        }
        if how != abi::SHUT_RD {
            s.close_write();
        }
        Ok(())
    }

    /// `getsockname`: the local address (0.0.0.0 and the bound port before `listen`/`connect`).
    pub fn local_addr(&self) -> AbiResult<SocketAddrV4> {
        match &*self.state.lock() {
            State::Fresh { port } => Ok(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, *port)),
            State::Listening(l) => Ok(v4(l.local_addr()?)),
            State::Connecting(s) | State::Connected(s) => Ok(v4(s.local_addr()?)),
            State::Failed => Ok(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
            State::Udp { sock: Some(s), .. } => Ok(v4(s.local_addr()?)),
            State::Udp { sock: None, .. } => Ok(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
        }
    }

    /// `getpeername`: the connected peer. Errors: `ENOTCONN`.
    pub fn peer_addr(&self) -> AbiResult<SocketAddrV4> {
        self.refresh();
        match &*self.state.lock() {
            State::Connected(s) => Ok(v4(s.peer_addr()?)),
            State::Udp { peer: Some(p), .. } => Ok(*p),
            _ => Err(Errno::ENOTCONN),
        }
    }

    /// `setsockopt`: `SO_RCVTIMEO`/`SO_SNDTIMEO` (timeouts of blocking calls), `TCP_NODELAY` (Nagle off),
    /// and `SO_REUSEADDR`, `SO_KEEPALIVE`, `SO_BROADCAST`, `SO_LINGER`, `IP_TTL`, `SO_SNDBUF`, `SO_RCVBUF`
    /// (accepted and remembered; the stack's own settings apply). Errors: `ENOPROTOOPT` for other options,
    /// `EINVAL` for a short or bad value.
    pub fn set_option(&self, level: i32, name: i32, v: &[u8]) -> AbiResult<()> {
        let mut o = self.opts.lock();
        match (level, name) {
            (abi::SOL_SOCKET, abi::SO_RCVTIMEO) => o.rcv_timeout = duration_of(timeval_from(v)?)?,
            (abi::SOL_SOCKET, abi::SO_SNDTIMEO) => o.snd_timeout = duration_of(timeval_from(v)?)?,
            (abi::SOL_SOCKET, abi::SO_REUSEADDR) => o.reuseaddr = int_of(v)? != 0,
            (abi::SOL_SOCKET, abi::SO_KEEPALIVE) => o.keepalive = int_of(v)? != 0,
            (abi::SOL_SOCKET, abi::SO_BROADCAST) => o.broadcast = int_of(v)? != 0,
            (abi::SOL_SOCKET, abi::SO_LINGER) => {
                let b: [u8; 8] = struct_of(v)?;
                o.linger = linger {
                    l_onoff: i32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
                    l_linger: i32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
                };
            }
            (abi::SOL_SOCKET, abi::SO_SNDBUF | abi::SO_RCVBUF) => {
                int_of(v)?;
            }
            (abi::IPPROTO_IP, abi::IP_TTL) => o.ttl = Some(u32::try_from(int_of(v)?).map_err(|_| Errno::EINVAL)?),
            (abi::IPPROTO_TCP, abi::TCP_NODELAY) => {
                o.nodelay = int_of(v)? != 0;
                let on = o.nodelay;
                drop(o);
                if let State::Connected(s) = &*self.state.lock() {
                    s.set_nodelay(on)?;
                }
            }
            _ => return Err(Errno::ENOPROTOOPT),
        }
        Ok(())
    }

    /// `getsockopt`: the options of [`Socket::set_option`] plus `SO_ERROR` (the pending error, cleared by
    /// reading it). Returns the value's bytes. Errors: `ENOPROTOOPT`.
    pub fn option(&self, level: i32, name: i32) -> AbiResult<Vec<u8>> {
        self.refresh();
        let o = *self.opts.lock();
        let int = |v: i32| v.to_ne_bytes().to_vec();
        let tv = |d| {
            let t = timeval_of(d);
            let mut b = t.tv_sec.to_ne_bytes().to_vec();
            b.extend_from_slice(&t.tv_usec.to_ne_bytes());
            b.extend_from_slice(&[0; 4]);
            b
        };
        Ok(match (level, name) {
            (abi::SOL_SOCKET, abi::SO_ERROR) => int(self.error.swap(0, Ordering::Relaxed)),
            (abi::SOL_SOCKET, abi::SO_RCVTIMEO) => tv(o.rcv_timeout),
            (abi::SOL_SOCKET, abi::SO_SNDTIMEO) => tv(o.snd_timeout),
            (abi::SOL_SOCKET, abi::SO_REUSEADDR) => int(i32::from(o.reuseaddr)),
            (abi::SOL_SOCKET, abi::SO_KEEPALIVE) => int(i32::from(o.keepalive)),
            (abi::SOL_SOCKET, abi::SO_BROADCAST) => int(i32::from(o.broadcast)),
            (abi::SOL_SOCKET, abi::SO_LINGER) => {
                let mut b = o.linger.l_onoff.to_ne_bytes().to_vec();
                b.extend_from_slice(&o.linger.l_linger.to_ne_bytes());
                b
            }
            (abi::SOL_SOCKET, abi::SO_SNDBUF | abi::SO_RCVBUF) => {
                let cfg = stack()?.config().clone();
                let n = match (self.ty, name) {
                    (SockType::Stream, abi::SO_SNDBUF) => cfg.tcp_tx_buffer,
                    (SockType::Stream, _) => cfg.tcp_rx_buffer,
                    (SockType::Dgram, abi::SO_SNDBUF) => cfg.udp_tx_buffer,
                    (SockType::Dgram, _) => cfg.udp_rx_buffer,
                };
                int(i32::try_from(n).unwrap_or(i32::MAX))
            }
            (abi::IPPROTO_IP, abi::IP_TTL) => int(o.ttl.map_or(64, |t| t as i32)),
            (abi::IPPROTO_TCP, abi::TCP_NODELAY) => int(i32::from(o.nodelay)),
            _ => return Err(Errno::ENOPROTOOPT),
        })
    }

    /// Readiness for `poll` (registering `waker` for changes): listening sockets are readable with a
    /// connection to accept; connecting ones become writable when established and report `error`/`hangup`
    /// (with `SO_ERROR` set) when refused; a TCP socket neither listening nor connected reports `hangup`.
    pub fn readiness(&self, waker: Option<&Waker>) -> Readiness {
        let st = self.state.lock();
        let r = match &*st {
            State::Listening(l) => l.readiness(waker),
            State::Connecting(s) | State::Connected(s) => s.readiness(waker),
            State::Fresh { .. } => Readiness { writable: true, hangup: true, ..Readiness::default() },
            State::Failed => {
                Readiness { readable: true, writable: true, hangup: true, error: true, ..Readiness::default() }
            }
            State::Udp { sock: Some(s), .. } => s.readiness(waker),
            State::Udp { sock: None, .. } => Readiness { writable: true, ..Readiness::default() },
        };
        let connecting = matches!(*st, State::Connecting(_));
        drop(st);
        if connecting && (r.writable || r.error) {
            self.refresh();
        }
        if self.read_shut.load(Ordering::Relaxed) {
            return Readiness { readable: true, ..r };
        }
        r
    }
}

fn timeval_from(v: &[u8]) -> AbiResult<timeval> {
    let b: [u8; 12] = struct_of(v)?;
    Ok(timeval {
        tv_sec: i64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        tv_usec: i32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
    })
}

trait OrInval {
    fn or_inval(self) -> Errno;
    fn or(self, other: Errno) -> Errno;
}

impl OrInval for Errno {
    /// A pending error of 0 (already taken) becomes `EINVAL`.
    fn or_inval(self) -> Errno {
        self.or(Errno::EINVAL)
    }
    fn or(self, other: Errno) -> Errno {
        if self.0 == 0 {
            other
        } else {
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_bytes_parse_ipv4_only() {
        let a = abi::sockaddr_in::from_addr("10.0.2.15:80".parse().unwrap());
        let mut b = [0u8; 16];
        b[1] = a.sin_family;
        b[2..4].copy_from_slice(&a.sin_port.to_ne_bytes());
        b[4..8].copy_from_slice(&a.sin_addr.s_addr.to_ne_bytes());
        assert_eq!(parse_sockaddr(&b), Ok("10.0.2.15:80".parse().unwrap()));
        assert_eq!(parse_sockaddr(&b[..8]), Err(Errno::EINVAL));
        b[1] = abi::AF_INET6 as u8;
        assert_eq!(parse_sockaddr(&b), Err(Errno::EAFNOSUPPORT));
    }

    #[test]
    fn options_round_trip_without_a_network() {
        let s = Socket::new(SockType::Stream);
        let tv = |sec: i64, usec: i32| {
            let mut b = sec.to_ne_bytes().to_vec();
            b.extend_from_slice(&usec.to_ne_bytes());
            b.extend_from_slice(&[0; 4]);
            b
        };
        s.set_option(abi::SOL_SOCKET, abi::SO_RCVTIMEO, &tv(1, 500_000)).unwrap();
        assert_eq!(s.option(abi::SOL_SOCKET, abi::SO_RCVTIMEO).unwrap(), tv(1, 500_000));
        s.set_option(abi::SOL_SOCKET, abi::SO_RCVTIMEO, &tv(0, 0)).unwrap();
        assert_eq!(s.option(abi::SOL_SOCKET, abi::SO_RCVTIMEO).unwrap(), tv(0, 0), "zero clears the timeout");
        assert_eq!(s.set_option(abi::SOL_SOCKET, abi::SO_RCVTIMEO, &tv(0, 2_000_000)), Err(Errno::EINVAL));
        assert_eq!(s.set_option(abi::SOL_SOCKET, abi::SO_RCVTIMEO, &[0; 3]), Err(Errno::EINVAL));
        s.set_option(abi::IPPROTO_TCP, abi::TCP_NODELAY, &1i32.to_ne_bytes()).unwrap();
        assert_eq!(s.option(abi::IPPROTO_TCP, abi::TCP_NODELAY).unwrap(), 1i32.to_ne_bytes());
        assert_eq!(s.option(abi::SOL_SOCKET, abi::SO_ERROR).unwrap(), 0i32.to_ne_bytes());
        assert_eq!(s.set_option(abi::SOL_SOCKET, 0x7777, &[0; 4]), Err(Errno::ENOPROTOOPT));
    }

    #[test]
    fn state_errors_without_a_network() {
        let s = Socket::new(SockType::Stream);
        assert_eq!(s.bind("0.0.0.0:8080".parse().unwrap()), Ok(()));
        assert_eq!(s.bind("0.0.0.0:8081".parse().unwrap()), Err(Errno::EINVAL), "bound twice");
        assert_eq!(s.local_addr(), Ok("0.0.0.0:8080".parse().unwrap()));
        assert_eq!(s.peer_addr(), Err(Errno::ENOTCONN));
        assert_eq!(s.recv(&mut [0; 4], 0, true), Err(Errno::ENOTCONN));
        assert_eq!(s.send(b"x", true), Err(Errno::ENOTCONN));
        assert_eq!(s.accept(true).map(|_| ()), Err(Errno::EINVAL), "not listening");
        assert_eq!(s.shutdown(7), Err(Errno::EINVAL));
        assert!(s.readiness(None).hangup);
        let u = Socket::new(SockType::Dgram);
        assert_eq!(u.send(b"x", true), Err(Errno::EDESTADDRREQ));
        assert_eq!(u.recv_from(&mut [0; 4], 0, true).map(|_| ()), Err(Errno::EINVAL), "unbound");
        assert_eq!(u.listen(1), Err(Errno::EOPNOTSUPP));
    }
}
