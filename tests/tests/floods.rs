//! Floods and slow clients against `httpd` on a tap in a network namespace of the test's own
//! ([`zirvium_tests::netns`]): raw SYNs, a connection flood past the connection and socket limits, 1,000
//! slowloris clients (whose heads the server's header deadline must end), random bytes, a 100 MB upload to a
//! route with a 1 MiB body limit, and half-open connections whose client vanished. Each flood is bounded in count
//! and time (`tests/floods/flood.py`, run inside the namespace); after each, `/health` must answer within 1 s and
//! the heap in use (`/health` memory: total − free − ballooned) must come back within 10 % of its value before
//! the floods (taken after a warm-up burst, see the test). Figures go to stderr as JSON lines.
//!
//! Needs root, `ip`, `tc` and python3; skips with a note otherwise. TCG, so the result does not depend on KVM.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use zirvium_tests::netns::{NetNs, GUEST_ADDR};
use zirvium_tests::{note, Accel, Vm, VmError};

/// The flood script (standard-library Python).
fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("floods").join("flood.py")
}

/// Runs `flood.py GUEST 80 ARGS...` inside `ns`; returns its JSON document. Errors carry the console.
fn flood(vm: &Vm, ns: &NetNs, args: &[&str]) -> Result<serde_json::Value, VmError> {
    let out = ns
        .command("python3")
        .arg(script())
        .args([GUEST_ADDR, "80"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| VmError::Io { what: "running python3 in the namespace".into(), source })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let doc = serde_json::from_str(text.lines().last().unwrap_or("")).ok().filter(|_| out.status.success());
    vm.ensure(
        doc.is_some(),
        format_args!(
            "flood.py {args:?}: {} stdout {text:?} stderr {:?}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    )?;
    Ok(doc.unwrap_or_default())
}

#[test]
fn floods_leave_httpd_serving_tcg() -> Result<(), VmError> {
    let test = "floods_leave_httpd_serving_tcg";
    let Some(ns) = NetNs::for_test(test, &["ip", "tc", "python3"]) else { return Ok(()) };
    let vm = Vm::builder(test, "httpd", Accel::Tcg)
        .netns(&ns)
        .mem_mib(128)
        // A header deadline shorter than the 15 s slowloris flood: the server must end those connections itself.
        .args(["idle_timeout_ms=5000", "header_timeout_ms=8000"])
        .timeout(Duration::from_secs(120))
        .boot()?;
    vm.wait_for("httpd listening")?;
    // Warm up, then the baseline: first-use allocations, and a burst of SYNs that leaves no state but brings the
    // NIC's on-demand buffer pools (at most 2 × 256 frames) to their high-water mark; without it the first flood
    // shows ~0.6 MB more that never grows again.
    flood(&vm, &ns, &["warmup"])?;
    let mut baseline = None;
    for _ in 0..20 {
        let doc = flood(&vm, &ns, &["health"])?;
        baseline = doc["in_use"].as_u64().filter(|_| doc["ok"] == true).or(baseline);
    }
    vm.ensure(baseline.is_some(), "/health never answered before the floods")?;
    let baseline = baseline.unwrap_or_default();
    note(format_args!("{test}: heap in use before the floods: {baseline} bytes"));
    let base = baseline.to_string();
    // Every flood runs and reports its figures; the checks fail the test at the end.
    let mut failures = Vec::new();
    for kind in ["syn", "connections", "slowloris", "garbage", "upload", "halfopen", "syn"] {
        let doc = flood(&vm, &ns, &[kind, &base])?;
        note(format_args!("{test}: {doc}"));
        let ms = doc["health_ms"].as_f64();
        if !ms.is_some_and(|ms| ms < 1000.0) {
            failures.push(format!("after the {kind} flood /health took {ms:?} ms"));
        }
        let after = doc["in_use_after"].as_u64().unwrap_or(u64::MAX);
        if after.abs_diff(baseline) > baseline / 10 {
            failures
                .push(format!("after the {kind} flood the heap in use is {after} bytes, before {baseline} (> 10 %)"));
        }
        if kind == "slowloris" {
            let open = doc["slow_still_open"].as_u64().unwrap_or(u64::MAX);
            let ended =
                doc["slow_answered_408"].as_u64().unwrap_or(0) + doc["slow_closed_by_server"].as_u64().unwrap_or(0);
            if open != 0 || ended == 0 {
                failures.push(format!("slowloris: {open} heads still open past the 8 s header deadline: {doc}"));
            }
        }
        if kind == "upload" {
            let sent = doc["upload_bytes_sent"].as_u64().unwrap_or(u64::MAX);
            if doc["upload_status"] != 413 || sent >= 50_000_000 {
                failures.push(format!("100 MB upload: expected 413 and a close long before the end, got {doc}"));
            }
        }
    }
    vm.ensure(failures.is_empty(), failures.join("; "))?;
    vm.kill();
    Ok(())
}
