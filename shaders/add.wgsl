// Element-wise sum: `output = a + b`, or with IN_PLACE the residual update `a += b`
// (a buffer cannot be bound both read and read_write in one dispatch, hence two
// variants). One invocation per element.

struct Params {
    len: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
#ifdef IN_PLACE
@group(0) @binding(1) var<storage, read_write> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
#else
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> output: array<f32>;
#endif

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * groups.x) * WG + lid;
    if (i >= params.len) {
        return;
    }
#ifdef IN_PLACE
    a[i] = a[i] + b[i];
#else
    output[i] = a[i] + b[i];
#endif
}
