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
