//! cuBLAS GEMMs of the retaining heads, through cudarc's dynamically loaded libcublas (a clear
//! [`Error::LibraryMissing`](crate::Error::LibraryMissing) when it is absent).

use crate::error::{invalid, Error, Result};
use crate::libs::{ensure_cublas, ensure_driver};
use crate::runtime::Runtime;
use cudarc::cublas::{result as blas, sys, CudaBlas};
use cudarc::driver::CudaContext;
use flashgen_codegen::DType;
use std::ffi::c_void;
use std::sync::Arc;

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

/// One `C = X · Wᵀ (+ C)` product in row-major terms, as PyTorch's `Linear` stores W.
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
    /// Adds into C when true (C = X·Wᵀ + C), overwrites it otherwise.
    pub accumulate: bool,
    pub input: GemmInput,
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
        let (Some(m), Some(n), Some(k), Some(lda), Some(ldb)) = (
            fits(g.cols),
            fits(g.rows),
            fits(g.inner),
            fits(g.w_stride),
            fits(g.x_stride),
        ) else {
            return Err(invalid("gemm", format!("sizes exceed 32 bits: {g:?}")));
        };
        if g.w_stride < g.inner || g.x_stride < g.inner {
            return Err(invalid(
                "gemm",
                format!("a row stride is below the row: {g:?}"),
            ));
        }
        let (alpha, beta) = (1.0f32, if g.accumulate { 1.0f32 } else { 0.0 });
        // Column-major view: Cᵀ[cols, rows] = W[cols, inner] · Xᵀ[inner, rows], where the
        // row-major W is a column-major [inner, cols] matrix (transposed here) and the
        // row-major X a column-major [inner, rows] one.
        // SAFETY: the caller vouches for the buffers; sizes and strides were checked above.
        unsafe {
            blas::gemm_ex(
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
                g.x as *const c_void,
                g.input.cuda_type(),
                ldb,
                (&beta as *const f32).cast::<c_void>(),
                g.c as *mut c_void,
                sys::cudaDataType::CUDA_R_32F,
                m,
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
