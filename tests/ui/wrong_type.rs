flashgen::attention_kernel! {
    pub struct Text: dense, head_dim = "128", dtype = bf16;
    pub struct Number: dense, head_dim = 128, dtype = bf16, lse = 3;
}

fn main() {}
