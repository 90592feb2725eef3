//! The APB kernels (compression and ring attention's merge): their modules, rendered by codegen
//! (`flashgen_codegen::apb`), NVRTC builds through the runtime's kernel cache (so they are cached
//! on disk like the attention kernels), and the per-runtime table of loaded modules.

use crate::error::{DriverContext, Error, Result};
use crate::runtime::Runtime;
use cudarc::driver::{CudaFunction, CudaModule};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use flashgen_codegen::apb::{
    ApbModule, ELEMENTWISE_THREADS, LOGIT_THREADS, MERGE_THREADS, QA_KEY_TILE, QA_THREADS,
    SELECT_THREADS,
};

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
            .get_or_compile_source(&source(module)?, rt.arch())?;
        if let Some(w) = hit.warning {
            rt.push_warning(w);
        }
        let cu =
            crate::driver::load_cubin(rt.context(), &hit.kernel.cubin, &hit.kernel.kernel_name)?;
        loaded.insert(module, cu.clone());
        Ok(cu)
    }
}

/// The CUDA source of `module`, rendered by codegen.
fn source(module: ApbModule) -> Result<flashgen_codegen::KernelSource> {
    module
        .render()
        .map_err(|e| Error::Render(format!("{module:?}: {e}")))
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

    /// NVRTC only (no GPU): every APB kernel compiles for Ampere and Hopper without spills.
    #[test]
    fn every_module_compiles_for_sm80_and_sm90a() {
        if !crate::libs::nvrtc_present() {
            eprintln!("libnvrtc is not loadable: skipped");
            return;
        }
        for arch in [Arch::SM80, Arch::SM90] {
            for module in ApbModule::ALL {
                let (kernel, _) = compile(&source(module).unwrap(), arch)
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
