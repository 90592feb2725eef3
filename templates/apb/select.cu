// Top-k selection per row of f32 scores: one CTA per (batch, kv head) row picks the `lp` best
// positions and writes them in ascending order.
//
// Order: higher score first, then lower position. Scores map to an order-preserving u32 key
// (both zeros equal; NaN below every number, even -inf), so the rule is "key descending,
// position ascending". The radix select and the compaction in position order are
// `fg_topk_block` of device/topk.cuh (no sort).

{% include "apb/common.cuh" %}
{% include "device/topk.cuh" %}

extern "C" __global__ void __launch_bounds__(SEL_THREADS)
apb_topk_select(const float* __restrict__ scores, int n, int lp, int* __restrict__ positions) {
    fg_topk_row(scores + (fg_i64)blockIdx.x * n, n, lp, positions + (fg_i64)blockIdx.x * lp);
}
