//! socket2's API (0.6: `Socket`, `SockRef`, `SockAddr`, `Domain`, `Type`, `Protocol`), the part tokio uses,
//! for `x86_64-unknown-hermit`: each method is the BSD socket call it names, through the `libc` crate's Hermit
//! bindings (the `sys_*` ABI). Options the Hermit ABI does not have give `ErrorKind::Unsupported`.
//!
//! `SockRef::from(&T)` cannot reach the descriptor of tokio's types on Hermit (they implement `AsFd` only on
//! Unix), so a `SockRef` made that way answers `Unsupported`; tokio uses it only for linger, TOS and TTL
//! options, which axum's server path does not touch.
#![cfg(target_os = "hermit")]

use std::io;
use std::marker::PhantomData;
use std::mem::{size_of, MaybeUninit};
use std::net::{Shutdown, SocketAddr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::time::Duration;

fn cvt(r: i32) -> io::Result<i32> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A socket domain (`AF_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Domain(i32);

impl Domain {
    /// IPv4.
    pub const IPV4: Domain = Domain(libc::AF_INET);
    /// IPv6 (the Hermit ABI refuses it with `EAFNOSUPPORT` on Zirvium).
    pub const IPV6: Domain = Domain(libc::AF_INET6);
    /// Unix sockets (unsupported: creating one fails).
    pub const UNIX: Domain = Domain(-1);
}

/// A socket type (`SOCK_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Type(i32);

impl Type {
    /// `SOCK_STREAM`.
    pub const STREAM: Type = Type(libc::SOCK_STREAM);
    /// `SOCK_DGRAM`.
    pub const DGRAM: Type = Type(libc::SOCK_DGRAM);

    /// The type with `SOCK_NONBLOCK` set.
    pub const fn nonblocking(self) -> Type {
        Type(self.0 | libc::SOCK_NONBLOCK)
    }
}

/// A protocol (`IPPROTO_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protocol(i32);

impl Protocol {
    /// TCP.
    pub const TCP: Protocol = Protocol(libc::IPPROTO_TCP);
    /// UDP.
    pub const UDP: Protocol = Protocol(libc::IPPROTO_UDP);
}

/// A socket address in its C form (IPv4 only).
#[derive(Clone, Copy)]
pub struct SockAddr {
    v4: libc::sockaddr_in,
}

impl std::fmt::Debug for SockAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SockAddr({:?})", self.as_socket())
    }
}

impl SockAddr {
    /// The address as a Rust socket address (`None` for a family other than IPv4).
    pub fn as_socket(&self) -> Option<SocketAddr> {
        (i32::from(self.v4.sin_family) == libc::AF_INET).then(|| {
            let ip = self.v4.sin_addr.s_addr.to_ne_bytes();
            SocketAddr::V4(SocketAddrV4::new(ip.into(), u16::from_be(self.v4.sin_port)))
        })
    }

    fn ptr(&self) -> *const libc::sockaddr {
        (&self.v4 as *const libc::sockaddr_in).cast()
    }

    fn len(&self) -> libc::socklen_t {
        size_of::<libc::sockaddr_in>() as libc::socklen_t
    }
}

impl From<SocketAddr> for SockAddr {
    fn from(a: SocketAddr) -> Self {
        // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
        let mut v4: libc::sockaddr_in = unsafe { MaybeUninit::zeroed().assume_init() };
        if let SocketAddr::V4(a) = a {
            v4.sin_len = size_of::<libc::sockaddr_in>() as u8;
            v4.sin_family = libc::AF_INET as libc::sa_family_t;
            v4.sin_port = a.port().to_be();
            v4.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
        }
        // An IPv6 address stays family 0: the kernel answers EAFNOSUPPORT.
        SockAddr { v4 }
    }
}

/// `struct linger` (the Hermit ABI's layout; the libc crate does not define it for Hermit).
#[repr(C)]
#[derive(Clone, Copy)]
struct Linger {
    l_onoff: i32,
    l_linger: i32,
}

/// An owned socket descriptor.
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
}

impl Socket {
    /// `socket(domain, ty, protocol)`.
    pub fn new(domain: Domain, ty: Type, protocol: Option<Protocol>) -> io::Result<Socket> {
        if domain == Domain::UNIX {
            return Err(io::ErrorKind::Unsupported.into());
        }
        // SAFETY: socket(2) has no memory arguments.
        let fd = cvt(unsafe { libc::socket(domain.0, ty.0, protocol.map_or(0, |p| p.0)) })?;
        // SAFETY: the descriptor was just created and is owned by nobody else.
        Ok(Socket { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// `bind(addr)`.
    pub fn bind(&self, addr: &SockAddr) -> io::Result<()> {
        // SAFETY: `addr` points at a sockaddr_in of the given length.
        cvt(unsafe { libc::bind(self.raw(), addr.ptr(), addr.len()) }).map(drop)
    }

    /// `connect(addr)` (`EINPROGRESS` from a non-blocking socket is an `Err` with that raw error).
    pub fn connect(&self, addr: &SockAddr) -> io::Result<()> {
        // SAFETY: as in `bind`.
        cvt(unsafe { libc::connect(self.raw(), addr.ptr(), addr.len()) }).map(drop)
    }

    /// `listen(backlog)`.
    pub fn listen(&self, backlog: i32) -> io::Result<()> {
        // SAFETY: no memory arguments.
        cvt(unsafe { libc::listen(self.raw(), backlog) }).map(drop)
    }

    /// Sets or clears non-blocking mode (`ioctl(FIONBIO)`).
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        let mut v: i32 = on.into();
        // SAFETY: FIONBIO reads one int from the pointer.
        cvt(unsafe { libc::ioctl(self.raw(), libc::FIONBIO, (&mut v as *mut i32).cast()) }).map(drop)
    }

    fn addr_of(
        &self,
        f: unsafe extern "C" fn(i32, *mut libc::sockaddr, *mut libc::socklen_t) -> i32,
    ) -> io::Result<SockAddr> {
        let mut a = SockAddr::from(SocketAddr::V4(SocketAddrV4::new([0, 0, 0, 0].into(), 0)));
        let mut len = a.len();
        // SAFETY: the kernel writes at most `len` bytes into the sockaddr_in.
        cvt(unsafe { f(self.raw(), (&mut a.v4 as *mut libc::sockaddr_in).cast(), &mut len) })?;
        Ok(a)
    }

    /// `getsockname`.
    pub fn local_addr(&self) -> io::Result<SockAddr> {
        self.addr_of(libc::getsockname)
    }

    /// `getpeername`.
    pub fn peer_addr(&self) -> io::Result<SockAddr> {
        self.addr_of(libc::getpeername)
    }

    /// `shutdown(how)`.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        let how = match how {
            Shutdown::Read => libc::SHUT_RD,
            Shutdown::Write => libc::SHUT_WR,
            Shutdown::Both => libc::SHUT_RDWR,
        };
        // SAFETY: no memory arguments.
        cvt(unsafe { libc::shutdown(self.raw(), how) }).map(drop)
    }

    fn set<T>(&self, level: i32, name: i32, v: T) -> io::Result<()> {
        // SAFETY: the option value is `size_of::<T>()` readable bytes.
        cvt(unsafe {
            libc::setsockopt(self.raw(), level, name, (&v as *const T).cast(), size_of::<T>() as libc::socklen_t)
        })
        .map(drop)
    }

    fn get<T: Copy>(&self, level: i32, name: i32) -> io::Result<T> {
        let mut v = MaybeUninit::<T>::zeroed();
        let mut len = size_of::<T>() as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into `v`, which starts zeroed (valid for the plain
        // integer and struct option types used here).
        cvt(unsafe { libc::getsockopt(self.raw(), level, name, v.as_mut_ptr().cast(), &mut len) })?;
        // SAFETY: zero-initialised plain data, possibly overwritten by the kernel.
        Ok(unsafe { v.assume_init() })
    }

    /// `SO_ERROR` (taken).
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        let e: i32 = self.get(libc::SOL_SOCKET, libc::SO_ERROR)?;
        Ok((e != 0).then(|| io::Error::from_raw_os_error(e)))
    }

    /// `SO_KEEPALIVE`.
    pub fn set_keepalive(&self, on: bool) -> io::Result<()> {
        self.set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, i32::from(on))
    }

    /// `SO_KEEPALIVE`.
    pub fn keepalive(&self) -> io::Result<bool> {
        self.get::<i32>(libc::SOL_SOCKET, libc::SO_KEEPALIVE).map(|v| v != 0)
    }

    /// `SO_REUSEADDR`.
    pub fn set_reuse_address(&self, on: bool) -> io::Result<()> {
        self.set(libc::SOL_SOCKET, libc::SO_REUSEADDR, i32::from(on))
    }

    /// `SO_REUSEADDR`.
    pub fn reuse_address(&self) -> io::Result<bool> {
        self.get::<i32>(libc::SOL_SOCKET, libc::SO_REUSEADDR).map(|v| v != 0)
    }

    /// `SO_SNDBUF`.
    pub fn set_send_buffer_size(&self, n: usize) -> io::Result<()> {
        self.set(libc::SOL_SOCKET, libc::SO_SNDBUF, i32::try_from(n).unwrap_or(i32::MAX))
    }

    /// `SO_SNDBUF`.
    pub fn send_buffer_size(&self) -> io::Result<usize> {
        self.get::<i32>(libc::SOL_SOCKET, libc::SO_SNDBUF).map(|v| v.max(0) as usize)
    }

    /// `SO_RCVBUF`.
    pub fn set_recv_buffer_size(&self, n: usize) -> io::Result<()> {
        self.set(libc::SOL_SOCKET, libc::SO_RCVBUF, i32::try_from(n).unwrap_or(i32::MAX))
    }

    /// `SO_RCVBUF`.
    pub fn recv_buffer_size(&self) -> io::Result<usize> {
        self.get::<i32>(libc::SOL_SOCKET, libc::SO_RCVBUF).map(|v| v.max(0) as usize)
    }

    /// `SO_LINGER`.
    pub fn set_linger(&self, d: Option<Duration>) -> io::Result<()> {
        let l =
            Linger { l_onoff: d.is_some().into(), l_linger: d.map_or(0, |d| d.as_secs().min(i32::MAX as u64) as i32) };
        self.set(libc::SOL_SOCKET, libc::SO_LINGER, l)
    }

    /// `SO_LINGER`.
    pub fn linger(&self) -> io::Result<Option<Duration>> {
        let l: Linger = self.get(libc::SOL_SOCKET, libc::SO_LINGER)?;
        Ok((l.l_onoff != 0).then(|| Duration::from_secs(l.l_linger.max(0) as u64)))
    }

    /// `TCP_NODELAY`.
    pub fn set_tcp_nodelay(&self, on: bool) -> io::Result<()> {
        self.set(libc::IPPROTO_TCP, libc::TCP_NODELAY, i32::from(on))
    }

    /// `TCP_NODELAY`.
    pub fn tcp_nodelay(&self) -> io::Result<bool> {
        self.get::<i32>(libc::IPPROTO_TCP, libc::TCP_NODELAY).map(|v| v != 0)
    }

    /// `IP_TTL`.
    pub fn set_ttl_v4(&self, ttl: u32) -> io::Result<()> {
        self.set(libc::IPPROTO_IP, libc::IP_TTL, ttl as i32)
    }

    /// `IP_TTL`.
    pub fn ttl_v4(&self) -> io::Result<u32> {
        self.get::<i32>(libc::IPPROTO_IP, libc::IP_TTL).map(|v| v.max(0) as u32)
    }

    /// `IP_TOS`: not in the Hermit ABI's options.
    pub fn set_tos_v4(&self, _tos: u32) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// `IP_TOS`: not in the Hermit ABI's options.
    pub fn tos_v4(&self) -> io::Result<u32> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// `IPV6_TCLASS`: no IPv6.
    pub fn set_tclass_v6(&self, _tclass: u32) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// `IPV6_TCLASS`: no IPv6.
    pub fn tclass_v6(&self) -> io::Result<u32> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.raw()
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl IntoRawFd for Socket {
    fn into_raw_fd(self) -> RawFd {
        self.fd.into_raw_fd()
    }
}

impl FromRawFd for Socket {
    unsafe fn from_raw_fd(fd: RawFd) -> Socket {
        // SAFETY: forwarded contract: `fd` is an open socket the caller gives away.
        Socket { fd: unsafe { OwnedFd::from_raw_fd(fd) } }
    }
}

/// A borrowed socket for setting options on another type's socket (see the crate docs: unsupported here).
#[derive(Debug)]
pub struct SockRef<'s> {
    _borrow: PhantomData<&'s ()>,
}

impl<'s, S: ?Sized> From<&'s S> for SockRef<'s> {
    fn from(_: &'s S) -> Self {
        SockRef { _borrow: PhantomData }
    }
}

macro_rules! unsupported {
    ($($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        impl SockRef<'_> {
            $(
                /// Not available on Hermit (see the crate docs).
                pub fn $name(&self, $($arg: $ty),*) -> io::Result<$ret> {
                    $(let _ = $arg;)*
                    Err(io::ErrorKind::Unsupported.into())
                }
            )*
        }
    };
}

unsupported! {
    peek_sender() -> SockAddr;
    linger() -> Option<Duration>;
    set_linger(d: Option<Duration>) -> ();
    set_tos_v4(tos: u32) -> ();
    tos_v4() -> u32;
    set_tclass_v6(tclass: u32) -> ();
    tclass_v6() -> u32;
    set_ttl_v4(ttl: u32) -> ();
    ttl_v4() -> u32;
}
