//! The decode kernels' sources, their NVRTC builds through the runtime's kernel cache, and the
//! functions loaded through the runtime's one module table.

use crate::error::{Error, Result};
use crate::runtime::Runtime;
use cudarc::driver::CudaFunction;
use flashgen_codegen::decode::{
    decode_default_set, render_append, render_decode, render_selector, DECODE_HEAD_DIMS,
};
use flashgen_codegen::{Arch, DType, DecodeSpec, KernelSource, KvDtype, KvDtypes};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// One compiled unit of decode kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DecodeModule {
    /// The attention kernel of a spec (it merges its own splits).
    Attention(DecodeSpec),
    /// `fg_decode_append` for one input dtype and pair of pool formats.
    Append(DType, KvDtypes),
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
        for dtype in DType::ALL {
            all.push(DecodeModule::Append(
                dtype,
                KvDtypes::same(KvDtype::of(dtype)),
            ));
            for kv in KvDtypes::quantized_pairs(dtype) {
                all.push(DecodeModule::Append(dtype, kv));
            }
        }
        for dtype in DType::ALL {
            for d in DECODE_HEAD_DIMS {
                all.push(DecodeModule::Selector(dtype, d));
            }
        }
        all
    }

    /// The decode part of the built-in default set: the attention kernel of every spec of
    /// [`decode_default_set`], the append kernel of each of their KV dtypes and the page
    /// selector of each of their query dtypes and head dims.
    pub fn default_set() -> Vec<DecodeModule> {
        let specs = decode_default_set();
        let mut out: Vec<DecodeModule> =
            specs.iter().map(|&s| DecodeModule::Attention(s)).collect();
        for s in &specs {
            for m in [
                DecodeModule::Append(s.dtype, s.kv_dtype),
                DecodeModule::Selector(s.dtype, s.head_dim),
            ] {
                if !out.contains(&m) {
                    out.push(m);
                }
            }
        }
        out
    }

    /// The module's first entry function, whose resource report the kernel cache keeps.
    pub fn entry_name(self) -> String {
        match self {
            DecodeModule::Attention(spec) => spec.kernel_name(),
            DecodeModule::Append(..) => "fg_decode_append".into(),
            DecodeModule::Selector(..) => "fg_decode_page_scores".into(),
        }
    }

    /// The entry functions of the module.
    pub fn functions(self) -> Vec<String> {
        match self {
            DecodeModule::Attention(spec) => {
                vec![spec.kernel_name()]
            }
            DecodeModule::Append(..) => vec!["fg_decode_append".into()],
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
            DecodeModule::Append(dtype, kv) => render_append(dtype, kv),
            DecodeModule::Selector(dtype, d) => render_selector(dtype, d),
        };
        rendered.map_err(|e| Error::Render(format!("{e:?}")))
    }
}

/// The module as reports name it: the attention kernel's spec (`decode-dense,d128,bf16,p64,r16`),
/// `decode-append,<dtype>,kv-<format>` (or `,k-<format>,v-<format>`) or `decode-selector,d<head_dim>,<dtype>`.
impl std::fmt::Display for DecodeModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeModule::Attention(spec) => write!(f, "{spec}"),
            DecodeModule::Append(dtype, kv) if kv.k == kv.v => {
                write!(f, "decode-append,{dtype},kv-{kv}")
            }
            DecodeModule::Append(dtype, kv) => write!(f, "decode-append,{dtype},{kv}"),
            DecodeModule::Selector(dtype, d) => write!(f, "decode-selector,d{d},{dtype}"),
        }
    }
}

impl DecodeModule {
    /// The digest of the module's source on `arch` ([`KernelSource::digest`]), the key of the
    /// runtime's module table and of the disk cache. It is the rendered source's: a digest of
    /// what the source is rendered from (module, arch, templates) cannot see a change in the
    /// renderer's own code (a stage count, a pitch), and a kernel compiled by an older renderer
    /// must never be loaded for a newer one. Rendered once per module and arch in a process.
    pub fn digest(self, arch: Arch) -> Result<String> {
        static DIGESTS: OnceLock<Mutex<HashMap<(DecodeModule, Arch), String>>> = OnceLock::new();
        let digests = DIGESTS.get_or_init(Default::default);
        let known = digests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(self, arch))
            .cloned();
        if let Some(d) = known {
            return Ok(d);
        }
        let d = self.source(arch)?.digest();
        digests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((self, arch), d.clone());
        Ok(d)
    }
}

/// The function `name` of `module`, loaded through the runtime's one module table (which
/// checks the entry function's shared memory against the device and raises its dynamic limit
/// once, at load).
pub(crate) fn decode_function(
    rt: &Runtime,
    module: DecodeModule,
    name: &str,
) -> Result<CudaFunction> {
    let arch = rt.arch();
    let loaded = rt.load_module(&module.digest(arch)?, || module.source(arch))?;
    loaded.function(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{compile, parse_report};

    #[test]
    fn the_default_set_has_its_append_and_selector_kernels() {
        let set = DecodeModule::default_set();
        for spec in decode_default_set() {
            assert!(set.contains(&DecodeModule::Attention(spec)));
            assert!(set.contains(&DecodeModule::Append(spec.dtype, spec.kv_dtype)));
            assert!(set.contains(&DecodeModule::Selector(spec.dtype, spec.head_dim)));
        }
        for m in &set {
            assert_eq!(set.iter().filter(|x| *x == m).count(), 1);
            // Keyed by the rendered source: a renderer change is a new key.
            assert_eq!(
                m.digest(Arch::SM90).unwrap(),
                m.source(Arch::SM90).unwrap().digest()
            );
            assert_eq!(m.source(Arch::SM90).unwrap().kernel_name, m.entry_name());
        }
        assert_eq!(
            DecodeModule::Append(DType::Bf16, KvDtypes::same(KvDtype::Bf16)).to_string(),
            "decode-append,bf16,kv-bf16"
        );
        assert_eq!(
            DecodeModule::Append(
                DType::Bf16,
                KvDtypes::new(KvDtype::Int4Token, KvDtype::Int8Token)
            )
            .to_string(),
            "decode-append,bf16,k-int4tok,v-int8tok"
        );
        assert_eq!(
            DecodeModule::Selector(DType::Bf16, 128).to_string(),
            "decode-selector,d128,bf16"
        );
    }

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
            DecodeModule::Append(DType::F16, KvDtypes::same(KvDtype::F16)),
            DecodeModule::Append(DType::Bf16, KvDtypes::new(KvDtype::Int4Token, KvDtype::Fp8)),
            DecodeModule::Attention(
                DecodeSpec::new(flashgen_codegen::DecodeVariant::Dense, 128, DType::Bf16, 64)
                    .with_kv_dtypes(KvDtypes::new(KvDtype::Int4Token, KvDtype::Int8Token)),
            ),
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
