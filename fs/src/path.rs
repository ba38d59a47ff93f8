//! Path normalisation (POSIX.1-2017 §4.13 "Pathname Resolution", lexical: there are no symbolic links here).
//!
//! Every path the VFS gets is first turned into a [`Normalized`] absolute path: repeated slashes and `.`
//! components disappear, `..` removes the component before it and never climbs above `/`, a path without a
//! leading `/` is taken relative to `/` (the working directory is always the root). Backends then receive
//! the part below their mount point as a *relative* path: components joined by single `/`, no leading or
//! trailing slash, `""` for the mount's root.

use crate::error::{Error, Result};
use alloc::string::String;

/// Longest path component (bytes), as Linux `NAME_MAX`.
pub const NAME_MAX: usize = 255;
/// Longest path the VFS accepts (bytes, before normalisation), as Linux `PATH_MAX` (4096).
pub const PATH_MAX: usize = 4096;

/// An absolute, normalised path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// `/` or `/a/b`: components separated by single slashes, no trailing slash.
    pub path: String,
    /// The caller's path ended in `/`, `/.` or `/..`: the target must be a directory (POSIX §4.13).
    pub must_be_dir: bool,
}

impl Normalized {
    /// The path's components, in order (none for `/`).
    pub fn components(&self) -> impl Iterator<Item = &str> {
        components(&self.path)
    }
}

/// Normalises `path` (see the module docs).
///
/// # Errors
/// [`Error::InvalidPath`] for an empty path or one containing a NUL byte; [`Error::NameTooLong`] for a path of
/// more than [`PATH_MAX`] bytes or a component of more than [`NAME_MAX`] bytes.
pub fn normalize(path: &str) -> Result<Normalized> {
    if path.is_empty() || path.contains('\0') {
        return Err(Error::InvalidPath);
    }
    if path.len() > PATH_MAX {
        return Err(Error::NameTooLong);
    }
    let mut out = String::with_capacity(path.len() + 1);
    let mut last = "";
    for c in path.split('/') {
        last = c;
        match c {
            "" | "." => {}
            ".." => {
                // Drop the last component; at the root `..` is the root itself.
                let cut = out.rfind('/').unwrap_or(0);
                out.truncate(cut);
            }
            name if name.len() > NAME_MAX => return Err(Error::NameTooLong),
            name => {
                out.push('/');
                out.push_str(name);
            }
        }
    }
    let must_be_dir = matches!(last, "" | "." | "..");
    if out.is_empty() {
        out.push('/');
    }
    Ok(Normalized { path: out, must_be_dir })
}

/// The components of a relative or absolute path (empty components skipped).
pub fn components(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty())
}

/// Splits a relative backend path into (parent, last name): `"a/b/c"` → `("a/b", "c")`, `"c"` → `("", "c")`.
/// `None` for `""` (a mount's root has no parent inside the mount).
pub fn split_parent(rel: &str) -> Option<(&str, &str)> {
    if rel.is_empty() {
        return None;
    }
    Some(rel.rsplit_once('/').unwrap_or(("", rel)))
}

/// The part of normalised absolute `path` below mount point `mount` (also normalised), as a relative path;
/// `None` when `path` is not at or below `mount`. Matches whole components: `/tmpx` is not below `/tmp`.
pub fn below<'a>(path: &'a str, mount: &str) -> Option<&'a str> {
    if mount == "/" {
        return Some(path.trim_start_matches('/'));
    }
    let rest = path.strip_prefix(mount)?;
    if rest.is_empty() {
        Some("")
    } else {
        rest.strip_prefix('/')
    }
}

/// Joins a directory path and a name: `("", "x")` → `"x"`, `("a", "x")` → `"a/x"`, `("/", "x")` → `"/x"`,
/// `("/a", "x")` → `"/a/x"`.
pub fn join(parent: &str, name: &str) -> String {
    let mut s = String::with_capacity(parent.len() + 1 + name.len());
    s.push_str(parent);
    if !parent.is_empty() && !parent.ends_with('/') {
        s.push('/');
    }
    s.push_str(name);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn n(p: &str) -> (String, bool) {
        let x = normalize(p).unwrap();
        (x.path, x.must_be_dir)
    }

    #[test]
    fn plain_and_root_paths() {
        assert_eq!(n("/"), ("/".to_string(), true));
        assert_eq!(n("/a/b"), ("/a/b".to_string(), false));
        assert_eq!(n("a/b"), ("/a/b".to_string(), false), "relative paths start at /");
    }

    #[test]
    fn repeated_trailing_and_empty_components() {
        assert_eq!(n("//a///b//"), ("/a/b".to_string(), true));
        assert_eq!(n("/a/b/"), ("/a/b".to_string(), true));
        assert_eq!(n("///"), ("/".to_string(), true));
    }

    #[test]
    fn dot_and_dotdot() {
        assert_eq!(n("/a/./b/."), ("/a/b".to_string(), true));
        assert_eq!(n("/a/b/../c"), ("/a/c".to_string(), false));
        assert_eq!(n("/a/b/.."), ("/a".to_string(), true));
        assert_eq!(n("/.."), ("/".to_string(), true));
        assert_eq!(n("/../../etc/x"), ("/etc/x".to_string(), false), ".. never escapes the root");
        assert_eq!(n("../x"), ("/x".to_string(), false));
        assert_eq!(n("/a/../../b"), ("/b".to_string(), false));
        assert_eq!(n("/tmp/../data/f"), ("/data/f".to_string(), false));
        assert_eq!(n("/a/..."), ("/a/...".to_string(), false), "... is an ordinary name");
    }

    #[test]
    fn bad_paths() {
        assert_eq!(normalize(""), Err(Error::InvalidPath));
        assert_eq!(normalize("/a\0b"), Err(Error::InvalidPath));
        let long = "x".repeat(NAME_MAX + 1);
        assert_eq!(normalize(&alloc::format!("/tmp/{long}")), Err(Error::NameTooLong));
        assert!(normalize(&alloc::format!("/tmp/{}", "x".repeat(NAME_MAX))).is_ok(), "255 bytes is fine");
        // 4096 bytes in total is the limit: "/" + 16 components of "255 bytes + /" would exceed it.
        let ok = alloc::format!("/{}", "a/".repeat((PATH_MAX - 1) / 2));
        assert!(ok.len() <= PATH_MAX);
        assert!(normalize(&ok).is_ok());
        let too_long = alloc::format!("/{}", "a".repeat(PATH_MAX));
        assert_eq!(too_long.len(), PATH_MAX + 1);
        assert_eq!(normalize(&too_long), Err(Error::NameTooLong));
        // Length is checked before normalisation, like PATH_MAX on Linux.
        let dots = "/.".repeat(PATH_MAX / 2 + 1);
        assert_eq!(normalize(&dots), Err(Error::NameTooLong));
    }

    #[test]
    fn mount_relative_paths() {
        assert_eq!(below("/tmp/a/b", "/tmp"), Some("a/b"));
        assert_eq!(below("/tmp", "/tmp"), Some(""));
        assert_eq!(below("/tmpx/a", "/tmp"), None);
        assert_eq!(below("/etc", "/tmp"), None);
        assert_eq!(below("/", "/"), Some(""));
        assert_eq!(below("/a/b", "/"), Some("a/b"));
        assert_eq!(split_parent("a/b/c"), Some(("a/b", "c")));
        assert_eq!(split_parent("c"), Some(("", "c")));
        assert_eq!(split_parent(""), None);
        assert_eq!(join("", "x"), "x");
        assert_eq!(join("a/b", "x"), "a/b/x");
        assert_eq!(join("/", "x"), "/x");
        assert_eq!(join("/a", "x"), "/a/x");
        assert_eq!(components("a//b").collect::<alloc::vec::Vec<_>>(), ["a", "b"]);
    }
}
