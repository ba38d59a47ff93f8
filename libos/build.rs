//! Puts the kernel linker script where the final link of every app finds it (`-Tzirvium.ld` in
//! .cargo/config.toml; the `-L` path propagates to dependents).
fn main() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::copy("zirvium.ld", out.join("zirvium.ld")).unwrap();
    println!("cargo:rustc-link-search=native={}", out.display());
    println!("cargo:rerun-if-changed=zirvium.ld");
}
