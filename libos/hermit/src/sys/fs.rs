//! Descriptors and files: `open`/`close`/`read`/`write` (and the vectored forms) on any descriptor, `lseek`,
//! `stat`/`lstat`/`fstat`, `unlink`, `mkdir`, `rmdir`, `getdents64`, `dup`, `fcntl` and `ioctl(FIONBIO)`.
//! Paths are resolved by the VFS (relative ones from the `cwd=` kernel option, `/` by default; no symbolic
//! links, so `lstat` is `stat`).
// `#[no_mangle]` counts as unsafe code: every function here is a symbol std links against. No `unsafe` block
// here; the caller's pointers go through `crate::user` (`sys::tests` checks).
#![allow(unsafe_code)]

use super::{call, len};
use crate::abi::{self, dirent64, iovec, stat};
use crate::errno::{AbiResult, Errno};
use crate::file::{absolute, cwd, open_options, OpenDir, OpenFile};
use crate::object::{self, Kind, Object};
use crate::user;

/// Opens `name` with `flags` (`O_RDONLY`/`O_WRONLY`/`O_RDWR`, `O_CREAT`, `O_EXCL`, `O_TRUNC`, `O_APPEND`,
/// `O_DIRECTORY`, `O_NONBLOCK`, `O_CLOEXEC`); `mode` is ignored (no permissions). A directory opens read-only
/// for `getdents64`/`fstat`. Returns the new descriptor. Errors: `ENOENT`, `EEXIST`, `EISDIR`, `ENOTDIR`,
/// `EROFS`, `ENOSPC`, `ENAMETOOLONG`, `EINVAL`, `EMFILE`, `EFAULT`, `EIO`.
#[no_mangle]
pub extern "C" fn sys_open(name: *const u8, flags: i32, _mode: i32) -> i32 {
    call(|| {
        let path = &absolute(user::cstr(name)?, cwd());
        let nonblocking = flags & abi::O_NONBLOCK != 0;
        let read_only = flags & abi::O_ACCMODE == abi::O_RDONLY && flags & (abi::O_CREAT | abi::O_TRUNC) == 0;
        let kind = if flags & abi::O_DIRECTORY != 0 {
            Kind::Dir(OpenDir::open(path)?)
        } else {
            match fs::vfs().open(path, &open_options(flags)?) {
                Ok(f) => Kind::File(OpenFile::new(f)),
                Err(fs::Error::IsADirectory) if read_only => Kind::Dir(OpenDir::open(path)?),
                Err(e) => return Err(e.into()),
            }
        };
        object::install(Object::with_flags(kind, nonblocking))
    })
}

/// `open(name, O_RDONLY | O_DIRECTORY)` (an older name).
#[no_mangle]
pub extern "C" fn sys_opendir(name: *const u8) -> i32 {
    sys_open(name, abi::O_RDONLY | abi::O_DIRECTORY, 0)
}

/// Closes `fd`; a file written through it is made durable when its last descriptor closes. Errors: `EBADF`.
#[no_mangle]
pub extern "C" fn sys_close(fd: i32) -> i32 {
    call(|| object::close(fd).map(|()| 0))
}

/// Reads up to `len` bytes from `fd` (0 at end of file/stream; sockets and eventfds may wait). Errors:
/// `EBADF`, `EISDIR`, `EAGAIN`, `ECONNRESET`, `ENOTCONN`, `EFAULT`, `EIO`.
#[no_mangle]
pub extern "C" fn sys_read(fd: i32, buf: *mut u8, n: usize) -> isize {
    call(|| {
        let buf = user::slice_mut(buf, n)?;
        len(object::get(fd)?.read(buf)?)
    })
}

/// Writes up to `len` bytes to `fd`; returns how many were taken. Errors: `EBADF`, `EAGAIN`, `EPIPE`,
/// `ECONNRESET`, `ENOSPC`, `EROFS`, `EFAULT`, `EIO`.
#[no_mangle]
pub extern "C" fn sys_write(fd: i32, buf: *const u8, n: usize) -> isize {
    call(|| {
        let buf = user::slice(buf, n)?;
        len(object::get(fd)?.write(buf)?)
    })
}

/// Runs `op(base, len)` over the `iovcnt` buffers at `iov` in order, stopping at the first short transfer (or
/// a failure after some bytes moved); returns the bytes moved.
fn vectored(
    iov: *const iovec,
    iovcnt: usize,
    mut op: impl FnMut(usize, usize) -> AbiResult<usize>,
) -> AbiResult<isize> {
    let mut total = 0;
    for (base, n) in user::iovecs(iov, iovcnt)? {
        let moved = match op(base, n) {
            Ok(m) => m,
            Err(e) if total == 0 => return Err(e),
            Err(_) => break,
        };
        total += moved;
        if moved < n {
            break;
        }
    }
    len(total)
}

/// `read` into `iovcnt` buffers in order, stopping at the first short read. Errors: as `read`, `EINVAL` for
/// more than `IOV_MAX` buffers.
#[no_mangle]
pub extern "C" fn sys_readv(fd: i32, iov: *const iovec, iovcnt: usize) -> isize {
    call(|| {
        let obj = object::get(fd)?;
        vectored(iov, iovcnt, |base, n| obj.read(user::slice_mut(base as *mut u8, n)?))
    })
}

/// `write` from `iovcnt` buffers in order, stopping at the first short write. Errors: as `write`, `EINVAL`.
#[no_mangle]
pub extern "C" fn sys_writev(fd: i32, iov: *const iovec, iovcnt: usize) -> isize {
    call(|| {
        let obj = object::get(fd)?;
        vectored(iov, iovcnt, |base, n| obj.write(user::slice(base as *const u8, n)?))
    })
}

/// Moves the position of file `fd` (`SEEK_SET`, `SEEK_CUR`, `SEEK_END`); returns the new position. Errors:
/// `EBADF`, `ESPIPE` (not a file), `EINVAL`.
#[no_mangle]
pub extern "C" fn sys_lseek(fd: i32, offset: isize, whence: i32) -> isize {
    call(|| object::get(fd)?.lseek(offset, whence))
}

fn stat_path(name: *const u8, out: *mut stat) -> AbiResult<i32> {
    let path = &absolute(user::cstr(name)?, cwd());
    let m = fs::vfs().metadata(path)?;
    user::write(out, crate::file::stat_of(&m, crate::file::ino_of(path)))?;
    Ok(0)
}

/// Writes the `stat` record of `name`. Errors: `ENOENT`, `ENOTDIR`, `EFAULT`, `EIO`.
#[no_mangle]
pub extern "C" fn sys_stat(name: *const u8, out: *mut stat) -> i32 {
    call(|| stat_path(name, out))
}

/// As [`sys_stat`] (there are no symbolic links).
#[no_mangle]
pub extern "C" fn sys_lstat(name: *const u8, out: *mut stat) -> i32 {
    call(|| stat_path(name, out))
}

/// Writes the `stat` record of `fd`. Errors: `EBADF`, `EFAULT`, `EIO`.
#[no_mangle]
pub extern "C" fn sys_fstat(fd: i32, out: *mut stat) -> i32 {
    call(|| {
        let s = object::get(fd)?.stat()?;
        user::write(out, s).map(|()| 0)
    })
}

/// Removes file `name`. Errors: `ENOENT`, `EISDIR`, `EROFS`, `EFAULT`, `EIO`.
#[no_mangle]
pub extern "C" fn sys_unlink(name: *const u8) -> i32 {
    call(|| Ok(fs::vfs().remove_file(&absolute(user::cstr(name)?, cwd())).map(|()| 0)?))
}

/// Removes empty directory `name`. Errors: `ENOENT`, `ENOTDIR`, `ENOTEMPTY`, `EROFS`, `EINVAL` (a mount
/// point), `EFAULT`, `EIO`.
#[no_mangle]
pub extern "C" fn sys_rmdir(name: *const u8) -> i32 {
    call(|| Ok(fs::vfs().remove_dir(&absolute(user::cstr(name)?, cwd())).map(|()| 0)?))
}

/// Creates directory `name` (`mode` ignored). Errors: `EEXIST`, `ENOENT`, `ENOTDIR`, `EROFS`, `ENOSPC`,
/// `EFAULT`, `EIO`.
#[no_mangle]
pub extern "C" fn sys_mkdir(name: *const u8, _mode: u32) -> i32 {
    call(|| Ok(fs::vfs().create_dir(&absolute(user::cstr(name)?, cwd())).map(|()| 0)?))
}

/// Writes all remaining entries of directory `fd` as `dirent64` records into `dirp` (`count` bytes); returns
/// the bytes written, 0 at the end. Errors: `EINVAL` when they do not all fit (call again with a larger
/// buffer), `ENOTDIR`, `EBADF`, `EFAULT`.
#[no_mangle]
pub extern "C" fn sys_getdents64(fd: i32, dirp: *mut dirent64, count: usize) -> i64 {
    call(|| {
        let obj = object::get(fd)?;
        let Kind::Dir(d) = &obj.kind else { return Err(Errno::ENOTDIR) };
        let buf = user::slice_mut(dirp as *mut u8, count)?;
        Ok(d.getdents64(buf)? as i64)
    })
}

/// A new descriptor (the lowest free) for the object of `fd`. Errors: `EBADF`, `EMFILE`.
#[no_mangle]
pub extern "C" fn sys_dup(fd: i32) -> i32 {
    call(|| object::with_fds(|t| t.dup(fd)))
}

/// `F_GETFL`/`F_SETFL` (only `O_NONBLOCK` changes), `F_GETFD`/`F_SETFD` (close-on-exec is meaningless: 0 /
/// accepted), `F_DUPFD` (lowest free descriptor ≥ `arg` is not honoured: the lowest free one). Errors:
/// `EBADF`, `EINVAL` for other commands.
#[no_mangle]
pub extern "C" fn sys_fcntl(fd: i32, cmd: i32, arg: i32) -> i32 {
    call(|| {
        let obj = object::get(fd)?;
        match cmd {
            abi::F_GETFL => Ok(if obj.nonblocking() { abi::O_NONBLOCK | abi::O_RDWR } else { abi::O_RDWR }),
            abi::F_SETFL => {
                obj.set_nonblocking(arg & abi::O_NONBLOCK != 0);
                Ok(0)
            }
            abi::F_GETFD => Ok(0),
            abi::F_SETFD => Ok(0),
            abi::F_DUPFD => object::install(obj),
            _ => Err(Errno::EINVAL),
        }
    })
}

/// `FIONBIO` with a non-zero `int` at `argp` sets non-blocking mode, zero clears it. Errors: `EBADF`,
/// `EINVAL` for other requests, `EFAULT`.
#[no_mangle]
pub extern "C" fn sys_ioctl(fd: i32, cmd: i32, argp: *mut core::ffi::c_void) -> i32 {
    call(|| {
        let obj = object::get(fd)?;
        if cmd != abi::FIONBIO {
            return Err(Errno::EINVAL);
        }
        obj.set_nonblocking(user::read(argp as *const i32)? != 0);
        Ok(0)
    })
}
