// Gathers the selected K and V rows into compact [batch, lp, heads_kv, dim] blocks. Only moves
// 16-bit words, so one build serves bf16 and f16.

{% include "apb/common.cuh" %}

extern "C" __global__ void apb_gather(const elem_t* __restrict__ k, const elem_t* __restrict__ v,
                                      const int* __restrict__ positions,
                                      elem_t* __restrict__ out_k, elem_t* __restrict__ out_v,
                                      int lp, int heads, int dim, fg_i64 total,
                                      fg_i64 k_sb, fg_i64 k_ss, fg_i64 k_sh, fg_i64 k_sd,
                                      fg_i64 v_sb, fg_i64 v_ss, fg_i64 v_sh, fg_i64 v_sd) {
    for (fg_i64 idx = (fg_i64)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (fg_i64)gridDim.x * blockDim.x) {
        const fg_i64 d = idx % dim;
        fg_i64 r = idx / dim;
        const fg_i64 h = r % heads;
        r /= heads;
        const fg_i64 i = r % lp;
        const fg_i64 b = r / lp;
        const fg_i64 p = positions[(b * heads + h) * lp + i];
        out_k[idx] = k[b * k_sb + p * k_ss + h * k_sh + d * k_sd];
        out_v[idx] = v[b * v_sb + p * v_ss + h * v_sh + d * v_sd];
    }
}
