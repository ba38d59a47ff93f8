//! The file descriptor table: small integers naming open objects (files, directories, sockets, eventfds,
//! the console). New descriptors take the lowest free number, as POSIX requires (POSIX.1-2017 §2.14); 0, 1
//! and 2 are the console from the start. Generic over the object type so the host tests need no VM.
#![forbid(unsafe_code)]

use crate::errno::{AbiResult, Errno};
use alloc::collections::BTreeMap;

/// Most descriptors open at once.
pub const MAX_FDS: usize = 4096;

/// Open descriptors and what they name.
pub struct FdTable<T> {
    map: BTreeMap<i32, T>,
}

impl<T: Clone> Default for FdTable<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Clone> FdTable<T> {
    /// An empty table.
    pub const fn new() -> Self {
        Self { map: BTreeMap::new() }
    }

    /// Puts `obj` at the lowest free descriptor and returns it. Errors: `EMFILE` at [`MAX_FDS`].
    pub fn insert(&mut self, obj: T) -> AbiResult<i32> {
        if self.map.len() >= MAX_FDS {
            return Err(Errno::EMFILE);
        }
        // The keys are sorted: the first gap (or the end) is the lowest free number.
        let mut fd = 0;
        for &k in self.map.keys() {
            if k != fd {
                break;
            }
            fd += 1;
        }
        self.map.insert(fd, obj);
        Ok(fd)
    }

    /// Puts `obj` at `fd` (used for 0, 1, 2 at start). Errors: `EBADF` for a negative or too large `fd`,
    /// `EBUSY` when it is taken.
    pub fn insert_at(&mut self, fd: i32, obj: T) -> AbiResult<()> {
        if fd < 0 || fd as usize >= MAX_FDS {
            return Err(Errno::EBADF);
        }
        if self.map.contains_key(&fd) {
            return Err(Errno::EBUSY);
        }
        self.map.insert(fd, obj);
        Ok(())
    }

    /// The object at `fd`. Errors: `EBADF`.
    pub fn get(&self, fd: i32) -> AbiResult<T> {
        self.map.get(&fd).cloned().ok_or(Errno::EBADF)
    }

    /// Closes `fd`, returning its object. Errors: `EBADF`.
    pub fn remove(&mut self, fd: i32) -> AbiResult<T> {
        self.map.remove(&fd).ok_or(Errno::EBADF)
    }

    /// A second descriptor for the object at `fd` (the lowest free one). Errors: `EBADF`, `EMFILE`.
    pub fn dup(&mut self, fd: i32) -> AbiResult<i32> {
        let obj = self.get(fd)?;
        self.insert(obj)
    }

    /// Open descriptors.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is open.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_descriptor_first() {
        let mut t = FdTable::new();
        assert_eq!(t.insert('a'), Ok(0));
        assert_eq!(t.insert('b'), Ok(1));
        assert_eq!(t.insert('c'), Ok(2));
        assert_eq!(t.remove(1), Ok('b'));
        assert_eq!(t.insert('d'), Ok(1), "the gap is reused");
        assert_eq!(t.dup(0), Ok(3));
        assert_eq!(t.get(3), Ok('a'));
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn bad_descriptors_are_ebadf() {
        let mut t: FdTable<u8> = FdTable::new();
        assert_eq!(t.get(0), Err(Errno::EBADF));
        assert_eq!(t.get(-1), Err(Errno::EBADF));
        assert_eq!(t.remove(7), Err(Errno::EBADF));
        assert_eq!(t.dup(7), Err(Errno::EBADF));
        assert_eq!(t.insert_at(-3, 1), Err(Errno::EBADF));
        assert_eq!(t.insert_at(2, 1), Ok(()));
        assert_eq!(t.insert_at(2, 1), Err(Errno::EBUSY));
        assert_eq!(t.insert(5), Ok(0));
    }

    #[test]
    fn the_table_has_a_limit() {
        let mut t = FdTable::new();
        for i in 0..MAX_FDS {
            assert_eq!(t.insert(()), Ok(i as i32));
        }
        assert_eq!(t.insert(()), Err(Errno::EMFILE));
    }
}
