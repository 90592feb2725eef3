//! The APB kernels (compression and ring attention's merge): their modules, rendered by codegen
//! (`flashgen_codegen::apb`) and loaded like every other kernel, through the runtime's module
//! table and kernel cache (so they are cached on disk like the attention kernels).

use crate::error::Result;
use cudarc::driver::CudaFunction;
use flashgen_codegen::KernelSource;
use flashgen_runtime::Runtime;

pub use flashgen_codegen::apb::{
    ApbModule, ELEMENTWISE_THREADS, LOGIT_THREADS, MERGE_THREADS, QA_KEY_TILE, QA_THREADS,
    SELECT_THREADS,
};

/// The function `name` of `module` in `rt`'s context: the module is compiled (or found in the
/// kernel cache) and loaded through the runtime's module table on first use, keyed by its hash.
pub(crate) fn function(rt: &Runtime, module: ApbModule, name: &str) -> Result<CudaFunction> {
    debug_assert!(module.functions().contains(&name));
    let loaded = rt.load_module(module.hash(), || source(module))?;
    Ok(loaded.function(name)?)
}

/// The CUDA source of `module`, rendered by codegen.
fn source(module: ApbModule) -> flashgen_runtime::Result<KernelSource> {
    module
        .render()
        .map_err(|e| flashgen_runtime::Error::Render(format!("{module:?}: {e}")))
}

/// A 1-D grid of `threads`-wide CTAs covering `total` items with grid-stride loops.
pub(crate) fn elementwise_grid(total: usize) -> u32 {
    let blocks = total.div_ceil(ELEMENTWISE_THREADS as usize).max(1);
    blocks.min(65_535 * 16) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashgen_codegen::Arch;
    use flashgen_runtime::compile::{compile, parse_report};

    /// NVRTC only (no GPU): every APB kernel compiles for Ampere and Hopper without spills.
    #[test]
    fn every_module_compiles_for_sm80_and_sm90a() {
        if !flashgen_runtime::libs::nvrtc_present() {
            eprintln!("libnvrtc is not loadable: skipped");
            return;
        }
        for arch in [Arch::SM80, Arch::SM90] {
            for module in ApbModule::ALL {
                let (kernel, _) = compile(&source(module).unwrap(), arch)
                    .unwrap_or_else(|e| panic!("{module:?} on {}: {e}", arch.sm_name()));
                assert!(kernel.cubin.starts_with(b"\x7fELF"));
                for f in module.functions() {
                    let report = parse_report(&kernel.log, f)
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
