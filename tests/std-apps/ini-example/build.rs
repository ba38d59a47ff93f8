//! Points `src/main.rs` at rust-ini's own example (see the `upstream` crate).
fn main() {
    let path = upstream::file("rust-ini", "0.21.3", "examples/test.rs");
    println!("cargo:rustc-env=UPSTREAM_EXAMPLE={}", path.display());
}
