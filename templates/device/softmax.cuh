// flashgen device library: the per-tile score hooks every mainloop shares (the warp-level and
// the warpgroup-level ones, plain and pipelined), so a mask and the online softmax exist once.
// Fragment coordinates: lane = 4 * g + t; a thread holds rows g and g + 8 of each 16-row tile
// and columns 2t, 2t + 1 of each 8-column tile.

// Hides the scores of the pairs the variant masks out, on a tile whose first key is `key0`;
// `row_base` is the query row of this warp's first fragment row.
template <class Sched>
__device__ __forceinline__ void fg_mask_scores(float (&s)[M_TILES][S_TILES][4], const Sched& sched, int row_base,
                                               int key0, int g, int t) {
#pragma unroll
    for (int mt = 0; mt < M_TILES; ++mt)
#pragma unroll
        for (int st = 0; st < S_TILES; ++st)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int i = row_base + mt * 16 + g + (e / 2) * 8;
                const int j = key0 + st * 8 + 2 * t + (e % 2);
                if (!sched.visible(i, j)) s[mt][st][e] = fg_neg_inf();
            }
}

// How far (in base-2 exponent units) a row's scores may rise above the max the row's
// probabilities are taken against before that max is moved. Until then the old max stays: the
// probabilities may reach 2^8, harmless in f32 sums and bf16/f16 operands, and the output need
// not be rescaled. After the first tiles a row's max rarely rises that far, so most steps skip
// the rescale (a multiply per output element) entirely. The result is exact either way: sum and
// output always refer to the same max. Only where LAZY_RESCALE is set (the warpgroup mainloops);
// elsewhere every new max is taken and every step rescales.
constexpr float FG_STALE_MAX_LOG2 = 8.f;

// One online-softmax step in base 2 (scores scaled by scale * log2(e) inside the exponent):
// updates each row's running max and sum, turns `s` into unnormalised probabilities and returns
// in `correction` the factor the output accumulated so far must be scaled by, and in `rescale`
// whether any row of this warp has a factor other than 1 (warp-uniform).
__device__ __forceinline__ void fg_softmax(float (&s)[M_TILES][S_TILES][4], float (&row_max)[M_TILES][2],
                                           float (&row_sum)[M_TILES][2], float (&correction)[M_TILES][2],
                                           bool& rescale, float scale_log2) {
    bool moved = false;
#pragma unroll
    for (int mt = 0; mt < M_TILES; ++mt) {
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
            float mx = row_max[mt][hf];
#pragma unroll
            for (int st = 0; st < S_TILES; ++st) mx = fmaxf(mx, fmaxf(s[mt][st][2 * hf], s[mt][st][2 * hf + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            // The max moves only when the scores outgrow it (from -inf, always; -inf - -inf is
            // NaN and fails the test too, which keeps a row that has seen nothing at -inf).
            const float old_max = row_max[mt][hf];
            const bool keep = LAZY_RESCALE && (mx - old_max) * scale_log2 <= FG_STALE_MAX_LOG2;
            mx = keep ? old_max : mx;
            moved |= !keep;
            // A row with nothing visible yet keeps max -inf; offset 0 keeps exp2 at 0, not NaN.
            const float offset = mx == fg_neg_inf() ? 0.f : mx * scale_log2;
            correction[mt][hf] = keep ? 1.f : fg_exp2(old_max * scale_log2 - offset);
            row_max[mt][hf] = mx;
            float sum = 0.f;
#pragma unroll
            for (int st = 0; st < S_TILES; ++st) {
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const float pv = fg_exp2(s[mt][st][2 * hf + e] * scale_log2 - offset);
                    s[mt][st][2 * hf + e] = pv;
                    sum += pv;
                }
            }
            row_sum[mt][hf] = row_sum[mt][hf] * correction[mt][hf] + sum;
        }
    }
    rescale = !LAZY_RESCALE || __any_sync(0xffffffffu, moved);
}

// Scales the output accumulators by the rows' softmax corrections, when some row has one.
__device__ __forceinline__ void fg_rescale_output(float (&acc_o)[M_TILES][O_TILES][4], const float (&correction)[M_TILES][2],
                                                  bool rescale) {
    if (!rescale) return;
#pragma unroll
    for (int mt = 0; mt < M_TILES; ++mt)
#pragma unroll
        for (int ot = 0; ot < O_TILES; ++ot)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc_o[mt][ot][e] *= correction[mt][e / 2];
}

// P as {{ dtype }} A operands: the accumulator layout of two n8 tiles is the A-operand layout of
// one k16 step, in half the registers of the f32 scores.
__device__ __forceinline__ void fg_pack_probs(fg_u32 (&p_frag)[M_TILES][KV_STEPS][4], const float (&s)[M_TILES][S_TILES][4]) {
#pragma unroll
    for (int mt = 0; mt < M_TILES; ++mt)
#pragma unroll
        for (int ks = 0; ks < KV_STEPS; ++ks) {
            p_frag[mt][ks][0] = fg_pack2(s[mt][2 * ks][0], s[mt][2 * ks][1]);
            p_frag[mt][ks][1] = fg_pack2(s[mt][2 * ks][2], s[mt][2 * ks][3]);
            p_frag[mt][ks][2] = fg_pack2(s[mt][2 * ks + 1][0], s[mt][2 * ks + 1][1]);
            p_frag[mt][ks][3] = fg_pack2(s[mt][2 * ks + 1][2], s[mt][2 * ks + 1][3]);
        }
}
