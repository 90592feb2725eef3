//! What is tuned: a spec (its tile is what the tuner chooses), a problem shape and a mask, and
//! the built-in default target set.

use flashgen_codegen::expr::Definition;
use flashgen_codegen::{default_set, AttentionSpec, KernelSpec, LaunchArgs, TileConfig, Variant};
use flashgen_runtime::config::{spec_key, ShapeKey};
use flashgen_runtime::plan::{
    BlockListArg, Buffer, CustomArg, HeadKindsArg, LaunchDesc, MaskArg, TensorArg, VarlenArg,
};
use flashgen_runtime::tuned::shape_key;
use flashgen_runtime::CustomArgs;
use flashgen_runtime::{BlockMask, HeadKind, Layout, StreamingParams};
use std::fmt;

/// Batch and head counts and sequence length of a tuning problem. For APB `seq` is the local
/// block (the queries); the keys are `anchor + passing + seq`. For varlen specs the batch is
/// packed from `batch` sequences of `seq` tokens each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub seq: usize,
}

/// The mask a target is tuned with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TargetMask {
    /// Dense (with the spec's `causal`).
    None,
    /// Streaming heads: sink tokens and a local window.
    Streaming(StreamingParams),
    /// Square blocks of `block` tokens kept with probability `density`, plus the diagonal
    /// block of every row; with a causal spec only blocks at or below the diagonal.
    RandomBlocks {
        density: f64,
        block: usize,
        seed: u64,
    },
    /// Mixed heads: even heads streaming, odd heads dense-causal.
    HalfStreaming(StreamingParams),
    /// APB: `anchor` and `passing` prefix keys before the local block.
    Apb { anchor: usize, passing: usize },
    /// Custom: the standard definition [`CUSTOM_STANDARD`], a causal sliding window of
    /// `window` keys.
    Custom { window: usize },
}

/// The definition the custom variant is tuned with: a causal sliding window (`w` keys).
pub const CUSTOM_STANDARD: &str = "w: i32; mask = k <= q && q - k < w";

/// The standard window of [`CUSTOM_STANDARD`].
pub const CUSTOM_WINDOW: usize = 1024;

impl TargetMask {
    /// The kind of launch arguments the mask is tuned as.
    fn args(&self) -> LaunchArgs {
        match self {
            TargetMask::None => LaunchArgs::None,
            TargetMask::Streaming(_) => LaunchArgs::Streaming,
            TargetMask::RandomBlocks { .. } => LaunchArgs::BlockList,
            TargetMask::HalfStreaming(_) => LaunchArgs::HeadKinds,
            TargetMask::Apb { .. } => LaunchArgs::Prefix,
            TargetMask::Custom { .. } => LaunchArgs::Custom,
        }
    }

    /// Whether the mask fits a variant: it is of the kind of launch arguments the variant's
    /// registry row declares.
    fn fits(&self, variant: Variant) -> bool {
        self.args() == variant.info().args
    }
}

impl fmt::Display for TargetMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetMask::None => Ok(()),
            TargetMask::Streaming(p) => write!(f, " sink{} win{}", p.sink, p.window),
            TargetMask::RandomBlocks { density, block, .. } => {
                write!(f, " {:.0}% of {block}x{block} blocks", density * 100.0)
            }
            TargetMask::HalfStreaming(p) => {
                write!(f, " half streaming (sink{} win{})", p.sink, p.window)
            }
            TargetMask::Apb { anchor, passing } => write!(f, " anchor{anchor} passing{passing}"),
            TargetMask::Custom { window } => write!(f, " causal window{window} (custom)"),
        }
    }
}

/// One tuning problem.
#[derive(Clone, Debug, PartialEq)]
pub struct TuneTarget {
    /// The spec to tune: the tuner chooses its tile.
    pub spec: AttentionSpec,
    pub shape: Shape,
    pub mask: TargetMask,
}

/// The streaming parameters of the default targets (sink 128, window 2048).
pub const DEFAULT_STREAMING: StreamingParams = StreamingParams {
    sink: 128,
    window: 2048,
};

impl TuneTarget {
    /// The standard problem for a spec at sequence length `seq`, batch 1, 32 heads, by the kind
    /// of launch arguments its variant's registry row declares: none (dense); sink 128 window
    /// 2048 (streaming); 10% random 128x128 blocks (block-sparse); half streaming heads, the
    /// others dense-causal (mixed); for a prefix (APB) GQA 32/8 and a local block of `seq / 2`
    /// over an anchor of `seq / 8` and passing blocks of `seq / 4`; for custom, the causal
    /// sliding window of [`CUSTOM_STANDARD`] over 1024 keys (the spec's own definition is
    /// replaced: its tuned tile serves every definition).
    pub fn standard(spec: AttentionSpec, seq: usize) -> Self {
        let shape = Shape {
            batch: 1,
            heads: 32,
            kv_heads: 32,
            seq,
        };
        let (shape, mask) = match spec.variant.info().args {
            LaunchArgs::None => (shape, TargetMask::None),
            LaunchArgs::Streaming => (shape, TargetMask::Streaming(DEFAULT_STREAMING)),
            LaunchArgs::BlockList => (
                shape,
                TargetMask::RandomBlocks {
                    density: 0.1,
                    block: 128,
                    seed: 7,
                },
            ),
            LaunchArgs::HeadKinds => (shape, TargetMask::HalfStreaming(DEFAULT_STREAMING)),
            LaunchArgs::Prefix => (
                Shape {
                    kv_heads: 8,
                    seq: (seq / 2).max(1),
                    ..shape
                },
                TargetMask::Apb {
                    anchor: seq / 8,
                    passing: seq / 4,
                },
            ),
            LaunchArgs::Custom => (
                shape,
                TargetMask::Custom {
                    window: CUSTOM_WINDOW,
                },
            ),
        };
        let spec = match mask {
            TargetMask::Custom { .. } => spec.with_definition(Some(
                Definition::parse(CUSTOM_STANDARD).expect("the standard definition is valid"),
            )),
            _ => spec,
        };
        TuneTarget { spec, shape, mask }
    }

    /// Queries per sequence.
    pub fn sq(&self) -> usize {
        self.shape.seq
    }

    /// Keys per sequence (APB: anchor + passing + local).
    pub fn sk(&self) -> usize {
        match self.mask {
            TargetMask::Apb { anchor, passing } => anchor + passing + self.shape.seq,
            _ => self.shape.seq,
        }
    }

    /// Checks that the target can be set up: the mask fits the variant, the heads divide.
    pub fn check(&self) -> Result<(), String> {
        let s = &self.shape;
        if !self.mask.fits(self.spec.variant) {
            return Err(format!(
                "mask `{}` does not fit variant {}",
                self.mask.to_string().trim(),
                self.spec.variant
            ));
        }
        if s.batch == 0 || s.heads == 0 || s.kv_heads == 0 || s.seq == 0 {
            return Err(format!(
                "batch, heads, kv heads and seq must be positive; got b{} h{}/{} s{}",
                s.batch, s.heads, s.kv_heads, s.seq
            ));
        }
        if !s.heads.is_multiple_of(s.kv_heads) {
            return Err(format!(
                "heads = {} is not a multiple of kv heads = {}",
                s.heads, s.kv_heads
            ));
        }
        if let TargetMask::RandomBlocks { density, block, .. } = self.mask {
            if block == 0 || !(0.0..=1.0).contains(&density) {
                return Err(format!(
                    "random blocks need a positive block size and a density in [0, 1]; got \
                     {block} and {density}"
                ));
            }
        }
        Ok(())
    }

    /// The random block list of a block-sparse target (one list shared by all heads).
    pub fn block_mask(&self) -> Option<BlockMask> {
        let TargetMask::RandomBlocks {
            density,
            block,
            seed,
        } = self.mask
        else {
            return None;
        };
        let (sq, sk) = (self.sq(), self.sk());
        let (qb, kb) = (sq.div_ceil(block).max(1), sk.div_ceil(block).max(1));
        let mut rng = SplitMix(seed);
        let mut keep = Vec::with_capacity(qb * kb);
        for i in 0..qb {
            // The key block of the row's last query (bottom-right aligned).
            let last = ((i + 1) * block).min(sq) - 1;
            let diag = (last + sk).saturating_sub(sq) / block;
            for j in 0..kb {
                let r = rng.uniform();
                let allowed = !self.spec.causal || j <= diag;
                keep.push(allowed && (j == diag.min(kb - 1) || r < density));
            }
        }
        Some(
            BlockMask::from_dense(&keep, self.shape.batch, 1, qb, kb, block, block)
                .expect("a dense block matrix of the right size"),
        )
    }

    /// Per-head kinds of a mixed target.
    pub fn head_kinds(&self) -> Option<Vec<HeadKind>> {
        let TargetMask::HalfStreaming(_) = self.mask else {
            return None;
        };
        Some(
            (0..self.shape.heads)
                .map(|h| {
                    if h % 2 == 0 {
                        HeadKind::Streaming
                    } else {
                        HeadKind::DenseCausal
                    }
                })
                .collect(),
        )
    }

    /// Exact kept fraction of the `sq x sk` pairs, averaged over heads (the bucket's
    /// density).
    pub fn density(&self) -> f64 {
        self.shape_key().density
    }

    /// The config bucket the target's results are filed under: the runtime's own
    /// [`shape_key`](flashgen_runtime::tuned::shape_key) of a launch of this target, so a tuned
    /// entry is found by exactly the launches it was measured for.
    pub fn shape_key(&self) -> ShapeKey {
        let l = crate::gpu::layouts(self);
        // Addresses do not enter the bucket: every buffer is described by its length only.
        let tensor = |layout: Layout| TensorArg {
            buffer: Buffer {
                ptr: 0,
                len: layout.required_len(),
            },
            layout,
        };
        let none = Buffer { ptr: 0, len: 0 };
        let blocks = self.block_mask();
        let kinds = self.head_kinds();
        let list = blocks.as_ref().map(|mask| BlockListArg {
            mask,
            kv_count: none,
            kv_index: none,
        });
        let custom_args = match self.mask {
            TargetMask::Custom { window } => CustomArgs::new().int("w", window as i32),
            _ => CustomArgs::new(),
        };
        let mask = match (&self.mask, list, &kinds) {
            (TargetMask::Custom { .. }, _, _) => MaskArg::Custom(CustomArg {
                args: &custom_args,
                pointers: &[],
                blocks: None,
            }),
            (TargetMask::Streaming(p), _, _) => MaskArg::Streaming(*p),
            (TargetMask::RandomBlocks { .. }, Some(list), _) => MaskArg::BlockSparse(list),
            (TargetMask::HalfStreaming(p), _, Some(kinds)) => MaskArg::Mixed {
                heads: HeadKindsArg {
                    kinds,
                    kinds_dev: none,
                    order_dev: none,
                },
                streaming: Some(*p),
                block_list: None,
            },
            _ => MaskArg::None,
        };
        let cu: Vec<i32> = (0..=self.shape.batch)
            .map(|b| (b * self.shape.seq) as i32)
            .collect();
        let desc = LaunchDesc {
            dtype: self.spec.dtype,
            q: tensor(l.q),
            k: tensor(l.kv),
            v: tensor(l.kv),
            o: tensor(l.q),
            lse: None,
            varlen: self.spec.varlen.then(|| VarlenArg {
                cu_seqlens_q: none,
                cu_seqlens_k: none,
                host_q: &cu,
                host_k: &cu,
            }),
            scale: None,
            mask,
            prefix: l.prefix.map(|p| (tensor(p), tensor(p))),
        };
        shape_key(&self.spec, &desc)
    }

    /// The kernel of the spec with a given tile.
    pub fn spec_with(&self, tile: TileConfig) -> KernelSpec {
        self.spec.with_tile(tile)
    }

    /// Useful FLOPs of one launch: `4 * batch * heads * d * visible pairs`.
    pub fn flops(&self) -> f64 {
        4.0 * self.shape.batch as f64
            * self.shape.heads as f64
            * self.spec.head_dim as f64
            * self.sq() as f64
            * self.sk() as f64
            * self.density()
    }
}

impl fmt::Display for TuneTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.shape;
        write!(
            f,
            "{} b{} h{}/{} s{}{}",
            spec_key(&self.spec),
            s.batch,
            s.heads,
            s.kv_heads,
            s.seq,
            self.mask
        )
    }
}

/// The built-in targets: every spec of [`default_set`] (every variant at d 64 and 128, bf16,
/// lse) at sequence lengths 4096 and 16384 with [`TuneTarget::standard`] shapes, plus dense
/// causal d128 with GQA 32/8 at 16384.
pub fn default_targets() -> Vec<TuneTarget> {
    let mut out = Vec::new();
    for spec in default_set() {
        for seq in [4096, 16384] {
            out.push(TuneTarget::standard(spec, seq));
        }
    }
    if let Some(spec) = default_set()
        .into_iter()
        .find(|s| s.variant == Variant::Dense && s.head_dim == 128 && s.causal)
    {
        let mut t = TuneTarget::standard(spec, 16384);
        t.shape.kv_heads = 8;
        out.push(t);
    }
    out
}

/// SplitMix64: a small deterministic generator for masks and inputs.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix(pub u64);

impl SplitMix {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashgen_runtime::config::{DensityClass, SeqClass};

    #[test]
    fn default_targets_cover_the_default_set_at_two_lengths() {
        let t = default_targets();
        assert_eq!(t.len(), default_set().len() * 2 + 1);
        for target in &t {
            target.check().unwrap();
            assert_eq!(target.spec.dtype, flashgen_codegen::DType::Bf16);
            assert!([64, 128].contains(&target.spec.head_dim));
        }
        let gqa: Vec<_> = t.iter().filter(|x| x.shape.kv_heads != 32).collect();
        // APB (4 specs x 2 lengths... 2 head dims x 2 lengths) and the dense GQA target.
        assert!(gqa
            .iter()
            .all(|x| x.shape.heads == 32 && x.shape.kv_heads == 8));
        assert_eq!(gqa.len(), 2 * 2 + 1);
        // Every variant is present.
        for v in Variant::ALL {
            assert!(t.iter().any(|x| x.spec.variant == v), "{v} missing");
        }
    }

    #[test]
    fn buckets_of_the_default_targets() {
        let spec = |v, causal| AttentionSpec::new(v, 128, flashgen_codegen::DType::Bf16, causal);
        let dense = TuneTarget::standard(spec(Variant::Dense, false), 4096).shape_key();
        assert_eq!(dense.bucket().seq, SeqClass::Le4k);
        assert_eq!(dense.bucket().density, DensityClass::Dense);
        assert_eq!(dense.gqa, 1);

        let causal = TuneTarget::standard(spec(Variant::Dense, true), 16384).shape_key();
        assert_eq!(causal.bucket().seq, SeqClass::Le16k);
        assert_eq!(causal.bucket().density, DensityClass::Ge50);

        // Window 2048 of 16384 keys: about 13%; of 4096: about 39%.
        let s = TuneTarget::standard(spec(Variant::Streaming, false), 16384);
        assert_eq!(s.shape_key().bucket().density, DensityClass::Ge10);
        assert!((s.density() - 0.13).abs() < 0.01, "{}", s.density());

        // 10% random blocks under a causal mask: below 10% of all pairs.
        let b = TuneTarget::standard(spec(Variant::BlockSparse, true), 16384);
        assert_eq!(b.shape_key().bucket().density, DensityClass::Lt10);
        let bn = TuneTarget::standard(spec(Variant::BlockSparse, false), 16384);
        assert!((bn.density() - 0.1).abs() < 0.02, "{}", bn.density());

        // APB at 16384: local 8192 over anchor 2048 + passing 4096, GQA 4.
        let a = TuneTarget::standard(spec(Variant::Apb, false), 16384);
        assert_eq!((a.sq(), a.sk()), (8192, 14336));
        let k = a.shape_key();
        assert_eq!(k.gqa, 4);
        assert_eq!(k.bucket().density, DensityClass::Ge50);
        let expected = (8192.0 * 6144.0 + 8192.0 * 8193.0 / 2.0) / (8192.0 * 14336.0);
        assert!((a.density() - expected).abs() < 1e-12);

        let m = TuneTarget::standard(spec(Variant::Mixed, true), 16384);
        let kinds = m.head_kinds().unwrap();
        assert_eq!(kinds.len(), 32);
        assert_eq!(kinds[0], HeadKind::Streaming);
        assert_eq!(kinds[1], HeadKind::DenseCausal);
        assert_eq!(m.shape_key().bucket().density, DensityClass::Ge10);
    }

    #[test]
    fn random_blocks_keep_the_diagonal_and_respect_causal() {
        let spec = AttentionSpec::new(
            Variant::BlockSparse,
            64,
            flashgen_codegen::DType::Bf16,
            true,
        );
        let t = TuneTarget {
            spec,
            shape: Shape {
                batch: 1,
                heads: 4,
                kv_heads: 4,
                seq: 1000,
            },
            mask: TargetMask::RandomBlocks {
                density: 0.3,
                block: 128,
                seed: 1,
            },
        };
        let m = t.block_mask().unwrap();
        m.validate(1, 4, 4, 1000, 1000).unwrap();
        for qb in 0..m.q_blocks {
            let row = m.row(0, 0, qb);
            assert!(row.contains(&(qb as i32)), "row {qb}: {row:?}");
            assert!(row.iter().all(|&j| j as usize <= qb));
        }
        // Deterministic for a seed.
        assert_eq!(t.block_mask(), t.block_mask());
    }

    #[test]
    fn mismatched_targets_are_rejected() {
        let spec = AttentionSpec::new(Variant::Dense, 64, flashgen_codegen::DType::Bf16, false);
        let mut t = TuneTarget::standard(spec, 1024);
        t.mask = TargetMask::Streaming(DEFAULT_STREAMING);
        assert!(t.check().unwrap_err().contains("does not fit"));
        let mut t = TuneTarget::standard(spec, 1024);
        t.shape.kv_heads = 5;
        assert!(t.check().unwrap_err().contains("multiple"));
    }
}
