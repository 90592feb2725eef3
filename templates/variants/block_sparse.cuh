// Block-sparse attention over a BSR block list (the FlexAttention / Block-Sparse-Attention
// layout): query block qb sees the key blocks kv_index[b, h, qb, 0 .. kv_count[b, h, qb]),
// h the query head's list (shared, per GQA group or per head),
// ascending; with the causal flag also only keys j <= pos. Mask blocks are multiples of the
// tile (block_q % BLOCK_M == 0, block_k % BLOCK_N == 0, checked before launch), so a query tile
// lies in one block row and each listed block is `ratio` whole key tiles.
template <bool CAUSAL_MASK>
struct BlockSparseSchedule {
    int sq, sk;
    int p_lo;
    const int* list;  // this block row's ascending key-block indices
    int entries;      // listed blocks
    int ratio;        // key tiles per mask block
    int last_tiles;   // tiles of the last listed block that hold visible keys (ragged / causal)

    __device__ __forceinline__ void init(const FlashParams& p, const VariantParams& vp, int batch, int head, int m_block, int sq_, int sk_) {
        sq = sq_;
        sk = sk_;
        p_lo = m_block * BLOCK_M + sk - sq;
        const int p_hi = min(sq, (m_block + 1) * BLOCK_M) - 1 + sk - sq;
        // One list shared by all heads, one per GQA group (list_heads = heads_kv) or one per
        // query head (list_heads = heads_q): query head h reads list h / (heads_q / list_heads).
        const BlockListArgs& l = vp.list;
        const int list_head = l.list_heads == 1 ? 0 : head / (p.heads_q / l.list_heads);
        const int qb = m_block * BLOCK_M / l.block_q;
        const fg_i64 row = (fg_i64)batch * l.list_batch_stride + (fg_i64)list_head * l.list_head_stride + qb;
        entries = l.kv_count[row];
        list = l.kv_index + row * l.max_blocks;
        ratio = l.block_k / BLOCK_N;
        last_tiles = 0;
        if (entries > 0) {
            const int key_end = CAUSAL_MASK ? min(sk, p_hi + 1) : sk;
            const int first_key = __ldg(list + entries - 1) * l.block_k;
            last_tiles = min(ratio, max(0, (key_end - first_key + BLOCK_N - 1) / BLOCK_N));
        }
    }
    __device__ __forceinline__ int count() const { return entries == 0 ? 0 : (entries - 1) * ratio + last_tiles; }
    // Backwards from the last listed block, so the diagonal and ragged tiles come first.
    __device__ __forceinline__ int tile(int step) const {
        if (step < last_tiles) return __ldg(list + entries - 1) * ratio + last_tiles - 1 - step;
        const int rest = step - last_tiles;
        return __ldg(list + entries - 2 - rest / ratio) * ratio + ratio - 1 - rest % ratio;
    }
    __device__ __forceinline__ bool needs_mask(int n) const {
        const int j1 = n * BLOCK_N + BLOCK_N - 1;
        return j1 >= sk || (CAUSAL_MASK && j1 > p_lo);
    }
    __device__ __forceinline__ bool visible(int i, int j) const {
        return j < sk && (!CAUSAL_MASK || j <= i + sk - sq);
    }
};
