//! The expression language of user-defined masks and score modifiers (the `custom` variant).
//!
//! A mask is a bool expression and a score modifier a float expression over the indices `b`
//! (batch), `h` (query head), `q` (the query's position, bottom-right aligned: query row `i` of
//! `sq` over `sk` keys is at `i + sk - sq`), `k` (the key's position), the score `s` (score
//! modifiers only: the scaled logit `scale * q.k`), declared scalar parameters (`i32`, `f32`)
//! and reads of declared vectors (`[i32]`, `[f32]`) at an int index. The source goes through
//! [`lex`], [`parse`], the type checker ([`types`]), the canonical printer ([`print`], the text
//! in spec text and cache keys) and the CUDA renderer ([`render`]); [`eval`] evaluates a checked
//! expression on the CPU with the kernel's arithmetic (constant folding, CPU block
//! classification). Users' text never reaches NVRTC: only the renderer's output does.

pub mod args;
pub mod error;
pub mod eval;
mod intern;
mod lex;
mod parse;
pub mod print;
pub mod render;
mod types;

pub use args::ExprArgs;
pub use error::{ErrorKind, ExprError, Span};
pub use eval::{Bindings, Value, VectorData};
pub use intern::Definition;

use sha2::{Digest, Sha256};
use std::fmt;

/// At most this many vector and this many scalar parameters (the slots of [`ExprArgs`], which
/// the custom variant's parameter block must fit).
pub const MAX_VECTORS: usize = 4;
pub const MAX_SCALARS: usize = 4;

/// The type of an expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Type {
    /// 32-bit two's-complement integer, wrapping.
    Int,
    /// IEEE f32.
    Float,
    Bool,
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Type::Int => "int",
            Type::Float => "float",
            Type::Bool => "bool",
        })
    }
}

/// The type of a declared parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ParamType {
    /// `i32`: an int scalar bound at launch.
    Int,
    /// `f32`: a float scalar bound at launch.
    Float,
    /// `[i32]`: a device vector of i32.
    IntVec,
    /// `[f32]`: a device vector of f32.
    FloatVec,
}

impl ParamType {
    pub fn name(self) -> &'static str {
        match self {
            ParamType::Int => "i32",
            ParamType::Float => "f32",
            ParamType::IntVec => "[i32]",
            ParamType::FloatVec => "[f32]",
        }
    }

    pub fn from_name(name: &str) -> Option<ParamType> {
        [
            ParamType::Int,
            ParamType::Float,
            ParamType::IntVec,
            ParamType::FloatVec,
        ]
        .into_iter()
        .find(|t| t.name() == name)
    }

    pub fn is_vector(self) -> bool {
        matches!(self, ParamType::IntVec | ParamType::FloatVec)
    }

    /// The type of the scalar, or of one element of the vector.
    pub fn element(self) -> Type {
        match self {
            ParamType::Int | ParamType::IntVec => Type::Int,
            ParamType::Float | ParamType::FloatVec => Type::Float,
        }
    }
}

/// A declared parameter; `slot` numbers the vectors and the scalars separately, in name order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Param {
    pub name: String,
    pub ty: ParamType,
    pub slot: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnOp {
    Neg,
    Not,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::And => "&&",
            BinOp::Or => "||",
        }
    }

    /// Binding strength: higher binds tighter.
    pub fn precedence(self) -> u8 {
        match self {
            BinOp::Or => 1,
            BinOp::And => 2,
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => 3,
            BinOp::Add | BinOp::Sub => 4,
            BinOp::Mul | BinOp::Div | BinOp::Rem => 5,
        }
    }

    pub fn is_comparison(self) -> bool {
        self.precedence() == 3
    }

    pub fn is_arithmetic(self) -> bool {
        self.precedence() >= 4
    }
}

/// The built-in functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Func {
    Min,
    Max,
    Abs,
    Tanh,
    Exp,
    Log,
}

impl Func {
    pub const ALL: [Func; 6] = [
        Func::Min,
        Func::Max,
        Func::Abs,
        Func::Tanh,
        Func::Exp,
        Func::Log,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Func::Min => "min",
            Func::Max => "max",
            Func::Abs => "abs",
            Func::Tanh => "tanh",
            Func::Exp => "exp",
            Func::Log => "log",
        }
    }

    pub fn arity(self) -> usize {
        match self {
            Func::Min | Func::Max => 2,
            _ => 1,
        }
    }
}

/// The built-in variables: the indices and the score.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Var {
    B,
    H,
    Q,
    K,
    S,
}

impl Var {
    pub fn name(self) -> &'static str {
        match self {
            Var::B => "b",
            Var::H => "h",
            Var::Q => "q",
            Var::K => "k",
            Var::S => "s",
        }
    }
}

/// A checked expression: every node knows its type, and int operands of float operations are
/// converted by explicit [`Kind::ToFloat`] nodes.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: Kind,
    pub ty: Type,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Int(i32),
    Float(f32),
    Bool(bool),
    Var(Var),
    /// A scalar parameter: its index in [`CustomMods::params`].
    Scalar(usize),
    /// `vector[index]`: the vector's index in [`CustomMods::params`]. Out-of-range reads give 0.
    Load(usize, Box<Expr>),
    Unary(UnOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    Call(Func, Vec<Expr>),
    If(Box<Expr>, Box<Expr>, Box<Expr>),
    /// An int operand promoted to float (implicit in the source).
    ToFloat(Box<Expr>),
}

impl Expr {
    /// Whether the expression reads `var`.
    pub fn uses(&self, var: Var) -> bool {
        self.any(&|e| matches!(e.kind, Kind::Var(v) if v == var))
    }

    /// Whether some node satisfies `f`.
    pub fn any(&self, f: &dyn Fn(&Expr) -> bool) -> bool {
        if f(self) {
            return true;
        }
        match &self.kind {
            Kind::Load(_, e) | Kind::Unary(_, e) | Kind::ToFloat(e) => e.any(f),
            Kind::Binary(_, a, b) => a.any(f) || b.any(f),
            Kind::Call(_, args) => args.iter().any(|a| a.any(f)),
            Kind::If(c, a, b) => c.any(f) || a.any(f) || b.any(f),
            _ => false,
        }
    }
}

/// Whether an expression is a mask (bool, no `s`) or a score modifier (float, may read `s`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Mask,
    Score,
}

/// A user-defined mask and score modifier with their declared parameters: what a `custom`
/// spec carries. Built by [`CustomMods::parse`] (the definition text) or [`CustomMods::new`]
/// (separate texts); its [`canonical`](CustomMods::canonical) text is the same for every
/// spelling of the same definition (whitespace, parentheses, declaration order).
#[derive(Clone, Debug, PartialEq)]
pub struct CustomMods {
    params: Vec<Param>,
    mask: Option<Expr>,
    score: Option<Expr>,
    canonical: String,
}

impl CustomMods {
    /// Parses a definition: items separated by `;` — declarations `name: i32`, `name: f32`,
    /// `name: [i32]`, `name: [f32]`, at most one `mask = <bool expr>` and at most one
    /// `score = <float expr>`. E.g. `doc: [i32]; mask = doc[q] == doc[k] && k <= q`.
    pub fn parse(text: &str) -> Result<Self, ExprError> {
        Self::parse_inner(text).map_err(|e| e.in_source(text))
    }

    fn parse_inner(text: &str) -> Result<Self, ExprError> {
        let items = parse::Parser::new(text)?.items()?;
        let mut decls = Vec::new();
        let (mut mask, mut score) = (None, None);
        for item in items {
            match item {
                parse::Item::Param {
                    name,
                    name_span,
                    ty,
                    ty_span,
                } => {
                    let ty = ParamType::from_name(&ty).ok_or_else(|| {
                        ExprError::new(
                            ErrorKind::Declaration,
                            ty_span,
                            format!(
                                "`{ty}` is not a parameter type; allowed: i32, f32, [i32], [f32]"
                            ),
                        )
                    })?;
                    decls.push((name, ty, Some(name_span)));
                }
                parse::Item::Mask(e, span) => set_once(&mut mask, e, span, "mask")?,
                parse::Item::Score(e, span) => set_once(&mut score, e, span, "score")?,
            }
        }
        Self::build(decls, mask, score)
    }

    /// A definition from its parts: the declared parameters and the mask and score texts, each
    /// parsed on its own (errors point into the text they are in).
    pub fn new(
        params: &[(&str, ParamType)],
        mask: Option<&str>,
        score: Option<&str>,
    ) -> Result<Self, ExprError> {
        let parse_one = |text: &str| {
            parse::Parser::new(text)
                .and_then(|p| p.expression())
                .map_err(|e| e.in_source(text))
        };
        let mask_ast = mask.map(parse_one).transpose()?;
        let score_ast = score.map(parse_one).transpose()?;
        let decls = params
            .iter()
            .map(|(n, t)| (n.to_string(), *t, None))
            .collect();
        // Type errors point into whichever text they were found in.
        Self::build_split(
            decls,
            mask_ast,
            score_ast,
            mask.unwrap_or(""),
            score.unwrap_or(""),
        )
    }

    fn build_split(
        decls: Vec<(String, ParamType, Option<Span>)>,
        mask: Option<parse::Ast>,
        score: Option<parse::Ast>,
        mask_text: &str,
        score_text: &str,
    ) -> Result<Self, ExprError> {
        let params = declare(&decls)?;
        let mask = mask
            .map(|m| types::check(&m, &params, Role::Mask).map_err(|e| e.in_source(mask_text)))
            .transpose()?;
        let score = score
            .map(|s| types::check(&s, &params, Role::Score).map_err(|e| e.in_source(score_text)))
            .transpose()?;
        Self::finish(params, &decls, mask, score)
    }

    fn build(
        decls: Vec<(String, ParamType, Option<Span>)>,
        mask: Option<parse::Ast>,
        score: Option<parse::Ast>,
    ) -> Result<Self, ExprError> {
        let params = declare(&decls)?;
        let mask = mask
            .map(|m| types::check(&m, &params, Role::Mask))
            .transpose()?;
        let score = score
            .map(|s| types::check(&s, &params, Role::Score))
            .transpose()?;
        Self::finish(params, &decls, mask, score)
    }

    fn finish(
        params: Vec<Param>,
        decls: &[(String, ParamType, Option<Span>)],
        mask: Option<Expr>,
        score: Option<Expr>,
    ) -> Result<Self, ExprError> {
        for (i, p) in params.iter().enumerate() {
            let used = |e: &Option<Expr>| {
                e.as_ref().is_some_and(|e| {
                    e.any(&|n| matches!(n.kind, Kind::Scalar(j) | Kind::Load(j, _) if j == i))
                })
            };
            if !used(&mask) && !used(&score) {
                let span = decls
                    .iter()
                    .find(|d| d.0 == p.name)
                    .and_then(|d| d.2)
                    .unwrap_or((0, 0));
                return Err(ExprError::new(
                    ErrorKind::Declaration,
                    span,
                    format!("parameter `{}` is declared but never used", p.name),
                ));
            }
        }
        let mut mods = CustomMods {
            params,
            mask,
            score,
            canonical: String::new(),
        };
        mods.canonical = print::definition(&mods);
        Ok(mods)
    }

    /// The declared parameters, in name order.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }

    pub fn mask(&self) -> Option<&Expr> {
        self.mask.as_ref()
    }

    pub fn score(&self) -> Option<&Expr> {
        self.score.as_ref()
    }

    /// The canonical text: declarations in name order, then `mask = ..`, then `score = ..`,
    /// `; `-separated, each expression printed with the fewest parentheses and one space
    /// around binary operators. It parses back to an equal definition.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// SHA-256 of the canonical text, hex.
    pub fn digest(&self) -> String {
        let h = Sha256::digest(self.canonical.as_bytes());
        crate::render::hex(&h)
    }

    /// Whether the mask or the score reads index `var`.
    pub fn uses(&self, var: Var) -> bool {
        [&self.mask, &self.score]
            .iter()
            .any(|e| e.as_ref().is_some_and(|e| e.uses(var)))
    }

    /// The CUDA device code of the definition: the helpers ([`render::PRELUDE`]),
    /// `fg_custom_mask` and `fg_custom_score`, over `FgExprArgs` ([`args::declaration`], which
    /// the including code declares).
    pub fn render_cuda(&self) -> String {
        render::definition(self)
    }
}

impl fmt::Display for CustomMods {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}

fn set_once(
    slot: &mut Option<parse::Ast>,
    e: parse::Ast,
    span: Span,
    what: &str,
) -> Result<(), ExprError> {
    if slot.is_some() {
        return Err(ExprError::new(
            ErrorKind::Declaration,
            span,
            format!("a second `{what}`; a definition has at most one"),
        ));
    }
    *slot = Some(e);
    Ok(())
}

/// The parameters of the declarations, in name order with their slots; checks names.
fn declare(decls: &[(String, ParamType, Option<Span>)]) -> Result<Vec<Param>, ExprError> {
    let mut sorted: Vec<_> = decls.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut params: Vec<Param> = Vec::new();
    let (mut vectors, mut scalars) = (0, 0);
    for (name, ty, span) in sorted {
        let span = span.unwrap_or((0, 0));
        let reserved = [
            "b", "h", "q", "k", "s", "mask", "score", "if", "else", "true", "false",
        ];
        if reserved.contains(&name.as_str()) || Func::ALL.iter().any(|f| f.name() == name) {
            return Err(ExprError::new(
                ErrorKind::Declaration,
                span,
                format!("`{name}` is a built-in name and cannot be declared"),
            ));
        }
        let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(ExprError::new(
                ErrorKind::Declaration,
                span,
                format!(
                    "`{name}` is not a name (letters, digits and `_`, not starting with a digit)"
                ),
            ));
        }
        if params.iter().any(|p| &p.name == name) {
            return Err(ExprError::new(
                ErrorKind::Declaration,
                span,
                format!("parameter `{name}` is declared twice"),
            ));
        }
        let counter = if ty.is_vector() {
            &mut vectors
        } else {
            &mut scalars
        };
        let slot = *counter;
        *counter += 1;
        let max = if ty.is_vector() {
            MAX_VECTORS
        } else {
            MAX_SCALARS
        };
        if *counter > max {
            return Err(ExprError::new(
                ErrorKind::Declaration,
                span,
                format!(
                    "at most {max} {} parameters",
                    if ty.is_vector() { "vector" } else { "scalar" }
                ),
            ));
        }
        params.push(Param {
            name: name.clone(),
            ty: *ty,
            slot,
        });
    }
    Ok(params)
}

#[cfg(test)]
mod tests;
