use super::*;

fn canon(text: &str) -> String {
    match CustomMods::parse(text) {
        Ok(m) => m.canonical().to_string(),
        Err(e) => panic!("{text}: {e}"),
    }
}

fn err(text: &str) -> ExprError {
    match CustomMods::parse(text) {
        Ok(m) => panic!("{text} parsed: {}", m.canonical()),
        Err(e) => e,
    }
}

#[test]
fn canonical_text_ignores_spacing_parentheses_and_declaration_order() {
    let a = canon("doc:[i32];mask=doc[q]==doc[k]&&(k<=q)");
    let b = canon("  mask = ((doc[q] == doc[k])) && k <= q ;\n doc : [ i32 ] ;");
    assert_eq!(a, b);
    assert_eq!(a, "doc: [i32]; mask = doc[q] == doc[k] && k <= q");
    let c = canon("w: i32; cap: f32; mask = q - k < w; score = cap * tanh(s / cap)");
    assert_eq!(
        c,
        "cap: f32; w: i32; mask = q - k < w; score = cap * tanh(s / cap)"
    );
    // Floats print in their shortest round-trip form.
    assert_eq!(canon("score = s * 50."), "score = s * 50.0");
    assert_eq!(canon("score = s * 5e1"), "score = s * 50.0");
    assert_eq!(canon("score = s * 0.000001"), "score = s * 1e-6");
}

#[test]
fn canonical_text_keeps_the_tree() {
    for (text, want) in [
        ("mask = (q - k) - 1 < 0", "mask = q - k - 1 < 0"),
        ("mask = q - (k - 1) < 0", "mask = q - (k - 1) < 0"),
        ("mask = q * (k + 1) > 2", "mask = q * (k + 1) > 2"),
        ("mask = (q < k) == (k < 3)", "mask = (q < k) == (k < 3)"),
        (
            "mask = !(q < k) || k == 0 && q == 1",
            "mask = !(q < k) || k == 0 && q == 1",
        ),
        (
            "mask = (!(q < k) || k == 0) && q == 1",
            "mask = (!(q < k) || k == 0) && q == 1",
        ),
        ("mask = -(-q) < - -k", "mask = --q < --k"),
        (
            "mask = 1 + (if q > 0 { 1 } else { 2 }) > k",
            "mask = 1 + (if q > 0 { 1 } else { 2 }) > k",
        ),
        (
            "score = if q < 1 { s } else if q < 2 { 2 * s } else { 0 }",
            "score = if q < 1 { s } else if q < 2 { 2 * s } else { 0 }",
        ),
        (
            "score = min(s, 3) + max(1, abs(q - k))",
            "score = min(s, 3) + max(1, abs(q - k))",
        ),
    ] {
        assert_eq!(canon(text), want, "{text}");
        // The canonical text is a fixed point.
        assert_eq!(canon(want), want);
    }
}

#[test]
fn types_follow_the_promotion_rules() {
    let m = CustomMods::parse("score = q / 2 + s").unwrap();
    let e = m.score().unwrap();
    assert_eq!(e.ty, Type::Float);
    let Kind::Binary(BinOp::Add, a, _) = &e.kind else {
        panic!()
    };
    // `q / 2` is integer division, promoted as a whole.
    assert!(
        matches!(&a.kind, Kind::ToFloat(inner) if matches!(inner.kind, Kind::Binary(BinOp::Div, ..)))
    );
    assert_eq!(
        CustomMods::parse("score = q - k")
            .unwrap()
            .score()
            .unwrap()
            .ty,
        Type::Float
    );
    assert_eq!(
        CustomMods::parse("mask = abs(q - k) < 3")
            .unwrap()
            .mask()
            .unwrap()
            .ty,
        Type::Bool
    );
    // An int score is promoted to float.
    let m = CustomMods::parse("score = 3").unwrap();
    assert!(matches!(m.score().unwrap().kind, Kind::ToFloat(_)));
}

/// Each error kind with the token it points at.
#[test]
fn errors_point_at_the_offending_token() {
    let cases: &[(&str, ErrorKind, &str)] = &[
        ("mask = q @ k", ErrorKind::UnexpectedChar, "@"),
        ("mask = q < k ? 1 : 0", ErrorKind::UnexpectedChar, "?"),
        ("mask = q < k)", ErrorKind::UnexpectedToken, ")"),
        ("mask = q < k < 3", ErrorKind::UnexpectedToken, "<"),
        ("mask = q <", ErrorKind::UnexpectedEnd, ""),
        ("mask = 1.0f32 < s", ErrorKind::BadLiteral, "1.0f32"),
        ("score = s * 1e60", ErrorKind::BadLiteral, "1e60"),
        ("mask = q < 3000000000", ErrorKind::IntRange, "3000000000"),
        ("mask = q < window", ErrorKind::UnknownName, "window"),
        ("mask = sqrt(q) < 2", ErrorKind::UnknownFunction, "sqrt"),
        ("mask = min(q) < 2", ErrorKind::Arity, "min(q)"),
        ("mask = tanh(q, k) < 2", ErrorKind::Arity, "tanh(q, k)"),
        ("mask = q + (k < 2)", ErrorKind::Type, "(k < 2)"),
        ("mask = q && k", ErrorKind::Type, "q"),
        ("mask = !q", ErrorKind::Type, "!q"),
        ("mask = q + k", ErrorKind::Type, "q + k"),
        ("score = q < k", ErrorKind::Type, "q < k"),
        ("mask = if q { true } else { false }", ErrorKind::Type, "q"),
        (
            "mask = if q < 1 { true } else { 1 }",
            ErrorKind::Type,
            "if q < 1 { true } else { 1 }",
        ),
        ("v: [f32]; mask = v[1.5] > 0", ErrorKind::Type, "1.5"),
        (
            "mask = q / (2 - 2) < 1",
            ErrorKind::DivisionByZero,
            "(2 - 2)",
        ),
        ("mask = q % 0 < 1", ErrorKind::DivisionByZero, "0"),
        ("score = s / 0.0", ErrorKind::DivisionByZero, "0.0"),
        ("mask = s > 0", ErrorKind::ScoreInMask, "s"),
        ("doc: [i32]; mask = doc == k", ErrorKind::Indexing, "doc"),
        ("w: i32; mask = w[q] == k", ErrorKind::Indexing, "w"),
        ("w: i64; mask = w == k", ErrorKind::Declaration, "i64"),
        ("w: i32; mask = q == k", ErrorKind::Declaration, "w"),
        ("w: i32; w: f32; mask = q == w", ErrorKind::Declaration, "w"),
        ("q: i32; mask = q == k", ErrorKind::Declaration, "q"),
        (
            "mask = q == k; mask = q < k",
            ErrorKind::Declaration,
            "mask",
        ),
    ];
    for (text, kind, token) in cases {
        let e = err(text);
        assert_eq!(e.kind, *kind, "{text}: {e}");
        assert_eq!(e.token(), *token, "{text}: {e}");
    }
}

#[test]
fn error_display_draws_a_caret_under_the_token() {
    let e = err("mask = doc[q] == k");
    assert_eq!(
        e.to_string(),
        "unknown name `doc`; known names: b, h, q, k\n  mask = doc[q] == k\n         ^^^"
    );
    // Separate texts: the error points into the text it was found in.
    let e = CustomMods::new(&[], Some("q >= k"), Some("s * tanh(x)")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::UnknownName);
    assert!(e.to_string().ends_with("s * tanh(x)\n           ^"), "{e}");
}

#[test]
fn separate_texts_build_the_same_definition() {
    let a = CustomMods::new(
        &[("slope", ParamType::FloatVec)],
        Some("k <= q"),
        Some("s + slope[h] * (k - q)"),
    )
    .unwrap();
    let b =
        CustomMods::parse("slope: [f32]; score = s + slope[h] * (k - q); mask = k <= q").unwrap();
    assert_eq!(a.canonical(), b.canonical());
    assert_eq!(a.digest(), b.digest());
    assert!(a.uses(Var::H) && !a.uses(Var::B));
}

#[test]
fn evaluation_wraps_ints_and_guards_reads() {
    let m = CustomMods::parse("v: [i32]; w: i32; score = (q * k) + v[q] + w / k + k % 0 + 0 * s")
        .unwrap_err();
    assert_eq!(m.kind, ErrorKind::DivisionByZero);
    let m = CustomMods::parse("v: [i32]; w: i32; score = q * k + v[q] + w / k + 0 * s").unwrap();
    let data = [7, 8, 9];
    let params = [VectorData::I32(&data), VectorData::Scalar(Value::Int(10))];
    let at = |q: i32, k: i32| {
        let env = Bindings {
            b: 0,
            h: 0,
            q,
            k,
            s: 1.0,
            params: &params,
        };
        eval::eval(m.score().unwrap(), &env)
    };
    assert_eq!(at(2, 3), Value::Float((6 + 9 + 3) as f32));
    // Out of range: the read gives 0; division by a zero value gives 0.
    assert_eq!(at(5, 0), Value::Float(0.0));
    assert_eq!(at(-1, 1), Value::Float((-1 + 10) as f32));
    // 65536 * 65536 wraps to 0 in 32 bits.
    assert_eq!(at(65536, 65536), Value::Float(0.0));
}

#[test]
fn rendered_code_uses_only_fixed_forms() {
    let m = CustomMods::parse(
        "doc: [i32]; cap: f32; mask = doc[q] == doc[k] && k <= q; score = cap * tanh(s / cap)",
    )
    .unwrap();
    let code = m.render_cuda();
    assert!(
        code.contains(
            "return (fgx_load_i(fgx.v0, fgx.len0, fg_q) == fgx_load_i(fgx.v0, fgx.len0, fg_k)) && (fg_k <= fg_q);"
        ) || code.contains(
            "return ((fgx_load_i(fgx.v0, fgx.len0, fg_q) == fgx_load_i(fgx.v0, fgx.len0, fg_k)) && (fg_k <= fg_q));"
        ),
        "{code}"
    );
    assert!(
        code.contains("(__int_as_float(fgx.s0) * tanhf((fg_s / __int_as_float(fgx.s0))))"),
        "{code}"
    );
    assert!(code.contains("FG_CUSTOM_HAS_SCORE = true"));
}
