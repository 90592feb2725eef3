// flashgen device library: shared-memory addressing, async copies and tensor-core operations,
// all as inline PTX for sm_80 and newer.

__device__ __forceinline__ fg_u32 fg_smem_addr(const void* p) {
    fg_u32 r;
    asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(r) : "l"(p));
    return r;
}

// 16-byte global->shared copy that bypasses L1; `valid == false` zero-fills the destination
// (the source is then not read, but must still be a mapped address).
__device__ __forceinline__ void fg_cp_async16(fg_u32 dst, const void* src, bool valid) {
    int bytes = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(bytes));
}

// As fg_cp_async16, asking L2 to fetch the whole 128-byte line the copy falls in: for streams
// of whole rows (the decode kernels' KV pages) measured 2-3% more HBM bandwidth on an H200.
__device__ __forceinline__ void fg_cp_async16_l2(fg_u32 dst, const void* src, bool valid) {
    int bytes = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(bytes));
}

// The same copy of 16 bytes that are known to be in bounds.
__device__ __forceinline__ void fg_cp_async16(fg_u32 dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src));
}

__device__ __forceinline__ void fg_cp_async_commit() { asm volatile("cp.async.commit_group;" ::); }

template <int N>
__device__ __forceinline__ void fg_cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N));
}

// Four 8x8 b16 matrices; lanes 8i..8i+7 give the row addresses of matrix i.
__device__ __forceinline__ void fg_ldmatrix_x4(fg_u32 (&r)[4], fg_u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 { %0, %1, %2, %3 }, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

// As above, each matrix transposed on the way (for B operands stored k-major).
__device__ __forceinline__ void fg_ldmatrix_x4_trans(fg_u32 (&r)[4], fg_u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 { %0, %1, %2, %3 }, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

// D = A * B + D with A 16x16 (row), B 16x8 (col), f32 accumulators. Not volatile: it only
// reads and writes registers, so the scheduler may interleave it with loads.
__device__ __forceinline__ void fg_mma_16816(float (&d)[4], const fg_u32 (&a)[4], fg_u32 b0, fg_u32 b1) {
    asm(
        "mma.sync.aligned.m16n8k16.row.col.f32.{{ dtype }}.{{ dtype }}.f32 "
        "{ %0, %1, %2, %3 }, { %4, %5, %6, %7 }, { %8, %9 }, { %0, %1, %2, %3 };"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
{%- if mma == "wgmma" %}

// ---- sm_90a warpgroup MMA ----------------------------------------------------------------
typedef unsigned long long fg_u64;

// Shared-memory matrix descriptor: start address, leading / stride byte offsets (all >> 4) and
// the 128-byte swizzle mode.
__device__ __forceinline__ fg_u64 fg_wgmma_desc(fg_u32 addr, fg_u32 lead_bytes, fg_u32 stride_bytes) {
    return (fg_u64)((addr & 0x3FFFF) >> 4) | ((fg_u64)((lead_bytes & 0x3FFFF) >> 4) << 16) |
           ((fg_u64)((stride_bytes & 0x3FFFF) >> 4) << 32) | (1ull << 62);
}

__device__ __forceinline__ void fg_wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void fg_wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void fg_wgmma_wait_all() { asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory"); }
// Waits until at most N committed groups of this warpgroup are still in flight.
template <int N>
__device__ __forceinline__ void fg_wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}
__device__ __forceinline__ void fg_fence_operand(fg_u32& x) { asm volatile("" : "+r"(x)::"memory"); }
// Ordinary shared-memory writes (cp.async included) become visible to the tensor cores' proxy.
__device__ __forceinline__ void fg_fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }
// Pins accumulators in place: no read or write of them moves across an in-flight wgmma.
__device__ __forceinline__ void fg_fence_operand(float& x) { asm volatile("" : "+f"(x)::"memory"); }

// S[64 x {{ block_n }}] (+)= A[64 x 16] * B[16 x {{ block_n }}], both K-major in shared memory;
// `accumulate == 0` overwrites S (no zeroing pass before the first k-step).
__device__ __forceinline__ void fg_wgmma_qk(float (&d)[{{ s_tiles }}][4], fg_u64 desc_a, fg_u64 desc_b, int accumulate) {
    asm volatile(
        "{ .reg .pred p; setp.ne.b32 p, %{{ s_regs + 2 }}, 0; "
        "wgmma.mma_async.sync.aligned.m64n{{ block_n }}k16.f32.{{ dtype }}.{{ dtype }} "
        "{ {% for i in range(end=s_regs) %}%{{ i }}{% if not loop.last %}, {% endif %}{% endfor %} }, "
        "%{{ s_regs }}, %{{ s_regs + 1 }}, p, 1, 1, 0, 0; }"
        : {% for i in range(end=s_tiles) %}"+f"(d[{{ i }}][0]), "+f"(d[{{ i }}][1]), "+f"(d[{{ i }}][2]), "+f"(d[{{ i }}][3]){% if not loop.last %}, {% endif %}{% endfor %}
        : "l"(desc_a), "l"(desc_b), "r"(accumulate));
}

// O[64 x {{ head_dim }}] += P[64 x 16] (registers) * V[16 x {{ head_dim }}] (shared memory,
// MN-major, hence the transpose flag).
__device__ __forceinline__ void fg_wgmma_pv(float (&d)[{{ o_tiles }}][4], const fg_u32 (&a)[4], fg_u64 desc_b) {
    asm volatile(
        "{ .reg .pred p; setp.ne.b32 p, %{{ o_regs + 5 }}, 0; "
        "wgmma.mma_async.sync.aligned.m64n{{ head_dim }}k16.f32.{{ dtype }}.{{ dtype }} "
        "{ {% for i in range(end=o_regs) %}%{{ i }}{% if not loop.last %}, {% endif %}{% endfor %} }, "
        "{ %{{ o_regs }}, %{{ o_regs + 1 }}, %{{ o_regs + 2 }}, %{{ o_regs + 3 }} }, "
        "%{{ o_regs + 4 }}, p, 1, 1, 1; }"
        : {% for i in range(end=o_tiles) %}"+f"(d[{{ i }}][0]), "+f"(d[{{ i }}][1]), "+f"(d[{{ i }}][2]), "+f"(d[{{ i }}][3]){% if not loop.last %}, {% endif %}{% endfor %}
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1));
}
{%- endif %}
