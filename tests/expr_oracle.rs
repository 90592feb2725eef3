//! The expression language read two ways: codegen's checker and evaluator (the kernel's
//! arithmetic) against the reference crate's own parser and interpreter, on random expressions
//! and inputs; and the canonical text as a fixed point that both read alike.

use flashgen::codegen::expr::{eval, Bindings, CustomMods, Value, VectorData};
use flashgen_reference::{ExprArg, ExprProgram, Rng};

const DECLS: &str = "w: i32; cap: f32; doc: [i32]; slope: [f32]";

struct Gen<'r> {
    rng: &'r mut Rng,
}

impl Gen<'_> {
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.rng.below(xs.len())]
    }

    fn int(&mut self, depth: u32) -> String {
        if depth == 0 || self.rng.bernoulli(0.3) {
            return match self.rng.below(4) {
                0 => self.rng.below(100).to_string(),
                1 => self.pick(&["b", "h", "q", "k"]).to_string(),
                2 => "w".to_string(),
                _ => format!("doc[{}]", self.pick(&["q", "k", "h", "q - k"])),
            };
        }
        let d = depth - 1;
        match self.rng.below(8) {
            0..=2 => {
                let op = self.pick(&["+", "-", "*"]);
                format!("({} {op} {})", self.int(d), self.int(d))
            }
            // Divisors read a variable, so none is a constant zero.
            3 => {
                let op = self.pick(&["/", "%"]);
                format!(
                    "({} {op} {})",
                    self.int(d),
                    self.pick(&["q", "k", "w", "(q - k)", "doc[k]"])
                )
            }
            4 => format!("-{}", self.int(d)),
            5 => format!(
                "{}({}, {})",
                self.pick(&["min", "max"]),
                self.int(d),
                self.int(d)
            ),
            6 => format!("abs({})", self.int(d)),
            _ => format!(
                "if {} {{ {} }} else {{ {} }}",
                self.boolean(d),
                self.int(d),
                self.int(d)
            ),
        }
    }

    fn float(&mut self, depth: u32) -> String {
        if depth == 0 || self.rng.bernoulli(0.3) {
            return match self.rng.below(5) {
                0 => format!("{:.2}", self.rng.uniform(0.1, 10.0)),
                1 => "s".to_string(),
                2 => "cap".to_string(),
                3 => format!("slope[{}]", self.pick(&["h", "b", "q"])),
                _ => self.int(0),
            };
        }
        let d = depth - 1;
        match self.rng.below(7) {
            0..=2 => {
                let op = self.pick(&["+", "-", "*"]);
                format!("({} {op} {})", self.float(d), self.float(d))
            }
            3 => format!("{} / {:.1}", self.float(d), self.rng.uniform(1.0, 9.0)),
            4 => format!("{}({})", self.pick(&["tanh", "abs"]), self.float(d)),
            5 => format!("exp(tanh({}))", self.float(d)),
            _ => format!(
                "{}({}, {})",
                self.pick(&["min", "max"]),
                self.float(d),
                self.int(d)
            ),
        }
    }

    /// Bools over int comparisons (exact in both readings).
    fn boolean(&mut self, depth: u32) -> String {
        if depth == 0 || self.rng.bernoulli(0.3) {
            let op = self.pick(&["==", "!=", "<", "<=", ">", ">="]);
            return format!("{} {op} {}", self.int(depth.min(1)), self.int(depth.min(1)));
        }
        let d = depth - 1;
        match self.rng.below(4) {
            0 => format!("({}) && ({})", self.boolean(d), self.boolean(d)),
            1 => format!("({}) || ({})", self.boolean(d), self.boolean(d)),
            2 => format!("!({})", self.boolean(d)),
            _ => format!("{} == ({})", self.pick(&["true", "false"]), self.boolean(d)),
        }
    }
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-3 * (1.0 + a.abs().max(b.abs()))
}

#[test]
fn codegen_and_oracle_agree_on_random_expressions() {
    let mut rng = Rng::fresh();
    let doc: Vec<i32> = (0..64).map(|i| i / 7).collect();
    let slope: Vec<f32> = (0..8).map(|i| 0.5f32.powi(i)).collect();
    for case in 0..1500 {
        let mut gen = Gen { rng: &mut rng };
        let mask = gen.boolean(3);
        let score = gen.float(3);
        // Every parameter used, so none is declared in vain.
        let text = format!("{DECLS}; mask = ({mask}) || w + doc[0] + b < -1000; score = {score} + 0.0 * cap * slope[0]");
        let mods = CustomMods::parse(&text).unwrap_or_else(|e| panic!("case {case}: {text}\n{e}"));
        // The canonical text is a fixed point, and the oracle reads it as it reads the original.
        let canonical = mods.canonical().to_string();
        let again = CustomMods::parse(&canonical).unwrap_or_else(|e| panic!("{canonical}\n{e}"));
        assert_eq!(again.canonical(), canonical);
        assert_eq!(again, mods);
        let original = ExprProgram::parse(&text).unwrap_or_else(|e| panic!("{text}\n{e}"));
        let printed = ExprProgram::parse(&canonical).unwrap_or_else(|e| panic!("{canonical}\n{e}"));
        for _ in 0..20 {
            let w = gen_int(&mut rng, -50, 50);
            let cap = rng.uniform(0.5, 60.0);
            let (b, h) = (rng.below(3) as i32, rng.below(8) as i32);
            let (q, k) = (gen_int(&mut rng, -20, 90), gen_int(&mut rng, -20, 90));
            let s = rng.uniform(-20.0, 20.0) as f32;
            let params = [
                VectorData::Scalar(Value::Float(cap as f32)),
                VectorData::I32(&doc),
                VectorData::F32(&slope),
                VectorData::Scalar(Value::Int(w)),
            ];
            let env = Bindings {
                b,
                h,
                q,
                k,
                s,
                params: &params,
            };
            let cg_mask = eval::eval(mods.mask().unwrap(), &env);
            let cg_score = eval::eval(mods.score().unwrap(), &env);
            let args = [
                ("w", ExprArg::Int(w)),
                ("cap", ExprArg::Float(cap as f32 as f64)),
                ("doc", ExprArg::Ints(&doc)),
                ("slope", ExprArg::Floats(&slope)),
            ];
            for program in [&original, &printed] {
                let bound = program.bind(&args).unwrap();
                let (b, h, q, k) = (b as i64, h as i64, q as i64, k as i64);
                assert_eq!(
                    Value::Bool(bound.mask(b, h, q, k)),
                    cg_mask,
                    "case {case}: mask of {canonical} at b{b} h{h} q{q} k{k} w{w}"
                );
                let want = bound.score(s as f64, b, h, q, k);
                let got = match cg_score {
                    Value::Float(v) => v as f64,
                    other => panic!("score is {other:?}"),
                };
                assert!(close(got, want), "case {case}: score of {canonical} at b{b} h{h} q{q} k{k} s{s} w{w} cap{cap}: {got} vs {want}");
            }
        }
    }
}

fn gen_int(rng: &mut Rng, lo: i32, hi: i32) -> i32 {
    lo + rng.below((hi - lo + 1) as usize) as i32
}

/// The oracle's custom attention with a causal mask is the reference's causal attention.
#[test]
fn custom_reference_matches_the_causal_reference() {
    use flashgen_reference::{
        attention_bshd, attention_custom, CustomMask, Layout, Mask, Shape, Tensor,
    };
    let mut rng = Rng::fresh();
    let shape = Shape::new(2, 37, 53, 4, 2, 32);
    let q = rng.normal_vec(shape.q_len());
    let k = rng.normal_vec(shape.kv_len());
    let v = rng.normal_vec(shape.kv_len());
    let want = attention_bshd(&q, &k, &v, &shape, &Mask::causal(), None).unwrap();
    let program = ExprProgram::parse("mask = k <= q").unwrap();
    let bound = program.bind(&[]).unwrap();
    let mask = |b: usize, h: usize, q: i64, k: i64| bound.mask(b as i64, h as i64, q, k);
    let custom = CustomMask {
        mask: &mask,
        score: None,
    };
    let (ql, kl): (Layout, Layout) = (shape.q_layout(), shape.kv_layout());
    let got = attention_custom(
        Tensor::new(&q, &ql),
        Tensor::new(&k, &kl),
        Tensor::new(&v, &kl),
        &custom,
        None,
    )
    .unwrap();
    for (a, b) in got.o.iter().zip(&want.o) {
        assert!((a - b).abs() < 1e-12);
    }
    for (a, b) in got.lse.iter().zip(&want.lse) {
        assert!(a == b || (a - b).abs() < 1e-12);
    }
}
