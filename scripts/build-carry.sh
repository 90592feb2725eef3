#!/usr/bin/env bash
# Builds the release test executables, the benchmark and the CLI, and copies them (stripped) with
# the peer benchmark into .carry/, the folder a GPU machine without a Rust toolchain runs from
# (scripts/gpu-check.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/nvrtc-env.sh
rm -rf .carry && mkdir -p .carry/tests
cargo build --release --bins
cargo test --release --workspace --no-run --message-format=json 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        print(m["target"]["name"], m["executable"])
' | while read -r name exe; do
    cp "$exe" ".carry/tests/$name" && strip ".carry/tests/$name"
done
cargo bench --no-run --message-format=json 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "bench" in m["target"]["kind"]:
        print(m["target"]["name"], m["executable"])
' | while read -r name exe; do
    cp "$exe" ".carry/bench-$name" && strip ".carry/bench-$name"
done
cp target/release/flashgen .carry/flashgen && strip .carry/flashgen
peers=../shared/bench/peers.py
[ -f "$peers" ] || peers=shared/bench/peers.py
[ -f "$peers" ] && cp "$peers" .carry/peers.py
cp benches/peers_extra.py .carry/
du -sh .carry
ls .carry .carry/tests
