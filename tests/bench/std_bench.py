#!/usr/bin/env python3
"""std_bench.py - the same axum program (axum 0.8.9's README example, tests/std-apps/tokio/axum-readme) as a
Zirvium std image and as a static Linux binary in a Debian 6.1 guest, plus Zirvium's no_std httpd, under QEMU TCG.

usage: sudo python3 tests/bench/std_bench.py [--quick] [--out DIR] [--machine auto|q35|microvm] [--skip-mem]

Figures per configuration (all TCG: std code uses SSE, which this machine's nested KVM cannot run): QEMU start ->
first HTTP 200 for `/`, `wrk -t1 -c32` req/s and p99 (medians over the boots), image size, and the smallest `-m`
that serves (bisection). Rows: Zirvium axum (std), Linux axum (musl, static), Zirvium httpd (no_std) — the first
two compare the OS under one program, the first and last what std costs on Zirvium.

Reuses bench.py (same directory) for the Linux guest (Debian kernel, busybox, virtio modules), the QEMU command
line, taps, wrk and the `-m` bisection: every QEMU it starts is stopped by PID and every tap deleted. Python 3.11
standard library only. See tests/bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as b  # noqa: E402

AXUM_APP = "tests/std-apps/tokio/axum-readme"
AXUM_PORT = 3000
AXUM_BODY = b"Hello, World!"
MUSL = "x86_64-unknown-linux-musl"
AXUM_MARKER = "zbench: linux axum ready"


class PortNetwork:
    """bench.Network with the guest's server on `port` instead of 80."""

    def __init__(self, net: b.Network, port: int) -> None:
        self.net, self.port = net, port

    def attach(self) -> b.Attachment:
        att = self.net.attach()
        if att.tap is None:
            att.netdev = att.netdev.replace("-:80", f"-:{self.port}")
        else:
            att.port = self.port
        return att


def build_linux_axum(cache: Path) -> Path:
    """The axum program for Linux: a copy of the crate and its build helper in a workspace without the Hermit
    patches (tokio and socket2 from crates.io as they are), built static with musl."""
    ws = cache / "axum-linux"
    if ws.exists():
        shutil.rmtree(ws)
    # The crate's path dependency `../../upstream` must land inside this workspace: apps/axum-readme, upstream.
    (ws / "ws" / "apps").mkdir(parents=True)
    shutil.copytree(b.REPO / AXUM_APP, ws / "ws" / "apps" / "axum-readme")
    shutil.copytree(b.REPO / "tests/std-apps/upstream", ws / "ws" / "upstream")
    (ws / "ws" / "Cargo.toml").write_text(
        '[workspace]\nresolver = "2"\nmembers = ["apps/axum-readme", "upstream"]\n\n[workspace.package]\nversion = "0.1.0"\n'
        'edition = "2021"\nlicense = "MIT OR Apache-2.0"\npublish = false\n\n[profile.release]\npanic = "abort"\n'
        'codegen-units = 1\nlto = true\n'
    )
    # The same versions as the Zirvium build, where crates.io has them.
    shutil.copy(b.REPO / "tests/std-apps/tokio/Cargo.lock", ws / "ws" / "Cargo.lock")
    b.run(["rustup", "target", "add", MUSL], timeout=600)
    b.log(f"building the Linux axum binary ({MUSL}, static)")
    b.run(["cargo", "build", "--release", "--target", MUSL], timeout=3600, cwd=ws / "ws")
    exe = ws / "ws" / "target" / MUSL / "release" / "axum-readme"
    if not exe.is_file():
        raise b.BenchError(f"{exe} was not built")
    return exe


def linux_axum_initramfs(parts: b.LinuxParts, exe: Path, dest: Path) -> Path:
    """busybox, the virtio modules, the axum binary as /axum-readme, and an /init that configures eth0 like
    bench.py's and then execs it."""
    c = b.initramfs_base(parts, ["bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules", "etc"])
    init = b.init_script(
        "# std_bench /init: mount, load the virtio modules, static address from zb_ip=/zb_gw=, then the axum\n"
        "# program as PID 1.",
        "IP=; GW=;",
        ['zb_ip=*) IP="${w#zb_ip=}" ;;', 'zb_gw=*) GW="${w#zb_gw=}" ;;'],
        "i=0\nwhile [ ! -e /sys/class/net/eth0 ] && [ $i -lt 500 ]; do sleep 0.01; i=$((i+1)); done\n"
        'ip link set lo up\nip addr add "$IP" dev eth0\nip link set eth0 up\nip route add default via "$GW"\n'
        f'echo "{AXUM_MARKER} on ${{IP%/*}}"\nexec /axum-readme\n',
    )
    c.file("init", init.replace("@MODULES@", " ".join(parts.modules)).encode(), 0o755)
    c.file("axum-readme", exe.read_bytes(), 0o755)
    return b.write_initramfs(c, dest)


def measure(cfg: b.Config, net, runs: int, wrk_s: int, skip_mem: bool, logs: Path) -> dict:
    rs = [b.measure_run(cfg, net, i, wrk_s, False, logs) for i in range(runs)]
    ok = [r for r in rs if "ready_s" in r]
    size = cfg.kernel.stat().st_size + (cfg.initrd.stat().st_size if cfg.initrd else 0)
    mem = None
    if ok and not skip_mem:
        b.log(f"{cfg.label}: smallest -m that serves")
        mem = b.min_memory(cfg, net, cfg.boot_timeout, logs)
    return {
        "label": cfg.label,
        "runs": rs,
        "boots_ok": len(ok),
        "ready_s": b.med([r["ready_s"] for r in ok]),
        "rps": b.med([r["wrk"]["rps"] for r in ok]),
        "p99_ms": b.med([r["wrk"]["p99_ms"] for r in ok]),
        "errors": sum(r["wrk"]["errors"] for r in ok),
        "image_bytes": size,
        "min_mem_mib": mem,
        "qemu_cmd": ok[0]["qemu_cmd"] if ok else None,
    }


def table(results: list[dict]) -> list[str]:
    head = ["", "QEMU start -> first 200", "wrk -t1 -c32 req/s", "p99", "wrk errors", "image", "smallest -m"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        fmt = lambda v, f: f.format(v) if v is not None else "n/a"  # noqa: E731
        lines.append("| " + " | ".join([
            r["label"], fmt(r["ready_s"], "{:.2f} s"), fmt(r["rps"], "{:,.0f}"), fmt(r["p99_ms"], "{:.1f} ms"),
            str(r["errors"]), f"{r['image_bytes'] / 1e6:.1f} MB", fmt(r["min_mem_mib"], "{} MiB"),
        ]) + " |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 boots per configuration, wrk -d3s")
    ap.add_argument("--out", type=Path, default=b.REPO / "target" / "bench-std")
    ap.add_argument("--machine", default="auto", choices=["auto", "q35", "microvm"])
    ap.add_argument("--skip-mem", action="store_true", help="skip the smallest -m search")
    ap.add_argument("--user-net", action="store_true", help="QEMU user networking instead of a tap")
    args = ap.parse_args()
    runs, wrk_s = (2, 3) if args.quick else (3, 10)
    cache = b.REPO / "target" / "bench-cache"
    logs = args.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    b.run(["sh", str(b.REPO / "tests/std-apps/tokio/prepare.sh")], timeout=600)
    z_axum = b.build_zirvium(AXUM_APP)
    z_httpd = b.build_zirvium("httpd")
    parts = b.prepare_linux(cache)
    machine, why = b.choose_machine(args.machine, parts)
    b.log(f"machine {machine}: {why}")
    l_exe = build_linux_axum(cache)
    l_initrd = linux_axum_initramfs(parts, l_exe, cache / "axum-initramfs.gz")
    net = b.Network(args.user_net)
    b.log(f"network: {net.why}")
    axum_net = PortNetwork(net, AXUM_PORT)
    configs = [
        (b.Config("zirvium-axum", "Zirvium axum (std, TCG)", "zirvium", "tcg", machine, z_axum), axum_net),
        (b.Config("linux-axum", "Linux 6.1 axum (musl, TCG)", "linux", "tcg", machine, parts.vmlinuz, l_initrd,
                  boot_timeout=120.0), axum_net),
        (b.Config("zirvium-httpd", "Zirvium httpd (no_std, TCG)", "zirvium", "tcg", machine, z_httpd), net),
    ]
    results = []
    for cfg, n in configs:
        b.log(f"{cfg.label}: {runs} boots, wrk {wrk_s} s")
        results.append(measure(cfg, n, runs, wrk_s, args.skip_mem, logs))
    for r in results[:2]:
        bodies = [x.get("body") for x in r["runs"] if "body" in x]
        if bodies and any(body != AXUM_BODY for body in bodies):
            raise b.BenchError(f"{r['label']} answered {bodies[0]!r}, not {AXUM_BODY!r}")
    lines = table(results)
    print("\n".join(lines))
    (args.out / "results.md").write_text(
        "# std_bench: the same axum program on Zirvium and Linux, and Zirvium's no_std httpd\n\n"
        + "\n".join(lines) + f"\n\nmachine {machine}, {net.why}; {runs} boots each, medians; wrk {wrk_s} s.\n"
    )
    for r in results:
        for x in r["runs"]:
            x.pop("body", None)
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    b.log(f"results in {args.out}/results.md and results.json, logs in {logs}")
    return 0


if __name__ == "__main__":
    b.run_main(main, "std_bench.py")
