// Query-aware scores for models without retaining heads: the softmax attention of the query
// tokens embedded in the anchor over the local keys, summed over the query heads of each kv
// head and over the query tokens:
//   score[b, hk, j] = sum over (h in group(hk), t) of softmax_j(scale * q[b, t, h] . k[b, j, hk])
// Three launches: per key tile, each query's partial (max, sum of exp); per query, those merged;
// per key tile, the normalised probabilities summed over the queries. The logits of a
// 32-query x 64-key tile are computed in f32 from shared memory, 64 dims at a time.

{% include "apb/common.cuh" %}

#define QA_KT 64
#define QA_QT 32
#define QA_DC 64
#define QA_THREADS 256

struct QaShape {
    const elem_t* q;
    const elem_t* k;
    fg_i64 q_sb, q_ss, q_sh, q_sd;
    fg_i64 k_sb, k_ss, k_sh, k_sd;
    int n, nq, group, heads_kv, dim;
    float scale_log2;
};

// acc[i][c]: log2-domain logit of query g0 + ty + 8i with key key0 + tx + 32c (-inf past n).
__device__ __forceinline__ void qa_logits(const QaShape& a, fg_i64 b, int hk, int key0, int g0,
                                          float (*Ks)[QA_DC + 1], float (*Qs)[QA_DC + 1],
                                          float acc[4][2]) {
    const int tid = threadIdx.x, tx = tid & 31, ty = tid >> 5;
    const int G = a.group * a.nq;
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[i][0] = acc[i][1] = 0.0f;
    for (int c0 = 0; c0 < a.dim; c0 += QA_DC) {
        // The previous chunk (or the caller's last tile) is fully consumed.
        __syncthreads();
        for (int e = tid; e < QA_KT * QA_DC; e += QA_THREADS) {
            const int r = e / QA_DC, c = e % QA_DC, j = key0 + r, dd = c0 + c;
            Ks[r][c] = (j < a.n && dd < a.dim)
                           ? fg_to_f32(a.k[b * a.k_sb + j * a.k_ss + hk * a.k_sh + dd * a.k_sd])
                           : 0.0f;
        }
        for (int e = tid; e < QA_QT * QA_DC; e += QA_THREADS) {
            const int r = e / QA_DC, c = e % QA_DC, g = g0 + r, dd = c0 + c;
            float x = 0.0f;
            if (g < G && dd < a.dim) {
                const int h = hk * a.group + g / a.nq, t = g % a.nq;
                x = fg_to_f32(a.q[b * a.q_sb + t * a.q_ss + h * a.q_sh + dd * a.q_sd]);
            }
            Qs[r][c] = x;
        }
        __syncthreads();
#pragma unroll 8
        for (int c = 0; c < QA_DC; ++c) {
            const float k0 = Ks[tx][c], k1 = Ks[tx + 32][c];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const float qv = Qs[ty + 8 * i][c];
                acc[i][0] = fmaf(qv, k0, acc[i][0]);
                acc[i][1] = fmaf(qv, k1, acc[i][1]);
            }
        }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int c = 0; c < 2; ++c)
            acc[i][c] = key0 + tx + 32 * c < a.n ? acc[i][c] * a.scale_log2 : fg_neg_inf();
}

// Merges two (max, sum of 2^(x - max)) pairs.
__device__ __forceinline__ void qa_merge(float& m, float& s, float m2, float s2) {
    const float mm = fmaxf(m, m2);
    if (mm == fg_neg_inf()) return;
    s = s * exp2f(m - mm) + s2 * exp2f(m2 - mm);
    m = mm;
}

// partial[((b * heads_kv + hk) * G + g) * tiles + tile] = (max, sum) over the tile's keys.
extern "C" __global__ void __launch_bounds__(QA_THREADS, 2)
apb_qa_partial(QaShape a, float* __restrict__ partial) {
    __shared__ float Ks[QA_KT][QA_DC + 1];
    __shared__ float Qs[QA_QT][QA_DC + 1];
    const int tile = blockIdx.x, hk = blockIdx.y, tiles = gridDim.x;
    const fg_i64 b = blockIdx.z;
    const int lane = threadIdx.x & 31, ty = threadIdx.x >> 5;
    const int G = a.group * a.nq;
    for (int g0 = 0; g0 < G; g0 += QA_QT) {
        float acc[4][2];
        qa_logits(a, b, hk, tile * QA_KT, g0, Ks, Qs, acc);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            float m = fmaxf(acc[i][0], acc[i][1]);
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
            float s = m == fg_neg_inf() ? 0.0f : exp2f(acc[i][0] - m) + exp2f(acc[i][1] - m);
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
            const int g = g0 + ty + 8 * i;
            if (lane == 0 && g < G) {
                const fg_i64 at = (((fg_i64)b * a.heads_kv + hk) * G + g) * tiles + tile;
                partial[2 * at] = m;
                partial[2 * at + 1] = s;
            }
        }
    }
}

// One warp per (b, hk, g): stats[2 * row] = max, stats[2 * row + 1] = 1 / sum.
extern "C" __global__ void apb_qa_stats(const float* __restrict__ partial,
                                        float* __restrict__ stats, fg_i64 rows, int tiles) {
    const fg_i64 row = ((fg_i64)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;
    float m = fg_neg_inf(), s = 0.0f;
    for (int t = lane; t < tiles; t += 32)
        qa_merge(m, s, partial[2 * (row * tiles + t)], partial[2 * (row * tiles + t) + 1]);
    for (int o = 16; o > 0; o >>= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, o);
        const float s2 = __shfl_xor_sync(0xffffffffu, s, o);
        qa_merge(m, s, m2, s2);
    }
    if (lane == 0) {
        stats[2 * row] = m;
        stats[2 * row + 1] = 1.0f / s;
    }
}

// scores[(b * heads_kv + hk) * n + j]: the probabilities of every query of the group at key j.
extern "C" __global__ void __launch_bounds__(QA_THREADS)
apb_qa_scores(QaShape a, const float* __restrict__ stats, float* __restrict__ scores) {
    __shared__ float Ks[QA_KT][QA_DC + 1];
    __shared__ float Qs[QA_QT][QA_DC + 1];
    __shared__ float red[QA_THREADS / 32][QA_KT];
    const int tile = blockIdx.x, hk = blockIdx.y;
    const fg_i64 b = blockIdx.z;
    const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
    const int G = a.group * a.nq;
    const fg_i64 row0 = ((fg_i64)b * a.heads_kv + hk) * G;
    float key_sum[2] = {0.0f, 0.0f};
    for (int g0 = 0; g0 < G; g0 += QA_QT) {
        float acc[4][2];
        qa_logits(a, b, hk, tile * QA_KT, g0, Ks, Qs, acc);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int g = g0 + ty + 8 * i;
            if (g >= G) continue;
            const float m = stats[2 * (row0 + g)], inv = stats[2 * (row0 + g) + 1];
            key_sum[0] += exp2f(acc[i][0] - m) * inv;
            key_sum[1] += exp2f(acc[i][1] - m) * inv;
        }
    }
    red[ty][tx] = key_sum[0];
    red[ty][tx + 32] = key_sum[1];
    __syncthreads();
    if (threadIdx.x < QA_KT) {
        const int j = tile * QA_KT + threadIdx.x;
        float t = 0.0f;
        for (int w = 0; w < QA_THREADS / 32; ++w) t += red[w][threadIdx.x];
        if (j < a.n) scores[((fg_i64)b * a.heads_kv + hk) * a.n + j] = t;
    }
}
