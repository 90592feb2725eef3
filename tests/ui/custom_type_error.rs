flashgen::attention_kernel! {
    pub struct Capped: custom(mask = |b, h, q, k| k <= q, score = |s, b, h, q, k| s * (q < k)), head_dim = 128, dtype = bf16;
}

fn main() {}
