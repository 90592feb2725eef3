//! The canonical text of checked expressions: one space around binary operators, the fewest
//! parentheses that keep the tree (an `if` inside an operator is always parenthesised), floats
//! in Rust's shortest round-trip form (`50.0`, `1e-7`). Implicit promotions print as nothing,
//! so the text parses back to the same tree.

use super::{CustomMods, Expr, Kind, UnOp};

/// `name: type; ..; mask = ..; score = ..`.
pub fn definition(mods: &CustomMods) -> String {
    let mut items: Vec<String> = mods
        .params()
        .iter()
        .map(|p| format!("{}: {}", p.name, p.ty.name()))
        .collect();
    if let Some(m) = mods.mask() {
        items.push(format!("mask = {}", expr(m, mods)));
    }
    if let Some(s) = mods.score() {
        items.push(format!("score = {}", expr(s, mods)));
    }
    items.join("; ")
}

/// One expression's canonical text.
pub fn expr(e: &Expr, mods: &CustomMods) -> String {
    let mut out = String::new();
    write(e, mods, &mut out);
    out
}

/// The precedence an expression prints at: binary operators theirs, `if` the lowest, unary
/// operators above every binary one, atoms the highest.
fn prec(e: &Expr) -> u8 {
    match &e.kind {
        Kind::ToFloat(a) => prec(a),
        Kind::Binary(op, ..) => op.precedence(),
        Kind::If(..) => 0,
        Kind::Unary(..) => 6,
        _ => 7,
    }
}

fn is_comparison(e: &Expr) -> bool {
    match &e.kind {
        Kind::ToFloat(a) => is_comparison(a),
        Kind::Binary(op, ..) => op.is_comparison(),
        _ => false,
    }
}

fn operand(e: &Expr, parens: bool, mods: &CustomMods, out: &mut String) {
    if parens {
        out.push('(');
        write(e, mods, out);
        out.push(')');
    } else {
        write(e, mods, out);
    }
}

fn write(e: &Expr, mods: &CustomMods, out: &mut String) {
    match &e.kind {
        Kind::Int(v) => out.push_str(&v.to_string()),
        Kind::Float(v) => out.push_str(&format!("{v:?}")),
        Kind::Bool(v) => out.push_str(if *v { "true" } else { "false" }),
        Kind::Var(v) => out.push_str(v.name()),
        Kind::Scalar(i) => out.push_str(&mods.params()[*i].name),
        Kind::Load(i, index) => {
            out.push_str(&mods.params()[*i].name);
            out.push('[');
            write(index, mods, out);
            out.push(']');
        }
        Kind::ToFloat(a) => write(a, mods, out),
        Kind::Unary(op, a) => {
            out.push_str(match op {
                UnOp::Neg => "-",
                UnOp::Not => "!",
            });
            // Binary and `if` operands in parentheses (`--x` lexes as two minus signs).
            operand(a, prec(a) < 6, mods, out);
        }
        Kind::Binary(op, a, b) => {
            let p = op.precedence();
            let left = prec(a) < p || (op.is_comparison() && is_comparison(a)) || prec(a) == 0;
            let right = prec(b) <= p || prec(b) == 0;
            operand(a, left, mods, out);
            out.push(' ');
            out.push_str(op.symbol());
            out.push(' ');
            operand(b, right, mods, out);
        }
        Kind::Call(f, args) => {
            out.push_str(f.name());
            out.push('(');
            for (n, a) in args.iter().enumerate() {
                if n > 0 {
                    out.push_str(", ");
                }
                write(a, mods, out);
            }
            out.push(')');
        }
        Kind::If(c, a, b) => {
            out.push_str("if ");
            write(c, mods, out);
            out.push_str(" { ");
            write(a, mods, out);
            out.push_str(" } else ");
            if matches!(inner(b), Kind::If(..)) {
                write(b, mods, out);
            } else {
                out.push_str("{ ");
                write(b, mods, out);
                out.push_str(" }");
            }
        }
    }
}

fn inner(e: &Expr) -> &Kind {
    match &e.kind {
        Kind::ToFloat(a) => inner(a),
        k => k,
    }
}
