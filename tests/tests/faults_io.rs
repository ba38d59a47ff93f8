//! Real I/O faults below the drivers: `kv`'s disk read through QEMU's `blkdebug` block driver, which fails one
//! read, one write or one flush with EIO once the store is in use (`[set-state]` rules count flushes to arm an
//! `[inject-error]` rule, `once = "on"`; QEMU `docs/devel/blkdebug.rst`). The request that meets the error must
//! be answered 5xx; kv keeps serving; every key it acknowledged reads back intact, during the run and after a
//! reboot on the same image without blkdebug; a key whose PUT failed is absent or whole, never torn; and
//! `fsck.fat -n` finds nothing to fix (the dirty bit aside: the VM is killed). On virtio-blk (microvm) and NVMe
//! (q35), all under TCG.

use std::path::Path;
use std::time::Duration;
use zirvium_tests::disk::{bytes, fresh_disk, fsck_after_power_loss, workdir, Bus, NVME, VIRTIO_BLK};
use zirvium_tests::http::{get, io, request, Response};
use zirvium_tests::{Accel, Protocol, Vm, VmBuilder, VmError};

/// Flushes that pass before the fault is armed: kv's first PUTs (two flushes each: the temporary file's
/// `sync_all`, then the directory's sync) go through untouched.
const ARM_AFTER_FLUSHES: u32 = 4;

/// PUTs in a run; each is followed by a GET of an earlier key (its value is out of the 256 KiB sector cache, so
/// the GET reads the device).
const PUTS: usize = 10;

/// Value size, bytes: larger than kv's sector cache.
const VALUE_BYTES: usize = 300 * 1024;

fn value(i: usize) -> Vec<u8> {
    bytes(1000 + i as u64, VALUE_BYTES)
}

/// Writes that fail once a write fault is armed.
const FAILED_WRITES: u32 = 3;

/// The blkdebug rules: count `ARM_AFTER_FLUSHES` flushes, then fail the next `event` (`read_aio`,
/// `flush_to_disk`) with EIO, or the next [`FAILED_WRITES`] writes (`write_aio`): the first write after the
/// arming is often a write-back from closing a file, whose error the FAT library only logs (the cache keeps the
/// write and the next sync retries it), so a single failed write need not reach any answer.
fn rules(event: &str) -> String {
    let mut r = String::new();
    let set_state = |r: &mut String, on: &str, state: u32| {
        r.push_str(&format!("[set-state]\nevent = \"{on}\"\nstate = \"{state}\"\nnew_state = \"{}\"\n\n", state + 1));
    };
    for state in 1..=ARM_AFTER_FLUSHES {
        set_state(&mut r, "flush_to_disk", state);
    }
    let (iotype, failures) = match event {
        "read_aio" => ("read", 1),
        "write_aio" => ("write", FAILED_WRITES),
        _ => ("flush", 1),
    };
    for state in ARM_AFTER_FLUSHES + 1..=ARM_AFTER_FLUSHES + failures {
        r.push_str(&format!(
            "[inject-error]\nevent = \"{event}\"\niotype = \"{iotype}\"\nstate = \"{state}\"\nerrno = \"5\"\nonce = \"on\"\n\n"
        ));
        if failures > 1 {
            set_state(&mut r, event, state);
        }
    }
    r
}

/// kv on `bus` with the builder `with` adds the disk to; waits for it to listen.
fn boot_kv(bus: Bus, name: &str, with: impl FnOnce(VmBuilder) -> VmBuilder) -> Result<(Vm, u16), VmError> {
    let b = Vm::builder(name, "kv", Accel::Tcg)
        .machine(bus.machine)
        .disk_bus(bus.bus)
        .mem_mib(128)
        .forward(Protocol::Tcp, 80)
        .timeout(Duration::from_secs(120));
    let vm = with(b).boot()?;
    vm.wait_for("kv listening")?;
    vm.line_with(bus.disk)?;
    let port = vm.host_port(Protocol::Tcp, 80)?;
    Ok((vm, port))
}

fn put(port: u16, key: &str, body: &[u8]) -> std::io::Result<Response> {
    request(port, "PUT", &format!("/kv/{key}"), &[], body)
}

/// Checks that GET `key` answered with `r` is `value` (200) — or, when `may_fail`, a 5xx.
fn check_get(vm: &Vm, key: &str, r: &Response, want: &[u8], may_fail: bool) -> Result<bool, VmError> {
    if may_fail && r.status >= 500 {
        return Ok(true);
    }
    vm.ensure(
        r.status == 200 && r.body == want,
        format_args!("GET {key}: {} with {} bytes (want 200 with {} intact bytes)", r.status, r.body.len(), want.len()),
    )?;
    Ok(false)
}

/// One fault run: see the module docs. `event` is the blkdebug event whose I/O fails.
fn survives(event: &str, bus: Bus) -> Result<(), VmError> {
    let name = format!("kv_{event}_fault{}", bus.tag);
    let dir = workdir("faults_io", &name);
    let disk = fresh_disk(&dir, 64 << 20);
    let rules_file = dir.join("blkdebug.cfg");
    std::fs::write(&rules_file, rules(event))
        .map_err(|source| VmError::Io { what: format!("writing {}", rules_file.display()), source })?;
    let (mut acked, mut failed) = (Vec::new(), Vec::new());
    let mut errors = 0;
    {
        let (vm, port) = boot_kv(bus, &format!("{name}_a"), |b| b.disk_blkdebug(&disk, &rules_file))?;
        for i in 0..PUTS {
            let key = format!("k{i}");
            let r = io(&vm, &format!("PUT {key}"), put(port, &key, &value(i)))?;
            match r.status {
                201 | 204 => acked.push(i),
                s if s >= 500 => {
                    errors += 1;
                    failed.push(i);
                }
                s => vm.ensure(false, format_args!("PUT {key}: {s} {}", r.text()))?,
            }
            if let Some(&j) = acked.iter().rev().nth(1) {
                let r = io(&vm, &format!("GET k{j}"), get(port, &format!("/kv/k{j}")))?;
                if check_get(&vm, &format!("k{j}"), &r, &value(j), true)? {
                    errors += 1;
                }
            }
        }
        eprintln!("{name}: {errors} requests answered 5xx; acknowledged {acked:?}, failed PUTs {failed:?}");
        vm.ensure(errors >= 1, format_args!("the {event} fault was never met (no 5xx)"))?;
        vm.line_with("I/O error at sector")?;
        vm.ensure(errors <= 2, format_args!("one injected {event} error gave {errors} failed requests"))?;
        // The fault was one-shot: kv serves on, and everything acknowledged is there.
        let r = io(&vm, "GET /health", get(port, "/health"))?;
        vm.ensure(r.status == 200, format_args!("/health after the fault: {}", r.status))?;
        for &i in &acked {
            let r = io(&vm, &format!("GET k{i}"), get(port, &format!("/kv/k{i}")))?;
            check_get(&vm, &format!("k{i}"), &r, &value(i), false)?;
        }
        let r = io(&vm, "PUT after", put(port, "after", &value(99)))?;
        vm.ensure(r.status == 201, format_args!("PUT after the fault: {} {}", r.status, r.text()))?;
        vm.kill();
    }
    check_disk(&disk)?;
    let (vm, port) = boot_kv(bus, &format!("{name}_b"), |b| b.disk(&disk))?;
    for &i in &acked {
        let r = io(&vm, &format!("GET k{i} after reboot"), get(port, &format!("/kv/k{i}")))?;
        check_get(&vm, &format!("k{i}"), &r, &value(i), false)?;
    }
    for &i in &failed {
        // Not acknowledged: absent, or whole if the error hit after the value was durable.
        let r = io(&vm, &format!("GET k{i} after reboot"), get(port, &format!("/kv/k{i}")))?;
        if r.status != 404 {
            check_get(&vm, &format!("k{i}"), &r, &value(i), false)?;
        }
    }
    let r = io(&vm, "GET after", get(port, "/kv/after"))?;
    check_get(&vm, "after", &r, &value(99), false)?;
    vm.kill();
    check_disk(&disk)
}

fn check_disk(disk: &Path) -> Result<(), VmError> {
    fsck_after_power_loss(disk).map_err(|e| VmError::Io { what: e, source: std::io::Error::other("fsck") })
}

#[test]
fn kv_write_error_tcg() -> Result<(), VmError> {
    survives("write_aio", VIRTIO_BLK)
}

#[test]
fn kv_read_error_tcg() -> Result<(), VmError> {
    survives("read_aio", VIRTIO_BLK)
}

#[test]
fn kv_flush_error_tcg() -> Result<(), VmError> {
    survives("flush_to_disk", VIRTIO_BLK)
}

#[test]
fn kv_write_error_nvme_tcg() -> Result<(), VmError> {
    survives("write_aio", NVME)
}

#[test]
fn kv_read_error_nvme_tcg() -> Result<(), VmError> {
    survives("read_aio", NVME)
}

#[test]
fn kv_flush_error_nvme_tcg() -> Result<(), VmError> {
    survives("flush_to_disk", NVME)
}

#[test]
fn rules_arm_after_the_flushes() {
    let r = rules("read_aio");
    assert_eq!(r.matches("[set-state]").count(), ARM_AFTER_FLUSHES as usize);
    assert!(r.ends_with("event = \"read_aio\"\niotype = \"read\"\nstate = \"5\"\nerrno = \"5\"\nonce = \"on\"\n\n"));
    let w = rules("write_aio");
    assert_eq!(w.matches("[inject-error]").count(), FAILED_WRITES as usize);
    assert!(w.ends_with("[set-state]\nevent = \"write_aio\"\nstate = \"7\"\nnew_state = \"8\"\n\n"));
    assert!(rules("flush_to_disk").contains("iotype = \"flush\"\nstate = \"5\"\nerrno = \"5\"\n"));
}
