//! Kernel parameters declared once. A family's parameter block is a Rust struct written with
//! [`uniform!`]; the macro also records its fields, from which the family's WGSL `struct Params`
//! is generated. No `.wgsl` file declares its own parameter struct, so the two sides cannot
//! disagree on a field's name, order or type: the shader reads `P.c_in` at the byte offset where
//! the Rust struct put `c_in`, whatever order the fields are written in.

/// A scalar a parameter block may hold, and its WGSL spelling. Only 4-byte scalars: with nothing
/// but them, `repr(C)` and WGSL's uniform layout both place field `i` at byte `4 * i`.
pub trait Scalar {
    const WGSL: &'static str;
}

impl Scalar for u32 {
    const WGSL: &'static str = "u32";
}

impl Scalar for f32 {
    const WGSL: &'static str = "f32";
}

/// A parameter block: plain bytes for the uniform arena, and its fields for the WGSL twin.
pub trait Uniform: bytemuck::Pod {
    /// (name, WGSL type) of each field, in declaration order.
    const FIELDS: &'static [(&'static str, &'static str)];
}

/// The WGSL twin of `P`, bound at binding 0 as `P`.
pub fn wgsl_declaration<P: Uniform>() -> String {
    let mut s = String::from("struct Params {\n");
    for (name, ty) in P::FIELDS {
        s.push_str(&format!("    {name}: {ty},\n"));
    }
    s.push_str("}\n@group(0) @binding(0) var<uniform> P: Params;\n");
    s
}

/// Declares a parameter block: a `repr(C)` `Pod` struct of `u32`/`f32` fields and its
/// [`Uniform`] field list. Any other field type is a compile error (no `Scalar` impl), and so is
/// any padding (the size assertion), so the generated WGSL always has the Rust layout.
macro_rules! uniform {
    ($(#[$meta:meta])* $vis:vis struct $name:ident { $($(#[$field_meta:meta])* $field:ident: $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $name {
            $($(#[$field_meta])* pub $field: $ty,)*
        }

        impl $crate::backend::wgpu::kernels::uniform::Uniform for $name {
            const FIELDS: &'static [(&'static str, &'static str)] = &[
                $((stringify!($field), <$ty as $crate::backend::wgpu::kernels::uniform::Scalar>::WGSL)),*
            ];
        }

        const _: () = assert!(
            ::std::mem::size_of::<$name>()
                == 4 * <$name as $crate::backend::wgpu::kernels::uniform::Uniform>::FIELDS.len()
        );
    };
}

pub(crate) use uniform;

#[cfg(test)]
mod tests {
    use super::*;

    uniform! {
        struct Example {
            len: u32,
            alpha: f32,
        }
    }

    #[test]
    fn the_wgsl_twin_lists_the_rust_fields_in_order() {
        assert_eq!(
            wgsl_declaration::<Example>(),
            "struct Params {\n    len: u32,\n    alpha: f32,\n}\n@group(0) @binding(0) var<uniform> P: Params;\n"
        );
        let bytes = bytemuck::bytes_of(&Example { len: 7, alpha: 1.5 }).to_vec();
        assert_eq!(bytes[..4], 7u32.to_ne_bytes());
        assert_eq!(bytes[4..], 1.5f32.to_ne_bytes());
    }
}
