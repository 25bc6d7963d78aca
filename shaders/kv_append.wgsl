// kv_append: copies T new rows of k and v activations ([T, kv_heads * head_dim]) into
// the caches ([kv_heads, capacity, head_dim]) at positions first .. first + T.
// One invocation per element; each writes the k and the v value of that element.

struct Params {
    tokens: u32,
    kv_heads: u32,
    head_dim: u32,
    capacity: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// The step's first position, `first` above (see src/ops/position.rs).
@group(0) @binding(1) var<uniform> first_position: vec4<u32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> k_cache: array<f32>;
@group(0) @binding(5) var<storage, read_write> v_cache: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * groups.x) * WG + lid;
    let row_len = params.kv_heads * params.head_dim;
    if (i >= params.tokens * row_len) {
        return;
    }
    let t = i / row_len;
    let within = i % row_len;
    let head = within / params.head_dim;
    let d = within % params.head_dim;
    let dst = (head * params.capacity + first_position.x + t) * params.head_dim + d;
    k_cache[dst] = k[i];
    v_cache[dst] = v[i];
}
