#!/usr/bin/env python3
"""sizes.py - what a Zirvium image is made of: loaded bytes per section, code and data per crate, the largest
symbols, from the linked ELF's symbol table (`nm -S -C`, binutils). bench.py prints it so growth shows up.

usage: python3 tests/bench/sizes.py ELF [--top N] [--json]

ELF is the linked image with symbols (target/x86_64-unknown-none/release/APP); `images build` writes the boot
image without them beside it as APP.elf, whose file size is reported too when it exists. Python 3.11 standard
library only.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

# Names that are not crates: primitive types and generic parameters an impl may be written for.
NOT_CRATES = {"str", "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize",
              "bool", "char", "T", "F", "dyn", "mut", "impl", "fn", "["}


def crate_of(name: str) -> str:
    """The crate a demangled symbol belongs to: the first path segment, for `<A as B>::f` A's crate (B's when
    A is a primitive or generic type); `[no path]` for symbols without a path (entry stubs, memcpy, ...)."""
    if name.startswith("<"):
        inner = re.match(r"<[&*]*(?:mut |const |dyn )?([A-Za-z_][A-Za-z0-9_]*)", name)
        first = inner.group(1) if inner else "?"
        if first in NOT_CRATES or first in ("alloc", "core"):
            trait = re.search(r" as ([A-Za-z_][A-Za-z0-9_]*)::", name)
            if trait and first in NOT_CRATES:
                return trait.group(1)
        return first
    if "::" not in name:
        return "[no path]" if not name.startswith("_ZN") else "?"
    return name.split("::", 1)[0]


def sections(elf: Path) -> dict[str, int]:
    """Allocated sections and their sizes (bytes), from `readelf -SW`."""
    out = subprocess.run(["readelf", "-SW", str(elf)], capture_output=True, text=True, check=True).stdout
    sizes = {}
    for line in out.splitlines():
        m = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+(\S+)\s+[0-9a-f]+\s+[0-9a-f]+\s+([0-9a-f]+)\s+\S+\s+(\S*)", line)
        if m and "A" in m.group(4):
            sizes[m.group(1)] = int(m.group(3), 16)
    return sizes


def report(elf: Path, top: int) -> dict:
    """Sizes of `elf`: file, stripped boot image, sections, per crate and kind (code/data), largest symbols."""
    out = subprocess.run(["nm", "-S", "--size-sort", "-C", str(elf)], capture_output=True, text=True,
                         check=True).stdout
    by_crate: Counter[str] = Counter()
    code: Counter[str] = Counter()
    symbols = []
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) < 4:
            continue
        _, size, kind, name = parts
        if kind.lower() not in "trd":
            continue
        n = int(size, 16)
        c = crate_of(name)
        by_crate[c] += n
        if kind.lower() == "t":
            code[c] += n
        symbols.append((n, kind, name))
    symbols.sort(reverse=True)
    boot = elf.with_suffix(".elf")
    return {
        "elf": str(elf),
        "file_bytes": elf.stat().st_size,
        "boot_image": str(boot) if boot.is_file() else None,
        "boot_image_bytes": boot.stat().st_size if boot.is_file() else None,
        "sections": sections(elf),
        "crates": [{"crate": c, "bytes": b, "code_bytes": code[c]} for c, b in by_crate.most_common()],
        "symbols": [{"bytes": n, "kind": k, "name": s} for n, k, s in symbols[:top]],
    }


def render(r: dict, crates: int = 15) -> str:
    """The report as text: one line of totals, a crate table, the largest symbols."""
    sec = r["sections"]
    loaded = sum(v for k, v in sec.items() if k not in (".bss", ".stack"))
    lines = [
        f"{Path(r['elf']).name}: boot image {r['boot_image_bytes'] or '?'} B (stripped), linked ELF "
        f"{r['file_bytes']} B; loaded {loaded} B = "
        + ", ".join(f"{k} {v}" for k, v in sec.items() if k not in (".bss", ".stack"))
        + f"; zeroed at boot: .bss {sec.get('.bss', 0)} B",
        "  by crate (code+data bytes): " + ", ".join(f"{c['crate']} {c['bytes']}" for c in r["crates"][:crates]),
        "  largest symbols: " + "; ".join(f"{s['name'][:70]} {s['bytes']}" for s in r["symbols"]),
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("elf", type=Path)
    ap.add_argument("--top", type=int, default=10, help="largest symbols to list")
    ap.add_argument("--json", action="store_true", help="print JSON instead of text")
    a = ap.parse_args()
    r = report(a.elf, a.top)
    print(json.dumps(r, indent=1) if a.json else render(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
