// SwiGLU gating: `output = silu(gate) * up` with `silu(x) = x / (1 + exp(-x))`.
// One invocation per element.

struct Params {
    len: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> gate: array<f32>;
@group(0) @binding(2) var<storage, read> up: array<f32>;
@group(0) @binding(3) var<storage, read_write> output: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * groups.x) * WG + lid;
    if (i >= params.len) {
        return;
    }
    let g = gate[i];
    // For g far below zero exp(-g) overflows to +inf and the quotient is -0, the limit.
    output[i] = g / (1.0 + exp(-g)) * up[i];
}
