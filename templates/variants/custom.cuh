// Custom attention: a user-defined mask and score modifier (the spec's definition, rendered
// below from its checked expression tree), over the mask's block classification: query block
// qb visits the non-empty key blocks kv_index[b, h, qb, 0 .. kv_count[b, h, qb]) (ascending)
// and bit kb of kv_full[b, h, qb, ..] says block kb is full (every pair visible). Only tiles of
// partial blocks, and the ragged last tile, evaluate the mask per element. Blocks are
// multiples of the tile (checked before launch). Query row i is at position i + sk - sq.
{{ custom_code }}

struct CustomSchedule {
    int sq, sk, batch, head;
    const int* list;          // this block row's ascending key-block indices
    const unsigned* full;     // this block row's full-block bits
    int entries;              // listed blocks
    int ratio;                // key tiles per mask block
    int last_tiles;           // tiles of the last listed block that hold keys
    const FgExprArgs* args;
    float scale;              // the softmax scale: s = scale * q.k is what the score modifier sees

    __device__ __forceinline__ void init(const FlashParams& p, const VariantParams& vp, int batch_, int head_, int m_block, int sq_, int sk_) {
        sq = sq_;
        sk = sk_;
        batch = batch_;
        head = head_;
        args = &vp.expr;
        scale = p.scale_log2 * 0.6931471805599453f;
        const BlockListArgs& l = vp.list;
        const int list_head = l.list_heads == 1 ? 0 : head / (p.heads_q / l.list_heads);
        const int qb = m_block * BLOCK_M / l.block_q;
        const fg_i64 row = (fg_i64)batch * l.list_batch_stride + (fg_i64)list_head * l.list_head_stride + qb;
        entries = l.kv_count[row];
        list = l.kv_index + row * l.max_blocks;
        full = reinterpret_cast<const unsigned*>(vp.kv_full) + row * ((l.max_blocks + 31) / 32);
        ratio = l.block_k / BLOCK_N;
        last_tiles = 0;
        if (entries > 0) {
            const int first_key = __ldg(list + entries - 1) * l.block_k;
            last_tiles = min(ratio, max(0, (sk - first_key + BLOCK_N - 1) / BLOCK_N));
        }
    }
    __device__ __forceinline__ int count() const { return entries == 0 ? 0 : (entries - 1) * ratio + last_tiles; }
    // Backwards from the last listed block, so the ragged tile comes first.
    __device__ __forceinline__ int tile(int step) const {
        if (step < last_tiles) return __ldg(list + entries - 1) * ratio + last_tiles - 1 - step;
        const int rest = step - last_tiles;
        return __ldg(list + entries - 2 - rest / ratio) * ratio + ratio - 1 - rest % ratio;
    }
    __device__ __forceinline__ bool needs_mask(int n) const {
        const int kb = n / ratio;
        const bool is_full = (__ldg(full + kb / 32) >> (kb % 32)) & 1u;
        return !is_full || n * BLOCK_N + BLOCK_N > sk;
    }
    __device__ __forceinline__ bool visible(int i, int j) const {
        return j < sk && fg_custom_mask(*args, batch, head, i + sk - sq, j);
    }
};

// The score modifier on every score of a tile, before the mask and the softmax: s becomes
// f(scale * q.k) in base-2 units (times log2(e)), so the softmax runs with scale 1.
__device__ __forceinline__ void fg_score_mod(float (&s)[M_TILES][S_TILES][4], const CustomSchedule& sched, int row_base,
                                             int key0, int g, int t) {
#pragma unroll
    for (int mt = 0; mt < M_TILES; ++mt)
#pragma unroll
        for (int st = 0; st < S_TILES; ++st)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int i = row_base + mt * 16 + g + (e / 2) * 8;
                const int j = key0 + st * 8 + 2 * t + (e % 2);
                s[mt][st][e] = fg_custom_score(*sched.args, s[mt][st][e] * sched.scale, sched.batch, sched.head,
                                               i + sched.sk - sched.sq, j) * 1.4426950408889634f;
            }
}
