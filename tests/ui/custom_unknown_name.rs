flashgen::attention_kernel! {
    pub struct Documents: custom(mask = |b, h, q, k| doc[q] == doc[k] && k <= q), head_dim = 128, dtype = bf16;
}

fn main() {}
