//! Property test of the text form: every valid spec, written and parsed back, is itself.

use flashgen_codegen::*;
use proptest::prelude::*;
use proptest::sample::select;

/// A valid spec on a known arch: the flags the variant takes and a tile of its search space.
fn valid_spec() -> impl Strategy<Value = (KernelSpec, Arch)> {
    let flags = (
        select(Variant::ALL.to_vec()),
        select(HEAD_DIMS.to_vec()),
        select(DType::ALL.to_vec()),
        any::<(bool, bool, bool)>(),
        select(Arch::KNOWN.to_vec()),
    );
    flags
        .prop_map(|(variant, d, dtype, (causal, lse, varlen), arch)| {
            let causal = causal && variant.accepts_causal();
            let varlen = varlen && variant != Variant::Apb;
            let spec = AttentionSpec::new(variant, d, dtype, causal)
                .with_lse(lse)
                .with_varlen(varlen);
            (spec, arch)
        })
        .prop_flat_map(|(spec, arch)| {
            let tiles = search_space(&spec, arch);
            (select(tiles), Just(spec), Just(arch))
        })
        .prop_map(|(tile, spec, arch)| (spec.with_tile(tile), arch))
}

proptest! {
    // A few hundred cases cover the space well (5 variants x 5 head dims x 2 dtypes x flags x
    // 10 archs x tiles) and run in well under a second.
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn written_specs_parse_back_to_themselves((spec, arch) in valid_spec()) {
        prop_assert!(validate(&spec, arch).is_ok());
        let text = spec.to_string();
        prop_assert_eq!(parse_spec(&text, arch), Ok(spec), "{}", text);
        // Spaces around parts do not matter.
        let spaced = text.replace(',', " , ");
        prop_assert_eq!(parse_spec(&spaced, arch), Ok(spec), "{}", spaced);
        // The spec without its tile has its own text, which parses back to it, is the kernel's
        // key and is the kernel's text up to the tile.
        let attention = spec.attention();
        let key = attention.to_string();
        prop_assert_eq!(parse_attention_spec(&key), Ok(attention), "{}", key);
        prop_assert_eq!(&key, &spec.key());
        prop_assert_eq!(format!("{key},{}", spec.tile), text.clone());
        prop_assert_eq!(attention.with_tile(spec.tile), spec);
        prop_assert!(parse_attention_spec(&text).is_err(), "{}", text);
    }

    #[test]
    fn written_archs_parse_back_to_themselves(arch in select(Arch::KNOWN.to_vec())) {
        prop_assert_eq!(parse_arch(&arch.sm_name()), Ok(arch));
        prop_assert_eq!(parse_arch(&format!("{}.{}", arch.major, arch.minor)), Ok(arch));
        prop_assert_eq!(parse_arch(&format!("{}{}", arch.major, arch.minor)), Ok(arch));
    }

    #[test]
    fn any_text_parses_or_fails_without_panicking(text in "[a-z0-9.,_ -]{0,40}") {
        let _ = parse_spec(&text, Arch::SM90);
        let _ = parse_arch(&text);
    }
}
