//! `images run` under QEMU: picks the app crate, checks the options and QEMU (installing it when root), builds
//! the image, boots it with the guest's serial console on stdout — backtrace frames named from the ELF's symbols
//! ([`crate::symbols`]) — and returns the guest's exit status (QEMU's stderr is passed through and kept for the
//! failure report; `--timeout` kills QEMU). `--gdb` starts QEMU halted and prints the gdb command that attaches.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{args, host};
use crate::cargo::{BuildError, Profile};
use crate::error::Error;
use crate::exit::{Outcome, TIMEOUT_EXIT};
use crate::forward::Protocol;
use crate::qemu::Accel;
use crate::run::{resolve_initrd, RunArgs};
use crate::shell::shell_line;
use crate::symbols::{ConsoleFilter, Symbols};

/// Runs `args` under QEMU and returns the exit code: the guest's status (0..=127), [`TIMEOUT_EXIT`] when
/// `--timeout` expired, [`crate::exit::QEMU_FAILED_EXIT`] when QEMU failed. Progress goes to stderr.
/// Errors: no app crate, bad options, QEMU missing and not installable, build or initrd failures, QEMU not
/// starting.
pub fn run(args: &RunArgs) -> Result<u8, Error> {
    let app = match args.image {
        Some(_) => None,
        None => Some(crate::project::resolve(&args.selection()).map_err(BuildError::from)?),
    };
    let app_ports = app.as_ref().map(|a| a.ports.as_slice()).unwrap_or_default();
    // Option errors first, before a build that may take minutes.
    args.options(Accel::Tcg, app_ports)?;
    let qemu_bin = host::ensure_qemu(&mut |m| eprintln!("images: {m}"))?;
    let (accel, why) = host::choose_accel(args.accel)?;
    eprintln!("images: accel {accel} ({why})");
    let mut opts = args.options(accel, app_ports)?;
    // Removed when the run ends: OVMF's per-VM variable store.
    let mut _vars = None;
    let mut symbols = None;
    if let Some(image) = &args.image {
        let vars = crate::cargo::target_dir().join(format!("ovmf-vars-{}.fd", std::process::id()));
        let firmware = args.boot.unwrap_or_default();
        let format = crate::diskboot::image_format(image)?;
        opts.boot_disk = Some(crate::diskboot::DiskBoot::new(image, &format, firmware, &vars)?);
        _vars = Some(crate::diskboot::RemoveOnDrop(vars));
        eprintln!("images: booting {} ({format}) through {firmware} on {}", image.display(), opts.machine);
    } else if let Some(app) = &app {
        let initrd = resolve_initrd(app, args.initrd.as_deref())?;
        let image = crate::cargo::build(app, Profile::from_debug(args.debug), initrd.as_deref())?;
        eprintln!("images: built {}", image.summary());
        if let Some(initrd) = &initrd {
            eprintln!("images: initrd {} embedded in the image", initrd.display());
        }
        symbols = read_symbols(&image.path);
        opts.kernel = image.path;
        // Embedded rather than passed as `-initrd`: the image is self-contained and boots the same under Xen.
        opts.initrd = None;
    }
    if let Some(port) = opts.gdb_port {
        eprintln!("images: QEMU is halted until gdb continues; in another terminal run:");
        eprintln!("  {}", gdb_command(&opts.kernel, port));
        if let Err(missing) = crate::host_tools::GDB.require() {
            eprintln!("images: {missing}");
        }
    }
    if let Some(pcap) = &opts.pcap {
        eprintln!("images: recording the NIC's traffic in {}", pcap.display());
    }
    for f in opts.forwards() {
        match f.protocol {
            Protocol::Tcp => eprintln!("images: open http://localhost:{}/", f.host),
            Protocol::Udp => eprintln!("images: udp localhost:{} -> guest port {}", f.host, f.guest),
        }
    }
    let mut cmd = args::qemu_command(&opts)?;
    eprintln!("images: {} ({})", shell_line(&cmd), qemu_bin.display());
    let stdout = if symbols.is_some() { Stdio::piped() } else { Stdio::inherit() };
    cmd.stdout(stdout).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(Error::Qemu)?;

    // The console through the symboliser, so backtrace frames carry function names.
    let console = child.stdout.take().zip(symbols).map(|(mut pipe, symbols)| {
        std::thread::spawn(move || {
            let mut filter = ConsoleFilter::new(symbols);
            let (mut buf, mut out) = ([0u8; 4096], Vec::new());
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                out.clear();
                filter.feed(&buf[..n], &mut out);
                let mut stdout = std::io::stdout().lock();
                let _ = stdout.write_all(&out).and_then(|()| stdout.flush());
            }
        })
    });

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
    for t in tee.into_iter().chain(console) {
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

/// The ELF's function symbols for naming backtrace frames, or `None` (with a note) when it has none.
fn read_symbols(elf: &Path) -> Option<Symbols> {
    match Symbols::read(elf) {
        Ok(s) if !s.is_empty() => Some(s),
        Ok(_) => {
            eprintln!("images: {} has no symbol table; backtraces stay addresses", elf.display());
            None
        }
        Err(e) => {
            eprintln!("images: reading symbols: {e}; backtraces stay addresses");
            None
        }
    }
}

/// The command that attaches gdb to the stub on `port` with the symbols of `elf` (none for a packaged disk):
/// `gdb ELF -ex 'target remote :PORT'`.
pub fn gdb_command(elf: &Path, port: u16) -> String {
    let mut cmd = std::process::Command::new("gdb");
    if !elf.as_os_str().is_empty() {
        cmd.arg(elf);
    }
    cmd.args(["-ex", &format!("target remote :{port}")]);
    shell_line(&cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdb_command_line() {
        assert_eq!(
            gdb_command(Path::new("/t/x86_64-unknown-none/debug/web"), 1234),
            "gdb /t/x86_64-unknown-none/debug/web -ex 'target remote :1234'"
        );
    }
}
