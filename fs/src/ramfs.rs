//! ramfs: a read-write filesystem in heap memory (mounted at `/tmp`), with POSIX semantics for what the VFS
//! offers: a removed file stays readable and writable through handles that are still open and its memory is
//! freed at the last close (POSIX.1-2017 `unlink()`), `rename()` replaces atomically.
//!
//! Inodes live in one table behind one lock; directories map names to inode numbers. File data is a `Vec<u8>`
//! grown with `try_reserve`, so running out of heap is [`Error::NoSpace`], not an abort; an optional byte limit
//! caps the total file data.

use crate::error::{Error, Result};
use crate::path;
use crate::vfs::{check_replace, FileHandle, FileSystem, FileType, FsStats, Metadata};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use spin::Mutex;

/// Inode number of the root directory.
const ROOT: u64 = 1;

enum Data {
    File(Vec<u8>),
    Dir(BTreeMap<String, u64>),
}

struct Inode {
    data: Data,
    /// Still has a name (false after unlink while open).
    linked: bool,
    /// Open handles.
    open: usize,
    /// Seconds since the Unix epoch of the last change, when a wall clock was known.
    modified: Option<u64>,
}

impl Inode {
    fn metadata(&self) -> Metadata {
        let (len, file_type) = match &self.data {
            Data::File(v) => (v.len() as u64, FileType::File),
            Data::Dir(_) => (0, FileType::Dir),
        };
        Metadata { len, file_type, read_only: false, modified: self.modified }
    }
}

struct Inner {
    inodes: BTreeMap<u64, Inode>,
    next_ino: u64,
    /// Bytes of file data held (including unlinked-but-open files).
    used: u64,
    /// Most bytes of file data allowed.
    limit: u64,
}

/// Wall clock for modification times (seconds since the Unix epoch), `None` before the platform set one.
fn now() -> Option<u64> {
    libos::time::SystemTime::now().map(|t| t.since_epoch().as_secs())
}

impl Inner {
    fn inode(&self, ino: u64) -> Result<&Inode> {
        // Inode numbers come from directory entries and live handles, which keep their inode alive.
        self.inodes.get(&ino).ok_or(Error::Corrupt(String::from("ramfs: dangling inode number")))
    }

    fn inode_mut(&mut self, ino: u64) -> Result<&mut Inode> {
        self.inodes.get_mut(&ino).ok_or(Error::Corrupt(String::from("ramfs: dangling inode number")))
    }

    fn dir(&self, ino: u64) -> Result<&BTreeMap<String, u64>> {
        match &self.inode(ino)?.data {
            Data::Dir(d) => Ok(d),
            Data::File(_) => Err(Error::NotADirectory),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> Result<&mut BTreeMap<String, u64>> {
        match &mut self.inode_mut(ino)?.data {
            Data::Dir(d) => Ok(d),
            Data::File(_) => Err(Error::NotADirectory),
        }
    }

    fn lookup(&self, path: &str) -> Result<u64> {
        let mut ino = ROOT;
        for c in path::components(path) {
            ino = *self.dir(ino)?.get(c).ok_or(Error::NotFound)?;
        }
        Ok(ino)
    }

    /// The parent directory's inode and the last name of `path` (which must not be the root).
    fn parent<'p>(&self, path: &'p str) -> Result<(u64, &'p str)> {
        let (parent, name) = path::split_parent(path).ok_or(Error::InvalidInput("the root has no parent"))?;
        let p = self.lookup(parent)?;
        self.dir(p)?;
        Ok((p, name))
    }

    fn alloc(&mut self, data: Data) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, Inode { data, linked: true, open: 0, modified: now() });
        ino
    }

    /// Frees an inode that has neither a name nor an open handle.
    fn release_if_unused(&mut self, ino: u64) {
        if let Some(i) = self.inodes.get(&ino) {
            if !i.linked && i.open == 0 {
                if let Some(Inode { data: Data::File(v), .. }) = self.inodes.remove(&ino) {
                    self.used -= v.len() as u64;
                }
            }
        }
    }

    fn unlink(&mut self, parent: u64, name: &str, ino: u64) -> Result<()> {
        self.dir_mut(parent)?.remove(name);
        self.inode_mut(parent)?.modified = now();
        if matches!(self.inode(ino)?.data, Data::Dir(_)) {
            // A directory never has open handles: free it now.
            self.inodes.remove(&ino);
        } else {
            self.inode_mut(ino)?.linked = false;
            self.release_if_unused(ino);
        }
        Ok(())
    }

    fn resize(&mut self, ino: u64, new_len: u64) -> Result<()> {
        let limit = self.limit;
        let used = self.used;
        let Data::File(v) = &mut self.inode_mut(ino)?.data else {
            return Err(Error::IsADirectory);
        };
        let old_len = v.len() as u64;
        if new_len > old_len {
            let grow = new_len - old_len;
            if used.checked_add(grow).is_none_or(|u| u > limit) {
                return Err(Error::NoSpace);
            }
            let grow_usize = usize::try_from(grow).map_err(|_| Error::NoSpace)?;
            v.try_reserve(grow_usize).map_err(|_| Error::NoSpace)?;
            v.resize(v.len() + grow_usize, 0);
            self.used += grow;
        } else {
            // `new_len <= old_len`, which is a `usize`.
            v.truncate(new_len as usize);
            v.shrink_to(v.len().max(64));
            self.used -= old_len - new_len;
        }
        Ok(())
    }
}

/// A ramfs instance; clones share the same files.
#[derive(Clone)]
pub struct RamFs {
    inner: Arc<Mutex<Inner>>,
}

impl Default for RamFs {
    fn default() -> Self {
        Self::new()
    }
}

impl RamFs {
    /// An empty ramfs limited only by the heap.
    pub fn new() -> Self {
        Self::with_limit(u64::MAX)
    }

    /// An empty ramfs holding at most `limit` bytes of file data; more is [`Error::NoSpace`].
    pub fn with_limit(limit: u64) -> Self {
        let mut inodes = BTreeMap::new();
        inodes.insert(ROOT, Inode { data: Data::Dir(BTreeMap::new()), linked: true, open: 0, modified: now() });
        Self { inner: Arc::new(Mutex::new(Inner { inodes, next_ino: ROOT + 1, used: 0, limit })) }
    }

    fn handle(&self, ino: u64) -> Box<dyn FileHandle> {
        Box::new(RamHandle { fs: self.inner.clone(), ino })
    }
}

impl FileSystem for RamFs {
    fn describe(&self) -> String {
        String::from("ramfs")
    }

    fn read_only(&self) -> bool {
        false
    }

    fn metadata(&self, path: &str) -> Result<Metadata> {
        let fs = self.inner.lock();
        Ok(fs.inode(fs.lookup(path)?)?.metadata())
    }

    fn open_file(&self, path: &str) -> Result<Box<dyn FileHandle>> {
        let mut fs = self.inner.lock();
        let ino = fs.lookup(path)?;
        let inode = fs.inode_mut(ino)?;
        if let Data::Dir(_) = inode.data {
            return Err(Error::IsADirectory);
        }
        inode.open += 1;
        drop(fs);
        Ok(self.handle(ino))
    }

    fn create_file(&self, path: &str) -> Result<Box<dyn FileHandle>> {
        let mut fs = self.inner.lock();
        let (parent, name) = fs.parent(path)?;
        if fs.dir(parent)?.contains_key(name) {
            return Err(Error::AlreadyExists);
        }
        let ino = fs.alloc(Data::File(Vec::new()));
        fs.dir_mut(parent)?.insert(String::from(name), ino);
        fs.inode_mut(parent)?.modified = now();
        fs.inode_mut(ino)?.open = 1;
        drop(fs);
        Ok(self.handle(ino))
    }

    fn read_dir(&self, path: &str) -> Result<Vec<(String, Metadata)>> {
        let fs = self.inner.lock();
        let dir = fs.dir(fs.lookup(path)?)?;
        dir.iter().map(|(name, &ino)| Ok((name.clone(), fs.inode(ino)?.metadata()))).collect()
    }

    fn create_dir(&self, path: &str) -> Result<()> {
        let mut fs = self.inner.lock();
        let (parent, name) = fs.parent(path)?;
        if fs.dir(parent)?.contains_key(name) {
            return Err(Error::AlreadyExists);
        }
        let ino = fs.alloc(Data::Dir(BTreeMap::new()));
        fs.dir_mut(parent)?.insert(String::from(name), ino);
        fs.inode_mut(parent)?.modified = now();
        Ok(())
    }

    fn remove_file(&self, path: &str) -> Result<()> {
        let mut fs = self.inner.lock();
        let (parent, name) = fs.parent(path)?;
        let ino = *fs.dir(parent)?.get(name).ok_or(Error::NotFound)?;
        if let Data::Dir(_) = fs.inode(ino)?.data {
            return Err(Error::IsADirectory);
        }
        fs.unlink(parent, name, ino)
    }

    fn remove_dir(&self, path: &str) -> Result<()> {
        let mut fs = self.inner.lock();
        let (parent, name) = fs.parent(path)?;
        let ino = *fs.dir(parent)?.get(name).ok_or(Error::NotFound)?;
        if !fs.dir(ino)?.is_empty() {
            return Err(Error::DirectoryNotEmpty);
        }
        fs.unlink(parent, name, ino)
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        let mut fs = self.inner.lock();
        let (src_parent, src_name) = fs.parent(from)?;
        let src = *fs.dir(src_parent)?.get(src_name).ok_or(Error::NotFound)?;
        let (dst_parent, dst_name) = fs.parent(to)?;
        let src_is_dir = matches!(fs.inode(src)?.data, Data::Dir(_));
        if let Some(&dst) = fs.dir(dst_parent)?.get(dst_name) {
            if dst == src {
                return Ok(());
            }
            let meta = fs.inode(dst)?.metadata();
            check_replace(src_is_dir, &meta, || Ok(fs.dir(dst)?.is_empty()))?;
            fs.unlink(dst_parent, dst_name, dst)?;
        }
        fs.dir_mut(src_parent)?.remove(src_name);
        fs.dir_mut(dst_parent)?.insert(String::from(dst_name), src);
        let t = now();
        fs.inode_mut(src_parent)?.modified = t;
        fs.inode_mut(dst_parent)?.modified = t;
        Ok(())
    }

    fn stats(&self) -> Result<FsStats> {
        let fs = self.inner.lock();
        let files = fs.inodes.values().filter(|i| i.linked && matches!(i.data, Data::File(_))).count() as u64;
        Ok(FsStats { total_bytes: fs.limit, free_bytes: fs.limit - fs.used, files: Some(files) })
    }
}

/// An open ramfs file; keeps its inode alive after unlink.
struct RamHandle {
    fs: Arc<Mutex<Inner>>,
    ino: u64,
}

impl Drop for RamHandle {
    fn drop(&mut self) {
        let mut fs = self.fs.lock();
        if let Some(i) = fs.inodes.get_mut(&self.ino) {
            i.open -= 1;
        }
        fs.release_if_unused(self.ino);
    }
}

impl FileHandle for RamHandle {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let fs = self.fs.lock();
        let Data::File(v) = &fs.inode(self.ino)?.data else {
            return Err(Error::IsADirectory);
        };
        let Ok(start) = usize::try_from(offset) else {
            return Ok(0);
        };
        if start >= v.len() {
            return Ok(0);
        }
        let n = buf.len().min(v.len() - start);
        buf[..n].copy_from_slice(&v[start..start + n]);
        Ok(n)
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<usize> {
        let mut fs = self.fs.lock();
        let end = offset.checked_add(buf.len() as u64).ok_or(Error::FileTooLarge)?;
        let len = fs.inode(self.ino)?.metadata().len;
        if end > len {
            fs.resize(self.ino, end)?;
        }
        let inode = fs.inode_mut(self.ino)?;
        inode.modified = now();
        let Data::File(v) = &mut inode.data else {
            return Err(Error::IsADirectory);
        };
        // `end <= v.len()` after the resize, so both fit in usize.
        v[offset as usize..end as usize].copy_from_slice(buf);
        Ok(buf.len())
    }

    fn size(&self) -> Result<u64> {
        Ok(self.fs.lock().inode(self.ino)?.metadata().len)
    }

    fn set_len(&self, len: u64) -> Result<()> {
        let mut fs = self.fs.lock();
        fs.resize(self.ino, len)?;
        fs.inode_mut(self.ino)?.modified = now();
        Ok(())
    }

    fn metadata(&self) -> Result<Metadata> {
        Ok(self.fs.lock().inode(self.ino)?.metadata())
    }

    fn sync_all(&self) -> Result<()> {
        // Nothing in memory survives the VM; there is nothing to make durable.
        Ok(())
    }
}
