// Streaming (A-shaped) attention: query at position pos sees key j iff j <= pos and
// (j < sink or pos - j < window). A query tile visits the tiles meeting the sink and the tiles
// meeting the union of its rows' windows; only tiles where some pair is hidden are masked.
struct StreamingSchedule {
    int sq, sk, sink, window;
    int p_lo, p_hi;         // positions of the tile's first and last real rows
    int win_begin, win_end; // window tiles [win_begin, win_end)
    int sink_end;           // sink tiles [0, sink_end), never overlapping the window tiles

    __device__ __forceinline__ void init(const FlashParams& p, const VariantParams& vp, int batch, int head, int m_block, int sq_, int sk_) {
        (void)p;
        (void)batch;
        (void)head;
        sq = sq_;
        sk = sk_;
        sink = vp.streaming.sink;
        window = vp.streaming.window;
        p_lo = m_block * BLOCK_M + sk - sq;
        p_hi = min(sq, (m_block + 1) * BLOCK_M) - 1 + sk - sq;
        const int key_end = max(0, min(sk, p_hi + 1));  // keys [0, key_end) are at or before some row
        // Row pos sees the window (pos - window, pos]; over the tile's rows that is
        // [p_lo - window + 1, p_hi].
        const int win_lo = max(0, p_lo - window + 1);
        if (window > 0 && win_lo < key_end) {
            win_begin = win_lo / BLOCK_N;
            win_end = (key_end + BLOCK_N - 1) / BLOCK_N;
        } else {
            win_begin = win_end = 0;
        }
        const int sink_keys = min(sink, key_end);
        sink_end = (sink_keys + BLOCK_N - 1) / BLOCK_N;
        if (win_end > win_begin) sink_end = min(sink_end, win_begin);
    }
    __device__ __forceinline__ int count() const { return (win_end - win_begin) + sink_end; }
    // The window tiles from the diagonal backwards, then the sink tiles.
    __device__ __forceinline__ int tile(int step) const {
        const int nw = win_end - win_begin;
        return step < nw ? win_end - 1 - step : sink_end - 1 - (step - nw);
    }
    __device__ __forceinline__ bool needs_mask(int n) const {
        const int j0 = n * BLOCK_N;
        const int j1 = j0 + BLOCK_N - 1;
        if (j1 >= sk || j1 > p_lo) return true;  // ragged end, or above some row's diagonal
        if (j1 < sink) return false;             // all sink keys
        return p_hi - max(j0, sink) >= window;   // some row's window misses the oldest key
    }
    __device__ __forceinline__ bool visible(int i, int j) const {
        const int pos = i + sk - sq;
        return j < sk && j <= pos && (j < sink || pos - j < window);
    }
};
