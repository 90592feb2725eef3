// Decode hooks, streaming (A-shape): token t is visible to the new token at position pos iff
// t <= pos and (t < sink or pos - t < recent). The visit list is the sink blocks, then the blocks
// from the earliest token any new token's window reaches to the end; nothing else is read.
struct StreamingSchedule {
    int seq_len, first_pos, sink, recent, sink_blocks, recent_block0;
    __device__ __forceinline__ StreamingSchedule(const DecodeParams& p, int, int, int len)
        : seq_len(len), first_pos(len - p.q_len), sink(p.sink), recent(p.recent) {
        sink_blocks = (min(sink, seq_len) + LOGICAL - 1) / LOGICAL;
        const int lo = max(0, first_pos - recent + 1);
        recent_block0 = max(sink_blocks, lo / LOGICAL);
    }
    __device__ __forceinline__ int num_blocks() const {
        return sink_blocks + max(0, (seq_len + LOGICAL - 1) / LOGICAL - recent_block0);
    }
    __device__ __forceinline__ int block_token(int idx) const {
        return (idx < sink_blocks ? idx : recent_block0 + idx - sink_blocks) * LOGICAL;
    }
    __device__ __forceinline__ int block_page(int, int tok0, const int* table) const { return table[tok0 / PAGE_SIZE]; }
    // Fully visible: every token at or before the first new token, and each either a sink
    // token or inside the last new token's window.
    __device__ __forceinline__ bool block_needs_mask(int tok0) const {
        const int last_pos = seq_len - 1;
        return tok0 + LOGICAL - 1 > first_pos || !(tok0 + LOGICAL <= sink || last_pos - tok0 < recent);
    }
    __device__ __forceinline__ bool visible(int t, int pos) const { return t <= pos && (t < sink || pos - t < recent); }
};
{%- if variant == "streaming" %}

__device__ __forceinline__ void fg_decode_cta(const DecodeParams& p, int b, int kvh, int split, int seq_len, unsigned char* smem) {
    fg_decode_split(StreamingSchedule(p, b, kvh, seq_len), p, b, kvh, split, seq_len, smem);
}
{%- endif %}
