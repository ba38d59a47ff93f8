//! Finds a file of a crates.io package in cargo's registry sources (`$CARGO_HOME/registry/src/*/NAME-VERSION/`),
//! so a std app can compile a package's published example unmodified (`include!`) without copying it here. The
//! package must be a dependency of the app at that exact version, so cargo has downloaded it.

use std::path::PathBuf;

/// The path of `rel` (e.g. `examples/hello-world.rs`) in package `name` version `version`. Also tells cargo to
/// rerun the build script when it changes. Panics with what is missing (a build-script error).
pub fn file(name: &str, version: &str, rel: &str) -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .expect("neither CARGO_HOME nor HOME is set");
    let src = home.join("registry/src");
    let found = std::fs::read_dir(&src)
        .unwrap_or_else(|e| panic!("{}: {e}", src.display()))
        .flatten()
        .map(|index| index.path().join(format!("{name}-{version}")).join(rel))
        .find(|p| p.is_file());
    let path = found.unwrap_or_else(|| panic!("{name} {version}: {rel} not found under {}", src.display()));
    println!("cargo:rerun-if-changed={}", path.display());
    path
}

/// The first fenced ```rust code block of the markdown file `rel` in the package (a README example).
pub fn readme_example(name: &str, version: &str, rel: &str) -> String {
    let path = file(name, version, rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let start = text.find("```rust\n").unwrap_or_else(|| panic!("{}: no ```rust block", path.display())) + 8;
    let len = text[start..].find("```").unwrap_or_else(|| panic!("{}: unterminated block", path.display()));
    text[start..start + len].to_owned()
}
