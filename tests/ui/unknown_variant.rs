flashgen::attention_kernel! {
    pub struct Sliding: sliding_window(window = 512), head_dim = 128, dtype = bf16;
}

fn main() {}
