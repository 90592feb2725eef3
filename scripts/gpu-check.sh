#!/usr/bin/env bash
# Runs on a GPU machine from the repository root, over the binaries of scripts/build-carry.sh:
#   scripts/gpu-check.sh [tests] [sanitizer] [bench] [peers] [bench-apb] [bench-custom] [bench-decode] [tune-quick] [tune-full]
#                        [tune-decode] [bench-new-shapes] [timing-check]
#   (default: the first four). $TESTS, when set, names the test executables to run;
#   $TEST_THREADS (default 1) runs that many tests of a binary at once (correctness only: the
#   GPU test binaries pass with 4-6, in about half the time).
# Logs go to $OUT (default /tmp/flashgen-out); a short summary is printed last.
set -uo pipefail
out=${OUT:-/tmp/flashgen-out}
mkdir -p "$out"
carry=.carry
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export FLASHGEN_CACHE_DIR=${FLASHGEN_CACHE_DIR:-/tmp/flashgen-cache}
export PYTHONUNBUFFERED=1
# libnccl (multi-GPU APB prefill): the system's, else the one PyTorch ships.
for d in /usr/local/cuda/lib64 /usr/lib/x86_64-linux-gnu /usr/lib64 \
    "$(python3 -c 'import nvidia.nccl, os; print(os.path.dirname(nvidia.nccl.__file__))' 2>/dev/null)/lib"; do
    if [ -e "$d/libnccl.so.2" ]; then
        export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$d
        break
    fi
done
steps=${*:-tests sanitizer bench peers}
summary=()

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv | tee "$out/gpu.txt"

for step in $steps; do
    start=$(date +%s)
    case $step in
    tests)
        rc=0
        list=("$carry"/tests/*)
        if [ -n "${TESTS:-}" ]; then
            list=()
            for name in $TESTS; do list+=("$carry/tests/$name"); done
        fi
        for t in "${list[@]}"; do
            echo "== $(basename "$t")"
            "$t" --include-ignored --test-threads="${TEST_THREADS:-1}" 2>&1 || rc=1
        done > "$out/tests.log"
        grep -E "^test result|FAILED|panicked" "$out/tests.log" | tail -40
        summary+=("tests: rc=$rc, $(grep -c '\.\.\. ok' "$out/tests.log") ok, $(grep -c '\.\.\. FAILED' "$out/tests.log") failed")
        ;;
    sanitizer)
        rc=0
        for tool in memcheck racecheck; do
            for t in gpu_kernels gpu_apb_compress gpu_apb_prefill gpu_decode gpu_custom; do
                [ -x "$carry/tests/$t" ] || continue
                compute-sanitizer --tool "$tool" --error-exitcode 9 --target-processes all \
                    "$carry/tests/$t" --include-ignored --test-threads=1 sanitizer_ \
                    > "$out/sanitizer-$tool-$t.log" 2>&1 || rc=1
                tail -5 "$out/sanitizer-$tool-$t.log"
            done
        done
        summary+=("sanitizer: rc=$rc ($(grep -h 'ERROR SUMMARY' "$out"/sanitizer-*.log | tr '\n' ' '))")
        ;;
    bench)
        "$carry"/bench-attention --json "$out/bench.json" 2>&1 | tee "$out/bench.log"
        summary+=("bench: rc=${PIPESTATUS[0]}")
        ;;
    bench-apb)
        rc=0
        "$carry"/bench-apb_compress --json "$out/bench-apb_compress.json" 2>&1 | tee "$out/bench-apb_compress.log"
        [ "${PIPESTATUS[0]}" = 0 ] || rc=1
        "$carry"/bench-apb_prefill --json "$out/bench-apb_prefill.json" 2>&1 | tee "$out/bench-apb_prefill.log"
        [ "${PIPESTATUS[0]}" = 0 ] || rc=1
        summary+=("bench-apb: rc=$rc")
        ;;
    bench-custom)
        "$carry"/bench-custom --json "$out/bench-custom.json" 2>&1 | tee "$out/bench-custom.log"
        rc=${PIPESTATUS[0]}
        if [ -f "$carry/flex_mods.py" ]; then
            python3 "$carry/flex_mods.py" 2>&1 | tee "$out/flex_mods.log"
        fi
        summary+=("bench-custom: rc=$rc")
        ;;
    bench-decode)
        # flashgen's decode and the peers' (torch SDPA, FlexAttention) in one command, so both
        # see the same machine state.
        "$carry"/bench-decode --json "$out/bench-decode.json" 2>&1 | tee "$out/bench-decode.log"
        rc=${PIPESTATUS[0]}
        python3 "$carry/decode_peers.py" 2>&1 | tee "$out/decode-peers.log"
        summary+=("bench-decode: rc=$rc, peers rc=${PIPESTATUS[0]}")
        ;;
    peers)
        python3 "$carry/peers.py" 2>&1 | tee "$out/peers.log"
        rc=${PIPESTATUS[0]}
        python3 "$carry/peers_extra.py" 2>&1 | tee -a "$out/peers.log"
        summary+=("peers: rc=$rc, extra rc=${PIPESTATUS[0]}")
        ;;
    tune-decode)
        # The decode targets alone: row tiles and split counts against the heuristic.
        "$carry/flashgen" tune --quick --variant decode-dense --variant decode-streaming \
            --variant decode-selected --variant decode-mixed \
            -o "$out/tune-decode.toml" --json "$out/tune-decode.json" \
            > "$out/tune-decode.log" 2> "$out/tune-decode.err"
        rc=$?
        grep -v "^\s*$" "$out/tune-decode.log" | tail -40
        tail -3 "$out/tune-decode.err"
        summary+=("tune-decode: rc=$rc, $(tail -1 "$out/tune-decode.log")")
        ;;
    bench-new-shapes)
        # The d256 and APB rows and the peers on the same shapes, in one command.
        "$carry"/bench-attention --only dense-causal-d256,dense-d256,apb \
            --json "$out/bench-new-shapes.json" 2>&1 | tee "$out/bench-new-shapes.log"
        rc=${PIPESTATUS[0]}
        python3 "$carry/peers_extra.py" 2>&1 | tee -a "$out/bench-new-shapes.log"
        summary+=("bench-new-shapes: rc=$rc, peers rc=${PIPESTATUS[0]}")
        ;;
    timing-check)
        # The benchmark and the tuner on dense causal s16k d128: one timing function, so the
        # row and the tune's default time agree; the uniform inputs show what the values change.
        rc=0
        : > "$out/timing-check.log"
        for run in 1 2; do
            for inputs in "" --uniform-inputs; do
                "$carry"/bench-attention --only dense-causal $inputs > "$out/timing-check.run" 2>&1 || rc=1
                grep -E "s16384 d128" "$out/timing-check.run" | sed "s/^/run $run ${inputs:-tuner-inputs} /" \
                    | tee -a "$out/timing-check.log"
            done
        done
        "$carry/flashgen" tune --quick --variant dense --head-dim 128 --seq 16384 \
            -o "$out/timing-check.toml" > "$out/timing-check.run" 2>&1 || rc=1
        grep -E "causal|target" "$out/timing-check.run" | tee -a "$out/timing-check.log"
        rm -f "$out/timing-check.run"
        summary+=("timing-check: rc=$rc")
        ;;
    tune-quick | tune-full)
        flags=()
        [ "$step" = tune-quick ] && flags=(--quick)
        "$carry/flashgen" tune "${flags[@]}" -o "$out/$step.toml" --json "$out/$step.json" \
            > "$out/$step.log" 2> "$out/$step.err"
        rc=$?
        grep -v "^\s*$" "$out/$step.log" | tail -45
        tail -3 "$out/$step.err"
        summary+=("$step: rc=$rc, $(tail -1 "$out/$step.log")")
        ;;
    *)
        echo "unknown step $step" >&2
        ;;
    esac
    echo "[$step took $(( $(date +%s) - start ))s]"
done
echo "==== summary"
printf '%s\n' "${summary[@]}"
