//! f64 CPU reference of the attention semantics in DESIGN.md.
