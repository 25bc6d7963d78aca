// output[t, :] = row ids[t] of the weight table, decoded from its GGUF blocks. One
// thread per (token, 32-element group); a dispatch per weight chunk writes only the
// tokens whose id falls in that chunk, so ids past the vocabulary are left unwritten.

struct Params {
    tokens: u32,
    cols: u32,
    groups: u32,
    first_row: u32,
    chunk_rows: u32,
    row_bytes: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> weights: array<u32>;
@group(0) @binding(3) var<storage, read_write> output: array<f32>;

#include "bytes.wgsl"
#include "dequant.wgsl"

const WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let index = (wid.x + wid.y * num.x) * WG + lid;
    if (index >= params.tokens * params.groups) {
        return;
    }
    let token = index / params.groups;
    let group = index % params.groups;
    let id = ids[token];
    if (id < params.first_row || id - params.first_row >= params.chunk_rows) {
        return;
    }
    var w: array<f32, 32>;
    dequant_group((id - params.first_row) * params.row_bytes, group, params.cols, &w);
    let first = group * GROUP;
    let valid = min(GROUP, params.cols - first);
    let out = token * params.cols + first;
    for (var i = 0u; i < valid; i++) {
        output[out + i] = w[i];
    }
}
