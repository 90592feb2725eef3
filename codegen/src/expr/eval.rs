//! Evaluation of a checked expression on the CPU with the kernel's arithmetic: ints are 32-bit
//! and wrap, `/` and `%` truncate and give 0 for a zero divisor, floats are f32, a vector read
//! outside `0..len` gives 0. Used for constant folding (the division-by-zero check) and for the
//! CPU block classification the runtime's tests compare the GPU's with.

use super::{BinOp, Expr, Func, Kind, Param, Type, UnOp, Var};

/// A value of the language.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    Int(i32),
    Float(f32),
    Bool(bool),
}

impl Value {
    pub fn int(self) -> i32 {
        match self {
            Value::Int(v) => v,
            Value::Float(v) => v as i32,
            Value::Bool(v) => v as i32,
        }
    }

    pub fn float(self) -> f32 {
        match self {
            Value::Int(v) => v as f32,
            Value::Float(v) => v,
            Value::Bool(v) => v as i32 as f32,
        }
    }

    pub fn bool(self) -> bool {
        match self {
            Value::Bool(v) => v,
            Value::Int(v) => v != 0,
            Value::Float(v) => v != 0.0,
        }
    }
}

/// The value bound to a parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum VectorData<'a> {
    /// A scalar (`i32` or `f32` parameter).
    Scalar(Value),
    I32(&'a [i32]),
    F32(&'a [f32]),
}

/// The indices, the score and the parameters' values (indexed like
/// [`CustomMods::params`](super::CustomMods::params)).
#[derive(Clone, Copy, Debug)]
pub struct Bindings<'a> {
    pub b: i32,
    pub h: i32,
    pub q: i32,
    pub k: i32,
    pub s: f32,
    pub params: &'a [VectorData<'a>],
}

/// Evaluates `e`. A parameter without a value (an index past `params`) reads as 0.
pub fn eval(e: &Expr, env: &Bindings) -> Value {
    match &e.kind {
        Kind::Int(v) => Value::Int(*v),
        Kind::Float(v) => Value::Float(*v),
        Kind::Bool(v) => Value::Bool(*v),
        Kind::Var(v) => match v {
            Var::B => Value::Int(env.b),
            Var::H => Value::Int(env.h),
            Var::Q => Value::Int(env.q),
            Var::K => Value::Int(env.k),
            Var::S => Value::Float(env.s),
        },
        Kind::Scalar(i) => match env.params.get(*i) {
            Some(VectorData::Scalar(v)) => match e.ty {
                Type::Float => Value::Float(v.float()),
                _ => Value::Int(v.int()),
            },
            _ => zero(e.ty),
        },
        Kind::Load(i, index) => {
            let idx = eval(index, env).int();
            let at = usize::try_from(idx).ok();
            match (env.params.get(*i), at) {
                (Some(VectorData::I32(v)), Some(at)) if at < v.len() => Value::Int(v[at]),
                (Some(VectorData::F32(v)), Some(at)) if at < v.len() => Value::Float(v[at]),
                _ => zero(e.ty),
            }
        }
        Kind::ToFloat(a) => Value::Float(eval(a, env).int() as f32),
        Kind::Unary(UnOp::Neg, a) => match eval(a, env) {
            Value::Int(v) => Value::Int(v.wrapping_neg()),
            v => Value::Float(-v.float()),
        },
        Kind::Unary(UnOp::Not, a) => Value::Bool(!eval(a, env).bool()),
        Kind::Binary(BinOp::And, a, b) => Value::Bool(eval(a, env).bool() && eval(b, env).bool()),
        Kind::Binary(BinOp::Or, a, b) => Value::Bool(eval(a, env).bool() || eval(b, env).bool()),
        Kind::Binary(op, a, b) => binary(*op, eval(a, env), eval(b, env)),
        Kind::Call(f, args) => {
            let a = eval(&args[0], env);
            let b = args.get(1).map(|x| eval(x, env));
            match (f, a, b) {
                (Func::Min, Value::Int(x), Some(Value::Int(y))) => Value::Int(x.min(y)),
                (Func::Max, Value::Int(x), Some(Value::Int(y))) => Value::Int(x.max(y)),
                (Func::Min, x, Some(y)) => Value::Float(x.float().min(y.float())),
                (Func::Max, x, Some(y)) => Value::Float(x.float().max(y.float())),
                (Func::Abs, Value::Int(x), _) => Value::Int(x.wrapping_abs()),
                (Func::Abs, x, _) => Value::Float(x.float().abs()),
                (Func::Tanh, x, _) => Value::Float(x.float().tanh()),
                (Func::Exp, x, _) => Value::Float(x.float().exp()),
                (Func::Log, x, _) => Value::Float(x.float().ln()),
                (Func::Min | Func::Max, x, None) => x,
            }
        }
        Kind::If(c, a, b) => {
            if eval(c, env).bool() {
                eval(a, env)
            } else {
                eval(b, env)
            }
        }
    }
}

fn zero(ty: Type) -> Value {
    match ty {
        Type::Int => Value::Int(0),
        Type::Float => Value::Float(0.0),
        Type::Bool => Value::Bool(false),
    }
}

fn binary(op: BinOp, a: Value, b: Value) -> Value {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => match op {
            BinOp::Add => Value::Int(x.wrapping_add(y)),
            BinOp::Sub => Value::Int(x.wrapping_sub(y)),
            BinOp::Mul => Value::Int(x.wrapping_mul(y)),
            BinOp::Div => Value::Int(if y == 0 { 0 } else { x.wrapping_div(y) }),
            BinOp::Rem => Value::Int(if y == 0 { 0 } else { x.wrapping_rem(y) }),
            BinOp::Eq => Value::Bool(x == y),
            BinOp::Ne => Value::Bool(x != y),
            BinOp::Lt => Value::Bool(x < y),
            BinOp::Le => Value::Bool(x <= y),
            BinOp::Gt => Value::Bool(x > y),
            BinOp::Ge => Value::Bool(x >= y),
            BinOp::And | BinOp::Or => Value::Bool(false),
        },
        (Value::Bool(x), Value::Bool(y)) => Value::Bool(match op {
            BinOp::Eq => x == y,
            BinOp::Ne => x != y,
            _ => false,
        }),
        _ => {
            let (x, y) = (a.float(), b.float());
            match op {
                BinOp::Add => Value::Float(x + y),
                BinOp::Sub => Value::Float(x - y),
                BinOp::Mul => Value::Float(x * y),
                BinOp::Div => Value::Float(x / y),
                BinOp::Rem => Value::Float(x % y),
                BinOp::Eq => Value::Bool(x == y),
                BinOp::Ne => Value::Bool(x != y),
                BinOp::Lt => Value::Bool(x < y),
                BinOp::Le => Value::Bool(x <= y),
                BinOp::Gt => Value::Bool(x > y),
                BinOp::Ge => Value::Bool(x >= y),
                BinOp::And | BinOp::Or => Value::Bool(false),
            }
        }
    }
}

/// The value of an expression that reads no index, score or parameter; `None` otherwise.
pub fn eval_const(e: &Expr, params: &[Param]) -> Option<Value> {
    let _ = params;
    let reads = e.any(&|n| matches!(n.kind, Kind::Var(_) | Kind::Scalar(_) | Kind::Load(..)));
    if reads {
        return None;
    }
    let env = Bindings {
        b: 0,
        h: 0,
        q: 0,
        k: 0,
        s: 0.0,
        params: &[],
    };
    Some(eval(e, &env))
}
