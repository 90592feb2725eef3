// Decode hooks, dense: every block of the sequence, in order; only blocks holding a token after
// the first new token's position need the mask (the new tokens are causal among themselves).
struct DenseSchedule {
    int seq_len, first_pos;
    __device__ __forceinline__ DenseSchedule(const DecodeParams& p, int, int, int len)
        : seq_len(len), first_pos(len - p.q_len) {}
    __device__ __forceinline__ int num_blocks() const { return (seq_len + LOGICAL - 1) / LOGICAL; }
    __device__ __forceinline__ int block_token(int idx) const { return idx * LOGICAL; }
    __device__ __forceinline__ int block_page(int, int tok0, const int* table) const { return table[tok0 / PAGE_SIZE]; }
    __device__ __forceinline__ bool block_needs_mask(int tok0) const { return tok0 + LOGICAL - 1 > first_pos; }
    __device__ __forceinline__ bool visible(int t, int pos) const { return t <= pos; }
};

__device__ __forceinline__ void fg_decode_cta(const DecodeParams& p, int b, int kvh, int split, int seq_len, unsigned char* smem) {
    fg_decode_split(DenseSchedule(p, b, kvh, seq_len), p, b, kvh, split, seq_len, smem);
}
