//! Puts the kernel linker script where the final link of every app finds it: `zirvium.ld` into `OUT_DIR`, which
//! goes on the link search path of every crate that depends on libos (so `-Tzirvium.ld`, passed by `cargo zirvium`
//! / `images` with the kernel target's other flags, works for an app anywhere, by path or git dependency).
//!
//! A kernel-target build without those flags (a plain `cargo build --target x86_64-unknown-none`) links an image
//! that cannot boot, so it gets a warning saying how to build instead.
fn main() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::copy("zirvium.ld", out.join("zirvium.ld")).unwrap();
    println!("cargo:rustc-link-search=native={}", out.display());
    println!("cargo:rerun-if-changed=zirvium.ld");
    let target = std::env::var("TARGET").unwrap_or_default();
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if target == "x86_64-unknown-none" && !flags.split('\x1f').any(|f| f == "link-arg=-Tzirvium.ld") {
        println!(
            "cargo:warning=building for {target} without the kernel's link flags: images built this way do not \
             boot; build apps with `cargo zirvium build` (outside this repository) or `cargo run -p images -- build \
             APP` (images::cargo::KERNEL_RUSTFLAGS)"
        );
    }
}
