//! Spec and arch text: parsing never panics, and whatever parses writes back to itself.

#![no_main]

use flashgen_codegen::{parse_arch, parse_spec, Arch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(arch) = parse_arch(text) {
        assert!(arch.is_known(), "{text:?} parsed as {arch}");
        assert_eq!(parse_arch(&arch.sm_name()), Ok(arch));
    }
    for arch in [Arch::SM80, Arch::SM90] {
        if let Ok(spec) = parse_spec(text, arch) {
            let written = spec.to_string();
            assert_eq!(
                parse_spec(&written, arch),
                Ok(spec),
                "{text:?} -> {written:?}"
            );
        }
    }
});
