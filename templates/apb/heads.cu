// Retaining heads around the cuBLAS GEMMs: fc1's bias and activation (in place, f32), and fc2's
// bias with the max-pool along the sequence that turns per-token outputs into scores.

{% include "apb/common.cuh" %}

#define ACT_RELU 0
#define ACT_SILU 1
#define ACT_GELU_TANH 2

extern "C" __global__ void apb_bias_act(float* __restrict__ h, const float* __restrict__ bias,
                                        fg_i64 total, int hidden, int act) {
    for (fg_i64 idx = (fg_i64)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (fg_i64)gridDim.x * blockDim.x) {
        const float x = h[idx] + bias[idx % hidden];
        float y;
        if (act == ACT_RELU) {
            y = fmaxf(x, 0.0f);
        } else if (act == ACT_SILU) {
            y = x / (1.0f + expf(-x));
        } else {
            const float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
            y = 0.5f * x * (1.0f + tanhf(u));
        }
        h[idx] = y;
    }
}

// s: fc2 outputs [batch * n, heads] (row-major); out: [batch, heads, n]. Positions outside the
// local block are padding (never the max), as in max_pool1d with -inf padding.
extern "C" __global__ void apb_pool_scores(const float* __restrict__ s,
                                           const float* __restrict__ bias,
                                           float* __restrict__ out, int batch, int n, int heads,
                                           int radius) {
    const fg_i64 total = (fg_i64)batch * heads * n;
    for (fg_i64 idx = (fg_i64)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (fg_i64)gridDim.x * blockDim.x) {
        const int j = (int)(idx % n);
        const fg_i64 r = idx / n;
        const int h = (int)(r % heads);
        const fg_i64 b = r / heads;
        const int lo = j - radius < 0 ? 0 : j - radius;
        const int hi = j + radius >= n ? n - 1 : j + radius;
        float m = fg_neg_inf();
        for (int t = lo; t <= hi; ++t) m = fmaxf(m, s[(b * n + t) * heads + h]);
        out[idx] = m + bias[h];
    }
}
