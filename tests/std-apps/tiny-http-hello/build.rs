//! Points `src/main.rs` at tiny_http's own example (see the `upstream` crate).
fn main() {
    let path = upstream::file("tiny_http", "0.12.0", "examples/hello-world.rs");
    println!("cargo:rustc-env=UPSTREAM_EXAMPLE={}", path.display());
}
