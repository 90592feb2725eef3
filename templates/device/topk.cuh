// Top-k of one row of f32 scores by a whole CTA of SEL_THREADS threads (the APB compressor's
// row selection and the decode page selector's). Self-contained: no types of its includer.
//
// Order: higher score first, then lower position. Scores map to an order-preserving u32 key
// (both zeros equal; NaN below every number, even -inf), so the rule is "key descending,
// position ascending". A 4-pass MSB-first radix select (8 bits a pass) finds the lp-th key T;
// a final pass keeps every key > T and the first (by position) keys == T, compacting in
// position order with block-wide ballots, so no sort is needed.

#define SEL_THREADS 1024
#define SEL_WARPS (SEL_THREADS / 32)

__device__ __forceinline__ unsigned fg_order_key(float s) {
    if (s != s) return 0u;
    unsigned u = (s == 0.0f) ? 0u : __float_as_uint(s);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// The selection of one row, by a whole CTA of SEL_THREADS threads: the `lp` best of the `n`
// scores at `s`, their positions written ascending to `out`.
__device__ __forceinline__ void fg_topk_row(const float* __restrict__ s, int n, int lp, int* __restrict__ out) {
    // Per-warp histograms: the warps never contend with each other.
    __shared__ unsigned hist[SEL_WARPS][256];
    __shared__ unsigned sh_prefix, sh_k;
    __shared__ unsigned w_eq[SEL_WARPS], w_sel[SEL_WARPS];

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const unsigned lanes_below = (1u << lane) - 1u;

    unsigned prefix = 0u, mask = 0u, k = (unsigned)lp;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = tid; i < SEL_WARPS * 256; i += SEL_THREADS) (&hist[0][0])[i] = 0u;
        __syncthreads();
        for (int base = 0; base < n; base += SEL_THREADS) {
            const int j = base + tid;
            const unsigned key = j < n ? fg_order_key(s[j]) : 0u;
            const bool match = j < n && (key & mask) == prefix;
            const unsigned digit = (key >> shift) & 255u;
            const unsigned active = __ballot_sync(0xffffffffu, match);
            if (match) {
                // One atomic per distinct digit in the warp.
                const unsigned peers = __match_any_sync(active, digit);
                if (lane == __ffs(peers) - 1) atomicAdd(&hist[warp][digit], __popc(peers));
            }
        }
        __syncthreads();
        if (tid < 256) {
            unsigned t = 0u;
            for (int w = 0; w < SEL_WARPS; ++w) t += hist[w][tid];
            hist[0][tid] = t;
        }
        __syncthreads();
        if (warp == 0) {
            // Lane l owns digits 255-8l down to 248-8l; an inclusive scan from the top digit
            // finds the lane (then the digit) where the running count reaches k.
            unsigned c[8], sum = 0u;
            for (int i = 0; i < 8; ++i) {
                c[i] = hist[0][255 - lane * 8 - i];
                sum += c[i];
            }
            unsigned incl = sum;
            for (int o = 1; o < 32; o <<= 1) {
                const unsigned v = __shfl_up_sync(0xffffffffu, incl, o);
                if (lane >= o) incl += v;
            }
            const unsigned before = incl - sum;
            if (before < k && k <= incl) {
                unsigned acc = before;
                for (int i = 0; i < 8; ++i) {
                    if (acc + c[i] >= k) {
                        sh_prefix = prefix | ((unsigned)(255 - lane * 8 - i) << shift);
                        sh_k = k - acc;
                        break;
                    }
                    acc += c[i];
                }
            }
        }
        __syncthreads();
        prefix = sh_prefix;
        k = sh_k;
        mask |= 255u << shift;
    }

    // prefix is now T, the lp-th key; k of the keys equal to T are taken, lowest positions first.
    const unsigned T = prefix, take_eq = k;
    unsigned eq_base = 0u, out_base = 0u;
    for (int base = 0; base < n && out_base < (unsigned)lp; base += SEL_THREADS) {
        const int j = base + tid;
        const unsigned key = j < n ? fg_order_key(s[j]) : 0u;
        const bool eq = j < n && key == T;
        const bool gt = j < n && key > T;
        const unsigned eq_mask = __ballot_sync(0xffffffffu, eq);
        if (lane == 0) w_eq[warp] = __popc(eq_mask);
        __syncthreads();
        unsigned eq_before = eq_base + __popc(eq_mask & lanes_below), eq_total = 0u;
        for (int w = 0; w < SEL_WARPS; ++w) {
            const unsigned c = w_eq[w];
            if (w < warp) eq_before += c;
            eq_total += c;
        }
        const bool sel = gt || (eq && eq_before < take_eq);
        const unsigned sel_mask = __ballot_sync(0xffffffffu, sel);
        if (lane == 0) w_sel[warp] = __popc(sel_mask);
        __syncthreads();
        unsigned at = out_base + __popc(sel_mask & lanes_below), sel_total = 0u;
        for (int w = 0; w < SEL_WARPS; ++w) {
            const unsigned c = w_sel[w];
            if (w < warp) at += c;
            sel_total += c;
        }
        if (sel) out[at] = j;
        eq_base += eq_total;
        out_base += sel_total;
        // w_eq and w_sel are rewritten by the next tile.
        __syncthreads();
    }
}

