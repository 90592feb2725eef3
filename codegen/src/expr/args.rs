//! The kernels' struct of a definition's launch-bound values (`FgExprArgs`): the custom
//! variant's parameter block holds it, and so does the block classification kernel's. Declared
//! once here; the runtime fills it, the renderer declares it in CUDA from its layout.

use crate::block::DataPtr;

crate::param_block! {
    /// Vector slots `v0..v3` (device addresses, i32 or f32 by declaration) with their lengths,
    /// and scalar slots `s0..s3` (i32 values, or f32 bit patterns).
    pub struct ExprArgs as "FgExprArgs" {
        pub v0: DataPtr,
        pub v1: DataPtr,
        pub v2: DataPtr,
        pub v3: DataPtr,
        pub len0: i32,
        pub len1: i32,
        pub len2: i32,
        pub len3: i32,
        pub s0: i32,
        pub s1: i32,
        pub s2: i32,
        pub s3: i32,
    }
}

impl ExprArgs {
    /// Sets vector slot `slot` (below [`MAX_VECTORS`](super::MAX_VECTORS)).
    pub fn set_vector(&mut self, slot: usize, ptr: u64, len: i32) {
        let (p, l) = match slot {
            0 => (&mut self.v0, &mut self.len0),
            1 => (&mut self.v1, &mut self.len1),
            2 => (&mut self.v2, &mut self.len2),
            _ => (&mut self.v3, &mut self.len3),
        };
        *p = DataPtr(ptr);
        *l = len;
    }

    /// Sets scalar slot `slot` (below [`MAX_SCALARS`](super::MAX_SCALARS)) to 32 bits.
    pub fn set_scalar(&mut self, slot: usize, bits: i32) {
        *match slot {
            0 => &mut self.s0,
            1 => &mut self.s1,
            2 => &mut self.s2,
            _ => &mut self.s3,
        } = bits;
    }
}

/// The CUDA declaration of `FgExprArgs` (with its layout asserts).
pub fn declaration() -> String {
    crate::block::declare(&ExprArgs::LAYOUT)
}
