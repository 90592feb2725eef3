#!/usr/bin/env bash
# Runs every test that needs no GPU: formatting, lints, unit and integration tests (including an
# NVRTC compile of every kernel in the search space). GPU tests are #[ignore]d here; run them on
# a GPU machine with scripts/gpu-check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/nvrtc-env.sh
cargo fmt --all -- --check
# The variant modules are declared by a macro (flashgen_codegen::for_each_variant!), which
# cargo fmt does not follow: check them by path.
rustfmt --edition 2021 --check codegen/src/variants/*.rs runtime/src/variants/*.rs
cargo clippy --workspace --all-targets --quiet -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --release 2>&1 | tee "$log"
# One closing line over every test binary and doc-test run.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1); if ($i ~ /^ignored/) s += $(i-1) } }
     END { printf "total: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
