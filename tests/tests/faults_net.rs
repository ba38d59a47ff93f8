//! Packet loss, reordering and duplication between the VM and its clients, in a network namespace of the test's
//! own ([`zirvium_tests::netns`]): `kv` serves a 10 MiB download (`/bytes/N`, byte i is `i % 251`) and takes a
//! 10 MiB upload (PUT, read back with GET), each byte for byte. The impairment is `tc netem delay 10ms loss 10%
//! reorder 25% 50% duplicate 1%` on the tap (netem reorders only with a delay; it acts on what the host sends);
//! on a kernel without sch_netem a user-space relay between QEMU's `-netdev dgram` and the tap applies the same
//! figures to the same direction (`tests/floods/impair.py`). Transfer times and the relay's counters go to
//! stderr. Needs root, `ip`, `tc`, curl and python3; skips with a note otherwise. TCG.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use zirvium_tests::disk::{bytes, fresh_disk, workdir};
use zirvium_tests::netns::{NetNs, GUEST_ADDR, TAP};
use zirvium_tests::{note, Accel, Vm, VmError};

/// 10 MiB.
const SIZE: usize = 10 << 20;

/// The impairment of the issue, plus the delay netem's reordering needs.
const NETEM: [&str; 9] = ["delay", "10ms", "loss", "10%", "reorder", "25%", "50%", "duplicate", "1%"];

/// UDP ports of the namespace's loopback for QEMU's `-netdev dgram` and the relay.
const QEMU_PORT: u16 = 40001;
const RELAY_PORT: u16 = 40002;

/// The user-space impairment relay; killed on drop.
struct Relay(Child);

impl Relay {
    /// Starts `impair.py` in `ns` on its tap with the figures of [`NETEM`]; returns once it relays.
    fn start(ns: &NetNs) -> Result<Relay, VmError> {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("floods").join("impair.py");
        let ports = [QEMU_PORT.to_string(), RELAY_PORT.to_string()];
        let mut child = ns
            .command("python3")
            .arg(script)
            .args([TAP, &ports[0], &ports[1], "0.10", "0.25", "0.01", "13"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|source| VmError::Io { what: "starting impair.py".into(), source })?;
        let mut line = String::new();
        if let Some(out) = child.stdout.as_mut() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let relay = Relay(child);
        if !line.contains("relaying") {
            let e = std::io::Error::other(format!("impair.py did not start: {line:?}"));
            return Err(VmError::Io { what: "starting impair.py".into(), source: e });
        }
        Ok(relay)
    }

    /// Stops it (SIGTERM) and returns its counters (a JSON line).
    fn stop(mut self) -> String {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let mut out = String::new();
        if let Some(mut o) = self.0.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        out.trim().to_owned()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `curl ARGS` inside `ns` with a 150 s limit; returns stdout. Errors carry curl's stderr and the console.
fn curl(vm: &Vm, ns: &NetNs, args: &[&str]) -> Result<String, VmError> {
    let out = ns
        .command("curl")
        .args(["-sS", "--max-time", "150"])
        .args(args)
        .output()
        .map_err(|source| VmError::Io { what: "running curl in the namespace".into(), source })?;
    vm.ensure(
        out.status.success(),
        format_args!("curl {args:?}: {} {}", out.status, String::from_utf8_lossy(&out.stderr)),
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn read(path: &Path) -> Result<Vec<u8>, VmError> {
    std::fs::read(path).map_err(|source| VmError::Io { what: format!("reading {}", path.display()), source })
}

/// The first offset where `got` differs from `want`, for the message.
fn first_difference(got: &[u8], want: &[u8]) -> Option<usize> {
    got.iter().zip(want).position(|(a, b)| a != b).or((got.len() != want.len()).then(|| got.len().min(want.len())))
}

#[test]
fn transfers_survive_loss_reordering_and_duplication_tcg() -> Result<(), VmError> {
    let test = "transfers_survive_loss_reordering_and_duplication_tcg";
    let Some(ns) = NetNs::for_test(test, &["ip", "tc", "curl", "python3"]) else { return Ok(()) };
    // The qdisc goes on before the VM starts; a kernel without sch_netem refuses it ("Specified qdisc kind is
    // unknown"): then the relay impairs both directions instead.
    let relay = match ns.netem(&NETEM) {
        Ok(()) => None,
        Err(e) => {
            note(format_args!("{test}: tc netem unavailable ({e}); impairing with tests/floods/impair.py instead"));
            Some(Relay::start(&ns)?)
        }
    };
    let dir = workdir("faults_net", test);
    let disk = fresh_disk(&dir, 64 << 20);
    let builder = Vm::builder(test, "kv", Accel::Tcg);
    let builder = match relay {
        Some(_) => builder.netns_dgram(&ns, QEMU_PORT, RELAY_PORT),
        None => builder.netns(&ns),
    };
    let vm = builder
        .disk(&disk)
        .mem_mib(256)
        .args([format!("max_value_bytes={}", 16 << 20)])
        .timeout(Duration::from_secs(120))
        .boot()?;
    vm.wait_for("kv listening")?;

    let got = dir.join("download.bin");
    let t = Instant::now();
    curl(&vm, &ns, &["-o", &got.to_string_lossy(), &format!("http://{GUEST_ADDR}/bytes/{SIZE}")])?;
    let download = t.elapsed();
    let want: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    let body = read(&got)?;
    vm.ensure(body == want, format_args!("download differs at byte {:?}", first_difference(&body, &want)))?;

    let sent = dir.join("upload.bin");
    let value = bytes(13, SIZE);
    std::fs::write(&sent, &value).map_err(|source| VmError::Io { what: "writing the upload".into(), source })?;
    let t = Instant::now();
    let url = format!("http://{GUEST_ADDR}/kv/big");
    let status = curl(&vm, &ns, &["-o", "/dev/null", "-w", "%{http_code}", "-T", &sent.to_string_lossy(), &url])?;
    let upload = t.elapsed();
    vm.ensure(status == "201", format_args!("PUT of 10 MiB: status {status}"))?;
    let back = dir.join("readback.bin");
    let t = Instant::now();
    curl(&vm, &ns, &["-o", &back.to_string_lossy(), &url])?;
    let readback = t.elapsed();
    let body = read(&back)?;
    vm.ensure(body == value, format_args!("upload read back differs at byte {:?}", first_difference(&body, &value)))?;
    note(format_args!(
        "{test}: under {NETEM:?}: 10 MiB download {download:.1?}, upload {upload:.1?}, read back {readback:.1?}"
    ));
    vm.kill();
    if let Some(relay) = relay {
        note(format_args!("{test}: relay counters {}", relay.stop()));
    }
    Ok(())
}

#[test]
fn first_difference_finds_the_offset() {
    assert_eq!(first_difference(b"abc", b"abc"), None);
    assert_eq!(first_difference(b"abx", b"abc"), Some(2));
    assert_eq!(first_difference(b"ab", b"abc"), Some(2));
}
