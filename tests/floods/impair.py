#!/usr/bin/env python3
"""A netem in user space, for kernels without sch_netem (tests/tests/faults_net.rs): relays Ethernet frames
between QEMU's `-netdev dgram` (UDP on 127.0.0.1) and a tap the test made, dropping, reordering and duplicating
the frames the host sends to the guest — what `tc qdisc add dev TAP root netem ...` impairs — or, with
DIRECTION `both`, the guest's too. Standard library only; run it inside the test's network namespace.

    impair.py TAP QEMU_PORT RELAY_PORT LOSS REORDER DUPLICATE SEED [to-guest|both]

LOSS, REORDER and DUPLICATE are probabilities (0.1 = 10 %). A frame picked for reordering is held back until the
next frame in its direction has gone, or 10 ms (netem's `reorder` with a 10 ms delay). On SIGTERM it prints its
counters as one JSON line on stdout.
"""

import fcntl
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
HOLD_S = 0.010


def main():
    tap_name, qemu_port, relay_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    loss, reorder, duplicate = float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
    random.seed(int(sys.argv[7]))
    both = len(sys.argv) > 8 and sys.argv[8] == "both"
    tap = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(tap, TUNSETIFF, struct.pack("16sH", tap_name.encode(), IFF_TAP | IFF_NO_PI))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", relay_port))
    qemu = ("127.0.0.1", qemu_port)
    counts = {"frames": 0, "dropped": 0, "reordered": 0, "duplicated": 0}

    def send(to_tap, frame):
        try:
            if to_tap:
                os.write(tap, frame)
            else:
                udp.sendto(frame, qemu)
        except OSError:
            pass

    held = {True: None, False: None}

    def release(to_tap):
        if held[to_tap] is not None:
            send(to_tap, held[to_tap][0])
            held[to_tap] = None

    def impair(to_tap, frame):
        if to_tap and not both:
            send(True, frame)
            return
        counts["frames"] += 1
        if random.random() < loss:
            counts["dropped"] += 1
            return
        copies = 1
        if random.random() < duplicate:
            counts["duplicated"] += 1
            copies = 2
        if held[to_tap] is None and random.random() < reorder:
            counts["reordered"] += 1
            held[to_tap] = (frame, time.monotonic() + HOLD_S)
            return
        for _ in range(copies):
            send(to_tap, frame)
        release(to_tap)

    def stop(*_):
        print(json.dumps(counts), flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    print("impair: relaying", flush=True)
    while True:
        ready, _, _ = select.select([tap, udp], [], [], HOLD_S / 2)
        if tap in ready:
            impair(False, os.read(tap, 65536))  # host -> guest
        if udp in ready:
            impair(True, udp.recv(65536))
        now = time.monotonic()
        for to_tap in (True, False):
            if held[to_tap] is not None and held[to_tap][1] <= now:
                release(to_tap)


if __name__ == "__main__":
    main()
