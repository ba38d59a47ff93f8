#!/usr/bin/env python3
"""Floods and slow clients against one HTTP server, for tests/tests/floods.rs (run inside the test's network
namespace, next to the VM's tap; never aimed anywhere else). Standard library only.

    flood.py ADDR PORT health                 -> {"ok", "ms", "in_use", "requests"}
    flood.py ADDR PORT warmup                 -> a burst of SYNs that leaves no state, then as health
    flood.py ADDR PORT KIND BASELINE_IN_USE   -> figures of the flood, then of the settle phase

KIND: syn, connections, slowloris, garbage, upload, halfopen. Every flood is bounded in count and time. After it,
/health is polled once a second (1 s timeout each) until the heap in use is within 10 % of BASELINE_IN_USE or
SETTLE_S seconds pass. One JSON object is printed on stdout.
"""

import json
import os
import random
import socket
import struct
import sys
import threading
import time

SETTLE_S = 60


def health(addr, port, timeout=1.0):
    """GET /health: (ok, ms, heap in use bytes, requests served)."""
    t0 = time.monotonic()
    try:
        with socket.create_connection((addr, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            return False, (time.monotonic() - t0) * 1000, None, None
        doc = json.loads(body)
        mem = doc["memory"]
        in_use = mem["total_bytes"] - mem["free_bytes"] - mem["ballooned_bytes"]
        return True, (time.monotonic() - t0) * 1000, in_use, doc["requests"]
    except (OSError, ValueError, KeyError):
        return False, (time.monotonic() - t0) * 1000, None, None


class Prober(threading.Thread):
    """Asks /health every 0.5 s during a flood; counts the answers."""

    def __init__(self, addr, port):
        super().__init__(daemon=True)
        self.addr, self.port = addr, port
        self.stop = threading.Event()
        self.ok = self.failed = 0

    def run(self):
        while not self.stop.is_set():
            ok, _, _, _ = health(self.addr, self.port)
            if ok:
                self.ok += 1
            else:
                self.failed += 1
            self.stop.wait(0.5)

    def finish(self):
        self.stop.set()
        self.join()
        return {"health_ok_during": self.ok, "health_failed_during": self.failed}


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def syn_packet(src, dst, sport, dport):
    """An IPv4 + TCP SYN (RFC 9293 §3.1) with a random sequence number."""
    seq = random.getrandbits(32)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x02, 65535, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), random.getrandbits(16), 0, 64, socket.IPPROTO_TCP, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return ip + tcp


def syn_flood(addr, port, count=20000, seconds=10):
    """Raw SYNs: half from unused addresses of the subnet (nobody answers the SYN-ACK), half from the namespace's
    own address on random ports (its kernel answers the SYN-ACK with RST)."""
    own = addr.rsplit(".", 1)[0] + ".1"
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    prefix = addr.rsplit(".", 1)[0]
    sent, t0 = 0, time.monotonic()
    while sent < count and time.monotonic() - t0 < seconds:
        src = own if (own and sent % 2) else f"{prefix}.{random.randint(100, 250)}"
        raw.sendto(syn_packet(src, addr, random.randint(1024, 65535), port), (addr, 0))
        sent += 1
    raw.close()
    return {"syns_sent": sent, "flood_s": round(time.monotonic() - t0, 2)}


def hold(socks, seconds):
    time.sleep(seconds)
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


def open_many(addr, port, n, seconds=20):
    """Up to n connected sockets within `seconds` (refused or reset ones are counted, not kept)."""
    socks, refused, t0 = [], 0, time.monotonic()
    while len(socks) + refused < n and time.monotonic() - t0 < seconds:
        try:
            socks.append(socket.create_connection((addr, port), timeout=2))
        except OSError:
            refused += 1
    return socks, refused


def connection_flood(addr, port, n=1500):
    """More connections than the server's limit (max_connections, the socket limit), held idle for 5 s."""
    socks, refused = open_many(addr, port, n)
    opened = len(socks)
    hold(socks, 5)
    return {"connections_opened": opened, "connections_refused": refused}


def slowloris(addr, port, n=1000, seconds=15):
    """n clients each sending a request head one header line every 5 s, never finishing it; at the end, how many
    the server answered 408 or closed (its header deadline) and how many it still held open."""
    socks, refused = open_many(addr, port, n)
    for s in socks:
        s.setblocking(False)
    t0, lines, dropped = time.monotonic(), 0, 0
    while time.monotonic() - t0 < seconds:
        alive = []
        for i, s in enumerate(socks):
            try:
                s.send(b"GET / HTTP/1.1\r\n" if lines == 0 else f"X-Slow-{lines}: {i}\r\n".encode())
                alive.append(s)
            except OSError:
                dropped += 1
                s.close()
        socks, lines = alive, lines + 1
        time.sleep(5)
    kept = len(socks)
    # What the server did with the heads it never got whole: a 408 or a close (its header deadline), or nothing.
    answered_408, closed, still_open = 0, 0, 0
    for s in socks:
        s.settimeout(0.05)
        try:
            data = s.recv(4096)
            if data.startswith(b"HTTP/1.1 408"):
                answered_408 += 1
            elif not data:
                closed += 1
            else:
                still_open += 1
        except socket.timeout:
            still_open += 1
        except OSError:
            closed += 1
    hold(socks, 0)
    return {"slow_clients": kept + dropped, "slow_refused": refused, "slow_dropped_by_server": dropped,
            "slow_held_to_end": kept, "slow_answered_408": answered_408, "slow_closed_by_server": closed,
            "slow_still_open": still_open}


def garbage(addr, port, n=200, size=64 * 1024):
    """n connections each sending `size` random bytes; counts the answers (400s) and closes."""
    answered = 0
    for _ in range(n):
        try:
            with socket.create_connection((addr, port), timeout=2) as s:
                s.settimeout(2)
                try:
                    s.sendall(os.urandom(size))
                except OSError:
                    pass
                try:
                    if s.recv(64).startswith(b"HTTP/1.1 4"):
                        answered += 1
                except OSError:
                    pass
        except OSError:
            pass
    return {"garbage_connections": n, "garbage_bytes": n * size, "garbage_answered_4xx": answered}


def upload(addr, port, total=100 * 1000 * 1000):
    """A 100 MB PUT to a route with a 1 MiB body limit: the answer must be 413 and the connection closed long
    before the body is sent."""
    s = socket.create_connection((addr, port), timeout=10)
    s.settimeout(10)
    s.sendall(f"PUT /upload-limit HTTP/1.1\r\nHost: t\r\nContent-Length: {total}\r\n\r\n".encode())
    chunk, sent, t0 = os.urandom(64 * 1024), 0, time.monotonic()
    status, closed = None, False
    s.setblocking(False)
    reply = b""
    while sent < total and time.monotonic() - t0 < 60:
        try:
            part = s.recv(4096)
            if part:
                reply += part
            else:
                closed = True
                break
        except BlockingIOError:
            pass
        except OSError:
            closed = True
            break
        try:
            sent += s.send(chunk[: total - sent])
        except BlockingIOError:
            time.sleep(0.01)
        except OSError:
            closed = True
            break
    if reply.startswith(b"HTTP/1.1 "):
        status = int(reply[9:12])
    s.close()
    return {"upload_status": status, "upload_bytes_sent": sent, "upload_closed": closed,
            "upload_s": round(time.monotonic() - t0, 2)}


def sh(*cmd):
    import subprocess
    subprocess.run(cmd, check=True, capture_output=True)


# Sockets of clients that vanished: kept open (so their kernel never sends FIN or RST) until the process ends.
VANISHED = []


def halfopen(addr, port, n=200, tap="ztap0"):
    """n clients that send half a request and vanish: they connect from an extra address of the namespace, which
    is then removed, so the server sees neither FIN nor RST (nothing answers for that address any more) and must
    time them out itself."""
    src = addr.rsplit(".", 1)[0] + ".50"
    sh("ip", "addr", "add", f"{src}/32", "dev", tap)
    try:
        for _ in range(n):
            try:
                s = socket.socket()
                s.bind((src, 0))
                s.settimeout(2)
                s.connect((addr, port))
                s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")
                VANISHED.append(s)
            except OSError:
                pass
        time.sleep(0.5)
    finally:
        sh("ip", "addr", "del", f"{src}/32", "dev", tap)
    return {"halfopen_vanished": len(VANISHED)}


def warmup(addr, port, count=3000):
    """A burst of SYNs from the namespace's own address (its kernel resets each handshake, so no state stays),
    then the handshake timeout: brings the NIC's on-demand buffer pools to their high-water mark before the
    baseline is taken."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    own = addr.rsplit(".", 1)[0] + ".1"
    for _ in range(count):
        raw.sendto(syn_packet(own, addr, random.randint(1024, 65535), port), (addr, 0))
    raw.close()
    time.sleep(6)


def settle(addr, port, baseline, t0):
    """Polls /health once a second until the heap in use is within 10 % of `baseline` (or SETTLE_S)."""
    last = None
    while True:
        ok, ms, in_use, requests = health(addr, port)
        if ok:
            last = {"health_ms": round(ms, 1), "in_use_after": in_use, "requests_after": requests}
            if abs(in_use - baseline) <= baseline // 10:
                break
        if time.monotonic() - t0 > SETTLE_S:
            break
        time.sleep(1)
    out = last or {"health_ms": None, "in_use_after": None, "requests_after": None}
    out["settle_s"] = round(time.monotonic() - t0, 1)
    return out


FLOODS = {"syn": syn_flood, "connections": connection_flood, "slowloris": slowloris, "garbage": garbage,
          "upload": upload, "halfopen": halfopen}


def main():
    addr, port, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if kind == "warmup":
        warmup(addr, port)
        kind = "health"
    if kind == "health":
        ok, ms, in_use, requests = health(addr, port)
        print(json.dumps({"ok": ok, "ms": round(ms, 1), "in_use": in_use, "requests": requests}))
        return
    baseline = int(sys.argv[4])
    prober = Prober(addr, port)
    prober.start()
    figures = {"flood": kind}
    figures.update(FLOODS[kind](addr, port))
    figures.update(prober.finish())
    figures.update(settle(addr, port, baseline, time.monotonic()))
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
