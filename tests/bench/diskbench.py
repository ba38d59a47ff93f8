#!/usr/bin/env python3
"""diskbench.py - storage figures: Zirvium diskbench versus Linux 6.1 (busybox dd + zbio) on the same QEMU disk,
on each disk controller clouds attach: virtio-blk, NVMe and virtio-scsi.

usage: python3 tests/bench/diskbench.py [--quick] [--out DIR] [--runs N] [--mb N] [--kvm-mb N] [--rand-ms N]
                                        [--machine q35|microvm] [--no-kvm] [--buses virtio-blk,nvme,virtio-scsi]

Run from anywhere (paths are relative to this file's repository); needs root only for `apt-get download` on the
first run. Steps:
  1. build the Zirvium diskbench image (`cargo run -q -p images -- build diskbench`);
  2. build a Linux guest from Debian bookworm packages with bench.py's helpers (linux-image-6.1.0-*-amd64 with
     virtio_blk, nvme, virtio_scsi + sd_mod, fat, vfat and NLS modules, busybox-static; cached under
     target/bench-cache/) plus `zbio` (tests/bench/zbio.c, `gcc -static`), whose /init runs the same phases as
     diskbench on the disk the bus gives it (/dev/vda, /dev/nvme0n1, /dev/sda);
  3. for each bus, and for Zirvium/KVM (when /dev/kvm opens), Zirvium/TCG and Linux/TCG, each mode (raw device,
     file on FAT) and run: a fresh disk image (raw: 128 MiB sparse; FAT: `images disk create --size 128M`), one
     boot on the same QEMU command line shape (`-drive if=none,format=raw,cache=writeback` + the bus's devices,
     as `images run --disk-bus` attaches them), the figures read from the serial console;
  4. print one table with Zirvium/Linux ratios (both TCG) and write it as Markdown and JSON into --out.

Every wait is bounded; every QEMU started here is stopped by its PID in `finally` blocks. Python 3.11 standard
library only. See tests/bench/README.md, "diskbench.py".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as hb  # noqa: E402  (bench.py's helpers: packages, cpio, QEMU process handling, tables)

REPO = hb.REPO
CACHE = REPO / "target" / "bench-cache"
QEMU = hb.QEMU
DISK_BYTES = 128 << 20
# Load order. virtio_mmio is there for --machine microvm; NVMe and sd_mod need T10 protection information
# (t10-pi and its CRCs; the *_generic ones give the crypto API an implementation without modprobe); fat before
# vfat; vfat needs the code page (437) and the I/O charset (CONFIG_FAT_DEFAULT_IOCHARSET="ascii") as NLS tables.
# Dependencies from each module's `depends=` in linux-image-6.1.0-*-amd64 (the .deb has no modules.dep).
T10_MODULES = ["crct10dif_common", "crct10dif_generic", "crc-t10dif", "crc64", "crc64_rocksoft_generic",
               "crc64-rocksoft", "t10-pi"]
STORAGE_MODULES = (hb.VIRTIO_MODULES + ["virtio_blk"] + T10_MODULES + ["nvme-core", "nvme", "scsi_common", "scsi_mod",
                   "sd_mod", "virtio_scsi", "fat", "vfat", "nls_cp437", "nls_ascii"])
# The guest's disk per bus: device node, the module that must be there, and the QEMU devices (`images run
# --disk-bus`, images/src/qemu/args.rs) per machine.
BUSES = {
    "virtio-blk": ("vda", "virtio_blk"),
    "nvme": ("nvme0n1", "nvme"),
    "virtio-scsi": ("sda", "virtio_scsi"),
}
BUS_LABELS = {"virtio-blk": "virtio-blk", "nvme": "NVMe", "virtio-scsi": "virtio-scsi"}


def bus_devices(bus: str, machine: str) -> list[str]:
    """QEMU's device arguments for drive d0 on `bus`, as `images run --disk-bus` writes them."""
    mmio = machine == "microvm"
    if bus == "virtio-blk":
        return ["-device", f"{'virtio-blk-device' if mmio else 'virtio-blk-pci'},drive=d0"]
    if bus == "nvme":
        return ["-device", "nvme,serial=zirvium-d0,drive=d0"]
    return ["-device", f"{'virtio-scsi-device' if mmio else 'virtio-scsi-pci'},id=scsi0",
            "-device", "scsi-hd,drive=d0,bus=scsi0.0,channel=0,scsi-id=0,lun=0"]
MODES = ("raw", "vfs")
RAW_OFFSET = 1 << 20  # diskbench's REGION_OFFSET
ZIRVIUM_RAW_RE = re.compile(
    r"diskbench: seq-write (\S+) MB/s seq-read ([\d.]+) MB/s rand-read-4k ([\d.]+) IOPS \(qd (\d+)\)"
)
ZIRVIUM_VFS_RE = re.compile(
    r"diskbench: vfs seq-write ([\d.]+) MB/s seq-read ([\d.]+) MB/s rand-read-4k ([\d.]+) IOPS \(qd (\d+)\)"
)
ZBRES_WRITE_RE = re.compile(r"zbres seq-write bytes=(\d+) ns=(\d+) status=(\d+)")
ZBRES_READ_RE = re.compile(r"zbres seq-read bytes=(\d+) ns=(\d+) status=(\d+)")
ZBRES_RAND_RE = re.compile(r"zbres rand-read reads=(\d+) ns=(\d+) qd=(\d+) io=(\d+)")
LINUX_DONE = "zbench: done"
FAILURE_RE = re.compile(r"zbench: error|diskbench: (?!vfs |seq-write |region |virtio|vfs file)|panic at |EXCEPTION ")

INIT_SCRIPT = hb.init_script(
    "# diskbench.py /init: load virtio-blk (and FAT), then the phases of Zirvium's diskbench with busybox dd and zbio.",
    "MODE=raw; MB=32; MS=3000; QD=8; DEV=vda;",
    [
        'zb_dev=*) DEV="${w#zb_dev=}" ;;',
        'zb_mode=*) MODE="${w#zb_mode=}" ;;',
        'zb_mb=*) MB="${w#zb_mb=}" ;;',
        'zb_ms=*) MS="${w#zb_ms=}" ;;',
        'zb_qd=*) QD="${w#zb_qd=}" ;;',
    ],
    r"""i=0
while [ ! -b /dev/$DEV ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done
if [ ! -b /dev/$DEV ]; then echo "zbench: error: no /dev/$DEV after 10 s"; reboot -f; fi
q=/sys/block/$DEV/queue
echo "zbench: /dev/$DEV $(cat /sys/block/$DEV/size) sectors, max_sectors_kb $(cat $q/max_sectors_kb), scheduler $(cat $q/scheduler), write cache $(cat $q/write_cache)"
BYTES=$((MB * 1048576))
case "$MODE" in
  raw)
    zbio time seq-write $BYTES dd if=/dev/zero of=/dev/$DEV bs=1M count=$MB seek=1 oflag=direct conv=fsync
    zbio time seq-read $BYTES dd if=/dev/$DEV of=/dev/null bs=1M count=$MB skip=1 iflag=direct
    zbio rand rand-read /dev/$DEV @RAW_OFFSET@ $BYTES 4096 $QD $MS
    ;;
  vfs)
    if mount -t vfat /dev/$DEV /data; then
      zbio time seq-write $BYTES dd if=/dev/zero of=/data/diskbench.bin bs=1M count=$MB oflag=direct conv=fsync
      zbio time seq-read $BYTES dd if=/data/diskbench.bin of=/dev/null bs=1M iflag=direct
      zbio rand rand-read /data/diskbench.bin 0 $BYTES 4096 1 $MS
      umount /data
    else
      echo "zbench: error: mount -t vfat /dev/$DEV failed"
    fi
    ;;
  *) echo "zbench: error: unknown zb_mode=$MODE" ;;
esac
echo "@DONE@"
reboot -f
""",
)


@dataclass
class DiskConfig:
    """One guest on one disk image; `argv` has the shape `bench.Guest` calls (`argv(mem_mib, attachment)`)."""

    key: str  # zirvium-kvm, zirvium-tcg, linux-tcg
    label: str
    os: str  # zirvium | linux
    accel: str
    machine: str  # q35 | microvm
    kernel: Path
    mb: int
    rand_ms: int
    qd: int
    timeout: float
    initrd: Path | None = None
    mode: str = "raw"
    bus: str = "virtio-blk"
    disk: Path | None = None
    notes: list[str] = field(default_factory=list)

    def argv(self, mem_mib: int, _att: object) -> list[str]:
        """The flags of `images run` (images/src/qemu/args.rs `qemu_args`) without a NIC, the disk with an explicit
        `cache=writeback` (QEMU's default) on `bus`; only -kernel/-initrd/-append differ between the guests."""
        a = hb.qemu_common(self.machine, self.accel, mem_mib)
        drive = "if=none,id=d0,format=raw,cache=writeback,file=" + str(self.disk).replace(",", ",,")
        a += ["-drive", drive] + bus_devices(self.bus, self.machine) + ["-kernel", str(self.kernel)]
        if self.os == "zirvium":
            words = ["--", f"mb={self.mb}", f"rand-ms={self.rand_ms}"]
            words += ["mode=vfs"] if self.mode == "vfs" else [f"qd={self.qd}"]
        else:
            a += ["-initrd", str(self.initrd)]
            words = ["console=ttyS0", "quiet", "panic=-1", f"zb_dev={BUSES[self.bus][0]}", f"zb_mode={self.mode}",
                     f"zb_mb={self.mb}", f"zb_ms={self.rand_ms}", f"zb_qd={self.qd}"]
        return a + ["-append", " ".join(words)]


class NoNetwork:
    """The network `bench.Guest` attaches: none (`attach()` gives an attachment whose `release()` does nothing)."""

    def attach(self) -> "NoNetwork":
        return self

    def release(self) -> None:
        pass


def build_zbio() -> Path:
    """tests/bench/zbio.c built with `gcc -static -O2 -pthread`, cached by the source's hash."""
    src = Path(__file__).resolve().parent / "zbio.c"
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
    out = CACHE / f"zbio-{digest}"
    if not out.is_file():
        if shutil.which("gcc") is None:
            raise hb.BenchError("`gcc` not found: apt-get install gcc libc6-dev (zbio is built with gcc -static)")
        CACHE.mkdir(parents=True, exist_ok=True)
        hb.log(f"building {out.name}: gcc -static -O2 -pthread {src}")
        hb.run(["gcc", "-static", "-O2", "-Wall", "-pthread", "-o", str(out), str(src)], timeout=300)
    return out


def build_linux_initramfs(parts: hb.LinuxParts, zbio: Path, dest: Path) -> Path:
    """initramfs (cpio newc, gzip) with busybox, zbio, the storage modules and INIT_SCRIPT as /init."""
    c = hb.initramfs_base(parts, ["bin", "dev", "proc", "sys", "tmp", "data", "lib", "lib/modules"])
    c.file("bin/zbio", zbio.read_bytes(), 0o755)
    init = INIT_SCRIPT.replace("@MODULES@", " ".join(parts.modules)).replace("@DONE@", LINUX_DONE)
    c.file("init", init.replace("@RAW_OFFSET@", str(RAW_OFFSET)).encode(), 0o755)
    return hb.write_initramfs(c, dest)


def make_disk(path: Path, mode: str) -> Path:
    """A fresh image: raw mode a sparse file of DISK_BYTES; vfs mode `images disk create --size 128M` (FAT16, 16 KiB clusters)."""
    path.unlink(missing_ok=True)
    if mode == "raw":
        with open(path, "wb") as f:
            f.truncate(DISK_BYTES)
    else:
        hb.run(["cargo", "run", "-q", "-p", "images", "--", "disk", "create", str(path), "--size",
                f"{DISK_BYTES >> 20}M", "--force"], timeout=600, cwd=REPO)
    return path


def wait_line(g: hb.Guest, rx: re.Pattern | str, deadline: float) -> re.Match | None:
    """The first serial line matching `rx`, polling until `deadline` (time.monotonic()) or QEMU's exit."""
    while True:
        hit = g.serial_find(rx)
        if hit is not None:
            return hit[1]
        if not g.alive():
            time.sleep(0.2)  # let the reader thread take the last lines
            hit = g.serial_find(rx)
            return hit[1] if hit else None
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def load_average() -> str:
    """The host's load averages from /proc/loadavg, e.g. "3.10 2.95 2.80"."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def mb_s(nbytes: int, ns: int) -> float:
    return nbytes * 1000.0 / max(ns, 1)  # 10^6 bytes per second


def measure(cfg: DiskConfig, run_no: int, logs: Path, work: Path) -> dict:
    """One boot of `cfg` on a fresh disk: {"write_mb_s", "read_mb_s", "rand_iops", "qd", ...} or {"error"}."""
    cfg.disk = make_disk(work / f"{cfg.key}-{cfg.bus}-{cfg.mode}.img", cfg.mode)
    name = f"{cfg.key}-{cfg.bus}-{cfg.mode}-run{run_no}"
    r: dict = {"run": run_no}
    t0 = time.monotonic()
    with hb.Guest(cfg, 256, NoNetwork(), logs / f"{name}.log") as g:
        r["qemu_cmd"] = hb.shell_line(g.argv)
        deadline = time.monotonic() + cfg.timeout
        if cfg.os == "zirvium":
            m = wait_line(g, ZIRVIUM_VFS_RE if cfg.mode == "vfs" else ZIRVIUM_RAW_RE, deadline)
            if m:
                write = None if m.group(1) == "n/a" else float(m.group(1))
                r.update(write_mb_s=write, read_mb_s=float(m.group(2)), rand_iops=float(m.group(3)), qd=int(m.group(4)))
                # The guest exits by itself (isa-debug-exit): status 0 is QEMU status 1.
                end = time.monotonic() + 30
                while g.alive() and time.monotonic() < end:
                    time.sleep(0.05)
                if g.proc.poll() != 1:
                    r["error"] = f"diskbench ended with QEMU status {g.proc.poll()} (guest status 0 is QEMU 1)"
        else:
            m = wait_line(g, re.escape(LINUX_DONE), deadline)
            if m:
                w, rd, rr = (g.serial_find(rx) for rx in (ZBRES_WRITE_RE, ZBRES_READ_RE, ZBRES_RAND_RE))
                if w and rd and rr:
                    (_, w), (_, rd), (_, rr) = w, rd, rr
                    if w.group(3) != "0" or rd.group(3) != "0":
                        r["error"] = f"dd failed: {w.group(0)} / {rd.group(0)}"
                    r.update(write_mb_s=mb_s(int(w.group(1)), int(w.group(2))),
                             read_mb_s=mb_s(int(rd.group(1)), int(rd.group(2))),
                             rand_iops=int(rr.group(1)) * 1e9 / max(int(rr.group(2)), 1), qd=int(rr.group(3)))
                else:
                    r["error"] = "the guest finished without all three zbres lines"
            info = g.serial_find(r"zbench: /dev/\S+ .*")
            r["linux_disk"] = info[1].group(0) if info else None
        if m is None:
            bad = g.serial_find(FAILURE_RE)
            why = f"`{bad[1].string.strip()}`" if bad else (
                f"QEMU exited with status {g.proc.poll()}" if not g.alive() else f"no result within {cfg.timeout:.0f} s")
            r["error"] = f"no result: {why}"
    r["wall_s"] = round(time.monotonic() - t0, 2)
    cfg.disk.unlink(missing_ok=True)
    if "error" in r:
        hb.log(f"  {cfg.label} {cfg.bus} {cfg.mode} run {run_no}: FAILED: {r['error']} (log {logs / (name + '.log')})")
    else:
        w = "n/a" if r["write_mb_s"] is None else f"{r['write_mb_s']:.1f}"
        hb.log(f"  {cfg.label} {cfg.bus} {cfg.mode} run {run_no}: write {w} MB/s, read {r['read_mb_s']:.1f} MB/s, "
               f"4k random {r['rand_iops']:.0f} IOPS (qd {r['qd']}), {r['wall_s']:.1f} s")
    return r


def summarize(runs: list[dict]) -> dict:
    ok = [r for r in runs if "error" not in r]
    return {
        "runs": len(runs),
        "ok_runs": len(ok),
        "write_mb_s": hb.med([r["write_mb_s"] for r in ok]),
        "read_mb_s": hb.med([r["read_mb_s"] for r in ok]),
        "rand_iops": hb.med([r["rand_iops"] for r in ok]),
        "qd": ok[0]["qd"] if ok else None,
        "per_run": runs,
    }


def figure(v: float) -> str:
    """A rate for the table: whole numbers from 100, one decimal from 1, three significant digits below."""
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}" if v >= 1 else f"{v:.3g}"


def build_table(results: dict, labels: dict, size_mb: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows, per bus and mode; the last column compares Zirvium/TCG with Linux/TCG."""
    cols = [k for k in ("zirvium-kvm", "zirvium-tcg", "linux-tcg") if any(k in r for r in results.values())]
    head = ["Figure"] + [f"{labels[k]} ({size_mb[k]} MiB)" for k in cols] + ["Zirvium/Linux (both TCG)"]
    rows = []
    for bus, per_key in results.items():
        for mode, what in (("raw", "raw device"), ("vfs", "file on FAT (VFS)")):
            summ = {k: per_key[k][mode] for k in cols if k in per_key and mode in per_key[k]}
            if not summ:
                continue
            qd = next((v["qd"] for v in summ.values() if v["qd"]), None)
            for metric, name in (
                ("write_mb_s", "sequential write, MB/s"),
                ("read_mb_s", "sequential read, MB/s"),
                ("rand_iops", f"4 KiB random read, IOPS (qd {qd})"),
            ):
                vals = {k: (summ[k][metric] if k in summ else None) for k in cols}
                cells = [f"{BUS_LABELS[bus]}, {what}: {name}"]
                cells += [figure(v) if v is not None else "—" for v in vals.values()]
                cells.append(hb.fmt_ratio(vals.get("zirvium-tcg"), vals.get("linux-tcg"), True, "faster", "slower"))
                rows.append(cells)
    return head, rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 run per configuration and mode, --rand-ms 1000")
    ap.add_argument("--out", default=str(REPO / "target" / "bench" / "disk"), help="results [target/bench/disk]")
    ap.add_argument("--runs", type=int, default=3, help="boots per TCG configuration and mode [3]")
    ap.add_argument("--kvm-runs", type=int, default=1, help="boots per mode for Zirvium/KVM [1]")
    ap.add_argument("--mb", type=int, default=32, help="MiB written and read under TCG [32]")
    ap.add_argument("--kvm-mb", type=int, default=4,
                    help="MiB written and read by Zirvium/KVM [4]: this nested KVM runs memory-heavy guest code slowly")
    ap.add_argument("--rand-ms", type=int, default=3000, help="duration of the random-read phase, ms [3000]")
    ap.add_argument("--qd", type=int, default=8, help="random reads in flight on the raw device [8]")
    ap.add_argument("--machine", choices=["q35", "microvm"], default="q35", help="QEMU machine for all guests [q35]")
    ap.add_argument("--no-kvm", action="store_true", help="skip Zirvium/KVM")
    ap.add_argument("--buses", default=",".join(BUSES),
                    help="disk controllers, comma-separated [virtio-blk,nvme,virtio-scsi]")
    a = ap.parse_args()
    buses = [b for b in a.buses.split(",") if b]
    if not buses or any(b not in BUSES for b in buses):
        raise hb.BenchError(f"--buses {a.buses}: expected a comma-separated subset of {', '.join(BUSES)}")
    if a.machine == "microvm" and "nvme" in buses:
        raise hb.BenchError("--buses nvme needs PCI: microvm has none; use --machine q35 or leave nvme out")
    runs, rand_ms = (1, min(a.rand_ms, 1000)) if a.quick else (a.runs, a.rand_ms)
    if runs < 1 or a.kvm_runs < 1 or a.mb < 1 or a.kvm_mb < 1 or not 1 <= a.qd <= 64 or a.mb + 2 > DISK_BYTES >> 20:
        raise hb.BenchError("--runs, --kvm-runs, --mb and --kvm-mb must be >= 1 (--mb at most 126), --qd 1..64")
    out = Path(a.out).resolve()
    logs, work = out / "logs", out / "disks"
    logs.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    for tool in (QEMU, "apt-get", "apt-cache", "dpkg-deb", "cargo"):
        if shutil.which(tool) is None:
            raise hb.BenchError(f"`{tool}` not found on PATH (QEMU: see TESTING.md)")
    started = time.time()
    load_start = load_average()

    elf = hb.build_zirvium("diskbench")
    parts = hb.prepare_linux(CACHE, STORAGE_MODULES, "-disks")
    zbio = build_zbio()
    initrd = build_linux_initramfs(parts, zbio, CACHE / "linux-disk-initramfs.cpio.gz")
    hb.log(f"initramfs {initrd} ({initrd.stat().st_size:,} B): busybox, zbio, modules {', '.join(parts.modules)}")
    needed = [BUSES[b][1] for b in buses] + ["vfat"]
    missing = [m for m in needed if m not in parts.modules and m not in parts.builtin]
    if missing:
        raise hb.BenchError(f"{parts.package} has no {', '.join(missing)}: the Linux guest cannot reach the disk")
    if a.machine == "microvm" and not parts.mmio_cmdline:
        raise hb.BenchError(
            f"{parts.package} lacks CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES: on microvm,acpi=off Linux cannot find the "
            "virtio-mmio disk QEMU lists as virtio_mmio.device=; use --machine q35"
        )
    kvm_ok, kvm_why = hb.kvm_status()
    hb.log(f"machine: {a.machine}; KVM: {kvm_why}")
    notes = [
        f"Machine `{a.machine}` for every guest"
        + (" (the Debian kernel lacks CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES, so it cannot use microvm,acpi=off)."
           if a.machine == "q35" else "."),
        "Common QEMU flags: `-cpu qemu64 -m 256M -smp 1 -display none -nodefaults -no-reboot`, serial on stdio, "
        "`isa-debug-exit`, no NIC, `-drive if=none,id=d0,format=raw,cache=writeback,file=IMG` + per bus: "
        + "; ".join(f"{BUS_LABELS[b]} `{' '.join(bus_devices(b, a.machine)[1::2])}`" for b in buses)
        + "; only -kernel/-initrd/-append differ. A fresh 128 MiB image per boot (raw: sparse file; FAT: "
        "`images disk create --size 128M`, FAT16 with 16 KiB clusters).",
        "Linux/KVM is not measured: this machine's nested KVM fails on SSE/xgetbv/cmpxchg16b, which Linux uses "
        "(TESTING.md), so the ratio compares both systems under TCG.",
    ]
    configs = []
    if kvm_ok and not a.no_kvm:
        configs.append(DiskConfig("zirvium-kvm", "Zirvium/KVM", "zirvium", "kvm", a.machine, elf, a.kvm_mb, rand_ms,
                                  a.qd, timeout=1200))
        notes.append(f"Zirvium/KVM moves {a.kvm_mb} MiB instead of {a.mb}: memory-touching guest code runs very "
                     "slowly under this nested, software-assisted KVM (TESTING.md); not part of the ratio.")
    elif not kvm_ok:
        notes.append(f"Zirvium/KVM is not measured: {kvm_why}.")
    configs.append(DiskConfig("zirvium-tcg", "Zirvium/TCG", "zirvium", "tcg", a.machine, elf, a.mb, rand_ms, a.qd,
                              timeout=600))
    configs.append(DiskConfig("linux-tcg", "Linux/TCG", "linux", "tcg", a.machine, parts.vmlinuz, a.mb, rand_ms, a.qd,
                              timeout=600, initrd=initrd))

    results: dict = {}
    cmds: dict = {}
    linux_disk: dict = {}
    for bus in buses:
        results[bus] = {}
        for cfg in configs:
            cfg.bus = bus
            results[bus][cfg.key] = {}
            for mode in MODES:
                cfg.mode = mode
                n = 1 if a.quick else (a.kvm_runs if cfg.accel == "kvm" else runs)
                hb.log(f"== {cfg.label} {bus} {mode}: {n} boot(s), {cfg.mb} MiB, random reads {rand_ms} ms")
                rs = [measure(cfg, i + 1, logs, work) for i in range(n)]
                results[bus][cfg.key][mode] = summarize(rs)
                cmds[f"{cfg.key} {bus} {mode}"] = rs[0].get("qemu_cmd")
                seen = next((r.get("linux_disk") for r in rs if r.get("linux_disk")), None)
                if seen:
                    linux_disk.setdefault(bus, seen)
    labels = {c.key: c.label for c in configs}
    size_mb = {c.key: c.mb for c in configs}
    head, rows = build_table(results, labels, size_mb)
    elapsed = time.time() - started
    load = load_average()
    notes.append(f"Host load average (1, 5, 15 min): {load_start} at the start, {load} at the end; 2 cores shared "
                 "with other work, so TCG figures move with it.")
    hb.print_report(head, rows, notes)
    for bus, seen in linux_disk.items():
        print(f"- Linux saw ({bus}): {seen}")
    for k, c in cmds.items():
        print(f"- {k}: {c}")
    print(f"- total time {elapsed:.0f} s; results in {out}/results.md and results.json; serial logs in {logs}/")

    title = f"Storage: Zirvium diskbench vs Linux + busybox dd / zbio ({'--quick' if a.quick else f'{runs} runs'})"
    md = hb.markdown_report(title, head, rows, notes)
    md += [f"- Linux saw ({bus}): `{seen}`" for bus, seen in linux_disk.items()]
    md += [f"- {k}: `{c}`" for k, c in cmds.items()]
    md.append(f"- Linux guest: {parts.package} {parts.version}, busybox-static {parts.busybox_version}, "
              f"zbio from tests/bench/zbio.c ({zbio.name}); modules insmod-ed: {', '.join(parts.modules)}.")
    md.append(f"- Medians over the runs that finished; total run time {elapsed:.0f} s. See tests/bench/README.md.")
    (out / "results.md").write_text("\n".join(md) + "\n")
    (out / "results.json").write_text(json.dumps(
        {"runs": runs, "mb": a.mb, "kvm_mb": a.kvm_mb, "rand_ms": rand_ms, "qd": a.qd, "machine": a.machine,
         "buses": buses, "load_average": {"start": load_start, "end": load}, "notes": notes, "linux_disk": linux_disk, "qemu_cmds": cmds,
         "elapsed_s": round(elapsed, 1), "results": results}, indent=1, default=str) + "\n")
    failed = [f"{k} {b} {m}" for b, per in results.items() for k, v in per.items() for m, s in v.items()
              if s["ok_runs"] == 0]
    if failed:
        print(f"diskbench: no successful run for: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    hb.run_main(main, "diskbench")
