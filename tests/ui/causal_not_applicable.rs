flashgen::attention_kernel! {
    pub struct AlreadyCausal: streaming(sink = 4, window = 256, causal), head_dim = 64, dtype = f16;
}

fn main() {}
