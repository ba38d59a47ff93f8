//! `images run` under QEMU: checks the options and QEMU (installing it when root), builds the image, boots it
//! with the guest's serial console on stdout, and returns the guest's exit status (QEMU's stderr is passed
//! through and kept for the failure report; `--timeout` kills QEMU).

use std::io::{Read, Write};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{args, host};
use crate::error::Error;
use crate::exit::{Outcome, TIMEOUT_EXIT};
use crate::forward::Protocol;
use crate::qemu::Accel;
use crate::run::{resolve_initrd, RunArgs};
use crate::shell::shell_line;

/// Runs `args` under QEMU and returns the exit code: the guest's status (0..=127), [`TIMEOUT_EXIT`] when
/// `--timeout` expired, [`crate::exit::QEMU_FAILED_EXIT`] when QEMU failed. Progress goes to stderr.
/// Errors: bad options, QEMU missing and not installable, build or initrd failures, QEMU not starting.
pub fn run(args: &RunArgs) -> Result<u8, Error> {
    // Option errors first, before a build that may take minutes.
    args.options(Accel::Tcg)?;
    let qemu_bin = host::ensure_qemu(&mut |m| eprintln!("images: {m}"))?;
    let (accel, why) = host::choose_accel(args.accel)?;
    eprintln!("images: accel {accel} ({why})");
    let mut opts = args.options(accel)?;
    // Removed when the run ends: OVMF's per-VM variable store.
    let mut _vars = None;
    if let Some(image) = &args.image {
        let vars = crate::cargo::target_dir().join(format!("ovmf-vars-{}.fd", std::process::id()));
        let firmware = args.boot.unwrap_or_default();
        let format = crate::diskboot::image_format(image)?;
        opts.boot_disk = Some(crate::diskboot::DiskBoot::new(image, &format, firmware, &vars)?);
        _vars = Some(crate::diskboot::RemoveOnDrop(vars));
        eprintln!("images: booting {} ({format}) through {firmware} on {}", image.display(), opts.machine);
    } else {
        let initrd = resolve_initrd(&args.app, args.initrd.as_deref())?;
        let image = args.build(initrd.as_deref())?;
        eprintln!("images: built {}", image.summary());
        if let Some(initrd) = &initrd {
            eprintln!("images: initrd {} embedded in the image", initrd.display());
        }
        opts.kernel = image.path;
        // Embedded rather than passed as `-initrd`: the image is self-contained and boots the same under Xen.
        opts.initrd = None;
    }
    for f in opts.forwards() {
        match f.protocol {
            Protocol::Tcp => eprintln!("images: open http://localhost:{}/", f.host),
            Protocol::Udp => eprintln!("images: udp localhost:{} -> guest port {}", f.host, f.guest),
        }
    }
    let mut cmd = args::qemu_command(&opts)?;
    eprintln!("images: {} ({})", shell_line(&cmd), qemu_bin.display());
    cmd.stdout(Stdio::inherit()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(Error::Qemu)?;

    // Copy QEMU's stderr through while keeping it for the failure report.
    let stderr_text = Arc::new(Mutex::new(String::new()));
    let tee = child.stderr.take().map(|mut pipe| {
        let text = Arc::clone(&stderr_text);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut hinted = false;
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let _ = std::io::stderr().write_all(&buf[..n]);
                if let Ok(mut t) = text.lock() {
                    t.push_str(&String::from_utf8_lossy(&buf[..n]));
                    if accel == Accel::Kvm && !hinted && t.contains("emulation failure") {
                        hinted = true;
                        eprintln!("images: {}", crate::diskboot::KVM_EMULATION_HINT);
                    }
                }
            }
        })
    });

    let deadline = args.timeout.map(|s| Instant::now() + Duration::from_secs(s));
    let status = loop {
        if let Some(status) = child.try_wait().map_err(Error::Qemu)? {
            break Some(status);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            // Kill by the child's own pid; then reap it.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if let Some(t) = tee {
        let _ = t.join();
    }
    let Some(status) = status else {
        eprintln!("images: timeout after {} s; QEMU stopped", args.timeout.unwrap_or(0));
        return Ok(TIMEOUT_EXIT);
    };
    let stderr_text = stderr_text.lock().map(|t| t.clone()).unwrap_or_default();
    let outcome = Outcome::from_status(status, &stderr_text);
    match outcome {
        Outcome::Guest(_) => {}
        Outcome::NoStatus => eprintln!("images: {outcome}"),
        Outcome::QemuFailed { .. } => {
            eprintln!("images: {outcome}; QEMU's stderr:\n{}", stderr_text.trim_end());
        }
    }
    Ok(outcome.exit_code())
}
