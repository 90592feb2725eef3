//! The parser: tokens to an untyped tree, by recursive descent with one function per precedence
//! level (lowest first): `if`, `||`, `&&`, comparisons (not chained), `+ -`, `* / %`, unary
//! `- !`, then indexing, calls, literals, names and parentheses.

use super::error::{ErrorKind, ExprError, Span};
use super::lex::{lex, Tok, Token};
use super::{BinOp, UnOp};

/// An expression as written, before names and types are resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Ast {
    pub kind: AstKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum AstKind {
    Int(i32),
    Float(f64),
    Bool(bool),
    Name(String),
    /// `name[index]`; the span of the name is the node's start.
    Index(String, Span, Box<Ast>),
    /// `name(args)`.
    Call(String, Span, Vec<Ast>),
    Unary(UnOp, Box<Ast>),
    Binary(BinOp, Box<Ast>, Box<Ast>),
    If(Box<Ast>, Box<Ast>, Box<Ast>),
}

/// One item of a custom definition: a parameter declaration, the mask or the score.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// `name: i32`, `name: f32`, `name: [i32]`, `name: [f32]`; the type as written.
    Param {
        name: String,
        name_span: Span,
        ty: String,
        ty_span: Span,
    },
    Mask(Ast, Span),
    Score(Ast, Span),
}

pub struct Parser<'t> {
    toks: Vec<Token>,
    pos: usize,
    text_len: usize,
    _text: &'t str,
}

impl<'t> Parser<'t> {
    pub fn new(text: &'t str) -> Result<Self, ExprError> {
        Ok(Parser {
            toks: lex(text)?,
            pos: 0,
            text_len: text.len(),
            _text: text,
        })
    }

    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.pos)
    }

    fn peek_punct(&self, p: &str) -> bool {
        matches!(self.peek(), Some(Token { tok: Tok::Punct(q), .. }) if *q == p)
    }

    fn eat_punct(&mut self, p: &str) -> bool {
        let hit = self.peek_punct(p);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn end_span(&self) -> Span {
        (self.text_len, self.text_len)
    }

    fn unexpected(&self, wanted: &str) -> ExprError {
        match self.peek() {
            Some(t) => ExprError::new(
                ErrorKind::UnexpectedToken,
                t.span,
                format!("expected {wanted}, found `{}`", describe(&t.tok)),
            ),
            None => ExprError::new(
                ErrorKind::UnexpectedEnd,
                self.end_span(),
                format!("expected {wanted}, found the end of the text"),
            ),
        }
    }

    fn expect_punct(&mut self, p: &str) -> Result<Span, ExprError> {
        match self.peek() {
            Some(Token {
                tok: Tok::Punct(q),
                span,
            }) if *q == p => {
                let span = *span;
                self.pos += 1;
                Ok(span)
            }
            _ => Err(self.unexpected(&format!("`{p}`"))),
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.toks.len()
    }

    /// A whole text that must be one expression.
    pub fn expression(mut self) -> Result<Ast, ExprError> {
        let e = self.expr()?;
        if !self.at_end() {
            return Err(self.unexpected("an operator or the end of the expression"));
        }
        Ok(e)
    }

    /// A custom definition: items separated by `;` (a trailing one allowed).
    pub fn items(mut self) -> Result<Vec<Item>, ExprError> {
        let mut items = Vec::new();
        while !self.at_end() {
            if self.eat_punct(";") {
                continue;
            }
            items.push(self.item()?);
            if !self.at_end() {
                self.expect_punct(";")?;
            }
        }
        Ok(items)
    }

    fn item(&mut self) -> Result<Item, ExprError> {
        let Some(Token {
            tok: Tok::Ident(name),
            span,
        }) = self.peek().cloned()
        else {
            return Err(self.unexpected("`mask = ..`, `score = ..` or a declaration `name: type`"));
        };
        self.pos += 1;
        if self.eat_punct(":") {
            let start = self.peek().map_or(self.end_span(), |t| t.span);
            let bracket = self.eat_punct("[");
            let Some(Token {
                tok: Tok::Ident(ty),
                span: ty_span,
            }) = self.peek().cloned()
            else {
                return Err(self.unexpected("a type: i32, f32, [i32] or [f32]"));
            };
            self.pos += 1;
            let mut end = ty_span.1;
            if bracket {
                end = self.expect_punct("]")?.1;
            }
            let ty = if bracket { format!("[{ty}]") } else { ty };
            return Ok(Item::Param {
                name,
                name_span: span,
                ty,
                ty_span: (start.0, end),
            });
        }
        if name != "mask" && name != "score" {
            return Err(ExprError::new(
                ErrorKind::UnexpectedToken,
                span,
                format!("`{name}` starts no item; expected `mask = ..`, `score = ..` or a declaration `{name}: type`"),
            ));
        }
        self.expect_punct("=")?;
        let e = self.expr()?;
        Ok(if name == "mask" {
            Item::Mask(e, span)
        } else {
            Item::Score(e, span)
        })
    }

    fn expr(&mut self) -> Result<Ast, ExprError> {
        self.or()
    }

    fn binary_level(
        &mut self,
        ops: &[(&str, BinOp)],
        next: fn(&mut Self) -> Result<Ast, ExprError>,
    ) -> Result<Ast, ExprError> {
        let mut left = next(self)?;
        'outer: loop {
            for (p, op) in ops {
                if self.eat_punct(p) {
                    let right = next(self)?;
                    let span = (left.span.0, right.span.1);
                    left = Ast {
                        kind: AstKind::Binary(*op, Box::new(left), Box::new(right)),
                        span,
                    };
                    continue 'outer;
                }
            }
            return Ok(left);
        }
    }

    fn or(&mut self) -> Result<Ast, ExprError> {
        self.binary_level(&[("||", BinOp::Or)], Self::and)
    }

    fn and(&mut self) -> Result<Ast, ExprError> {
        self.binary_level(&[("&&", BinOp::And)], Self::cmp)
    }

    fn cmp(&mut self) -> Result<Ast, ExprError> {
        const OPS: [(&str, BinOp); 6] = [
            ("==", BinOp::Eq),
            ("!=", BinOp::Ne),
            ("<=", BinOp::Le),
            (">=", BinOp::Ge),
            ("<", BinOp::Lt),
            (">", BinOp::Gt),
        ];
        let left = self.add()?;
        let Some((_, op)) = OPS.iter().find(|(p, _)| self.peek_punct(p)) else {
            return Ok(left);
        };
        self.pos += 1;
        let right = self.add()?;
        if let Some(t) = self.peek() {
            if OPS.iter().any(|(p, _)| t.tok == Tok::Punct(p)) {
                return Err(ExprError::new(
                    ErrorKind::UnexpectedToken,
                    t.span,
                    "comparisons cannot be chained: write `a < b && b < c`",
                ));
            }
        }
        let span = (left.span.0, right.span.1);
        Ok(Ast {
            kind: AstKind::Binary(*op, Box::new(left), Box::new(right)),
            span,
        })
    }

    fn add(&mut self) -> Result<Ast, ExprError> {
        self.binary_level(&[("+", BinOp::Add), ("-", BinOp::Sub)], Self::mul)
    }

    fn mul(&mut self) -> Result<Ast, ExprError> {
        self.binary_level(
            &[("*", BinOp::Mul), ("/", BinOp::Div), ("%", BinOp::Rem)],
            Self::unary,
        )
    }

    fn unary(&mut self) -> Result<Ast, ExprError> {
        let start = self.peek().map(|t| t.span.0);
        for (p, op) in [("-", UnOp::Neg), ("!", UnOp::Not)] {
            if self.eat_punct(p) {
                let operand = self.unary()?;
                let span = (start.unwrap_or(operand.span.0), operand.span.1);
                return Ok(Ast {
                    kind: AstKind::Unary(op, Box::new(operand)),
                    span,
                });
            }
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Ast, ExprError> {
        let Some(token) = self.peek().cloned() else {
            return Err(self.unexpected("an expression"));
        };
        let span = token.span;
        match token.tok {
            Tok::Int(v) => {
                self.pos += 1;
                let v = i32::try_from(v).map_err(|_| {
                    ExprError::new(
                        ErrorKind::IntRange,
                        span,
                        format!("`{v}` does not fit a 32-bit integer"),
                    )
                })?;
                Ok(Ast {
                    kind: AstKind::Int(v),
                    span,
                })
            }
            Tok::Float(v) => {
                self.pos += 1;
                if !(v as f32).is_finite() {
                    return Err(ExprError::new(
                        ErrorKind::BadLiteral,
                        span,
                        "the literal overflows f32",
                    ));
                }
                Ok(Ast {
                    kind: AstKind::Float(v),
                    span,
                })
            }
            Tok::Punct("(") => {
                self.pos += 1;
                let e = self.expr()?;
                let close = self.expect_punct(")")?;
                // Parentheses leave no node: the canonical form does not depend on them.
                Ok(Ast {
                    kind: e.kind,
                    span: (span.0, close.1),
                })
            }
            Tok::Ident(name) => {
                self.pos += 1;
                match name.as_str() {
                    "true" | "false" => Ok(Ast {
                        kind: AstKind::Bool(name == "true"),
                        span,
                    }),
                    "if" => self.if_rest(span),
                    "else" => Err(ExprError::new(
                        ErrorKind::UnexpectedToken,
                        span,
                        "`else` without `if`",
                    )),
                    _ if self.eat_punct("(") => {
                        let mut args = Vec::new();
                        if !self.peek_punct(")") {
                            loop {
                                args.push(self.expr()?);
                                if !self.eat_punct(",") {
                                    break;
                                }
                            }
                        }
                        let close = self.expect_punct(")")?;
                        Ok(Ast {
                            kind: AstKind::Call(name, span, args),
                            span: (span.0, close.1),
                        })
                    }
                    _ if self.eat_punct("[") => {
                        let index = self.expr()?;
                        let close = self.expect_punct("]")?;
                        Ok(Ast {
                            kind: AstKind::Index(name, span, Box::new(index)),
                            span: (span.0, close.1),
                        })
                    }
                    _ => Ok(Ast {
                        kind: AstKind::Name(name),
                        span,
                    }),
                }
            }
            _ => Err(self.unexpected("an expression")),
        }
    }

    /// `if c { a } else { b }` after the `if`; `else if` chains.
    fn if_rest(&mut self, if_span: Span) -> Result<Ast, ExprError> {
        let cond = self.expr()?;
        self.expect_punct("{")?;
        let then = self.expr()?;
        self.expect_punct("}")?;
        match self.peek() {
            Some(Token {
                tok: Tok::Ident(w), ..
            }) if w == "else" => self.pos += 1,
            _ => {
                return Err(
                    self.unexpected("`else` (an `if` is an expression and needs both branches)")
                )
            }
        }
        let other = match self.peek().cloned() {
            Some(Token {
                tok: Tok::Ident(w),
                span,
            }) if w == "if" => {
                self.pos += 1;
                self.if_rest(span)?
            }
            _ => {
                self.expect_punct("{")?;
                let e = self.expr()?;
                self.expect_punct("}")?;
                e
            }
        };
        let span = (if_span.0, self.toks[self.pos - 1].span.1);
        Ok(Ast {
            kind: AstKind::If(Box::new(cond), Box::new(then), Box::new(other)),
            span,
        })
    }
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Int(v) => v.to_string(),
        Tok::Float(v) => v.to_string(),
        Tok::Ident(s) => s.clone(),
        Tok::Punct(p) => p.to_string(),
    }
}
