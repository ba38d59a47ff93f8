//! Initrd archives: a directory packed as a POSIX ustar archive (POSIX.1-2001 `pax` "ustar Interchange
//! Format"), passed to the guest as a PVH boot module (`-initrd`) and mounted read-only at `/`.
//!
//! Archives are reproducible: entries sorted by name, mtime 0, uid/gid 0, modes 0644/0755.

use std::path::{Path, PathBuf};

use crate::project::App;

/// Failures of [`pack`].
#[derive(Debug, thiserror::Error)]
pub enum InitrdError {
    /// The source is not a directory.
    #[error("{0}: not a directory")]
    NotADirectory(PathBuf),
    /// An entry ustar cannot hold (symlink, device, non-UTF-8 name, a path over ustar's 100+155-byte limit).
    #[error("{path}: {why}")]
    Unsupported {
        /// The entry.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// An I/O error on `path`.
    #[error("{path}: {source}")]
    Io {
        /// The file read or the archive written.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// What [`pack`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitrdSummary {
    /// Regular files.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Archive size (bytes).
    pub bytes: u64,
}

/// The initrd archive for `app`: `given` as is when it is a file; packed to [`app_archive`] when it is a
/// directory; else the app's own `initrd/` directory (next to its Cargo.toml), packed, when it exists; else none.
/// Errors: packing ([`pack`]).
pub fn for_app(app: &App, given: Option<&Path>) -> Result<Option<PathBuf>, InitrdError> {
    let own = app.initrd_dir();
    let dir = match given {
        Some(p) if !p.is_dir() => return Ok(Some(p.to_owned())),
        Some(p) => p.to_owned(),
        None if own.is_dir() => own,
        None => return Ok(None),
    };
    pack_for_app(app, &dir).map(|(archive, _)| Some(archive))
}

/// Packs the tree under `dir` into the ustar archive `out` (entry names relative to `dir`, directories with
/// a trailing `/`). Errors: [`InitrdError`].
pub fn pack(dir: &Path, out: &Path) -> Result<InitrdSummary, InitrdError> {
    if !dir.is_dir() {
        return Err(InitrdError::NotADirectory(dir.to_owned()));
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| InitrdError::Io { path, source }
    };
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let file = std::fs::File::create(out).map_err(io(out))?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
    let mut summary = InitrdSummary { files: 0, dirs: 0, bytes: 0 };
    add_tree(&mut builder, dir, "", &mut summary)?;
    let mut w = builder.into_inner().map_err(io(out))?;
    std::io::Write::flush(&mut w).map_err(io(out))?;
    summary.bytes = std::fs::metadata(out).map_err(io(out))?.len();
    Ok(summary)
}

/// Where an app's packed initrd goes: `initrd/BIN.tar` in the app's target directory.
pub fn app_archive(app: &App) -> PathBuf {
    app.target_dir.join("initrd").join(format!("{}.tar", app.bin))
}

/// Packs `dir` into [`app_archive`]`(app)` and returns the archive's path and what went in. Errors: [`pack`]'s.
pub fn pack_for_app(app: &App, dir: &Path) -> Result<(PathBuf, InitrdSummary), InitrdError> {
    let out = app_archive(app);
    let summary = pack(dir, &out)?;
    Ok((out, summary))
}

fn add_tree<W: std::io::Write>(
    b: &mut tar::Builder<W>,
    dir: &Path,
    prefix: &str,
    summary: &mut InitrdSummary,
) -> Result<(), InitrdError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| InitrdError::Io { path, source }
    };
    let mut entries = std::fs::read_dir(dir).map_err(io(dir))?.collect::<Result<Vec<_>, _>>().map_err(io(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let unsupported = |why: &str| InitrdError::Unsupported { path: path.clone(), why: why.to_owned() };
        let Some(name) = e.file_name().to_str().map(str::to_owned) else {
            return Err(unsupported("name is not UTF-8"));
        };
        let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
        let mut h = tar::Header::new_ustar();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        let rel = format!("{prefix}{name}");
        if meta.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            h.set_path(format!("{rel}/")).map_err(|e| unsupported(&e.to_string()))?;
            h.set_cksum();
            b.append(&h, std::io::empty()).map_err(io(&path))?;
            summary.dirs += 1;
            add_tree(b, &path, &format!("{rel}/"), summary)?;
        } else if meta.is_file() {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(meta.len());
            h.set_path(&rel).map_err(|e| unsupported(&e.to_string()))?;
            h.set_cksum();
            let f = std::fs::File::open(&path).map_err(io(&path))?;
            b.append(&h, f).map_err(io(&path))?;
            summary.files += 1;
        } else {
            return Err(unsupported("only regular files and directories go into an initrd"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn packs_a_tree_reproducibly() {
        let d = std::env::temp_dir().join(format!("images-initrd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("src/css")).unwrap();
        std::fs::write(d.join("src/index.html"), b"<h1>hi</h1>").unwrap();
        std::fs::write(d.join("src/css/site.css"), b"body{}").unwrap();
        let s = pack(&d.join("src"), &d.join("out/a.tar")).unwrap();
        assert_eq!((s.files, s.dirs), (2, 1));
        let s2 = pack(&d.join("src"), &d.join("out/b.tar")).unwrap();
        assert_eq!(s, s2);
        let a = std::fs::read(d.join("out/a.tar")).unwrap();
        assert_eq!(a, std::fs::read(d.join("out/b.tar")).unwrap(), "archives must be reproducible");
        let mut ar = tar::Archive::new(&a[..]);
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let mut body = String::new();
            e.read_to_string(&mut body).unwrap();
            seen.push((e.path().unwrap().display().to_string(), body));
        }
        assert_eq!(
            seen,
            [
                ("css/".to_owned(), String::new()),
                ("css/site.css".to_owned(), "body{}".to_owned()),
                ("index.html".to_owned(), "<h1>hi</h1>".to_owned())
            ]
        );
        assert!(matches!(pack(&d.join("src/index.html"), &d.join("x.tar")), Err(InitrdError::NotADirectory(_))));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
