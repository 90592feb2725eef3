//! The surface syntax of `attention_kernel!`: declarations made of keyed arguments, with no
//! meaning attached yet (that is `model`'s job).
//!
//! ```text
//! input       := declaration*
//! declaration := attribute* visibility `struct` Name `:` arg (`,` arg)* `,`? `;`
//! arg         := key | key `=` expr | key `(` (arg (`,` arg)* `,`?)? `)`
//! ```

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{token, Attribute, Expr, Ident, Token, Visibility};

/// Everything inside one `attention_kernel! { ... }`.
pub struct Input {
    pub decls: Vec<Decl>,
}

impl Parse for Input {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut decls = Vec::new();
        while !input.is_empty() {
            decls.push(input.parse()?);
        }
        Ok(Input { decls })
    }
}

/// `pub struct Name: variant(..), option = value, ...;`
pub struct Decl {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub name: Ident,
    /// The first argument after the colon.
    pub variant: Arg,
    /// The rest.
    pub options: Vec<Arg>,
}

impl Parse for Decl {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        let _: Token![struct] = input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                "expected a kernel declaration: `pub struct Name: variant, head_dim = .., dtype = ..;`",
            )
        })?;
        let name: Ident = input.parse()?;
        let _: Token![:] = input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                "expected `:` and the variant after the struct name, e.g. `struct Name: dense(causal), ...`",
            )
        })?;
        let variant: Arg = input.parse()?;
        let mut options = Vec::new();
        loop {
            if input.peek(Token![;]) {
                let _: Token![;] = input.parse()?;
                break;
            }
            let _: Token![,] = input.parse().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "expected `,` and another option, or `;` to end the declaration",
                )
            })?;
            if input.peek(Token![;]) {
                continue;
            }
            options.push(input.parse()?);
        }
        Ok(Decl {
            attrs,
            vis,
            name,
            variant,
            options,
        })
    }
}

/// `key`, `key = expr` or `key(args)`.
pub struct Arg {
    pub key: Ident,
    pub value: ArgValue,
}

pub enum ArgValue {
    /// The key alone.
    Flag,
    /// `key = expr`.
    Assign(Expr),
    /// `key(args)`; the tokens of the parentheses are kept for error spans.
    List(token::Paren, Vec<Arg>),
}

impl Arg {
    /// The tokens of the whole argument, to point an error at.
    pub fn tokens(&self) -> TokenStream {
        let mut out = self.key.to_token_stream();
        match &self.value {
            ArgValue::Flag => {}
            ArgValue::Assign(expr) => {
                <Token![=]>::default().to_tokens(&mut out);
                expr.to_tokens(&mut out);
            }
            ArgValue::List(paren, _) => {
                paren.surround(&mut out, |_| {});
            }
        }
        out
    }

    /// The tokens of the value (the key itself for a flag).
    pub fn value_tokens(&self) -> TokenStream {
        match &self.value {
            ArgValue::Flag => self.key.to_token_stream(),
            ArgValue::Assign(expr) => expr.to_token_stream(),
            ArgValue::List(..) => self.tokens(),
        }
    }
}

impl Parse for Arg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let key = input.call(Ident::parse_any).map_err(|e| {
            syn::Error::new(
                e.span(),
                "expected an option name, e.g. `head_dim = 128` or `dtype = bf16`",
            )
        })?;
        let value = if input.peek(Token![=]) {
            let _: Token![=] = input.parse()?;
            ArgValue::Assign(input.parse()?)
        } else if input.peek(token::Paren) {
            let content;
            let paren = syn::parenthesized!(content in input);
            let args = Punctuated::<Arg, Token![,]>::parse_terminated(&content)?;
            ArgValue::List(paren, args.into_iter().collect())
        } else {
            ArgValue::Flag
        };
        Ok(Arg { key, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_several_declarations() {
        let input: Input = syn::parse_str(
            "/// Docs.
             pub struct A: streaming(sink = 128, window = 2048), head_dim = 128, dtype = bf16, gqa = 4;
             struct B: dense(causal), head_dim = 64, dtype = f16, lse, tile = m128n64w4s1,;
             pub(crate) struct C: block_sparse(block_q = 128, block_k = 128), head_dim = 128,
                 dtype = bf16, tile(block_m = 64, block_n = 64, warps = 4, stages = 1);",
        )
        .unwrap();
        assert_eq!(input.decls.len(), 3);
        let a = &input.decls[0];
        assert_eq!(a.name, "A");
        assert_eq!(a.attrs.len(), 1);
        assert_eq!(a.variant.key, "streaming");
        let ArgValue::List(_, params) = &a.variant.value else {
            panic!("streaming takes a list");
        };
        assert_eq!(params.len(), 2);
        assert_eq!(a.options.len(), 3);
        let b = &input.decls[1];
        assert!(matches!(b.options[2].value, ArgValue::Flag));
        assert!(matches!(b.options[3].value, ArgValue::Assign(_)));
        let c = &input.decls[2];
        assert!(matches!(&c.options[2].value, ArgValue::List(_, a) if a.len() == 4));
    }

    #[test]
    fn missing_semicolon_is_a_syntax_error() {
        let err = syn::parse_str::<Input>("struct A: dense, head_dim = 64 dtype = bf16;")
            .err()
            .expect("error");
        assert!(err.to_string().contains("expected `,`"), "{err}");
    }
}
