use flashgen::runtime::cudarc::driver::CudaSlice;

// Offsets cannot be assembled from a host copy and a different device copy.
fn assemble(q: CudaSlice<i32>, k: CudaSlice<i32>) -> flashgen::DeviceVarlen {
    flashgen::DeviceVarlen {
        host_q: vec![0, 1],
        host_k: vec![0, 1],
        dev_q: q,
        dev_k: k,
    }
}

fn main() {}
