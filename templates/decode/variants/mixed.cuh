// Decode hooks, mixed: per kv head (all query heads of a group share its pages), streaming
// (`head_kind` 1) or selected (0), in one launch; each kind runs its own specialised loop.
{% include "decode/variants/streaming.cuh" %}
{% include "decode/variants/selected.cuh" %}

__device__ __forceinline__ void fg_decode_cta(const DecodeParams& p, int b, int kvh, int split, int seq_len, unsigned char* smem) {
    if (p.head_kind[kvh] == 1) {
        fg_decode_split(StreamingSchedule(p, b, kvh, seq_len), p, b, kvh, split, seq_len, smem);
    } else {
        __shared__ int pages[2][SEL_PREFETCH];
        fg_decode_split(SelectedSchedule(p, b, kvh, split, seq_len, pages), p, b, kvh, split, seq_len, smem);
    }
}
