//! The decode kernels' sources, their NVRTC builds through the runtime's kernel cache, and the
//! per-runtime table of loaded modules (as the APB kernels).

use crate::error::{DriverContext, Error, Result};
use crate::runtime::Runtime;
use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{CudaFunction, CudaModule};
use flashgen_codegen::decode::{render_append, render_decode, render_selector, DECODE_HEAD_DIMS};
use flashgen_codegen::{Arch, DType, DecodeSpec, KernelSource, KvDtype};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One compiled unit of decode kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DecodeModule {
    /// The attention kernel of a spec and its split merge kernel.
    Attention(DecodeSpec),
    /// `fg_decode_append` for one KV dtype.
    Append(KvDtype),
    /// `fg_decode_page_scores` and `fg_decode_page_select` for one query dtype and head dim.
    Selector(DType, u32),
}

impl DecodeModule {
    /// Every module (for compile checks).
    pub fn all() -> Vec<DecodeModule> {
        let mut all: Vec<DecodeModule> = DecodeSpec::all()
            .into_iter()
            .map(DecodeModule::Attention)
            .collect();
        all.extend(KvDtype::ALL.map(DecodeModule::Append));
        for dtype in DType::ALL {
            for d in DECODE_HEAD_DIMS {
                all.push(DecodeModule::Selector(dtype, d));
            }
        }
        all
    }

    /// The entry functions of the module.
    pub fn functions(self) -> Vec<String> {
        match self {
            DecodeModule::Attention(spec) => {
                let name = spec.kernel_name();
                vec![format!("{name}_merge"), name]
            }
            DecodeModule::Append(_) => vec!["fg_decode_append".into()],
            DecodeModule::Selector(..) => vec![
                "fg_decode_page_scores".into(),
                "fg_decode_page_select".into(),
            ],
        }
    }

    /// The CUDA source NVRTC compiles for `arch`.
    pub fn source(self, arch: Arch) -> Result<KernelSource> {
        let rendered = match self {
            DecodeModule::Attention(spec) => {
                spec.validate()?;
                render_decode(&spec, arch)
            }
            DecodeModule::Append(kv) => render_append(kv),
            DecodeModule::Selector(dtype, d) => render_selector(dtype, d),
        };
        rendered.map_err(|e| Error::Render(format!("{e:?}")))
    }
}

/// The decode modules loaded into one runtime's context, compiled on first use through the
/// runtime's kernel cache.
#[derive(Default)]
pub(crate) struct DecodeKernels {
    loaded: Mutex<HashMap<DecodeModule, Arc<CudaModule>>>,
}

impl DecodeKernels {
    /// The function `name` of `module` in `rt`'s context, with its dynamic shared-memory limit
    /// raised to `shared_bytes`.
    pub(crate) fn function(
        &self,
        rt: &Runtime,
        module: DecodeModule,
        name: &str,
        shared_bytes: u32,
    ) -> Result<CudaFunction> {
        let cu = self.module(rt, module)?;
        let f = cu
            .load_function(name)
            .while_(|| format!("finding {name} in its module"))?;
        if shared_bytes > 48 * 1024 {
            // SAFETY: the function was just loaded; the size was checked against the device.
            unsafe {
                cudarc::driver::result::function::set_function_attribute(
                    f.cu_function(),
                    CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    shared_bytes as i32,
                )
            }
            .while_(|| format!("raising the shared-memory limit of {name}"))?;
        }
        Ok(f)
    }

    fn module(&self, rt: &Runtime, module: DecodeModule) -> Result<Arc<CudaModule>> {
        let mut loaded = self.loaded.lock().expect("decode kernel table lock");
        if let Some(cu) = loaded.get(&module) {
            return Ok(cu.clone());
        }
        let hit = rt
            .cache()
            .get_or_compile_source(&module.source(rt.arch())?, rt.arch())?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{compile, parse_report};

    #[test]
    fn every_module_names_its_functions_in_its_source() {
        for module in DecodeModule::all() {
            let source = module.source(Arch::SM90).unwrap();
            for f in module.functions() {
                assert!(
                    source.code.contains(&format!("{f}(")),
                    "{module:?} lacks {f}"
                );
            }
        }
    }

    /// A quick NVRTC check of one module of each kind (the full sweep is
    /// `runtime/tests/compile_decode.rs`).
    #[test]
    fn one_module_of_each_kind_compiles() {
        if !crate::libs::nvrtc_present() {
            eprintln!("libnvrtc is not loadable: skipped");
            return;
        }
        let spec = DecodeSpec::new(flashgen_codegen::DecodeVariant::Mixed, 128, DType::Bf16, 64);
        for module in [
            DecodeModule::Attention(spec),
            DecodeModule::Append(KvDtype::F16),
            DecodeModule::Selector(DType::Bf16, 128),
        ] {
            for arch in [Arch::SM80, Arch::SM90] {
                let (kernel, _) = compile(&module.source(arch).unwrap(), arch)
                    .unwrap_or_else(|e| panic!("{module:?}: {e}"));
                for f in module.functions() {
                    let report = parse_report(&kernel.log, &f).expect("ptxas report");
                    assert!(!report.spills(), "{f} on {arch}: {report:?}");
                }
            }
        }
    }
}
