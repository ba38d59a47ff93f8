//! The image's files (the `fs` crate's mount table: the initrd at `/`, ramfs at `/tmp`, FAT at `/data`) as a
//! [`FileTree`], and open files as [`FileReader`]s, for [`crate::files`] and apps that stream files (feature
//! `vfs`).

use crate::files::{Error, FileReader, FileTree, Node};
use crate::SourceError;
use alloc::boxed::Box;
use alloc::string::ToString;

/// The whole namespace of `fs::vfs()`; hide mounts with [`crate::files::StaticFiles::hide`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Vfs;

/// A file of the image opened for reading, read from its position.
#[derive(Debug)]
pub struct Reader(fs::File);

impl Reader {
    /// Opens `path` (absolute, as `zirvium::fs::File::open`) for reading. Errors: `fs`'s, e.g.
    /// [`fs::Error::NotFound`], [`fs::Error::IsADirectory`].
    pub fn open(path: &str) -> Result<Reader, fs::Error> {
        fs::vfs().open(path, fs::OpenOptions::new().read(true)).map(Reader)
    }

    /// The file's size, bytes. Errors: `fs`'s.
    pub fn size(&self) -> Result<u64, fs::Error> {
        Ok(self.0.metadata()?.len())
    }
}

impl FileReader for Reader {
    fn seek(&mut self, offset: u64) -> Result<(), SourceError> {
        self.0.seek(fs::SeekFrom::Start(offset)).map(drop).map_err(source_error)
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, SourceError> {
        self.0.read(buf).map_err(source_error)
    }
}

fn source_error(e: fs::Error) -> SourceError {
    SourceError { detail: e.to_string() }
}

/// `fs` errors as [`Error`]: a missing file or a file used as a directory is [`Error::NotFound`].
pub fn file_error(e: fs::Error) -> Error {
    match e {
        fs::Error::NotFound | fs::Error::NotADirectory => Error::NotFound,
        fs::Error::PermissionDenied => Error::PermissionDenied,
        e => Error::Io(e.to_string()),
    }
}

/// Opens `path` for reading as a [`Node`].
pub fn open(path: &str) -> Result<Node, Error> {
    match Reader::open(path) {
        Ok(reader) => {
            let len = reader.size().map_err(file_error)?;
            Ok(Node::File { len, reader: Box::new(reader) })
        }
        Err(fs::Error::IsADirectory) => Ok(Node::Dir),
        Err(e) => Err(file_error(e)),
    }
}

impl FileTree for Vfs {
    fn open(&self, path: &str) -> Result<Node, Error> {
        open(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::sync::Arc;

    #[test]
    fn files_of_a_mount_are_nodes_and_readers() {
        let dir = "/zirvium-http-vfs-test";
        fs::vfs().mount(dir, Arc::new(fs::RamFs::new())).unwrap();
        let path = alloc::format!("{dir}/a.txt");
        let mut file = fs::vfs().open(&path, fs::OpenOptions::new().write(true).create(true)).unwrap();
        file.write_all(b"0123456789").unwrap();
        drop(file);
        match open(&path) {
            Ok(Node::File { len, mut reader }) => {
                assert_eq!(len, 10);
                reader.seek(4).unwrap();
                let mut buf = [0u8; 16];
                assert_eq!(reader.read(&mut buf), Ok(6));
                assert_eq!(&buf[..6], b"456789");
                assert_eq!(reader.read(&mut buf), Ok(0));
            }
            Ok(Node::Dir) => panic!("{path} is a file"),
            Err(e) => panic!("{path}: {e}"),
        }
        assert!(matches!(Vfs.open(dir), Ok(Node::Dir)));
        assert!(matches!(open(&alloc::format!("{dir}/missing")), Err(Error::NotFound)));
        assert!(matches!(open(&alloc::format!("{path}/x")), Err(Error::NotFound)), "a file is not a directory");
        let size = Reader::open(&path).and_then(|r| r.size());
        assert_eq!(size, Ok(10));
        assert_eq!(Reader::open(&alloc::format!("{dir}/missing")).err(), Some(fs::Error::NotFound));
        fs::vfs().unmount(dir).unwrap();
    }
}
