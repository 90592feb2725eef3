// Query-aware scores from the logits a cuBLAS GEMM wrote: L is [rows, n] f32 in the log2 domain
// (already scaled), row r = (kv head of the chunk, query of its group). Per row, the softmax
// statistics over the keys; then per key, the normalised probabilities summed over the rows of
// its kv head.

{% include "apb/common.cuh" %}

#define LOGIT_THREADS 256

// Merges two (max, sum of 2^(x - max)) pairs.
__device__ __forceinline__ void lg_merge(float& m, float& s, float m2, float s2) {
    const float mm = fmaxf(m, m2);
    if (mm == fg_neg_inf()) return;
    s = s * exp2f(m - mm) + s2 * exp2f(m2 - mm);
    m = mm;
}

// One CTA per row: stats[2r] = max, stats[2r + 1] = 1 / sum of 2^(l - max).
extern "C" __global__ void __launch_bounds__(LOGIT_THREADS)
apb_logit_rowstats(const float* __restrict__ logits, float* __restrict__ stats, int n) {
    __shared__ float sm[LOGIT_THREADS / 32], ss[LOGIT_THREADS / 32];
    const float* row = logits + (fg_i64)blockIdx.x * n;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float m = fg_neg_inf(), s = 0.0f;
    for (int j = threadIdx.x; j < n; j += LOGIT_THREADS) lg_merge(m, s, row[j], 1.0f);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, o);
        const float s2 = __shfl_xor_sync(0xffffffffu, s, o);
        lg_merge(m, s, m2, s2);
    }
    if (lane == 0) {
        sm[warp] = m;
        ss[warp] = s;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < LOGIT_THREADS / 32; ++w) lg_merge(m, s, sm[w], ss[w]);
        stats[2 * (fg_i64)blockIdx.x] = m;
        stats[2 * (fg_i64)blockIdx.x + 1] = 1.0f / s;
    }
}

// scores[out_offset + i * n + j] = sum over g < G of 2^(L[i * G + g, j] - max) / sum, for the
// `heads` kv heads i of the chunk; consecutive threads take consecutive keys (coalesced).
extern "C" __global__ void apb_logit_colsum(const float* __restrict__ logits,
                                            const float* __restrict__ stats,
                                            float* __restrict__ scores, int n, int G, int heads,
                                            fg_i64 out_offset) {
    const fg_i64 total = (fg_i64)heads * n;
    for (fg_i64 idx = (fg_i64)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (fg_i64)gridDim.x * blockDim.x) {
        const fg_i64 i = idx / n, j = idx % n;
        const float* col = logits + i * G * n + j;
        const float* st = stats + 2 * i * G;
        float acc = 0.0f;
        for (int g = 0; g < G; ++g) acc += exp2f(col[(fg_i64)g * n] - st[2 * g]) * st[2 * g + 1];
        scores[out_offset + idx] = acc;
    }
}
