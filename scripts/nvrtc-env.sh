#!/usr/bin/env bash
# Sourced by the other scripts: makes libnvrtc 13.0 loadable, installing it from the Python
# package registry (nvidia-cuda-nvrtc==13.0.88, the version on our GPU machines) when the system
# has none. Nothing else of CUDA is needed to generate and compile kernels.
NVRTC_VERSION=13.0.88
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
deps="$repo_root/.deps"
lib_dir="$deps/nvidia/cu13/lib"

have_system_nvrtc() {
    ldconfig -p 2>/dev/null | grep -q 'libnvrtc\.so\.13' && return 0
    local d
    local ld_path=${LD_LIBRARY_PATH:-}
    for d in ${ld_path//:/ } /usr/local/cuda/lib64; do
        [ -e "$d/libnvrtc.so.13" ] && return 0
    done
    return 1
}

if [ -e "$lib_dir/libnvrtc.so.13" ]; then
    :
elif ! have_system_nvrtc; then
    echo "libnvrtc.so.13 not found: installing nvidia-cuda-nvrtc==$NVRTC_VERSION into $deps" >&2
    mkdir -p "$deps"
    python3 -m pip install --quiet --disable-pip-version-check --no-deps \
        --target "$deps" "nvidia-cuda-nvrtc==$NVRTC_VERSION" >&2 || {
        echo "error: could not install nvidia-cuda-nvrtc==$NVRTC_VERSION" >&2
        return 1 2>/dev/null || exit 1
    }
fi
if [ -d "$lib_dir" ]; then
    export LD_LIBRARY_PATH="$lib_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
