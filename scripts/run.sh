#!/usr/bin/env bash
# The main job on the built-in default set. On a machine with a CUDA GPU: `flashgen tune`, which
# times every tile of every default kernel on that GPU and writes the tuned config the runtime
# reads. Without a GPU: generate and NVRTC-compile every default kernel for sm_90a and print
# the resource table. Arguments go to the subcommand (e.g. `--quick` on a GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/nvrtc-env.sh
cargo build --release --quiet --bin flashgen
if target/release/flashgen info 2> /dev/null | grep -q '^GPU:.*compute capability'; then
    exec target/release/flashgen tune "$@"
fi
exec target/release/flashgen compile --default-set "$@"
