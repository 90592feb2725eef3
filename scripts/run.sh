#!/usr/bin/env bash
# The main job on the built-in default set: generate and NVRTC-compile every default kernel for
# the local GPU (or sm_90a when there is none) and print the resource table.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/nvrtc-env.sh
cargo run --release --quiet --bin flashgen -- compile --default-set "$@"
