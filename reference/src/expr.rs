//! The oracle's own reading of the custom variant's expression language: a parser and an
//! interpreter written apart from the code generator's (which renders CUDA), so that tests
//! compare two independent readings of one text. Values are dynamically typed: ints are i32
//! and wrap (`/` and `%` truncate, and give 0 for a zero divisor), floats are f64, an
//! operation with a float operand promotes the int one, a vector read outside `0..len` gives 0.
//! Definitions are `;`-separated items: `name: i32|f32|[i32]|[f32]`, `mask = ..`, `score = ..`.

use std::collections::HashMap;
use thiserror::Error;

/// A definition the oracle cannot read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("expression at byte {at}: {message}")]
pub struct ExprParseError {
    /// Byte offset of the offending text.
    pub at: usize,
    /// What is wrong.
    pub message: String,
}

/// A value of the language.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Val {
    /// 32-bit integer.
    I(i32),
    /// Float (f64 here; f32 in the kernel).
    F(f64),
    /// Boolean.
    B(bool),
}

impl Val {
    fn num(self) -> f64 {
        match self {
            Val::I(v) => v as f64,
            Val::F(v) => v,
            Val::B(v) => v as i32 as f64,
        }
    }
    fn truth(self) -> bool {
        matches!(self, Val::B(true))
    }
}

/// A value bound to a declared parameter.
#[derive(Debug, Clone, Copy)]
pub enum ExprArg<'a> {
    /// An `i32` scalar.
    Int(i32),
    /// An `f32` scalar (widened).
    Float(f64),
    /// An `[i32]` vector.
    Ints(&'a [i32]),
    /// An `[f32]` vector.
    Floats(&'a [f32]),
}

#[derive(Debug, Clone)]
enum Node {
    Lit(Val),
    Var(char),
    Param(String),
    Read(String, Box<Node>),
    Neg(Box<Node>),
    Not(Box<Node>),
    Op(String, Box<Node>, Box<Node>),
    Fun(String, Vec<Node>),
    Cond(Box<Node>, Box<Node>, Box<Node>),
}

/// A parsed definition: its declarations, mask and score modifier.
#[derive(Debug, Clone)]
pub struct ExprProgram {
    decls: Vec<(String, String)>,
    mask: Option<Node>,
    score: Option<Node>,
}

/// A definition with values for its parameters: the mask and score modifier as functions.
pub struct BoundProgram<'a> {
    program: &'a ExprProgram,
    args: HashMap<String, ExprArg<'a>>,
}

impl ExprProgram {
    /// Reads a definition text.
    pub fn parse(text: &str) -> Result<Self, ExprParseError> {
        let toks = tokens(text)?;
        let mut r = Reader {
            toks,
            at: 0,
            end: text.len(),
        };
        let mut program = ExprProgram {
            decls: Vec::new(),
            mask: None,
            score: None,
        };
        while r.at < r.toks.len() {
            if r.take(";") {
                continue;
            }
            let (name, at) = r.word()?;
            if r.take(":") {
                let ty = if r.take("[") {
                    let (t, _) = r.word()?;
                    r.need("]")?;
                    format!("[{t}]")
                } else {
                    r.word()?.0
                };
                if !["i32", "f32", "[i32]", "[f32]"].contains(&ty.as_str()) {
                    return Err(ExprParseError {
                        at,
                        message: format!("bad type {ty}"),
                    });
                }
                program.decls.push((name, ty));
            } else {
                r.need("=")?;
                let e = r.disjunction()?;
                match name.as_str() {
                    "mask" => program.mask = Some(e),
                    "score" => program.score = Some(e),
                    _ => {
                        return Err(ExprParseError {
                            at,
                            message: format!("unknown item {name}"),
                        })
                    }
                }
            }
        }
        Ok(program)
    }

    /// Whether the definition has a mask.
    pub fn has_mask(&self) -> bool {
        self.mask.is_some()
    }

    /// Whether the definition has a score modifier.
    pub fn has_score(&self) -> bool {
        self.score.is_some()
    }

    /// Binds values to the declared parameters (by name); every declared one needs a value of
    /// its type.
    pub fn bind<'a>(
        &'a self,
        values: &[(&str, ExprArg<'a>)],
    ) -> Result<BoundProgram<'a>, ExprParseError> {
        let mut args = HashMap::new();
        for (name, ty) in &self.decls {
            let Some((_, v)) = values.iter().find(|(n, _)| n == name) else {
                return Err(ExprParseError {
                    at: 0,
                    message: format!("no value for {name}"),
                });
            };
            let fits = matches!(
                (ty.as_str(), v),
                ("i32", ExprArg::Int(_))
                    | ("f32", ExprArg::Float(_))
                    | ("[i32]", ExprArg::Ints(_))
                    | ("[f32]", ExprArg::Floats(_))
            );
            if !fits {
                return Err(ExprParseError {
                    at: 0,
                    message: format!("{name} is declared {ty}"),
                });
            }
            args.insert(name.clone(), *v);
        }
        Ok(BoundProgram {
            program: self,
            args,
        })
    }
}

impl BoundProgram<'_> {
    /// The mask at (b, h, q, k): true without a mask.
    pub fn mask(&self, b: i64, h: i64, q: i64, k: i64) -> bool {
        match &self.program.mask {
            Some(e) => self.run(e, [b, h, q, k], 0.0).truth(),
            None => true,
        }
    }

    /// The modified score: `s` without a score modifier.
    pub fn score(&self, s: f64, b: i64, h: i64, q: i64, k: i64) -> f64 {
        match &self.program.score {
            Some(e) => self.run(e, [b, h, q, k], s).num(),
            None => s,
        }
    }

    fn run(&self, e: &Node, idx: [i64; 4], s: f64) -> Val {
        let go = |n: &Node| self.run(n, idx, s);
        match e {
            Node::Lit(v) => *v,
            Node::Var(c) => match c {
                'b' => Val::I(idx[0] as i32),
                'h' => Val::I(idx[1] as i32),
                'q' => Val::I(idx[2] as i32),
                'k' => Val::I(idx[3] as i32),
                _ => Val::F(s),
            },
            Node::Param(name) => match self.args.get(name) {
                Some(ExprArg::Int(v)) => Val::I(*v),
                Some(ExprArg::Float(v)) => Val::F(*v),
                _ => Val::I(0),
            },
            Node::Read(name, i) => {
                let i = match go(i) {
                    Val::I(v) => v as i64,
                    other => other.num() as i64,
                };
                let ok = |len: usize| i >= 0 && (i as usize) < len;
                match self.args.get(name) {
                    Some(ExprArg::Ints(v)) => Val::I(if ok(v.len()) { v[i as usize] } else { 0 }),
                    Some(ExprArg::Floats(v)) => Val::F(if ok(v.len()) {
                        v[i as usize] as f64
                    } else {
                        0.0
                    }),
                    _ => Val::I(0),
                }
            }
            Node::Neg(a) => match go(a) {
                Val::I(v) => Val::I(v.wrapping_neg()),
                v => Val::F(-v.num()),
            },
            Node::Not(a) => Val::B(!go(a).truth()),
            Node::Op(op, a, b) => {
                if op == "&&" {
                    return Val::B(go(a).truth() && go(b).truth());
                }
                if op == "||" {
                    return Val::B(go(a).truth() || go(b).truth());
                }
                arith(op, go(a), go(b))
            }
            Node::Fun(name, args) => {
                let v: Vec<Val> = args.iter().map(go).collect();
                match (name.as_str(), v.as_slice()) {
                    ("min", [Val::I(x), Val::I(y)]) => Val::I(*x.min(y)),
                    ("max", [Val::I(x), Val::I(y)]) => Val::I(*x.max(y)),
                    ("min", [x, y]) => Val::F(x.num().min(y.num())),
                    ("max", [x, y]) => Val::F(x.num().max(y.num())),
                    ("abs", [Val::I(x)]) => Val::I(x.wrapping_abs()),
                    ("abs", [x]) => Val::F(x.num().abs()),
                    ("tanh", [x]) => Val::F(x.num().tanh()),
                    ("exp", [x]) => Val::F(x.num().exp()),
                    ("log", [x]) => Val::F(x.num().ln()),
                    _ => Val::F(f64::NAN),
                }
            }
            Node::Cond(c, a, b) => {
                let x = if go(c).truth() { go(a) } else { go(b) };
                // Branches of mixed int and float types give a float either way.
                match (x, self.branch_is_float(a) || self.branch_is_float(b)) {
                    (Val::I(v), true) => Val::F(v as f64),
                    (x, _) => x,
                }
            }
        }
    }

    /// Whether a branch's value is a float whatever the inputs (its static type).
    fn branch_is_float(&self, e: &Node) -> bool {
        match e {
            Node::Lit(v) => matches!(v, Val::F(_)),
            Node::Var(c) => *c == 's',
            Node::Param(n) => matches!(self.args.get(n), Some(ExprArg::Float(_))),
            Node::Read(n, _) => matches!(self.args.get(n), Some(ExprArg::Floats(_))),
            Node::Neg(a) => self.branch_is_float(a),
            Node::Not(_) => false,
            Node::Op(op, a, b) => {
                ["+", "-", "*", "/", "%"].contains(&op.as_str())
                    && (self.branch_is_float(a) || self.branch_is_float(b))
            }
            Node::Fun(name, args) => match name.as_str() {
                "tanh" | "exp" | "log" => true,
                _ => args.iter().any(|a| self.branch_is_float(a)),
            },
            Node::Cond(_, a, b) => self.branch_is_float(a) || self.branch_is_float(b),
        }
    }
}

fn arith(op: &str, a: Val, b: Val) -> Val {
    if let (Val::I(x), Val::I(y)) = (a, b) {
        return match op {
            "+" => Val::I(x.wrapping_add(y)),
            "-" => Val::I(x.wrapping_sub(y)),
            "*" => Val::I(x.wrapping_mul(y)),
            "/" => Val::I(if y == 0 { 0 } else { x.wrapping_div(y) }),
            "%" => Val::I(if y == 0 { 0 } else { x.wrapping_rem(y) }),
            "==" => Val::B(x == y),
            "!=" => Val::B(x != y),
            "<" => Val::B(x < y),
            "<=" => Val::B(x <= y),
            ">" => Val::B(x > y),
            _ => Val::B(x >= y),
        };
    }
    if let (Val::B(x), Val::B(y)) = (a, b) {
        return Val::B(if op == "==" { x == y } else { x != y });
    }
    let (x, y) = (a.num(), b.num());
    match op {
        "+" => Val::F(x + y),
        "-" => Val::F(x - y),
        "*" => Val::F(x * y),
        "/" => Val::F(x / y),
        "%" => Val::F(x % y),
        "==" => Val::B(x == y),
        "!=" => Val::B(x != y),
        "<" => Val::B(x < y),
        "<=" => Val::B(x <= y),
        ">" => Val::B(x > y),
        _ => Val::B(x >= y),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum T {
    Num(String),
    Word(String),
    Sym(&'static str),
}

fn tokens(text: &str) -> Result<Vec<(T, usize)>, ExprParseError> {
    const SYMS: [&str; 24] = [
        "&&", "||", "==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "%", "!", "(", ")", "[",
        "]", "{", "}", ",", ";", ":", "=",
    ];
    let mut out = Vec::new();
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut n = 0;
    while n < chars.len() {
        let (at, c) = chars[n];
        if c.is_whitespace() {
            n += 1;
        } else if c.is_ascii_digit() {
            let mut m = n;
            while m < chars.len() {
                let ch = chars[m].1;
                let exp_sign = (ch == '+' || ch == '-') && matches!(chars[m - 1].1, 'e' | 'E');
                if ch.is_ascii_digit() || ch == '.' || ch == 'e' || ch == 'E' || exp_sign {
                    m += 1;
                } else {
                    break;
                }
            }
            let end = chars.get(m).map_or(text.len(), |x| x.0);
            out.push((T::Num(text[at..end].to_string()), at));
            n = m;
        } else if c.is_alphabetic() || c == '_' {
            let mut m = n;
            while m < chars.len() && (chars[m].1.is_alphanumeric() || chars[m].1 == '_') {
                m += 1;
            }
            let end = chars.get(m).map_or(text.len(), |x| x.0);
            out.push((T::Word(text[at..end].to_string()), at));
            n = m;
        } else {
            let Some(s) = SYMS.iter().find(|s| text[at..].starts_with(**s)) else {
                return Err(ExprParseError {
                    at,
                    message: format!("unexpected {c}"),
                });
            };
            out.push((T::Sym(s), at));
            n += s.len();
        }
    }
    Ok(out)
}

struct Reader {
    toks: Vec<(T, usize)>,
    at: usize,
    end: usize,
}

impl Reader {
    fn here(&self) -> usize {
        self.toks.get(self.at).map_or(self.end, |t| t.1)
    }
    fn fail<X>(&self, message: &str) -> Result<X, ExprParseError> {
        Err(ExprParseError {
            at: self.here(),
            message: message.to_string(),
        })
    }
    fn take(&mut self, sym: &str) -> bool {
        if matches!(self.toks.get(self.at), Some((T::Sym(s), _)) if *s == sym) {
            self.at += 1;
            true
        } else {
            false
        }
    }
    fn need(&mut self, sym: &str) -> Result<(), ExprParseError> {
        if self.take(sym) {
            Ok(())
        } else {
            self.fail(&format!("expected {sym}"))
        }
    }
    fn word(&mut self) -> Result<(String, usize), ExprParseError> {
        match self.toks.get(self.at).cloned() {
            Some((T::Word(w), at)) => {
                self.at += 1;
                Ok((w, at))
            }
            _ => self.fail("expected a name"),
        }
    }
    fn binary(
        &mut self,
        ops: &[&str],
        chain: bool,
        next: fn(&mut Reader) -> Result<Node, ExprParseError>,
    ) -> Result<Node, ExprParseError> {
        let mut left = next(self)?;
        loop {
            let Some(op) = ops
                .iter()
                .find(|o| matches!(self.toks.get(self.at), Some((T::Sym(s), _)) if s == *o))
            else {
                return Ok(left);
            };
            self.at += 1;
            let right = next(self)?;
            left = Node::Op(op.to_string(), Box::new(left), Box::new(right));
            if !chain {
                return Ok(left);
            }
        }
    }
    fn disjunction(&mut self) -> Result<Node, ExprParseError> {
        self.binary(&["||"], true, Reader::conjunction)
    }
    fn conjunction(&mut self) -> Result<Node, ExprParseError> {
        self.binary(&["&&"], true, Reader::comparison)
    }
    fn comparison(&mut self) -> Result<Node, ExprParseError> {
        self.binary(&["==", "!=", "<=", ">=", "<", ">"], false, Reader::sum)
    }
    fn sum(&mut self) -> Result<Node, ExprParseError> {
        self.binary(&["+", "-"], true, Reader::product)
    }
    fn product(&mut self) -> Result<Node, ExprParseError> {
        self.binary(&["*", "/", "%"], true, Reader::prefix)
    }
    fn prefix(&mut self) -> Result<Node, ExprParseError> {
        if self.take("-") {
            return Ok(Node::Neg(Box::new(self.prefix()?)));
        }
        if self.take("!") {
            return Ok(Node::Not(Box::new(self.prefix()?)));
        }
        self.atom()
    }
    fn block(&mut self) -> Result<Node, ExprParseError> {
        self.need("{")?;
        let e = self.disjunction()?;
        self.need("}")?;
        Ok(e)
    }
    fn atom(&mut self) -> Result<Node, ExprParseError> {
        let Some((tok, at)) = self.toks.get(self.at).cloned() else {
            return self.fail("unexpected end");
        };
        self.at += 1;
        match tok {
            T::Num(text) => {
                let float = text.contains(['.', 'e', 'E']);
                let bad = || ExprParseError {
                    at,
                    message: format!("bad number {text}"),
                };
                Ok(Node::Lit(if float {
                    Val::F(text.parse::<f32>().map_err(|_| bad())? as f64)
                } else {
                    Val::I(text.parse::<i32>().map_err(|_| bad())?)
                }))
            }
            T::Sym("(") => {
                let e = self.disjunction()?;
                self.need(")")?;
                Ok(e)
            }
            T::Word(w) if w == "true" || w == "false" => Ok(Node::Lit(Val::B(w == "true"))),
            T::Word(w) if w == "if" => {
                let c = self.disjunction()?;
                let a = self.block()?;
                let (kw, _) = self.word()?;
                if kw != "else" {
                    return self.fail("expected else");
                }
                let b = if matches!(self.toks.get(self.at), Some((T::Word(w), _)) if w == "if") {
                    self.atom()?
                } else {
                    self.block()?
                };
                Ok(Node::Cond(Box::new(c), Box::new(a), Box::new(b)))
            }
            T::Word(w) => {
                if self.take("(") {
                    let mut args = vec![self.disjunction()?];
                    while self.take(",") {
                        args.push(self.disjunction()?);
                    }
                    self.need(")")?;
                    return Ok(Node::Fun(w, args));
                }
                if self.take("[") {
                    let i = self.disjunction()?;
                    self.need("]")?;
                    return Ok(Node::Read(w, Box::new(i)));
                }
                Ok(match w.as_str() {
                    "b" | "h" | "q" | "k" | "s" => Node::Var(w.chars().next().unwrap_or('s')),
                    _ => Node::Param(w),
                })
            }
            T::Sym(s) => Err(ExprParseError {
                at,
                message: format!("unexpected {s}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_masks_and_scores() {
        let p = ExprProgram::parse(
            "doc: [i32]; mask = doc[q] == doc[k] && k <= q; score = 50.0 * tanh(s / 50.0)",
        )
        .unwrap();
        let doc = [0, 0, 1, 1];
        let b = p.bind(&[("doc", ExprArg::Ints(&doc))]).unwrap();
        assert!(b.mask(0, 0, 1, 0));
        assert!(!b.mask(0, 0, 2, 1));
        assert!(!b.mask(0, 0, 0, 1));
        // Past the end, doc reads 0: position 9 is in document 0.
        assert!(b.mask(0, 0, 9, 1));
        assert!((b.score(10.0, 0, 0, 0, 0) - 50.0 * (0.2f64).tanh()).abs() < 1e-12);
    }

    #[test]
    fn int_arithmetic_wraps_and_division_by_zero_gives_zero() {
        let p = ExprProgram::parse("score = q * k + q / (k - k) + if q > 0 { 1 } else { 0.5 }")
            .unwrap();
        let b = p.bind(&[]).unwrap();
        assert_eq!(b.score(0.0, 0, 0, 65536, 65536), 1.0);
        assert_eq!(b.score(0.0, 0, 0, 0, 3), 0.5);
    }

    #[test]
    fn binding_checks_types() {
        let p = ExprProgram::parse("w: i32; mask = q - k < w").unwrap();
        assert!(p.bind(&[]).is_err());
        assert!(p.bind(&[("w", ExprArg::Float(1.0))]).is_err());
        assert!(p.bind(&[("w", ExprArg::Int(2))]).unwrap().mask(0, 0, 3, 2));
    }
}
