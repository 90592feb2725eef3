flashgen::attention_kernel! {
    pub struct Twice: dense, head_dim = 128, dtype = bf16, lse, head_dim = 64;
}

fn main() {}
