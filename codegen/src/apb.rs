//! APB's kernels (top-k selection, gather, scorers, ring attention's lse merge): the modules
//! rendered from `templates/apb/` through the same tera pipeline as the attention kernels, the
//! element type a context variable. Each module renders to one [`KernelSource`] holding one or
//! more entry functions.

use crate::render::{apb_template_digest, apb_tera, hex, KernelSource};
use crate::spec::DType;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;
use tera::Context;

/// Threads per CTA of `apb_topk_select` (`SEL_THREADS` in select.cu).
pub const SELECT_THREADS: u32 = 1024;
/// Threads per CTA of the query-aware tile kernels (`QA_THREADS` in query_aware.cu).
pub const QA_THREADS: u32 = 256;
/// Keys per CTA of the query-aware tile kernels (`QA_KT` in query_aware.cu).
pub const QA_KEY_TILE: usize = 64;
/// Threads per CTA of `apb_logit_rowstats` (`LOGIT_THREADS` in logits.cu).
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

    /// The template the module is rendered from (a name in [`crate::render::APB_TEMPLATES`]).
    pub fn template(self) -> &'static str {
        match self {
            ApbModule::Select => "apb/select.cu",
            ApbModule::Gather => "apb/gather.cu",
            ApbModule::Heads => "apb/heads.cu",
            ApbModule::QueryAware(_) => "apb/query_aware.cu",
            ApbModule::Logits => "apb/logits.cu",
            ApbModule::Merge(_) => "apb/merge.cu",
        }
    }

    /// The element type the module is built for; `None` for modules that read no elements (or,
    /// like the gather, only move 16-bit words).
    pub fn dtype(self) -> Option<DType> {
        match self {
            ApbModule::QueryAware(dtype) | ApbModule::Merge(dtype) => Some(dtype),
            _ => None,
        }
    }

    /// Threads per CTA of the module's first function.
    pub fn threads(self) -> u32 {
        match self {
            ApbModule::Select => SELECT_THREADS,
            ApbModule::Gather | ApbModule::Heads => ELEMENTWISE_THREADS,
            ApbModule::Logits => LOGIT_THREADS,
            ApbModule::QueryAware(_) => QA_THREADS,
            ApbModule::Merge(_) => MERGE_THREADS,
        }
    }

    /// What the templates see.
    fn context(self) -> Context {
        let mut ctx = Context::new();
        ctx.insert("kernel_name", self.functions()[0]);
        ctx.insert("dtype", self.dtype().map_or("none", DType::name));
        ctx
    }

    /// Renders the module's CUDA source. Fails only if a template is broken.
    pub fn render(self) -> Result<KernelSource, tera::Error> {
        let code = apb_tera().render(self.template(), &self.context())?;
        Ok(KernelSource {
            kernel_name: self.functions()[0].to_string(),
            code,
            threads: self.threads(),
            shared_bytes: 0,
        })
    }

    /// Stable hash of everything the module is rendered from (template, context, launch shape
    /// and the APB templates' digest), computed without rendering: equal hashes render equal
    /// sources, so the runtime keys the module by it (as it keys attention kernels by their
    /// [`spec_hash`](crate::spec_hash)). Computed once per process.
    pub fn hash(self) -> &'static str {
        static HASHES: OnceLock<Vec<(ApbModule, String)>> = OnceLock::new();
        let hashes = HASHES.get_or_init(|| {
            ApbModule::ALL
                .iter()
                .map(|&m| (m, m.compute_hash()))
                .collect()
        });
        &hashes
            .iter()
            .find(|(m, _)| *m == self)
            .expect("ALL lists every module")
            .1
    }

    fn compute_hash(self) -> String {
        let mut h = Sha256::new();
        h.update(b"apb|");
        h.update(self.template().as_bytes());
        h.update([0]);
        h.update(self.context().into_json().to_string().as_bytes());
        h.update([0]);
        h.update(format!("{} 0", self.threads()).as_bytes());
        h.update([0]);
        h.update(apb_template_digest().as_bytes());
        hex(&h.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_module_renders_its_functions_self_contained() {
        for module in ApbModule::ALL {
            let source = module.render().unwrap();
            assert_eq!(source.kernel_name, module.functions()[0]);
            assert_eq!(source.threads, module.threads());
            for f in module.functions() {
                assert!(
                    source.code.contains(&format!("{f}(")),
                    "{module:?} lacks {f}"
                );
            }
            assert!(!source.code.contains("#include"), "{module:?} includes");
            for syntax in ["{{", "{%", "{#", "FG_DTYPE"] {
                assert!(!source.code.contains(syntax), "{module:?}: {syntax} left");
            }
            // The shared definitions come first, once.
            assert_eq!(source.code.matches("typedef fg_u16 elem_t;").count(), 1);
            assert_eq!(source, module.render().unwrap(), "deterministic");
        }
    }

    #[test]
    fn the_element_type_picks_the_conversions() {
        let bf16 = ApbModule::Merge(DType::Bf16).render().unwrap().code;
        let f16 = ApbModule::Merge(DType::F16).render().unwrap().code;
        assert!(bf16.contains("((unsigned)x) << 16") && bf16.contains("cvt.rn.bf16.f32"));
        assert!(!bf16.contains("cvt.f32.f16") && !bf16.contains("cvt.rn.f16.f32"));
        assert!(f16.contains("cvt.f32.f16") && f16.contains("cvt.rn.f16.f32"));
        assert!(!f16.contains("<< 16") && !f16.contains("cvt.rn.bf16.f32"));
        let qa = ApbModule::QueryAware(DType::F16).render().unwrap().code;
        assert!(qa.contains("cvt.f32.f16"));
        // Modules without an element type read none.
        let select = ApbModule::Select.render().unwrap().code;
        assert!(select.contains("return 0.0f;") && !select.contains("cvt."));
    }

    /// The host's launch constants are the templates' own.
    #[test]
    fn launch_constants_match_the_templates() {
        let define = |module: ApbModule, name: &str| -> u64 {
            let code = module.render().unwrap().code;
            let line = code
                .lines()
                .find(|l| l.starts_with(&format!("#define {name} ")))
                .unwrap_or_else(|| panic!("{module:?} defines no {name}"));
            line.split_whitespace().nth(2).unwrap().parse().unwrap()
        };
        assert_eq!(
            define(ApbModule::Select, "SEL_THREADS"),
            u64::from(SELECT_THREADS)
        );
        let qa = ApbModule::QueryAware(DType::Bf16);
        assert_eq!(define(qa, "QA_THREADS"), u64::from(QA_THREADS));
        assert_eq!(define(qa, "QA_KT"), QA_KEY_TILE as u64);
        assert_eq!(
            define(ApbModule::Logits, "LOGIT_THREADS"),
            u64::from(LOGIT_THREADS)
        );
    }

    #[test]
    fn hashes_are_stable_and_distinct() {
        let hashes: HashSet<&str> = ApbModule::ALL.iter().map(|m| m.hash()).collect();
        assert_eq!(hashes.len(), ApbModule::ALL.len());
        for module in ApbModule::ALL {
            assert_eq!(module.hash(), module.compute_hash());
            assert_eq!(module.hash().len(), 64);
        }
        assert_eq!(apb_template_digest().len(), 64);
        assert_ne!(apb_template_digest(), crate::template_digest());
    }
}
