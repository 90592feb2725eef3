flashgen::attention_kernel! {
    pub struct Empty: block_sparse(block_q = 0, block_k = 128), head_dim = 128, dtype = bf16;
}

fn main() {}
