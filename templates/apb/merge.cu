// flashgen multi-host prefill helpers: the log-sum-exp merge of partial attention results (ring
// attention) and the rounding of the f32 accumulator to the element type. One module per element
// type (`dtype`: bf16 or f16).

{% include "apb/common.cuh" %}

// Rounds an f32 to the stored element type (as fg_to_f32).
__device__ __forceinline__ elem_t fg_from_f32(float x) {
    elem_t r;
{%- if dtype == "bf16" %}
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(x));
{%- else %}
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(x));
{%- endif %}
    return r;
}

// One warp per (batch, row, head): acc <- merge(acc, part). O is [batch, rows, heads, dim],
// lse [batch, heads, rows]. With `init`, acc <- part (the first partial). A row empty in both
// (lse = -inf) stays O = 0, lse = -inf.
extern "C" __global__ void apb_merge(
    float* __restrict__ acc_o, float* __restrict__ acc_lse, const elem_t* __restrict__ part_o,
    const float* __restrict__ part_lse, int batch, int rows, int heads, int dim, int init) {
    const long long warp = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    const long long total = (long long)batch * rows * heads;
    if (warp >= total) return;
    const int h = (int)(warp % heads);
    const long long bi = warp / heads;  // batch * rows + row
    const int i = (int)(bi % rows);
    const int b = (int)(bi / rows);
    const long long o_at = bi * heads * dim + (long long)h * dim;
    const long long l_at = ((long long)b * heads + h) * rows + i;
    const float lb = part_lse[l_at];
    if (init) {
        for (int c = lane; c < dim; c += 32) acc_o[o_at + c] = fg_to_f32(part_o[o_at + c]);
        if (lane == 0) acc_lse[l_at] = lb;
        return;
    }
    const float la = acc_lse[l_at];
    const float m = fmaxf(la, lb);
    if (m == fg_neg_inf()) return;
    const float wa = expf(la - m);
    const float wb = expf(lb - m);
    const float inv = 1.0f / (wa + wb);
    for (int c = lane; c < dim; c += 32) {
        const float a = acc_o[o_at + c];
        const float p = fg_to_f32(part_o[o_at + c]);
        acc_o[o_at + c] = (wa * a + wb * p) * inv;
    }
    __syncwarp();
    if (lane == 0) acc_lse[l_at] = m + logf(wa + wb);
}

// out <- acc rounded to the element type, `n` elements.
extern "C" __global__ void apb_finish(
    elem_t* __restrict__ out, const float* __restrict__ acc, long long n) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < n; t += stride)
        out[t] = fg_from_f32(acc[t]);
}
