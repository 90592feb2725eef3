flashgen::attention_kernel! {
    pub struct Decode: decode_dense, head_dim = 128, dtype = bf16, page_size = 48;
}

fn main() {}
