//! flashgen-runtime
