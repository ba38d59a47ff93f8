//! The initrd: a tar archive (the first boot module, packed by `images`) mounted read-only at `/`. Files are
//! zero-copy slices of the module's bytes; directories implied by file paths exist; explicit directory entries
//! add empty directories and times; hard links share their target's bytes; symbolic links, devices and FIFOs
//! are skipped (counted in [`Initrd::skipped`]).
//!
//! The whole archive is checked at mount ([`crate::tar`] checks headers): an entry with an absolute path, a
//! `..` component or a component over 255 bytes, or one that makes a file a directory, refuses the whole
//! archive with an error naming the entry.

use crate::error::{Error, Result};
use crate::path::{self, NAME_MAX};
use crate::tar::{EntryKind, Reader, TarError};
use crate::vfs::{FileHandle, FileSystem, FileType, FsStats, Metadata};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Why an initrd archive was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitrdError {
    /// The tar structure is broken (truncated, bad checksum, ...).
    Tar(TarError),
    /// The entry's path starts with `/`.
    AbsolutePath {
        /// Byte offset of the entry's header in the archive.
        offset: usize,
        /// The entry's path as stored.
        name: String,
    },
    /// The entry's path has a `..` component.
    ParentComponent {
        /// Byte offset of the entry's header in the archive.
        offset: usize,
        /// The entry's path as stored.
        name: String,
    },
    /// A component of the entry's path is longer than 255 bytes.
    NameTooLong {
        /// Byte offset of the entry's header in the archive.
        offset: usize,
        /// The entry's path as stored.
        name: String,
    },
    /// The entry lies below `file`, which an earlier entry made a regular file.
    NotADirectory {
        /// Byte offset of the entry's header in the archive.
        offset: usize,
        /// The entry's path as stored.
        name: String,
        /// Path of the earlier regular file the entry would lie below.
        file: String,
    },
    /// The entry is a regular file (or hard link) where an earlier entry made a directory (or it names the root).
    IsADirectory {
        /// Byte offset of the entry's header in the archive.
        offset: usize,
        /// The entry's path as stored.
        name: String,
    },
    /// A hard link whose target is not an earlier regular file of the archive.
    DanglingHardLink {
        /// Byte offset of the entry's header in the archive.
        offset: usize,
        /// The entry's path as stored.
        name: String,
        /// The link target (`linkname`).
        target: String,
    },
}

impl fmt::Display for InitrdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tar(e) => write!(f, "{e}"),
            Self::AbsolutePath { offset, name } => {
                write!(f, "entry \"{name}\" (header at byte {offset}): absolute paths are not allowed")
            }
            Self::ParentComponent { offset, name } => {
                write!(f, "entry \"{name}\" (header at byte {offset}): \"..\" components are not allowed")
            }
            Self::NameTooLong { offset, name } => {
                write!(f, "entry \"{name}\" (header at byte {offset}): a component is longer than {NAME_MAX} bytes")
            }
            Self::NotADirectory { offset, name, file } => {
                write!(f, "entry \"{name}\" (header at byte {offset}): \"{file}\" is a file in the archive")
            }
            Self::IsADirectory { offset, name } => {
                write!(f, "entry \"{name}\" (header at byte {offset}): a directory of that name exists")
            }
            Self::DanglingHardLink { offset, name, target } => write!(
                f,
                "entry \"{name}\" (header at byte {offset}): hard link to \"{target}\", which is not an earlier file"
            ),
        }
    }
}

impl From<TarError> for InitrdError {
    fn from(e: TarError) -> Self {
        Self::Tar(e)
    }
}

enum Kind {
    Dir(BTreeMap<String, usize>),
    File(&'static [u8]),
}

struct Node {
    kind: Kind,
    mtime: Option<u64>,
}

/// Index of the root directory in `nodes`.
const ROOT: usize = 0;

/// A parsed initrd: a read-only tree over the archive's bytes.
pub struct Initrd {
    nodes: Vec<Node>,
    files: u64,
    bytes: u64,
    skipped: u64,
}

/// The checked components of an archive path.
fn entry_components(name: &str, offset: usize) -> core::result::Result<Vec<&str>, InitrdError> {
    if name.starts_with('/') {
        return Err(InitrdError::AbsolutePath { offset, name: String::from(name) });
    }
    let mut out = Vec::new();
    for c in path::components(name) {
        match c {
            "." => {}
            ".." => return Err(InitrdError::ParentComponent { offset, name: String::from(name) }),
            c if c.len() > NAME_MAX => return Err(InitrdError::NameTooLong { offset, name: String::from(name) }),
            c => out.push(c),
        }
    }
    Ok(out)
}

impl Initrd {
    /// An empty read-only root (when the VM got no initrd).
    pub fn empty() -> Self {
        Self {
            nodes: alloc::vec![Node { kind: Kind::Dir(BTreeMap::new()), mtime: None }],
            files: 0,
            bytes: 0,
            skipped: 0,
        }
    }

    /// Parses and checks the tar archive `archive` (see the module docs).
    ///
    /// # Errors
    /// [`InitrdError`] naming the first bad entry; nothing is mounted then.
    pub fn parse(archive: &'static [u8]) -> core::result::Result<Self, InitrdError> {
        let mut fs = Self::empty();
        for entry in Reader::new(archive) {
            let e = entry?;
            let comps = entry_components(&e.path, e.offset)?;
            let (offset, name) = (e.offset, e.path.as_str());
            match e.kind {
                EntryKind::Dir => {
                    let d = fs.ensure_dir(&comps, offset, name)?;
                    fs.nodes[d].mtime = Some(e.mtime);
                }
                EntryKind::File => fs.put_file(&comps, e.data, e.mtime, offset, name)?,
                EntryKind::HardLink(ref target) => {
                    let t = entry_components(target, offset)?;
                    let data = fs.lookup(t.iter().copied()).ok().and_then(|i| match fs.nodes[i].kind {
                        Kind::File(d) => Some(d),
                        Kind::Dir(_) => None,
                    });
                    let Some(data) = data else {
                        return Err(InitrdError::DanglingHardLink {
                            offset,
                            name: String::from(name),
                            target: target.clone(),
                        });
                    };
                    fs.put_file(&comps, data, e.mtime, offset, name)?;
                }
                EntryKind::Symlink(_) | EntryKind::Special(_) => fs.skipped += 1,
            }
        }
        for n in &fs.nodes {
            if let Kind::File(d) = n.kind {
                fs.files += 1;
                fs.bytes += d.len() as u64;
            }
        }
        Ok(fs)
    }

    /// Regular files in the tree (hard links count once per name).
    pub fn files(&self) -> u64 {
        self.files
    }

    /// Bytes of file data (hard links count once per name).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Symbolic links, devices and FIFOs that were skipped.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    fn push(&mut self, kind: Kind, mtime: Option<u64>) -> usize {
        self.nodes.push(Node { kind, mtime });
        self.nodes.len() - 1
    }

    /// Walks `comps` from the root creating missing directories; returns the last one.
    fn ensure_dir(&mut self, comps: &[&str], offset: usize, name: &str) -> core::result::Result<usize, InitrdError> {
        let mut cur = ROOT;
        for (i, c) in comps.iter().enumerate() {
            let Kind::Dir(children) = &self.nodes[cur].kind else {
                return Err(InitrdError::NotADirectory {
                    offset,
                    name: String::from(name),
                    file: comps[..i].join("/"),
                });
            };
            cur = match children.get(*c) {
                Some(&n) => n,
                None => {
                    let n = self.push(Kind::Dir(BTreeMap::new()), None);
                    if let Kind::Dir(children) = &mut self.nodes[cur].kind {
                        children.insert(String::from(*c), n);
                    }
                    n
                }
            };
        }
        if let Kind::File(_) = self.nodes[cur].kind {
            return Err(InitrdError::NotADirectory { offset, name: String::from(name), file: comps.join("/") });
        }
        Ok(cur)
    }

    /// Adds (or, for a repeated name, replaces — the later member wins, as when extracting) a file.
    fn put_file(
        &mut self,
        comps: &[&str],
        data: &'static [u8],
        mtime: u64,
        offset: usize,
        name: &str,
    ) -> core::result::Result<(), InitrdError> {
        let Some((last, parents)) = comps.split_last() else {
            return Err(InitrdError::IsADirectory { offset, name: String::from(name) });
        };
        let dir = self.ensure_dir(parents, offset, name)?;
        let existing = match &self.nodes[dir].kind {
            Kind::Dir(children) => children.get(*last).copied(),
            Kind::File(_) => None,
        };
        match existing {
            Some(n) => match self.nodes[n].kind {
                Kind::Dir(_) => return Err(InitrdError::IsADirectory { offset, name: String::from(name) }),
                Kind::File(_) => self.nodes[n] = Node { kind: Kind::File(data), mtime: Some(mtime) },
            },
            None => {
                let n = self.push(Kind::File(data), Some(mtime));
                if let Kind::Dir(children) = &mut self.nodes[dir].kind {
                    children.insert(String::from(*last), n);
                }
            }
        }
        Ok(())
    }

    fn lookup<'p>(&self, comps: impl Iterator<Item = &'p str>) -> Result<usize> {
        let mut cur = ROOT;
        for c in comps {
            let Kind::Dir(children) = &self.nodes[cur].kind else {
                return Err(Error::NotADirectory);
            };
            cur = *children.get(c).ok_or(Error::NotFound)?;
        }
        Ok(cur)
    }

    fn meta(&self, i: usize) -> Metadata {
        let n = &self.nodes[i];
        let (len, file_type) = match n.kind {
            Kind::File(d) => (d.len() as u64, FileType::File),
            Kind::Dir(_) => (0, FileType::Dir),
        };
        Metadata { len, file_type, read_only: true, modified: n.mtime }
    }
}

impl FileSystem for Initrd {
    fn describe(&self) -> String {
        let mut s = format!("initrd ({} files, {})", self.files, crate::human_bytes(self.bytes));
        if self.skipped > 0 {
            s = format!("{s} [{} links/devices skipped]", self.skipped);
        }
        s
    }

    fn read_only(&self) -> bool {
        true
    }

    fn metadata(&self, path: &str) -> Result<Metadata> {
        Ok(self.meta(self.lookup(path::components(path))?))
    }

    fn open_file(&self, path: &str) -> Result<Box<dyn FileHandle>> {
        let i = self.lookup(path::components(path))?;
        match self.nodes[i].kind {
            Kind::File(data) => Ok(Box::new(InitrdFile { data, meta: self.meta(i) })),
            Kind::Dir(_) => Err(Error::IsADirectory),
        }
    }

    fn create_file(&self, _path: &str) -> Result<Box<dyn FileHandle>> {
        Err(Error::PermissionDenied)
    }

    fn read_dir(&self, path: &str) -> Result<Vec<(String, Metadata)>> {
        let i = self.lookup(path::components(path))?;
        match &self.nodes[i].kind {
            Kind::Dir(children) => Ok(children.iter().map(|(n, &c)| (n.clone(), self.meta(c))).collect()),
            Kind::File(_) => Err(Error::NotADirectory),
        }
    }

    fn create_dir(&self, _path: &str) -> Result<()> {
        Err(Error::PermissionDenied)
    }

    fn remove_file(&self, _path: &str) -> Result<()> {
        Err(Error::PermissionDenied)
    }

    fn remove_dir(&self, _path: &str) -> Result<()> {
        Err(Error::PermissionDenied)
    }

    fn rename(&self, _from: &str, _to: &str) -> Result<()> {
        Err(Error::PermissionDenied)
    }

    fn stats(&self) -> Result<FsStats> {
        Ok(FsStats { total_bytes: self.bytes, free_bytes: 0, files: Some(self.files) })
    }
}

/// An open initrd file: a slice of the boot module.
struct InitrdFile {
    data: &'static [u8],
    meta: Metadata,
}

impl FileHandle for InitrdFile {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let Some(rest) = usize::try_from(offset).ok().and_then(|o| self.data.get(o..)) else {
            return Ok(0);
        };
        let n = buf.len().min(rest.len());
        buf[..n].copy_from_slice(&rest[..n]);
        Ok(n)
    }

    fn write_at(&mut self, _offset: u64, _buf: &[u8]) -> Result<usize> {
        Err(Error::PermissionDenied)
    }

    fn size(&self) -> Result<u64> {
        Ok(self.data.len() as u64)
    }

    fn set_len(&self, _len: u64) -> Result<()> {
        Err(Error::PermissionDenied)
    }

    fn metadata(&self) -> Result<Metadata> {
        Ok(self.meta)
    }

    fn sync_all(&self) -> Result<()> {
        Ok(())
    }
}
