// argmax of one logits row in a single workgroup: each invocation scans a strided
// slice (coalesced reads), then a tree reduction keeps the larger logit, the lower
// index on ties. NaN logits never win; a row of NaN alone yields NONE.

struct Params {
    row: u32,
    cols: u32,
    slot: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<u32>;

const WG: u32 = 256u;
const NONE: u32 = 0xffffffffu;
var<workgroup> best_value: array<f32, WG>;
var<workgroup> best_index: array<u32, WG>;

// By bit pattern, so that no compiler assumption about NaN can change the answer.
fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

// True when (value, index) beats (best, best_at): larger, or equal and earlier.
// NONE marks "nothing yet" and loses to any candidate.
fn beats(value: f32, index: u32, best: f32, best_at: u32) -> bool {
    if (index == NONE) {
        return false;
    }
    if (best_at == NONE) {
        return true;
    }
    return value > best || (value == best && index < best_at);
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
    let base = params.row * params.cols;
    var best = 0.0;
    var best_at = NONE;
    for (var i = lid; i < params.cols; i += WG) {
        let x = logits[base + i];
        if (!is_nan(x) && beats(x, i, best, best_at)) {
            best = x;
            best_at = i;
        }
    }
    best_value[lid] = best;
    best_index[lid] = best_at;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride && beats(best_value[lid + stride], best_index[lid + stride], best_value[lid], best_index[lid])) {
            best_value[lid] = best_value[lid + stride];
            best_index[lid] = best_index[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        output[params.slot] = best_index[0];
    }
}
