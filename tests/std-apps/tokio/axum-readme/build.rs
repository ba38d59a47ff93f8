//! Writes axum's README example to `OUT_DIR/readme.rs` for `src/main.rs` (see the `upstream` crate).
fn main() {
    let code = upstream::readme_example("axum", "0.8.9", "README.md");
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("readme.rs");
    std::fs::write(&out, code).expect("writing OUT_DIR/readme.rs");
}
