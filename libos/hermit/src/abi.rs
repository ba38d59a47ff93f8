//! The C types and constants of the Hermit ABI as the pinned nightly's `std` and the `libc` crate see them
//! (`hermit-abi` 0.5: `src/lib.rs`; `libc` `src/hermit.rs`). Layouts are `repr(C)` and checked by the host
//! tests below; values are Hermit's own (e.g. `AF_INET` is 3, `SOL_SOCKET` 4095), not Linux's.
#![forbid(unsafe_code)]
#![allow(non_camel_case_types)]

/// Thread id (`hermit_abi::Tid`).
pub type Tid = u32;
/// `socklen_t`.
pub type socklen_t = u32;

/// `clock_gettime` clock: wall time since the Unix epoch.
pub const CLOCK_REALTIME: i32 = 1;
/// `clock_gettime` clock: time since boot, never decreasing.
pub const CLOCK_MONOTONIC: i32 = 4;
/// `futex_wait` flag: the timeout is relative to now (else absolute on `CLOCK_MONOTONIC`).
pub const FUTEX_RELATIVE_TIMEOUT: u32 = 1;

/// `open` flags: mask of the access mode (`O_RDONLY`, `O_WRONLY`, `O_RDWR`).
pub const O_ACCMODE: i32 = 0o3;
/// `open` access mode: read only.
pub const O_RDONLY: i32 = 0o0;
/// `open` access mode: write only.
pub const O_WRONLY: i32 = 0o1;
/// `open` access mode: read and write.
pub const O_RDWR: i32 = 0o2;
/// `open` flag: create the file when it does not exist.
pub const O_CREAT: i32 = 0o100;
/// `open` flag: with `O_CREAT`, fail with `EEXIST` when the file exists.
pub const O_EXCL: i32 = 0o200;
/// `open` flag: truncate a regular file to 0 bytes.
pub const O_TRUNC: i32 = 0o1000;
/// `open` flag: every write goes to the end of the file.
pub const O_APPEND: i32 = 0o2000;
/// `open` flag: non-blocking I/O.
pub const O_NONBLOCK: i32 = 0o4000;
/// `open` flag: fail with `ENOTDIR` unless the path is a directory.
pub const O_DIRECTORY: i32 = 0o200000;
/// `O_CLOEXEC` (accepted, meaningless without exec).
pub const O_CLOEXEC: i32 = 0o2000000;

/// `fcntl` command: duplicate the descriptor to the lowest free number ≥ the argument.
pub const F_DUPFD: i32 = 0;
/// `fcntl` command: the descriptor flags (`FD_CLOEXEC`).
pub const F_GETFD: i32 = 1;
/// `fcntl` command: set the descriptor flags.
pub const F_SETFD: i32 = 2;
/// `fcntl` command: the status flags (`O_NONBLOCK`, `O_APPEND`, access mode).
pub const F_GETFL: i32 = 3;
/// `fcntl` command: set the status flags (`O_NONBLOCK`).
pub const F_SETFL: i32 = 4;
/// Descriptor flag of `F_GETFD`/`F_SETFD`: close on exec (kept, meaningless without exec).
pub const FD_CLOEXEC: i32 = 1;

/// `lseek` whence: from the start of the file.
pub const SEEK_SET: i32 = 0;
/// `lseek` whence: from the current offset.
pub const SEEK_CUR: i32 = 1;
/// `lseek` whence: from the end of the file.
pub const SEEK_END: i32 = 2;

/// `st_mode`: mask of the file type bits.
pub const S_IFMT: u32 = 0o170000;
/// `st_mode` file type: character device (the console).
pub const S_IFCHR: u32 = 0o020000;
/// `st_mode` file type: directory.
pub const S_IFDIR: u32 = 0o040000;
/// `st_mode` file type: regular file.
pub const S_IFREG: u32 = 0o100000;
/// `st_mode` file type: socket.
pub const S_IFSOCK: u32 = 0o140000;

/// `dirent64::d_type`: directory.
pub const DT_DIR: u8 = 4;
/// `dirent64::d_type`: regular file.
pub const DT_REG: u8 = 8;

/// Address family: any (`getaddrinfo` hints).
pub const AF_UNSPEC: i32 = 0;
/// Address family: IPv6 (refused with `EAFNOSUPPORT`).
pub const AF_INET6: i32 = 1;
/// Address family: IPv4.
pub const AF_INET: i32 = 3;
/// Socket type: TCP.
pub const SOCK_STREAM: i32 = 1;
/// Socket type: UDP.
pub const SOCK_DGRAM: i32 = 2;
/// `socket` type flag: start in non-blocking mode.
pub const SOCK_NONBLOCK: i32 = 0o4000;
/// `socket` type flag: close on exec (accepted, meaningless without exec).
pub const SOCK_CLOEXEC: i32 = 0o40000;
/// Protocol level of IPv4 options (`IP_TTL`); as a protocol, the type's default.
pub const IPPROTO_IP: i32 = 0;
/// Protocol: TCP; also the level of `TCP_NODELAY`.
pub const IPPROTO_TCP: i32 = 6;
/// Protocol: UDP.
pub const IPPROTO_UDP: i32 = 17;
/// Protocol level of IPv6 options (refused).
pub const IPPROTO_IPV6: i32 = 41;

/// `getsockopt`/`setsockopt` level of the socket options (`SO_*`).
pub const SOL_SOCKET: i32 = 4095;
/// Socket option: reuse a local address (accepted and remembered).
pub const SO_REUSEADDR: i32 = 0x0004;
/// Socket option: TCP keep-alive probes (accepted and remembered).
pub const SO_KEEPALIVE: i32 = 0x0008;
/// Socket option: UDP broadcast (accepted and remembered).
pub const SO_BROADCAST: i32 = 0x0020;
/// Socket option: `struct linger` for `close` (accepted and remembered).
pub const SO_LINGER: i32 = 0x0080;
/// Socket option: send buffer size in bytes (reads give the stack's fixed size; writes are accepted).
pub const SO_SNDBUF: i32 = 0x1001;
/// Socket option: receive buffer size in bytes (as `SO_SNDBUF`).
pub const SO_RCVBUF: i32 = 0x1002;
/// Socket option: send timeout, a `struct timeval` (zero: none).
pub const SO_SNDTIMEO: i32 = 0x1005;
/// Socket option: receive timeout, a `struct timeval` (zero: none).
pub const SO_RCVTIMEO: i32 = 0x1006;
/// Socket option: the pending error (read and cleared), e.g. of a non-blocking `connect`.
pub const SO_ERROR: i32 = 0x1007;
/// TCP option (level `IPPROTO_TCP`): disable Nagle's algorithm.
pub const TCP_NODELAY: i32 = 1;
/// IPv4 option (level `IPPROTO_IP`): the time-to-live of sent packets (remembered; reads default to 64).
pub const IP_TTL: i32 = 2;
/// `recv` flag: return data without removing it from the receive buffer.
pub const MSG_PEEK: i32 = 1;
/// `ioctl` request: set (non-zero `int` argument) or clear non-blocking mode.
pub const FIONBIO: i32 = 0x8008_667eu32 as i32;
/// `shutdown`: no more receiving.
pub const SHUT_RD: i32 = 0;
/// `shutdown`: no more sending (TCP FIN).
pub const SHUT_WR: i32 = 1;
/// `shutdown`: both directions.
pub const SHUT_RDWR: i32 = 2;

/// `getaddrinfo` error (returned as is, not negated): temporary failure, try again.
pub const EAI_AGAIN: i32 = 2;
/// `getaddrinfo` error: bad `ai_flags`.
pub const EAI_BADFLAGS: i32 = 3;
/// `getaddrinfo` error: the name server failed for good.
pub const EAI_FAIL: i32 = 4;
/// `getaddrinfo` error: address family not supported.
pub const EAI_FAMILY: i32 = 5;
/// `getaddrinfo` error: out of memory.
pub const EAI_MEMORY: i32 = 6;
/// `getaddrinfo` error: the name does not resolve.
pub const EAI_NONAME: i32 = 8;
/// `getaddrinfo` error: the service (port) is not a number.
pub const EAI_SERVICE: i32 = 9;
/// `getaddrinfo` error: socket type not supported.
pub const EAI_SOCKTYPE: i32 = 10;

/// `poll` event: data to read (or a connection to accept).
pub const POLLIN: i16 = 0x1;
/// `poll` event: urgent data (never reported).
pub const POLLPRI: i16 = 0x2;
/// `poll` event: writing will not block.
pub const POLLOUT: i16 = 0x4;
/// `poll` event (`revents` only): an error is pending.
pub const POLLERR: i16 = 0x8;
/// `poll` event (`revents` only): the peer hung up.
pub const POLLHUP: i16 = 0x10;
/// `poll` event (`revents` only): the descriptor is not open.
pub const POLLNVAL: i16 = 0x20;
/// `poll` event: normal data to read (as `POLLIN`).
pub const POLLRDNORM: i16 = 0x040;
/// `poll` event: priority data to read (never reported).
pub const POLLRDBAND: i16 = 0x080;
/// `poll` event: normal data can be written (as `POLLOUT`).
pub const POLLWRNORM: i16 = 0x0100;
/// `poll` event: priority data can be written (never reported).
pub const POLLWRBAND: i16 = 0x0200;
/// `poll` event: the peer shut down its sending side.
pub const POLLRDHUP: i16 = 0x2000;

/// `eventfd` flag: each read takes 1 from the counter instead of all of it.
pub const EFD_SEMAPHORE: i16 = 0o1;
/// `eventfd` flag: reads of 0 and overflowing writes fail with `EAGAIN` instead of blocking.
pub const EFD_NONBLOCK: i16 = 0o4000;
/// `eventfd` flag: close on exec (accepted, meaningless without exec).
pub const EFD_CLOEXEC: i16 = 0o40000;

/// Most `iovec`s one `readv`/`writev` takes.
pub const IOV_MAX: usize = 1024;

/// `struct timespec`: seconds and nanoseconds (note Hermit's 32-bit `tv_nsec`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct timespec {
    /// Whole seconds.
    pub tv_sec: i64,
    /// Nanoseconds, 0..1_000_000_000.
    pub tv_nsec: i32,
}

/// `struct timeval`: seconds and microseconds (socket timeouts).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct timeval {
    /// Whole seconds.
    pub tv_sec: i64,
    /// Microseconds, 0..1_000_000.
    pub tv_usec: i32,
}

/// `struct stat`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct stat {
    /// Device id (0).
    pub st_dev: u64,
    /// Inode number.
    pub st_ino: u64,
    /// Hard links (1).
    pub st_nlink: u64,
    /// File type (`S_IF*`) and permission bits.
    pub st_mode: u32,
    /// Owner (0).
    pub st_uid: u32,
    /// Group (0).
    pub st_gid: u32,
    /// Device id of a special file (0).
    pub st_rdev: u64,
    /// Size in bytes.
    pub st_size: i64,
    /// Preferred I/O size in bytes (4096).
    pub st_blksize: i64,
    /// 512-byte blocks allocated.
    pub st_blocks: i64,
    /// Last access time (as `st_mtim`).
    pub st_atim: timespec,
    /// Last modification time (since the Unix epoch).
    pub st_mtim: timespec,
    /// Last status change time (as `st_mtim`).
    pub st_ctim: timespec,
}

/// `struct dirent64`: one `getdents64` record (Zirvium always writes the whole struct, `d_reclen` bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dirent64 {
    /// Inode number.
    pub d_ino: u64,
    /// Offset of the next record (the `getdents64` position).
    pub d_off: i64,
    /// Bytes of this record.
    pub d_reclen: u16,
    /// File type (`DT_DIR`, `DT_REG`).
    pub d_type: u8,
    /// Name, NUL-terminated.
    pub d_name: [u8; 256],
}

/// `struct pollfd`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct pollfd {
    /// Descriptor (negative: ignored).
    pub fd: i32,
    /// Events asked for (`POLL*`).
    pub events: i16,
    /// Events that happened (written by `poll`).
    pub revents: i16,
}

/// `struct iovec`: `(base address, length in bytes)`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct iovec {
    /// Address of the buffer.
    pub iov_base: usize,
    /// Length in bytes.
    pub iov_len: usize,
}

/// `struct in_addr`: the IPv4 address in network byte order (its bytes are the address's octets).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct in_addr {
    /// The address, network byte order.
    pub s_addr: u32,
}

/// `struct sockaddr_in` (BSD layout with `sin_len`; the port in network byte order).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct sockaddr_in {
    /// Length of the structure in bytes (16).
    pub sin_len: u8,
    /// `AF_INET`.
    pub sin_family: u8,
    /// Port, network byte order.
    pub sin_port: u16,
    /// IPv4 address.
    pub sin_addr: in_addr,
    /// Padding, zero.
    pub sin_zero: [u8; 8],
}

/// `struct linger`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct linger {
    /// Non-zero: linger on close.
    pub l_onoff: i32,
    /// Seconds to linger.
    pub l_linger: i32,
}

/// `struct addrinfo` (a `getaddrinfo` result node; pointers as addresses).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct addrinfo {
    /// `AI_*` flags of the hints.
    pub ai_flags: i32,
    /// Address family (`AF_INET`).
    pub ai_family: i32,
    /// Socket type (`SOCK_STREAM`, `SOCK_DGRAM`).
    pub ai_socktype: i32,
    /// Protocol (`IPPROTO_TCP`, `IPPROTO_UDP`).
    pub ai_protocol: i32,
    /// Bytes at `ai_addr`.
    pub ai_addrlen: socklen_t,
    /// Address of the canonical name, or 0.
    pub ai_canonname: usize,
    /// Address of the `sockaddr_in`.
    pub ai_addr: usize,
    /// Address of the next node, or 0.
    pub ai_next: usize,
}

/// Bytes of `struct sockaddr_storage` (the largest address callers pass).
pub const SOCKADDR_STORAGE_BYTES: usize = 128;

impl sockaddr_in {
    /// The C form of `addr`.
    pub fn from_addr(addr: core::net::SocketAddrV4) -> Self {
        Self {
            sin_len: core::mem::size_of::<Self>() as u8,
            sin_family: AF_INET as u8,
            sin_port: addr.port().to_be(),
            sin_addr: in_addr { s_addr: u32::from_ne_bytes(addr.ip().octets()) },
            sin_zero: [0; 8],
        }
    }

    /// The address this describes (the family is not checked here).
    pub fn to_addr(&self) -> core::net::SocketAddrV4 {
        core::net::SocketAddrV4::new(self.sin_addr.s_addr.to_ne_bytes().into(), u16::from_be(self.sin_port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layouts_match_hermit_abi() {
        assert_eq!(size_of::<timespec>(), 16);
        assert_eq!(size_of::<timeval>(), 16);
        assert_eq!(size_of::<pollfd>(), 8);
        assert_eq!(size_of::<iovec>(), 16);
        assert_eq!(size_of::<sockaddr_in>(), 16);
        assert_eq!(offset_of!(sockaddr_in, sin_port), 2);
        assert_eq!(offset_of!(sockaddr_in, sin_addr), 4);
        assert_eq!(size_of::<stat>(), 120);
        assert_eq!(offset_of!(stat, st_rdev), 40);
        assert_eq!(offset_of!(stat, st_size), 48);
        assert_eq!(offset_of!(stat, st_mtim), 88);
        assert_eq!(offset_of!(dirent64, d_reclen), 16);
        assert_eq!(offset_of!(dirent64, d_type), 18);
        assert_eq!(offset_of!(dirent64, d_name), 19);
        assert_eq!(size_of::<dirent64>(), 280);
        assert_eq!(size_of::<addrinfo>(), 48);
        assert_eq!(offset_of!(addrinfo, ai_addr), 32);
        assert_eq!(offset_of!(addrinfo, ai_next), 40);
    }

    #[test]
    fn sockaddr_in_round_trips_in_network_order() {
        let a: core::net::SocketAddrV4 = "10.0.2.15:8080".parse().unwrap();
        let c = sockaddr_in::from_addr(a);
        assert_eq!(c.sin_family, 3);
        assert_eq!(c.sin_port.to_ne_bytes(), [0x1f, 0x90], "port bytes in network order");
        assert_eq!(c.sin_addr.s_addr.to_ne_bytes(), [10, 0, 2, 15]);
        assert_eq!(c.to_addr(), a);
    }
}
