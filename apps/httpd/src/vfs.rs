//! The image's files (`zirvium::fs`: the initrd at `/`, ramfs at `/tmp`, FAT at `/data`) as a [`FileTree`] and
//! open `zirvium::fs::File`s as [`FileReader`]s, for [`crate::files`].

use crate::files::{Error, FileReader, FileTree, Node};
use crate::http::SourceError;
use alloc::boxed::Box;
use alloc::string::ToString;
use zirvium::fs;

/// The whole `zirvium::fs` namespace; hide mounts with [`crate::files::StaticFiles::hide`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Vfs;

/// A `zirvium::fs::File` read from its position.
#[derive(Debug)]
pub struct Reader(pub fs::File);

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

/// `zirvium::fs` errors as [`Error`]: a missing file or a file used as a directory is [`Error::NotFound`].
pub fn file_error(e: fs::Error) -> Error {
    match e {
        fs::Error::NotFound | fs::Error::NotADirectory => Error::NotFound,
        fs::Error::PermissionDenied => Error::PermissionDenied,
        e => Error::Io(e.to_string()),
    }
}

/// Opens `path` for reading as a [`Node`].
pub fn open(path: &str) -> Result<Node, Error> {
    match fs::File::open(path) {
        Ok(file) => {
            let len = file.metadata().map_err(file_error)?.len();
            Ok(Node::File { len, reader: Box::new(Reader(file)) })
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
