//! The kernel's launch ABI (version `KERNEL_ABI_VERSION`): two parameters passed by value,
//! the shared [`FlashParams`], byte for byte the `FlashParams` of `templates/attention_fwd.cu`,
//! and the variant's own block ([`VariantBlock`]: the bytes of the `#[repr(C)]` struct the
//! variant declares in codegen, whose C declaration the renderer asserts against its layout).

use cudarc::driver::DeviceRepr;
use flashgen_codegen::block::{BlockValue, MAX_BLOCK_BYTES};
use std::any::TypeId;

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
}

// SAFETY: plain old data with the C layout the kernel declares.
unsafe impl DeviceRepr for FlashParams {}

/// A variant's parameter block as the kernel's second parameter: the bytes of one block value,
/// zero past its end. The launch passes the address of `bytes`; the driver copies
/// `sizeof(VariantParams)` bytes from it, which the block's static layout asserts make the
/// written struct's size.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VariantBlock {
    bytes: [u8; MAX_BLOCK_BYTES],
    len: usize,
    /// The Rust type written, so a reader of the wrong variant's block gets `None`.
    written: TypeId,
}

// SAFETY: plain bytes first (`repr(C)`), at least as many as the kernel's `VariantParams`
// occupies (codegen checks every registered block against `MAX_BLOCK_BYTES` at compile time).
unsafe impl DeviceRepr for VariantBlock {}

impl VariantBlock {
    /// The block of `value`.
    pub fn new<T: BlockValue>(value: &T) -> VariantBlock {
        const { assert!(std::mem::size_of::<T>() <= MAX_BLOCK_BYTES) };
        let len = std::mem::size_of::<T>();
        let mut bytes = [0; MAX_BLOCK_BYTES];
        value.write_to(&mut bytes[..len]);
        VariantBlock {
            bytes,
            len,
            written: TypeId::of::<T>(),
        }
    }

    /// The bytes the block value occupies.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The block value, if it is a `T` (the block of `T`'s variant).
    pub fn get<T: BlockValue>(&self) -> Option<T> {
        (self.written == TypeId::of::<T>()).then(|| T::read_from(self.bytes()))
    }
}

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
            offset = offset.next_multiple_of(size);
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
            "typedef long long fg_i64;\n{text}\n\
             static_assert(sizeof(FlashParams) == {}, \"size\");\n\
             static_assert(alignof(FlashParams) == {}, \"alignment\");\n\
             extern \"C\" __global__ void flashgen_abi_check(const FlashParams p) {{}}\n",
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
        assert_eq!(size_of::<FlashParams>(), 192);
        assert_eq!(offset_of!(FlashParams, q_batch_stride), 56);
        assert_eq!(offset_of!(FlashParams, batch), 168);
        assert_eq!(offset_of!(FlashParams, scale_log2), 188);
    }

    fn compile_probe(code: String) -> crate::error::Result<()> {
        let source = flashgen_codegen::KernelSource {
            kernel_name: "flashgen_block_check".into(),
            code,
            threads: 32,
            shared_bytes: 0,
        };
        crate::compile::compile(&source, flashgen_codegen::Arch::SM80).map(|_| ())
    }

    /// Every registered variant's block compiles with its layout asserts, and the asserts bite:
    /// a declaration whose offset differs from the Rust struct's fails to compile.
    #[test]
    fn every_variant_block_is_asserted_against_its_rust_layout() {
        for info in flashgen_codegen::REGISTRY {
            let decl = flashgen_codegen::block::declare(info.block);
            let probe = |decl: &str| {
                format!(
                    "typedef long long fg_i64;\n{decl}\n\
                     extern \"C\" __global__ void flashgen_block_check(const VariantParams vp) {{}}\n"
                )
            };
            if let Err(e) = compile_probe(probe(&decl)) {
                panic!("{}: its block does not compile:\n{e}", info.name);
            }
            let Some(last) = info.block.fields.last() else {
                continue;
            };
            // The last field one byte further than the Rust struct has it.
            let wrong = decl.replace(
                &format!("->{})) == {}", last.name, last.offset),
                &format!("->{})) == {}", last.name, last.offset + 1),
            );
            assert_ne!(wrong, decl, "{}: the offset assert is rendered", info.name);
            assert!(
                compile_probe(probe(&wrong)).is_err(),
                "{}: a wrong offset compiles",
                info.name
            );
        }
    }

    #[test]
    fn a_block_holds_its_value_and_only_its_type_reads_it() {
        use flashgen_codegen::variants::{apb, streaming};
        let s = streaming::Params {
            streaming: streaming::StreamingArgs {
                sink: 4,
                window: 64,
            },
        };
        let b = VariantBlock::new(&s);
        assert_eq!(b.bytes(), [4, 0, 0, 0, 64, 0, 0, 0]);
        assert_eq!(b.get::<streaming::Params>(), Some(s));
        assert_eq!(b.get::<apb::Params>(), None);
        // The launch passes the address of the block: its bytes come first.
        assert_eq!(std::ptr::from_ref(&b).cast::<u8>(), b.bytes().as_ptr());
    }
}
