flashgen::attention_kernel! {
    pub struct Fast: dense, head_dim = 128, dtype = bf16, fast_math = true;
}

fn main() {}
