flashgen::attention_kernel! {
    pub struct Windowed: custom(mask = |b, h, q, k| q as i64 - k < 128), head_dim = 128, dtype = bf16;
}

fn main() {}
