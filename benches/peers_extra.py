"""Peer timings for benchmark rows that shared/bench/peers.py does not cover: head dim 64 at both
lengths, dense and causal; head dim 256 at 16 heads, s16384, dense and causal; and APB's local
block (8192 queries over an anchor of 2048, passing blocks of 4096 and the 8192 local keys, GQA
32/8, d128: every prefix key and the local keys up to the query, which is SDPA's bottom-right
causal mask at sq 8192, sk 14336). torch SDPA's FlashAttention-2 and cuDNN backends and
FlexAttention, timed the same way as peers.py (median of triton.testing.do_bench); FLOPs count
the visible pairs. Run it in the same command as the benchmark."""
import json
import os

import torch
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

rows = []


def bench(fn):
    fn()
    torch.cuda.synchronize()
    return triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median")


flex = torch.compile(flex_attention, dynamic=False)


def record(case, shape, name, ms, flops):
    tf = flops / ms / 1e9
    rows.append(dict(case=case, shape=shape, backend=name, ms=ms, tflops=tf))
    print(f"{case:18s} {shape:34s} {name:6s} {ms:8.3f} ms {tf:7.1f} TFLOP/s", flush=True)


def sdpa(case, shape, flops, backends, **kwargs):
    for name, be in backends:
        try:
            with sdpa_kernel([be]):
                ms = bench(lambda: torch.nn.functional.scaled_dot_product_attention(**kwargs))
            record(case, shape, name, ms, flops)
        except Exception as e:  # a backend that does not take the shape or the mask
            print(f"{case} {shape} {name} failed: {type(e).__name__}: {str(e)[:120]}", flush=True)


BACKENDS = (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION))


def d256(g):
    b, h, s, d = 1, 16, 16384, 256
    q, k, v = (torch.randn(b, h, s, d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
    for causal in (True, False):
        case = "dense-causal-d256" if causal else "dense-d256"
        shape = f"b{b} h{h}/{h} s{s} d{d}"
        flops = 4 * b * h * s * s * d * (0.5 if causal else 1.0)
        sdpa(case, shape, flops, BACKENDS, query=q, key=k, value=v, is_causal=causal)
        bm = create_block_mask(lambda b_, h_, qi, ki: qi >= ki, b, None, s, s, device="cuda") if causal else None
        try:
            record(case, shape, "flex", bench(lambda: flex(q, k, v, block_mask=bm)), flops)
        except Exception as e:
            print(f"{case} {shape} flex failed: {type(e).__name__}: {str(e)[:120]}", flush=True)


def apb(g):
    from torch.nn.attention.bias import causal_lower_right

    b, hq, hkv, d = 1, 32, 8, 128
    anchor, passing, local = 2048, 4096, 8192
    prefix = anchor + passing
    sk = prefix + local
    q = torch.randn(b, hq, local, d, device="cuda", dtype=torch.bfloat16, generator=g)
    k, v = (torch.randn(b, hkv, sk, d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(2))
    pairs = local * prefix + local * (local + 1) // 2
    flops = 4 * b * hq * d * pairs
    case, shape = "apb", f"b{b} h{hq}/{hkv} s{local} over {anchor}+{passing}+{local} d{d}"
    # SDPA's bottom-right causal bias; K and V repeated per query head (the bias path takes no GQA).
    kr, vr = (x.repeat_interleave(hq // hkv, dim=1) for x in (k, v))
    sdpa(case, shape, flops, BACKENDS, query=q, key=kr, value=vr, attn_mask=causal_lower_right(local, sk))
    bm = create_block_mask(lambda b_, h_, qi, ki: ki <= qi + prefix, b, None, local, sk, device="cuda")
    try:
        record(case, shape, "flex", bench(lambda: flex(q, k, v, block_mask=bm, enable_gqa=True)), flops)
    except Exception as e:
        print(f"{case} {shape} flex failed: {type(e).__name__}: {str(e)[:120]}", flush=True)


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
    d256(g)
    apb(g)
    out = os.environ.get("OUT")
    if out:
        json.dump(rows, open(os.path.join(out, "peers-extra.json"), "w"), indent=1)


main()
