"""Peer timings for benchmark rows that shared/bench/peers.py does not cover (head dim 64 at both
lengths, dense and causal): torch SDPA's FlashAttention-2 and cuDNN backends, timed the same way
(median of triton.testing.do_bench). Run it in the same command as the benchmark."""
import json
import os

import torch
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel

rows = []


def bench(fn):
    fn()
    torch.cuda.synchronize()
    return triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median")


def main():
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    g = torch.Generator(device="cuda").manual_seed(0)
    for s in (4096, 16384):
        for causal in (True, False):
            b, h, d = 1, 32, 64
            q, k, v = (torch.randn(b, h, s, d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
            flops = 4 * b * h * s * s * d * (0.5 if causal else 1.0)
            case = "dense-causal" if causal else "dense"
            for name, be in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
                with sdpa_kernel([be]):
                    ms = bench(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal))
                tf = flops / ms / 1e9
                rows.append(dict(case=case, shape=f"b{b} h{h}/{h} s{s} d{d}", backend=name, ms=ms, tflops=tf))
                print(f"{case:14s} b{b} h{h}/{h} s{s} d{d}   {name:6s} {ms:8.3f} ms {tf:7.1f} TFLOP/s", flush=True)
    out = os.environ.get("OUT")
    if out:
        json.dump(rows, open(os.path.join(out, "peers-extra.json"), "w"), indent=1)


main()
