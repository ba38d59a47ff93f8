//! UDP (RFC 768) sockets with std-like async methods.

use crate::error::{Error, Result};
use crate::readiness::Readiness;
use crate::stack::Stack;
use alloc::sync::Arc;
use core::future::poll_fn;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::task::{Poll, Waker};
use libos::time::Instant;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp::SendError;
use smoltcp::wire::{IpAddress, IpEndpoint, IPV4_HEADER_LEN, UDP_HEADER_LEN};

/// A UDP socket bound to a local port, like `std::net::UdpSocket` with async methods. Methods take
/// `&self`; one task per direction.
pub struct UdpSocket {
    stack: Arc<Stack>,
    handle: SocketHandle,
    port: u16,
}

impl UdpSocket {
    /// Binds `port` (0: an ephemeral port) of every local address of the kernel's stack. Errors:
    /// [`Error::NotStarted`], and those of [`UdpSocket::bind_on`].
    pub fn bind(port: u16) -> Result<UdpSocket> {
        Self::bind_on(&crate::stack()?, port)
    }

    /// [`UdpSocket::bind`] on `stack`. Errors: [`Error::AddrInUse`], [`Error::TooManySockets`],
    /// [`Error::EphemeralPortsExhausted`].
    pub fn bind_on(stack: &Arc<Stack>, port: u16) -> Result<UdpSocket> {
        let cfg = &stack.config;
        let (handle, port) = stack.with(|i| -> Result<_> {
            i.check_limit(cfg)?;
            let port = match port {
                0 => i.ephemeral_udp_port()?,
                p if i.udp_ports.contains(&p) => return Err(Error::AddrInUse(p)),
                p => p,
            };
            let h = i.add_udp(cfg);
            // Cannot fail: the port is non-zero and the socket fresh.
            if let Err(e) = i.udp(h).bind(port) {
                log::warn!("UDP bind {port}: {e}");
            }
            i.udp_ports.insert(port);
            Ok((h, port))
        })?;
        Ok(UdpSocket { stack: stack.clone(), handle, port })
    }

    /// The local address: the interface's IPv4 address (0.0.0.0 while it has none) and the port.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        let ip = self.stack.ipv4_config().map_or(Ipv4Addr::UNSPECIFIED, |c| c.address);
        Ok(SocketAddr::new(IpAddr::V4(ip), self.port))
    }

    /// Largest datagram payload [`UdpSocket::send_to`] takes (bytes): the IP MTU minus IPv4 and UDP
    /// headers (no fragmentation), and at most the send buffer.
    pub fn max_datagram(&self) -> usize {
        (self.stack.ip_mtu - IPV4_HEADER_LEN - UDP_HEADER_LEN).min(self.stack.config.udp_tx_buffer)
    }

    /// Queues one datagram with payload `buf` for `addr`, waiting while the send buffer is full; returns
    /// `buf.len()`. Errors: [`Error::MessageTooLarge`] over [`UdpSocket::max_datagram`],
    /// [`Error::Unsupported`] for IPv6, [`Error::InvalidPort`] for port 0, [`Error::NoRoute`].
    pub async fn send_to(&self, buf: &[u8], addr: impl Into<SocketAddr>) -> Result<usize> {
        let addr = addr.into();
        let r = poll_fn(|cx| self.send_with(buf, addr, Some(cx.waker()))).await;
        self.stack.notify();
        r
    }

    /// [`UdpSocket::send_to`] without waiting: `Ok(None)` when the send buffer is full. Registers no waker.
    pub fn try_send_to(&self, buf: &[u8], addr: SocketAddr) -> Result<Option<usize>> {
        let r = match self.send_with(buf, addr, None) {
            Poll::Ready(r) => r.map(Some),
            Poll::Pending => Ok(None),
        };
        self.stack.notify();
        r
    }

    fn send_with(&self, buf: &[u8], addr: SocketAddr, waker: Option<&Waker>) -> Poll<Result<usize>> {
        let SocketAddr::V4(v4) = addr else { return Poll::Ready(Err(Error::Unsupported("IPv6"))) };
        if v4.port() == 0 {
            return Poll::Ready(Err(Error::InvalidPort(0)));
        }
        let max = self.max_datagram();
        if buf.len() > max {
            return Poll::Ready(Err(Error::MessageTooLarge { len: buf.len(), max }));
        }
        let remote = IpEndpoint::new(IpAddress::Ipv4(*v4.ip()), v4.port());
        self.stack.with(|i| {
            let s = i.udp(self.handle);
            match s.send_slice(buf, remote) {
                Ok(()) => Poll::Ready(Ok(buf.len())),
                Err(SendError::BufferFull) => {
                    if let Some(w) = waker {
                        s.register_send_waker(w);
                    }
                    Poll::Pending
                }
                Err(SendError::Unaddressable) => Poll::Ready(Err(Error::NoRoute)),
            }
        })
    }

    /// Waits for a datagram, copies its payload into `buf` (the excess of a larger datagram is dropped,
    /// as with std) and returns the bytes copied and the sender's address.
    pub async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr)> {
        poll_fn(|cx| self.recv_with(buf, Some(cx.waker()), false)).await
    }

    /// [`UdpSocket::recv_from`] without waiting: `Ok(None)` when no datagram is queued. With `peek`, the
    /// datagram stays queued (`MSG_PEEK`). Registers no waker.
    pub fn try_recv_from(&self, buf: &mut [u8], peek: bool) -> Result<Option<(usize, SocketAddr)>> {
        match self.recv_with(buf, None, peek) {
            Poll::Ready(r) => r.map(Some),
            Poll::Pending => Ok(None),
        }
    }

    fn recv_with(&self, buf: &mut [u8], waker: Option<&Waker>, peek: bool) -> Poll<Result<(usize, SocketAddr)>> {
        self.stack.with(|i| {
            let s = i.udp(self.handle);
            let got = if peek { s.peek().map(|(d, m)| (d, *m)) } else { s.recv() };
            match got {
                Ok((data, meta)) => {
                    let n = data.len().min(buf.len());
                    buf[..n].copy_from_slice(&data[..n]);
                    Poll::Ready(Ok((n, SocketAddr::from(meta.endpoint))))
                }
                Err(_) => {
                    if let Some(w) = waker {
                        s.register_recv_waker(w);
                    }
                    Poll::Pending
                }
            }
        })
    }

    /// What the socket can do without waiting (`readable`: a datagram is queued; `writable`: the send buffer
    /// has room); with `waker`, registers it for the directions that are not ready.
    pub fn readiness(&self, waker: Option<&Waker>) -> Readiness {
        self.stack.with(|i| {
            let s = i.udp(self.handle);
            let r = Readiness { readable: s.can_recv(), writable: s.can_send(), ..Readiness::default() };
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
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        let now = Instant::now();
        self.stack.with(|i| i.orphan_udp(self.handle, self.port, now));
        self.stack.notify();
    }
}
