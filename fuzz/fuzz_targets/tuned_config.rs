//! Tuned-config text: loading never panics, and what loads survives a write and a read with
//! no entry skipped.

#![no_main]

use flashgen_runtime::TunedConfig;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|text: &str| {
    let path = Path::new("fuzz.toml");
    if let Ok((config, _warnings)) = TunedConfig::from_toml_checked(text, path) {
        let (again, warnings) = TunedConfig::from_toml_checked(&config.to_toml(), path)
            .expect("a loaded config writes valid TOML");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(again.entries.len(), config.entries.len());
    }
});
