//! The APB kernels (compression and ring attention's merge): their sources, NVRTC builds
//! through the runtime's kernel cache (so they are cached on disk like the attention kernels),
//! and the per-runtime table of loaded modules.

use crate::error::{DriverContext, Result};
use crate::runtime::Runtime;
use cudarc::driver::{CudaFunction, CudaModule};
use flashgen_codegen::{DType, KernelSource};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const COMMON: &str = include_str!("../../../templates/apb/common.cuh");
const SELECT: &str = include_str!("../../../templates/apb/select.cu");
const GATHER: &str = include_str!("../../../templates/apb/gather.cu");
const HEADS: &str = include_str!("../../../templates/apb/heads.cu");
const QUERY_AWARE: &str = include_str!("../../../templates/apb/query_aware.cu");
const LOGITS: &str = include_str!("../../../templates/apb/logits.cu");
const MERGE: &str = include_str!("../../../templates/apb/merge.cu");

/// Threads per CTA of `apb_topk_select` (`SEL_THREADS`).
pub const SELECT_THREADS: u32 = 1024;
/// Threads per CTA of the query-aware tile kernels (`QA_THREADS`).
pub const QA_THREADS: u32 = 256;
/// Keys per CTA of the query-aware tile kernels (`QA_KT`).
pub const QA_KEY_TILE: usize = 64;
/// Threads per CTA of `apb_logit_rowstats` (`LOGIT_THREADS`).
pub const LOGIT_THREADS: u32 = 256;
/// Threads per CTA of the element-wise kernels (gather, bias + activation, pooling).
pub const ELEMENTWISE_THREADS: u32 = 256;
/// Threads per CTA of `apb_merge` (a warp per row) and `apb_finish`.
pub const MERGE_THREADS: u32 = 256;

/// One compiled unit of APB kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ApbModule {
    /// `apb_topk_select` (f32 scores; no element type).
    Select,
    /// `apb_gather` (moves 16-bit words: one build for bf16 and f16).
    Gather,
    /// `apb_bias_act`, `apb_pool_scores` (f32).
    Heads,
    /// `apb_qa_partial`, `apb_qa_stats`, `apb_qa_scores` for one element type.
    QueryAware(DType),
    /// `apb_logit_rowstats`, `apb_logit_colsum`: query-aware scores from cuBLAS logits (f32).
    Logits,
    /// `apb_merge`, `apb_finish`: ring attention's lse merge of partial results, for one element
    /// type.
    Merge(DType),
}

impl ApbModule {
    /// Every module, for compile checks.
    pub const ALL: [ApbModule; 8] = [
        ApbModule::Select,
        ApbModule::Gather,
        ApbModule::Heads,
        ApbModule::Logits,
        ApbModule::QueryAware(DType::Bf16),
        ApbModule::QueryAware(DType::F16),
        ApbModule::Merge(DType::Bf16),
        ApbModule::Merge(DType::F16),
    ];

    /// The entry functions of the module; the first names the source.
    pub fn functions(self) -> &'static [&'static str] {
        match self {
            ApbModule::Select => &["apb_topk_select"],
            ApbModule::Gather => &["apb_gather"],
            ApbModule::Heads => &["apb_bias_act", "apb_pool_scores"],
            ApbModule::QueryAware(_) => &["apb_qa_scores", "apb_qa_partial", "apb_qa_stats"],
            ApbModule::Logits => &["apb_logit_rowstats", "apb_logit_colsum"],
            ApbModule::Merge(_) => &["apb_merge", "apb_finish"],
        }
    }

    /// The CUDA source NVRTC compiles.
    pub fn source(self) -> KernelSource {
        let (define, body, threads) = match self {
            ApbModule::Select => ("", SELECT, SELECT_THREADS),
            ApbModule::Gather => ("", GATHER, ELEMENTWISE_THREADS),
            ApbModule::Heads => ("", HEADS, ELEMENTWISE_THREADS),
            ApbModule::Logits => ("", LOGITS, LOGIT_THREADS),
            ApbModule::QueryAware(DType::Bf16) => {
                ("#define FG_DTYPE_BF16\n", QUERY_AWARE, QA_THREADS)
            }
            ApbModule::QueryAware(DType::F16) => {
                ("#define FG_DTYPE_F16\n", QUERY_AWARE, QA_THREADS)
            }
            ApbModule::Merge(DType::Bf16) => ("#define FG_DTYPE_BF16\n", MERGE, MERGE_THREADS),
            ApbModule::Merge(DType::F16) => ("#define FG_DTYPE_F16\n", MERGE, MERGE_THREADS),
        };
        KernelSource {
            kernel_name: self.functions()[0].to_string(),
            code: format!("{define}{COMMON}\n{body}"),
            threads,
            shared_bytes: 0,
        }
    }
}

/// The APB modules loaded into one runtime's context, each compiled on first use through the
/// runtime's kernel cache (so they are cached on disk like the attention kernels). Every
/// [`Runtime`] owns one, as it owns its attention kernels.
#[derive(Default)]
pub(crate) struct ApbKernels {
    loaded: Mutex<HashMap<ApbModule, Arc<CudaModule>>>,
}

impl ApbKernels {
    /// The function `name` of `module` in `rt`'s context (`rt` owns this table).
    pub(crate) fn function(
        &self,
        rt: &Runtime,
        module: ApbModule,
        name: &str,
    ) -> Result<CudaFunction> {
        debug_assert!(module.functions().contains(&name));
        let cu = self.module(rt, module)?;
        cu.load_function(name)
            .while_(|| format!("finding {name} in its module"))
    }

    fn module(&self, rt: &Runtime, module: ApbModule) -> Result<Arc<CudaModule>> {
        let mut loaded = self.loaded.lock().expect("apb kernel table lock");
        if let Some(cu) = loaded.get(&module) {
            return Ok(cu.clone());
        }
        let hit = rt
            .cache()
            .get_or_compile_source(&module.source(), rt.arch())?;
        if let Some(w) = hit.warning {
            rt.push_warning(w);
        }
        let cu = rt
            .context()
            .load_module(cudarc::nvrtc::Ptx::from_binary(hit.kernel.cubin.clone()))
            .while_(|| format!("loading the CUBIN of {}", hit.kernel.kernel_name))?;
        loaded.insert(module, cu.clone());
        Ok(cu)
    }
}

/// A 1-D grid of `threads`-wide CTAs covering `total` items with grid-stride loops.
pub(crate) fn elementwise_grid(total: usize) -> u32 {
    let blocks = total.div_ceil(ELEMENTWISE_THREADS as usize).max(1);
    blocks.min(65_535 * 16) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile;
    use flashgen_codegen::Arch;

    #[test]
    fn every_module_names_its_functions_in_its_source() {
        for module in ApbModule::ALL {
            let source = module.source();
            for f in module.functions() {
                assert!(
                    source.code.contains(&format!("{f}(")),
                    "{module:?} lacks {f}"
                );
            }
        }
    }

    /// NVRTC only (no GPU): every APB kernel compiles for Ampere and Hopper without spills.
    #[test]
    fn every_module_compiles_for_sm80_and_sm90a() {
        if !crate::libs::nvrtc_present() {
            eprintln!("libnvrtc is not loadable: skipped");
            return;
        }
        for arch in [Arch::SM80, Arch::SM90] {
            for module in ApbModule::ALL {
                let (kernel, _) = compile(&module.source(), arch)
                    .unwrap_or_else(|e| panic!("{module:?} on {}: {e}", arch.sm_name()));
                assert!(kernel.cubin.starts_with(b"\x7fELF"));
                for f in module.functions() {
                    let report = crate::compile::parse_report(&kernel.log, f)
                        .unwrap_or_else(|| panic!("no ptxas report for {f}:\n{}", kernel.log));
                    assert!(
                        !report.spills(),
                        "{f} spills on {}: {report:?}",
                        arch.sm_name()
                    );
                }
            }
        }
    }
}
