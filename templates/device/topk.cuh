// Top-k of one row of f32 scores by a whole CTA (the APB compressor's row selection and the
// decode page selector's). Self-contained: no types of its includer.
//
// Order: higher score first, then lower position. Scores map to an order-preserving u32 key
// (both zeros equal; NaN below every number, even -inf), so the rule is "key descending,
// position ascending". An MSB-first radix select (8 bits a pass, at most 4 passes) narrows the
// keys down to the bucket holding the lp-th key; it stops as soon as that bucket is taken whole.
// A final pass keeps every key above the bucket and the first (by position) keys in it,
// compacting in position order with one block-wide scan per chunk, so no sort is needed.
//
// The row is read in chunks of THREADS * KPT scores, thread t holding positions t * KPT ..
// t * KPT + KPT - 1 of a chunk; the first chunk stays in registers across the passes (a decode
// row of up to that many pages is read from memory once), later ones are read again each pass.

#define SEL_THREADS 1024
#define SEL_WARPS (SEL_THREADS / 32)

__device__ __forceinline__ unsigned fg_order_key(float s) {
    if (s != s) return 0u;
    unsigned u = (s == 0.0f) ? 0u : __float_as_uint(s);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Exclusive prefix sum of `v` over the CTA (THREADS threads); `total` gets the CTA's sum.
// `w_sum` holds THREADS / 32 words; the trailing barrier lets the caller reuse it at once.
template <int THREADS>
__device__ __forceinline__ unsigned fg_block_exclusive_scan(unsigned v, unsigned& total, unsigned* w_sum) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    unsigned incl = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const unsigned t = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += t;
    }
    if (lane == 31) w_sum[warp] = incl;
    __syncthreads();
    unsigned before = 0u, sum = 0u;
#pragma unroll
    for (int w = 0; w < THREADS / 32; ++w) {
        const unsigned c = w_sum[w];
        if (w < warp) before += c;
        sum += c;
    }
    __syncthreads();
    total = sum;
    return before + incl - v;
}

// The selection of one row, by a whole CTA of THREADS threads: the `lp` best of the `n` scores
// at `s` (1 <= lp <= n), their positions written ascending to `out`.
template <int THREADS, int KPT>
__device__ __forceinline__ void fg_topk_block(const float* __restrict__ s, int n, int lp, int* __restrict__ out) {
    constexpr int CHUNK = THREADS * KPT;
    static_assert(THREADS % 32 == 0 && THREADS >= 256 && KPT >= 1, "one histogram bin per thread");
    // The final pass packs two per-chunk counts into the halves of one word.
    static_assert(CHUNK < 65536, "chunk counts fit 16 bits");
    // Three histograms in turn: pass p counts into hist[p % 3], which every warp then reads,
    // and clears hist[(p + 1) % 3] (read in pass p - 2, which every warp left before the
    // barrier of pass p - 1; counted into in pass p + 1, after the barrier of pass p). One
    // barrier a pass then separates every write from every read.
    __shared__ __align__(16) unsigned hist[3][256];
    __shared__ unsigned w_sum[THREADS / 32];

    const int tid = threadIdx.x, lane = tid & 31;
    unsigned first[KPT];
#pragma unroll
    for (int i = 0; i < KPT; ++i) {
        const int j = tid * KPT + i;
        first[i] = j < n ? fg_order_key(s[j]) : 0u;
    }
    if (tid < 256) hist[0][tid] = 0u;
    __syncthreads();

    // One key into the histogram of the pass: one shared atomic per distinct digit of a warp.
    // Every lane takes part in the match (lanes without a key form a group of their own), so
    // no warp-wide operation sits under a branch.
    auto count = [&](unsigned* h, unsigned key, bool valid, unsigned mask, unsigned prefix, int shift) {
        const bool match = valid && (key & mask) == prefix;
        const unsigned digit = (key >> shift) & 255u;
        const unsigned peers = __match_any_sync(0xffffffffu, match ? digit : 256u);
        if (match && lane == __ffs(peers) - 1) atomicAdd(&h[digit], __popc(peers));
    };

    unsigned prefix = 0u, mask = 0u, k = (unsigned)lp;
#pragma unroll
    for (int pass = 0; pass < 4; ++pass) {
        const int shift = 24 - 8 * pass;
        unsigned* h = hist[pass % 3];
#pragma unroll
        for (int i = 0; i < KPT; ++i) count(h, first[i], tid * KPT + i < n, mask, prefix, shift);
        for (int base = CHUNK; base < n; base += CHUNK) {
#pragma unroll
            for (int i = 0; i < KPT; ++i) {
                const int j = base + tid * KPT + i;
                count(h, j < n ? fg_order_key(s[j]) : 0u, j < n, mask, prefix, shift);
            }
        }
        if (tid < 256) hist[(pass + 1) % 3][tid] = 0u;
        __syncthreads();
        // Every warp finds the bucket itself (no second barrier): lane l owns digits 255-8l
        // down to 248-8l; an inclusive scan from the top digit finds the lane, then the
        // digit, where the running count reaches k.
        const uint4 lo = *reinterpret_cast<const uint4*>(&h[248 - 8 * lane]);
        const uint4 hi = *reinterpret_cast<const uint4*>(&h[252 - 8 * lane]);
        const unsigned c[8] = {hi.w, hi.z, hi.y, hi.x, lo.w, lo.z, lo.y, lo.x};
        unsigned sum = 0u;
#pragma unroll
        for (int i = 0; i < 8; ++i) sum += c[i];
        unsigned incl = sum;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const unsigned v = __shfl_up_sync(0xffffffffu, incl, o);
            if (lane >= o) incl += v;
        }
        const unsigned before = incl - sum;
        unsigned found = 0u, digit = 0u, left = 0u, whole = 0u;
        if (before < k && k <= incl) {
            unsigned acc = before;
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                if (acc < k && acc + c[i] >= k) {
                    found = 1u;
                    digit = 255u - lane * 8u - i;
                    left = k - acc;
                    whole = c[i] == k - acc;
                }
                acc += c[i];
            }
        }
        const int src = __ffs(__ballot_sync(0xffffffffu, found)) - 1;
        prefix |= __shfl_sync(0xffffffffu, digit, src) << shift;
        k = __shfl_sync(0xffffffffu, left, src);
        mask |= 255u << shift;
        // The bucket is taken whole: the lower digits are never needed.
        if (__shfl_sync(0xffffffffu, whole, src)) break;
    }

    // Keys above the bucket (masked key > prefix) are all kept, and the first `k` (by
    // position) of the bucket (masked key == prefix).
    const unsigned take_eq = k;
    unsigned eq_base = 0u, out_base = 0u;
    auto taken = [&](unsigned eq) { return eq < take_eq ? eq : take_eq; };
    for (int base = 0; base < n && out_base < (unsigned)lp; base += CHUNK) {
        unsigned key[KPT];
        unsigned n_gt = 0u, n_eq = 0u;
#pragma unroll
        for (int i = 0; i < KPT; ++i) {
            const int j = base + tid * KPT + i;
            key[i] = base == 0 ? first[i] : (j < n ? fg_order_key(s[j]) : 0u);
            const unsigned m = key[i] & mask;
            n_gt += j < n && m > prefix;
            n_eq += j < n && m == prefix;
        }
        unsigned total;
        const unsigned before = fg_block_exclusive_scan<THREADS>((n_eq << 16) | n_gt, total, w_sum);
        unsigned eq_rank = eq_base + (before >> 16);
        unsigned at = out_base + (before & 0xffffu) + taken(eq_rank) - taken(eq_base);
#pragma unroll
        for (int i = 0; i < KPT; ++i) {
            const int j = base + tid * KPT + i;
            const unsigned m = key[i] & mask;
            const bool eq = j < n && m == prefix;
            if ((j < n && m > prefix) || (eq && eq_rank < take_eq)) out[at++] = j;
            eq_rank += eq;
        }
        out_base += (total & 0xffffu) + taken(eq_base + (total >> 16)) - taken(eq_base);
        eq_base += total >> 16;
    }
}

// The selection of one row by a CTA of SEL_THREADS threads (APB's row selection).
__device__ __forceinline__ void fg_topk_row(const float* __restrict__ s, int n, int lp, int* __restrict__ out) {
    fg_topk_block<SEL_THREADS, 4>(s, n, lp, out);
}
