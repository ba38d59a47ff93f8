#!/usr/bin/env bash
# Runs Zirvium's fuzz targets (cargo fuzz / libFuzzer) for a bounded time or number of executions each and prints,
# per target, executions, coverage (libFuzzer's `cov:` edges and `ft:` features) and crashes.
#
#   fuzz/run.sh --smoke                 every target 3 s (CI; an unoptimised build, which compiles much faster)
#   fuzz/run.sh --time 60 [TARGET...]   60 s per target
#   fuzz/run.sh --runs 10000000 TARGET  a number of executions per target (the 10^7 long run)
#
# Inputs come from fuzz/corpus/TARGET (the seeds in the repository, read only) plus a scratch corpus in
# fuzz/target/corpus/TARGET that keeps what the fuzzer found between runs. A crash, timeout or out-of-memory
# leaves its input in fuzz/artifacts/TARGET/ (reproduce: cargo +nightly fuzz run -s none TARGET FILE) and makes
# the script exit 1. Installs cargo-fuzz when missing (--no-install: fail instead).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

mode_args=(-max_total_time=10)
build=(--release)
install=1
targets=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --smoke) mode_args=(-max_total_time=3) build=(--dev); shift ;;
        --time) mode_args=("-max_total_time=$2"); shift 2 ;;
        --runs) mode_args=("-runs=$2"); shift 2 ;;
        --no-install) install=0; shift ;;
        -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
        -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done

# The tools: cargo-fuzz (from crates.io, fast when present) and a toolchain. The nightly toolchain is used when
# installed; without it the default toolchain builds the targets too (with `-s none` cargo-fuzz needs no nightly
# feature), so a machine that cannot download toolchains still runs them.
if ! cargo fuzz --version >/dev/null 2>&1; then
    [[ $install == 1 ]] || { echo "run.sh: cargo-fuzz is missing" >&2; exit 1; }
    cargo install cargo-fuzz --locked
fi
if cargo +nightly --version >/dev/null 2>&1; then
    fuzz=(cargo +nightly fuzz)
else
    echo "run.sh: no nightly toolchain; building with $(cargo --version)"
    fuzz=(cargo fuzz)
fi

if [[ ${#targets[@]} -eq 0 ]]; then
    mapfile -t targets < <("${fuzz[@]}" list)
fi

# No sanitizer: the targets are safe Rust (bounds are checked anyway), and speed matters for 10^7 runs; debug
# assertions and overflow checks are on (cargo fuzz's default). The smoke run builds unoptimised: a few seconds
# per target need no speed, and the build from a clean checkout takes a fraction of the optimised one's time.
"${fuzz[@]}" build -s none "${build[@]}"
if [[ ${build[0]} == --dev ]]; then
    bin=target/x86_64-unknown-linux-gnu/debug
else
    bin=target/x86_64-unknown-linux-gnu/release
fi

# Per-target libFuzzer options: longest input and dictionary.
options() {
    case "$1" in
        fat) echo "-max_len=65600" ;;
        initrd) echo "-max_len=65536" ;;
        gpt | nvme) echo "-max_len=16384" ;;
        http_connection) echo "-max_len=16384 -dict=dict/http.dict" ;;
        http_parsers) echo "-max_len=8192 -dict=dict/http.dict" ;;
        xenstore) echo "-max_len=16384 -dict=dict/xenstore.dict" ;;
        cmdline) echo "-max_len=1024 -dict=dict/cmdline.dict" ;;
        vmbus_ring | hyperv_ic | xen_netfront | xen_blkfront | virtio_net | virtio_blk) echo "-max_len=16384" ;;
        *) echo "-max_len=8192" ;;
    esac
}

# The device targets allocate and free megabytes of page-aligned memory per input; without these glibc hands it
# back to the kernel every time and page faults dominate (8x slower for xen_netfront).
export GLIBC_TUNABLES="${GLIBC_TUNABLES:-glibc.malloc.trim_threshold=4294967295:glibc.malloc.mmap_threshold=33554432:glibc.malloc.top_pad=268435456}"

failed=0
passed=0
printf '%-16s %12s %8s %8s %8s  %s\n' target executions cov ft crashes result
for t in "${targets[@]}"; do
    mkdir -p "target/corpus/$t" "artifacts/$t" "corpus/$t"
    before=$(find "artifacts/$t" -type f | wc -l)
    log="target/logs/$t.log"
    mkdir -p target/logs
    # shellcheck disable=SC2046
    set +e
    "$bin/$t" "target/corpus/$t" "corpus/$t" $(options "$t") "${mode_args[@]}" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="artifacts/$t/" >"$log" 2>&1
    rc=$?
    set -e
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
    crashes=$(($(find "artifacts/$t" -type f | wc -l) - before))
    result=ok
    if [[ $rc -ne 0 || $crashes -gt 0 ]]; then
        result="FAILED (exit $rc, log $PWD/$log)"
        failed=$((failed + 1))
    else
        passed=$((passed + 1))
    fi
    printf '%-16s %12s %8s %8s %8s  %s\n' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$crashes" "$result"
done
echo "fuzz: $passed passed, $failed failed"
if [[ $failed -ne 0 ]]; then
    echo "run.sh: crashes found; inputs are in fuzz/artifacts/" >&2
    exit 1
fi
