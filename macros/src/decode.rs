//! Decode kernels in `attention_kernel!`: `decode_<variant>` declarations, checked by codegen's
//! decode spec parser, and their handle structs. What a variant takes comes from its row of
//! `flashgen_codegen::decode::DECODE_VARIANTS` (a streaming window, a page selection, kinds per
//! kv head); the KV dtype is passed to the parser as written, so every KV dtype codegen knows is
//! accepted here.

use crate::model::{choice, err, flag, integer, Errors};
use crate::parse::{Arg, ArgValue, Decl};
use flashgen_codegen::decode::{render_decode, DecodeVariantInfo, DECODE_VARIANTS};
use flashgen_codegen::{parse_decode_spec, Arch, DType, DecodeSpec};
use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::{quote, ToTokens};
use syn::{Attribute, Expr, LitStr, Visibility};

/// Options after a decode variant, in the order the error messages list them.
const OPTIONS: [&str; 7] = [
    "head_dim",
    "dtype",
    "page_size",
    "kv_dtype",
    "rows",
    "gqa",
    "lse",
];

/// The parameters of variants that read a streaming window.
const WINDOW: [(&str, u32); 2] = [("sink", 128), ("recent", 256)];

/// A decode declaration that passed every compile-time check.
pub struct DecodeKernel {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub name: Ident,
    pub info: &'static DecodeVariantInfo,
    /// The declared spec in text form, the row tile only when declared.
    pub text: String,
    /// The spec (16 rows when none were declared).
    pub spec: DecodeSpec,
    pub rows_declared: bool,
    pub gqa: Option<u32>,
    pub lse: bool,
    /// `sink` and `recent`, for variants that read a streaming window.
    pub window: Option<(u32, u32)>,
}

fn macro_name(info: &DecodeVariantInfo) -> String {
    format!("decode_{}", info.name.replace('-', "_"))
}

/// Whether a variant key names a decode kernel.
pub fn is_decode(key: &Ident) -> bool {
    key.to_string().starts_with("decode_")
}

/// The decode variants as the macro writes them, with their parameters.
pub fn allowed_variants() -> String {
    DECODE_VARIANTS
        .iter()
        .map(example)
        .collect::<Vec<_>>()
        .join(", ")
}

fn example(info: &DecodeVariantInfo) -> String {
    let name = macro_name(info);
    if info.streaming {
        let params: Vec<String> = WINDOW.iter().map(|(p, v)| format!("{p} = {v}")).collect();
        format!("{name}({})", params.join(", "))
    } else {
        name
    }
}

/// The expression of `key = <ident>` as text (a KV dtype name).
fn name_value(arg: &Arg) -> syn::Result<String> {
    match &arg.value {
        ArgValue::Assign(Expr::Path(p)) if p.path.get_ident().is_some() => {
            Ok(p.path.get_ident().expect("checked").to_string())
        }
        _ => Err(err(
            arg.value_tokens(),
            format!(
                "expected a name for `{}`, e.g. `{} = bf16`",
                arg.key, arg.key
            ),
        )),
    }
}

/// Checks a decode declaration.
pub fn lower(decl: &Decl) -> syn::Result<DecodeKernel> {
    let mut errors = Errors::default();
    let vkey = &decl.variant.key;
    let info = DECODE_VARIANTS
        .iter()
        .find(|i| *vkey == macro_name(i))
        .ok_or_else(|| {
            err(
                vkey,
                format!(
                    "unknown decode variant `{vkey}`; allowed: {}",
                    allowed_variants()
                ),
            )
        })?;
    let example = example(info);

    // The variant's parameters: a streaming window or nothing.
    let args: &[Arg] = match &decl.variant.value {
        ArgValue::Flag => &[],
        ArgValue::List(_, args) => args,
        ArgValue::Assign(_) => {
            return Err(err(
                decl.variant.tokens(),
                format!("a variant takes its parameters in parentheses: `{example}`"),
            ))
        }
    };
    let table: &[(&str, u32)] = if info.streaming { &WINDOW } else { &[] };
    let mut values: Vec<Option<u32>> = vec![None; table.len()];
    let mut seen: Vec<String> = Vec::new();
    for arg in args {
        let key = arg.key.to_string();
        if seen.contains(&key) {
            errors.at(&arg.key, format!("duplicate parameter `{key}` of {vkey}"));
            continue;
        }
        seen.push(key.clone());
        match table.iter().position(|(p, _)| *p == key) {
            Some(i) => values[i] = errors.take(integer(arg, i == 1, table[i].1)),
            None if table.is_empty() => errors.at(
                &arg.key,
                format!("unknown parameter `{key}`: {vkey} takes no parameters"),
            ),
            None => errors.at(
                &arg.key,
                format!(
                    "unknown parameter `{key}` of {vkey}; allowed: {}",
                    table.iter().map(|(p, _)| *p).collect::<Vec<_>>().join(", ")
                ),
            ),
        }
    }
    for ((p, _), v) in table.iter().zip(&values) {
        if v.is_none() && !seen.iter().any(|s| s == p) {
            errors.at(
                decl.variant.tokens(),
                format!("{vkey} needs `{p}`: write `{example}`"),
            );
        }
    }

    // The options.
    let mut head_dim = None;
    let mut dtype = None;
    let mut page_size = None;
    let mut kv_dtype = None;
    let mut rows = None;
    let (mut gqa, mut lse) = (None, false);
    let mut at: Vec<(&'static str, TokenStream)> = Vec::new();
    let mut seen: Vec<(String, &Ident)> = Vec::new();
    for arg in &decl.options {
        let key = arg.key.to_string();
        if let Some((_, first)) = seen.iter().find(|(k, _)| *k == key) {
            let mut e = err(&arg.key, format!("duplicate option `{key}`"));
            e.combine(err(first, format!("`{key}` is first set here")));
            errors.push(e);
            continue;
        }
        seen.push((key.clone(), &arg.key));
        match key.as_str() {
            "head_dim" => {
                head_dim = errors.take(integer(arg, false, 128));
                at.push(("head_dim", arg.value_tokens()));
            }
            "dtype" => {
                let names: Vec<&str> = DType::ALL.iter().map(|d| d.name()).collect();
                dtype = errors.take(choice(arg, &names));
            }
            "page_size" => {
                page_size = errors.take(integer(arg, true, 64));
                at.push(("page_size", arg.value_tokens()));
            }
            "kv_dtype" => {
                kv_dtype = errors.take(name_value(arg));
                at.push(("kv", arg.value_tokens()));
            }
            "rows" => {
                rows = errors.take(integer(arg, true, 16));
                at.push(("rows", arg.value_tokens()));
            }
            "gqa" => gqa = errors.take(integer(arg, true, 4)),
            "lse" => lse = errors.take(flag(arg)).unwrap_or(false),
            _ => {
                let msg = if table.iter().any(|(p, _)| *p == key) {
                    format!("`{key}` is a parameter of the variant: write `{example}`")
                } else {
                    format!(
                        "unknown option `{key}` of a decode kernel; allowed: {}",
                        OPTIONS.join(", ")
                    )
                };
                errors.at(&arg.key, msg);
            }
        }
    }
    let has = |k: &str| seen.iter().any(|(s, _)| s == k);
    for (option, example) in [
        ("head_dim", "head_dim = 128"),
        ("dtype", "dtype = bf16"),
        ("page_size", "page_size = 64"),
    ] {
        if !has(option) {
            errors.at(
                &decl.name,
                format!(
                    "missing option `{option}` of {}: add `{example}`",
                    decl.name
                ),
            );
        }
    }
    if let Some(e) = errors.0 {
        return Err(e);
    }

    // Codegen's parser decides what the templates generate; its errors name the field.
    let mut text = format!(
        "decode-{},d{},{},p{}",
        info.name,
        head_dim.expect("checked"),
        dtype.expect("checked"),
        page_size.expect("checked")
    );
    if let Some(kv) = &kv_dtype {
        text.push_str(&format!(",kv-{kv}"));
    }
    if let Some(r) = rows {
        text.push_str(&format!(",r{r}"));
    }
    let spec = parse_decode_spec(&text).map_err(|e| {
        // The parser's reason starts with the field it rejects.
        let reason = match &e {
            flashgen_codegen::SpecError::Parse { reason, .. } => reason.clone(),
            other => other.to_string(),
        };
        let blame = at
            .iter()
            .find(|(field, _)| reason.starts_with(field))
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| decl.name.to_token_stream());
        err(blame, reason)
    })?;
    Ok(DecodeKernel {
        attrs: decl.attrs.clone(),
        vis: decl.vis.clone(),
        name: decl.name.clone(),
        info,
        text,
        spec,
        rows_declared: rows.is_some(),
        gqa,
        lse,
        window: info
            .streaming
            .then(|| (values[0].expect("checked"), values[1].expect("checked"))),
    })
}

fn doc(text: impl AsRef<str>) -> TokenStream {
    let text = format!(" {}", text.as_ref());
    quote!(#[doc = #text])
}

/// The handle struct of a decode kernel.
pub fn expand(k: &DecodeKernel) -> syn::Result<TokenStream> {
    let cg = quote!(::flashgen::codegen);
    let rt = quote!(::flashgen::runtime);
    let dec = quote!(::flashgen::runtime::decode);
    let private = quote!(::flashgen::__private);
    let (name, vis, attrs) = (&k.name, &k.vis, &k.attrs);
    let elem = match k.spec.dtype {
        DType::Bf16 => quote!(::flashgen::half::bf16),
        DType::F16 => quote!(::flashgen::half::f16),
    };
    let source = render_decode(&k.spec, Arch::SM90).map_err(|e| {
        syn::Error::new_spanned(name, format!("decode template failed to render: {e}"))
    })?;
    let cuda = LitStr::new(&source.code, Span::call_site());
    let text = LitStr::new(&k.text, Span::call_site());
    let gqa = match k.gqa {
        Some(g) => {
            let g = Literal::usize_unsuffixed(g as usize);
            quote!(::core::option::Option::Some(#g))
        }
        None => quote!(::core::option::Option::None),
    };
    let window_consts = k.window.map(|(sink, recent)| {
        let (sink, recent) = (
            Literal::usize_unsuffixed(sink as usize),
            Literal::usize_unsuffixed(recent as usize),
        );
        quote! {
            /// The declared `sink`, in tokens.
            pub const SINK: usize = #sink;
            /// The declared `recent`, in tokens.
            pub const RECENT: usize = #recent;
        }
    });
    let window = quote!(#dec::StreamingWindow { sink: Self::SINK, recent: Self::RECENT });
    let mut docs = vec![
        "Runs the kernel on `rt`'s stream over `cache` for the sequences of `table` (their \
         lengths include the new tokens, already appended): `q` in, `o` out, \
         `[batch, heads_q, q_len, head_dim]`."
            .to_string(),
    ];
    let (lse_param, lse_apply) =
        crate::expand::lse_argument(k.lse, "[batch, heads_q, q_len]", &mut docs);
    let info = k.info;
    let mut params = TokenStream::new();
    if info.selection {
        params.extend(quote!(selection: &'a #dec::PageSelection,));
        docs.push("`selection`: the pages each (sequence, kv head) reads.".into());
    }
    if info.head_kinds {
        params.extend(quote!(heads: &'a #dec::DecodeHeads,));
        docs.push("`heads`: the kind of each kv head (streaming or selected).".into());
    }
    // The mask of the variant, from the variant table's flags.
    let mask = match (info.streaming, info.selection, info.head_kinds) {
        (_, _, true) => quote! {
            #dec::DecodeMask::Mixed { heads, streaming: #window, selection }
        },
        (true, _, false) => quote!(#dec::DecodeMask::Streaming(#window)),
        (false, true, false) => quote!(#dec::DecodeMask::Selected(selection)),
        (false, false, false) => quote!(#dec::DecodeMask::Dense),
    };
    let choice = if k.rows_declared {
        let r = k.spec.rows;
        docs.push(format!(
            "Launches the declared {r}-row tile, the heuristic's split count."
        ));
        quote!(#dec::DecodeChoice::Given {
            rows: ::core::option::Option::Some(#r),
            splits: ::core::option::Option::None,
        })
    } else {
        docs.push(
            "Launches the row tile and split count of the tuned config's entry for the launch \
             (`Runtime::decode`), else the heuristic's."
                .into(),
        );
        quote!(#dec::DecodeChoice::Tuned)
    };
    if let Some(g) = k.gqa {
        docs.push(format!(
            "Fails with `InvalidArgument` unless q has {g} heads per kv head (`GQA`)."
        ));
    }
    let docs = docs.iter().map(doc);
    let struct_doc = doc(format!(
        "Decode kernel `{}`, declared with `attention_kernel!`: create it with \
         [`new`](Self::new) and launch it with [`forward`](Self::forward).",
        k.text
    ));
    let has_docs = attrs.iter().any(|a| a.path().is_ident("doc"));
    let separator = has_docs.then(|| doc(""));
    let name_str = name.to_string();
    let spec_text = k.spec.to_string();

    Ok(quote! {
        #(#attrs)*
        #separator
        #struct_doc
        #[derive(Clone)]
        #vis struct #name {
            spec: #cg::DecodeSpec,
        }

        impl #name {
            /// The declared decode spec in codegen's text form (`parse_decode_spec` reads it);
            /// it has a row tile only when one was declared.
            pub const SPEC: &'static str = #text;
            /// CUDA C++ of the declared kernel (16 rows unless declared) for sm_90a, rendered at
            /// build time.
            pub const CUDA_SM90: &'static str = #cuda;
            /// Query heads per kv head, checked at launch when declared.
            pub const GQA: ::core::option::Option<usize> = #gqa;
            #window_consts

            /// The declared spec (16 rows unless a row tile was declared).
            pub fn spec() -> #cg::DecodeSpec {
                #cg::parse_decode_spec(Self::SPEC).expect("checked when the kernel was declared")
            }

            /// Compiles the declared kernel for `rt`'s GPU, or loads it from the kernel cache
            /// (a launch that needs another row tile loads that one).
            pub fn new(rt: &#rt::Runtime) -> #rt::Result<Self> {
                let spec = Self::spec();
                let module = #dec::DecodeModule::Attention(spec);
                let arch = rt.arch();
                rt.load_module(&module.digest(arch)?, || module.source(arch))?;
                ::core::result::Result::Ok(#name { spec })
            }

            #(#docs)*
            #[allow(clippy::too_many_arguments)]
            pub fn forward<'a>(
                &self,
                rt: &#rt::Runtime,
                cache: &#dec::PagedKvCache,
                table: &#dec::DevicePageTable,
                q: #rt::Tensor<'a, #elem>,
                o: #rt::TensorMut<'a, #elem>,
                #lse_param
                #params
            ) -> #rt::Result<#dec::DecodeLaunch> {
                #private::check_decode_cache(&self.spec, cache.config())?;
                #private::check_decode_gqa(Self::GQA, &q.layout, cache.config().heads_kv)?;
                let args = #dec::DecodeArgs::new(q, o).mask(#mask);
                #lse_apply
                rt.decode_with(cache, table, args, #choice)
            }
        }

        impl ::core::fmt::Debug for #name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(#name_str)
                    .field("spec", &#spec_text)
                    .finish()
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::Input;

    fn lower_str(src: &str) -> syn::Result<DecodeKernel> {
        let input: Input = syn::parse_str(src)?;
        lower(&input.decls[0])
    }

    fn error_of(src: &str) -> String {
        match lower_str(src) {
            Ok(_) => panic!("`{src}` was accepted"),
            Err(e) => e
                .into_iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    #[test]
    fn every_decode_variant_lowers_to_its_spec() {
        for info in &DECODE_VARIANTS {
            let src = format!(
                "struct K: {}, head_dim = 128, dtype = bf16, page_size = 64;",
                example(info)
            );
            let k = lower_str(&src).unwrap();
            assert_eq!(k.spec.variant, info.variant);
            assert_eq!(k.text, format!("decode-{},d128,bf16,p64", info.name));
            assert_eq!(parse_decode_spec(&k.text).unwrap(), k.spec);
            assert_eq!(k.window.is_some(), info.streaming);
            expand(&k).unwrap();
        }
        let k = lower_str(
            "pub struct K: decode_mixed(sink = 64, recent = 512), head_dim = 64, dtype = f16, \
             page_size = 16, kv_dtype = f16, rows = 32, gqa = 8, lse;",
        )
        .unwrap();
        assert_eq!(k.text, "decode-mixed,d64,f16,p16,kv-f16,r32");
        assert_eq!(k.spec.rows, 32);
        assert!(k.rows_declared && k.lse);
        assert_eq!((k.gqa, k.window), (Some(8), Some((64, 512))));
        let tokens = expand(&k).unwrap().to_string();
        assert!(tokens.contains("selection : & 'a"), "{tokens}");
        assert!(tokens.contains("heads : & 'a"));
        assert!(tokens.contains("DecodeChoice :: Given"));
        let dense = expand(
            &lower_str("struct D: decode_dense, head_dim = 128, dtype = bf16, page_size = 64;")
                .unwrap(),
        )
        .unwrap()
        .to_string();
        assert!(dense.contains("DecodeChoice :: Tuned"));
        assert!(!dense.contains("selection :"));
    }

    #[test]
    fn decode_mistakes_name_the_allowed_values() {
        for (src, want) in [
            (
                "struct A: decode_sparse, head_dim = 128, dtype = bf16, page_size = 64;",
                "unknown decode variant `decode_sparse`; allowed: decode_dense",
            ),
            (
                "struct A: decode_dense, head_dim = 128, dtype = bf16, page_size = 48;",
                "page_size = 48 is not supported by decode kernels",
            ),
            (
                "struct A: decode_dense, head_dim = 96, dtype = bf16, page_size = 64;",
                "head_dim = 96",
            ),
            (
                "struct A: decode_dense, head_dim = 256, dtype = bf16, page_size = 64, rows = 64;",
                "rows = 64",
            ),
            (
                "struct A: decode_dense, head_dim = 128, dtype = bf16, page_size = 64, kv_dtype = int3;",
                "`int3`",
            ),
            (
                "struct A: decode_streaming(sink = 4), head_dim = 128, dtype = bf16, page_size = 64;",
                "decode_streaming needs `recent`",
            ),
            (
                "struct A: decode_dense(sink = 4), head_dim = 128, dtype = bf16, page_size = 64;",
                "decode_dense takes no parameters",
            ),
            (
                "struct A: decode_dense, head_dim = 128, dtype = bf16;",
                "missing option `page_size` of A: add `page_size = 64`",
            ),
            (
                "struct A: decode_dense, head_dim = 128, dtype = bf16, page_size = 64, tile = m64n64w4s1;",
                "unknown option `tile` of a decode kernel",
            ),
            (
                "struct A: decode_streaming(sink = 4, recent = 0), head_dim = 128, dtype = bf16, page_size = 64;",
                "`recent` must be positive",
            ),
        ] {
            let got = error_of(src);
            assert!(got.contains(want), "{src}\n  got:  {got}\n  want: {want}");
        }
    }
}
