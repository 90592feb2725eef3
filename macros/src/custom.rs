//! The custom variant in the macro: `custom(mask = |b, h, q, k| .., score = |s, b, h, q, k| ..,
//! params(doc = [i32], cap = f32))`. The closures' bodies are turned into the expression
//! language token by token (operators, literals, names, indexing, calls of the built-in
//! functions, also as methods, `if`/`else`, parentheses and blocks) and checked by codegen at
//! compile time; syntax outside the language, and every error of the language, is a compile
//! error on the offending token.

use crate::parse::{Arg, ArgValue};
use flashgen_codegen::expr::{CustomMods, ParamType};
use proc_macro2::Span;
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{BinOp, Expr, Lit, Pat, UnOp};

/// The text of a converted closure body and the source span of each node's text.
struct Text {
    out: String,
    spans: Vec<(usize, usize, Span)>,
    /// Closure parameter names, by the index variable they stand for.
    rename: Vec<(String, &'static str)>,
}

fn unsupported(e: &impl ToTokens, what: &str) -> syn::Error {
    syn::Error::new_spanned(
        e,
        format!("{what} is not part of the mask/score language (operators, literals, b h q k s, parameters, v[i], min max abs tanh exp log, if/else)"),
    )
}

impl Text {
    fn push(&mut self, e: &Expr) -> syn::Result<()> {
        let start = self.out.len();
        match e {
            Expr::Paren(p) => {
                self.out.push('(');
                self.push(&p.expr)?;
                self.out.push(')');
            }
            Expr::Group(g) => self.push(&g.expr)?,
            Expr::Block(b) if b.block.stmts.len() == 1 => match &b.block.stmts[0] {
                syn::Stmt::Expr(inner, None) => {
                    self.out.push('(');
                    self.push(inner)?;
                    self.out.push(')');
                }
                s => return Err(unsupported(s, "a statement")),
            },
            Expr::Binary(b) => {
                let op = match b.op {
                    BinOp::Add(_) => "+",
                    BinOp::Sub(_) => "-",
                    BinOp::Mul(_) => "*",
                    BinOp::Div(_) => "/",
                    BinOp::Rem(_) => "%",
                    BinOp::And(_) => "&&",
                    BinOp::Or(_) => "||",
                    BinOp::Eq(_) => "==",
                    BinOp::Ne(_) => "!=",
                    BinOp::Lt(_) => "<",
                    BinOp::Le(_) => "<=",
                    BinOp::Gt(_) => ">",
                    BinOp::Ge(_) => ">=",
                    _ => return Err(unsupported(&b.op, "this operator")),
                };
                self.out.push('(');
                self.push(&b.left)?;
                self.out.push_str(&format!(" {op} "));
                self.push(&b.right)?;
                self.out.push(')');
            }
            Expr::Unary(u) => {
                let op = match u.op {
                    UnOp::Neg(_) => "-",
                    UnOp::Not(_) => "!",
                    _ => return Err(unsupported(&u.op, "this operator")),
                };
                self.out.push_str(op);
                self.out.push('(');
                self.push(&u.expr)?;
                self.out.push(')');
            }
            Expr::Lit(l) => match &l.lit {
                Lit::Int(i) if i.suffix().is_empty() => self.out.push_str(i.base10_digits()),
                Lit::Float(f) if f.suffix().is_empty() => {
                    let digits = f.base10_digits();
                    self.out.push_str(digits);
                    if !digits.contains(['.', 'e', 'E']) {
                        self.out.push_str(".0");
                    }
                }
                Lit::Bool(b) => self.out.push_str(if b.value { "true" } else { "false" }),
                other => return Err(unsupported(other, "this literal (no suffixes)")),
            },
            Expr::Path(p) => {
                let ident = p.path.get_ident().ok_or_else(|| unsupported(p, "a path"))?;
                let name = ident.to_string();
                let renamed = self
                    .rename
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, c)| *c);
                match renamed {
                    Some(canonical) => self.out.push_str(canonical),
                    None if ["b", "h", "q", "k", "s"].contains(&name.as_str()) => {
                        return Err(syn::Error::new_spanned(
                            ident,
                            format!("`{name}` is not a parameter of this closure (its parameters stand for the indices in order)"),
                        ))
                    }
                    None => self.out.push_str(&name),
                }
            }
            Expr::Index(i) => {
                let Expr::Path(p) = &*i.expr else {
                    return Err(unsupported(&i.expr, "indexing anything but a parameter"));
                };
                let ident = p.path.get_ident().ok_or_else(|| unsupported(p, "a path"))?;
                self.out.push_str(&ident.to_string());
                self.out.push('[');
                self.push(&i.index)?;
                self.out.push(']');
            }
            Expr::Call(c) => {
                let Expr::Path(p) = &*c.func else {
                    return Err(unsupported(&c.func, "calling this"));
                };
                let ident = p.path.get_ident().ok_or_else(|| unsupported(p, "a path"))?;
                self.out.push_str(&ident.to_string());
                self.args(c.args.iter())?;
            }
            // `s.tanh()`, `x.min(y)`: the receiver is the first argument.
            Expr::MethodCall(m) => {
                self.out.push_str(&m.method.to_string());
                self.args(std::iter::once(&*m.receiver).chain(m.args.iter()))?;
            }
            Expr::If(i) => {
                self.out.push_str("(if ");
                self.push(&i.cond)?;
                self.out.push_str(" { ");
                self.block(&i.then_branch)?;
                self.out.push_str(" } else { ");
                match &i.else_branch {
                    Some((_, e)) => self.push(e)?,
                    None => return Err(unsupported(i, "an `if` without `else`")),
                }
                self.out.push_str(" })");
            }
            other => return Err(unsupported(other, "this expression")),
        }
        self.spans.push((start, self.out.len(), e.span()));
        Ok(())
    }

    fn block(&mut self, b: &syn::Block) -> syn::Result<()> {
        match b.stmts.as_slice() {
            [syn::Stmt::Expr(e, None)] => self.push(e),
            _ => Err(unsupported(b, "a block of statements")),
        }
    }

    fn args<'e>(&mut self, args: impl Iterator<Item = &'e Expr>) -> syn::Result<()> {
        self.out.push('(');
        for (n, a) in args.enumerate() {
            if n > 0 {
                self.out.push_str(", ");
            }
            self.push(a)?;
        }
        self.out.push(')');
        Ok(())
    }

    /// The source span of the innermost node covering bytes `[a, b)` of the text (or at
    /// least its start).
    fn span_of(&self, (a, b): (usize, usize)) -> Option<Span> {
        let covering = |s: usize, e: usize| s <= a && b.max(a + 1) <= e;
        let any = self.spans.iter().any(|(s, e, _)| covering(*s, *e));
        self.spans
            .iter()
            .filter(|(s, e, _)| {
                if any {
                    covering(*s, *e)
                } else {
                    *s <= a && a < *e
                }
            })
            .min_by_key(|(s, e, _)| e - s)
            .map(|(_, _, span)| *span)
    }
}

/// A closure's body as language text, its parameters mapped by position to `names`.
fn closure(arg: &Arg, names: &'static [&'static str]) -> syn::Result<Text> {
    let ArgValue::Assign(Expr::Closure(c)) = &arg.value else {
        return Err(syn::Error::new_spanned(
            arg.tokens(),
            format!(
                "`{}` takes a closure: `{} = |{}| ..`",
                arg.key,
                arg.key,
                names.join(", ")
            ),
        ));
    };
    if c.inputs.len() != names.len() {
        return Err(syn::Error::new_spanned(
            &c.inputs,
            format!(
                "a {} closure takes {} parameters: |{}|",
                arg.key,
                names.len(),
                names.join(", ")
            ),
        ));
    }
    let mut rename = Vec::new();
    for (p, canonical) in c.inputs.iter().zip(names) {
        match p {
            Pat::Ident(i) => rename.push((i.ident.to_string(), *canonical)),
            Pat::Wild(_) => {}
            other => return Err(unsupported(other, "this closure parameter")),
        }
    }
    let mut t = Text {
        out: String::new(),
        spans: Vec::new(),
        rename,
    };
    t.push(&c.body)?;
    Ok(t)
}

fn param_type(e: &Expr) -> Option<ParamType> {
    let name = match e {
        Expr::Path(p) => p.path.get_ident()?.to_string(),
        Expr::Array(a) if a.elems.len() == 1 => match &a.elems[0] {
            Expr::Path(p) => format!("[{}]", p.path.get_ident()?),
            _ => return None,
        },
        _ => return None,
    };
    ParamType::from_name(&name)
}

/// The definition of a `custom(..)` declaration's arguments; `None` without mask and score.
pub fn definition(args: &[Arg]) -> syn::Result<Option<CustomMods>> {
    let mut mask = None;
    let mut score = None;
    let mut params: Vec<(String, ParamType)> = Vec::new();
    for arg in args {
        match arg.key.to_string().as_str() {
            "mask" => mask = Some(closure(arg, &["b", "h", "q", "k"])?),
            "score" => score = Some(closure(arg, &["s", "b", "h", "q", "k"])?),
            "params" => {
                let ArgValue::List(_, list) = &arg.value else {
                    return Err(syn::Error::new_spanned(
                        arg.tokens(),
                        "write `params(name = i32, v = [f32], ..)`",
                    ));
                };
                for p in list {
                    let ty = match &p.value {
                        ArgValue::Assign(e) => param_type(e),
                        _ => None,
                    }
                    .ok_or_else(|| {
                        syn::Error::new_spanned(
                            p.tokens(),
                            format!(
                                "write `{} = TYPE` with TYPE i32, f32, [i32] or [f32]",
                                p.key
                            ),
                        )
                    })?;
                    params.push((p.key.to_string(), ty));
                }
            }
            other => {
                return Err(syn::Error::new_spanned(
                    &arg.key,
                    format!("unknown parameter `{other}` of custom; allowed: mask, score, params"),
                ))
            }
        }
    }
    if mask.is_none() && score.is_none() {
        if !params.is_empty() {
            return Err(syn::Error::new_spanned(
                &args[0].key,
                "parameters without a mask or score",
            ));
        }
        return Ok(None);
    }
    let decls: Vec<(&str, ParamType)> = params.iter().map(|(n, t)| (n.as_str(), *t)).collect();
    CustomMods::new(
        &decls,
        mask.as_ref().map(|t| t.out.as_str()),
        score.as_ref().map(|t| t.out.as_str()),
    )
    .map(Some)
    .map_err(|e| {
        // Point at the source token of the text the error is in.
        let text = [&mask, &score]
            .into_iter()
            .flatten()
            .find(|t| t.out == e.source_text);
        let span = text
            .and_then(|t| t.span_of(e.span))
            .unwrap_or_else(|| args[0].key.span());
        syn::Error::new(span, e.message.clone())
    })
}
