// Dense attention, optionally with the bottom-right aligned causal mask (query i sits at
// position i + sk - sq and sees keys j <= pos).
template <bool CAUSAL_MASK>
struct DenseSchedule {
    int sq, sk;
    int n_end;         // tiles [0, n_end) are visited
    int first_masked;  // tiles >= first_masked need the elementwise mask

    __device__ __forceinline__ void init(const FlashParams& p, const VariantParams& vp, int batch, int head, int m_block, int sq_, int sk_) {
        (void)p;
        (void)vp;
        (void)batch;
        (void)head;
        sq = sq_;
        sk = sk_;
        const int n_tiles = (sk + BLOCK_N - 1) / BLOCK_N;
        n_end = n_tiles;
        first_masked = sk / BLOCK_N;  // the ragged last tile, if any
        if (CAUSAL_MASK) {
            // The tile's last real row bounds the keys it sees; its first row bounds the keys
            // every row sees.
            const int max_key = min(sq, (m_block + 1) * BLOCK_M) - 1 + sk - sq;
            n_end = max_key < 0 ? 0 : min(n_tiles, max_key / BLOCK_N + 1);
            const int min_pos = m_block * BLOCK_M + sk - sq;
            first_masked = min(first_masked, min_pos + 1 <= 0 ? 0 : (min_pos + 1) / BLOCK_N);
        }
    }
    // Visited in reverse, so the masked tiles (the diagonal and the ragged end) come first.
    __device__ __forceinline__ int count() const { return n_end; }
    __device__ __forceinline__ int tile(int step) const { return n_end - 1 - step; }
    __device__ __forceinline__ bool needs_mask(int n) const { return n >= first_masked; }
    __device__ __forceinline__ bool visible(int i, int j) const {
        return j < sk && (!CAUSAL_MASK || j <= i + sk - sq);
    }
};
