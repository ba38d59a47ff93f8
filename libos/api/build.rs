//! Embeds the app's initrd: when `ZIRVIUM_INITRD` names a ustar archive (set by `images build/run --initrd`),
//! its bytes become `OUT_DIR/initrd.tar`, which the image mounts read-only at `/` when the loader passed no
//! boot module (QEMU's microvm firmware passes none for PVH kernels). Otherwise the file is empty.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=ZIRVIUM_INITRD");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("initrd.tar");
    match std::env::var_os("ZIRVIUM_INITRD").filter(|v| !v.is_empty()) {
        Some(src) => {
            let src = PathBuf::from(src);
            println!("cargo:rerun-if-changed={}", src.display());
            if let Err(e) = std::fs::copy(&src, &out) {
                panic!("ZIRVIUM_INITRD={}: {e}", src.display());
            }
        }
        None => std::fs::write(&out, b"").expect("writing OUT_DIR/initrd.tar"),
    }
}
