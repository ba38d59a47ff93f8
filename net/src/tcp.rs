//! TCP (RFC 9293) sockets with std-like async methods: [`TcpListener`] keeps a backlog of smoltcp sockets in
//! LISTEN on its port, [`TcpStream`] is one connection. Dropping a stream closes it gracefully (FIN after
//! the queued data); the stack reclaims the socket once the close handshake is over.

use crate::error::{Error, Result};
use crate::readiness::Readiness;
use crate::stack::{Listener, Stack};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::future::poll_fn;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::{Poll, Waker};
use libos::time::Instant;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{self, RecvError, State};
use smoltcp::wire::{IpAddress, IpEndpoint};

/// A TCP socket listening on a port, like `std::net::TcpListener`.
pub struct TcpListener {
    stack: Arc<Stack>,
    port: u16,
    ephemeral: bool,
}

impl TcpListener {
    /// Listens on `port` (0: an ephemeral port, see [`TcpListener::local_addr`]) of every local address of
    /// the kernel's stack, with [`crate::Config::backlog`] listening sockets. Errors:
    /// [`Error::NotStarted`], and those of [`TcpListener::bind_with_backlog_on`].
    pub fn bind(port: u16) -> Result<TcpListener> {
        Self::bind_on(&crate::stack()?, port)
    }

    /// [`TcpListener::bind`] with `backlog` listening sockets: that many SYNs are answered at once while
    /// the app has not accepted yet (the stack tops them up after each received frame and each accept).
    pub fn bind_with_backlog(port: u16, backlog: usize) -> Result<TcpListener> {
        Self::bind_with_backlog_on(&crate::stack()?, port, backlog)
    }

    /// [`TcpListener::bind`] on `stack`.
    pub fn bind_on(stack: &Arc<Stack>, port: u16) -> Result<TcpListener> {
        Self::bind_with_backlog_on(stack, port, stack.config.backlog)
    }

    /// [`TcpListener::bind_with_backlog`] on `stack`. Errors: [`Error::AddrInUse`] when another listener
    /// or a connection holds `port`, [`Error::TooManySockets`] when not even one listening socket fits
    /// under [`crate::Config::max_sockets`], [`Error::InvalidConfig`] for a zero backlog,
    /// [`Error::EphemeralPortsExhausted`] for port 0 with all ephemeral ports taken.
    pub fn bind_with_backlog_on(stack: &Arc<Stack>, port: u16, backlog: usize) -> Result<TcpListener> {
        if backlog == 0 {
            return Err(Error::InvalidConfig { key: "backlog", value: "0".into(), expected: "at least 1" });
        }
        let cfg = &stack.config;
        let (port, ephemeral) = stack.with(|i| -> Result<(u16, bool)> {
            i.check_limit(cfg)?;
            let (port, ephemeral) = if port == 0 {
                (i.ephemeral_tcp_port()?, true)
            } else if i.listeners.contains_key(&port) || i.tcp_ports.contains(&port) {
                return Err(Error::AddrInUse(port));
            } else {
                (port, false)
            };
            i.listeners.insert(port, Listener { listening: Vec::new(), pending: Vec::new(), backlog, waker: None });
            i.top_up(port, cfg);
            Ok((port, ephemeral))
        })?;
        // The first listening sockets are made; the net task makes the rest of the backlog in its next rounds.
        stack.notify();
        Ok(TcpListener { stack: stack.clone(), port, ephemeral })
    }

    /// The port listened on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The local address: the interface's IPv4 address (0.0.0.0 while it has none) and the port.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        let ip = self.stack.ipv4_config().map_or(Ipv4Addr::UNSPECIFIED, |c| c.address);
        Ok(SocketAddr::new(IpAddr::V4(ip), self.port))
    }

    /// Waits for the next established connection and returns it with the peer's address. One task should
    /// accept on a listener at a time (the last one to wait is the one woken). Errors:
    /// [`Error::TooManySockets`] when the socket limit leaves this listener with no socket at all to take
    /// a SYN (retry later; the stack refills the backlog as sockets are reclaimed), [`Error::LowMemory`] when
    /// memory did — pressure, or a heap that cannot spare the buffers (retry later; the backlog refills when
    /// memory is freed).
    pub async fn accept(&self) -> Result<(TcpStream, SocketAddr)> {
        poll_fn(|cx| self.accept_with(Some(cx.waker()))).await
    }

    /// [`TcpListener::accept`] without waiting: `Ok(None)` when no connection is ready. Registers no waker.
    pub fn try_accept(&self) -> Result<Option<(TcpStream, SocketAddr)>> {
        match self.accept_with(None) {
            Poll::Ready(r) => r.map(Some),
            Poll::Pending => Ok(None),
        }
    }

    /// Whether [`TcpListener::try_accept`] has a connection (`readable`); with `waker`, registers it to be
    /// woken when that may change (as `accept` does).
    pub fn readiness(&self, waker: Option<&Waker>) -> Readiness {
        let ready = self.stack.with(|i| {
            i.reap_pending(self.port, Instant::now());
            let Some(l) = i.listeners.get_mut(&self.port) else { return true };
            let sockets = &mut i.sockets;
            let ready = l.pending.iter().any(|(h, _)| accepted_state(sockets.get::<tcp::Socket>(*h).state()));
            if let (false, Some(w)) = (ready, waker) {
                for h in l.listening.iter().chain(l.pending.iter().map(|(h, _)| h)) {
                    sockets.get_mut::<tcp::Socket>(*h).register_recv_waker(w);
                }
                if !l.waker.as_ref().is_some_and(|x| x.will_wake(w)) {
                    l.waker = Some(w.clone());
                }
            }
            ready
        });
        Readiness { readable: ready, ..Readiness::default() }
    }

    fn accept_with(&self, waker: Option<&Waker>) -> Poll<Result<(TcpStream, SocketAddr)>> {
        let cfg = &self.stack.config;
        self.stack.with(|i| {
            i.reap_pending(self.port, Instant::now());
            let Some(l) = i.listeners.get_mut(&self.port) else { return Poll::Ready(Err(Error::NotConnected)) };
            let sockets = &mut i.sockets;
            let ready = l.pending.iter().position(|(h, _)| accepted_state(sockets.get::<tcp::Socket>(*h).state()));
            if let Some(pos) = ready {
                let (h, _) = l.pending.remove(pos);
                i.top_up(self.port, cfg);
                let stream = TcpStream::new(&self.stack, i.tcp(h), h, None);
                let peer = stream.peer;
                return Poll::Ready(Ok((stream, peer)));
            }
            i.top_up(self.port, cfg);
            let Some(l) = i.listeners.get_mut(&self.port) else { return Poll::Ready(Err(Error::NotConnected)) };
            if l.listening.is_empty() && l.pending.is_empty() {
                // Below the limit, only memory (pressure, or a heap that refused the buffers) stops a top-up.
                return Poll::Ready(Err(match i.check_limit(cfg) {
                    Err(e) => e,
                    Ok(()) => Error::LowMemory,
                }));
            }
            if let Some(w) = waker {
                for h in l.listening.iter().chain(l.pending.iter().map(|(h, _)| h)) {
                    i.sockets.get_mut::<tcp::Socket>(*h).register_recv_waker(w);
                }
                if !l.waker.as_ref().is_some_and(|x| x.will_wake(w)) {
                    l.waker = Some(w.clone());
                }
            }
            Poll::Pending
        })
    }
}

/// A connection a listener hands out: its handshake is complete.
fn accepted_state(s: State) -> bool {
    matches!(s, State::Established | State::CloseWait)
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        let now = Instant::now();
        let cfg = &self.stack.config;
        self.stack.with(|i| {
            let Some(l) = i.listeners.remove(&self.port) else { return };
            for h in l.listening {
                i.remove_tcp(h);
            }
            // Connections nobody accepted: reset them and let the reaper take the sockets.
            for (h, _) in l.pending {
                i.tcp(h).abort();
                i.orphan_tcp(h, None, now, cfg);
            }
            if self.ephemeral {
                i.tcp_ports.remove(&self.port);
            }
        });
        self.stack.notify();
    }
}

fn socket_addr(e: Option<IpEndpoint>) -> SocketAddr {
    e.map_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0), SocketAddr::from)
}

/// A TCP connection, like `std::net::TcpStream` with async methods. Methods take `&self`, so a reader and
/// a writer task may share it (e.g. in an `Arc`); one task per direction.
pub struct TcpStream {
    stack: Arc<Stack>,
    handle: SocketHandle,
    local: SocketAddr,
    peer: SocketAddr,
    /// Ephemeral port to release when the socket is reclaimed (connections made with `connect`).
    port: Option<u16>,
    shut: AtomicBool,
}

impl TcpStream {
    fn new(stack: &Arc<Stack>, s: &tcp::Socket<'static>, handle: SocketHandle, port: Option<u16>) -> TcpStream {
        stack.tcp_connections.fetch_add(1, Ordering::Relaxed);
        TcpStream {
            stack: stack.clone(),
            handle,
            local: socket_addr(s.local_endpoint()),
            peer: socket_addr(s.remote_endpoint()),
            port,
            shut: AtomicBool::new(false),
        }
    }

    /// Connects to `addr` through the kernel's stack from an ephemeral port (49152..=65535). Errors:
    /// [`Error::NotStarted`], and those of [`TcpStream::connect_on`].
    pub async fn connect(addr: impl Into<SocketAddr>) -> Result<TcpStream> {
        Self::connect_on(&crate::stack()?, addr).await
    }

    /// [`TcpStream::connect`] on `stack`. Errors: [`Error::Unsupported`] for IPv6 or a broadcast/multicast
    /// address, [`Error::InvalidPort`] for port 0, [`Error::NoRoute`] while the interface has no address,
    /// [`Error::TooManySockets`], [`Error::EphemeralPortsExhausted`], [`Error::ConnectionRefused`] (RST),
    /// [`Error::TimedOut`] after [`crate::Config::connect_timeout`].
    pub async fn connect_on(stack: &Arc<Stack>, addr: impl Into<SocketAddr>) -> Result<TcpStream> {
        let cfg = &stack.config;
        let stream = Self::connect_start_on(stack, addr)?;
        let established = poll_fn(|cx| stream.poll_established(Some(cx.waker())));
        match libos::time::timeout(cfg.connect_timeout, established).await {
            Ok(Ok(())) => Ok(stream),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::TimedOut),
        }
    }

    /// Starts connecting to `addr` on `stack` and returns at once, the SYN queued (a non-blocking
    /// `connect(2)`): [`TcpStream::connect_result`] or [`TcpStream::readiness`] (`writable` once established,
    /// `error` when refused) tell how it went. Errors: those of [`TcpStream::connect_on`] that arise before
    /// the SYN leaves.
    pub fn connect_start_on(stack: &Arc<Stack>, addr: impl Into<SocketAddr>) -> Result<TcpStream> {
        let addr = addr.into();
        let SocketAddr::V4(v4) = addr else { return Err(Error::Unsupported("IPv6")) };
        if v4.port() == 0 {
            return Err(Error::InvalidPort(0));
        }
        let ip = *v4.ip();
        if ip.is_broadcast() || ip.is_multicast() {
            return Err(Error::Unsupported("TCP to a broadcast or multicast address"));
        }
        let cfg = &stack.config;
        let stream = stack.with(|i| -> Result<TcpStream> {
            i.check_limit(cfg)?;
            if i.ipv4.is_none() {
                return Err(Error::NoRoute);
            }
            let port = i.ephemeral_tcp_port()?;
            let h = i.add_tcp(cfg).inspect_err(|_| {
                i.tcp_ports.remove(&port);
            })?;
            let remote = IpEndpoint::new(IpAddress::Ipv4(ip), v4.port());
            let s = i.sockets.get_mut::<tcp::Socket>(h);
            // The connect deadline is ours (below): smoltcp's timer only starts once the SYN is sent.
            s.set_timeout(None);
            if let Err(e) = s.connect(i.iface.context(), remote, port) {
                log::debug!("connect to {addr}: {e}");
                i.remove_tcp(h);
                i.tcp_ports.remove(&port);
                return Err(Error::NoRoute);
            }
            Ok(TcpStream::new(stack, i.tcp(h), h, Some(port)))
        })?;
        stack.notify();
        Ok(stream)
    }

    /// How a connection started with [`TcpStream::connect_start_on`] went: `None` while the handshake runs,
    /// `Some(Ok(()))` once established, `Some(Err(`[`Error::ConnectionRefused`]`))` after a reset. No timeout
    /// applies here (the caller keeps its own).
    pub fn connect_result(&self) -> Option<Result<()>> {
        match self.poll_established(None) {
            Poll::Ready(r) => Some(r),
            Poll::Pending => None,
        }
    }

    fn poll_established(&self, waker: Option<&Waker>) -> Poll<Result<()>> {
        let cfg = &self.stack.config;
        self.stack.with(|i| {
            let s = i.tcp(self.handle);
            match s.state() {
                State::SynSent | State::SynReceived => {
                    if let Some(w) = waker {
                        s.register_send_waker(w);
                    }
                    Poll::Pending
                }
                State::Closed => Poll::Ready(Err(Error::ConnectionRefused)),
                State::Listen => Poll::Ready(Err(Error::NotConnected)),
                _ => {
                    // Established: from now on smoltcp's retransmission timeout applies.
                    if s.timeout().is_none() {
                        s.set_timeout(Some(cfg.tcp_timeout.into()));
                    }
                    Poll::Ready(Ok(()))
                }
            }
        })
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        Ok(self.peer)
    }

    /// The local address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.local)
    }

    /// Disables (true) or enables (false) Nagle's algorithm (RFC 9293 §3.7.4): with it off, small writes
    /// go out at once instead of waiting for the previous segment's ACK.
    pub fn set_nodelay(&self, nodelay: bool) -> Result<()> {
        self.stack.with(|i| i.tcp(self.handle).set_nagle_enabled(!nodelay));
        Ok(())
    }

    /// Whether Nagle's algorithm is off.
    pub fn nodelay(&self) -> Result<bool> {
        Ok(self.stack.with(|i| !i.tcp(self.handle).nagle_enabled()))
    }

    /// Reads received bytes into `buf`; returns how many (≥ 1), or 0 at end of stream (the peer sent FIN)
    /// or for an empty `buf`. Errors: [`Error::ConnectionReset`] (RST or retransmission timeout),
    /// [`Error::NotConnected`].
    pub async fn read(&self, buf: &mut [u8]) -> Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        poll_fn(|cx| self.read_with(buf, Some(cx.waker()), false)).await
    }

    /// [`TcpStream::read`] without waiting: `Ok(None)` when no data is queued yet. With `peek`, the bytes
    /// stay queued (`MSG_PEEK`). Registers no waker.
    pub fn try_read(&self, buf: &mut [u8], peek: bool) -> Result<Option<usize>> {
        if buf.is_empty() {
            return Ok(Some(0));
        }
        match self.read_with(buf, None, peek) {
            Poll::Ready(r) => r.map(Some),
            Poll::Pending => Ok(None),
        }
    }

    fn read_with(&self, buf: &mut [u8], waker: Option<&Waker>, peek: bool) -> Poll<Result<usize>> {
        let mut window_opened = false;
        let r = self.stack.with(|i| {
            let s = i.tcp(self.handle);
            let (queued, capacity) = (s.recv_queue(), s.recv_capacity());
            let got = if peek { s.peek_slice(buf) } else { s.recv_slice(buf) };
            match got {
                Ok(0) => {
                    if let Some(w) = waker {
                        s.register_recv_waker(w);
                    }
                    Poll::Pending
                }
                Ok(n) if peek => Poll::Ready(Ok(n)),
                Ok(n) => {
                    // The advertised window was at most half the buffer: the net task should tell the peer
                    // it grew (smoltcp sends the update when polled). Otherwise the next ACK carries it.
                    window_opened = queued * 2 >= capacity;
                    Poll::Ready(Ok(n))
                }
                Err(RecvError::Finished) => Poll::Ready(Ok(0)),
                Err(RecvError::InvalidState) => Poll::Ready(match s.state() {
                    State::Listen | State::SynSent | State::SynReceived => Err(Error::NotConnected),
                    _ if self.shut.load(Ordering::Relaxed) => Ok(0),
                    _ => Err(Error::ConnectionReset),
                }),
            }
        });
        if window_opened {
            self.stack.notify();
        }
        r
    }

    /// Queues bytes of `buf` for sending; returns how many (≥ 1 unless `buf` is empty), waiting while the
    /// send buffer is full. Errors: [`Error::BrokenPipe`] after [`TcpStream::shutdown`],
    /// [`Error::ConnectionReset`], [`Error::NotConnected`].
    pub async fn write(&self, buf: &[u8]) -> Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        poll_fn(|cx| self.write_waking(buf, Some(cx.waker()))).await
    }

    /// [`TcpStream::write`] without waiting: `Ok(None)` when the send buffer is full. Registers no waker.
    pub fn try_write(&self, buf: &[u8]) -> Result<Option<usize>> {
        if buf.is_empty() {
            return Ok(Some(0));
        }
        match self.write_waking(buf, None) {
            Poll::Ready(r) => r.map(Some),
            Poll::Pending => Ok(None),
        }
    }

    /// One attempt to queue `buf`, registering `waker` (if any) for when the send buffer has room.
    fn write_waking(&self, buf: &[u8], waker: Option<&Waker>) -> Poll<Result<usize>> {
        let r = self.stack.with(|i| {
            let s = i.tcp(self.handle);
            if !s.may_send() {
                return Poll::Ready(Err(self.send_error(s.state())));
            }
            match s.send_slice(buf) {
                Ok(0) => {
                    if let Some(w) = waker {
                        s.register_send_waker(w);
                    }
                    Poll::Pending
                }
                Ok(n) => Poll::Ready(Ok(n)),
                // may_send() was just checked: the state allows sending.
                Err(_) => Poll::Ready(Err(Error::ConnectionReset)),
            }
        });
        if r.is_ready() {
            self.stack.notify();
        }
        r
    }

    /// Lets `fill` write straight into the socket's send buffer (no copy in between: smoltcp sends from
    /// there): `fill` gets the free space (contiguous, at least 1 byte) and returns how many bytes it wrote.
    /// Waits while the buffer is full; returns the count. Errors: as [`TcpStream::write`].
    pub async fn write_with(&self, fill: &mut (dyn FnMut(&mut [u8]) -> usize + Send)) -> Result<usize> {
        poll_fn(|cx| {
            let r = self.stack.with(|i| {
                let s = i.tcp(self.handle);
                if !s.may_send() {
                    return Poll::Ready(Err(self.send_error(s.state())));
                }
                let mut offered = 0;
                let sent = s.send(|free| {
                    offered = free.len();
                    let n = if free.is_empty() { 0 } else { fill(free).min(free.len()) };
                    (n, n)
                });
                match sent {
                    Ok(0) if offered == 0 => {
                        s.register_send_waker(cx.waker());
                        Poll::Pending
                    }
                    Ok(n) => Poll::Ready(Ok(n)),
                    // may_send() was just checked: the state allows sending.
                    Err(_) => Poll::Ready(Err(Error::ConnectionReset)),
                }
            });
            if r.is_ready() {
                self.stack.notify();
            }
            r
        })
        .await
    }

    fn send_error(&self, state: State) -> Error {
        match state {
            _ if self.shut.load(Ordering::Relaxed) => Error::BrokenPipe,
            State::Listen | State::SynSent | State::SynReceived => Error::NotConnected,
            _ => Error::ConnectionReset,
        }
    }

    /// Writes all of `buf`. Errors: as [`TcpStream::write`]; on error some bytes may have been queued.
    pub async fn write_all(&self, mut buf: &[u8]) -> Result<()> {
        while !buf.is_empty() {
            let n = self.write(buf).await?;
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Waits until the peer has acknowledged everything written so far (the send buffer is empty).
    /// Errors: [`Error::ConnectionReset`] when the connection died with data unacknowledged.
    pub async fn flush(&self) -> Result<()> {
        poll_fn(|cx| {
            self.stack.with(|i| {
                let s = i.tcp(self.handle);
                if s.send_queue() == 0 {
                    Poll::Ready(Ok(()))
                } else if s.state() == State::Closed {
                    Poll::Ready(Err(Error::ConnectionReset))
                } else {
                    s.register_send_waker(cx.waker());
                    Poll::Pending
                }
            })
        })
        .await
    }

    /// Closes the sending half gracefully: the FIN follows the queued data; waits until the peer has
    /// acknowledged it (or the connection ended). Reading still works until the peer's FIN. Errors: none
    /// beyond a dead connection, which counts as shut down.
    pub async fn shutdown(&self) -> Result<()> {
        self.close_write();
        poll_fn(|cx| {
            self.stack.with(|i| {
                let s = i.tcp(self.handle);
                match s.state() {
                    State::FinWait2 | State::TimeWait | State::Closed | State::Listen => Poll::Ready(Ok(())),
                    _ => {
                        s.register_send_waker(cx.waker());
                        Poll::Pending
                    }
                }
            })
        })
        .await
    }

    /// Closes the sending half without waiting (a `shutdown(SHUT_WR)`): the FIN follows the queued data.
    pub fn close_write(&self) {
        self.shut.store(true, Ordering::Relaxed);
        self.stack.with(|i| {
            let s = i.tcp(self.handle);
            s.close();
            // The peer's FIN is acknowledged at once, so a dropped socket need not linger for it.
            s.set_ack_delay(None);
        });
        self.stack.notify();
    }

    /// What the connection can do without waiting, as `poll(2)` reports it; with `waker`, registers it to be
    /// woken when a direction that is not ready may become ready. `readable`: data queued, or the peer's FIN
    /// or a reset (a read returns at once); `writable`: room in the send buffer of an established connection,
    /// or a dead one (a write fails at once); `read_closed`: the peer sent FIN; `hangup`: both directions are
    /// closed; `error`: the connection was reset or refused (closed without a local shutdown).
    pub fn readiness(&self, waker: Option<&Waker>) -> Readiness {
        let shut = self.shut.load(Ordering::Relaxed);
        self.stack.with(|i| {
            let s = i.tcp(self.handle);
            let state = s.state();
            let connecting = matches!(state, State::SynSent | State::SynReceived | State::Listen);
            let closed = matches!(state, State::Closed | State::TimeWait);
            let read_closed = !connecting && !s.may_recv();
            let r = Readiness {
                readable: s.can_recv() || read_closed,
                writable: (s.may_send() && s.can_send()) || closed,
                read_closed,
                hangup: closed || (read_closed && shut),
                error: state == State::Closed && !shut,
            };
            if let Some(w) = waker {
                if !r.readable {
                    s.register_recv_waker(w);
                }
                if !r.writable {
                    s.register_send_waker(w);
                }
            }
            r
        })
    }

    /// Resets the connection at once (RST, RFC 9293 §3.5.2), dropping unsent and unread data.
    pub fn abort(self) {
        self.stack.with(|i| i.tcp(self.handle).abort());
        // Drop hands the now CLOSED socket to the reaper, which removes it once the RST is out.
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        let now = Instant::now();
        let cfg = &self.stack.config;
        self.stack.with(|i| {
            let s = i.tcp(self.handle);
            match s.state() {
                State::Established | State::CloseWait | State::SynReceived => s.close(),
                State::SynSent => s.abort(),
                _ => {}
            }
            i.orphan_tcp(self.handle, self.port, now, cfg);
        });
        self.stack.tcp_connections.fetch_sub(1, Ordering::Relaxed);
        self.stack.notify();
    }
}
