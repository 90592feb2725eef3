//! The kernel's launch ABI: one parameter struct passed by value, byte for byte the
//! `FlashParams` of `templates/attention_fwd.cu` (version `KERNEL_ABI_VERSION`).

use crate::custom::ExprArgs;
use cudarc::driver::DeviceRepr;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FlashParams {
    pub q: u64,
    pub k: u64,
    pub v: u64,
    pub o: u64,
    pub lse: u64,
    pub cu_seqlens_q: u64,
    pub cu_seqlens_k: u64,
    pub q_batch_stride: i64,
    pub q_row_stride: i64,
    pub q_head_stride: i64,
    pub k_batch_stride: i64,
    pub k_row_stride: i64,
    pub k_head_stride: i64,
    pub v_batch_stride: i64,
    pub v_row_stride: i64,
    pub v_head_stride: i64,
    pub o_batch_stride: i64,
    pub o_row_stride: i64,
    pub o_head_stride: i64,
    pub lse_batch_stride: i64,
    pub lse_head_stride: i64,
    pub batch: i32,
    pub heads_q: i32,
    pub heads_kv: i32,
    pub seqlen_q: i32,
    pub seqlen_k: i32,
    pub scale_log2: f32,
    pub sink: i32,
    pub window: i32,
    pub block_q: i32,
    pub block_k: i32,
    pub list_heads: i32,
    pub max_blocks: i32,
    pub list_batch_stride: i64,
    pub list_head_stride: i64,
    pub kv_count: u64,
    pub kv_index: u64,
    pub head_kind: u64,
    pub head_order: u64,
    pub prefix_k: u64,
    pub prefix_v: u64,
    pub prefix_k_batch_stride: i64,
    pub prefix_k_row_stride: i64,
    pub prefix_k_head_stride: i64,
    pub prefix_v_batch_stride: i64,
    pub prefix_v_row_stride: i64,
    pub prefix_v_head_stride: i64,
    pub prefix_len: i32,
    pub kv_full: u64,
    pub expr: ExprArgs,
}

// SAFETY: plain old data with the C layout the kernel declares.
unsafe impl DeviceRepr for FlashParams {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// (field, offset) of every field, in declaration order.
    macro_rules! offsets {
        ($($field:ident),* $(,)?) => {
            vec![$((stringify!($field), offset_of!(FlashParams, $field))),*]
        };
    }

    fn field_offsets() -> Vec<(&'static str, usize)> {
        offsets!(
            q,
            k,
            v,
            o,
            lse,
            cu_seqlens_q,
            cu_seqlens_k,
            q_batch_stride,
            q_row_stride,
            q_head_stride,
            k_batch_stride,
            k_row_stride,
            k_head_stride,
            v_batch_stride,
            v_row_stride,
            v_head_stride,
            o_batch_stride,
            o_row_stride,
            o_head_stride,
            lse_batch_stride,
            lse_head_stride,
            batch,
            heads_q,
            heads_kv,
            seqlen_q,
            seqlen_k,
            scale_log2,
            sink,
            window,
            block_q,
            block_k,
            list_heads,
            max_blocks,
            list_batch_stride,
            list_head_stride,
            kv_count,
            kv_index,
            head_kind,
            head_order,
            prefix_k,
            prefix_v,
            prefix_k_batch_stride,
            prefix_k_row_stride,
            prefix_k_head_stride,
            prefix_v_batch_stride,
            prefix_v_row_stride,
            prefix_v_head_stride,
            prefix_len,
            kv_full,
            expr,
        )
    }

    /// The template's `struct FlashParams { ... };`, as the kernel sees it.
    fn template_struct() -> String {
        let (_, text) = flashgen_codegen::render::KERNEL_TEMPLATE;
        let start = text
            .find("struct FlashParams {")
            .expect("the template declares struct FlashParams");
        let len = text[start..]
            .find("};")
            .expect("struct FlashParams is closed")
            + 2;
        text[start..start + len].to_string()
    }

    /// The fields the template declares, in order, with their C sizes (pointers 8 bytes).
    fn template_fields(text: &str) -> Vec<(String, usize)> {
        let body = &text[text.find('{').unwrap() + 1..text.rfind('}').unwrap()];
        let mut fields = Vec::new();
        for decl in body.lines().map(|l| l.split("//").next().unwrap_or("")) {
            let decl = decl.trim();
            let Some(decl) = decl.strip_suffix(';') else {
                assert!(decl.is_empty(), "unexpected line in FlashParams: {decl}");
                continue;
            };
            let mut names = decl.split(',').map(str::trim);
            let first = names.next().unwrap();
            let split = first.rfind([' ', '*']).unwrap() + 1;
            let (ty, first_name) = first.split_at(split);
            let base = ty.trim().trim_end_matches('*').trim();
            let base = base.strip_prefix("const ").unwrap_or(base);
            let pointer = ty.contains('*');
            for name in std::iter::once(first_name).chain(names) {
                let pointer = pointer || name.starts_with('*');
                let size = match (pointer, base) {
                    (true, _) => 8,
                    (false, "fg_i64" | "long long") => 8,
                    (false, "int" | "float") => 4,
                    (false, "FgExprArgs") => std::mem::size_of::<ExprArgs>(),
                    (false, other) => panic!("FlashParams field {name}: unknown type {other}"),
                };
                fields.push((name.trim_start_matches('*').to_string(), size));
            }
        }
        fields
    }

    /// The template's fields laid out by the C rules (each field at a multiple of its size)
    /// are the Rust struct's, name for name and byte for byte; NVRTC confirms size and
    /// alignment of the template's own declaration. Checked without a GPU.
    #[test]
    fn every_field_matches_the_template_struct() {
        let text = template_struct();
        let mut offset = 0usize;
        let mut c_layout = Vec::new();
        for (name, size) in template_fields(&text) {
            // Structs align to their widest member (8 bytes here).
            offset = offset.next_multiple_of(size.min(8));
            c_layout.push((name, offset));
            offset += size;
        }
        let rust: Vec<(String, usize)> = field_offsets()
            .into_iter()
            .map(|(n, o)| (n.to_string(), o))
            .collect();
        assert_eq!(c_layout, rust, "FlashParams fields: template vs Rust");
        assert_eq!(offset.next_multiple_of(8), size_of::<FlashParams>());

        let code = format!(
            "typedef long long fg_i64;\n{}\n{text}\n\
             static_assert(sizeof(FlashParams) == {}, \"size\");\n\
             static_assert(alignof(FlashParams) == {}, \"alignment\");\n\
             extern \"C\" __global__ void flashgen_abi_check(const FlashParams p) {{}}\n",
            flashgen_codegen::expr::render::PRELUDE,
            size_of::<FlashParams>(),
            std::mem::align_of::<FlashParams>()
        );
        let source = flashgen_codegen::KernelSource {
            kernel_name: "flashgen_abi_check".into(),
            code,
            threads: 32,
            shared_bytes: 0,
        };
        if let Err(e) = crate::compile::compile(&source, flashgen_codegen::Arch::SM80) {
            panic!("the Rust FlashParams differs from the template's:\n{e}");
        }
    }

    #[test]
    fn layout_matches_the_template() {
        assert_eq!(size_of::<FlashParams>(), 472);
        assert_eq!(offset_of!(FlashParams, kv_full), 336);
        assert_eq!(offset_of!(FlashParams, expr), 344);
        assert_eq!(offset_of!(FlashParams, q_batch_stride), 56);
        assert_eq!(offset_of!(FlashParams, batch), 168);
        assert_eq!(offset_of!(FlashParams, scale_log2), 188);
        assert_eq!(offset_of!(FlashParams, sink), 192);
        assert_eq!(offset_of!(FlashParams, list_batch_stride), 216);
        assert_eq!(offset_of!(FlashParams, head_order), 256);
        assert_eq!(offset_of!(FlashParams, prefix_k), 264);
        assert_eq!(offset_of!(FlashParams, prefix_len), 328);
    }
}
