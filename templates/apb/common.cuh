// flashgen APB kernels: shared definitions, included first by every APB module. Self-contained
// (no toolkit headers), like the attention kernels, so NVRTC needs nothing but itself.

typedef unsigned short fg_u16;
typedef long long fg_i64;

// 16-bit storage type of Q, K and V.
typedef fg_u16 elem_t;

__device__ __forceinline__ float fg_neg_inf() { return __int_as_float(0xff800000u); }

// Widens one stored element to f32 (the module's element type, `dtype` of the render context;
// "none" for modules that read no elements).
__device__ __forceinline__ float fg_to_f32(elem_t x) {
{%- if dtype == "bf16" %}
    return __uint_as_float(((unsigned)x) << 16);
{%- elif dtype == "f16" %}
    float r;
    asm("cvt.f32.f16 %0, %1;" : "=f"(r) : "h"(x));
    return r;
{%- else %}
    return 0.0f;
{%- endif %}
}
