flashgen::attention_kernel! {
    pub struct Decode: decode_streaming(sink = 128), head_dim = 128, dtype = bf16, page_size = 64;
}

fn main() {}
