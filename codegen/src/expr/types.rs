//! The type checker: resolves names, gives every node a type and makes int-to-float promotion
//! explicit. Rules:
//! - `b h q k` are int; `s` is float and only in score modifiers; parameters have their
//!   declared types; a vector is only read indexed, at an int index.
//! - `+ - * / %` take numbers: int with int is int (wrapping; `/` and `%` truncate), otherwise
//!   both are floats (an int operand is promoted). `-` negates a number.
//! - `== !=` compare two numbers (promoted as above) or two bools; `< <= > >=` two numbers.
//! - `&& || !` take bools. Nothing converts between bool and int.
//! - `min max` take two numbers (promoted), `abs` keeps its operand's type, `tanh exp log`
//!   give floats.
//! - `if c { a } else { b }`: `c` bool, the branches of one type (numbers promoted).
//! - A mask is bool; a score modifier is a number (an int result is promoted).
//! - Division or remainder by a constant zero is an error.

use super::error::{ErrorKind, ExprError, Span};
use super::eval::{eval_const, Value};
use super::parse::{Ast, AstKind};
use super::{BinOp, Expr, Func, Kind, Param, Role, Type, UnOp, Var};

pub fn check(ast: &Ast, params: &[Param], role: Role) -> Result<Expr, ExprError> {
    let cx = Checker { params, role };
    let e = cx.expr(ast)?;
    match (role, e.ty) {
        (Role::Mask, Type::Bool) => Ok(e),
        (Role::Mask, ty) => Err(ExprError::new(
            ErrorKind::Type,
            ast.span,
            format!("a mask is a bool expression; this one is {ty} (compare it, e.g. `x != 0`)"),
        )),
        (Role::Score, Type::Float) => Ok(e),
        (Role::Score, Type::Int) => Ok(to_float(e)),
        (Role::Score, Type::Bool) => Err(ExprError::new(
            ErrorKind::Type,
            ast.span,
            "a score modifier is a float expression; this one is bool",
        )),
    }
}

struct Checker<'p> {
    params: &'p [Param],
    role: Role,
}

fn node(kind: Kind, ty: Type) -> Expr {
    Expr { kind, ty }
}

fn to_float(e: Expr) -> Expr {
    match e.ty {
        Type::Int => node(Kind::ToFloat(Box::new(e)), Type::Float),
        _ => e,
    }
}

fn type_err(span: Span, message: String) -> ExprError {
    ExprError::new(ErrorKind::Type, span, message)
}

fn number(e: &Expr, span: Span, what: &str) -> Result<(), ExprError> {
    match e.ty {
        Type::Int | Type::Float => Ok(()),
        Type::Bool => Err(type_err(span, format!("{what} takes numbers, not bool"))),
    }
}

/// Promotes two numbers to their common type.
fn unify(a: Expr, b: Expr) -> (Expr, Expr, Type) {
    if a.ty == Type::Float || b.ty == Type::Float {
        (to_float(a), to_float(b), Type::Float)
    } else {
        (a, b, Type::Int)
    }
}

impl Checker<'_> {
    fn expr(&self, ast: &Ast) -> Result<Expr, ExprError> {
        let span = ast.span;
        Ok(match &ast.kind {
            AstKind::Int(v) => node(Kind::Int(*v), Type::Int),
            AstKind::Float(v) => node(Kind::Float(*v as f32), Type::Float),
            AstKind::Bool(v) => node(Kind::Bool(*v), Type::Bool),
            AstKind::Name(name) => self.name(name, span)?,
            AstKind::Index(name, name_span, index) => {
                let Some((i, p)) = self
                    .params
                    .iter()
                    .enumerate()
                    .find(|(_, p)| &p.name == name)
                else {
                    return Err(self.unknown(name, *name_span));
                };
                if !p.ty.is_vector() {
                    return Err(ExprError::new(
                        ErrorKind::Indexing,
                        *name_span,
                        format!(
                            "`{name}` is a scalar ({}); only vectors are indexed",
                            p.ty.name()
                        ),
                    ));
                }
                let index_e = self.expr(index)?;
                if index_e.ty != Type::Int {
                    return Err(type_err(
                        index.span,
                        format!("a vector index is an int; this one is {}", index_e.ty),
                    ));
                }
                node(Kind::Load(i, Box::new(index_e)), p.ty.element())
            }
            AstKind::Call(name, name_span, args) => {
                let Some(func) = Func::ALL.iter().copied().find(|f| f.name() == name) else {
                    let names: Vec<_> = Func::ALL.iter().map(|f| f.name()).collect();
                    let kind = if self.params.iter().any(|p| &p.name == name)
                        || ["b", "h", "q", "k", "s"].contains(&name.as_str())
                    {
                        ErrorKind::Type
                    } else {
                        ErrorKind::UnknownFunction
                    };
                    return Err(ExprError::new(
                        kind,
                        *name_span,
                        format!(
                            "`{name}` is not a function; the functions are {}",
                            names.join(", ")
                        ),
                    ));
                };
                if args.len() != func.arity() {
                    return Err(ExprError::new(
                        ErrorKind::Arity,
                        span,
                        format!(
                            "`{}` takes {} argument{}, got {}",
                            func.name(),
                            func.arity(),
                            if func.arity() == 1 { "" } else { "s" },
                            args.len()
                        ),
                    ));
                }
                let mut typed = Vec::with_capacity(args.len());
                for a in args {
                    let e = self.expr(a)?;
                    number(&e, a.span, &format!("`{}`", func.name()))?;
                    typed.push(e);
                }
                match func {
                    Func::Min | Func::Max => {
                        let b = typed.pop().expect("two arguments");
                        let a = typed.pop().expect("two arguments");
                        let (a, b, ty) = unify(a, b);
                        node(Kind::Call(func, vec![a, b]), ty)
                    }
                    Func::Abs => {
                        let ty = typed[0].ty;
                        node(Kind::Call(func, typed), ty)
                    }
                    Func::Tanh | Func::Exp | Func::Log => {
                        let a = to_float(typed.pop().expect("one argument"));
                        node(Kind::Call(func, vec![a]), Type::Float)
                    }
                }
            }
            AstKind::Unary(op, operand) => {
                let e = self.expr(operand)?;
                match (op, e.ty) {
                    (UnOp::Neg, Type::Int | Type::Float) => {
                        let ty = e.ty;
                        node(Kind::Unary(*op, Box::new(e)), ty)
                    }
                    (UnOp::Not, Type::Bool) => node(Kind::Unary(*op, Box::new(e)), Type::Bool),
                    (UnOp::Neg, ty) => return Err(type_err(span, format!("`-` takes a number, not {ty}"))),
                    (UnOp::Not, ty) => {
                        return Err(type_err(span, format!("`!` takes a bool, not {ty} (no int-to-bool conversion; compare with 0)")))
                    }
                }
            }
            AstKind::Binary(op, l, r) => self.binary(*op, l, r, span)?,
            AstKind::If(c, a, b) => {
                let ce = self.expr(c)?;
                if ce.ty != Type::Bool {
                    return Err(type_err(
                        c.span,
                        format!("an `if` condition is a bool; this one is {}", ce.ty),
                    ));
                }
                let (ae, be) = (self.expr(a)?, self.expr(b)?);
                let (ae, be, ty) = match (ae.ty, be.ty) {
                    (Type::Bool, Type::Bool) => (ae, be, Type::Bool),
                    (Type::Bool, _) | (_, Type::Bool) => {
                        return Err(type_err(
                            span,
                            format!("the branches of an `if` have types {} and {}", ae.ty, be.ty),
                        ))
                    }
                    _ => unify(ae, be),
                };
                node(Kind::If(Box::new(ce), Box::new(ae), Box::new(be)), ty)
            }
        })
    }

    fn unknown(&self, name: &str, span: Span) -> ExprError {
        let mut known = vec!["b", "h", "q", "k"];
        if self.role == Role::Score {
            known.push("s");
        }
        known.extend(self.params.iter().map(|p| p.name.as_str()));
        ExprError::new(
            ErrorKind::UnknownName,
            span,
            format!("unknown name `{name}`; known names: {}", known.join(", ")),
        )
    }

    fn name(&self, name: &str, span: Span) -> Result<Expr, ExprError> {
        let var = match name {
            "b" => Some(Var::B),
            "h" => Some(Var::H),
            "q" => Some(Var::Q),
            "k" => Some(Var::K),
            "s" => Some(Var::S),
            _ => None,
        };
        if let Some(var) = var {
            if var == Var::S {
                if self.role == Role::Mask {
                    return Err(ExprError::new(
                        ErrorKind::ScoreInMask,
                        span,
                        "the score `s` is not known in a mask (only in a score modifier)",
                    ));
                }
                return Ok(node(Kind::Var(var), Type::Float));
            }
            return Ok(node(Kind::Var(var), Type::Int));
        }
        let Some((i, p)) = self.params.iter().enumerate().find(|(_, p)| p.name == name) else {
            if Func::ALL.iter().any(|f| f.name() == name) {
                return Err(ExprError::new(
                    ErrorKind::Arity,
                    span,
                    format!("`{name}` is a function: call it, e.g. `{name}(x)`"),
                ));
            }
            return Err(self.unknown(name, span));
        };
        if p.ty.is_vector() {
            return Err(ExprError::new(
                ErrorKind::Indexing,
                span,
                format!(
                    "`{name}` is a vector ({}); read an element, e.g. `{name}[q]`",
                    p.ty.name()
                ),
            ));
        }
        Ok(node(Kind::Scalar(i), p.ty.element()))
    }

    fn binary(&self, op: BinOp, l: &Ast, r: &Ast, span: Span) -> Result<Expr, ExprError> {
        let (le, re) = (self.expr(l)?, self.expr(r)?);
        let sym = op.symbol();
        if op.is_arithmetic() {
            number(&le, l.span, &format!("`{sym}`"))?;
            number(&re, r.span, &format!("`{sym}`"))?;
            if matches!(op, BinOp::Div | BinOp::Rem) {
                let zero = match eval_const(&re, self.params) {
                    Some(Value::Int(0)) => true,
                    Some(Value::Float(v)) => v == 0.0,
                    _ => false,
                };
                if zero {
                    return Err(ExprError::new(
                        ErrorKind::DivisionByZero,
                        r.span,
                        format!("`{sym}` by a constant zero"),
                    ));
                }
            }
            let (a, b, ty) = unify(le, re);
            return Ok(node(Kind::Binary(op, Box::new(a), Box::new(b)), ty));
        }
        if op.is_comparison() {
            let ordered = !matches!(op, BinOp::Eq | BinOp::Ne);
            let (a, b) = match (le.ty, re.ty) {
                (Type::Bool, Type::Bool) if !ordered => (le, re),
                (Type::Bool, _) | (_, Type::Bool) => {
                    let what = if ordered {
                        "numbers"
                    } else {
                        "two numbers or two bools"
                    };
                    return Err(type_err(
                        span,
                        format!("`{sym}` compares {what}; here {} and {}", le.ty, re.ty),
                    ));
                }
                _ => {
                    let (a, b, _) = unify(le, re);
                    (a, b)
                }
            };
            return Ok(node(Kind::Binary(op, Box::new(a), Box::new(b)), Type::Bool));
        }
        for (e, a) in [(&le, l), (&re, r)] {
            if e.ty != Type::Bool {
                return Err(type_err(
                    a.span,
                    format!(
                        "`{sym}` takes bools, not {} (no int-to-bool conversion; compare with 0)",
                        e.ty
                    ),
                ));
            }
        }
        Ok(node(
            Kind::Binary(op, Box::new(le), Box::new(re)),
            Type::Bool,
        ))
    }
}
