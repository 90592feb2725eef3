// flashgen multi-host prefill helpers: the log-sum-exp merge of partial attention results (ring
// attention) and the row gather that builds a passing block from selected positions.
// Self-contained like the attention templates (no CUDA toolkit headers). The runtime prepends
// `#define FG_BF16 1` or `#define FG_F16 1` and the kernel-name suffix `FG_SUFFIX`.

typedef unsigned short fg_u16;

#define FG_CAT2(a, b) a##b
#define FG_CAT(a, b) FG_CAT2(a, b)

__device__ __forceinline__ float fg_neg_inf() { return __int_as_float(0xff800000u); }

__device__ __forceinline__ float fg_to_f32(fg_u16 x) {
#if defined(FG_BF16)
    return __uint_as_float(((unsigned int)x) << 16);
#else
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x));
    return f;
#endif
}

__device__ __forceinline__ fg_u16 fg_from_f32(float x) {
    fg_u16 r;
#if defined(FG_BF16)
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(x));
#else
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(x));
#endif
    return r;
}

// One warp per (batch, row, head): acc <- merge(acc, part). O is [batch, rows, heads, dim],
// lse [batch, heads, rows]. With `init`, acc <- part (the first partial). A row empty in both
// (lse = -inf) stays O = 0, lse = -inf.
extern "C" __global__ void FG_CAT(flashgen_apb_merge_, FG_SUFFIX)(
    float* __restrict__ acc_o, float* __restrict__ acc_lse, const fg_u16* __restrict__ part_o,
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
extern "C" __global__ void FG_CAT(flashgen_apb_finish_, FG_SUFFIX)(
    fg_u16* __restrict__ out, const float* __restrict__ acc, long long n) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < n; t += stride)
        out[t] = fg_from_f32(acc[t]);
}

// One warp per (batch, j, kv head): out[b, j, h, :] <- src[b, index[b, h, j], h, :]. src is
// [batch, rows, heads, dim], out [batch, count, heads, dim], index [batch, heads, count]. An
// index outside 0..rows (checked on the host before upload) writes zeros.
extern "C" __global__ void FG_CAT(flashgen_apb_gather_, FG_SUFFIX)(
    fg_u16* __restrict__ out, const fg_u16* __restrict__ src, const int* __restrict__ index,
    int batch, int rows, int count, int heads, int dim) {
    const long long warp = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    const long long total = (long long)batch * count * heads;
    if (warp >= total) return;
    const int h = (int)(warp % heads);
    const long long bj = warp / heads;  // batch * count + j
    const int j = (int)(bj % count);
    const int b = (int)(bj / count);
    const int row = index[((long long)b * heads + h) * count + j];
    fg_u16* dst = out + (bj * heads + h) * dim;
    if (row < 0 || row >= rows) {
        for (int c = lane; c < dim; c += 32) dst[c] = 0;
        return;
    }
    const fg_u16* s = src + (((long long)b * rows + row) * heads + h) * dim;
    for (int c = lane; c < dim; c += 32) dst[c] = s[c];
}
