//! `cargo zirvium` on app crates outside this repository, driven through the built `cargo-zirvium` binary as cargo
//! runs it (`cargo-zirvium zirvium ARGS`), in a temporary directory: `new` (path dependency on this checkout) →
//! `run` under TCG with a port forward → the page over HTTP, with `--pcap` recording the TCP handshake and the
//! request; `package --format qcow2` → `qemu-img info` says qcow2; the hello template exits 0 with its initrd
//! file; `run --debug --gdb`: Debian's gdb in batch mode breaks in the app's entry function and `bt` shows it
//! over libos's frames; each usage error (no crate, not an app, several binaries, missing Rust target, missing
//! QEMU, unknown option) is one line with what to do, exit status 2.
//!
//! The crates share one target directory, `target/cargo-zirvium/` (kept between runs, so later runs build only
//! the app); the first run builds the library OS twice (release and dev) there, a few minutes on two cores.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use zirvium_tests::http::get;
use zirvium_tests::{free_port, note, Protocol};

/// Longest wait for a `run` to build and answer (a cold build of the library OS under load takes minutes).
const BUILD_AND_BOOT: Duration = Duration::from_secs(20 * 60);

/// The `cargo-zirvium` binary of this checkout, built once per test binary.
fn cargo_zirvium() -> &'static Path {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let bin = BIN.get_or_init(|| {
        let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "-p", "images", "--bin", "cargo-zirvium", "--message-format=json-render-diagnostics"])
            .current_dir(images::workspace_root())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("cargo build -p images: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        // The last `compiler-artifact` record naming the binary: `"executable":"/.../cargo-zirvium"`.
        text.lines()
            .rev()
            .filter(|l| l.contains("\"executable\"") && l.contains("cargo-zirvium"))
            .find_map(|l| l.split("\"executable\":\"").nth(1)?.split('"').next().map(PathBuf::from))
            .ok_or_else(|| format!("cargo build -p images --bin cargo-zirvium named no executable ({})", out.status))
    });
    bin.as_deref().unwrap_or_else(|e| panic!("{e}"))
}

/// A fresh directory under the system's temporary directory (outside the repository), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("zirvium-cargo-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("creating the scratch directory");
        assert!(!d.starts_with(images::workspace_root()), "{} is inside the repository", d.display());
        Scratch(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// `cargo-zirvium zirvium ARGS` in `dir`, with the shared target directory.
fn command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(cargo_zirvium());
    cmd.arg("zirvium").args(args).current_dir(dir).stdin(Stdio::null());
    cmd.env("CARGO_TARGET_DIR", images::cargo::target_dir().join("cargo-zirvium"));
    cmd
}

/// Runs `cargo zirvium ARGS` in `dir` to its end.
fn cargo(dir: &Path, args: &[&str]) -> Output {
    command(dir, args).output().unwrap_or_else(|e| panic!("running cargo zirvium {args:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `cargo zirvium new DIR/NAME [ARGS]`, checked; returns the crate's directory.
fn new_app(scratch: &Scratch, name: &str, args: &[&str]) -> PathBuf {
    let dir = scratch.0.join(name);
    let mut all = vec!["new", dir.to_str().expect("UTF-8 temp path")];
    all.extend_from_slice(args);
    let out = cargo(&scratch.0, &all);
    assert!(out.status.success(), "cargo zirvium new: {}{}", text(&out.stdout), text(&out.stderr));
    let toml = std::fs::read_to_string(dir.join("Cargo.toml")).expect("Cargo.toml written");
    let checkout = images::workspace_root().canonicalize().expect("checkout path");
    assert!(toml.contains(&format!("zirvium = {{ path = \"{}/libos/api\" }}", checkout.display())), "{toml}");
    dir
}

/// A `cargo zirvium run` in its own process group, stopped (the group: cargo-zirvium and QEMU) on drop.
struct Running {
    child: Child,
    stderr: PathBuf,
    stopped: bool,
}

impl Running {
    fn start(dir: &Path, args: &[&str], logs: &Path) -> Running {
        let stderr = logs.join("run.stderr");
        let mut cmd = command(dir, args);
        cmd.stdout(std::fs::File::create(logs.join("run.stdout")).expect("stdout log"));
        cmd.stderr(std::fs::File::create(&stderr).expect("stderr log"));
        let child = cmd.process_group(0).spawn().expect("starting cargo zirvium run");
        Running { child, stderr, stopped: false }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Fails the test with the run's output when it ended early.
    fn check_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("cargo zirvium run ended ({status}) early:\n{}", self.stderr());
        }
    }

    /// SIGTERM to the group (QEMU writes out the pcap and exits), then reaps cargo-zirvium; once.
    fn stop(&mut self) {
        if !std::mem::replace(&mut self.stopped, true) {
            let _ = Command::new("kill").args(["-TERM", "--", &format!("-{}", self.child.id())]).status();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One TCP segment of a capture.
#[derive(Debug)]
struct Segment {
    src_port: u16,
    dst_port: u16,
    /// TCP flags (RFC 9293 §3.1): FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10.
    flags: u8,
    payload: Vec<u8>,
}

/// The IPv4 TCP segments of a pcap file (little-endian, LINKTYPE_ETHERNET, as QEMU's filter-dump writes it).
fn tcp_segments(pcap: &[u8]) -> Vec<Segment> {
    let u32_at = |b: &[u8], at: usize| b.get(at..at + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]));
    let be16 = |b: &[u8], at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    assert_eq!(u32_at(pcap, 0), Some(0xa1b2_c3d4), "pcap magic");
    assert_eq!(u32_at(pcap, 20), Some(1), "LINKTYPE_ETHERNET");
    let mut segments = Vec::new();
    let mut at = 24;
    while let Some(len) = u32_at(pcap, at + 8) {
        let frame = &pcap[(at + 16).min(pcap.len())..(at + 16 + len as usize).min(pcap.len())];
        at += 16 + len as usize;
        // Ethernet II, IPv4 (0x0800), protocol 6 (TCP).
        if frame.len() < 34 || be16(frame, 12) != 0x0800 || frame[23] != 6 {
            continue;
        }
        let ip = &frame[14..];
        let (ihl, total) = (usize::from(ip[0] & 0x0f) * 4, usize::from(be16(ip, 2)));
        let Some(tcp) = ip.get(ihl..total.min(ip.len())) else { continue };
        if tcp.len() < 20 {
            continue;
        }
        let offset = usize::from(tcp[12] >> 4) * 4;
        let payload = tcp.get(offset..).unwrap_or_default().to_vec();
        segments.push(Segment { src_port: be16(tcp, 0), dst_port: be16(tcp, 2), flags: tcp[13], payload });
    }
    segments
}

/// GET `path` on `port` until it answers 200 or `deadline`, checking that the run is alive.
fn wait_for_200(run: &mut Running, port: u16, path: &str, deadline: Instant) -> String {
    loop {
        if let Ok(r) = get(port, path) {
            assert_eq!(r.status, 200, "GET {path}: {}", r.text());
            return r.text();
        }
        run.check_alive();
        assert!(Instant::now() < deadline, "no answer on port {port} in time:\n{}", run.stderr());
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn new_run_pcap_package_outside_the_repository() {
    zirvium_tests::host_tools().unwrap_or_else(|e| panic!("{e:?}"));
    let scratch = Scratch::new("web");
    let t0 = Instant::now();
    let dir = new_app(&scratch, "web", &[]);
    for f in ["src/main.rs", "initrd/index.html", "README.md", "rust-toolchain.toml", "Cargo.lock"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let port = free_port(Protocol::Tcp).expect("a free port");
    let pcap = scratch.0.join("web.pcap");
    let (forward, pcap_arg) = (format!("{port}:80"), pcap.to_str().expect("UTF-8").to_owned());
    let args = ["run", "--accel", "tcg", "--port", &forward, "--pcap", &pcap_arg, "--timeout", "1500"];
    let mut run = Running::start(&dir, &args, &scratch.0);
    let page = wait_for_200(&mut run, port, "/", t0 + BUILD_AND_BOOT);
    note(format_args!("cargo zirvium new to the first HTTP 200: {:.1} s (TCG)", t0.elapsed().as_secs_f64()));
    assert!(page.contains("<h1>web is running</h1>"), "{page}");
    let hello = get(port, "/hello").expect("GET /hello");
    assert_eq!((hello.status, hello.text()), (200, "hello from web on qemu-tcg\n".to_owned()));
    let built = run.stderr();
    run.stop();
    let elf = built.lines().find_map(|l| l.strip_prefix("images: built ")).unwrap_or("?").to_owned();
    note(format_args!("the template's image: {elf}"));

    // The capture holds the handshake with the guest's port 80 and the request.
    let segments = tcp_segments(&std::fs::read(&pcap).expect("reading the pcap file"));
    let syn = segments.iter().find(|s| s.dst_port == 80 && s.flags & 0x12 == 0x02).expect("SYN to port 80");
    let client = syn.src_port;
    assert!(
        segments.iter().any(|s| (s.src_port, s.dst_port) == (80, client) && s.flags & 0x12 == 0x12),
        "SYN-ACK from port 80 in {segments:?}"
    );
    assert!(segments.iter().any(|s| s.dst_port == 80 && s.payload.starts_with(b"GET / HTTP/1.1\r\n")), "GET /");
    assert!(segments.iter().any(|s| s.src_port == 80 && s.payload.starts_with(b"HTTP/1.1 200 OK\r\n")), "200");

    // A bootable disk in the format OpenStack takes.
    let qcow2 = scratch.0.join("web.qcow2");
    let out = cargo(&dir, &["package", "--format", "qcow2", "--output", qcow2.to_str().expect("UTF-8")]);
    assert!(out.status.success(), "cargo zirvium package: {}", text(&out.stderr));
    let info = images::host_tools::QEMU_IMG.run([OsStr::new("info"), OsStr::new("--output=json"), qcow2.as_os_str()]);
    let info = text(&info.expect("qemu-img info"));
    assert!(info.contains("\"format\": \"qcow2\""), "{info}");

    // The hello template: exits 0 after printing its initrd file and arguments.
    let greeter = new_app(&scratch, "greeter", &["--template", "hello"]);
    let out = cargo(&greeter, &["run", "--accel", "tcg", "--timeout", "1500", "--", "a", "b"]);
    let console = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{console}{}", text(&out.stderr));
    for want in ["hello from greeter on qemu-tcg", "arg: a", "arg: b", "initrd: Greetings from greeter's initrd."] {
        assert!(console.contains(want), "{want:?} in {console}");
    }
}

#[test]
fn gdb_breaks_in_the_app_entry() {
    zirvium_tests::host_tools().unwrap_or_else(|e| panic!("{e:?}"));
    images::host_tools::ensure(&[images::host_tools::GDB], &mut |m| note(m)).expect("gdb");
    let scratch = Scratch::new("gdb");
    let dir = new_app(&scratch, "webdbg", &[]);
    let gdb_port = free_port(Protocol::Tcp).expect("a free port");
    let http_port = free_port(Protocol::Tcp).expect("a free port");
    let (gdb_arg, forward) = (format!("--gdb={gdb_port}"), format!("{http_port}:80"));
    let args = ["run", "--debug", &gdb_arg, "--accel", "tcg", "--port", &forward, "--timeout", "1500"];
    let mut run = Running::start(&dir, &args, &scratch.0);
    let deadline = Instant::now() + BUILD_AND_BOOT;
    // The printed command: `gdb ELF -ex 'target remote :PORT'`, the dev-profile ELF with its debug info.
    let attach = loop {
        let err = run.stderr();
        if let Some(line) = err.lines().map(str::trim).find(|l| l.starts_with("gdb ") && l.contains("target remote")) {
            break line.to_owned();
        }
        run.check_alive();
        assert!(Instant::now() < deadline, "no gdb command printed:\n{err}");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(attach.ends_with(&format!("-ex 'target remote :{gdb_port}'")), "{attach}");
    let elf = attach["gdb ".len()..].split(" -ex").next().expect("ELF path").to_owned();
    assert!(elf.ends_with("x86_64-unknown-none/debug/webdbg"), "{attach}");
    let mut gdb = images::host_tools::GDB.command();
    gdb.args(["-batch", "-nx", "-ex", &format!("target remote :{gdb_port}")]);
    gdb.args(["-ex", "break webdbg::run", "-ex", "continue", "-ex", "bt", &elf]);
    let mut child = gdb.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("gdb");
    let gdb_deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait().expect("waiting for gdb").is_none() {
        assert!(Instant::now() < gdb_deadline, "gdb did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut out = String::new();
    child.stdout.take().expect("stdout").read_to_string(&mut out).expect("gdb's output");
    child.stderr.take().expect("stderr").read_to_string(&mut out).expect("gdb's errors");
    run.stop();
    assert!(out.contains("Breakpoint 1, webdbg::run ()"), "{out}");
    let frames: Vec<&str> = out.lines().filter(|l| l.starts_with('#')).collect();
    assert!(frames.first().is_some_and(|f| f.contains("webdbg::run")), "{out}");
    for want in ["__zirvium_app_main", "libos::task", "libos_boot_main"] {
        assert!(frames.iter().any(|f| f.contains(want)), "{want} in the backtrace:\n{out}");
    }
}

#[test]
fn errors_are_one_line_with_what_to_do() {
    let scratch = Scratch::new("errors");
    // A crate that does not depend on zirvium.
    let plain = scratch.0.join("plain");
    std::fs::create_dir_all(plain.join("src")).expect("mkdir");
    std::fs::write(
        plain.join("Cargo.toml"),
        "[package]\nname = \"plain\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )
    .expect("Cargo.toml");
    std::fs::write(plain.join("src/main.rs"), "fn main() {}\n").expect("main.rs");
    // An app with two binaries.
    let multi = new_app(&scratch, "multi", &["--template", "hello"]);
    let mut toml = std::fs::read_to_string(multi.join("Cargo.toml")).expect("Cargo.toml");
    toml = toml.replace("[dependencies]", "[[bin]]\nname = \"tool\"\npath = \"src/tool.rs\"\n\n[dependencies]");
    std::fs::write(multi.join("Cargo.toml"), toml).expect("Cargo.toml");
    std::fs::copy(multi.join("src/main.rs"), multi.join("src/tool.rs")).expect("tool.rs");
    // A PATH whose `rustup` knows no installed target and cannot add one, and one without QEMU.
    let fake = scratch.0.join("fake-bin");
    std::fs::create_dir_all(&fake).expect("mkdir");
    let rustup = fake.join("rustup");
    std::fs::write(
        &rustup,
        "#!/bin/sh\n[ \"$2\" = add ] && { echo 'error: could not download' >&2; exit 1; }\nexit 0\n",
    )
    .expect("fake rustup");
    std::fs::set_permissions(&rustup, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let path = std::env::join_paths(
        std::iter::once(fake.clone()).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .expect("PATH");
    let empty = scratch.0.join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");

    let cases: Vec<(&str, Command, &str)> = vec![
        ("no crate", command(&empty, &["build"]), "no Cargo.toml in"),
        ("not an app", command(&plain, &["build"]), "is not a Zirvium app: it does not depend on `zirvium`"),
        ("two binaries", command(&multi, &["build"]), "several binaries (multi, tool): pick one with --bin NAME"),
        (
            "unknown bin",
            command(&multi, &["build", "--bin", "nope"]),
            "has no binary `nope`; its binaries: multi, tool",
        ),
        ("unknown option", command(&multi, &["run", "--frobnicate"]), "unexpected argument '--frobnicate' found"),
        (
            "no target",
            {
                let mut c = command(&multi, &["build", "--bin", "multi"]);
                c.env("PATH", &path);
                c
            },
            "install it with: rustup target add x86_64-unknown-none",
        ),
        (
            "no QEMU",
            {
                let mut c = command(&multi, &["run", "--bin", "multi"]);
                c.env("PATH", &empty).env("ZIRVIUM_NO_INSTALL", "1");
                c
            },
            "qemu-system-x86_64 (Debian package qemu-system-x86",
        ),
    ];
    for (what, mut cmd, needle) in cases {
        let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("cargo zirvium: error: ")).collect();
        assert_eq!(errors.len(), 1, "{what}: one error line in {err:?}");
        assert!(err.trim_end().ends_with(errors[0]), "{what}: the error is the last line: {err:?}");
        assert!(errors[0].contains(needle), "{what}: {needle:?} in {err:?}");
        if what == "no QEMU" {
            assert!(errors[0].contains("apt-get install -y -t bookworm-backports qemu-system-x86"), "{err}");
        }
    }
}
