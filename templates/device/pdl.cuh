// Programmatic dependent launch (sm_90 and later; nothing on older archs). A kernel launched
// with the programmatic-serialization attribute may start while the kernel before it still
// runs, once every CTA of that kernel has called fg_launch_dependents (or exited): its launch
// and ramp-up overlap the other's tail. Such a kernel calls fg_grid_dependency_wait before it
// touches anything the kernel before it writes; the wait returns once that kernel has finished
// and its writes are visible. Launched without the attribute, the wait returns at once.

__device__ __forceinline__ void fg_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ void fg_grid_dependency_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
