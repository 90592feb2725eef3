// Variant hooks for dense attention{% if causal %} with the bottom-right aligned causal mask{% endif %}.
// Every variant answers the same three questions for the shared mainloop:
//   which KV tiles a query tile visits (TileSchedule::count / tile),
//   which of those need the elementwise mask (TileSchedule::needs_mask),
//   and the mask itself (fg_visible).

struct TileSchedule {
    int n_end;         // tiles [0, n_end) are visited
    int first_masked;  // tiles >= first_masked need the elementwise mask
    // Visited in reverse, so the masked tiles (the diagonal and the ragged end) come first.
    __device__ __forceinline__ int count() const { return n_end; }
    __device__ __forceinline__ int tile(int step) const { return n_end - 1 - step; }
    __device__ __forceinline__ bool needs_mask(int n) const { return n >= first_masked; }
};

__device__ __forceinline__ TileSchedule fg_make_schedule(int m_block, int sq, int sk) {
    TileSchedule s;
    const int n_tiles = (sk + BLOCK_N - 1) / BLOCK_N;
    s.n_end = n_tiles;
    s.first_masked = sk / BLOCK_N;  // the ragged last tile, if any
{%- if causal %}
    // Query i sits at position i + sk - sq. The tile's last real row bounds the keys it sees;
    // its first row bounds the keys every row sees.
    const int last_row = min(sq, (m_block + 1) * BLOCK_M) - 1;
    const int max_key = last_row + sk - sq;
    s.n_end = max_key < 0 ? 0 : min(n_tiles, max_key / BLOCK_N + 1);
    const int min_pos = m_block * BLOCK_M + sk - sq;
    s.first_masked = min(s.first_masked, min_pos + 1 <= 0 ? 0 : (min_pos + 1) / BLOCK_N);
{%- endif %}
    return s;
}

// Whether query row `i` sees key `j` (both relative to this batch element's sequences).
__device__ __forceinline__ bool fg_visible(int i, int j, int sq, int sk) {
{%- if causal %}
    return j < sk && j <= i + sk - sq;
{%- else %}
    (void)i;
    (void)sq;
    return j < sk;
{%- endif %}
}
