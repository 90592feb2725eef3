#!/usr/bin/env bash
# Runs every test that needs no GPU: formatting, lints, unit and integration tests (including an
# NVRTC compile of every kernel in the search space). GPU tests are #[ignore]d here; run them on
# a GPU machine with scripts/gpu-check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/nvrtc-env.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace --release
