//! Renders a spec into self-contained CUDA C++ through the embedded tera templates.

use crate::spec::{KernelSpec, Mma};
use crate::validate::{q_in_registers, shared_memory_bytes, SMEM_ROW_PAD};
use crate::variants::{schedule_files, Schedule, REGISTRY};
use sha2::{Digest, Sha256};
use std::sync::OnceLock;
use tera::{Context, Tera};

/// The shared templates, embedded at build time. Names are their paths under `templates/`;
/// the variants' schedule files ([`crate::variants::schedule_files`]) join them in
/// [`templates`].
const BASE_TEMPLATES: &[(&str, &str)] = &[
    (
        "device/types.cuh",
        include_str!("../../templates/device/types.cuh"),
    ),
    (
        "device/mma.cuh",
        include_str!("../../templates/device/mma.cuh"),
    ),
    (
        "device/softmax.cuh",
        include_str!("../../templates/device/softmax.cuh"),
    ),
];

/// The kernel template, the one every prefill variant renders through.
pub const KERNEL_TEMPLATE: (&str, &str) = (
    "attention_fwd.cu",
    include_str!("../../templates/attention_fwd.cu"),
);

/// Every template of the attention kernels: the shared ones, the variants' schedule files and
/// the kernel template. Names are their paths under `templates/`.
pub fn templates() -> &'static [(&'static str, &'static str)] {
    static ALL: OnceLock<Vec<(&'static str, &'static str)>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut all = BASE_TEMPLATES.to_vec();
        all.extend(schedule_files());
        all.push(KERNEL_TEMPLATE);
        all
    })
}

/// The templates of APB's kernels (KV compression, ring attention's merge), embedded at build
/// time and rendered by their own tera instance ([`crate::apb`]), so that their edits leave the
/// attention kernels' [`template_digest`] (and with it the tuned configs) alone.
pub const APB_TEMPLATES: &[(&str, &str)] = &[
    (
        "apb/common.cuh",
        include_str!("../../templates/apb/common.cuh"),
    ),
    (
        "device/topk.cuh",
        include_str!("../../templates/device/topk.cuh"),
    ),
    (
        "apb/select.cu",
        include_str!("../../templates/apb/select.cu"),
    ),
    (
        "apb/gather.cu",
        include_str!("../../templates/apb/gather.cu"),
    ),
    ("apb/heads.cu", include_str!("../../templates/apb/heads.cu")),
    (
        "apb/query_aware.cu",
        include_str!("../../templates/apb/query_aware.cu"),
    ),
    (
        "apb/logits.cu",
        include_str!("../../templates/apb/logits.cu"),
    ),
    ("apb/merge.cu", include_str!("../../templates/apb/merge.cu")),
];

/// Generated source of one kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelSource {
    /// The `extern "C"` symbol to launch.
    pub kernel_name: String,
    /// CUDA C++ with no includes.
    pub code: String,
    /// Threads per CTA.
    pub threads: u32,
    /// Dynamic shared memory per CTA, in bytes.
    pub shared_bytes: u32,
}

/// A tera instance over a template table; every kernel family's table is built this way.
fn build(templates: &[(&str, &str)]) -> Tera {
    let mut tera = Tera::default();
    tera.add_raw_templates(templates.iter().copied())
        .expect("embedded templates parse (checked by the codegen tests)");
    tera
}

/// Digest of a template table's names and texts.
fn digest(templates: &[(&str, &str)]) -> String {
    let mut h = Sha256::new();
    for (name, text) in templates {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(text.as_bytes());
        h.update([0]);
    }
    hex(&h.finalize())
}

impl KernelSource {
    /// Stable digest of everything NVRTC is given and the launch shape: name, code, threads and
    /// shared bytes. Equal digests are equal sources.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for part in [self.kernel_name.as_bytes(), self.code.as_bytes()] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        h.update(self.threads.to_le_bytes());
        h.update(self.shared_bytes.to_le_bytes());
        hex(&h.finalize())
    }
}

fn tera() -> &'static Tera {
    static TERA: OnceLock<Tera> = OnceLock::new();
    TERA.get_or_init(|| build(templates()))
}

/// The tera instance of [`APB_TEMPLATES`].
pub(crate) fn apb_tera() -> &'static Tera {
    static TERA: OnceLock<Tera> = OnceLock::new();
    TERA.get_or_init(|| build(APB_TEMPLATES))
}

/// Digest of all template texts and of the registry's schedule choices (the parts of the
/// kernel that the registry writes into it): part of every spec hash, so a template or registry
/// edit invalidates caches.
pub fn template_digest() -> &'static str {
    static DIGEST: OnceLock<String> = OnceLock::new();
    DIGEST.get_or_init(|| {
        let registry: Vec<String> = REGISTRY
            .iter()
            .map(|i| {
                format!(
                    "{:?} {:?} {:?}\n{}",
                    i.includes,
                    i.schedule,
                    i.prefix(),
                    crate::block::declare(i.block)
                )
            })
            .collect();
        let registry = registry.join("\n");
        let mut all = templates().to_vec();
        all.push(("registry", &registry));
        digest(&all)
    })
}

/// Digest of the APB templates: part of every APB module's hash ([`crate::ApbModule::hash`]).
pub fn apb_template_digest() -> &'static str {
    static DIGEST: OnceLock<String> = OnceLock::new();
    DIGEST.get_or_init(|| digest(APB_TEMPLATES))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Renders the kernel for a spec. The spec should be validated first; rendering itself only
/// fails if a template is broken.
pub fn render(spec: &KernelSpec) -> Result<KernelSource, tera::Error> {
    let tile = spec.tile;
    let mut ctx = Context::new();
    ctx.insert("kernel_name", &spec.kernel_name());
    ctx.insert("spec", &spec.to_string());
    ctx.insert("variant", spec.variant.name());
    ctx.insert("head_dim", &spec.head_dim);
    ctx.insert("dtype", spec.dtype.name());
    ctx.insert("causal", &spec.causal);
    ctx.insert("lse", &spec.lse);
    ctx.insert("varlen", &spec.varlen);
    ctx.insert("block_m", &tile.block_m);
    ctx.insert("block_n", &tile.block_n);
    ctx.insert("warps", &tile.warps);
    ctx.insert("stages", &tile.stages);
    ctx.insert("m_tiles", &tile.m_tiles());
    ctx.insert(
        "q_in_regs",
        &(tile.mma == Mma::Sync && q_in_registers(&tile, spec.head_dim)),
    );
    ctx.insert("smem_pad", &SMEM_ROW_PAD);
    ctx.insert("mma", if tile.mma.is_wgmma() { "wgmma" } else { "sync" });
    ctx.insert("pipelined", &(tile.mma == Mma::WgmmaPipelined));
    // Register counts of the wgmma accumulator operand lists.
    ctx.insert("s_tiles", &(tile.block_n / 8));
    ctx.insert("s_regs", &(tile.block_n / 2));
    ctx.insert("o_tiles", &(spec.head_dim / 8));
    ctx.insert("o_regs", &(spec.head_dim / 2));
    // The variant's part: its parameter block, its schedule files, its schedule (one type, or
    // one per head kind) and whether its keys come in two segments.
    let info = spec.variant.info();
    ctx.insert("variant_params", &crate::block::declare(info.block));
    // The custom variant's definition, rendered from its checked tree (never the user's text).
    let definition = spec.definition.map(|d| d.get());
    let custom_code = match definition {
        Some(mods) => mods.render_cuda(),
        None => crate::expr::CustomMods::parse("")
            .expect("the empty definition is valid")
            .render_cuda(),
    };
    ctx.insert("custom_code", &custom_code);
    ctx.insert(
        "score_mod",
        &definition.is_some_and(|m| m.score().is_some()),
    );
    let mut schedules = Vec::with_capacity(info.includes.len());
    for file in info.includes {
        schedules.push(tera().render(file, &ctx)?);
    }
    ctx.insert("schedule_code", &schedules);
    match info.schedule {
        Schedule::One(ty) => {
            ctx.insert("schedule", ty);
            ctx.insert("head_cases", &Vec::<crate::variants::HeadCase>::new());
        }
        Schedule::PerHead(cases) => {
            ctx.insert("schedule", "");
            ctx.insert("head_cases", cases);
        }
    }
    ctx.insert("prefix", &info.prefix());
    let code = tera().render(KERNEL_TEMPLATE.0, &ctx)?;
    Ok(KernelSource {
        kernel_name: spec.kernel_name(),
        code,
        threads: tile.threads(),
        shared_bytes: shared_memory_bytes(&tile, spec.head_dim),
    })
}

/// The template of the custom variant's block classification kernel.
pub const CUSTOM_BLOCKS_TEMPLATE: (&str, &str) = (
    "custom_blocks.cu",
    include_str!("../../templates/custom_blocks.cu"),
);

/// The block classification kernel of a custom definition (`None`: every key visible), named
/// after the definition's digest. Launched with 256 threads per CTA, no shared memory.
pub fn render_custom_blocks(
    definition: Option<crate::expr::Definition>,
) -> Result<KernelSource, tera::Error> {
    static TERA: OnceLock<Tera> = OnceLock::new();
    let tera = TERA.get_or_init(|| build(&[CUSTOM_BLOCKS_TEMPLATE]));
    let mods = match definition {
        Some(d) => d.get().clone(),
        None => crate::expr::CustomMods::parse("").expect("the empty definition is valid"),
    };
    let kernel_name = format!("flashgen_custom_blocks_x{}", &mods.digest()[..16]);
    let mut ctx = Context::new();
    ctx.insert("kernel_name", &kernel_name);
    ctx.insert("expr_args", &crate::expr::args::declaration());
    ctx.insert("custom_code", &mods.render_cuda());
    let code = tera.render(CUSTOM_BLOCKS_TEMPLATE.0, &ctx)?;
    Ok(KernelSource {
        kernel_name,
        code,
        threads: 256,
        shared_bytes: 0,
    })
}

/// Stable hash of a spec and the template version: equal across runs, machines and builds.
pub fn spec_hash(spec: &KernelSpec) -> String {
    let mut h = Sha256::new();
    h.update(spec.to_string().as_bytes());
    h.update([0]);
    h.update(template_digest().as_bytes());
    hex(&h.finalize())
}
