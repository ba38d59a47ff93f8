#!/bin/sh
# Makes vendor/tokio: tokio 1.54.1 as published on crates.io, with hermit.patch applied (Hermit cases in `net`:
# the `libc` dependency, the raw-descriptor conversions). Run before building this workspace; does nothing when
# vendor/tokio is newer than the patch. Needs cargo and patch(1).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
stamp="$here/vendor/.tokio-1.54.1-patched"
if [ -f "$stamp" ] && [ "$stamp" -nt "$here/hermit.patch" ]; then
    exit 0
fi
cargo fetch --quiet --manifest-path "$here/fetch/Cargo.toml"
src=""
for d in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/tokio-1.54.1; do
    [ -f "$d/Cargo.toml" ] && src="$d"
done
if [ -z "$src" ]; then
    echo "prepare.sh: tokio 1.54.1 not found in cargo's registry sources after cargo fetch" >&2
    exit 1
fi
rm -rf "$here/vendor/tokio"
mkdir -p "$here/vendor"
cp -R "$src" "$here/vendor/tokio"
patch --quiet -d "$here/vendor/tokio" -p1 < "$here/hermit.patch"
touch "$stamp"
echo "prepare.sh: vendor/tokio = tokio 1.54.1 + hermit.patch"
