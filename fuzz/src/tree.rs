//! Walks a filesystem through the `fs` crate's [`FileSystem`] trait, as apps see it through the VFS: every
//! directory listed, every file's metadata and contents read. Bounded so corrupted images with huge or
//! looping trees stay fast.

use fs::{FileSystem, FileType};

/// What the walk found: `(path, Some(contents))` for files, `(path, None)` for directories, sorted by path.
pub type Tree = Vec<(String, Option<Vec<u8>>)>;

/// Limits of one walk.
pub struct Limits {
    /// Directory depth below the root.
    pub depth: usize,
    /// Entries in all.
    pub entries: usize,
    /// Bytes read from one file.
    pub file_bytes: usize,
}

/// Walks `fs` from the root. Errors from the filesystem end that branch (corrupted images give errors; what
/// matters is that they are errors). With `strict`, every listed entry must also answer `metadata` and, for
/// files, open and read exactly its length (for filesystems that cannot fail, such as the initrd).
pub fn walk(fs: &dyn FileSystem, limits: &Limits, strict: bool) -> Tree {
    let mut out = Tree::new();
    let mut stack = vec![(String::from("/"), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let entries = match fs.read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                assert!(!strict, "read_dir({dir}): {e}");
                continue;
            }
        };
        for (name, meta) in entries {
            if out.len() >= limits.entries {
                return out;
            }
            assert!(!name.is_empty() && name != "." && name != ".." && !name.contains('/'), "entry name {name:?}");
            let path = if dir == "/" { format!("/{name}") } else { format!("{dir}/{name}") };
            // A corrupted directory may list two entries of the same name; `metadata` finds the first.
            match fs.metadata(&path) {
                Ok(m) => assert!(!strict || m.file_type == meta.file_type, "{path}: read_dir and metadata disagree"),
                Err(e) => assert!(!strict, "metadata({path}): {e}"),
            }
            match meta.file_type {
                FileType::Dir => {
                    out.push((path.clone(), None));
                    if depth < limits.depth {
                        stack.push((path, depth + 1));
                    }
                }
                FileType::File => {
                    let data = read_file(fs, &path, meta.len, limits.file_bytes);
                    if strict {
                        assert_eq!(data.as_ref().map(Vec::len), Some(meta.len as usize), "{path}: length");
                    }
                    out.push((path, data));
                }
            }
        }
    }
    out.sort();
    out
}

/// Reads up to `cap` bytes of file `path` in uneven pieces; `None` when opening or reading fails.
fn read_file(fs: &dyn FileSystem, path: &str, len: u64, cap: usize) -> Option<Vec<u8>> {
    let mut handle = fs.open_file(path).ok()?;
    let mut data = Vec::new();
    let mut buf = [0u8; 1000];
    let want = usize::try_from(len).unwrap_or(usize::MAX).min(cap);
    while data.len() < want {
        let n = handle.read_at(data.len() as u64, &mut buf).ok()?;
        assert!(n <= buf.len());
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
    }
    data.truncate(want);
    Some(data)
}
