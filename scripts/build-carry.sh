#!/usr/bin/env bash
# Builds the release test executables that hold GPU tests, the benchmarks and the CLI, and
# copies them (stripped) with the peer benchmark into .carry/, the folder a GPU machine without
# a Rust toolchain runs from (scripts/gpu-check.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/nvrtc-env.sh
rm -rf .carry && mkdir -p .carry/tests
cargo build --release --bins
# Prints "name path" for each executable that cargo's JSON messages name; $1 picks test or bench.
executables() {
    python3 -c '
import json, sys
kind = sys.argv[1]
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    if (kind == "test" and m.get("profile", {}).get("test")) or (kind == "bench" and "bench" in m["target"]["kind"]):
        print(m["target"]["name"], m["executable"])
' "$1"
}
cargo test --release --workspace --no-run --message-format=json 2>/dev/null | executables test |
    while read -r name exe; do
        # Only executables with GPU (ignored) tests travel: the rest ran here, and the carried
        # folder has a size limit.
        ignored=$("$exe" --list --ignored 2>/dev/null || true)
        grep -q ': test$' <<<"$ignored" || continue
        cp "$exe" ".carry/tests/$name" && strip ".carry/tests/$name"
    done
cargo bench --no-run --message-format=json 2>/dev/null | executables bench |
    while read -r name exe; do
        cp "$exe" ".carry/bench-$name" && strip ".carry/bench-$name"
    done
cp target/release/flashgen .carry/flashgen && strip .carry/flashgen
peers=../shared/bench/peers.py
[ -f "$peers" ] || peers=shared/bench/peers.py
[ -f "$peers" ] && cp "$peers" .carry/peers.py
cp benches/peers_extra.py .carry/
decode_peers=../shared/bench/decode_peers.py
[ -f "$decode_peers" ] || decode_peers=shared/bench/decode_peers.py
[ -f "$decode_peers" ] && cp "$decode_peers" .carry/decode_peers.py
flex_mods=../shared/bench/flex_mods.py
[ -f "$flex_mods" ] || flex_mods=shared/bench/flex_mods.py
[ -f "$flex_mods" ] && cp "$flex_mods" .carry/flex_mods.py
du -sh .carry
ls .carry .carry/tests
