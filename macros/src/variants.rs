//! Per-variant knowledge of the macro: which parameters a variant takes in its parentheses (its
//! row of codegen's variant registry) and what its `forward` method adds to the launch (the
//! runtime argument of the kind of launch arguments its row declares; the match on
//! [`LaunchArgs`] is exhaustive, so a new kind fails to compile here until it is written).

use flashgen_codegen::{LaunchArgs, Variant};
use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;

/// A numeric parameter of a variant, always required: the variant registry's parameters
/// ([`flashgen_codegen::variants::VariantParam`]). Its value becomes an associated `usize`
/// constant of the generated struct, named in upper case (`sink` -> `SINK`).
pub use flashgen_codegen::variants::{ParamKind, VariantParam as Param};

/// The numeric parameters of a variant, from its registry row. `causal` is not listed: it is a
/// flag every variant may carry syntactically and codegen's validation decides where it applies.
pub fn params(variant: Variant) -> &'static [Param] {
    variant.info().params
}

/// The name a variant is written with in the macro: codegen's name as a Rust identifier.
pub fn macro_name(variant: Variant) -> String {
    variant.name().replace('-', "_")
}

/// An example of the variant as written in the macro, for error messages.
pub fn example(variant: Variant) -> String {
    let params = params(variant);
    let name = macro_name(variant);
    let mut args: Vec<String> = params
        .iter()
        .map(|p| format!("{} = {}", p.name, p.example))
        .collect();
    if variant.accepts_causal() {
        args.push("causal".into());
    }
    if args.is_empty() {
        name
    } else if params.is_empty() {
        format!("{name} or {name}({})", args.join(", "))
    } else {
        format!("{name}({})", args.join(", "))
    }
}

/// What a variant adds to `forward`.
pub struct Forward {
    /// Extra parameters after q, k, v, o (and lse, varlen), e.g. `block_list: &'a DeviceBlockMask`.
    pub params: TokenStream,
    /// Checks run before the launch (may `return Err(..)`).
    pub checks: TokenStream,
    /// Statements that rebind `args: AttentionArgs` (e.g. `let args = args.mask(..);`).
    pub apply: TokenStream,
    /// Doc lines for the extra parameters.
    pub docs: Vec<String>,
}

/// The variant's own `forward` arguments, from the kind of launch arguments its registry row
/// declares. `elem` is the element type's path; generated code
/// refers to the struct's constants (`Self::SINK`, ...) from `params`.
pub fn forward(variant: Variant, elem: &TokenStream) -> Forward {
    let rt = quote!(::flashgen::runtime);
    let private = quote!(::flashgen::__private);
    let streaming = quote! {
        #rt::StreamingParams { sink: Self::SINK, window: Self::WINDOW }
    };
    let check_list = |arg: &Ident| {
        quote! {
            #private::check_block_list(#arg, Self::BLOCK_Q, Self::BLOCK_K)?;
        }
    };
    let block_list = Ident::new("block_list", Span::call_site());
    match variant.info().args {
        LaunchArgs::None => Forward {
            params: quote!(),
            checks: quote!(),
            apply: quote!(),
            docs: vec![],
        },
        LaunchArgs::Streaming => Forward {
            params: quote!(),
            checks: quote!(),
            apply: quote! { let args = args.mask(#rt::Mask::Streaming(#streaming)); },
            docs: vec!["sink and window are the declared `SINK` and `WINDOW`.".into()],
        },
        LaunchArgs::BlockList => Forward {
            params: quote! { #block_list: &'a #rt::DeviceBlockMask, },
            checks: check_list(&block_list),
            apply: quote! { let args = args.mask(#rt::Mask::BlockSparse(#block_list)); },
            docs: vec![
                "`block_list`: the BSR block list, in blocks of the declared `BLOCK_Q` x `BLOCK_K`."
                    .into(),
            ],
        },
        LaunchArgs::HeadKinds => Forward {
            params: quote! {
                heads: &'a #rt::DeviceHeadKinds,
                #block_list: &'a #rt::DeviceBlockMask,
            },
            checks: check_list(&block_list),
            apply: quote! {
                let args = args.mask(#rt::Mask::Mixed {
                    heads,
                    streaming: ::core::option::Option::Some(#streaming),
                    block_list: ::core::option::Option::Some(#block_list),
                });
            },
            docs: vec![
                "`heads`: the kind of each query head (dense, dense-causal, streaming, block-sparse)."
                    .into(),
                "`block_list`: the block list of the block-sparse heads, in blocks of the declared \
                 `BLOCK_Q` x `BLOCK_K`; streaming heads use the declared `SINK` and `WINDOW`."
                    .into(),
            ],
        },
        LaunchArgs::Custom => Forward {
            params: quote! { values: &'a #rt::CustomArgs<'a>, },
            checks: quote!(),
            apply: quote! {
                let args = args.mask(#rt::Mask::Custom { args: values, blocks: ::core::option::Option::None });
            },
            docs: vec![
                "`values`: the values of the definition's parameters (the mask's block \
                 classification is built on first use and cached by the runtime)."
                    .into(),
            ],
        },
        LaunchArgs::Prefix => Forward {
            params: quote! {
                prefix_k: #rt::Tensor<'a, #elem>,
                prefix_v: #rt::Tensor<'a, #elem>,
            },
            checks: quote!(),
            apply: quote! { let args = args.prefix(prefix_k, prefix_v); },
            docs: vec![
                "`k`, `v`: the local block; `prefix_k`, `prefix_v`: the anchor and passing blocks \
                 that precede it, `[batch, prefix, heads_kv, dim]`."
                    .into(),
            ],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_a_macro_name_and_an_example() {
        for v in Variant::ALL {
            let name = macro_name(v);
            assert!(syn::parse_str::<Ident>(&name).is_ok(), "{name}");
            assert!(example(v).starts_with(&name));
            let _ = forward(v, &quote!(T));
        }
        assert_eq!(
            example(Variant::Streaming),
            "streaming(sink = 128, window = 2048)"
        );
        assert_eq!(example(Variant::Dense), "dense or dense(causal)");
        assert_eq!(example(Variant::Apb), "apb");
    }
}
