//! Error numbers of the Hermit ABI (`hermit-abi` 0.5 `src/errno.rs`, Linux's values) and how the library OS's
//! errors map onto them. A call that fails returns `-errno` and also stores `errno` for the calling thread
//! (`sys_get_errno`): `std` reads the negative return, `libc` users such as mio read `errno`.
#![forbid(unsafe_code)]

use core::fmt;

/// An error number (positive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

macro_rules! errnos {
    ($($name:ident = $v:expr, $what:expr;)*) => {
        impl Errno {
            $(#[doc = $what] pub const $name: Errno = Errno($v);)*

            /// The constant's name (`"ENOENT"`), or `"E?"` for a number not listed here.
            pub fn name(self) -> &'static str {
                match self.0 {
                    $($v => stringify!($name),)*
                    _ => "E?",
                }
            }
        }
    };
}

errnos! {
    EPERM = 1, "Operation not permitted";
    ENOENT = 2, "No such file or directory";
    ESRCH = 3, "No such thread";
    EINTR = 4, "Interrupted call";
    EIO = 5, "I/O error";
    EBADF = 9, "Bad file descriptor";
    EAGAIN = 11, "Try again (would block)";
    ENOMEM = 12, "Out of memory";
    EACCES = 13, "Permission denied";
    EFAULT = 14, "Bad address";
    EBUSY = 16, "Device or resource busy";
    EEXIST = 17, "File exists";
    EXDEV = 18, "Cross-device link";
    ENOTDIR = 20, "Not a directory";
    EISDIR = 21, "Is a directory";
    EINVAL = 22, "Invalid argument";
    EMFILE = 24, "Too many open files";
    ENOTTY = 25, "Not a terminal / unknown ioctl";
    EFBIG = 27, "File too large";
    ENOSPC = 28, "No space left on device";
    ESPIPE = 29, "Illegal seek";
    EROFS = 30, "Read-only file system";
    EPIPE = 32, "Broken pipe";
    EDEADLK = 35, "Resource deadlock would occur";
    ENAMETOOLONG = 36, "File name too long";
    ENOSYS = 38, "Function not implemented";
    ENOTEMPTY = 39, "Directory not empty";
    ENOTSOCK = 88, "Not a socket";
    EDESTADDRREQ = 89, "Destination address required";
    EMSGSIZE = 90, "Message too long";
    ENOPROTOOPT = 92, "Protocol not available";
    EPROTONOSUPPORT = 93, "Protocol not supported";
    EOPNOTSUPP = 95, "Operation not supported";
    EAFNOSUPPORT = 97, "Address family not supported";
    EADDRINUSE = 98, "Address already in use";
    EADDRNOTAVAIL = 99, "Cannot assign requested address";
    ENETDOWN = 100, "Network is down";
    ENETUNREACH = 101, "Network is unreachable";
    ECONNABORTED = 103, "Connection aborted";
    ECONNRESET = 104, "Connection reset by peer";
    ENOBUFS = 105, "No buffer space available";
    EISCONN = 106, "Already connected";
    ENOTCONN = 107, "Not connected";
    ETIMEDOUT = 110, "Timed out";
    ECONNREFUSED = 111, "Connection refused";
    EALREADY = 114, "Operation already in progress";
    EINPROGRESS = 115, "Operation now in progress";
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

/// Result of an ABI operation.
pub type AbiResult<T> = Result<T, Errno>;

impl From<&fs::Error> for Errno {
    /// POSIX's numbers for the VFS's errors (see `fs::Error`'s variants, which name them).
    fn from(e: &fs::Error) -> Self {
        use fs::Error as E;
        match e {
            E::NotFound => Errno::ENOENT,
            E::AlreadyExists => Errno::EEXIST,
            E::NotADirectory => Errno::ENOTDIR,
            E::IsADirectory => Errno::EISDIR,
            E::DirectoryNotEmpty => Errno::ENOTEMPTY,
            E::PermissionDenied => Errno::EROFS,
            E::NoSpace => Errno::ENOSPC,
            E::NameTooLong => Errno::ENAMETOOLONG,
            E::InvalidPath => Errno::EINVAL,
            E::CrossesMount => Errno::EXDEV,
            E::Io { .. } | E::Corrupt(_) => Errno::EIO,
            E::FileTooLarge => Errno::EFBIG,
            E::InvalidInput(what) if what.starts_with("file not opened") => Errno::EBADF,
            E::InvalidInput(_) => Errno::EINVAL,
        }
    }
}

impl From<fs::Error> for Errno {
    fn from(e: fs::Error) -> Self {
        Errno::from(&e)
    }
}

impl From<&net::Error> for Errno {
    /// POSIX's numbers for the network stack's errors.
    fn from(e: &net::Error) -> Self {
        use net::Error as E;
        match e {
            E::NotStarted | E::NoNic => Errno::ENETDOWN,
            E::AlreadyStarted | E::InvalidConfig { .. } | E::InvalidPort(_) => Errno::EINVAL,
            E::AddrInUse(_) => Errno::EADDRINUSE,
            E::TooManySockets { .. } => Errno::ENOBUFS,
            E::LowMemory => Errno::ENOMEM,
            E::EphemeralPortsExhausted => Errno::EADDRNOTAVAIL,
            E::ConnectionReset => Errno::ECONNRESET,
            E::ConnectionRefused => Errno::ECONNREFUSED,
            E::TimedOut => Errno::ETIMEDOUT,
            E::NotConnected => Errno::ENOTCONN,
            E::BrokenPipe => Errno::EPIPE,
            E::NoRoute => Errno::ENETUNREACH,
            E::Unsupported("IPv6") => Errno::EAFNOSUPPORT,
            E::Unsupported(_) => Errno::EOPNOTSUPP,
            E::MessageTooLarge { .. } => Errno::EMSGSIZE,
            E::Dns(_) => Errno::EIO,
            E::Io(_) => Errno::EIO,
        }
    }
}

impl From<net::Error> for Errno {
    fn from(e: net::Error) -> Self {
        Errno::from(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_linuxs() {
        assert_eq!(Errno::EAGAIN.0, 11);
        assert_eq!(Errno::EINPROGRESS.0, 115);
        assert_eq!(Errno::ENOSYS.0, 38);
        assert_eq!(Errno::ECONNREFUSED.name(), "ECONNREFUSED");
        assert_eq!(Errno(9999).name(), "E?");
        assert_eq!(alloc::format!("{}", Errno::EBADF), "EBADF (9)");
    }

    #[test]
    fn fs_and_net_errors_map_to_posix() {
        assert_eq!(Errno::from(fs::Error::NotFound), Errno::ENOENT);
        assert_eq!(Errno::from(fs::Error::PermissionDenied), Errno::EROFS);
        assert_eq!(Errno::from(fs::Error::InvalidInput("file not opened for writing")), Errno::EBADF);
        assert_eq!(Errno::from(fs::Error::InvalidInput("unexpected end of file")), Errno::EINVAL);
        assert_eq!(Errno::from(net::Error::AddrInUse(80)), Errno::EADDRINUSE);
        assert_eq!(Errno::from(net::Error::Unsupported("IPv6")), Errno::EAFNOSUPPORT);
        assert_eq!(Errno::from(net::Error::BrokenPipe), Errno::EPIPE);
    }
}
