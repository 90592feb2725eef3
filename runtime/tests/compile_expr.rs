//! The expression renderer's CUDA compiles with NVRTC for sm_80 and sm_90a (needs libnvrtc, no
//! GPU): every operator, function, parameter kind and type promotion of the language, each
//! definition wrapped in a tiny kernel that calls its mask and score functions.

use flashgen_codegen::expr::{args, CustomMods};
use flashgen_codegen::{Arch, KernelSource};
use flashgen_runtime::compile;

const DEFINITIONS: &[&str] = &[
    "mask = k <= q",
    "doc: [i32]; mask = doc[q] == doc[k] && k <= q",
    "w: i32; mask = k <= q && q - k < w",
    "p: i32; mask = k < p || k <= q",
    "mask = (q - k) % 4 == 0 && k <= q",
    "score = 50.0 * tanh(s / 50.0)",
    "slope: [f32]; mask = k <= q; score = s + slope[h] * (k - q)",
    "bias: [f32]; score = s + bias[h]",
    "cap: f32; t: i32; score = if abs(q - k) > t { min(s, cap) } else { max(s, -cap) }",
    "score = exp(log(abs(s) + 1.0)) * (q / 3 % 5 - -k) + fmodlike(s)",
    "mask = !(q * 65536 == k) || b != h; score = s % 2.5 + min(q, k) + max(1, b) + abs(-h)",
    "x: [i32]; y: [f32]; mask = (x[x[q] + 1] >= 0) == (y[k] < 0.5); score = if true { s } else if false { 1 } else { y[0] }",
];

fn kernel(mods: &CustomMods) -> KernelSource {
    let code = format!(
        "typedef long long fg_i64;\n{}\n{}\n\
         extern \"C\" __global__ void flashgen_expr_check(const FgExprArgs args, float* out) {{\n\
         \x20   const int q = threadIdx.x, k = threadIdx.y;\n\
         \x20   const bool visible = fg_custom_mask(args, blockIdx.x, blockIdx.y, q, k);\n\
         \x20   out[q * 32 + k] = visible ? fg_custom_score(args, out[q * 32 + k], blockIdx.x, blockIdx.y, q, k) : -1.f;\n\
         }}\n",
        args::declaration(),
        mods.render_cuda()
    );
    KernelSource {
        kernel_name: "flashgen_expr_check".into(),
        code,
        threads: 1024,
        shared_bytes: 0,
    }
}

#[test]
fn rendered_definitions_compile_for_sm80_and_sm90a() {
    if !flashgen_runtime::libs::nvrtc_present() {
        eprintln!("libnvrtc is not loadable: skipped");
        return;
    }
    for text in DEFINITIONS {
        // A name the language does not know is rejected before anything is rendered.
        if text.contains("fmodlike") {
            assert!(CustomMods::parse(text).is_err());
            continue;
        }
        let mods = CustomMods::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        for arch in [Arch::SM80, Arch::SM90] {
            if let Err(e) = compile::compile(&kernel(&mods), arch) {
                panic!("{text} for {arch}:\n{}\n{e}", mods.render_cuda());
            }
        }
    }
}
