//! A network namespace of the test's own with one tap in it (iproute2: `ip netns`, `ip tuntap`), so floods and
//! `tc netem` touch nothing but the VM under test: QEMU runs inside it ([`crate::VmBuilder::netns`]) and so do
//! the clients ([`NetNs::command`]). TESTING.md, "Firmware, disks and faults": a SYN flood never reaches the
//! guest through QEMU's user networking, a tap does.
//!
//! Creating one needs root and `ip`; [`NetNs::create`] says why it cannot (the test then skips with a note).
//! Dropping it deletes the namespace, which removes the tap and its qdiscs with it.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The host side's address on the tap (the namespace's end of the link).
pub const HOST_ADDR: &str = "10.77.13.1";

/// The guest's static address (kernel option `ip=10.77.13.2/24`, see [`NetNs::guest_ip_option`]).
pub const GUEST_ADDR: &str = "10.77.13.2";

/// The tap's name inside the namespace (names are per namespace, so every test may use it).
pub const TAP: &str = "ztap0";

/// A network namespace with a configured tap; deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates namespace `zt<pid>-<n>` with loopback up and tap [`TAP`] at [`HOST_ADDR`]/24, up. Errors (the
    /// reason to print when skipping): not root, `ip` missing, or an `ip` command failing (its stderr).
    pub fn create() -> Result<NetNs, String> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        if !is_root() {
            return Err("needs root (network namespaces and taps)".into());
        }
        let name = format!("zt{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.ip(&["tuntap", "add", "dev", TAP, "mode", "tap"])?;
        ns.ip(&["addr", "add", &format!("{HOST_ADDR}/24"), "dev", TAP])?;
        ns.ip(&["link", "set", TAP, "up"])?;
        Ok(ns)
    }

    /// [`NetNs::create`] for test `test`, after checking the host programs it runs there (`tools`, e.g.
    /// `["tc", "python3"]`); `None`, with `SKIP test: why` printed through [`crate::note`], when it cannot.
    pub fn for_test(test: &str, tools: &[&str]) -> Option<NetNs> {
        let missing = tools.iter().find(|tool| {
            !Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
        });
        let ns = match missing {
            Some(tool) => Err(format!("`{tool}` is not installed (`images setup` installs it)")),
            None => NetNs::create(),
        };
        ns.map_err(|why| crate::note(format_args!("SKIP {test}: {why}"))).ok()
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kernel option value that gives the guest [`GUEST_ADDR`] on the tap's subnet: `ip=10.77.13.2/24`.
    pub fn guest_ip_option() -> (&'static str, String) {
        ("ip", format!("{GUEST_ADDR}/24"))
    }

    /// `program` run inside the namespace (`ip netns exec NAME program`); add arguments to it.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `ip -n NAME args...`. Errors: `ip`'s stderr.
    pub fn ip(&self, args: &[&str]) -> Result<(), String> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// `tc qdisc add dev TAP root netem ARGS` inside the namespace (e.g. `["loss", "10%"]`): packets the host
    /// sends to the guest are dropped, reordered, duplicated. Errors: `tc` missing or refusing (its stderr).
    pub fn netem(&self, args: &[&str]) -> Result<(), String> {
        let mut c = self.command("tc");
        c.args(["qdisc", "add", "dev", TAP, "root", "netem"]).args(args);
        run(&mut c)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(e) = run(Command::new("ip").args(["netns", "del", &self.name])) {
            crate::note(format_args!("deleting network namespace {}: {e}", self.name));
        }
    }
}

/// Whether this process runs as root (`id -u` prints 0).
pub fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Runs `cmd`; errors with the command and its stderr.
fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?}: {} {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}
