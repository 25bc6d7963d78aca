// Rotary position embedding, in place on `[tokens, heads * head_dim]` activations.
// One invocation per rotated pair: (2i, 2i + 1) by default, (i, i + rotary_dim / 2)
// with NEOX. Dimensions at or beyond rotary_dim are left untouched.
//
// Angles are exact to about 2^-32 of a turn at any position: each frequency's
// rotation per position is a 0.64 fixed-point fraction of a turn (made on the host
// in f64), so `position * step` modulo one turn is plain wrapping u32 arithmetic.
// The reduced angle lies in [-pi, pi), where GPU sin/cos are accurate. A naive f32
// `position * inv_freq` is off by ~1e-3 rad at position 30000.

struct Params {
    pairs: u32,
    half_rotary: u32,
    heads: u32,
    head_dim: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// The step's first position in x (see src/ops/position.rs).
@group(0) @binding(1) var<uniform> first_position: vec4<u32>;
// Per frequency: (high word, low word) of the turns advanced per position.
@group(0) @binding(2) var<storage, read> steps: array<vec2<u32>>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

const WG: u32 = 256u;
const TAU_PER_FIXED_TURN: f32 = 6.283185307179586 / 4294967296.0;

// High 32 bits of the 64-bit product a * b, from 16-bit halves.
fn mul_high(a: u32, b: u32) -> u32 {
    let a_lo = a & 0xffffu;
    let a_hi = a >> 16u;
    let b_lo = b & 0xffffu;
    let b_hi = b >> 16u;
    let lo_hi = a_lo * b_hi;
    let hi_lo = a_hi * b_lo;
    let middle = ((a_lo * b_lo) >> 16u) + (lo_hi & 0xffffu) + (hi_lo & 0xffffu);
    return a_hi * b_hi + (lo_hi >> 16u) + (hi_lo >> 16u) + (middle >> 16u);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let pair = (wid.x + wid.y * groups.x) * WG + lid;
    if (pair >= params.pairs) {
        return;
    }
    let freq = pair % params.half_rotary;
    let head_vector = pair / params.half_rotary;
    let position = first_position.x + head_vector / params.heads;

    let step = steps[freq];
    // Fraction of a turn, 0.32 fixed point; u32 arithmetic wraps whole turns away.
    let turn = position * step.x + mul_high(position, step.y);
    let angle = f32(bitcast<i32>(turn)) * TAU_PER_FIXED_TURN;
    let c = cos(angle);
    let s = sin(angle);

    let base = head_vector * params.head_dim;
#ifdef NEOX
    let i0 = base + freq;
    let i1 = i0 + params.half_rotary;
#else
    let i0 = base + 2u * freq;
    let i1 = i0 + 1u;
#endif
    let x0 = x[i0];
    let x1 = x[i1];
    x[i0] = x0 * c - x1 * s;
    x[i1] = x0 * s + x1 * c;
}
