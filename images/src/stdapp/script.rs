//! The linker script of std images: libos's own script (`libos/zirvium.ld`: 1 MiB, PVH note, W^X segments) with
//! the TLS program header and sections (`libos/hermit/link/*.ld`) put where its two `std images:` marker
//! comments stand, so no_std images keep exactly the script they had.

use std::path::{Path, PathBuf};

/// The marker line in `zirvium.ld` that the TLS program header replaces.
pub const PHDR_MARKER: &str = "/* std images: TLS program header (see images::stdapp) */";
/// The marker line in `zirvium.ld` that the TLS sections replace.
pub const SECTIONS_MARKER: &str = "/* std images: TLS sections (see images::stdapp) */";

/// Errors of [`compose`] and [`write`].
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// A marker is missing from the base script (it was edited without updating `images::stdapp`).
    #[error("{script}: the line `{marker}` is missing; std images insert their TLS parts there")]
    Marker {
        /// The base script.
        script: PathBuf,
        /// The missing marker.
        marker: &'static str,
    },
    /// A script file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// `base` with each marker replaced by its fragment. Errors: [`ScriptError::Marker`] (naming `base_path`).
pub fn compose(base: &str, base_path: &Path, phdr: &str, sections: &str) -> Result<String, ScriptError> {
    let mut out = base.to_owned();
    for (marker, fragment) in [(PHDR_MARKER, phdr), (SECTIONS_MARKER, sections)] {
        let Some(at) = out.find(marker) else {
            return Err(ScriptError::Marker { script: base_path.to_owned(), marker });
        };
        // The whole marker line goes, indentation included: the fragment brings its own.
        let line_start = out[..at].rfind('\n').map_or(0, |i| i + 1);
        out.replace_range(line_start..at + marker.len(), fragment.trim_end_matches('\n'));
    }
    Ok(out)
}

fn read(path: &Path) -> Result<String, ScriptError> {
    std::fs::read_to_string(path).map_err(|source| ScriptError::Io { path: path.to_owned(), source })
}

/// Writes the std images' script to `out`, from the workspace's `libos/zirvium.ld` and
/// `libos/hermit/link/{tls-phdr,tls-sections}.ld`. Errors: [`ScriptError`].
pub fn write(workspace: &Path, out: &Path) -> Result<(), ScriptError> {
    let base_path = workspace.join("libos/zirvium.ld");
    let link = workspace.join("libos/hermit/link");
    let text = compose(
        &read(&base_path)?,
        &base_path,
        &read(&link.join("tls-phdr.ld"))?,
        &read(&link.join("tls-sections.ld"))?,
    )?;
    std::fs::write(out, text).map_err(|source| ScriptError::Io { path: out.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_become_fragments() {
        let base =
            format!("PHDRS {{\n    data PT_LOAD;\n    {PHDR_MARKER}\n}}\nSECTIONS {{\n    {SECTIONS_MARKER}\n}}\n");
        let s = compose(&base, Path::new("z.ld"), "    tls PT_TLS;\n", "    .tdata : { }\n").unwrap();
        assert_eq!(s, "PHDRS {\n    data PT_LOAD;\n    tls PT_TLS;\n}\nSECTIONS {\n    .tdata : { }\n}\n");
        let err = compose("PHDRS {}", Path::new("z.ld"), "", "").unwrap_err();
        assert!(err.to_string().contains("z.ld: the line `/* std images: TLS program header"), "{err}");
    }

    #[test]
    fn the_workspace_script_has_both_markers() {
        let ws = crate::cargo::workspace_root();
        let dir = std::env::temp_dir().join(format!("zirvium-std-ld-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("zirvium-std.ld");
        write(&ws, &out).unwrap();
        let s = std::fs::read_to_string(&out).unwrap();
        assert!(s.contains("tls PT_TLS;") && s.contains("__tls_start") && s.contains("ENTRY(pvh_start32)"));
        assert!(!s.contains("std images: TLS program header (see"), "markers are replaced");
        let _ = std::fs::remove_dir_all(dir);
    }
}
