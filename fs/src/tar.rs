//! A zero-copy reader for tar archives: the POSIX ustar header (POSIX.1-2017 `pax`, "ustar Interchange Format"),
//! pax extended headers (`x`/`g`, same page, "pax Extended Header"), and the GNU format (magic `"ustar  "`,
//! `L`/`K` long names, base-256 numbers; GNU tar manual §"Basic Tar Format"). Sans-I/O over a byte slice:
//! entry data are sub-slices of the archive.
//!
//! Why not the `tar-no-std` crate: it yields regular files only (no directories, no hard links) and does not
//! understand GNU long names, which GNU tar and the Rust `tar` crate write for paths over 100 bytes.
//!
//! Every header is checked before use: the `ustar` magic, the checksum (unsigned sum with the checksum field read
//! as spaces; the historic signed sum is accepted too), octal/base-256 numbers, the data lying inside the archive,
//! UTF-8 names. The archive ends at the first all-zero block; running out of bytes before one is an error
//! (a truncated archive).

use alloc::string::String;
use core::fmt;

/// Tar block size (bytes): headers and data are stored in 512-byte blocks.
pub const BLOCK: usize = 512;

/// Byte ranges of the ustar header fields (POSIX.1-2017 pax, "ustar Interchange Format", Table "ustar Header
/// Block").
mod field {
    use core::ops::Range;
    pub const NAME: Range<usize> = 0..100;
    pub const SIZE: Range<usize> = 124..136;
    pub const MTIME: Range<usize> = 136..148;
    pub const CHKSUM: Range<usize> = 148..156;
    pub const TYPEFLAG: usize = 156;
    pub const LINKNAME: Range<usize> = 157..257;
    pub const MAGIC: Range<usize> = 257..263;
    pub const VERSION: Range<usize> = 263..265;
    pub const PREFIX: Range<usize> = 345..500;
}

/// Which header layout a block uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// POSIX ustar: magic `"ustar\0"`, version `"00"`; names may have a 155-byte prefix.
    Ustar,
    /// GNU: magic `"ustar "`, version `" \0"`; bytes 345.. hold GNU fields, not a prefix.
    Gnu,
}

/// A checked view of one 512-byte header block.
#[derive(Clone, Copy)]
pub struct Header<'a> {
    b: &'a [u8],
}

impl<'a> Header<'a> {
    /// A header view over `block`, which must be exactly [`BLOCK`] bytes (else `None`).
    pub fn new_checked(block: &'a [u8]) -> Option<Self> {
        (block.len() == BLOCK).then_some(Self { b: block })
    }

    /// An all-zero block marks the end of the archive.
    pub fn is_zero(&self) -> bool {
        self.b.iter().all(|&x| x == 0)
    }

    /// The layout, or `None` without a ustar magic.
    pub fn format(&self) -> Option<Format> {
        match (&self.b[field::MAGIC], &self.b[field::VERSION]) {
            (b"ustar\0", _) => Some(Format::Ustar),
            (b"ustar ", b" \0") => Some(Format::Gnu),
            _ => None,
        }
    }

    /// (stored checksum, unsigned sum, signed sum) with the checksum field counted as eight spaces.
    pub fn checksums(&self) -> (Option<u64>, u64, i64) {
        let mut unsigned = 0u64;
        let mut signed = 0i64;
        for (i, &x) in self.b.iter().enumerate() {
            let x = if field::CHKSUM.contains(&i) { b' ' } else { x };
            unsigned += u64::from(x);
            signed += i64::from(x as i8);
        }
        (parse_number(&self.b[field::CHKSUM]), unsigned, signed)
    }

    /// Whether the stored checksum matches (unsigned or the historic signed sum).
    pub fn checksum_ok(&self) -> bool {
        let (stored, unsigned, signed) = self.checksums();
        stored.is_some_and(|s| s == unsigned || i64::try_from(s).is_ok_and(|s| s == signed))
    }

    /// The type flag byte (`'0'` file, `'5'` directory, `'L'` GNU long name, `'x'` pax header, ...).
    pub fn typeflag(&self) -> u8 {
        self.b[field::TYPEFLAG]
    }

    /// The `size` field (bytes), or `None` when it is not a valid number.
    pub fn size(&self) -> Option<u64> {
        parse_number(&self.b[field::SIZE])
    }

    /// The `mtime` field (seconds since the Unix epoch), or `None` when it is not a valid number.
    pub fn mtime(&self) -> Option<u64> {
        parse_number(&self.b[field::MTIME])
    }

    /// The name bytes: `prefix/name` for ustar with a prefix, else the name field; up to the first NUL.
    pub fn name(&self) -> (&'a [u8], &'a [u8]) {
        let name = cstr(&self.b[field::NAME]);
        let prefix = match self.format() {
            Some(Format::Ustar) => cstr(&self.b[field::PREFIX]),
            _ => &[],
        };
        (prefix, name)
    }

    /// The link target bytes (hard and symbolic links), up to the first NUL.
    pub fn linkname(&self) -> &'a [u8] {
        cstr(&self.b[field::LINKNAME])
    }

    /// The name for error messages (lossy UTF-8).
    fn display_name(&self) -> String {
        let (prefix, name) = self.name();
        let mut s = String::from_utf8_lossy(prefix).into_owned();
        if !s.is_empty() {
            s.push('/');
        }
        s.push_str(&String::from_utf8_lossy(name));
        s
    }
}

/// The bytes of a NUL-terminated field (the whole field when it has no NUL, as ustar allows).
fn cstr(f: &[u8]) -> &[u8] {
    &f[..f.iter().position(|&b| b == 0).unwrap_or(f.len())]
}

/// Parses a numeric header field: octal ASCII (leading spaces, ended by NUL or space, rest NUL/space; empty is
/// 0), or GNU base-256 (first byte 0x80 | high bits, big-endian; 0xff = negative, refused).
pub fn parse_number(f: &[u8]) -> Option<u64> {
    let first = *f.first()?;
    if first & 0x80 != 0 {
        if first == 0xff {
            return None;
        }
        let mut v = u64::from(first & 0x7f);
        for &b in &f[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let start = f.iter().position(|&b| b != b' ').unwrap_or(f.len());
    let digits = &f[start..];
    let end = digits.iter().position(|&b| b == 0 || b == b' ').unwrap_or(digits.len());
    if !digits[end..].iter().all(|&b| b == 0 || b == b' ') {
        return None;
    }
    let mut v = 0u64;
    for &b in &digits[..end] {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (`'0'`, `'\0'`, `'7'`).
    File,
    /// A directory (`'5'`, GNU `'D'`).
    Dir,
    /// A hard link to an earlier entry (`'1'`), target path.
    HardLink(String),
    /// A symbolic link (`'2'`), target path.
    Symlink(String),
    /// A character/block device or FIFO (`'3'`, `'4'`, `'6'`).
    Special(u8),
}

/// One archive member.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    /// Byte offset of the member's header in the archive.
    pub offset: usize,
    /// The path as stored (long name / pax `path` applied), UTF-8, not yet normalised.
    pub path: String,
    /// What it is.
    pub kind: EntryKind,
    /// The member's data (files; empty otherwise).
    pub data: &'a [u8],
    /// Modification time (seconds since the Unix epoch).
    pub mtime: u64,
}

/// Why an archive was refused. Offsets are bytes from the start of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarError {
    /// Fewer than 512 bytes (and not all zero) remain where a header should start.
    TruncatedHeader {
        /// Byte offset in the archive where the header should start.
        offset: usize,
        /// Bytes left from `offset` to the end of the archive.
        remaining: usize,
    },
    /// The archive ends without the end-of-archive marker (an all-zero block).
    MissingEnd {
        /// Byte offset where the archive ends (its length).
        offset: usize,
    },
    /// The block at `offset` has no `ustar` magic: not a tar header (or the archive is corrupt there).
    BadMagic {
        /// Byte offset of the block in the archive.
        offset: usize,
    },
    /// The header checksum does not match its contents.
    BadChecksum {
        /// Byte offset of the header in the archive.
        offset: usize,
        /// The member's name as far as it could be read.
        name: String,
        /// The `chksum` field's value, or `None` when it is not an octal number.
        stored: Option<u64>,
        /// Sum of the header's bytes with `chksum` counted as spaces.
        computed: u64,
    },
    /// A numeric field is not octal/base-256.
    BadNumber {
        /// Byte offset of the header in the archive.
        offset: usize,
        /// The member's name as far as it could be read.
        name: String,
        /// The ustar header field, e.g. "size".
        field: &'static str,
    },
    /// The member's data reach past the end of the archive.
    TruncatedData {
        /// Byte offset of the header in the archive.
        offset: usize,
        /// The member's name.
        name: String,
        /// The member's data size from its header (bytes).
        size: u64,
        /// Bytes left in the archive after the header.
        available: usize,
    },
    /// A name is not UTF-8 or contains NUL.
    BadName {
        /// Byte offset of the header in the archive.
        offset: usize,
    },
    /// A pax extended header or GNU long-name record is malformed.
    BadExtendedHeader {
        /// Byte offset of the extended header or long-name record in the archive.
        offset: usize,
        /// What is malformed.
        detail: &'static str,
    },
    /// An extended header or long name is not followed by the member it describes.
    DanglingExtendedHeader {
        /// Byte offset of the extended header or long-name record in the archive.
        offset: usize,
    },
    /// A member type this reader does not handle (GNU sparse, multi-volume, unknown type flag).
    Unsupported {
        /// Byte offset of the header in the archive.
        offset: usize,
        /// The member's name.
        name: String,
        /// The member type, e.g. "a GNU sparse file".
        what: &'static str,
    },
}

impl fmt::Display for TarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TruncatedHeader { offset, remaining } => {
                write!(f, "truncated archive: a header at byte {offset} needs 512 bytes but only {remaining} remain")
            }
            Self::MissingEnd { offset } => {
                write!(f, "truncated archive: it ends at byte {offset} without the end-of-archive (zero) block")
            }
            Self::BadMagic { offset } => write!(f, "block at byte {offset} is not a ustar/GNU tar header"),
            Self::BadChecksum { offset, name, stored, computed } => match stored {
                Some(s) => write!(
                    f,
                    "entry \"{name}\" (header at byte {offset}): header checksum {s:o} (octal) does not match the \
                     computed {computed:o}"
                ),
                None => write!(f, "entry \"{name}\" (header at byte {offset}): checksum field is not a number"),
            },
            Self::BadNumber { offset, name, field } => {
                write!(f, "entry \"{name}\" (header at byte {offset}): field {field} is not an octal number")
            }
            Self::TruncatedData { offset, name, size, available } => write!(
                f,
                "truncated archive: entry \"{name}\" (header at byte {offset}) has {size} bytes of data but only \
                 {available} remain"
            ),
            Self::BadName { offset } => {
                write!(f, "entry with header at byte {offset}: name is not UTF-8 or contains a NUL byte")
            }
            Self::BadExtendedHeader { offset, detail } => {
                write!(f, "extended header at byte {offset} is malformed: {detail}")
            }
            Self::DanglingExtendedHeader { offset } => {
                write!(f, "extended header or long name at byte {offset} is not followed by an entry")
            }
            Self::Unsupported { offset, name, what } => {
                write!(f, "entry \"{name}\" (header at byte {offset}): {what} is not supported")
            }
        }
    }
}

/// Overrides collected from pax `x` headers and GNU `L`/`K` records for the next member.
#[derive(Default)]
struct Pending {
    /// Offset of the first extended header (for errors).
    offset: Option<usize>,
    path: Option<String>,
    linkpath: Option<String>,
    size: Option<u64>,
    mtime: Option<u64>,
}

/// Iterates over the members of `archive`; stops after the first error.
pub struct Reader<'a> {
    archive: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `archive`.
    pub fn new(archive: &'a [u8]) -> Self {
        Self { archive, pos: 0, done: false }
    }

    fn next_entry(&mut self) -> Result<Option<Entry<'a>>, TarError> {
        let mut pending = Pending::default();
        loop {
            let offset = self.pos;
            let remaining = self.archive.len() - offset;
            if remaining == 0 {
                return Err(TarError::MissingEnd { offset });
            }
            let rest = &self.archive[offset..];
            if remaining < BLOCK {
                if rest.iter().all(|&b| b == 0) {
                    return end(&pending);
                }
                return Err(TarError::TruncatedHeader { offset, remaining });
            }
            // `remaining >= BLOCK` was checked just above.
            let h = Header::new_checked(&rest[..BLOCK]).ok_or(TarError::TruncatedHeader { offset, remaining })?;
            if h.is_zero() {
                return end(&pending);
            }
            if h.format().is_none() {
                return Err(TarError::BadMagic { offset });
            }
            if !h.checksum_ok() {
                let (stored, computed, _) = h.checksums();
                return Err(TarError::BadChecksum { offset, name: h.display_name(), stored, computed });
            }
            let header_size =
                h.size().ok_or_else(|| TarError::BadNumber { offset, name: h.display_name(), field: "size" })?;
            let flag = h.typeflag();
            // Devices and FIFOs have no data blocks whatever their size field says (POSIX ustar "size").
            let size = match flag {
                b'3' | b'4' | b'6' => 0,
                b'0' | b'\0' | b'7' => pending.size.unwrap_or(header_size),
                _ => header_size,
            };
            let data_start = offset + BLOCK;
            let available = self.archive.len() - data_start;
            if size > available as u64 {
                return Err(TarError::TruncatedData { offset, name: h.display_name(), size, available });
            }
            // `size <= available`, a usize.
            let data = &self.archive[data_start..data_start + size as usize];
            let padded = (size as usize).div_ceil(BLOCK) * BLOCK;
            self.pos = (data_start + padded).min(self.archive.len());

            let kind = match flag {
                b'L' => {
                    pending.offset.get_or_insert(offset);
                    pending.path = Some(utf8(cstr(data), offset)?);
                    continue;
                }
                b'K' => {
                    pending.offset.get_or_insert(offset);
                    pending.linkpath = Some(utf8(cstr(data), offset)?);
                    continue;
                }
                b'x' => {
                    pending.offset.get_or_insert(offset);
                    parse_pax(data, offset, &mut pending)?;
                    continue;
                }
                b'g' => {
                    // Global pax headers: checked, but their defaults (ownership, times) do not matter here.
                    parse_pax(data, offset, &mut Pending::default())?;
                    continue;
                }
                // GNU volume label: no member.
                b'V' => continue,
                b'0' | b'\0' | b'7' => EntryKind::File,
                b'5' | b'D' => EntryKind::Dir,
                b'1' | b'2' => {
                    let target = match pending.linkpath.take() {
                        Some(t) => t,
                        None => utf8(h.linkname(), offset)?,
                    };
                    if flag == b'1' {
                        EntryKind::HardLink(target)
                    } else {
                        EntryKind::Symlink(target)
                    }
                }
                b'3' | b'4' | b'6' => EntryKind::Special(flag),
                b'S' => return Err(unsupported(&h, offset, "a GNU sparse file")),
                b'M' => return Err(unsupported(&h, offset, "a GNU multi-volume continuation")),
                _ => return Err(unsupported(&h, offset, "this entry type flag")),
            };
            let path = match pending.path.take() {
                Some(p) => p,
                None => {
                    let (prefix, name) = h.name();
                    let mut p = utf8(prefix, offset)?;
                    if !p.is_empty() {
                        p.push('/');
                    }
                    p.push_str(&utf8(name, offset)?);
                    p
                }
            };
            let mtime = match pending.mtime {
                Some(t) => t,
                None => h.mtime().ok_or_else(|| TarError::BadNumber { offset, name: path.clone(), field: "mtime" })?,
            };
            let data = if kind == EntryKind::File { data } else { &data[..0] };
            return Ok(Some(Entry { offset, path, kind, data, mtime }));
        }
    }
}

/// The end-of-archive block: fine unless an extended header was waiting for its member.
fn end<'a>(pending: &Pending) -> Result<Option<Entry<'a>>, TarError> {
    match pending.offset {
        Some(offset) => Err(TarError::DanglingExtendedHeader { offset }),
        None => Ok(None),
    }
}

fn unsupported(h: &Header<'_>, offset: usize, what: &'static str) -> TarError {
    TarError::Unsupported { offset, name: h.display_name(), what }
}

fn utf8(b: &[u8], offset: usize) -> Result<String, TarError> {
    core::str::from_utf8(b).map(String::from).map_err(|_| TarError::BadName { offset })
}

/// Parses pax extended header records `"<len> <key>=<value>\n"` (len counts the whole record, in decimal) and
/// keeps `path`, `linkpath`, `size` and `mtime` (its integer seconds).
fn parse_pax(data: &[u8], offset: usize, out: &mut Pending) -> Result<(), TarError> {
    let bad = |detail| TarError::BadExtendedHeader { offset, detail };
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest.iter().position(|&b| b == b' ').ok_or(bad("record without a length"))?;
        let len = decimal(&rest[..sp]).ok_or(bad("record length is not a decimal number"))?;
        let len = usize::try_from(len).map_err(|_| bad("record length out of range"))?;
        if len <= sp + 1 || len > rest.len() {
            return Err(bad("record length out of range"));
        }
        let record = &rest[sp + 1..len];
        let record = record.strip_suffix(b"\n").ok_or(bad("record does not end with a newline"))?;
        let eq = record.iter().position(|&b| b == b'=').ok_or(bad("record without '='"))?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        let text = || {
            core::str::from_utf8(value)
                .ok()
                .filter(|s| !s.contains('\0'))
                .map(String::from)
                .ok_or(bad("path is not UTF-8 or contains NUL"))
        };
        match key {
            b"path" => out.path = Some(text()?),
            b"linkpath" => out.linkpath = Some(text()?),
            b"size" => out.size = Some(decimal(value).ok_or(bad("size is not a decimal number"))?),
            b"mtime" => {
                let secs = value.split(|&b| b == b'.').next().unwrap_or(value);
                // A negative mtime (before 1970) is legal pax; treat it as unknown (0).
                out.mtime = Some(if secs.first() == Some(&b'-') {
                    0
                } else {
                    decimal(secs).ok_or(bad("mtime is not a decimal number"))?
                });
            }
            _ => {}
        }
        rest = &rest[len..];
    }
    Ok(())
}

fn decimal(b: &[u8]) -> Option<u64> {
    if b.is_empty() {
        return None;
    }
    b.iter().try_fold(0u64, |v, &c| c.is_ascii_digit().then(|| v.checked_mul(10)?.checked_add(u64::from(c - b'0')))?)
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<Entry<'a>, TarError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_entry() {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
