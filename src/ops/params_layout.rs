//! Checks that each op's `#[repr(C)]` parameter block and the WGSL `Params` struct
//! of its shader agree, member by member, using naga's reflection of the WGSL: the
//! two are written separately, and a mismatch reads garbage on the GPU without any
//! error.

use crate::gpu::Shader;

/// One member of a Rust parameter block: name, byte offset, byte size.
pub type Member = (&'static str, usize, usize);

/// The size in bytes of the field `field` selects (for [`rust_params!`]).
pub fn field_size<T, F>(_field: fn(&T) -> &F) -> usize {
    std::mem::size_of::<F>()
}

/// The named (non-padding) members of a `#[repr(C)]` struct and its size:
/// `rust_params!(Params { rows, cols, eps })`.
macro_rules! rust_params {
    ($ty:ty { $($field:ident),* $(,)? }) => {
        (
            vec![$((
                stringify!($field),
                std::mem::offset_of!($ty, $field),
                $crate::ops::params_layout::field_size(|p: &$ty| &p.$field),
            )),*],
            std::mem::size_of::<$ty>(),
        )
    };
}
pub(crate) use rust_params;

/// Panics unless the uniform `params` of `shader` (preprocessed with `defines`) is a
/// struct whose members not named `_…` are exactly `members`, at the same offsets
/// with the same sizes, and whose size is `size` (padding members may be spelled
/// differently on the two sides; the equal size covers them).
#[track_caller]
pub fn assert_matches_wgsl(
    shader: Shader,
    defines: &[(&str, String)],
    (members, size): (Vec<Member>, usize),
) {
    let defines: Vec<(String, String)> = defines
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let source = crate::gpu::preprocess(shader.name, shader.source, &defines)
        .unwrap_or_else(|e| panic!("{}: {e}", shader.name));
    let module = naga::front::wgsl::parse_str(&source)
        .unwrap_or_else(|e| panic!("{}: {}", shader.name, e.emit_to_string(&source)));
    let params = module
        .global_variables
        .iter()
        .map(|(_, var)| var)
        .find(|var| {
            var.name.as_deref() == Some("params") && var.space == naga::AddressSpace::Uniform
        })
        .unwrap_or_else(|| panic!("{} has no `var<uniform> params`", shader.name));
    let naga::TypeInner::Struct {
        members: wgsl,
        span,
    } = &module.types[params.ty].inner
    else {
        panic!("{}: `params` is not a struct", shader.name);
    };
    let wgsl: Vec<(String, usize, usize)> = wgsl
        .iter()
        .filter_map(|m| {
            let name = m.name.clone().unwrap_or_default();
            let bytes = module.types[m.ty].inner.size(module.to_ctx()) as usize;
            (!name.starts_with('_')).then_some((name, m.offset as usize, bytes))
        })
        .collect();
    let rust: Vec<(String, usize, usize)> = members
        .into_iter()
        .map(|(name, offset, bytes)| (name.to_string(), offset, bytes))
        .collect();
    assert_eq!(
        rust, wgsl,
        "{}: Rust Params members (name, offset, size) differ from the WGSL struct's",
        shader.name
    );
    assert_eq!(
        size, *span as usize,
        "{}: Rust Params is {size} bytes, the WGSL struct {span}",
        shader.name
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C)]
    struct Swapped {
        cols: u32,
        rows: u32,
    }

    #[test]
    #[should_panic(expected = "differ from the WGSL struct")]
    fn members_in_another_order_are_caught() {
        let shader = Shader {
            name: "swapped.wgsl",
            source: "struct Params { rows: u32, cols: u32, }
                     @group(0) @binding(0) var<uniform> params: Params;
                     @compute @workgroup_size(1) fn main() { _ = params.rows; }",
        };
        assert_matches_wgsl(shader, &[], rust_params!(Swapped { cols, rows }));
    }

    #[repr(C)]
    struct Short {
        rows: u32,
        cols: u32,
    }

    #[test]
    #[should_panic(expected = "the WGSL struct 16")]
    fn a_missing_padding_member_is_caught() {
        let shader = Shader {
            name: "short.wgsl",
            source: "struct Params { rows: u32, cols: u32, _pad0: vec2<u32>, }
                     @group(0) @binding(0) var<uniform> params: Params;
                     @compute @workgroup_size(1) fn main() { _ = params.rows; }",
        };
        assert_matches_wgsl(shader, &[], rust_params!(Short { rows, cols }));
    }
}
