//! flashgen-macros: the `attention_kernel!` proc-macro. This crate is empty until the macro
//! lands; kernels are declared through `flashgen_runtime` meanwhile.
