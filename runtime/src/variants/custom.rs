//! A user-defined mask and score modifier: the values of the definition's parameters and the
//! mask's block classification, checked against the launch.

use super::{wrong_arguments, Extent, HostVariant};
use crate::custom::{
    bind, check_vector_lengths, expr_args, key_bindings, list_heads, BlocksKey, CustomValue,
};
use crate::error::{invalid, Result};
use crate::masks::dense_density;
use crate::params::VariantBlock;
use crate::plan::{CustomArg, LaunchDesc, MaskArg, PlanContext};
use flashgen_codegen::block::IntPtr;
use flashgen_codegen::expr::CustomMods;
use flashgen_codegen::variants::custom::Params;
use flashgen_codegen::AttentionSpec;
use std::sync::OnceLock;

pub struct Custom;

/// The variant's row of the host table ([`host`](super::host)).
pub const HOST: Custom = Custom;

/// The spec's definition; a custom spec without one sees every key.
pub(crate) fn definition(spec: &AttentionSpec) -> &'static CustomMods {
    static EMPTY: OnceLock<CustomMods> = OnceLock::new();
    match spec.definition {
        Some(d) => d.get(),
        None => EMPTY.get_or_init(|| CustomMods::parse("").expect("the empty definition is valid")),
    }
}

/// The classification key of a launch: what a classification it uses must have been built for.
pub(crate) fn launch_key(
    mods: &CustomMods,
    d: &LaunchDesc,
    heads_q: usize,
    values: &[CustomValue],
    block_q: usize,
    block_k: usize,
) -> BlocksKey {
    let lengths = match &d.varlen {
        Some(vl) => vl
            .host_q
            .windows(2)
            .zip(vl.host_k.windows(2))
            .map(|(q, k)| ((q[1] - q[0]) as usize, (k[1] - k[0]) as usize))
            .collect(),
        None => vec![(d.q.layout.seq, d.k.layout.seq); d.q.layout.batch],
    };
    BlocksKey {
        definition: mods.canonical().to_string(),
        heads_q,
        lengths,
        varlen: d.varlen.is_some(),
        bindings: key_bindings(mods, values),
        block_q,
        block_k,
    }
}

/// The bound values of a launch, checked against the definition and the shape.
pub(crate) fn checked_values<'a>(
    mods: &CustomMods,
    arg: &CustomArg<'a>,
    batch: usize,
    heads_q: usize,
    max_sk: usize,
) -> Result<Vec<CustomValue<'a>>> {
    let values = bind(mods, arg.args)?;
    check_vector_lengths(mods, &values, batch, heads_q, max_sk)?;
    Ok(values)
}

impl HostVariant for Custom {
    fn arguments(&self) -> &'static str {
        "the definition's parameter values (and optionally its block classification)"
    }

    fn plan(&self, cx: &PlanContext, d: &LaunchDesc) -> Result<VariantBlock> {
        let MaskArg::Custom(arg) = &d.mask else {
            return Err(wrong_arguments(cx.spec.variant));
        };
        let g = cx.geometry;
        let mods = definition(cx.spec);
        let values = checked_values(mods, arg, g.batch, g.heads_q, g.max_sk)?;
        let Some(blocks) = &arg.blocks else {
            return Err(invalid(
                "custom_blocks",
                "a custom launch needs the mask's block classification (Runtime::custom_blocks)",
            ));
        };
        let c = blocks.blocks;
        let want = launch_key(mods, d, g.heads_q, &values, c.key.block_q, c.key.block_k);
        if c.key != want {
            return Err(invalid(
                "custom_blocks",
                "the block classification was built for another definition, shape or parameter values",
            ));
        }
        let list = &c.list;
        list.validate(g.batch, g.heads_q, g.heads_kv, g.max_sq, g.max_sk)?;
        if list.heads != list_heads(mods, g.heads_q) {
            return Err(invalid(
                "custom_blocks",
                "the classification's list heads do not fit the definition",
            ));
        }
        let rows = list.kv_count.len();
        if blocks.kv_count.len < rows
            || blocks.kv_index.len < list.kv_index.len()
            || blocks.kv_full.len < rows * c.words()
            || c.full.len() < rows * c.words()
            || list.max_blocks != list.kv_blocks.max(1)
        {
            return Err(invalid(
                "custom_blocks",
                "device copy is shorter than the host copy",
            ));
        }
        if let Some(tile) = cx.tile {
            super::check_blocks_fit(list.block_q, list.block_k, tile)?;
        }
        let pointers: Vec<u64> = values
            .iter()
            .filter_map(|v| match v {
                CustomValue::Vector(vector) => Some(
                    arg.pointers
                        .iter()
                        .find(|(id, _)| *id == vector.id())
                        .map(|(_, ptr)| *ptr)
                        .ok_or_else(|| invalid("custom", "a bound vector has no device address")),
                ),
                _ => None,
            })
            .collect::<Result<_>>()?;
        Ok(VariantBlock::new(&Params {
            list: super::block_sparse::list_args(list, blocks.kv_count.ptr, blocks.kv_index.ptr),
            kv_full: IntPtr(blocks.kv_full.ptr),
            expr: expr_args(mods, &values, &pointers),
        }))
    }

    /// Custom launches are bucketed as dense: a mask's density is known only once it is
    /// classified, and the tuner's bucket of a launch must not depend on that.
    fn density(&self, _: &AttentionSpec, _: &LaunchDesc, e: &Extent) -> f64 {
        dense_density(e.sq, e.sk, false)
    }

    fn mask_blocks(&self, d: &LaunchDesc) -> Option<(usize, usize)> {
        match &d.mask {
            MaskArg::Custom(CustomArg {
                blocks: Some(b), ..
            }) => Some((b.blocks.list.block_q, b.blocks.list.block_k)),
            _ => None,
        }
    }
}
