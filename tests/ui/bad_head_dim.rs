flashgen::attention_kernel! {
    pub struct Odd: dense(causal), head_dim = 100, dtype = bf16;
}

fn main() {}
