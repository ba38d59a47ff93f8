//! Sockets: `socket`, `bind`, `listen`, `accept`, `connect`, `recv`/`recvfrom`, `send`/`sendto`, `shutdown`,
//! `getsockname`/`getpeername`, `getsockopt`/`setsockopt`, and name lookup (`getaddrinfo`/`freeaddrinfo`,
//! `getaddrbyname`) through the network stack's DNS client. IPv4 only: IPv6 addresses give `EAFNOSUPPORT`.
// `#[no_mangle]` counts as unsafe code: every function here is a symbol std links against. No `unsafe` block
// here; the caller's pointers go through `crate::user` (`sys::tests` checks).
#![allow(unsafe_code)]

use super::{call, len};
use crate::abi::{self, addrinfo, sockaddr_in, socklen_t};
use crate::errno::{AbiResult, Errno};
use crate::object::{self, Kind, Object};
use crate::socket::{parse_sockaddr, SockType, Socket};
use crate::user;
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, SocketAddrV4};

/// The caller's socket address (`namelen` bytes at `name`).
fn sockaddr_arg(name: *const u8, namelen: socklen_t) -> AbiResult<SocketAddrV4> {
    parse_sockaddr(user::slice(name, namelen as usize)?)
}

/// Writes `a` as a `sockaddr_in` into the caller's buffer of `*addrlen` bytes (cut to fit) and sets
/// `*addrlen` to its full size; nothing when either pointer is null.
fn write_sockaddr(a: SocketAddrV4, addr: *mut u8, addrlen: *mut socklen_t) -> AbiResult<()> {
    if addr.is_null() || addrlen.is_null() {
        return Ok(());
    }
    let cap = user::read(addrlen)? as usize;
    let c = sockaddr_in::from_addr(a);
    let mut bytes = [0u8; 16];
    bytes[0] = c.sin_len;
    bytes[1] = c.sin_family;
    bytes[2..4].copy_from_slice(&c.sin_port.to_ne_bytes());
    bytes[4..8].copy_from_slice(&c.sin_addr.s_addr.to_ne_bytes());
    let n = cap.min(bytes.len());
    user::slice_mut(addr, n)?.copy_from_slice(&bytes[..n]);
    user::write(addrlen, bytes.len() as socklen_t)
}

/// Creates a socket: `domain` `AF_INET` (`AF_INET6` gives `EAFNOSUPPORT`), `type_` `SOCK_STREAM` or
/// `SOCK_DGRAM` with optional `SOCK_NONBLOCK`/`SOCK_CLOEXEC`, `protocol` 0 or the type's own. Errors:
/// `EAFNOSUPPORT`, `EINVAL` (unknown type bits), `EPROTONOSUPPORT`, `EMFILE`.
#[no_mangle]
pub extern "C" fn sys_socket(domain: i32, type_: i32, protocol: i32) -> i32 {
    call(|| {
        if domain != abi::AF_INET {
            return Err(Errno::EAFNOSUPPORT);
        }
        let nonblocking = type_ & abi::SOCK_NONBLOCK != 0;
        let ty = match type_ & !(abi::SOCK_NONBLOCK | abi::SOCK_CLOEXEC) {
            abi::SOCK_STREAM => SockType::Stream,
            abi::SOCK_DGRAM => SockType::Dgram,
            _ => return Err(Errno::EINVAL),
        };
        match (ty, protocol) {
            (_, 0) | (SockType::Stream, abi::IPPROTO_TCP) | (SockType::Dgram, abi::IPPROTO_UDP) => {}
            _ => return Err(Errno::EPROTONOSUPPORT),
        }
        object::install(Object::with_flags(Kind::Socket(Socket::new(ty)), nonblocking))
    })
}

/// Binds socket `s` to the IPv4 address `name` (the port counts; the stack answers on every local address).
/// Errors: `EBADF`, `ENOTSOCK`, `EAFNOSUPPORT`, `EINVAL` (already bound, short address), `EADDRINUSE`,
/// `EFAULT`.
#[no_mangle]
pub extern "C" fn sys_bind(s: i32, name: *const u8, namelen: socklen_t) -> i32 {
    call(|| {
        let addr = sockaddr_arg(name, namelen)?;
        object::get(s)?.socket()?.bind(addr).map(|()| 0)
    })
}

/// Starts listening on socket `s` with `backlog` listening sockets (at most the stack's configured
/// backlog). Errors: `EBADF`, `ENOTSOCK`, `EOPNOTSUPP` (UDP), `EINVAL`, `EADDRINUSE`, `ENOBUFS`.
#[no_mangle]
pub extern "C" fn sys_listen(s: i32, backlog: i32) -> i32 {
    call(|| object::get(s)?.socket()?.listen(backlog).map(|()| 0))
}

/// Accepts a connection on listening socket `s` (waits unless non-blocking) and returns its descriptor,
/// writing the peer's address to `addr`/`addrlen` when given. Errors: `EBADF`, `ENOTSOCK`, `EINVAL` (not
/// listening), `EAGAIN`, `ENOBUFS`, `EMFILE`, `EFAULT`.
#[no_mangle]
pub extern "C" fn sys_accept(s: i32, addr: *mut u8, addrlen: *mut socklen_t) -> i32 {
    call(|| {
        let obj = object::get(s)?;
        let (sock, peer) = obj.socket()?.accept(obj.nonblocking())?;
        write_sockaddr(peer, addr, addrlen)?;
        object::install(Object::new(Kind::Socket(sock)))
    })
}

/// Connects socket `s` to `name`: TCP waits for the handshake (non-blocking: `EINPROGRESS`, then `poll` for
/// `POLLOUT` and `SO_ERROR`); UDP sets the default peer. Errors: `EBADF`, `ENOTSOCK`, `EAFNOSUPPORT`,
/// `EINPROGRESS`, `EALREADY`, `EISCONN`, `ECONNREFUSED`, `ETIMEDOUT`, `ENETUNREACH`, `EFAULT`.
#[no_mangle]
pub extern "C" fn sys_connect(s: i32, name: *const u8, namelen: socklen_t) -> i32 {
    call(|| {
        let addr = sockaddr_arg(name, namelen)?;
        let obj = object::get(s)?;
        obj.socket()?.connect(addr, obj.nonblocking()).map(|()| 0)
    })
}

/// Receives up to `len` bytes from socket `s` (`MSG_PEEK` keeps them queued). Errors: `EBADF`, `ENOTSOCK`,
/// `ENOTCONN`, `EAGAIN`, `ECONNRESET`, `EINVAL`, `EFAULT`.
#[no_mangle]
pub extern "C" fn sys_recv(s: i32, buf: *mut u8, n: usize, flags: i32) -> isize {
    call(|| {
        let buf = user::slice_mut(buf, n)?;
        let obj = object::get(s)?;
        len(obj.socket()?.recv(buf, flags, obj.nonblocking())?)
    })
}

/// Receives one datagram (or stream bytes) and the sender's address. Errors: as [`sys_recv`].
#[no_mangle]
pub extern "C" fn sys_recvfrom(
    s: i32,
    buf: *mut u8,
    n: usize,
    flags: i32,
    addr: *mut u8,
    addrlen: *mut socklen_t,
) -> isize {
    call(|| {
        let buf = user::slice_mut(buf, n)?;
        let obj = object::get(s)?;
        let (got, from) = obj.socket()?.recv_from(buf, flags, obj.nonblocking())?;
        write_sockaddr(from, addr, addrlen)?;
        len(got)
    })
}

/// Sends up to `len` bytes on socket `s` (`flags` must be 0). Errors: `EBADF`, `ENOTSOCK`, `ENOTCONN`,
/// `EAGAIN`, `EPIPE`, `ECONNRESET`, `EDESTADDRREQ`, `EMSGSIZE`, `EINVAL`, `EFAULT`.
#[no_mangle]
pub extern "C" fn sys_send(s: i32, mem: *const u8, n: usize, flags: i32) -> isize {
    call(|| {
        if flags != 0 {
            return Err(Errno::EINVAL);
        }
        let buf = user::slice(mem, n)?;
        let obj = object::get(s)?;
        len(obj.socket()?.send(buf, obj.nonblocking())?)
    })
}

/// Sends one datagram to `to` (TCP: as [`sys_send`]). Errors: as [`sys_send`], `EAFNOSUPPORT`.
#[no_mangle]
pub extern "C" fn sys_sendto(s: i32, mem: *const u8, n: usize, flags: i32, to: *const u8, tolen: socklen_t) -> isize {
    call(|| {
        if flags != 0 {
            return Err(Errno::EINVAL);
        }
        let buf = user::slice(mem, n)?;
        let obj = object::get(s)?;
        let sock = obj.socket()?;
        if to.is_null() {
            return len(sock.send(buf, obj.nonblocking())?);
        }
        len(sock.send_to(buf, sockaddr_arg(to, tolen)?, obj.nonblocking())?)
    })
}

/// Shuts down reading (`SHUT_RD`), writing (`SHUT_WR`, FIN after the queued data) or both. Errors: `EBADF`,
/// `ENOTSOCK`, `ENOTCONN`, `EINVAL`.
#[no_mangle]
pub extern "C" fn sys_shutdown(sockfd: i32, how: i32) -> i32 {
    call(|| object::get(sockfd)?.socket()?.shutdown(how).map(|()| 0))
}

/// Same as [`sys_shutdown`] (older name).
#[no_mangle]
pub extern "C" fn sys_shutdown_socket(s: i32, how: i32) -> i32 {
    sys_shutdown(s, how)
}

/// Writes the socket's local address. Errors: `EBADF`, `ENOTSOCK`, `EFAULT`.
#[no_mangle]
pub extern "C" fn sys_getsockname(s: i32, name: *mut u8, namelen: *mut socklen_t) -> i32 {
    call(|| {
        let a = object::get(s)?.socket()?.local_addr()?;
        write_sockaddr(a, name, namelen).map(|()| 0)
    })
}

/// Writes the connected peer's address. Errors: `EBADF`, `ENOTSOCK`, `ENOTCONN`, `EFAULT`.
#[no_mangle]
pub extern "C" fn sys_getpeername(s: i32, name: *mut u8, namelen: *mut socklen_t) -> i32 {
    call(|| {
        let a = object::get(s)?.socket()?.peer_addr()?;
        write_sockaddr(a, name, namelen).map(|()| 0)
    })
}

/// Sets an option (see `Socket::set_option`: `SO_RCVTIMEO`, `SO_SNDTIMEO`, `TCP_NODELAY`, and accepted ones).
/// Errors: `EBADF`, `ENOTSOCK`, `ENOPROTOOPT`, `EINVAL`, `EFAULT`.
#[no_mangle]
pub extern "C" fn sys_setsockopt(s: i32, level: i32, optname: i32, optval: *const u8, optlen: socklen_t) -> i32 {
    call(|| {
        let v = user::slice(optval, optlen as usize)?;
        object::get(s)?.socket()?.set_option(level, optname, v).map(|()| 0)
    })
}

/// Reads an option into `optval` (cut to `*optlen`), setting `*optlen` to its size; `SO_ERROR` takes the
/// pending error. Errors: `EBADF`, `ENOTSOCK`, `ENOPROTOOPT`, `EFAULT`.
#[no_mangle]
pub extern "C" fn sys_getsockopt(s: i32, level: i32, optname: i32, optval: *mut u8, optlen: *mut socklen_t) -> i32 {
    call(|| {
        let v = object::get(s)?.socket()?.option(level, optname)?;
        let cap = user::read(optlen)? as usize;
        let n = cap.min(v.len());
        user::slice_mut(optval, n)?.copy_from_slice(&v[..n]);
        user::write(optlen, v.len() as socklen_t).map(|()| 0)
    })
}

/// The network is started at boot: 0, or `-ENETDOWN` without a NIC.
#[no_mangle]
pub extern "C" fn sys_network_init() -> i32 {
    call(|| net::stack().map(|_| 0).map_err(|e| Errno::from(&e)))
}

/// Resolves `name` to IPv4 addresses: a literal as is, else DNS A records (waiting for the network's
/// address first, as long as a connect would).
fn resolve(name: &str) -> Result<Vec<Ipv4Addr>, i32> {
    if let Ok(ip) = name.parse::<Ipv4Addr>() {
        return Ok(alloc::vec![ip]);
    }
    if name == "localhost" {
        return Ok(alloc::vec![Ipv4Addr::LOCALHOST]);
    }
    let stack = net::stack().map_err(|_| abi::EAI_FAIL)?;
    let wait = stack.config().connect_timeout;
    libos::thread::block_on(libos::time::timeout(wait, stack.wait_configured())).map_err(|_| abi::EAI_AGAIN)?;
    let addrs = libos::thread::block_on(net::resolve_on(&stack, name)).map_err(|e| match e {
        net::Error::Dns(net::DnsError::NoServer | net::DnsError::TooManyQueries) => abi::EAI_AGAIN,
        net::Error::Dns(net::DnsError::Failed(_)) => abi::EAI_NONAME,
        _ => abi::EAI_FAIL,
    })?;
    let v4: Vec<Ipv4Addr> = addrs
        .into_iter()
        .filter_map(|a| match a {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        })
        .collect();
    if v4.is_empty() {
        return Err(abi::EAI_NONAME);
    }
    Ok(v4)
}

fn opt_cstr<'a>(p: *const u8) -> AbiResult<Option<&'a str>> {
    if p.is_null() {
        return Ok(None);
    }
    user::cstr(p).map(Some)
}

/// One `getaddrinfo` result node with its address, kept alive by [`LISTS`] until `freeaddrinfo`.
#[repr(C)]
struct Node {
    ai: addrinfo,
    sin: sockaddr_in,
}

/// Result lists handed out, by the address of their first node. Boxed: `ai_addr` and `ai_next` point into the
/// nodes, which must not move when the vector grows.
#[allow(clippy::vec_box)]
static LISTS: spin::Mutex<BTreeMap<usize, Vec<Box<Node>>>> = spin::Mutex::new(BTreeMap::new());

/// Resolves `nodename` (null: the unspecified address) and the numeric port `servname` (null: 0) into a list
/// of `addrinfo` at `*res`, one per address and socket type (`hints.ai_socktype`, or both TCP and UDP when 0);
/// `hints.ai_family` must be `AF_UNSPEC` or `AF_INET`. Returns 0 or an `EAI_*` code (not negated):
/// `EAI_NONAME` (both null, or no such name), `EAI_SERVICE` (a service name, not a number), `EAI_FAMILY`,
/// `EAI_SOCKTYPE`, `EAI_AGAIN` (no DNS server yet), `EAI_FAIL`.
#[no_mangle]
pub extern "C" fn sys_getaddrinfo(
    nodename: *const u8,
    servname: *const u8,
    hints: *const addrinfo,
    res: *mut *mut addrinfo,
) -> i32 {
    let _inside = libos::thread::no_preempt();
    let fail = |code: i32| code;
    let hints = match user::read_opt(hints) {
        Ok(h) => h,
        Err(_) => return fail(abi::EAI_FAIL),
    };
    let (family, socktype) = hints.map_or((abi::AF_UNSPEC, 0), |h| (h.ai_family, h.ai_socktype));
    if family != abi::AF_UNSPEC && family != abi::AF_INET {
        return fail(abi::EAI_FAMILY);
    }
    let types: &[i32] = match socktype {
        0 => &[abi::SOCK_STREAM, abi::SOCK_DGRAM],
        abi::SOCK_STREAM => &[abi::SOCK_STREAM],
        abi::SOCK_DGRAM => &[abi::SOCK_DGRAM],
        _ => return fail(abi::EAI_SOCKTYPE),
    };
    let (node, service) = match (opt_cstr(nodename), opt_cstr(servname)) {
        (Ok(n), Ok(s)) => (n, s),
        _ => return fail(abi::EAI_NONAME),
    };
    if node.is_none() && service.is_none() {
        return fail(abi::EAI_NONAME);
    }
    let port = match service {
        None => 0,
        Some(s) => match s.parse::<u16>() {
            Ok(p) => p,
            Err(_) => return fail(abi::EAI_SERVICE),
        },
    };
    let addrs = match node {
        None => alloc::vec![Ipv4Addr::UNSPECIFIED],
        Some(n) => match resolve(n) {
            Ok(a) => a,
            Err(code) => return fail(code),
        },
    };
    let mut nodes: Vec<Box<Node>> = Vec::new();
    for ip in addrs {
        for &ty in types {
            let protocol = if ty == abi::SOCK_STREAM { abi::IPPROTO_TCP } else { abi::IPPROTO_UDP };
            let mut n = Box::new(Node {
                ai: addrinfo {
                    ai_flags: 0,
                    ai_family: abi::AF_INET,
                    ai_socktype: ty,
                    ai_protocol: protocol,
                    ai_addrlen: core::mem::size_of::<sockaddr_in>() as socklen_t,
                    ai_canonname: 0,
                    ai_addr: 0,
                    ai_next: 0,
                },
                sin: sockaddr_in::from_addr(SocketAddrV4::new(ip, port)),
            });
            n.ai.ai_addr = &n.sin as *const sockaddr_in as usize;
            nodes.push(n);
        }
    }
    // Link them: each node's `ai_next` is the next node's address (boxes do not move).
    let addrs_of: Vec<usize> = nodes.iter().map(|n| &n.ai as *const addrinfo as usize).collect();
    for (i, n) in nodes.iter_mut().enumerate() {
        n.ai.ai_next = addrs_of.get(i + 1).copied().unwrap_or(0);
    }
    let head = addrs_of[0];
    if user::write(res, head as *mut addrinfo).is_err() {
        return fail(abi::EAI_FAIL);
    }
    LISTS.lock().insert(head, nodes);
    0
}

/// Frees a list from [`sys_getaddrinfo`]; pointers it did not hand out are ignored.
#[no_mangle]
pub extern "C" fn sys_freeaddrinfo(ai: *mut addrinfo) {
    let _inside = libos::thread::no_preempt();
    let list = LISTS.lock().remove(&(ai as usize));
    drop(list);
}

/// Resolves `name` to its first IPv4 address, written as 4 bytes (network order) to `inaddr`; `len` must be 4
/// (16, IPv6, gives `EAFNOSUPPORT`). Errors: `EINVAL` (other lengths, bad name), `ENOENT` (no such name),
/// `EAGAIN` (no DNS server yet), `EFAULT`.
#[no_mangle]
pub extern "C" fn sys_getaddrbyname(name: *const u8, inaddr: *mut u8, n: usize) -> i32 {
    call(|| {
        match n {
            4 => {}
            16 => return Err(Errno::EAFNOSUPPORT),
            _ => return Err(Errno::EINVAL),
        }
        let name = user::cstr(name)?;
        let ip = *resolve(name)
            .map_err(|code| if code == abi::EAI_AGAIN { Errno::EAGAIN } else { Errno::ENOENT })?
            .first()
            .ok_or(Errno::ENOENT)?;
        user::slice_mut(inaddr, 4)?.copy_from_slice(&ip.octets());
        Ok(0)
    })
}
