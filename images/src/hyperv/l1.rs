//! L1's per-run archive: `/init` (`images/hyperv/l1-init`), the app's ELF as [`L2_KERNEL`], the L2 QEMU command
//! as `/images/run-l2` and the settings `/init` reads (`/etc/images/run.conf`).

use super::nested::{Guest, L1_ADDRESS, L2_KERNEL};
use crate::initramfs::Archive;
use crate::shell::shell_quote;

/// `/init` of L1 (`images/hyperv/l1-init`).
pub const L1_INIT: &str = include_str!("../../hyperv/l1-init");

/// The per-run archive for `guest` whose L2 QEMU takes `l2_args`.
pub fn run_archive(guest: &Guest, l2_args: &[String]) -> Archive {
    let mut a = Archive::new();
    a.data("init", L1_INIT, 0o755);
    a.file(L2_KERNEL.trim_start_matches('/'), guest.kernel.clone(), 0o644);
    a.data("images/run-l2", run_l2_script(l2_args), 0o755);
    // Shell assignments: an address and a number, neither with a quote.
    let conf = format!("L1_ADDRESS='{L1_ADDRESS}'\nL2_TIMEOUT={}\n", guest.l2_timeout_secs.max(1));
    a.data("etc/images/run.conf", conf, 0o644);
    a
}

/// `/images/run-l2`: execs L2's QEMU with `l2_args`, each shell-quoted.
pub fn run_l2_script(l2_args: &[String]) -> String {
    let mut s = String::from("#!/bin/sh\n# L2: written by images (src/hyperv/l1.rs).\nexec qemu-system-x86_64");
    for a in l2_args {
        s.push_str(" \\\n    ");
        s.push_str(&shell_quote(a.as_ref()));
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::initramfs::read_all;

    #[test]
    fn run_archive_has_init_guest_script_and_settings() {
        let dir = std::env::temp_dir().join(format!("images-l1-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hello"), b"\x7fELF").unwrap();
        let guest = Guest {
            app: "hello".into(),
            kernel: dir.join("hello"),
            mem_mib: 64,
            cmdline: String::new(),
            tsc_page: false,
            nic: false,
            forwards: vec![],
            qmp_host_port: None,
            l2_timeout_secs: 30,
        };
        let mut bytes = Vec::new();
        run_archive(&guest, &["-append".into(), "a b".into()]).write(&mut bytes).unwrap();
        let entries = read_all(&bytes);
        let find = |n: &str| entries.iter().find(|e| e.0 == n).map(|e| String::from_utf8_lossy(&e.2).into_owned());
        assert_eq!(find("init").as_deref(), Some(L1_INIT));
        assert_eq!(find("images/guest.elf").as_deref(), Some("\u{7f}ELF"));
        assert!(find("images/run-l2").unwrap().ends_with("exec qemu-system-x86_64 \\\n    -append \\\n    'a b'\n"));
        assert_eq!(find("etc/images/run.conf").as_deref(), Some("L1_ADDRESS='10.0.2.15/24'\nL2_TIMEOUT=30\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
