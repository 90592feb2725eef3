//! flashgen-tuning: the autotuner. This crate is empty until the tuner lands; the runtime uses
//! the heuristic default tile config of `flashgen_codegen::default_tile` meanwhile.
