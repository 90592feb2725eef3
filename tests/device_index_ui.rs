//! Compile-fail tests: device index data (varlen offsets, block lists, head kinds) is built by
//! the runtime's upload calls only and cannot be changed afterwards, so the host copy a launch
//! is checked against is always the one the kernel reads.
//! Regenerate after a deliberate message change with
//! `TRYBUILD=overwrite cargo test --test device_index_ui`.

#[test]
fn device_index_data_cannot_be_built_or_changed_outside_the_runtime() {
    trybuild::TestCases::new().compile_fail("tests/ui-device-index/*.rs");
}
