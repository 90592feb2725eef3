//! The tuned config at launch: which shape bucket a launch falls in, and which tile it gets.

use crate::config::{ShapeKey, TunedConfig};
use crate::plan::LaunchDesc;
use crate::variants::{host, Extent};
use flashgen_codegen::{default_tile, default_tile_for_blocks, Arch, AttentionSpec, TileConfig};

/// The longest sequence of a `cu_seqlens` array.
fn longest(cu_seqlens: &[i32]) -> usize {
    cu_seqlens
        .windows(2)
        .map(|w| (w[1] - w[0]).max(0) as usize)
        .max()
        .unwrap_or(0)
}

/// The shape bucket of a launch: keys per sequence (APB: prefix + local; varlen: the longest
/// sequence), query heads per kv head, and the kept fraction of the `sq x sk` pairs averaged
/// over heads. Block lists are measured on their first batch entry. Meant for launches that
/// passed [`check_launch`](crate::plan::check_launch); on others it returns some bucket, never
/// panics.
pub fn shape_key(spec: &AttentionSpec, desc: &LaunchDesc<'_>) -> ShapeKey {
    let (sq, local_k) = match &desc.varlen {
        Some(v) => (longest(v.host_q), longest(v.host_k)),
        None => (desc.q.layout.seq, desc.k.layout.seq),
    };
    let host = host(spec.variant);
    let heads_q = desc.q.layout.heads;
    let extent = Extent {
        heads_q,
        sq,
        sk: local_k,
        prefix: host.prefix_len(desc),
    };
    let gqa = (heads_q / desc.k.layout.heads.max(1)).max(1) as u32;
    ShapeKey {
        seq_len: local_k + extent.prefix,
        gqa,
        density: host.density(spec, desc, &extent),
    }
}

/// The block sizes `(block_q, block_k)` of a launch's block list, if it has one: tiles must
/// divide them.
pub fn mask_blocks(spec: &AttentionSpec, desc: &LaunchDesc<'_>) -> Option<(usize, usize)> {
    host(spec.variant).mask_blocks(desc)
}

/// Whether a tile can run a block list of `blocks` (its query and key tiles divide the
/// blocks).
fn divides(tile: &TileConfig, blocks: Option<(usize, usize)>) -> bool {
    blocks.is_none_or(|(bq, bk)| {
        bq.is_multiple_of(tile.block_m as usize) && bk.is_multiple_of(tile.block_n as usize)
    })
}

/// [`select_tile`] for a launch with a block list of `blocks`: the nearest tuned entry whose
/// tile divides the blocks, else the default tile if it does, else the search space's tile
/// nearest to the default ([`default_tile_for_blocks`]). An error names the blocks when no
/// tile of the search space divides them.
pub fn select_tile_for_blocks(
    config: Option<&TunedConfig>,
    spec: &AttentionSpec,
    shape: &ShapeKey,
    arch: Arch,
    blocks: Option<(usize, usize)>,
) -> crate::Result<(TileConfig, TileSource)> {
    let tuned = config.and_then(|c| {
        c.lookup_where(spec, shape, |t| {
            divides(t, blocks) && flashgen_codegen::validate(&spec.with_tile(*t), arch).is_ok()
        })
    });
    if let Some(t) = tuned {
        return Ok((t, TileSource::Tuned));
    }
    let Some((bq, bk)) = blocks else {
        return Ok((default_tile(spec, arch), TileSource::Default));
    };
    default_tile_for_blocks(spec, arch, bq, bk)
        .map(|t| (t, TileSource::Default))
        .ok_or_else(|| {
            crate::error::invalid(
                "block_list",
                format!(
                    "no tile of {spec} on {arch} divides blocks of {bq} x {bk} tokens (block_m must divide block_q, block_n must divide block_k; block_m is 64 or 128, block_n 32, 64 or 128)",
                    spec = crate::config::spec_key(spec),
                ),
            )
        })
}

/// Where a launch's tile came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TileSource {
    /// The tuned config's entry for the spec in the nearest bucket.
    Tuned,
    /// [`default_tile`]: no config, or no entry for the spec.
    Default,
}

/// The tile a launch of `spec` with `shape` should use: the tuned config's, when it has the
/// spec and its tile is valid here, else the heuristic default for `arch`.
pub fn select_tile(
    config: Option<&TunedConfig>,
    spec: &AttentionSpec,
    shape: &ShapeKey,
    arch: Arch,
) -> (TileConfig, TileSource) {
    let tuned = config
        .and_then(|c| c.lookup(spec, shape))
        .filter(|t| flashgen_codegen::validate(&spec.with_tile(*t), arch).is_ok());
    match tuned {
        Some(t) => (t, TileSource::Tuned),
        None => (default_tile(spec, arch), TileSource::Default),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigEntry, ConfigHeader, DensityClass, GpuIdentity, SeqClass};
    use crate::layout::Layout;
    use crate::masks::{BlockMask, HeadKind, StreamingParams};
    use crate::plan::{BlockListArg, Buffer, HeadKindsArg, MaskArg, TensorArg, VarlenArg};
    use flashgen_codegen::{DType, Variant};

    fn tensor(l: Layout) -> TensorArg {
        TensorArg {
            buffer: Buffer {
                ptr: 256,
                len: l.required_len(),
            },
            layout: l,
        }
    }

    fn desc(sq: usize, sk: usize, hq: usize, hkv: usize, mask: MaskArg<'_>) -> LaunchDesc<'_> {
        let ql = Layout::bshd(1, sq, hq, 128);
        let kl = Layout::bshd(1, sk, hkv, 128);
        LaunchDesc {
            dtype: DType::Bf16,
            q: tensor(ql),
            k: tensor(kl),
            v: tensor(kl),
            o: tensor(ql),
            lse: None,
            varlen: None,
            scale: None,
            mask,
            prefix: None,
        }
    }

    fn spec(v: Variant, causal: bool) -> AttentionSpec {
        AttentionSpec::new(v, 128, DType::Bf16, causal)
    }

    #[test]
    fn dense_and_causal_shapes() {
        let d = desc(4096, 4096, 32, 8, MaskArg::None);
        let k = shape_key(&spec(Variant::Dense, false), &d);
        assert_eq!((k.seq_len, k.gqa), (4096, 4));
        assert_eq!(k.density, 1.0);
        let k = shape_key(&spec(Variant::Dense, true), &d);
        assert!((k.density - 4097.0 / 8192.0).abs() < 1e-12, "{}", k.density);
    }

    #[test]
    fn varlen_uses_the_longest_sequence() {
        let (cq, ck) = ([0, 100, 3100, 3200], [0, 50, 2050, 9050]);
        let mut d = desc(3200, 9050, 8, 8, MaskArg::None);
        d.varlen = Some(VarlenArg {
            cu_seqlens_q: Buffer { ptr: 256, len: 4 },
            cu_seqlens_k: Buffer { ptr: 256, len: 4 },
            host_q: &cq,
            host_k: &ck,
        });
        let k = shape_key(&spec(Variant::Dense, false), &d);
        assert_eq!(k.seq_len, 7000);
        assert_eq!(k.bucket().seq, SeqClass::Le16k);
    }

    #[test]
    fn streaming_block_sparse_and_mixed_densities() {
        let p = StreamingParams {
            sink: 128,
            window: 2048,
        };
        let d = desc(16384, 16384, 32, 32, MaskArg::Streaming(p));
        let k = shape_key(&spec(Variant::Streaming, false), &d);
        assert!((k.density - p.density(16384, 16384)).abs() < 1e-12);
        assert_eq!(k.bucket().density, DensityClass::Ge10);

        // Every other 128x128 block of a 1024 x 1024 problem.
        let keep: Vec<bool> = (0..64).map(|i| i % 2 == 0).collect();
        let mask = BlockMask::from_dense(&keep, 1, 1, 8, 8, 128, 128).unwrap();
        let list = BlockListArg {
            mask: &mask,
            kv_count: Buffer { ptr: 256, len: 8 },
            kv_index: Buffer { ptr: 256, len: 64 },
        };
        let d = desc(1024, 1024, 4, 4, MaskArg::BlockSparse(list));
        let k = shape_key(&spec(Variant::BlockSparse, false), &d);
        assert!((k.density - 0.5).abs() < 1e-12, "{}", k.density);

        let kinds = [HeadKind::Dense, HeadKind::Streaming];
        let heads = HeadKindsArg {
            kinds: &kinds,
            kinds_dev: Buffer { ptr: 256, len: 2 },
            order_dev: Buffer { ptr: 256, len: 2 },
        };
        let mixed = MaskArg::Mixed {
            heads,
            streaming: Some(p),
            block_list: None,
        };
        let d = desc(16384, 16384, 2, 2, mixed);
        let k = shape_key(&spec(Variant::Mixed, false), &d);
        let want = (1.0 + p.density(16384, 16384)) / 2.0;
        assert!((k.density - want).abs() < 1e-12);
    }

    #[test]
    fn apb_counts_the_prefix() {
        let mut d = desc(8192, 8192, 32, 8, MaskArg::None);
        let pl = Layout::bshd(1, 6144, 8, 128);
        d.prefix = Some((tensor(pl), tensor(pl)));
        let k = shape_key(&spec(Variant::Apb, false), &d);
        assert_eq!(k.seq_len, 14336);
        let want = (8192.0 * 6144.0 + 8192.0 * 8193.0 / 2.0) / (8192.0 * 14336.0);
        assert!((k.density - want).abs() < 1e-12);
    }

    #[test]
    fn tile_comes_from_the_config_or_the_default() {
        let gpu = GpuIdentity {
            name: "NVIDIA H100 80GB HBM3".into(),
            arch: Arch::SM90,
            sm_count: 132,
        };
        let mut config = TunedConfig::new(ConfigHeader::new(&gpu, (13, 0), "digest"));
        config.insert(ConfigEntry {
            spec: "dense,d128,bf16,causal".parse().unwrap(),
            seq: SeqClass::Le16k,
            gqa: 1,
            density: DensityClass::Ge50,
            tile: "m64n128w4s1-wgmma".into(),
            ms: 1.0,
            runner_up: None,
            runner_up_ms: None,
            default_ms: 1.1,
        });
        let shape = ShapeKey {
            seq_len: 16384,
            gqa: 1,
            density: 0.5,
        };
        let causal = spec(Variant::Dense, true);
        let (tile, from) = select_tile(Some(&config), &causal, &shape, Arch::SM90);
        assert_eq!(
            (tile.to_string().as_str(), from),
            ("m64n128w4s1-wgmma", TileSource::Tuned)
        );
        // Another spec, no config, or a tile the arch cannot run: the heuristic default.
        let dense = spec(Variant::Dense, false);
        assert_eq!(
            select_tile(Some(&config), &dense, &shape, Arch::SM90),
            (default_tile(&dense, Arch::SM90), TileSource::Default)
        );
        assert_eq!(
            select_tile(None, &causal, &shape, Arch::SM90).1,
            TileSource::Default
        );
        assert_eq!(
            select_tile(Some(&config), &causal, &shape, Arch::SM80),
            (default_tile(&causal, Arch::SM80), TileSource::Default)
        );
    }

    /// What `attention_tuned` measured before it validated (a list too short for the
    /// sequence, block_q = 0, a 2-head list with 4 query heads) now fails `check_launch`, and
    /// measuring it anyway returns a bucket instead of panicking.
    #[test]
    fn bad_masks_are_errors_before_the_shape_is_measured() {
        use crate::plan::check_launch;
        let short = BlockMask::from_dense(&[true; 4], 1, 1, 2, 2, 128, 128).unwrap();
        let mut zero_block = short.clone();
        zero_block.block_q = 0;
        let two_heads = BlockMask::from_dense(&[true; 8], 1, 2, 2, 2, 128, 128).unwrap();
        let bs = spec(Variant::BlockSparse, false);
        for (what, mask) in [
            ("short", &short),
            ("block_q 0", &zero_block),
            ("2 heads", &two_heads),
        ] {
            let list = BlockListArg {
                mask,
                kv_count: Buffer { ptr: 256, len: 64 },
                kv_index: Buffer { ptr: 256, len: 64 },
            };
            let d = desc(1024, 1024, 4, 4, MaskArg::BlockSparse(list));
            assert!(check_launch(&bs, &d).is_err(), "{what}");
            let _ = shape_key(&bs, &d);

            let kinds = [HeadKind::BlockSparse; 4];
            let heads = HeadKindsArg {
                kinds: &kinds,
                kinds_dev: Buffer { ptr: 256, len: 4 },
                order_dev: Buffer { ptr: 256, len: 4 },
            };
            let mixed = MaskArg::Mixed {
                heads,
                streaming: None,
                block_list: Some(list),
            };
            let d = desc(1024, 1024, 4, 4, mixed);
            assert!(
                check_launch(&spec(Variant::Mixed, false), &d).is_err(),
                "{what}"
            );
            let _ = shape_key(&spec(Variant::Mixed, false), &d);
        }
    }

    #[test]
    fn block_lists_get_a_tile_that_divides_their_blocks() {
        let d64 = AttentionSpec::new(Variant::BlockSparse, 64, DType::Bf16, false);
        let shape = ShapeKey {
            seq_len: 4096,
            gqa: 1,
            density: 0.3,
        };
        for (arch, blocks) in [
            (Arch::SM90, (64, 64)),
            (Arch::SM80, (64, 64)),
            (Arch::SM90, (64, 32)),
            (Arch::SM90, (128, 128)),
        ] {
            let (tile, source) =
                select_tile_for_blocks(None, &d64, &shape, arch, Some(blocks)).unwrap();
            assert_eq!(source, TileSource::Default);
            assert_eq!(blocks.0 % tile.block_m as usize, 0, "{tile} for {blocks:?}");
            assert_eq!(blocks.1 % tile.block_n as usize, 0, "{tile} for {blocks:?}");
        }
        let err = select_tile_for_blocks(None, &d64, &shape, Arch::SM90, Some((32, 64)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("32 x 64"), "{err}");
        // A nearer tuned entry whose tile cannot run the blocks does not hide a farther one
        // that can.
        let gpu = GpuIdentity {
            name: "NVIDIA H100 80GB HBM3".into(),
            arch: Arch::SM90,
            sm_count: 132,
        };
        let mut config = TunedConfig::new(ConfigHeader::new(&gpu, (13, 0), "digest"));
        for (seq, tile) in [
            (SeqClass::Le4k, "m128n128w8s1-wgmma"),
            (SeqClass::Le16k, "m64n64w4s1-wgmma"),
        ] {
            config.insert(ConfigEntry {
                spec: "block-sparse,d64,bf16".parse().unwrap(),
                seq,
                gqa: 1,
                density: DensityClass::Ge10,
                tile: tile.into(),
                ms: 1.0,
                runner_up: None,
                runner_up_ms: None,
                default_ms: 1.1,
            });
        }
        let pick = |blocks| select_tile_for_blocks(Some(&config), &d64, &shape, Arch::SM90, blocks);
        let (tile, source) = pick(Some((128, 128))).unwrap();
        assert_eq!(
            (tile.to_string().as_str(), source),
            ("m128n128w8s1-wgmma", TileSource::Tuned)
        );
        let (tile, source) = pick(Some((64, 64))).unwrap();
        assert_eq!(
            (tile.to_string().as_str(), source),
            ("m64n64w4s1-wgmma", TileSource::Tuned)
        );
    }
}
