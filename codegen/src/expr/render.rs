//! Renders a checked definition to CUDA device code: `fg_custom_mask` and `fg_custom_score`
//! over the parameter struct `FgExprArgs` ([`super::args`]). Only this output reaches NVRTC:
//! names become fixed identifiers (`fg_q`, `fgx.s2`), literals are re-printed from
//! their values, and every operator maps to a fixed C form with the language's semantics
//! (wrapping 32-bit ints through unsigned arithmetic, guarded vector reads).

use super::{BinOp, CustomMods, Expr, Func, Kind, ParamType, Type, UnOp, Var};

/// The helpers the rendered expressions call. Ints wrap: C's signed overflow is undefined, so `+ - *` run on
/// unsigned values; `/` and `%` by zero give 0, `INT_MIN / -1` wraps. A vector read outside
/// `0..len` gives 0.
pub const PRELUDE: &str = r#"// User-defined mask and score modifier (the custom variant): the helpers of the rendered
// expressions.
__device__ __forceinline__ int fgx_add(int a, int b) { return (int)((unsigned)a + (unsigned)b); }
__device__ __forceinline__ int fgx_sub(int a, int b) { return (int)((unsigned)a - (unsigned)b); }
__device__ __forceinline__ int fgx_mul(int a, int b) { return (int)((unsigned)a * (unsigned)b); }
__device__ __forceinline__ int fgx_neg(int a) { return (int)(0u - (unsigned)a); }
__device__ __forceinline__ int fgx_div(int a, int b) { return b == 0 ? 0 : (b == -1 ? fgx_neg(a) : a / b); }
__device__ __forceinline__ int fgx_rem(int a, int b) { return (b == 0 || b == -1) ? 0 : a % b; }
__device__ __forceinline__ int fgx_abs(int a) { return a < 0 ? fgx_neg(a) : a; }
__device__ __forceinline__ int fgx_min(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int fgx_max(int a, int b) { return a > b ? a : b; }
__device__ __forceinline__ int fgx_load_i(const void* v, int len, int i) {
    return (unsigned)i < (unsigned)len ? __ldg(static_cast<const int*>(v) + i) : 0;
}
__device__ __forceinline__ float fgx_load_f(const void* v, int len, int i) {
    return (unsigned)i < (unsigned)len ? __ldg(static_cast<const float*>(v) + i) : 0.f;
}
"#;

/// The helpers ([`PRELUDE`]) and device functions of a definition: `fg_custom_mask(args, b, h, q, k)`
/// (true without a mask), `fg_custom_score(args, s, b, h, q, k)` (`s` without a score
/// modifier), and the flags `FG_CUSTOM_HAS_MASK`, `FG_CUSTOM_HAS_SCORE`.
pub fn definition(mods: &CustomMods) -> String {
    let mask = mods.mask().map_or("true".to_string(), |e| expr(e, mods));
    let score = mods.score().map_or("fg_s".to_string(), |e| expr(e, mods));
    format!(
        "{PRELUDE}// {canonical}\n\
         constexpr bool FG_CUSTOM_HAS_MASK = {has_mask};\n\
         constexpr bool FG_CUSTOM_HAS_SCORE = {has_score};\n\
         __device__ __forceinline__ bool fg_custom_mask(const FgExprArgs& fgx, int fg_b, int fg_h, int fg_q, int fg_k) {{\n\
         \x20   (void)fgx; (void)fg_b; (void)fg_h; (void)fg_q; (void)fg_k;\n\
         \x20   return {mask};\n\
         }}\n\
         __device__ __forceinline__ float fg_custom_score(const FgExprArgs& fgx, float fg_s, int fg_b, int fg_h, int fg_q, int fg_k) {{\n\
         \x20   (void)fgx; (void)fg_s; (void)fg_b; (void)fg_h; (void)fg_q; (void)fg_k;\n\
         \x20   return {score};\n\
         }}\n",
        // The canonical text may hold `*/` but no newline: a line comment is safe.
        canonical = mods.canonical(),
        has_mask = mods.mask().is_some(),
        has_score = mods.score().is_some(),
    )
}

/// One expression as a C expression.
pub fn expr(e: &Expr, mods: &CustomMods) -> String {
    match &e.kind {
        Kind::Int(v) => format!("({v})"),
        Kind::Float(v) => format!("({v:?}f)"),
        Kind::Bool(v) => v.to_string(),
        Kind::Var(v) => match v {
            Var::B => "fg_b",
            Var::H => "fg_h",
            Var::Q => "fg_q",
            Var::K => "fg_k",
            Var::S => "fg_s",
        }
        .to_string(),
        Kind::Scalar(i) => {
            let p = &mods.params()[*i];
            match p.ty {
                ParamType::Float => format!("__int_as_float(fgx.s{})", p.slot),
                _ => format!("fgx.s{}", p.slot),
            }
        }
        Kind::Load(i, index) => {
            let p = &mods.params()[*i];
            let f = if p.ty == ParamType::FloatVec {
                "fgx_load_f"
            } else {
                "fgx_load_i"
            };
            format!(
                "{f}(fgx.v{s}, fgx.len{s}, {})",
                expr(index, mods),
                s = p.slot
            )
        }
        Kind::ToFloat(a) => format!("((float){})", expr(a, mods)),
        Kind::Unary(UnOp::Neg, a) if a.ty == Type::Int => format!("fgx_neg({})", expr(a, mods)),
        Kind::Unary(UnOp::Neg, a) => format!("(-{})", expr(a, mods)),
        Kind::Unary(UnOp::Not, a) => format!("(!{})", expr(a, mods)),
        Kind::Binary(op, a, b) => {
            let (x, y) = (expr(a, mods), expr(b, mods));
            let int = a.ty == Type::Int;
            match op {
                BinOp::Add if int => format!("fgx_add({x}, {y})"),
                BinOp::Sub if int => format!("fgx_sub({x}, {y})"),
                BinOp::Mul if int => format!("fgx_mul({x}, {y})"),
                BinOp::Div if int => format!("fgx_div({x}, {y})"),
                BinOp::Rem if int => format!("fgx_rem({x}, {y})"),
                BinOp::Rem => format!("fmodf({x}, {y})"),
                op => format!("({x} {} {y})", op.symbol()),
            }
        }
        Kind::Call(f, args) => {
            let a: Vec<String> = args.iter().map(|x| expr(x, mods)).collect();
            let int = e.ty == Type::Int;
            let name = match (f, int) {
                (Func::Min, true) => "fgx_min",
                (Func::Max, true) => "fgx_max",
                (Func::Abs, true) => "fgx_abs",
                (Func::Min, false) => "fminf",
                (Func::Max, false) => "fmaxf",
                (Func::Abs, false) => "fabsf",
                (Func::Tanh, _) => "tanhf",
                (Func::Exp, _) => "expf",
                (Func::Log, _) => "logf",
            };
            format!("{name}({})", a.join(", "))
        }
        Kind::If(c, a, b) => format!(
            "({} ? {} : {})",
            expr(c, mods),
            expr(a, mods),
            expr(b, mods)
        ),
    }
}
