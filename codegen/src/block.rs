//! Each variant's own kernel parameter block: a `#[repr(C)]` Rust struct declared once by
//! [`param_block!`](crate::param_block) in the variant's module. The runtime's host variant
//! fills it and writes its bytes ([`BlockValue::write_to`]); the renderer declares the same
//! struct in CUDA from its [`BlockLayout`] (`struct VariantParams`, the kernel's second
//! parameter) with a `static_assert` on every offset and size the Rust compiler chose, so a
//! layout the two disagree on fails the NVRTC compile of every kernel of the variant.

use std::fmt::Write;

/// One field as the kernel declares it.
#[derive(Debug, PartialEq, Eq)]
pub struct CField {
    pub name: &'static str,
    /// Its C type: `int`, `fg_i64`, a pointer, or a part's struct name.
    pub c_type: &'static str,
    /// Its offset in the Rust struct, in bytes.
    pub offset: usize,
    /// The layout of a nested part (a block shared by several variants), if it is one.
    pub part: Option<&'static BlockLayout>,
}

/// The layout of a parameter block or of one of its parts, as the Rust compiler laid it out.
#[derive(Debug, PartialEq, Eq)]
pub struct BlockLayout {
    /// The C struct name (`VariantParams` for a variant's whole block).
    pub c_name: &'static str,
    pub fields: &'static [CField],
    pub size: usize,
    pub align: usize,
}

/// The C name of every variant's whole block, the kernel's second parameter.
pub const VARIANT_PARAMS: &str = "VariantParams";

/// The largest block a variant may declare (checked at compile time over the registry): the
/// size of the runtime's launch buffer the block's bytes are written into.
pub const MAX_BLOCK_BYTES: usize = 128;

/// A value a parameter block holds: a C scalar, a device pointer or a nested part. Written and
/// read as native-endian bytes at the field's offset (the host and the GPU are little-endian).
pub trait BlockValue: Copy + Default + std::fmt::Debug + PartialEq + 'static {
    /// Its C type.
    const C_TYPE: &'static str;
    /// Its layout, when it is a part of its own.
    const PART: Option<&'static BlockLayout> = None;
    /// Writes the value into `out`, which is exactly its size and zeroed (padding stays zero).
    fn write_to(&self, out: &mut [u8]);
    /// Reads the value from bytes `write_to` wrote.
    fn read_from(bytes: &[u8]) -> Self;
}

macro_rules! scalar_value {
    ($($ty:ty => $c:literal),* $(,)?) => {
        $(impl BlockValue for $ty {
            const C_TYPE: &'static str = $c;
            fn write_to(&self, out: &mut [u8]) {
                out.copy_from_slice(&self.to_ne_bytes());
            }
            fn read_from(bytes: &[u8]) -> Self {
                <$ty>::from_ne_bytes(bytes.try_into().expect("a field's bytes"))
            }
        })*
    };
}

scalar_value!(i32 => "int", i64 => "fg_i64", f32 => "float");

macro_rules! pointer_value {
    ($($(#[$doc:meta])* $name:ident => $c:literal),* $(,)?) => {
        $($(#[$doc])*
        #[repr(transparent)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name(pub u64);

        impl BlockValue for $name {
            const C_TYPE: &'static str = $c;
            fn write_to(&self, out: &mut [u8]) {
                out.copy_from_slice(&self.0.to_ne_bytes());
            }
            fn read_from(bytes: &[u8]) -> Self {
                $name(u64::from_ne_bytes(bytes.try_into().expect("a field's bytes")))
            }
        })*
    };
}

pointer_value!(
    /// A device address of 32-bit integers (`const int*`).
    IntPtr => "const int*",
    /// A device address of elements (`const void*`; the kernel casts it to its element type).
    DataPtr => "const void*",
);

/// Declares a parameter block (or a part of one) once: the `#[repr(C)]` Rust struct, its
/// [`BlockValue`] impl (bytes written field by field at their offsets) and its
/// [`BlockLayout`] (`LAYOUT`), from which the renderer declares the C struct of the same name.
///
/// ```ignore
/// param_block! {
///     /// Sink and window.
///     pub struct StreamingArgs as "StreamingArgs" { pub sink: i32, pub window: i32, }
/// }
/// ```
#[macro_export]
#[doc(hidden)]
macro_rules! param_block {
    ($(#[$meta:meta])* $vis:vis struct $name:ident as $c:literal {
        $($(#[$fmeta:meta])* $fvis:vis $field:ident: $ty:ty,)*
    }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq)]
        $vis struct $name {
            $($(#[$fmeta])* $fvis $field: $ty,)*
        }

        impl $name {
            /// The struct's layout, from which its C declaration is rendered.
            pub const LAYOUT: $crate::block::BlockLayout =
                $crate::block::BlockLayout {
                    c_name: $c,
                    fields: &[$($crate::block::CField {
                        name: stringify!($field),
                        c_type: <$ty as $crate::block::BlockValue>::C_TYPE,
                        offset: ::std::mem::offset_of!($name, $field),
                        part: <$ty as $crate::block::BlockValue>::PART,
                    },)*],
                    size: ::std::mem::size_of::<$name>(),
                    align: ::std::mem::align_of::<$name>(),
                };
        }

        impl $crate::block::BlockValue for $name {
            const C_TYPE: &'static str = $c;
            const PART: Option<&'static $crate::block::BlockLayout> =
                Some(&$name::LAYOUT);
            #[allow(unused_variables)]
            fn write_to(&self, out: &mut [u8]) {
                $($crate::block::BlockValue::write_to(
                    &self.$field,
                    &mut out[::std::mem::offset_of!($name, $field)..]
                        [..::std::mem::size_of::<$ty>()],
                );)*
            }
            #[allow(unused_variables)]
            fn read_from(bytes: &[u8]) -> Self {
                $name {
                    $($field: <$ty as $crate::block::BlockValue>::read_from(
                        &bytes[::std::mem::offset_of!($name, $field)..]
                            [..::std::mem::size_of::<$ty>()],
                    ),)*
                }
            }
        }
    };
}

/// The bytes of a block value, `size_of::<T>()` long (padding zero).
pub fn to_bytes<T: BlockValue>(value: &T) -> Vec<u8> {
    let mut out = vec![0; std::mem::size_of::<T>()];
    value.write_to(&mut out);
    out
}

/// The C size of a struct the Rust compiler laid out in `size` bytes: an empty C++ struct
/// still occupies one byte.
fn c_size(size: usize) -> usize {
    size.max(1)
}

/// The C declarations of `block` and of the parts it nests (each once, parts first), each
/// followed by `static_assert`s that its size, alignment and every field's offset are the Rust
/// struct's. NVRTC has no `<cstddef>` and no `__builtin_offsetof`; its front end folds
/// `__INTADDR__` of a member's address in a null object to the member's offset.
pub fn declare(block: &'static BlockLayout) -> String {
    let mut declared = Vec::new();
    let mut out = String::new();
    declare_into(block, &mut declared, &mut out);
    out
}

fn declare_into(block: &'static BlockLayout, declared: &mut Vec<&'static str>, out: &mut String) {
    for part in block.fields.iter().filter_map(|f| f.part) {
        if !declared.contains(&part.c_name) {
            declare_into(part, declared, out);
        }
    }
    declared.push(block.c_name);
    let name = block.c_name;
    let _ = writeln!(out, "struct {name} {{");
    for f in block.fields {
        let _ = writeln!(out, "    {} {};", f.c_type, f.name);
    }
    let _ = writeln!(out, "}};");
    let _ = writeln!(
        out,
        "static_assert(sizeof({name}) == {} && alignof({name}) == {}, \"{name}: size or alignment differs from the Rust struct's\");",
        c_size(block.size),
        block.align
    );
    for f in block.fields {
        let _ = writeln!(
            out,
            "static_assert(__INTADDR__(&((({name}*)0)->{field})) == {offset}, \"{name}.{field}: offset differs from the Rust struct's\");",
            field = f.name,
            offset = f.offset
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::param_block! {
        struct Part as "TestPart" { a: i32, b: i64, }
    }
    crate::param_block! {
        struct Whole as "TestWhole" { x: i32, part: Part, again: Part, p: IntPtr, }
    }
    crate::param_block! {
        struct Empty as "TestEmpty" {}
    }

    #[test]
    fn fields_are_written_at_their_offsets() {
        let w = Whole {
            x: -2,
            part: Part { a: 7, b: 1 << 40 },
            again: Part::default(),
            p: IntPtr(0xdead_beef_0000),
        };
        let bytes = to_bytes(&w);
        assert_eq!(bytes.len(), 48);
        assert_eq!(bytes[0..4], (-2i32).to_ne_bytes());
        assert_eq!(bytes[4..8], [0; 4], "padding stays zero");
        assert_eq!(bytes[8..12], 7i32.to_ne_bytes());
        assert_eq!(bytes[16..24], (1i64 << 40).to_ne_bytes());
        assert_eq!(bytes[40..48], 0xdead_beef_0000u64.to_ne_bytes());
        assert_eq!(Whole::read_from(&bytes), w);
    }

    #[test]
    fn declarations_name_parts_once_and_assert_every_offset() {
        let c = declare(&Whole::LAYOUT);
        assert_eq!(c.matches("struct TestPart {").count(), 1);
        assert!(c.find("struct TestPart {") < c.find("struct TestWhole {"));
        assert!(c.contains("    TestPart again;\n"));
        assert!(c.contains("    const int* p;\n"));
        assert!(c.contains("__INTADDR__(&(((TestWhole*)0)->p)) == 40"));
        assert!(c.contains("__INTADDR__(&(((TestPart*)0)->b)) == 8"));
        assert!(c.contains("sizeof(TestWhole) == 48 && alignof(TestWhole) == 8"));
        let empty = declare(&Empty::LAYOUT);
        assert!(empty.contains("sizeof(TestEmpty) == 1"), "{empty}");
    }
}
