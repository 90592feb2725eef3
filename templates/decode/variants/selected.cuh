// Decode hooks, selected: the blocks of the pages listed for this (sequence, kv head), in
// ascending page order, then every page the sequence gained after the selection was made
// (`sel_covers`), so the newest tokens are always read. Only the sequence's last page can be
// partly filled, and it is the last page visited.
struct SelectedSchedule {
    const int* list;
    int seq_len, first_pos, covers, listed_blocks;
    __device__ __forceinline__ SelectedSchedule(const DecodeParams& p, int b, int kvh, int len)
        : seq_len(len), first_pos(len - p.q_len) {
        const fg_i64 row = (fg_i64)b * p.heads_kv + kvh;
        list = p.sel_index + row * p.sel_stride;
        const int count = p.sel_count[row];
        covers = p.sel_covers[b];
        const int nblk = (seq_len + LOGICAL - 1) / LOGICAL;
        listed_blocks = 0;
        if (count > 0) {
            const int last = list[count - 1];
            listed_blocks = (count - 1) * BLOCKS_PER_PAGE + max(0, min(BLOCKS_PER_PAGE, nblk - last * BLOCKS_PER_PAGE));
        }
    }
    __device__ __forceinline__ int num_blocks() const {
        const int nblk = (seq_len + LOGICAL - 1) / LOGICAL;
        return listed_blocks + max(0, nblk - covers * BLOCKS_PER_PAGE);
    }
    __device__ __forceinline__ int block_token(int idx) const {
        if (idx < listed_blocks) return (list[idx / BLOCKS_PER_PAGE] * BLOCKS_PER_PAGE + idx % BLOCKS_PER_PAGE) * LOGICAL;
        return (covers * BLOCKS_PER_PAGE + idx - listed_blocks) * LOGICAL;
    }
    __device__ __forceinline__ bool block_needs_mask(int tok0) const { return tok0 + LOGICAL - 1 > first_pos; }
    __device__ __forceinline__ bool visible(int t, int pos) const { return t <= pos; }
};
{%- if variant == "selected" %}

__device__ __forceinline__ void fg_decode_cta(const DecodeParams& p, int b, int kvh, int split, int seq_len, unsigned char* smem) {
    fg_decode_split(SelectedSchedule(p, b, kvh, seq_len), p, b, kvh, split, seq_len, smem);
}
{%- endif %}
