//! What a descriptor names — the console, a file, a directory, a socket or an eventfd — and the operations every
//! descriptor takes (`read`, `write`, `lseek`, `fstat`, `poll`), dispatched to the object's kind. The
//! `O_NONBLOCK` status flag belongs to the object (shared by `dup`s), as POSIX puts it on the open file
//! description. The global table maps descriptors to objects.
#![forbid(unsafe_code)]

use crate::abi::{self, stat};
use crate::errno::{AbiResult, Errno};
use crate::eventfd::EventFd;
use crate::fd::FdTable;
use crate::file::{OpenDir, OpenFile};
use crate::socket::Socket;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::Waker;
use net::Readiness;
use spin::Mutex;

/// The kinds of objects.
pub enum Kind {
    /// Descriptor 0: reads give end of file (the console takes no input).
    Stdin,
    /// Descriptors 1 and 2: writes go to the console.
    Stdout,
    /// A regular file.
    File(OpenFile),
    /// A directory (for `getdents64` and `fstat`).
    Dir(OpenDir),
    /// A TCP or UDP socket.
    Socket(Socket),
    /// An eventfd.
    EventFd(EventFd),
}

/// An open object with its status flags.
pub struct Object {
    /// What it is.
    pub kind: Kind,
    nonblocking: AtomicBool,
}

impl Object {
    /// A blocking object of `kind`.
    pub fn new(kind: Kind) -> Arc<Self> {
        Arc::new(Self { kind, nonblocking: AtomicBool::new(false) })
    }

    /// A object of `kind`, non-blocking when `nonblocking`.
    pub fn with_flags(kind: Kind, nonblocking: bool) -> Arc<Self> {
        Arc::new(Self { kind, nonblocking: AtomicBool::new(nonblocking) })
    }

    /// Whether `O_NONBLOCK` is set.
    pub fn nonblocking(&self) -> bool {
        self.nonblocking.load(Ordering::Relaxed)
    }

    /// Sets or clears `O_NONBLOCK`.
    pub fn set_nonblocking(&self, on: bool) {
        self.nonblocking.store(on, Ordering::Relaxed);
    }

    /// The socket, if this is one. Errors: `ENOTSOCK`.
    pub fn socket(&self) -> AbiResult<&Socket> {
        match &self.kind {
            Kind::Socket(s) => Ok(s),
            _ => Err(Errno::ENOTSOCK),
        }
    }

    /// `read`. Errors: `EISDIR` for directories, and the kind's own.
    pub fn read(&self, buf: &mut [u8]) -> AbiResult<usize> {
        match &self.kind {
            Kind::Stdin => Ok(0),
            Kind::Stdout => Err(Errno::EBADF),
            Kind::File(f) => f.read(buf),
            Kind::Dir(_) => Err(Errno::EISDIR),
            Kind::Socket(s) => s.recv(buf, 0, self.nonblocking()),
            Kind::EventFd(e) => e.read(buf, self.nonblocking()),
        }
    }

    /// `write`. Errors: `EBADF` for stdin and directories, and the kind's own.
    pub fn write(&self, buf: &[u8]) -> AbiResult<usize> {
        match &self.kind {
            Kind::Stdout => {
                console_write(buf);
                Ok(buf.len())
            }
            Kind::Stdin | Kind::Dir(_) => Err(Errno::EBADF),
            Kind::File(f) => f.write(buf),
            Kind::Socket(s) => s.send(buf, self.nonblocking()),
            Kind::EventFd(e) => e.write(buf, self.nonblocking()),
        }
    }

    /// `lseek`. Errors: `ESPIPE` for everything but files, `EINVAL`.
    pub fn lseek(&self, offset: isize, whence: i32) -> AbiResult<isize> {
        match &self.kind {
            Kind::File(f) => f.lseek(offset, whence),
            _ => Err(Errno::ESPIPE),
        }
    }

    /// `fstat`: files and directories from the VFS; the console a character device, sockets `S_IFSOCK`.
    pub fn stat(&self) -> AbiResult<stat> {
        let mode = match &self.kind {
            Kind::File(f) => return f.stat(),
            Kind::Dir(d) => return d.stat(),
            Kind::Stdin | Kind::Stdout => abi::S_IFCHR | 0o620,
            Kind::Socket(_) => abi::S_IFSOCK | 0o777,
            Kind::EventFd(_) => abi::S_IFCHR | 0o600,
        };
        Ok(stat { st_mode: mode, st_nlink: 1, st_blksize: 4096, ..stat::default() })
    }

    /// Readiness for `poll`, registering `waker` where the object can change. Files, directories and the
    /// console are always ready.
    pub fn readiness(&self, waker: Option<&Waker>) -> Readiness {
        match &self.kind {
            Kind::Socket(s) => s.readiness(waker),
            Kind::EventFd(e) => e.readiness(waker),
            Kind::Stdin | Kind::Stdout | Kind::File(_) | Kind::Dir(_) => {
                Readiness { readable: true, writable: true, ..Readiness::default() }
            }
        }
    }
}

/// Prints bytes from a program on the console, valid UTF-8 as is and U+FFFD for invalid sequences.
fn console_write(buf: &[u8]) {
    for chunk in buf.utf8_chunks() {
        libos::print!("{}", chunk.valid());
        if !chunk.invalid().is_empty() {
            libos::print!("\u{FFFD}");
        }
    }
}

static FDS: Mutex<Option<FdTable<Arc<Object>>>> = Mutex::new(None);

/// Runs `f` on the descriptor table (created with the console at 0, 1, 2 on first use).
pub fn with_fds<R>(f: impl FnOnce(&mut FdTable<Arc<Object>>) -> R) -> R {
    let mut g = FDS.lock();
    let table = g.get_or_insert_with(|| {
        let mut t = FdTable::new();
        let out = Object::new(Kind::Stdout);
        // Cannot fail on an empty table: 0..=2 are free and below the limit.
        let _ = t.insert_at(0, Object::new(Kind::Stdin));
        let _ = t.insert_at(1, out.clone());
        let _ = t.insert_at(2, out);
        t
    });
    f(table)
}

/// The object at `fd`. Errors: `EBADF`.
pub fn get(fd: i32) -> AbiResult<Arc<Object>> {
    with_fds(|t| t.get(fd))
}

/// Installs `obj` at the lowest free descriptor. Errors: `EMFILE`.
pub fn install(obj: Arc<Object>) -> AbiResult<i32> {
    with_fds(|t| t.insert(obj))
}

/// Closes `fd`; the object goes when its last descriptor (and any call still using it) is gone. Errors:
/// `EBADF`.
pub fn close(fd: i32) -> AbiResult<()> {
    let obj = with_fds(|t| t.remove(fd))?;
    // Dropped after the table's lock is released: a file's drop may wait for the disk.
    drop(obj);
    Ok(())
}
