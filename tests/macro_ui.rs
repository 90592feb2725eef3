//! Compile-fail tests of `attention_kernel!`: each file under tests/ui holds one class of
//! mistake, and its `.stderr` the expected error, pointing at the offending token.
//! Regenerate after a deliberate message change with `TRYBUILD=overwrite cargo test --test macro_ui`.

use std::process::Command;

#[test]
fn mistakes_are_compile_errors_on_the_offending_token() {
    // trybuild compiles the cases with cargo (`$CARGO`, else `cargo` on the PATH). Without one
    // the test fails: skipping would pass without checking anything.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let version = Command::new(&cargo).arg("--version").output();
    assert!(
        version.as_ref().is_ok_and(|o| o.status.success()),
        "no cargo to compile the UI cases with ({}): {version:?}",
        cargo.to_string_lossy()
    );
    let cases: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ui"))
        .expect("tests/ui")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "rs"))
        .collect();
    assert!(!cases.is_empty(), "no UI cases in tests/ui");
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
