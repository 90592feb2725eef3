// Decode hooks, selected: the blocks of the pages listed for this (sequence, kv head), in
// ascending page order, then every page the sequence gained after the selection was made
// (`sel_covers`), so the newest tokens are always read. Only the sequence's last page can be
// partly filled, and it is the last page visited. A list always ends with the newest page the
// sequence had when it was made (page covers - 1), so the list's length and that extent give
// the listed blocks without reading the list.
//
// A CTA visits few tiles (a 4096-token selection fills the GPU at two tiles per CTA), so the
// chain of dependent loads before its first copy is most of its time. The first SEL_PREFETCH
// list entries of the CTA's split and their block-table entries are read up front into shared
// memory, by addresses from the parameters alone: the list entries go out beside the sequence
// length and the list's length, and the first copies wait on two dependent loads, not four.
constexpr int SEL_PREFETCH = 32;

struct SelectedSchedule {
    const int* list;
    const int* lpage;  // shared: SEL_PREFETCH list entries from slot0
    const int* ppage;  // shared: their physical pages
    int seq_len, first_pos, covers, listed_blocks, slot0;
    __device__ __forceinline__ SelectedSchedule(const DecodeParams& p, int b, int kvh, int split, int len,
                                                int (&pages)[2][SEL_PREFETCH])
        : seq_len(len), first_pos(len - p.q_len) {
        const fg_i64 row = (fg_i64)b * p.heads_kv + kvh;
        list = p.sel_index + row * p.sel_stride;
        slot0 = split * p.blocks_per_split / BLOCKS_PER_PAGE;
        const int t = threadIdx.x, slot = slot0 + t;
        int lp = 0;
        if (t < SEL_PREFETCH && slot < p.sel_stride) lp = list[slot];
        const int count = p.sel_count[row];
        covers = p.sel_covers[b];
        int pp = 0;
        if (t < SEL_PREFETCH && slot < count) pp = p.block_table[(fg_i64)b * p.table_stride + lp];
        if (t < SEL_PREFETCH) {
            pages[0][t] = lp;
            pages[1][t] = pp;
        }
        lpage = pages[0];
        ppage = pages[1];
        const int nblk = (seq_len + LOGICAL - 1) / LOGICAL;
        listed_blocks = 0;
        if (count > 0) {
            listed_blocks = (count - 1) * BLOCKS_PER_PAGE + max(0, min(BLOCKS_PER_PAGE, nblk - (covers - 1) * BLOCKS_PER_PAGE));
        }
        __syncthreads();
    }
    __device__ __forceinline__ int num_blocks() const {
        const int nblk = (seq_len + LOGICAL - 1) / LOGICAL;
        return listed_blocks + max(0, nblk - covers * BLOCKS_PER_PAGE);
    }
    // The list entry of a listed block's page, from shared memory when prefetched.
    __device__ __forceinline__ int listed_page(int idx) const {
        const int slot = idx / BLOCKS_PER_PAGE;
        return (unsigned)(slot - slot0) < (unsigned)SEL_PREFETCH ? lpage[slot - slot0] : list[slot];
    }
    __device__ __forceinline__ int block_token(int idx) const {
        if (idx < listed_blocks) return (listed_page(idx) * BLOCKS_PER_PAGE + idx % BLOCKS_PER_PAGE) * LOGICAL;
        return (covers * BLOCKS_PER_PAGE + idx - listed_blocks) * LOGICAL;
    }
    // The physical page of block idx (first token tok0): prefetched, or from the block table.
    __device__ __forceinline__ int block_page(int idx, int tok0, const int* table) const {
        const int slot = idx / BLOCKS_PER_PAGE;
        if (idx < listed_blocks && (unsigned)(slot - slot0) < (unsigned)SEL_PREFETCH) return ppage[slot - slot0];
        return table[tok0 / PAGE_SIZE];
    }
    __device__ __forceinline__ bool block_needs_mask(int tok0) const { return tok0 + LOGICAL - 1 > first_pos; }
    __device__ __forceinline__ bool visible(int t, int pos) const { return t <= pos; }
};
{%- if variant == "selected" %}

__device__ __forceinline__ void fg_decode_cta(const DecodeParams& p, int b, int kvh, int split, int seq_len, unsigned char* smem) {
    __shared__ int pages[2][SEL_PREFETCH];
    fg_decode_split(SelectedSchedule(p, b, kvh, split, seq_len, pages), p, b, kvh, split, seq_len, smem);
}
{%- endif %}
