//! flashgen-macros: the `attention_kernel!` proc-macro, used through the `flashgen` crate
//! (`flashgen::attention_kernel!`). Declarations are checked at compile time by
//! `flashgen_codegen`, the same validation the runtime runs.

mod custom;
mod decode;
mod expand;
mod model;
mod parse;
mod variants;

use proc_macro::TokenStream;

/// Declares attention kernels as typed Rust handles, validated at compile time.
///
/// ```text
/// attention_kernel! {
///     /// Docs and attributes are kept.
///     pub struct Name: VARIANT, head_dim = N, dtype = bf16 | f16 [, OPTION]* ;
///     ...
/// }
///
/// VARIANT := dense | dense(causal)
///          | streaming(sink = N, window = N)
///          | block_sparse(block_q = N, block_k = N [, causal])
///          | mixed(sink = N, window = N, block_q = N, block_k = N [, causal])
///          | apb
/// OPTION  := lse [= bool] | varlen [= bool] | gqa = N
///          | tile = m128n64w4s1 | tile = m64n128w4s1-wgmma
///          | tile(block_m = N, block_n = N, warps = N, stages = N [, mma = sync | wgmma])
/// ```
///
/// Decode kernels over the paged KV cache are declared the same way, with a `decode_` variant
/// (codegen's decode variant names; those that read a streaming window take `sink` and
/// `recent`):
///
/// ```text
///     pub struct Name: DECODE, head_dim = N, dtype = bf16 | f16, page_size = N [, OPTION]* ;
///
/// DECODE  := decode_dense | decode_streaming(sink = N, recent = N) | decode_selected
///          | decode_mixed(sink = N, recent = N)
/// OPTION  := kv_dtype = NAME | rows = N | gqa = N | lse [= bool]
/// ```
///
/// The declaration is checked by `flashgen_codegen::parse_decode_spec` (head dim, page size,
/// row tile, KV dtype). The struct has `SPEC` (the decode spec text), `CUDA_SM90`, `GQA`,
/// `SINK` and `RECENT` where declared, `spec()`, `new(&Runtime)` and `forward(&self, rt,
/// cache, table, q, o, ...)`, which takes `lse` when declared, the page selection for variants
/// that read one and the kv heads' kinds for mixed, checks the cache against the declaration
/// and calls `Runtime::decode_with` (the declared row tile, else the tuned config's).
///
/// Variant names are codegen's (`Variant::name`, with `-` written `_`). A flag written alone
/// (`causal`, `lse`, `varlen`) means `= true`. Every mistake is a compile error on the offending
/// token naming what is allowed: unknown variants, options or parameters, missing or duplicate
/// ones, literals of the wrong type, block sizes that are not positive, and everything
/// `flashgen_codegen::validate_arch_free` rejects (head dims, tiles, `causal` or `varlen` where
/// the variant has no use for them).
///
/// Each declaration becomes a struct with:
/// - `SPEC`: the spec in codegen's text form; `CUDA_SM90`: the CUDA rendered for sm_90a;
///   `GQA`; and one `usize` constant per variant parameter (`SINK`, `WINDOW`, `BLOCK_Q`,
///   `BLOCK_K`).
/// - `spec_for(arch)`, `new(&Runtime)` (compile or load from the cache), `spec()`, `kernel()`.
/// - `forward(&self, rt, q, k, v, o, ...)`, typed by the dtype, taking exactly what the
///   variant needs: `lse` when declared with `lse`, `varlen` with `varlen`, a block list for
///   `block_sparse`, head kinds and a block list for `mixed`, the prefix keys and values for
///   `apb`. It checks the declared `gqa` and the block list's block sizes, then calls
///   `Runtime::attention`.
///
/// The struct derives `Clone` and implements `Debug`; other attributes are passed through.
#[proc_macro]
pub fn attention_kernel(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as parse::Input);
    let mut out = proc_macro2::TokenStream::new();
    for decl in &input.decls {
        let expanded = model::lower_any(decl).and_then(|k| match k {
            model::Declared::Attention(k) => expand::kernel(&k),
            model::Declared::Decode(k) => decode::expand(&k),
        });
        match expanded {
            Ok(tokens) => out.extend(tokens),
            Err(e) => out.extend(e.to_compile_error()),
        }
    }
    out.into()
}
