//! Compile-fail tests of `attention_kernel!`: each file under tests/ui holds one class of
//! mistake, and its `.stderr` the expected error, pointing at the offending token.
//! Regenerate after a deliberate message change with `TRYBUILD=overwrite cargo test --test macro_ui`.

use std::process::Command;

#[test]
fn mistakes_are_compile_errors_on_the_offending_token() {
    // trybuild compiles the cases with cargo (`$CARGO`, else `cargo` on the PATH); a test binary
    // carried to a machine without a toolchain has nothing to compile them with.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    if Command::new(&cargo).arg("--version").output().is_err() {
        eprintln!("skipped: no cargo to compile the UI cases with");
        return;
    }
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
