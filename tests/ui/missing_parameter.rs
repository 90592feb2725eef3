flashgen::attention_kernel! {
    pub struct NoWindow: streaming(sink = 128), head_dim = 128, dtype = bf16;
}

fn main() {}
