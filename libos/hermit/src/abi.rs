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

/// `open` access mode bits and flags.
pub const O_ACCMODE: i32 = 0o3;
pub const O_RDONLY: i32 = 0o0;
pub const O_WRONLY: i32 = 0o1;
pub const O_RDWR: i32 = 0o2;
pub const O_CREAT: i32 = 0o100;
pub const O_EXCL: i32 = 0o200;
pub const O_TRUNC: i32 = 0o1000;
pub const O_APPEND: i32 = 0o2000;
pub const O_NONBLOCK: i32 = 0o4000;
pub const O_DIRECTORY: i32 = 0o200000;
/// `O_CLOEXEC` (accepted, meaningless without exec).
pub const O_CLOEXEC: i32 = 0o2000000;

/// `fcntl` commands.
pub const F_DUPFD: i32 = 0;
pub const F_GETFD: i32 = 1;
pub const F_SETFD: i32 = 2;
pub const F_GETFL: i32 = 3;
pub const F_SETFL: i32 = 4;
pub const FD_CLOEXEC: i32 = 1;

/// `lseek` whence.
pub const SEEK_SET: i32 = 0;
pub const SEEK_CUR: i32 = 1;
pub const SEEK_END: i32 = 2;

/// `st_mode` file types.
pub const S_IFMT: u32 = 0o170000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFSOCK: u32 = 0o140000;

/// `dirent64::d_type`.
pub const DT_DIR: u8 = 4;
pub const DT_REG: u8 = 8;

/// Socket domains, types and protocols.
pub const AF_UNSPEC: i32 = 0;
pub const AF_INET6: i32 = 1;
pub const AF_INET: i32 = 3;
pub const SOCK_STREAM: i32 = 1;
pub const SOCK_DGRAM: i32 = 2;
pub const SOCK_NONBLOCK: i32 = 0o4000;
pub const SOCK_CLOEXEC: i32 = 0o40000;
pub const IPPROTO_IP: i32 = 0;
pub const IPPROTO_TCP: i32 = 6;
pub const IPPROTO_UDP: i32 = 17;
pub const IPPROTO_IPV6: i32 = 41;

/// Socket options.
pub const SOL_SOCKET: i32 = 4095;
pub const SO_REUSEADDR: i32 = 0x0004;
pub const SO_KEEPALIVE: i32 = 0x0008;
pub const SO_BROADCAST: i32 = 0x0020;
pub const SO_LINGER: i32 = 0x0080;
pub const SO_SNDBUF: i32 = 0x1001;
pub const SO_RCVBUF: i32 = 0x1002;
pub const SO_SNDTIMEO: i32 = 0x1005;
pub const SO_RCVTIMEO: i32 = 0x1006;
pub const SO_ERROR: i32 = 0x1007;
pub const TCP_NODELAY: i32 = 1;
pub const IP_TTL: i32 = 2;
pub const MSG_PEEK: i32 = 1;
/// `ioctl` request: set (non-zero `int` argument) or clear non-blocking mode.
pub const FIONBIO: i32 = 0x8008_667eu32 as i32;
pub const SHUT_RD: i32 = 0;
pub const SHUT_WR: i32 = 1;
pub const SHUT_RDWR: i32 = 2;

/// `getaddrinfo` errors (returned as is, not negated).
pub const EAI_AGAIN: i32 = 2;
pub const EAI_BADFLAGS: i32 = 3;
pub const EAI_FAIL: i32 = 4;
pub const EAI_FAMILY: i32 = 5;
pub const EAI_MEMORY: i32 = 6;
pub const EAI_NONAME: i32 = 8;
pub const EAI_SERVICE: i32 = 9;
pub const EAI_SOCKTYPE: i32 = 10;

/// `poll` events.
pub const POLLIN: i16 = 0x1;
pub const POLLPRI: i16 = 0x2;
pub const POLLOUT: i16 = 0x4;
pub const POLLERR: i16 = 0x8;
pub const POLLHUP: i16 = 0x10;
pub const POLLNVAL: i16 = 0x20;
pub const POLLRDNORM: i16 = 0x040;
pub const POLLRDBAND: i16 = 0x080;
pub const POLLWRNORM: i16 = 0x0100;
pub const POLLWRBAND: i16 = 0x0200;
pub const POLLRDHUP: i16 = 0x2000;

/// `eventfd` flags.
pub const EFD_SEMAPHORE: i16 = 0o1;
pub const EFD_NONBLOCK: i16 = 0o4000;
pub const EFD_CLOEXEC: i16 = 0o40000;

/// Most `iovec`s one `readv`/`writev` takes.
pub const IOV_MAX: usize = 1024;

/// `struct timespec`: seconds and nanoseconds (note Hermit's 32-bit `tv_nsec`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct timespec {
    pub tv_sec: i64,
    pub tv_nsec: i32,
}

/// `struct timeval`: seconds and microseconds (socket timeouts).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct timeval {
    pub tv_sec: i64,
    pub tv_usec: i32,
}

/// `struct stat`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct stat {
    pub st_dev: u64,
    pub st_ino: u64,
    pub st_nlink: u64,
    pub st_mode: u32,
    pub st_uid: u32,
    pub st_gid: u32,
    pub st_rdev: u64,
    pub st_size: i64,
    pub st_blksize: i64,
    pub st_blocks: i64,
    pub st_atim: timespec,
    pub st_mtim: timespec,
    pub st_ctim: timespec,
}

/// `struct dirent64`: one `getdents64` record (Zirvium always writes the whole struct, `d_reclen` bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dirent64 {
    pub d_ino: u64,
    pub d_off: i64,
    pub d_reclen: u16,
    pub d_type: u8,
    pub d_name: [u8; 256],
}

/// `struct pollfd`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct pollfd {
    pub fd: i32,
    pub events: i16,
    pub revents: i16,
}

/// `struct iovec`: `(base address, length in bytes)`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct iovec {
    pub iov_base: usize,
    pub iov_len: usize,
}

/// `struct in_addr`: the IPv4 address in network byte order (its bytes are the address's octets).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct in_addr {
    pub s_addr: u32,
}

/// `struct sockaddr_in` (BSD layout with `sin_len`; the port in network byte order).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct sockaddr_in {
    pub sin_len: u8,
    pub sin_family: u8,
    pub sin_port: u16,
    pub sin_addr: in_addr,
    pub sin_zero: [u8; 8],
}

/// `struct linger`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct linger {
    pub l_onoff: i32,
    pub l_linger: i32,
}

/// `struct addrinfo` (a `getaddrinfo` result node; pointers as addresses).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct addrinfo {
    pub ai_flags: i32,
    pub ai_family: i32,
    pub ai_socktype: i32,
    pub ai_protocol: i32,
    pub ai_addrlen: socklen_t,
    pub ai_canonname: usize,
    pub ai_addr: usize,
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
