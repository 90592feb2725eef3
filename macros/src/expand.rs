//! Code generation: one handle struct per declared kernel.

use crate::model::Kernel;
use crate::variants;
use flashgen_codegen::{render, Arch, DType};
use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::{format_ident, quote};
use syn::LitStr;

/// The element type of a dtype, as a path through the facade.
fn element(dtype: DType) -> TokenStream {
    match dtype {
        DType::Bf16 => quote!(::flashgen::half::bf16),
        DType::F16 => quote!(::flashgen::half::f16),
    }
}

/// `Enum::Variant` from a unit enum value's `Debug` name.
fn enum_path(ty: TokenStream, value: impl std::fmt::Debug) -> TokenStream {
    let ident = Ident::new(&format!("{value:?}"), Span::call_site());
    quote!(#ty::#ident)
}

/// The `lse` parameter of a generated `forward` and the line that passes it on, when the kernel
/// declares `lse` (`shape`: the output's shape in its doc line); nothing otherwise.
pub(crate) fn lse_argument(
    lse: bool,
    shape: &str,
    docs: &mut Vec<String>,
) -> (TokenStream, TokenStream) {
    if !lse {
        return (quote!(), quote!());
    }
    docs.push(format!("`lse`: f32 log-sum-exp output, `{shape}`."));
    (
        quote!(lse: &'a mut ::flashgen::runtime::cudarc::driver::CudaSlice<f32>,),
        quote!(let args = args.lse(lse);),
    )
}

fn doc(text: impl AsRef<str>) -> TokenStream {
    let text = format!(" {}", text.as_ref());
    quote!(#[doc = #text])
}

/// The struct, its constants, `spec_for`, `new`, `spec`, `kernel` and `forward`.
pub fn kernel(k: &Kernel) -> syn::Result<TokenStream> {
    let cg = quote!(::flashgen::codegen);
    let rt = quote!(::flashgen::runtime);
    let private = quote!(::flashgen::__private);
    let name = &k.name;
    let vis = &k.vis;
    let attrs = &k.attrs;
    let elem = element(k.dtype);

    let spec_text = k.spec_text();
    let sm90 = k.spec_for(Arch::SM90);
    let source = render(&sm90).map_err(|e| {
        syn::Error::new_spanned(name, format!("kernel template failed to render: {e}"))
    })?;
    let cuda = LitStr::new(&source.code, Span::call_site());
    let spec_lit = LitStr::new(&spec_text, Span::call_site());

    // spec_for
    let variant = enum_path(quote!(#cg::Variant), k.variant);
    let dtype = enum_path(quote!(#cg::DType), k.dtype);
    let (head_dim, causal, lse, varlen) = (k.head_dim, k.causal, k.lse, k.varlen);
    // The definition, checked at compile time, is interned from its canonical text.
    let definition = match &k.definition {
        Some(mods) => {
            let text = LitStr::new(mods.canonical(), Span::call_site());
            quote! {
                ::core::option::Option::Some(
                    #cg::expr::Definition::parse(#text).expect("the definition was checked at compile time"),
                )
            }
        }
        None => quote!(::core::option::Option::None),
    };
    let tile = match k.tile {
        Some(t) => {
            let mma = enum_path(quote!(#cg::Mma), t.mma);
            let (m, n, w, s) = (t.block_m, t.block_n, t.warps, t.stages);
            // The declared tile is the same on every arch.
            quote! {{
                let _ = arch;
                #cg::TileConfig::new(#m, #n, #w, #s).with_mma(#mma)
            }}
        }
        None => quote!(#cg::default_tile(&spec, arch)),
    };
    let tile_doc = match k.tile {
        Some(t) => format!("The tile is the declared `{t}` on every arch."),
        None => "No tile was declared: `new` loads the arch's heuristic default tile \
                 (`flashgen::codegen::default_tile`), and `forward` launches the tile that the \
                 runtime's tuned config gives for the launch's shape bucket \
                 (`Runtime::attention_tuned`), the default when there is none."
            .to_string(),
    };
    let launch = if k.tile.is_some() {
        quote!(rt.attention(&self.spec, args))
    } else {
        quote!(rt.attention_tuned(&self.spec.attention(), args).map(|_| ()))
    };

    // Constants of the variant's parameters and of gqa.
    let params = k.params.iter().map(|(p, v)| {
        let ident = format_ident!("{}", p.name.to_uppercase());
        let v = Literal::usize_unsuffixed(*v as usize);
        let d = doc(format!("The declared `{}`, in tokens.", p.name));
        quote! { #d pub const #ident: usize = #v; }
    });
    let gqa = match k.gqa {
        Some(g) => {
            let g = Literal::usize_unsuffixed(g as usize);
            quote!(::core::option::Option::Some(#g))
        }
        None => quote!(::core::option::Option::None),
    };
    let gqa_check = k.gqa.map(|_| {
        quote! { #private::check_gqa(Self::GQA, &q.layout, &k.layout)?; }
    });

    // forward's arguments beyond q, k, v, o.
    let mut forward_docs = vec![
        "Runs the kernel on `rt`'s stream: `q`, `k`, `v` in, `o` out (bottom-right aligned \
         positions, scale `1/sqrt(head_dim)`)."
            .to_string(),
    ];
    let (lse_param, lse_apply) = lse_argument(k.lse, "[batch, heads_q, seq_q]", &mut forward_docs);
    let (varlen_param, varlen_apply) = if k.varlen {
        forward_docs.push(
            "`varlen`: the packed batch's `cu_seqlens` (`Runtime::upload_varlen`; q, k, v and o are `Layout::packed`)."
                .to_string(),
        );
        (
            quote!(varlen: &'a #rt::DeviceVarlen,),
            quote!(let args = args.varlen(varlen);),
        )
    } else {
        (quote!(), quote!())
    };
    let extra = variants::forward(k.variant, &elem);
    forward_docs.extend(extra.docs.iter().cloned());
    if let Some(g) = k.gqa {
        forward_docs.push(format!(
            "Fails with `InvalidArgument` unless q has {g} heads per kv head (`GQA`)."
        ));
    }
    let forward_docs = forward_docs.iter().map(doc);
    let (extra_params, extra_checks, extra_apply) = (&extra.params, &extra.checks, &extra.apply);

    let has_docs = attrs.iter().any(|a| a.path().is_ident("doc"));
    let separator = has_docs.then(|| doc(""));
    let struct_doc = doc(format!(
        "Attention kernel `{spec_text}`, declared with `attention_kernel!`: create it with \
         [`new`](Self::new) and launch it with [`forward`](Self::forward)."
    ));
    let variant_name = variants::macro_name(k.variant);
    let name_str = name.to_string();
    let spec_for_doc1 = doc(format!("The spec of this kernel on `arch`. {tile_doc}"));
    let new_doc = doc(format!(
        "Compiles the kernel for `rt`'s GPU, or loads it from the kernel cache. {tile_doc}"
    ));

    Ok(quote! {
        #(#attrs)*
        #separator
        #struct_doc
        #[derive(Clone)]
        #vis struct #name {
            spec: #cg::KernelSpec,
            kernel: ::std::sync::Arc<#rt::LoadedKernel>,
        }

        impl #name {
            /// The declared spec in codegen's text form (what `parse_spec` and the CLI read);
            /// it has a tile only when one was declared.
            pub const SPEC: &'static str = #spec_lit;
            /// CUDA C++ of this kernel for sm_90a (with the declared tile, or the default tile
            /// there), rendered at build time.
            pub const CUDA_SM90: &'static str = #cuda;
            /// Query heads per kv head, checked at launch when declared.
            pub const GQA: ::core::option::Option<usize> = #gqa;
            #(#params)*

            #spec_for_doc1
            pub fn spec_for(arch: #cg::Arch) -> #cg::KernelSpec {
                let spec = #cg::AttentionSpec::new(#variant, #head_dim, #dtype, #causal)
                    .with_lse(#lse)
                    .with_varlen(#varlen)
                    .with_definition(#definition);
                spec.with_tile(#tile)
            }

            #new_doc
            pub fn new(rt: &#rt::Runtime) -> #rt::Result<Self> {
                let spec = Self::spec_for(rt.arch());
                let kernel = rt.kernel(&spec)?;
                ::core::result::Result::Ok(#name { spec, kernel })
            }

            /// The spec `new` compiled (with a declared tile, the one every launch uses).
            pub fn spec(&self) -> #cg::KernelSpec {
                self.spec
            }

            /// The compiled kernel: its resource report and where it came from.
            pub fn kernel(&self) -> &#rt::LoadedKernel {
                &self.kernel
            }

            #(#forward_docs)*
            #[allow(clippy::too_many_arguments)]
            pub fn forward<'a>(
                &self,
                rt: &#rt::Runtime,
                q: #rt::Tensor<'a, #elem>,
                k: #rt::Tensor<'a, #elem>,
                v: #rt::Tensor<'a, #elem>,
                o: #rt::TensorMut<'a, #elem>,
                #lse_param
                #varlen_param
                #extra_params
            ) -> #rt::Result<()> {
                #gqa_check
                #extra_checks
                let args = #rt::AttentionArgs::new(q, k, v, o);
                #lse_apply
                #varlen_apply
                #extra_apply
                #launch
            }
        }

        impl ::core::fmt::Debug for #name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(#name_str)
                    .field("variant", &#variant_name)
                    .field("spec", &::std::string::ToString::to_string(&self.spec))
                    .finish()
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::lower;
    use crate::parse::Input;

    fn expand(src: &str) -> String {
        let input: Input = syn::parse_str(src).unwrap();
        kernel(&lower(&input.decls[0]).unwrap())
            .unwrap()
            .to_string()
    }

    #[test]
    fn forward_takes_what_the_variant_needs() {
        let dense = expand("pub struct D: dense(causal), head_dim = 128, dtype = bf16, lse;");
        assert!(dense.contains("lse : & 'a mut"), "{dense}");
        assert!(dense.contains(":: flashgen :: half :: bf16"));
        assert!(!dense.contains("block_list"));
        assert!(!dense.contains("check_gqa"));

        let s = expand(
            "struct S: streaming(sink = 128, window = 2048), head_dim = 64, dtype = f16, gqa = 4;",
        );
        assert!(s.contains("pub const SINK : usize = 128"), "{s}");
        assert!(s.contains("pub const WINDOW : usize = 2048"));
        assert!(s.contains("Some (4)"));
        assert!(s.contains("check_gqa"));
        assert!(s.contains(":: flashgen :: half :: f16"));
        assert!(!s.contains("lse :"));

        let b = expand(
            "struct B: block_sparse(block_q = 128, block_k = 128), head_dim = 128, dtype = bf16, varlen;",
        );
        assert!(
            b.contains("block_list : & 'a :: flashgen :: runtime :: DeviceBlockMask"),
            "{b}"
        );
        assert!(b.contains("check_block_list"));
        assert!(b.contains("varlen : & 'a :: flashgen :: runtime :: DeviceVarlen"));

        let m = expand(
            "struct M: mixed(sink = 4, window = 64, block_q = 128, block_k = 128), head_dim = 128, dtype = bf16;",
        );
        assert!(
            m.contains("heads : & 'a :: flashgen :: runtime :: DeviceHeadKinds"),
            "{m}"
        );

        let a = expand("struct A: apb, head_dim = 128, dtype = bf16, lse, tile = m64n64w4s1;");
        assert!(a.contains("prefix_k"), "{a}");
        assert!(
            a.contains("TileConfig :: new (64u32 , 64u32 , 4u32 , 1u32)"),
            "{a}"
        );
    }

    #[test]
    fn cuda_is_rendered_for_sm90() {
        let d = expand("struct D: dense(causal), head_dim = 128, dtype = bf16, lse;");
        let sm90 = flashgen_codegen::parse_spec("dense,d128,bf16,causal,lse", Arch::SM90).unwrap();
        assert!(d.contains(&sm90.kernel_name()), "kernel name missing");
        assert!(d.contains("pub const SPEC : & 'static str = \"dense,d128,bf16,causal,lse\""));
    }
}
