// flashgen device library: element types and conversions.
// Self-contained on purpose (no CUDA toolkit headers): NVRTC compiles it in well under a second
// and a user needs only the driver and libnvrtc.

typedef unsigned short fg_u16;
typedef unsigned int fg_u32;
typedef long long fg_i64;

// 16-bit storage type of Q, K, V and O ({{ dtype }}); arithmetic happens in f32 or on tensor cores.
typedef fg_u16 elem_t;

__device__ __forceinline__ float fg_neg_inf() { return __int_as_float(0xff800000u); }

// Packs two f32 into one register of two {{ dtype }}: `lo` at the lower address / column.
__device__ __forceinline__ fg_u32 fg_pack2(float lo, float hi) {
    fg_u32 r;
{%- if dtype == "bf16" %}
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
{%- else %}
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
{%- endif %}
    return r;
}

__device__ __forceinline__ float fg_exp2(float x) {
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
}

__device__ __forceinline__ float fg_log2(float x) {
    float r;
    asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
}
