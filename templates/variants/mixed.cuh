// Mixed heads (LServe): each query head has its own kind, all in one launch. The kind is uniform
// across a CTA, so the switches below never diverge within a warp.
enum HeadKind { HEAD_DENSE = 0, HEAD_DENSE_CAUSAL = 1, HEAD_STREAMING = 2, HEAD_BLOCK_SPARSE = 3 };

struct MixedSchedule {
    int kind;
    DenseSchedule<false> dense;
    DenseSchedule<true> causal;
    StreamingSchedule streaming;
    BlockSparseSchedule<CAUSAL> sparse;

    __device__ __forceinline__ void init(const FlashParams& p, int batch, int head, int m_block, int sq, int sk) {
        kind = p.head_kind[head];
        switch (kind) {
            case HEAD_DENSE: dense.init(p, batch, head, m_block, sq, sk); break;
            case HEAD_DENSE_CAUSAL: causal.init(p, batch, head, m_block, sq, sk); break;
            case HEAD_STREAMING: streaming.init(p, batch, head, m_block, sq, sk); break;
            default: sparse.init(p, batch, head, m_block, sq, sk); break;
        }
    }
#define FG_DISPATCH(call)                                   \
    switch (kind) {                                         \
        case HEAD_DENSE: return dense.call;                 \
        case HEAD_DENSE_CAUSAL: return causal.call;         \
        case HEAD_STREAMING: return streaming.call;         \
        default: return sparse.call;                        \
    }
    __device__ __forceinline__ int count() const { FG_DISPATCH(count()) }
    __device__ __forceinline__ int tile(int step) const { FG_DISPATCH(tile(step)) }
    __device__ __forceinline__ bool needs_mask(int n) const { FG_DISPATCH(needs_mask(n)) }
    __device__ __forceinline__ bool visible(int i, int j) const { FG_DISPATCH(visible(i, j)) }
#undef FG_DISPATCH
};
