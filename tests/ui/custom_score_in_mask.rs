flashgen::attention_kernel! {
    pub struct Bad: custom(mask = |b, h, q_idx, kv_idx| q_idx >= kv_idx && s > 0.0), head_dim = 64, dtype = f16;
}

fn main() {}
