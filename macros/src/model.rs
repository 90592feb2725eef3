//! From syntax to a validated kernel declaration. Everything the templates can or cannot
//! generate is decided by `flashgen_codegen` (`validate_arch_free`, the tile checks, the tile
//! text form); this module only reads values and points codegen's errors at the right token.

use crate::parse::{Arg, ArgValue, Decl};
use crate::variants::{self, Param, ParamKind};
use flashgen_codegen::expr::{CustomMods, Definition};
use flashgen_codegen::{
    default_tile, parse_tile, validate_arch_free, Arch, AttentionSpec, DType, KernelSpec, Mma,
    SpecError, TileConfig, Variant, HEAD_DIMS,
};
use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::{Attribute, Expr, ExprLit, Ident, Lit, UnOp, Visibility};

/// Options after the variant, in the order the error messages list them.
pub const OPTIONS: [&str; 6] = ["head_dim", "dtype", "lse", "varlen", "gqa", "tile"];

/// Fields of the `tile(...)` form.
const TILE_FIELDS: [&str; 5] = ["block_m", "block_n", "warps", "stages", "mma"];

/// A declaration that passed every compile-time check.
pub struct Kernel {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub name: Ident,
    pub variant: Variant,
    pub head_dim: u32,
    pub dtype: DType,
    pub causal: bool,
    pub lse: bool,
    pub varlen: bool,
    /// Query heads per kv head, checked at launch.
    pub gqa: Option<u32>,
    /// The declared tile; `None` takes `default_tile` for the GPU's arch.
    pub tile: Option<TileConfig>,
    /// The variant's parameters, in `variants::params` order.
    pub params: Vec<(Param, u32)>,
    /// The custom variant's mask and score, checked.
    pub definition: Option<CustomMods>,
}

impl Kernel {
    /// The spec on `arch`, exactly as the generated `spec_for` builds it.
    pub fn spec_for(&self, arch: Arch) -> KernelSpec {
        let spec = self.attention();
        match self.tile {
            Some(tile) => spec.with_tile(tile),
            None => spec.with_tile(default_tile(&spec, arch)),
        }
    }

    /// The declared spec without its tile.
    pub fn attention(&self) -> AttentionSpec {
        AttentionSpec::new(self.variant, self.head_dim, self.dtype, self.causal)
            .with_lse(self.lse)
            .with_varlen(self.varlen)
            .with_definition(self.definition.as_ref().map(Definition::intern))
    }

    /// The spec in codegen's text form, without the tile when none was declared, so that
    /// `parse_spec(text, arch)` gives `spec_for(arch)` on every arch.
    pub fn spec_text(&self) -> String {
        match self.tile {
            Some(_) => self.spec_for(Arch::SM90).to_string(),
            None => self.attention().to_string(),
        }
    }
}

/// Where to point errors about each spec field.
struct Blame {
    name: TokenStream,
    head_dim: Option<TokenStream>,
    causal: Option<TokenStream>,
    varlen: Option<TokenStream>,
    /// The whole tile value.
    tile: Option<TokenStream>,
    /// The fields of a `tile(...)`, by name.
    tile_fields: Vec<(&'static str, TokenStream)>,
}

impl Blame {
    fn for_error(&self, e: &SpecError) -> TokenStream {
        let field = e.field();
        let at = match field {
            "head_dim" => self.head_dim.clone(),
            "causal" => self.causal.clone(),
            "varlen" => self.varlen.clone(),
            "block_m" | "block_n" | "warps" | "stages" | "mma" | "tile" => self
                .tile_fields
                .iter()
                .find(|(f, _)| *f == field)
                .map(|(_, t)| t.clone())
                .or_else(|| self.tile.clone()),
            _ => None,
        };
        at.unwrap_or_else(|| self.name.clone())
    }
}

/// Collects every error of a declaration so they are all reported at once.
#[derive(Default)]
pub(crate) struct Errors(pub(crate) Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    pub(crate) fn at(&mut self, tokens: impl ToTokens, msg: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, msg));
    }

    /// The value of `r`, or `None` with its error recorded.
    pub(crate) fn take<T>(&mut self, r: syn::Result<T>) -> Option<T> {
        r.map_err(|e| self.push(e)).ok()
    }
}

pub(crate) fn err(tokens: impl ToTokens, msg: impl std::fmt::Display) -> syn::Error {
    syn::Error::new_spanned(tokens, msg)
}

/// `key` or `key = true|false`.
pub(crate) fn flag(arg: &Arg) -> syn::Result<bool> {
    let key = &arg.key;
    match &arg.value {
        ArgValue::Flag => Ok(true),
        ArgValue::Assign(Expr::Lit(ExprLit {
            lit: Lit::Bool(b), ..
        })) => Ok(b.value),
        _ => Err(err(
            arg.value_tokens(),
            format!("expected `true` or `false` for `{key}` (or `{key}` alone for true)"),
        )),
    }
}

/// What kind of literal an expression is, for "expected X, found Y" messages.
pub(crate) fn describe(expr: &Expr) -> &'static str {
    match expr {
        Expr::Lit(ExprLit { lit, .. }) => match lit {
            Lit::Str(_) => "a string literal",
            Lit::Int(_) => "an integer",
            Lit::Float(_) => "a float literal",
            Lit::Bool(_) => "a boolean",
            Lit::Char(_) => "a char literal",
            _ => "a literal",
        },
        Expr::Path(_) => "a name",
        _ => "an expression",
    }
}

/// `key = <integer literal>`. `positive` rejects 0 as well as negatives.
pub(crate) fn integer(arg: &Arg, positive: bool, example: u32) -> syn::Result<u32> {
    let key = &arg.key;
    let expected = format!("expected an integer for `{key}`, e.g. `{key} = {example}`");
    let expr = match &arg.value {
        ArgValue::Assign(expr) => expr,
        _ => return Err(err(arg.tokens(), expected)),
    };
    let sign = if positive { "positive" } else { "non-negative" };
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Int(lit), ..
        }) => {
            let value: u32 = lit
                .base10_parse()
                .map_err(|e| err(lit, format!("`{key}` = {lit} does not fit in 32 bits: {e}")))?;
            if positive && value == 0 {
                return Err(err(
                    lit,
                    format!("`{key}` must be positive, e.g. `{key} = {example}`"),
                ));
            }
            Ok(value)
        }
        Expr::Unary(u) if matches!(u.op, UnOp::Neg(_)) => Err(err(
            expr,
            format!("`{key}` must be {sign}, e.g. `{key} = {example}`"),
        )),
        other => Err(err(other, format!("{expected}; found {}", describe(other)))),
    }
}

/// `key = name` with `name` one of `allowed`.
pub(crate) fn choice<'a>(arg: &Arg, allowed: &[&'a str]) -> syn::Result<&'a str> {
    let key = &arg.key;
    let list = allowed.join(", ");
    match &arg.value {
        ArgValue::Assign(Expr::Path(p)) if p.path.get_ident().is_some() => {
            let ident = p.path.get_ident().expect("checked");
            let text = ident.to_string();
            allowed
                .iter()
                .find(|a| **a == text)
                .copied()
                .ok_or_else(|| {
                    err(
                        ident,
                        format!("unknown {key} `{text}`; allowed values: {list}"),
                    )
                })
        }
        ArgValue::Assign(expr) => Err(err(
            expr,
            format!(
                "expected one of {list} for `{key}` (a name, not {})",
                describe(expr)
            ),
        )),
        _ => Err(err(
            arg.tokens(),
            format!(
                "`{key}` needs a value: one of {list}, e.g. `{key} = {}`",
                allowed[0]
            ),
        )),
    }
}

/// Text of a tile written as a name (`m128n64w4s1`), a name with the `-wgmma` suffix, or a
/// string literal.
fn tile_text(expr: &Expr) -> Option<String> {
    let ident = |e: &Expr| match e {
        Expr::Path(p) => p.path.get_ident().map(Ident::to_string),
        _ => None,
    };
    match expr {
        Expr::Path(_) => ident(expr),
        Expr::Binary(b) if matches!(b.op, syn::BinOp::Sub(_)) => {
            Some(format!("{}-{}", ident(&b.left)?, ident(&b.right)?))
        }
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Some(s.value()),
        _ => None,
    }
}

const TILE_EXAMPLE: &str =
    "`tile = m128n64w4s1` or `tile(block_m = 128, block_n = 64, warps = 4, stages = 1)`";

/// A `tile = ..` or `tile(..)` option; records field spans in `blame`.
fn tile(arg: &Arg, blame: &mut Blame) -> syn::Result<TileConfig> {
    blame.tile = Some(arg.value_tokens());
    match &arg.value {
        ArgValue::Assign(expr) => {
            let text = tile_text(expr).ok_or_else(|| {
                err(
                    expr,
                    format!(
                        "expected a tile config, e.g. {TILE_EXAMPLE}; found {}",
                        describe(expr)
                    ),
                )
            })?;
            parse_tile(&text).map_err(|e| err(expr, e))
        }
        ArgValue::List(_, fields) => {
            let mut values: [Option<u32>; 4] = [None; 4];
            let mut mma = Mma::Sync;
            let mut errors = Errors::default();
            let mut seen: Vec<String> = Vec::new();
            for field in fields {
                let key = field.key.to_string();
                if seen.contains(&key) {
                    errors.at(&field.key, format!("duplicate tile field `{key}`"));
                    continue;
                }
                seen.push(key.clone());
                match TILE_FIELDS.iter().position(|f| *f == key) {
                    Some(4) => {
                        let names: Vec<String> = TileConfig::MMA
                            .iter()
                            .map(|m| format!("{m:?}").to_lowercase())
                            .collect();
                        let names: Vec<&str> = names.iter().map(String::as_str).collect();
                        if let Some(name) = errors.take(choice(field, &names)) {
                            let i = names.iter().position(|n| *n == name).expect("listed");
                            mma = TileConfig::MMA[i];
                        }
                        blame.tile_fields.push(("mma", field.value_tokens()));
                    }
                    Some(i) => {
                        values[i] = errors.take(integer(field, false, 64));
                        blame
                            .tile_fields
                            .push((TILE_FIELDS[i], field.value_tokens()));
                    }
                    None => errors.at(
                        &field.key,
                        format!(
                            "unknown tile field `{key}`; allowed: {}",
                            TILE_FIELDS.join(", ")
                        ),
                    ),
                }
            }
            for (i, v) in values.iter().enumerate() {
                if v.is_none() && !seen.iter().any(|s| s == TILE_FIELDS[i]) {
                    errors.at(
                        arg.tokens(),
                        format!("tile is missing `{}`; write {TILE_EXAMPLE}", TILE_FIELDS[i]),
                    );
                }
            }
            if let Some(e) = errors.0 {
                return Err(e);
            }
            let [m, n, w, s] = values.map(|v| v.expect("checked"));
            Ok(TileConfig::new(m, n, w, s).with_mma(mma))
        }
        ArgValue::Flag => Err(err(
            &arg.key,
            format!("`tile` needs a value: {TILE_EXAMPLE}"),
        )),
    }
}

fn allowed_variants() -> String {
    Variant::ALL
        .iter()
        .map(|v| variants::macro_name(*v))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A checked declaration: an attention kernel or a decode kernel.
pub enum Declared {
    Attention(Kernel),
    Decode(crate::decode::DecodeKernel),
}

/// Checks a declaration: a decode kernel when its variant is `decode_<name>`, else an attention
/// kernel.
pub fn lower_any(decl: &Decl) -> syn::Result<Declared> {
    if crate::decode::is_decode(&decl.variant.key) {
        crate::decode::lower(decl).map(Declared::Decode)
    } else {
        lower(decl).map(Declared::Attention)
    }
}

/// Checks a declaration and turns it into a kernel.
pub fn lower(decl: &Decl) -> syn::Result<Kernel> {
    let mut errors = Errors::default();
    let mut blame = Blame {
        name: decl.name.to_token_stream(),
        head_dim: None,
        causal: None,
        varlen: None,
        tile: None,
        tile_fields: Vec::new(),
    };

    // The variant, by codegen's names.
    let vkey = &decl.variant.key;
    let variant = Variant::ALL
        .into_iter()
        .find(|v| *vkey == variants::macro_name(*v))
        .ok_or_else(|| {
            let hint = if OPTIONS.contains(&vkey.to_string().as_str()) {
                " (the variant comes first after `:`)"
            } else {
                ""
            };
            err(
                vkey,
                format!(
                    "unknown variant `{vkey}`{hint}; allowed: {}, or a decode kernel: {}",
                    allowed_variants(),
                    crate::decode::allowed_variants()
                ),
            )
        })?;
    let table = variants::params(variant);
    let example = variants::example(variant);

    // The variant's parameters.
    let mut causal = false;
    let mut values: Vec<Option<u32>> = vec![None; table.len()];
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
    let mut seen: Vec<String> = Vec::new();
    let mut definition = None;
    if variant.takes_definition() {
        definition = crate::custom::definition(args)?;
    }
    for arg in args.iter().filter(|_| !variant.takes_definition()) {
        let key = arg.key.to_string();
        if seen.contains(&key) {
            errors.at(&arg.key, format!("duplicate parameter `{key}` of {vkey}"));
            continue;
        }
        seen.push(key.clone());
        if key == "causal" {
            if let Some(c) = errors.take(flag(arg)) {
                causal = c;
            }
            blame.causal = Some(arg.tokens());
        } else if let Some(i) = table.iter().position(|p| p.name == key) {
            let p = table[i];
            values[i] = errors.take(integer(arg, p.kind == ParamKind::Positive, p.example));
        } else {
            let mut allowed: Vec<&str> = table.iter().map(|p| p.name).collect();
            if variant.accepts_causal() {
                allowed.push("causal");
            }
            let msg = if allowed.is_empty() {
                format!("unknown parameter `{key}`: {vkey} takes no parameters")
            } else {
                format!(
                    "unknown parameter `{key}` of {vkey}; allowed: {}",
                    allowed.join(", ")
                )
            };
            errors.at(&arg.key, msg);
        }
    }
    for (p, v) in table.iter().zip(&values) {
        if v.is_none() && !seen.iter().any(|s| s == p.name) {
            errors.at(
                decl.variant.tokens(),
                format!("{vkey} needs `{}`: write `{example}`", p.name),
            );
        }
    }

    // The options.
    let mut head_dim = None;
    let mut dtype = None;
    let (mut lse, mut varlen, mut gqa, mut tile_cfg) = (false, false, None, None);
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
                blame.head_dim = Some(arg.value_tokens());
            }
            "dtype" => {
                let names: Vec<&str> = DType::ALL.iter().map(|d| d.name()).collect();
                dtype = errors
                    .take(choice(arg, &names))
                    .and_then(|n| DType::ALL.into_iter().find(|d| d.name() == n));
            }
            "lse" => lse = errors.take(flag(arg)).unwrap_or(false),
            "varlen" => {
                varlen = errors.take(flag(arg)).unwrap_or(false);
                blame.varlen = Some(arg.tokens());
            }
            "gqa" => gqa = errors.take(integer(arg, true, 4)),
            "tile" => tile_cfg = errors.take(tile(arg, &mut blame)),
            _ => {
                let msg = if key == "causal" || table.iter().any(|p| p.name == key) {
                    format!("`{key}` is a parameter of the variant: write `{example}`")
                } else {
                    format!("unknown option `{key}`; allowed: {}", OPTIONS.join(", "))
                };
                errors.at(&arg.key, msg);
            }
        }
    }
    let has = |k: &str| seen.iter().any(|(s, _)| s == k);
    if !has("head_dim") {
        let dims: Vec<String> = HEAD_DIMS.iter().map(u32::to_string).collect();
        errors.at(
            &decl.name,
            format!(
                "missing option `head_dim` of {}: add `head_dim = 128` (allowed values: {})",
                decl.name,
                dims.join(", ")
            ),
        );
    }
    if !has("dtype") {
        let names: Vec<&str> = DType::ALL.iter().map(|d| d.name()).collect();
        errors.at(
            &decl.name,
            format!(
                "missing option `dtype` of {}: add `dtype = {}` (allowed values: {})",
                decl.name,
                names[0],
                names.join(", ")
            ),
        );
    }
    if let Some(e) = errors.0 {
        return Err(e);
    }

    let kernel = Kernel {
        attrs: decl.attrs.clone(),
        vis: decl.vis.clone(),
        name: decl.name.clone(),
        variant,
        head_dim: head_dim.expect("checked"),
        dtype: dtype.expect("checked"),
        causal,
        lse,
        varlen,
        gqa,
        tile: tile_cfg,
        params: table
            .iter()
            .zip(values)
            .map(|(p, v)| (*p, v.expect("checked")))
            .collect(),
        definition,
    };
    // The same arch-free checks the runtime runs, on the tile the kernel gets on sm_90a when
    // none is declared.
    validate_arch_free(&kernel.spec_for(Arch::SM90)).map_err(|e| err(blame.for_error(&e), e))?;
    Ok(kernel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::Input;
    use flashgen_codegen::parse_spec;

    fn lower_str(src: &str) -> syn::Result<Kernel> {
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
    fn every_variant_lowers_to_its_spec() {
        let k = lower_str(
            "pub struct S: streaming(sink = 128, window = 2048), head_dim = 128, dtype = bf16, gqa = 4;",
        )
        .unwrap();
        assert_eq!(k.variant, Variant::Streaming);
        assert_eq!(k.gqa, Some(4));
        assert_eq!(
            k.params
                .iter()
                .map(|(p, v)| (p.name, *v))
                .collect::<Vec<_>>(),
            vec![("sink", 128), ("window", 2048)]
        );
        assert_eq!(k.spec_text(), "streaming,d128,bf16");

        let k =
            lower_str("struct D: dense(causal), head_dim = 64, dtype = f16, lse = true;").unwrap();
        assert!(k.causal && k.lse && !k.varlen);
        assert_eq!(k.spec_text(), "dense,d64,f16,causal,lse");

        let k = lower_str(
            "struct B: block_sparse(block_q = 128, block_k = 64, causal), head_dim = 128, dtype = bf16, varlen, tile = m64n64w4s1;",
        )
        .unwrap();
        assert_eq!(
            k.spec_text(),
            "block-sparse,d128,bf16,causal,varlen,m64n64w4s1"
        );
        assert_eq!(k.tile, Some(TileConfig::new(64, 64, 4, 1)));

        let k = lower_str(
            "struct M: mixed(sink = 4, window = 256, block_q = 128, block_k = 128, causal), head_dim = 64, dtype = bf16, lse, tile(block_m = 128, block_n = 64, warps = 8, stages = 2);",
        )
        .unwrap();
        assert_eq!(k.tile, Some(TileConfig::new(128, 64, 8, 2)));
        assert_eq!(k.params.len(), 4);

        let k = lower_str(
            "struct A: apb, head_dim = 128, dtype = bf16, lse, tile = m64n128w4s1-wgmma;",
        )
        .unwrap();
        assert_eq!(
            k.tile,
            Some(TileConfig::new(64, 128, 4, 1).with_mma(Mma::Wgmma))
        );
        let k = lower_str(
            "struct A: apb, head_dim = 128, dtype = bf16, tile(block_m = 64, block_n = 128, warps = 4, stages = 1, mma = wgmma);",
        )
        .unwrap();
        assert_eq!(
            k.tile,
            Some(TileConfig::new(64, 128, 4, 1).with_mma(Mma::Wgmma))
        );
    }

    #[test]
    fn spec_text_parses_back_to_the_declared_spec() {
        for src in [
            "struct A: dense(causal), head_dim = 128, dtype = bf16, lse, varlen;",
            "struct A: streaming(sink = 1, window = 2), head_dim = 64, dtype = f16;",
            "struct A: mixed(sink = 1, window = 2, block_q = 128, block_k = 128), head_dim = 256, dtype = bf16, lse;",
            "struct A: block_sparse(block_q = 128, block_k = 128), head_dim = 96, dtype = bf16, tile = m128n32w8s2;",
        ] {
            let k = lower_str(src).unwrap();
            for arch in [Arch::SM80, Arch::SM86, Arch::SM89, Arch::SM90] {
                let parsed = parse_spec(&k.spec_text(), arch).unwrap();
                let spec = k.spec_for(arch);
                // Without a declared tile the text has none: the arch's default applies.
                assert_eq!(parsed.with_tile(spec.tile), spec, "{src} on {arch}");
                if k.tile.is_some() {
                    assert_eq!(parsed, spec, "{src} on {arch}");
                }
            }
        }
    }

    #[test]
    fn mistakes_name_the_allowed_values() {
        let cases = [
            ("struct A: sparse, head_dim = 128, dtype = bf16;",
             "unknown variant `sparse`; allowed: dense, streaming, block_sparse, mixed, apb"),
            ("struct A: dense, head_dim = 100, dtype = bf16;",
             "head_dim = 100 is not supported; allowed values: 32, 64, 96, 128, 256"),
            ("struct A: streaming(sink = 4), head_dim = 128, dtype = bf16;",
             "streaming needs `window`: write `streaming(sink = 128, window = 2048)`"),
            ("struct A: dense, head_dim = \"128\", dtype = bf16;",
             "expected an integer for `head_dim`, e.g. `head_dim = 128`; found a string literal"),
            ("struct A: dense, head_dim = 128, dtype = bf16, lse = 3;",
             "expected `true` or `false` for `lse` (or `lse` alone for true)"),
            ("struct A: dense, head_dim = 128, dtype = bf16, fast = true;",
             "unknown option `fast`; allowed: head_dim, dtype, lse, varlen, gqa, tile"),
            ("struct A: dense, head_dim = 128, dtype = bf16, lse, lse;",
             "duplicate option `lse`"),
            ("struct A: block_sparse(block_q = 0, block_k = 128), head_dim = 128, dtype = bf16;",
             "`block_q` must be positive, e.g. `block_q = 128`"),
            ("struct A: block_sparse(block_q = -64, block_k = 128), head_dim = 128, dtype = bf16;",
             "`block_q` must be positive"),
            ("struct A: dense, head_dim = 128, dtype = bf16, tile = m128n64w2s1;",
             "tile.warps = 2 is not supported; allowed values: 4, 8"),
            ("struct A: dense, head_dim = 128, dtype = bf16, tile = big;",
             "cannot parse `big`"),
            ("struct A: dense, head_dim = 128, dtype = f32;",
             "unknown dtype `f32`; allowed values: bf16, f16"),
            ("struct A: dense, head_dim = 128;",
             "missing option `dtype` of A: add `dtype = bf16` (allowed values: bf16, f16)"),
            ("struct A: streaming(sink = 4, window = 8, causal), head_dim = 128, dtype = bf16;",
             "causal = true does not apply to variant streaming"),
            ("struct A: apb, head_dim = 128, dtype = bf16, varlen;",
             "varlen = true does not apply to variant apb"),
            ("struct A: dense, causal, head_dim = 128, dtype = bf16;",
             "`causal` is a parameter of the variant: write `dense or dense(causal)`"),
            ("struct A: dense(window = 3), head_dim = 128, dtype = bf16;",
             "unknown parameter `window` of dense; allowed: causal"),
            ("struct A: apb(anchor = 4), head_dim = 128, dtype = bf16;",
             "unknown parameter `anchor`: apb takes no parameters"),
            ("struct A: dense, head_dim = 128, dtype = bf16, gqa = 0;",
             "`gqa` must be positive"),
            ("struct A: dense, head_dim = 256, dtype = bf16, tile = m128n128w4s2;",
             "accumulator registers"),
            ("struct A: dense, head_dim = 96, dtype = bf16, tile(block_m = 64, block_n = 64, warps = 4, stages = 1, mma = wgmma);",
             "tile.mma = wgmma does not fit"),
            ("struct A: dense, head_dim = 64, dtype = bf16, tile(block_m = 64, block_n = 64, warps = 4);",
             "tile is missing `stages`"),
            ("struct A: dense, head_dim = 64, dtype = bf16, tile(block_m = 64, block_n = 64, warps = 4, stages = 1, mma = fast);",
             "unknown mma `fast`; allowed values: sync, wgmma, wgmmapipelined"),
        ];
        for (src, want) in cases {
            let got = error_of(src);
            assert!(got.contains(want), "{src}\n  got:  {got}\n  want: {want}");
        }
    }

    #[test]
    fn all_mistakes_of_a_declaration_are_reported_together() {
        let got = error_of("struct A: streaming, head_dim = \"x\", lse = 2;");
        for want in [
            "needs `sink`",
            "needs `window`",
            "`head_dim`",
            "`lse`",
            "missing option `dtype`",
        ] {
            assert!(got.contains(want), "{got}\nwant {want}");
        }
    }
}
