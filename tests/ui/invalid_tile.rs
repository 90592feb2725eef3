flashgen::attention_kernel! {
    pub struct TwoWarps: dense(causal), head_dim = 128, dtype = bf16, tile = m128n64w2s1;
    pub struct TooBig: dense, head_dim = 256, dtype = bf16,
        tile(block_m = 128, block_n = 128, warps = 4, stages = 2);
}

fn main() {}
