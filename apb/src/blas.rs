//! cuBLAS GEMMs of the retaining heads, through cudarc's dynamically loaded libcublas (a clear
//! [`Error::LibraryMissing`] when it is absent).

use crate::error::{invalid, Error, Result};
use cudarc::cublas::{result as blas, sys, CudaBlas};
use cudarc::driver::CudaContext;
use flashgen_codegen::DType;
use flashgen_runtime::libs::ensure_driver;
use flashgen_runtime::Runtime;
use std::ffi::c_void;
use std::sync::{Arc, OnceLock};

/// How to get libcublas (APB retaining-head scores) when it cannot be loaded.
pub const CUBLAS_HINT: &str =
    "no libcublas on the loader path: add the CUDA toolkit's lib64 (it ships libcublas.so.13) \
     to LD_LIBRARY_PATH, or install the `nvidia-cublas` wheel and add its nvidia/cu13/lib folder";

/// Whether libcublas can be loaded (checked once per process). cudarc loads it lazily and
/// panics when it is missing, so every path into cuBLAS passes through this first.
pub fn cublas_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: only tries to dlopen cudarc's candidate names and closes them again.
    *PRESENT.get_or_init(|| unsafe { cudarc::cublas::sys::is_culib_present() })
}

/// Ok when libcublas can be loaded.
pub fn ensure_cublas() -> Result<()> {
    require_cublas(cublas_present())
}

fn require_cublas(present: bool) -> Result<()> {
    if present {
        Ok(())
    } else {
        Err(Error::LibraryMissing {
            lib: "libcublas",
            hint: CUBLAS_HINT,
        })
    }
}

/// Element types of a GEMM's A and B operands (C is always f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmInput {
    Half(DType),
    F32,
}

impl GemmInput {
    fn cuda_type(self) -> sys::cudaDataType {
        match self {
            GemmInput::Half(DType::Bf16) => sys::cudaDataType::CUDA_R_16BF,
            GemmInput::Half(DType::F16) => sys::cudaDataType::CUDA_R_16F,
            GemmInput::F32 => sys::cudaDataType::CUDA_R_32F,
        }
    }
}

/// One `C = alpha X · Wᵀ (+ C)` product in row-major terms, as PyTorch's `Linear` stores W.
#[derive(Clone, Copy, Debug)]
pub struct LinearGemm {
    /// Rows of X and C (tokens).
    pub rows: usize,
    /// Columns of C (output features), rows of W.
    pub cols: usize,
    /// Shared inner size (input features this product covers).
    pub inner: usize,
    /// X, `[rows, inner]` with row stride `x_stride` elements.
    pub x: u64,
    pub x_stride: usize,
    /// W, `[cols, inner]` with row stride `w_stride` elements.
    pub w: u64,
    pub w_stride: usize,
    /// C, `[rows, cols]` f32, contiguous.
    pub c: u64,
    /// Adds into C when true (C = alpha X·Wᵀ + C), overwrites it otherwise.
    pub accumulate: bool,
    pub alpha: f32,
    pub input: GemmInput,
    /// Independent products, each at these element strides from the previous one.
    pub batch: Batch,
}

/// A strided batch of products (`count` 1 for one product).
#[derive(Clone, Copy, Debug)]
pub struct Batch {
    pub count: usize,
    pub x_stride: usize,
    pub w_stride: usize,
    pub c_stride: usize,
}

impl Batch {
    pub const ONE: Batch = Batch {
        count: 1,
        x_stride: 0,
        w_stride: 0,
        c_stride: 0,
    };
}

/// A cuBLAS handle on a runtime's stream.
pub struct Blas {
    handle: CudaBlas,
    ctx: Arc<CudaContext>,
}

impl Blas {
    /// A handle on `rt`'s stream; [`Error::LibraryMissing`] when libcublas cannot be loaded.
    pub fn new(rt: &Runtime) -> Result<Self> {
        ensure_driver()?;
        ensure_cublas()?;
        let handle = CudaBlas::new(rt.stream().clone()).map_err(|e| Error::Blas {
            context: "creating a handle".into(),
            message: format!("{e:?}"),
        })?;
        Ok(Blas {
            handle,
            ctx: rt.context().clone(),
        })
    }

    /// Whether this handle belongs to `rt`'s context.
    pub fn serves(&self, rt: &Runtime) -> bool {
        Arc::ptr_eq(&self.ctx, rt.context())
    }

    /// Runs one product on the handle's stream (f32 accumulation, no TF32).
    ///
    /// # Safety
    /// The pointers must be live device buffers of this context holding what the sizes and
    /// strides address, ordered on the stream until the product has run.
    pub unsafe fn linear(&self, g: &LinearGemm) -> Result<()> {
        let fits = |x: usize| i32::try_from(x).ok();
        let (Some(m), Some(n), Some(k), Some(lda), Some(ldb), Some(count)) = (
            fits(g.cols),
            fits(g.rows),
            fits(g.inner),
            fits(g.w_stride),
            fits(g.x_stride),
            fits(g.batch.count),
        ) else {
            return Err(invalid("gemm", format!("sizes exceed 32 bits: {g:?}")));
        };
        if g.w_stride < g.inner || g.x_stride < g.inner {
            return Err(invalid(
                "gemm",
                format!("a row stride is below the row: {g:?}"),
            ));
        }
        // cuBLAS works in the thread's current context: make it this handle's (a thread may
        // serve several GPUs).
        self.ctx.bind_to_thread().map_err(|source| Error::Driver {
            context: "binding the cuBLAS handle's context".into(),
            source,
        })?;
        let stride = |x: usize| x as i64;
        let (alpha, beta) = (g.alpha, if g.accumulate { 1.0f32 } else { 0.0 });
        // Column-major view: Cᵀ[cols, rows] = W[cols, inner] · Xᵀ[inner, rows], where the
        // row-major W is a column-major [inner, cols] matrix (transposed here) and the
        // row-major X a column-major [inner, rows] one.
        // SAFETY: the caller vouches for the buffers; sizes and strides were checked above.
        unsafe {
            blas::gemm_strided_batched_ex(
                *self.handle.handle(),
                sys::cublasOperation_t::CUBLAS_OP_T,
                sys::cublasOperation_t::CUBLAS_OP_N,
                m,
                n,
                k,
                (&alpha as *const f32).cast::<c_void>(),
                g.w as *const c_void,
                g.input.cuda_type(),
                lda,
                stride(g.batch.w_stride),
                g.x as *const c_void,
                g.input.cuda_type(),
                ldb,
                stride(g.batch.x_stride),
                (&beta as *const f32).cast::<c_void>(),
                g.c as *mut c_void,
                sys::cudaDataType::CUDA_R_32F,
                m,
                stride(g.batch.c_stride),
                count,
                sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| Error::Blas {
            context: format!("a {} x {} x {} GEMM", g.rows, g.cols, g.inner),
            message: format!("{e:?}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absent_libcublas_is_a_typed_error_with_a_hint() {
        assert_eq!(ensure_cublas().is_ok(), cublas_present());
        assert!(require_cublas(true).is_ok());
        let message = require_cublas(false).unwrap_err().to_string();
        assert!(
            message.starts_with("libcublas could not be loaded"),
            "{message}"
        );
        assert!(message.contains("libcublas.so.13"), "{message}");
    }
}
