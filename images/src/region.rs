//! A byte range of a disk image file as a file of its own (`Read + Write + Seek`), so a partition can be
//! formatted and read by libraries that want a whole device (the FAT library, GRUB's core image writer).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

/// Bytes `[start, start + len)` of `file`; reads and writes past `len` are cut short (reads return 0 bytes,
/// writes fail with `WriteZero`), seeks are relative to `start`.
#[derive(Debug)]
pub struct Region<'a> {
    file: &'a File,
    start: u64,
    len: u64,
    pos: u64,
}

impl<'a> Region<'a> {
    /// The region of `len` bytes at byte `start` of `file`.
    pub fn new(file: &'a File, start: u64, len: u64) -> Self {
        Region { file, start, len, pos: 0 }
    }

    /// Length (bytes).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the region is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many of `want` bytes fit from the current position.
    fn room(&self, want: usize) -> usize {
        (self.len.saturating_sub(self.pos)).min(want as u64) as usize
    }
}

impl Read for Region<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.room(buf.len());
        if n == 0 {
            return Ok(0);
        }
        let got = self.file.read_at(&mut buf[..n], self.start + self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl Write for Region<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.room(buf.len());
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "write past the end of the partition"));
        }
        let put = self.file.write_at(&buf[..n], self.start + self.pos)?;
        self.pos += put as u64;
        Ok(put)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Region<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let new = new.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the partition"))?;
        self.pos = new;
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_writes_and_seeks_inside_the_range() {
        let path = std::env::temp_dir().join(format!("images-region-{}", std::process::id()));
        let f = File::options().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        f.set_len(64).unwrap();
        let mut r = Region::new(&f, 16, 8);
        r.write_all(b"abcd").unwrap();
        assert_eq!(r.seek(SeekFrom::End(-2)).unwrap(), 6);
        r.write_all(b"yz").unwrap();
        assert_eq!(r.write(b"!").unwrap_err().kind(), io::ErrorKind::WriteZero);
        r.seek(SeekFrom::Start(0)).unwrap();
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"abcd\0\0yz");
        assert!(r.seek(SeekFrom::Current(-100)).is_err());
        let mut whole = vec![0u8; 64];
        f.read_exact_at(&mut whole, 0).unwrap();
        assert_eq!(&whole[16..24], b"abcd\0\0yz");
        assert!(whole[..16].iter().chain(&whole[24..]).all(|&b| b == 0));
        std::fs::remove_file(&path).unwrap();
    }
}
