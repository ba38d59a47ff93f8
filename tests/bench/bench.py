#!/usr/bin/env python3
"""bench.py - Zirvium httpd versus Linux 6.1 + nginx (and + busybox httpd) under QEMU: boot time, small-request
load (keep-alive and Connection: close), bulk transfers (10 MiB down and up, 1 and 8 streams), size, memory, idle
CPU, and Zirvium's size report by crate and symbol.

usage: python3 tests/bench/bench.py [--quick] [--out DIR] [--machine auto|q35|microvm] [--no-kvm]

Run as root from anywhere (paths are taken relative to this file's repository). Steps:
  1. build the Zirvium httpd image (`cargo run -q -p images -- build httpd`);
  2. build a Linux guest from Debian bookworm packages (linux-image-6.1.0-*-amd64, busybox-static, nginx and the
     libraries ldd names for it), cached under target/bench-cache/, with two initramfs variants that serve the
     same `/` bytes as Zirvium: `busybox httpd`, and nginx (1 worker, sendfile, keep-alive; checked with
     `nginx -t` in a chroot of the tree first), which also serves /bytes/10485760 (the same pattern Zirvium
     generates) and discards POST /upload bodies;
  3. for Zirvium/KVM (when /dev/kvm opens), Zirvium/TCG and Linux/TCG, each on the same QEMU command line shape,
     boot N times on a fresh tap (10.77.0.1 host, 10.77.0.2 guest) and measure QEMU start -> first HTTP 200, the
     guest's own boot timeline (Zirvium), wrk load with keep-alive and with `Connection: close`, one and eight
     parallel 10 MiB downloads and uploads with curl (MB/s; Zirvium's httpd streams /bytes/N and discards
     POST /upload), QEMU RSS after load, idle host CPU; then bisect the smallest `-m` that still serves `/`;
  4. print one table with Zirvium/Linux+nginx ratios (all TCG, same run), Zirvium's size report
     (tests/bench/sizes.py) for httpd and hello, and write it all as Markdown and JSON into --out.

Every wait is bounded by a timeout; every QEMU started here is stopped by its PID and every tap created here is
deleted, in `finally` blocks. Python 3.11 standard library only. See tests/bench/README.md.
"""

from __future__ import annotations

import argparse
import errno
import gzip
import json
import os
import re
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sizes  # noqa: E402  (tests/bench/sizes.py)

REPO = Path(__file__).resolve().parents[2]
QEMU = "qemu-system-x86_64"
HOST_IP, GUEST_IP, PREFIX = "10.77.0.1", "10.77.0.2", 24
USER_GUEST_IP, USER_GW = "10.0.2.15", "10.0.2.2"
TAP_PREFIX = "zbtap"
# Dependency order (TESTING.md "Baselines"); virtio_mmio only matters on microvm. The transports come first for
# every device driver.
VIRTIO_MODULES = ["virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "virtio_mmio"]
LINUX_MODULES = VIRTIO_MODULES + ["failover", "net_failover", "virtio_net"]
LINUX_MARKER = "zbench: linux httpd ready"
# nginx and the packages of the libraries `ldd /usr/sbin/nginx` names (bookworm).
NGINX_LIBRARY_PACKAGES = ["libc6", "libcrypt1", "libpcre2-8-0", "libssl3", "zlib1g"]
# Bulk transfers: 10 MiB per stream, 1 and 8 streams.
BULK_BYTES = 10 * 1024 * 1024
BULK_STREAMS = (1, 8)
# Zirvium httpd arguments: bodies up to 64 MiB may be sent to /upload.
ZIRVIUM_APP_ARGS = ["max_body_bytes=67108864"]
TIMELINE_RE = re.compile(r"first response at (\d+) us after entry; boot timeline: (.*)$")
T0 = time.monotonic()

# Everything started here, so `cleanup()` can stop it on any exit path.
LIVE_QEMU: set[subprocess.Popen] = set()
LIVE_TAPS: set[str] = set()


class BenchError(Exception):
    """A failure that ends the benchmark, with a message a person can act on."""


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], timeout: float, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Runs `cmd` with captured text output, bounded by `timeout` seconds."""
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"`{' '.join(cmd)}` did not finish within {timeout:.0f} s") from e
    except FileNotFoundError as e:
        raise BenchError(f"`{cmd[0]}` not found on PATH") from e
    if check and p.returncode != 0:
        raise BenchError(f"`{' '.join(cmd)}` failed ({p.returncode}):\n{(p.stderr or p.stdout).strip()[-3000:]}")
    return p


def shell_line(argv: list[str]) -> str:
    plain = re.compile(r"^[A-Za-z0-9_\-./,:=@%+]+$")
    return " ".join(a if plain.match(a) else "'" + a.replace("'", "'\\''") + "'" for a in argv)


# ---------------------------------------------------------------------------------------------------------------
# Images


def build_zirvium(app: str = "httpd") -> Path:
    """Step 1: `cargo run -q -p images -- build APP`; returns the boot image's path it prints (APP.elf, without
    symbols; the linked ELF with symbols is the same path without `.elf`)."""
    log(f"building the Zirvium {app} image: cargo run -q -p images -- build {app}")
    p = run(["cargo", "run", "-q", "-p", "images", "--", "build", app], timeout=1800, cwd=REPO)
    for line in reversed(p.stdout.splitlines()):
        m = re.match(r"^(/\S+) \((\d+) bytes", line.strip())
        if m and Path(m.group(1)).is_file():
            log(f"  {line.strip()}")
            return Path(m.group(1))
    raise BenchError(f"`images build {app}` printed no ELF path; its output was:\n{p.stdout}{p.stderr}")


def resolve_kernel_package() -> str:
    """The package `linux-image-amd64` depends on in the configured suites, e.g. linux-image-6.1.0-56-amd64."""
    for attempt in range(2):
        p = run(["apt-cache", "depends", "linux-image-amd64"], timeout=60, check=False)
        m = re.search(r"Depends:\s+(linux-image-6\.1\.0-\d+-amd64)\b", p.stdout)
        if m:
            return m.group(1)
        if attempt == 0:
            log("  apt-cache knows no linux-image-amd64 for 6.1; running apt-get update")
            run(["apt-get", "update"], timeout=600, check=False)
    raise BenchError(
        "could not resolve linux-image-amd64 to a linux-image-6.1.0-*-amd64 package (bookworm); "
        "check /etc/apt/sources.list.d and run apt-get update"
    )


def fetch_package(pkg: str, dest: Path, want: list[str]) -> str:
    """Downloads `pkg` with `apt-get download` into a temp dir, extracts it with `dpkg-deb -x` and copies the
    extracted paths matching the glob patterns in `want` into `dest` (flattened). Returns the package version.
    Cached: does nothing when `dest/VERSION` exists."""
    stamp = dest / "VERSION"
    if stamp.is_file():
        return stamp.read_text().strip()
    log(f"  downloading {pkg} (apt-get download) into a temp dir")
    with tempfile.TemporaryDirectory(prefix="zbench-deb-") as tmp:
        run(["apt-get", "download", pkg], timeout=900, cwd=Path(tmp))
        debs = list(Path(tmp).glob("*.deb"))
        if len(debs) != 1:
            raise BenchError(f"apt-get download {pkg} left {len(debs)} .deb files in {tmp}")
        version = run(["dpkg-deb", "-f", str(debs[0]), "Version"], timeout=60).stdout.strip()
        root = Path(tmp) / "root"
        run(["dpkg-deb", "-x", str(debs[0]), str(root)], timeout=600)
        staging = dest.with_name(dest.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for pattern in want:
            hits = sorted(root.glob(pattern))
            for h in hits:
                shutil.copy2(h, staging / h.name)
        (staging / "VERSION").write_text(version + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        staging.rename(dest)
    return version


@dataclass
class LinuxParts:
    package: str
    version: str
    vmlinuz: Path
    config: Path
    modules: dict[str, Path]  # name -> .ko present as a loadable module
    builtin: list[str]  # names built into the kernel
    busybox: Path
    busybox_version: str
    mmio_cmdline: bool  # CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y


def prepare_linux(cache: Path, wanted: list[str] = LINUX_MODULES, variant: str = "") -> LinuxParts:
    """Step 2a: the Debian kernel, the modules named in `wanted` (in load order; default the virtio-net set) and
    busybox-static, cached under `cache` (the kernel parts in `<package><variant>/`, one directory per module
    set, since the cache keeps only the modules asked for)."""
    pkg = resolve_kernel_package()
    log(f"Linux guest: {pkg} + busybox-static (cache {cache})")
    kdir = cache / f"{pkg}{variant}"
    kver = fetch_package(
        pkg,
        kdir,
        ["boot/vmlinuz-*", "boot/config-*", "lib/modules/*/modules.builtin"]
        + [f"lib/modules/*/kernel/**/{m}.ko*" for m in wanted],
    )
    bdir = cache / "busybox-static"
    bver = fetch_package("busybox-static", bdir, ["bin/busybox"])
    vmlinuz = next(kdir.glob("vmlinuz-*"), None)
    config = next(kdir.glob("config-*"), None)
    if vmlinuz is None or config is None:
        raise BenchError(f"{kdir} lacks vmlinuz-* or config-*; delete it to download again")
    builtin_text = (kdir / "modules.builtin").read_text() if (kdir / "modules.builtin").exists() else ""
    builtin_names = {Path(x).name.split(".ko")[0].replace("-", "_") for x in builtin_text.split()}
    modules = {}
    for m in wanted:
        ko = next((p for p in kdir.glob(f"{m}.ko*")), None)
        if ko is not None:
            if ko.suffix != ".ko":
                raise BenchError(f"{ko.name} is compressed; this script loads plain .ko files with busybox insmod")
            modules[m] = ko
    builtin = [m for m in wanted if m in builtin_names]
    missing = [m for m in wanted if m not in modules and m not in builtin]
    log(f"  kernel {kver}: modules {', '.join(modules)}; built in: {', '.join(builtin) or 'none'}"
        + (f"; absent: {', '.join(missing)}" if missing else ""))
    mmio = "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y" in config.read_text()
    return LinuxParts(pkg, kver, vmlinuz, config, modules, builtin, bdir / "busybox", bver, mmio)


@dataclass
class NginxParts:
    version: str
    binary: Path
    libraries: list[Path]


def prepare_nginx(cache: Path) -> NginxParts:
    """Step 2a': nginx from Debian (`usr/sbin/nginx`) and the shared libraries of the packages it links
    (NGINX_LIBRARY_PACKAGES), each cached under `cache/<package>/`."""
    version = fetch_package("nginx", cache / "nginx", ["usr/sbin/nginx"])
    libs: list[Path] = []
    for pkg in NGINX_LIBRARY_PACKAGES:
        d = cache / pkg
        fetch_package(pkg, d, ["lib/x86_64-linux-gnu/*.so*", "usr/lib/x86_64-linux-gnu/*.so*",
                               "lib64/ld-linux-x86-64.so.2"])
        libs += sorted(p for p in d.iterdir() if p.name != "VERSION" and p.is_file())
    log(f"  nginx {version} with {len(libs)} libraries from {', '.join(NGINX_LIBRARY_PACKAGES)}")
    return NginxParts(version, cache / "nginx" / "nginx", libs)


NGINX_CONF = """user root root;
worker_processes 1;
daemon off;
pid /tmp/nginx.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
    types { text/html html; application/octet-stream bin; }
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path /tmp/body;
    proxy_temp_path /tmp/proxy;
    fastcgi_temp_path /tmp/fastcgi;
    uwsgi_temp_path /tmp/uwsgi;
    scgi_temp_path /tmp/scgi;
    server {
        listen 80 default_server;
        root /www;
        index index.html;
        location = /upload { client_max_body_size 0; return 200 "discarded\n"; }
    }
}
"""


def pattern_bytes(n: int) -> bytes:
    """The /bytes/N content of Zirvium's httpd: byte i is i % 251."""
    period = bytes(range(251))
    return (period * (n // 251 + 1))[:n]


def nginx_tree(parts: NginxParts, page: bytes) -> list[tuple[str, bytes, int]]:
    """nginx's files in the guest: (path, bytes, mode): binary, libraries, config, passwd/group, the pages."""
    files = [("usr/sbin/nginx", parts.binary.read_bytes(), 0o755), ("etc/nginx/nginx.conf", NGINX_CONF.encode(), 0o644),
             ("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644), ("etc/group", b"root:x:0:\n", 0o644),
             ("www/index.html", page, 0o644), (f"www/bytes/{BULK_BYTES}", pattern_bytes(BULK_BYTES), 0o644)]
    for lib in parts.libraries:
        where = "lib64" if lib.name == "ld-linux-x86-64.so.2" else "lib/x86_64-linux-gnu"
        files.append((f"{where}/{lib.name}", lib.read_bytes(), 0o755))
    return files


NGINX_DIRS = ["usr", "usr/sbin", "etc/nginx", "lib/x86_64-linux-gnu", "lib64", "www/bytes", "var", "var/log",
              "var/log/nginx", "var/lib", "var/lib/nginx", "run"]


def check_nginx(files: list[tuple[str, bytes, int]]) -> None:
    """`nginx -t` in a chroot of the tree, so a missing library or a config error shows before any boot."""
    with tempfile.TemporaryDirectory(prefix="zbench-nginx-") as tmp:
        root = Path(tmp)
        for d in NGINX_DIRS + ["tmp", "dev"]:
            (root / d).mkdir(parents=True, exist_ok=True)
        for path, data, mode in files:
            (root / path).write_bytes(data)
            (root / path).chmod(mode)
        p = run(["chroot", str(root), "/usr/sbin/nginx", "-t", "-c", "/etc/nginx/nginx.conf"], timeout=60,
                check=False)
        if p.returncode != 0:
            raise BenchError(f"nginx -t in a chroot of the guest tree failed:\n{(p.stderr + p.stdout).strip()}")
    log("  nginx -t in a chroot of the guest tree: ok")


class Cpio:
    """Writer of a cpio "newc" archive (the initramfs format, Linux Documentation/driver-api/early-userspace/
    buffer-format.rst): 110-byte ASCII header, NUL-terminated name, data, each padded to 4 bytes."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0), nlink: int = 1):
        nb = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(nb), 0]
        self.ino += 1
        self.out += b"070701" + b"".join(b"%08X" % f for f in fields) + nb
        self.out += b"\0" * (-len(self.out) % 4)
        self.out += data
        self.out += b"\0" * (-len(self.out) % 4)

    def dir(self, name: str) -> None:
        self._entry(name, 0o040755, nlink=2)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, 0o100000 | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, 0o120777, target.encode())

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self.ino = 0
        self._entry("TRAILER!!!", 0)
        return bytes(self.out)


def init_script(comment: str, variables: str, cases: list[str], body: str) -> str:
    """An initramfs /init for busybox: `comment` (shell comment lines), busybox applets installed, proc, sysfs and
    devtmpfs mounted; the shell assignments `variables` (plus `MMIO=`); each kernel command line word matched
    against the shell case arms `cases`, and `virtio_mmio.device=` words gathered in $MMIO; the modules
    `@MODULES@` (replaced by the caller) insmod-ed in order from /lib/modules, virtio_mmio with $MMIO; then
    `body`."""
    arms = "".join(f"    {c}\n" for c in cases)
    return (
        f"#!/bin/sh\n{comment}\n/bin/busybox --install -s /bin\nmount -t proc proc /proc\n"
        "mount -t sysfs sysfs /sys\nmount -t devtmpfs devtmpfs /dev 2>/dev/null\n"
        f"{variables} MMIO=\nfor w in $(cat /proc/cmdline); do\n  case \"$w\" in\n{arms}"
        '    virtio_mmio.device=*) MMIO="$MMIO ${w#virtio_mmio.}" ;;\n  esac\ndone\n'
        "for m in @MODULES@; do\n  f=/lib/modules/$m.ko\n  [ -f \"$f\" ] || continue\n"
        '  if [ "$m" = virtio_mmio ]; then insmod "$f" $MMIO; else insmod "$f"; fi || echo "zbench: insmod $m failed"\n'
        f"done\n{body}"
    )


INIT_SCRIPT = init_script(
    "# zbench /init: mount, load the virtio modules, static address from zb_ip=/zb_gw= on the kernel command line,\n"
    "# then busybox httpd in the foreground as PID 1.",
    "IP=; GW=;",
    ['zb_ip=*) IP="${w#zb_ip=}" ;;', 'zb_gw=*) GW="${w#zb_gw=}" ;;'],
    r"""i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 500 ]; do sleep 0.01; i=$((i+1)); done
ip link set lo up
ip addr add "$IP" dev eth0
ip link set eth0 up
ip route add default via "$GW"
echo "@MARKER@ on ${IP%/*}"
exec httpd -f -p 80 -h /www
""",
)


def initramfs_base(parts: LinuxParts, dirs: list[str]) -> Cpio:
    """The common part of an initramfs: the directories `dirs` (which must include bin, dev, lib and lib/modules),
    /dev/console, /dev/null, busybox (with /bin/sh) and the loadable modules as /lib/modules/NAME.ko."""
    c = Cpio()
    for d in dirs:
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3)
    c.file("bin/busybox", parts.busybox.read_bytes(), 0o755)
    c.symlink("bin/sh", "busybox")
    for name, ko in parts.modules.items():
        c.file(f"lib/modules/{name}.ko", ko.read_bytes())
    return c


def write_initramfs(c: Cpio, dest: Path) -> Path:
    """Finishes `c` and writes it gzip-compressed to `dest`."""
    data = gzip.compress(c.finish(), compresslevel=9, mtime=0)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    return dest


NGINX_INIT = init_script(
    "# zbench /init (nginx): mount, load the virtio modules, static address from zb_ip=/zb_gw=, then nginx in the\n"
    "# foreground as PID 1 (one worker, sendfile, keep-alive).",
    "IP=; GW=;",
    ['zb_ip=*) IP="${w#zb_ip=}" ;;', 'zb_gw=*) GW="${w#zb_gw=}" ;;'],
    r"""i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 500 ]; do sleep 0.01; i=$((i+1)); done
ip link set lo up
ip addr add "$IP" dev eth0
ip link set eth0 up
ip route add default via "$GW"
echo "@MARKER@ on ${IP%/*}"
exec /usr/sbin/nginx -c /etc/nginx/nginx.conf
""",
)


def build_nginx_initramfs(parts: LinuxParts, nginx: NginxParts, page: bytes, dest: Path) -> Path:
    """Step 2b': the initramfs with busybox, the virtio modules, nginx and its libraries, /init starting nginx,
    /www/index.html holding `page` and /www/bytes/10485760."""
    files = nginx_tree(nginx, page)
    check_nginx(files)
    c = initramfs_base(parts, ["bin", "dev", "proc", "sys", "tmp", "www", "lib", "lib/modules", "etc"] + NGINX_DIRS)
    init = NGINX_INIT.replace("@MODULES@", " ".join(parts.modules)).replace("@MARKER@", LINUX_MARKER)
    c.file("init", init.encode(), 0o755)
    for path, data, mode in files:
        c.file(path, data, mode)
    return write_initramfs(c, dest)


def build_initramfs(parts: LinuxParts, page: bytes, dest: Path) -> Path:
    """Step 2b: initramfs (cpio newc, gzip) with busybox, the loadable virtio modules, /init and /www/index.html
    holding `page`."""
    c = initramfs_base(parts, ["bin", "dev", "proc", "sys", "tmp", "www", "lib", "lib/modules", "etc"])
    init = INIT_SCRIPT.replace("@MODULES@", " ".join(parts.modules)).replace("@MARKER@", LINUX_MARKER)
    c.file("init", init.encode(), 0o755)
    c.file("www/index.html", page)
    return write_initramfs(c, dest)


# ---------------------------------------------------------------------------------------------------------------
# Network


class Network:
    """A fresh tap per boot (10.77.0.1/24 on the host, guest 10.77.0.2) or, when tap is unavailable, QEMU user
    networking with a host port forward to guest port 80."""

    def __init__(self, force_user: bool) -> None:
        self.kind = "user" if force_user else "tap"
        self.why = "--user-net given" if force_user else ""
        if not force_user:
            reason = self._tap_unavailable()
            if reason:
                self.kind, self.why = "user", reason
        if self.kind == "tap":
            taken = run(["ip", "-o", "-4", "addr", "show", "to", f"{HOST_IP}/{PREFIX}"], timeout=10).stdout.strip()
            if taken:
                raise BenchError(
                    f"{HOST_IP}/{PREFIX} is already on a host interface (another benchmark or a leftover tap?):\n"
                    f"{taken}\nremove it (ip link del NAME) or wait for the other run to finish"
                )
            self.why = f"tap: host {HOST_IP}/{PREFIX}, guest {GUEST_IP}, one fresh tap per boot"
        else:
            self.why = f"user networking (slirp, port forward) because {self.why}; slower than tap"

    @staticmethod
    def _tap_unavailable() -> str:
        if os.geteuid() != 0:
            return "not running as root"
        if not os.path.exists("/dev/net/tun"):
            return "/dev/net/tun is missing"
        if shutil.which("ip") is None:
            return "the `ip` command is missing"
        name = f"{TAP_PREFIX}probe{os.getpid() % 1000}"
        p = subprocess.run(["ip", "tuntap", "add", "dev", name, "mode", "tap"], capture_output=True, text=True)
        if p.returncode != 0:
            return f"`ip tuntap add` failed: {p.stderr.strip()}"
        subprocess.run(["ip", "link", "del", name], capture_output=True)
        return ""

    def attach(self) -> "Attachment":
        if self.kind == "user":
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            return Attachment(
                netdev=f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:80",
                host="127.0.0.1",
                port=port,
                zirvium_opts=[],  # DHCP from slirp
                linux_opts=[f"zb_ip={USER_GUEST_IP}/24", f"zb_gw={USER_GW}"],
                tap=None,
            )
        existing = set(os.listdir("/sys/class/net"))
        name = next(f"{TAP_PREFIX}{i}" for i in range(1000) if f"{TAP_PREFIX}{i}" not in existing)
        LIVE_TAPS.add(name)
        try:
            run(["ip", "tuntap", "add", "dev", name, "mode", "tap"], timeout=10)
            # No IPv6 on the tap: the host's router solicitations and MLD reports would wake an idle guest.
            write_sysctl(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "1")
            # ARP retries every 10 ms instead of 1 s, so a guest that comes up is found within the poll interval.
            write_sysctl(f"/proc/sys/net/ipv4/neigh/{name}/retrans_time_ms", "10")
            run(["ip", "addr", "add", f"{HOST_IP}/{PREFIX}", "dev", name], timeout=10)
            run(["ip", "link", "set", name, "up"], timeout=10)
        except BaseException:
            delete_tap(name)
            raise
        return Attachment(
            netdev=f"tap,id=n0,ifname={name},script=no,downscript=no",
            host=GUEST_IP,
            port=80,
            zirvium_opts=[f"ip={GUEST_IP}/{PREFIX}", f"gw={HOST_IP}"],
            linux_opts=[f"zb_ip={GUEST_IP}/{PREFIX}", f"zb_gw={HOST_IP}"],
            tap=name,
        )


@dataclass
class Attachment:
    netdev: str
    host: str
    port: int
    zirvium_opts: list[str]
    linux_opts: list[str]
    tap: str | None

    def release(self) -> None:
        if self.tap:
            delete_tap(self.tap)


def write_sysctl(path: str, value: str) -> None:
    try:
        Path(path).write_text(value)
    except OSError as e:
        log(f"  note: could not set {path}={value}: {e}")


def delete_tap(name: str) -> None:
    subprocess.run(["ip", "link", "del", name], capture_output=True, timeout=10)
    LIVE_TAPS.discard(name)


# ---------------------------------------------------------------------------------------------------------------
# HTTP


def parse_response(buf: bytes, eof: bool) -> tuple[int, bytes] | None:
    """(status, body) once `buf` holds a complete HTTP/1.x response (Content-Length or EOF), else None."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    head = buf[:head_end].decode("latin-1")
    m = re.match(r"HTTP/1\.[01] (\d{3})", head)
    if not m:
        return (0, b"") if eof else None
    body = buf[head_end + 4 :]
    cl = re.search(r"(?im)^content-length:\s*(\d+)\s*$", head)
    if cl and len(body) >= int(cl.group(1)):
        return int(m.group(1)), body[: int(cl.group(1))]
    return (int(m.group(1)), body) if eof else None


def wait_first_200(host: str, port: int, deadline: float, alive, interval: float = 0.01,
                   attempt_timeout: float = 1.0, max_inflight: int = 8) -> tuple[float, bytes] | None:
    """Starts a fresh `GET / HTTP/1.0` every `interval` s until one gets a complete 200 response. Each attempt
    lives at most `attempt_timeout` s, so a SYN lost while the guest boots never delays the next try; at most
    `max_inflight` attempts are open at once, so a slow guest is not buried under SYNs (a refused or unreachable
    attempt ends at once and does not count). Returns (time.monotonic() at that response, body), or None at
    `deadline` or when `alive()` turns false."""
    req = f"GET / HTTP/1.0\r\nHost: {host}\r\nUser-Agent: zbench\r\n\r\n".encode()
    sel = selectors.DefaultSelector()
    attempts: dict[socket.socket, dict] = {}

    def drop(s: socket.socket) -> None:
        try:
            sel.unregister(s)
        except (KeyError, ValueError):
            pass
        s.close()
        attempts.pop(s, None)

    next_try = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            if now >= deadline or not alive():
                return None
            if now >= next_try and len(attempts) < max_inflight:
                next_try = now + interval
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                rc = s.connect_ex((host, port))
                if rc in (0, errno.EINPROGRESS):
                    attempts[s] = {"start": now, "sent": False, "buf": b""}
                    sel.register(s, selectors.EVENT_WRITE)
                else:
                    s.close()
            for s in [s for s, a in attempts.items() if now - a["start"] > attempt_timeout]:
                drop(s)
            wait = max(0.0, min(next_try, deadline) - time.monotonic())
            for key, _ in sel.select(timeout=wait) if attempts else []:
                s = key.fileobj
                a = attempts.get(s)
                if a is None:
                    continue
                try:
                    if not a["sent"]:
                        if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                            drop(s)
                            continue
                        s.sendall(req)
                        a["sent"] = True
                        sel.modify(s, selectors.EVENT_READ)
                        continue
                    data = s.recv(65536)
                except OSError:
                    drop(s)
                    continue
                a["buf"] += data
                r = parse_response(a["buf"], eof=not data)
                if r is not None and r[0] == 200:
                    return time.monotonic(), r[1]
                if r is not None or not data:
                    drop(s)
            if not attempts:
                time.sleep(max(0.0, min(next_try, deadline) - time.monotonic()))
    finally:
        for s in list(attempts):
            drop(s)
        sel.close()


def http_get(host: str, port: int, timeout: float = 5.0) -> tuple[int, bytes] | None:
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            buf = b""
            while True:
                d = s.recv(65536)
                buf += d
                r = parse_response(buf, eof=not d)
                if r is not None:
                    return r
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------------------------
# QEMU


def qemu_common(machine: str, accel: str, mem_mib: int) -> list[str]:
    """QEMU and the flags of `images run` (images/src/qemu.rs `qemu_args`) before any device: machine
    (microvm without ACPI, with the modern virtio-mmio transport), accelerator, qemu64, RAM, 1 vCPU, no
    display or default devices, serial on stdio, isa-debug-exit."""
    a = [QEMU, "-M", "microvm,acpi=off" if machine == "microvm" else machine]
    a += ["-accel", accel, "-cpu", "qemu64", "-m", f"{mem_mib}M", "-smp", "1"]
    a += ["-display", "none", "-nodefaults", "-no-reboot"]
    a += ["-chardev", "stdio,id=s0,signal=off", "-serial", "chardev:s0"]
    a += ["-device", "isa-debug-exit,iobase=0xf4,iosize=4"]
    if machine == "microvm":
        a += ["-global", "virtio-mmio.force-legacy=false"]
    return a


@dataclass
class Config:
    key: str  # zirvium-kvm, zirvium-tcg, linux-tcg
    label: str  # Zirvium/KVM ...
    os: str  # zirvium | linux
    accel: str  # kvm | tcg
    machine: str  # microvm | q35
    kernel: Path
    initrd: Path | None = None
    boot_timeout: float = 60.0
    notes: list[str] = field(default_factory=list)

    def argv(self, mem_mib: int, att: Attachment) -> list[str]:
        """The QEMU command: the flags of `images run` (images/src/qemu.rs `qemu_args`) for both guests; only
        -kernel/-initrd/-append differ."""
        a = qemu_common(self.machine, self.accel, mem_mib)
        dev = "virtio-net-device" if self.machine == "microvm" else "virtio-net-pci"
        a += ["-netdev", att.netdev, "-device", f"{dev},netdev=n0", "-kernel", str(self.kernel)]
        if self.os == "zirvium":
            append = " ".join(att.zirvium_opts + ["--"] + ZIRVIUM_APP_ARGS)
        else:
            a += ["-initrd", str(self.initrd)]
            # panic=-1: a kernel panic (e.g. out of memory) reboots, and -no-reboot turns that into QEMU exiting.
            append = " ".join(["console=ttyS0", "quiet", "panic=-1"] + att.linux_opts)
        if append:
            a += ["-append", append]
        return a


class Guest:
    """One QEMU process with its serial console captured line by line (timestamps from QEMU's start)."""

    def __init__(self, cfg: Config, mem_mib: int, net: Network, log_path: Path | None) -> None:
        self.cfg, self.mem, self.net, self.log_path = cfg, mem_mib, net, log_path
        self.lines: list[tuple[float, str]] = []
        self.stderr = b""
        self.proc: subprocess.Popen | None = None
        self.att: Attachment | None = None
        self.t0 = 0.0
        self.argv: list[str] = []

    def __enter__(self) -> "Guest":
        self.att = self.net.attach()
        try:
            self.argv = self.cfg.argv(self.mem, self.att)
            self.t0 = time.monotonic()
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE)
            LIVE_QEMU.add(self.proc)
        except BaseException:
            self.att.release()
            raise
        self.readers = [threading.Thread(target=self._read_serial, daemon=True),
                        threading.Thread(target=self._read_stderr, daemon=True)]
        for t in self.readers:
            t.start()
        return self

    def _read_serial(self) -> None:
        for raw in iter(self.proc.stdout.readline, b""):
            self.lines.append((time.monotonic() - self.t0, raw.decode(errors="replace").rstrip()))

    def _read_stderr(self) -> None:
        self.stderr = self.proc.stderr.read()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float, max_inflight: int = 8) -> tuple[float, bytes] | None:
        """(seconds from QEMU start to the first complete HTTP 200 for `/`, body) or None."""
        r = wait_first_200(self.att.host, self.att.port, self.t0 + timeout, self.alive, max_inflight=max_inflight)
        return (r[0] - self.t0, r[1]) if r else None

    def serial_find(self, pattern: re.Pattern | str) -> tuple[float, re.Match] | None:
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        for t, line in list(self.lines):
            m = rx.search(line)
            if m:
                return t, m
        return None

    def url(self) -> str:
        return f"http://{self.att.host}:{self.att.port}/" if self.att.port != 80 else f"http://{self.att.host}/"

    def __exit__(self, *exc) -> None:
        try:
            stop_process(self.proc)
            for t in self.readers:
                t.join(3)
            if self.log_path:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.log_path, "w") as f:
                    f.write(f"# {shell_line(self.argv)}\n")
                    f.writelines(f"{t:9.3f} {line}\n" for t, line in self.lines)
                    f.write("--- qemu stderr ---\n" + self.stderr.decode(errors="replace"))
                    f.write(f"--- qemu exit status {self.proc.returncode} ---\n")
        finally:
            self.att.release()


def stop_process(p: subprocess.Popen | None) -> None:
    """Stops one process we started, by its PID: SIGTERM, then SIGKILL after 3 s."""
    if p is None:
        return
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(3)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
    LIVE_QEMU.discard(p)


def proc_rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of `pid` in seconds (proc(5), fields 14 and 15 of /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def proc_sched_s(pid: int) -> float | None:
    """CPU time of all threads of `pid` in seconds at nanosecond resolution: the sum of the first field of
    /proc/PID/task/*/schedstat (Linux Documentation/scheduler/sched-stats.rst)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, IndexError, ValueError):
                pass  # a thread that ended meanwhile
    except OSError:
        return None
    return total / 1e9


def to_ms(s: str) -> float | None:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", s)
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[m.group(2)] if m else None


def run_wrk(url: str, duration_s: int, close: bool = False) -> dict:
    """`wrk -t1 -c32 -dNs --latency URL` (with `-H "Connection: close"` when `close`): req/s, p50/p99 latency
    (ms), errors (socket errors + non-2xx/3xx)."""
    cmd = ["wrk", "-t1", "-c32", f"-d{duration_s}s", "--latency"] + (["-H", "Connection: close"] if close else [])
    cmd.append(url)
    p = run(cmd, timeout=duration_s + 60, check=False)
    out = p.stdout + p.stderr
    grab = lambda rx: (m.group(1) if (m := re.search(rx, out, re.M)) else None)  # noqa: E731
    rps = grab(r"Requests/sec:\s+([\d.]+)")
    errors = 0
    if (se := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)):
        errors += sum(int(x) for x in se.groups())
    if (nx := grab(r"Non-2xx or 3xx responses:\s+(\d+)")):
        errors += int(nx)
    return {
        "cmd": shell_line(cmd),
        "rps": float(rps) if rps else None,
        "p50_ms": to_ms(grab(r"^\s+50%\s+(\S+)") or ""),
        "p99_ms": to_ms(grab(r"^\s+99%\s+(\S+)") or ""),
        "requests": int(r) if (r := grab(r"^\s+(\d+) requests in")) else None,
        "errors": errors,
        "exit": p.returncode,
        "raw": out,
    }


def bulk(base_url: str, direction: str, streams: int, upload_file: Path) -> dict:
    """`streams` parallel curl transfers of BULK_BYTES each: downloads of /bytes/10485760, or uploads of
    `upload_file` as the body of POST /upload (`Expect:` off, so the body follows the head at once). Returns
    MB/s over the wall time of the whole batch (10^6 bytes/s), and the failures."""
    if direction == "down":
        one = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}\n", f"{base_url}bytes/{BULK_BYTES}"]
    else:
        one = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_upload}\n", "-H", "Expect:",
               "--data-binary", f"@{upload_file}", f"{base_url}upload"]
    one[1:1] = ["--max-time", "120"]
    t0 = time.monotonic()
    procs = [subprocess.Popen(one, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for _ in range(streams)]
    outs = [p.communicate(timeout=150)[0].strip() for p in procs]
    wall = time.monotonic() - t0
    ok = sum(1 for o in outs if o.split()[:2] == ["200", str(BULK_BYTES)])
    return {"cmd": shell_line(one), "streams": streams, "seconds": round(wall, 3),
            "mb_s": round(streams * BULK_BYTES / wall / 1e6, 1) if ok == streams else None,
            "failed": streams - ok, "outputs": outs}


def parse_timeline(line_match: re.Match) -> dict:
    parts = {}
    for part in line_match.group(2).split(","):
        m = re.match(r"\s*(\w+) (\d+) us", part)
        if m:
            parts[m.group(1)] = int(m.group(2))
    return {"first_response_us": int(line_match.group(1)), "stamps_us": parts, "line": line_match.group(0)}


def measure_run(cfg: Config, net: Network, i: int, wrk_s: int, idle: bool, logs: Path,
                bulk_file: Path | None = None) -> dict:
    """One boot at 256 MiB: time to first 200, Zirvium's timeline, idle CPU (if `idle`), wrk, RSS after load;
    with `bulk_file` (a BULK_BYTES file to upload) also wrk with `Connection: close` and the bulk transfers."""
    r: dict = {"run": i + 1}
    with Guest(cfg, 256, net, logs / f"{cfg.key}-run{i + 1}.log") as g:
        ready = g.wait_ready(cfg.boot_timeout)
        r["qemu_cmd"] = shell_line(g.argv)
        if ready is None:
            r["error"] = ("QEMU exited with status " + str(g.proc.returncode)) if not g.alive() else (
                f"no HTTP 200 within {cfg.boot_timeout:.0f} s")
            log(f"  {cfg.label} run {i + 1}: FAILED: {r['error']} (log {logs / f'{cfg.key}-run{i + 1}.log'})")
            return r
        r["ready_s"], r["body"] = ready
        first_line = g.lines[0][0] if g.lines else None
        r["first_serial_s"] = first_line
        if cfg.os == "linux":
            hit = g.serial_find(re.escape(LINUX_MARKER))
            r["marker_s"] = hit[0] if hit else None
        pid = g.proc.pid
        if idle:
            time.sleep(1.0)  # let boot-time work (log flushes, timers) settle
            c0, s0, t0 = proc_cpu_s(pid), proc_sched_s(pid), time.monotonic()
            time.sleep(5.0)
            c1, s1, t1 = proc_cpu_s(pid), proc_sched_s(pid), time.monotonic()
            if c0 is not None and c1 is not None and g.alive():
                r["idle_cpu_pct"] = 100.0 * (c1 - c0) / (t1 - t0)
            if s0 is not None and s1 is not None and g.alive():
                r["idle_cpu_sched_pct"] = 100.0 * (s1 - s0) / (t1 - t0)
        w = run_wrk(g.url(), wrk_s)
        r["wrk"] = {k: v for k, v in w.items() if k != "raw"}
        r["wrk_raw"] = w["raw"]
        if bulk_file is not None:
            w = run_wrk(g.url(), wrk_s, close=True)
            r["wrk_close"] = {k: v for k, v in w.items() if k != "raw"}
            r["bulk"] = {f"{d}{n}": bulk(g.url(), d, n, bulk_file) for d in ("down", "up") for n in BULK_STREAMS}
        r["rss_after_load_kib"] = proc_rss_kib(pid) if g.alive() else None
        r["alive_after_load"] = g.alive()
        if cfg.os == "zirvium":
            deadline = time.monotonic() + 2.0
            while (hit := g.serial_find(TIMELINE_RE)) is None and time.monotonic() < deadline:
                time.sleep(0.05)
            r["timeline"] = parse_timeline(hit[1]) if hit else None
    msg = f"  {cfg.label} run {i + 1}: first 200 at {r['ready_s']:.3f} s"
    if "idle_cpu_pct" in r:
        msg += f", idle CPU {r['idle_cpu_pct']:.2f} % (schedstat {r.get('idle_cpu_sched_pct', -1):.3f} %)"
    w = r["wrk"]
    msg += f", wrk {w['rps'] or 0:.0f} req/s p50 {w['p50_ms']} ms p99 {w['p99_ms']} ms errors {w['errors']}"
    if "wrk_close" in r:
        msg += f", close {r['wrk_close']['rps'] or 0:.0f} req/s"
    for k, b in r.get("bulk", {}).items():
        msg += f", {k} {b['mb_s']} MB/s" + (f" ({b['failed']} failed)" if b["failed"] else "")
    msg += f", RSS {(r['rss_after_load_kib'] or 0) / 1024:.1f} MiB"
    if not r["alive_after_load"]:
        msg += " (QEMU DIED during load)"
    log(msg)
    return r


def serves_at(cfg: Config, net: Network, mib: int, timeout: float, logs: Path) -> bool:
    with Guest(cfg, mib, net, logs / f"{cfg.key}-mem{mib}.log") as g:
        # One attempt open at a time: "serves" means one request is answered, not several at once.
        ok = g.wait_ready(timeout, max_inflight=1) is not None
    log(f"  {cfg.label} -m {mib}M: {'serves' if ok else 'fails'}")
    return ok


def min_memory(cfg: Config, net: Network, timeout: float, logs: Path, lo: int = 2, hi: int = 256) -> int | None:
    """Smallest `-m` (MiB) in lo..=hi that serves `/`, by bisection (assumes: serves at m => serves above m).
    `hi` is known to serve from the measured runs."""
    lo_known_fail = False
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if serves_at(cfg, net, mid, timeout, logs):
            hi = mid
        else:
            lo, lo_known_fail = mid, True
    if not lo_known_fail and serves_at(cfg, net, lo, timeout, logs):
        return lo
    return hi


# ---------------------------------------------------------------------------------------------------------------
# Report


def med(vals):
    v = [x for x in vals if x is not None]
    return statistics.median(v) if v else None


def summarize(cfg: Config, runs: list[dict], size: dict, min_mem, notes) -> dict:
    ok = [r for r in runs if "ready_s" in r]
    tl = [r["timeline"] for r in ok if r.get("timeline")]
    s = {
        "label": cfg.label,
        "machine": cfg.machine,
        "accel": cfg.accel,
        "runs": len(runs),
        "ok_runs": len(ok),
        "ready_s": med([r["ready_s"] for r in ok]),
        "ready_s_all": [round(r["ready_s"], 4) for r in ok],
        "rps": med([r["wrk"]["rps"] for r in ok]),
        "rps_all": [r["wrk"]["rps"] for r in ok],
        "p50_ms": med([r["wrk"]["p50_ms"] for r in ok]),
        "p99_ms": med([r["wrk"]["p99_ms"] for r in ok]),
        "close_rps": med([r["wrk_close"]["rps"] for r in ok if "wrk_close" in r]),
        "bulk_mb_s": {k: med([r["bulk"][k]["mb_s"] for r in ok if "bulk" in r])
                      for k in (ok[0].get("bulk", {}) if ok else {})},
        "wrk_errors": sum(r["wrk"]["errors"] or 0 for r in ok) if ok else None,
        "rss_after_load_kib": med([r["rss_after_load_kib"] for r in ok]),
        "idle_cpu_pct": med([r.get("idle_cpu_pct") for r in ok]),
        "idle_cpu_sched_pct": med([r.get("idle_cpu_sched_pct") for r in ok]),
        "size": size,
        "min_mem_mib": min_mem,
        "qemu_cmd": runs[0].get("qemu_cmd") if runs else None,
        "notes": notes,
        "per_run": [{k: v for k, v in r.items() if k not in ("body", "wrk_raw")} for r in runs],
    }
    if tl:
        s["timeline"] = {
            "first_response_us": round(med([t["first_response_us"] for t in tl])),
            "stamps_us": {k: round(med([t["stamps_us"].get(k) for t in tl])) for k in tl[0]["stamps_us"]},
            "example_line": tl[0]["line"],
        }
    return s


def fmt_ratio(z, lnx, higher_better: bool, better: str, worse: str) -> str:
    if z is None or lnx is None:
        return "—"
    if z == lnx:
        return "same"
    if z == 0 or lnx == 0:
        return f"{better} ({z:.3g} vs {lnx:.3g})" if (z < lnx) != higher_better else f"{worse} ({z:.3g} vs {lnx:.3g})"
    r = z / lnx if higher_better else lnx / z
    return f"{r:.1f}x {better}" if r >= 1 else f"{1 / r:.1f}x {worse}"


def build_table(results: dict, runs: int, wrk_s: int) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the comparison table; the last column compares Zirvium/TCG with Linux + nginx/TCG
    (Linux + busybox when nginx was not measured)."""
    cols = [k for k in ("zirvium-kvm", "zirvium-tcg", "linux-tcg", "nginx-tcg") if k in results]
    peer = "nginx-tcg" if "nginx-tcg" in results else "linux-tcg"
    head = ["Metric"] + [results[k]["label"] for k in cols] + [f"Zirvium/{results[peer]['label']} (same run)"]
    z, lx = results.get("zirvium-tcg"), results.get(peer)

    def row(name, value, fmt, ratio=None, ratio_value=None):
        """`value(summary)` -> shown with `fmt`; `ratio` = (higher_better, better, worse) compares
        `ratio_value(summary)` (default `value`)."""
        cells = [name] + [fmt(v) if (v := value(results[k])) is not None else "—" for k in cols]
        rv = ratio_value or value
        cells.append(fmt_ratio(rv(z), rv(lx), *ratio) if ratio and z and lx else "")
        return cells

    def timeline(t):
        st = dict(t["stamps_us"], first_response=t["first_response_us"])
        keys = ("rust", "memory", "clock", "drivers", "app", "ready", "first_response")
        return ", ".join(f"{k.replace('_', ' ')} {st[k] / 1000:.1f}" for k in keys if st.get(k) is not None) + " ms"

    def size(d):
        parts = " + ".join(f"{k} {v:,}" for k, v in d.items() if k != "total")
        return f"{d['total']:,} B" + (f" ({parts})" if len(d) > 2 else "")

    def idle(s):
        if s.get("idle_cpu_pct") is None:
            return None
        sched = s.get("idle_cpu_sched_pct")
        return f"{s['idle_cpu_pct']:.2f} %" + (f" (schedstat {sched:.3f} %)" if sched is not None else "")

    def idle_value(s):
        return s.get("idle_cpu_sched_pct") if s.get("idle_cpu_sched_pct") is not None else s.get("idle_cpu_pct")

    g = lambda key: (lambda s: s.get(key))  # noqa: E731
    rows = [
        row(f"QEMU start → first HTTP 200 (median of {runs})", g("ready_s"), lambda v: f"{v:.3f} s",
            (False, "faster", "slower")),
        row("Guest boot timeline (Zirvium, after entry)", g("timeline"), timeline),
        row(f"wrk -t1 -c32 -d{wrk_s}s: req/s", g("rps"), lambda v: f"{v:,.0f}", (True, "faster", "slower")),
        row("wrk latency p50", g("p50_ms"), lambda v: f"{v:.2f} ms", (False, "faster", "slower")),
        row("wrk latency p99", g("p99_ms"), lambda v: f"{v:.2f} ms", (False, "faster", "slower")),
        row("wrk errors (sum over runs)", g("wrk_errors"), str),
        row(f"wrk -t1 -c32 -d{wrk_s}s, Connection: close: req/s", g("close_rps"), lambda v: f"{v:,.0f}",
            (True, "faster", "slower")),
    ]
    names = {"down1": "one 10 MiB download (curl)", "down8": "8 parallel 10 MiB downloads",
             "up1": "one 10 MiB upload (curl POST)", "up8": "8 parallel 10 MiB uploads"}
    for key, name in names.items():
        rows.append(row(f"{name}, MB/s (median)", lambda s, k=key: (s.get("bulk_mb_s") or {}).get(k),
                        lambda v: f"{v:,.1f}", (True, "faster", "slower")))
    rows += [
        row("Image size", g("size"), size, (False, "smaller", "larger"), lambda s: s["size"]["total"]),
        row("Smallest -m that serves /", g("min_mem_mib"), lambda v: f"{v} MiB", (False, "smaller", "larger")),
        row("QEMU RSS after load", g("rss_after_load_kib"), lambda v: f"{v / 1024:.1f} MiB",
            (False, "smaller", "larger")),
        row("Idle host CPU, % of one core (5 s)", idle, str, (False, "less", "more"), idle_value),
    ]
    return head, rows


def render_text(head, rows) -> str:
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])


def print_report(head, rows, notes: list[str]) -> None:
    """Prints the table and the notes (without Markdown backquotes) to stdout."""
    print()
    print(render_text(head, rows))
    print()
    for n in notes:
        print("- " + n.replace("`", ""))


def markdown_report(title: str, head, rows, notes: list[str]) -> list[str]:
    """The lines of a results.md: title, date, host cores and QEMU version, the table, the notes as a list."""
    md = [f"# {title}", "", f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {os.cpu_count()} host cores, "
          + run([QEMU, "--version"], timeout=10).stdout.splitlines()[0] + ".", "", render_md(head, rows), ""]
    return md + ["- " + n for n in notes]


def render_md(head, rows) -> str:
    esc = lambda c: c.replace("|", "\\|")  # noqa: E731
    out = ["| " + " | ".join(esc(c) for c in head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------------------------


def kvm_status() -> tuple[bool, str]:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
        os.close(fd)
    except OSError as e:
        return False, f"/dev/kvm: {e.strerror}"
    return True, "/dev/kvm opened"


def choose_machine(requested: str, parts: LinuxParts) -> tuple[str, str]:
    if requested == "microvm":
        return "microvm", "--machine microvm"
    if requested == "q35":
        return "q35", "--machine q35"
    if parts.mmio_cmdline:
        return "microvm", "Linux has CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y, so both boot on microvm,acpi=off"
    return "q35", (
        f"{parts.package} lacks CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES, so on microvm,acpi=off it cannot find the "
        "virtio-mmio NIC that QEMU lists as virtio_mmio.device= on the command line; both guests therefore boot "
        "on q35 (SeaBIOS) with virtio-net-pci"
    )


def cleanup() -> None:
    for p in list(LIVE_QEMU):
        stop_process(p)
    for t in list(LIVE_TAPS):
        delete_tap(t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 boots per configuration and wrk -d3s (default 5, 10s)")
    ap.add_argument("--out", default=str(REPO / "target" / "bench"), help="results directory [target/bench]")
    ap.add_argument("--machine", choices=["auto", "q35", "microvm"], default="auto",
                    help="QEMU machine for all guests [auto: microvm if Linux can use it, else q35]")
    ap.add_argument("--no-kvm", action="store_true", help="skip the Zirvium/KVM configuration")
    ap.add_argument("--user-net", action="store_true", help="use QEMU user networking instead of a tap")
    ap.add_argument("--skip-mem", action="store_true", help="skip the smallest -m search")
    a = ap.parse_args()

    runs, wrk_s = (2, 3) if a.quick else (5, 10)
    out = Path(a.out).resolve()
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    cache = REPO / "target" / "bench-cache"
    for tool in (QEMU, "wrk", "apt-get", "apt-cache", "dpkg-deb", "cargo"):
        if shutil.which(tool) is None:
            raise BenchError(f"`{tool}` not found on PATH (QEMU: see TESTING.md; wrk: apt-get install wrk)")
    started = time.time()

    elf = build_zirvium()
    hello = build_zirvium("hello")
    parts = prepare_linux(cache)
    nginx = prepare_nginx(cache)
    bulk_file = out / "upload-10MiB.bin"
    bulk_file.write_bytes(pattern_bytes(BULK_BYTES))
    machine, machine_why = choose_machine(a.machine, parts)
    kvm_ok, kvm_why = kvm_status()
    net = Network(a.user_net)
    log(f"machine: {machine} ({machine_why})")
    log(f"network: {net.why}")
    log(f"KVM: {kvm_why}")
    notes = [
        f"Machine: `{machine}` for every guest — {machine_why}.",
        f"Network: {net.why}.",
        "Common QEMU flags: `-cpu qemu64 -m 256M -smp 1 -display none -nodefaults -no-reboot`, serial on stdio, "
        "`isa-debug-exit`, virtio-net (as `images run`); only -kernel/-initrd/-append differ.",
    ]
    lin_kvm = "Linux/KVM is not measured: this machine's nested KVM (kvm_pvm) fails with \"emulation failure\" on " \
              "SSE/xgetbv/cmpxchg16b, which Linux uses (TESTING.md), so Linux runs only under TCG."
    if not Path("/sys/module/kvm_pvm").exists():
        lin_kvm = "Linux/KVM is not measured: the comparison is made under TCG with the same command line for both."
    notes.append(lin_kvm)
    log(lin_kvm)

    zirvium_size = elf.stat().st_size
    configs = []
    if kvm_ok and not a.no_kvm:
        configs.append(Config("zirvium-kvm", "Zirvium/KVM", "zirvium", "kvm", machine, elf, boot_timeout=30))
    elif not kvm_ok:
        notes.append(f"Zirvium/KVM is not measured: {kvm_why}.")
    configs.append(Config("zirvium-tcg", "Zirvium/TCG", "zirvium", "tcg", machine, elf, boot_timeout=30))
    linux_cfg = Config("linux-tcg", "Linux/TCG", "linux", "tcg", machine, parts.vmlinuz,
                       initrd=cache / "linux-initramfs.cpio.gz", boot_timeout=180)
    configs.append(linux_cfg)
    configs.append(Config("nginx-tcg", "Linux+nginx/TCG", "linux", "tcg", machine, parts.vmlinuz,
                          initrd=cache / "nginx-initramfs.cpio.gz", boot_timeout=180))

    results: dict = {}
    page: bytes | None = None
    for cfg in configs:
        if cfg.os == "linux":
            if page is None:
                raise BenchError("Zirvium never served `/`, so there is no page for the Linux guest to serve")
            if cfg.key == "nginx-tcg":
                build_nginx_initramfs(parts, nginx, page, cfg.initrd)
            else:
                build_initramfs(parts, page, cfg.initrd)
            log(f"initramfs {cfg.initrd} ({cfg.initrd.stat().st_size:,} B) serves the {len(page)}-byte page "
                f"Zirvium/TCG returned for `/`")
            size = {"vmlinuz": parts.vmlinuz.stat().st_size, "initramfs": cfg.initrd.stat().st_size}
            size["total"] = size["vmlinuz"] + size["initramfs"]
        else:
            size = {"elf": zirvium_size, "total": zirvium_size}
        log(f"== {cfg.label}: {runs} boots, wrk -d{wrk_s}s")
        cfg_runs = []
        for i in range(runs):
            with_bulk = cfg.key in ("zirvium-tcg", "nginx-tcg")
            r = measure_run(cfg, net, i, wrk_s, idle=(i == 0), logs=logs, bulk_file=bulk_file if with_bulk else None)
            cfg_runs.append(r)
            if i == 0 and "qemu_cmd" in r:
                log(f"  command: {r['qemu_cmd']}")
            if cfg.key == "zirvium-tcg" and page is None and r.get("body"):
                page = r["body"]
        cfg_notes = []
        if cfg.os == "linux" and page is not None:
            bodies = {r["body"] for r in cfg_runs if "body" in r}
            same = bodies == {page}
            cfg_notes.append("`/` body identical to Zirvium's" if same else "`/` body DIFFERS from Zirvium's")
            log(f"  {cfg_notes[-1]}")
        ok_times = [r["ready_s"] for r in cfg_runs if "ready_s" in r]
        min_mem = None
        if not ok_times:
            log(f"  {cfg.label}: no boot served `/`; skipping its memory search")
        elif not a.skip_mem:
            probe_timeout = min(120.0, max(10.0, 3 * max(ok_times) + 5))
            log(f"== {cfg.label}: smallest -m that serves / (2..256 MiB, {probe_timeout:.0f} s per probe)")
            min_mem = min_memory(cfg, net, probe_timeout, logs)
        results[cfg.key] = summarize(cfg, cfg_runs, size, min_mem, cfg_notes)
        if cfg.os == "linux":
            results[cfg.key]["linux"] = {"package": parts.package, "version": parts.version,
                                         "busybox": parts.busybox_version,
                                         "modules_loaded": list(parts.modules), "builtin": parts.builtin}
            if cfg.key == "nginx-tcg":
                results[cfg.key]["linux"]["nginx"] = nginx.version

    head, rows = build_table(results, runs, wrk_s)
    elapsed = time.time() - started
    size_reports = {}
    for image in (elf, hello):
        linked = image.with_suffix("")
        size_reports[linked.name] = sizes.report(linked, 10)
    print_report(head, rows, notes)
    print()
    for r in size_reports.values():
        print(sizes.render(r))
    for k, s in results.items():
        print(f"- {s['label']} QEMU command: {s['qemu_cmd']}")
        for n in s["notes"]:
            print(f"- {s['label']}: {n.replace('`', '')}")
    print(f"- total time {elapsed:.0f} s; results in {out}/results.md and results.json; serial logs in {logs}/")

    md = markdown_report(f"Zirvium httpd vs Linux + nginx and Linux + busybox httpd "
                         f"({'--quick' if a.quick else 'full'} run)", head, rows, notes)
    for k, s in results.items():
        md.append(f"- {s['label']}: `{s['qemu_cmd']}`")
        md += [f"- {s['label']}: {n}" for n in s["notes"]]
        if s.get("timeline"):
            md.append(f"- {s['label']} serial (run 1): `{s['timeline']['example_line']}`")
    md.append(f"- Linux guest: {parts.package} {parts.version}, busybox-static {parts.busybox_version}, "
              f"modules insmod-ed: {', '.join(parts.modules)}; built in: {', '.join(parts.builtin) or 'none'}.")
    md.append(f"- nginx {nginx.version} (Debian), 1 worker, sendfile on, keep-alive; libraries from "
              f"{', '.join(NGINX_LIBRARY_PACKAGES)}.")
    md.append(f"- Total run time {elapsed:.0f} s. See tests/bench/README.md for what each figure means.")
    md += ["", "## Zirvium image sizes", ""] + ["```\n" + sizes.render(r) + "\n```" for r in size_reports.values()]
    (out / "results.md").write_text("\n".join(md) + "\n")
    (out / "results.json").write_text(json.dumps(
        {"mode": "quick" if a.quick else "full", "runs": runs, "wrk_seconds": wrk_s, "machine": machine,
         "network": net.kind, "notes": notes, "elapsed_s": round(elapsed, 1), "results": results,
         "sizes": size_reports},
        indent=1, default=str) + "\n")
    return 0


def run_main(main_fn, prog: str) -> None:
    """Runs `main_fn` as the program `prog` and exits with its status: a BenchError is printed as
    `PROG: error: ...` (status 1), Ctrl-C as `PROG: interrupted` (130). SIGTERM/SIGHUP end like Ctrl-C, so the
    finally block stops every QEMU and deletes every tap started here."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda n, _f: sys.exit(128 + n))
    try:
        sys.exit(main_fn())
    except BenchError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    finally:
        cleanup()


if __name__ == "__main__":
    run_main(main, "bench")
