// Log-probabilities of chosen tokens under one logits row, in a single workgroup:
// max-reduce, then sum exp(x - max) (compensated per invocation, tree across them),
// then for each chosen id its log-probability and its probability renormalised over
// the chosen ids only. An id outside the vocabulary gets NaN in both outputs and is
// left out of the renormalisation.

struct Params {
    row: u32,
    cols: u32,
    count: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> log_probs: array<f32>;
@group(0) @binding(4) var<storage, read_write> probs: array<f32>;

const WG: u32 = 256u;
var<workgroup> scratch: array<f32, WG>;

// -inf and NaN come from runtime values: WGSL makes an infinite or NaN constant
// expression a shader-creation error (Chrome enforces it; naga does not).
fn neg_inf() -> f32 {
    var bits = 0xff800000u;
    return bitcast<f32>(bits);
}

fn nan() -> f32 {
    var bits = 0xffffffffu;
    return bitcast<f32>(bits);
}

fn reduce_max(lid: u32, value: f32) -> f32 {
    workgroupBarrier();
    scratch[lid] = value;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            scratch[lid] = max(scratch[lid], scratch[lid + stride]);
        }
        workgroupBarrier();
    }
    return workgroupUniformLoad(&scratch[0]);
}

fn reduce_sum(lid: u32, value: f32) -> f32 {
    workgroupBarrier();
    scratch[lid] = value;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            scratch[lid] += scratch[lid + stride];
        }
        workgroupBarrier();
    }
    return workgroupUniformLoad(&scratch[0]);
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
    let base = params.row * params.cols;
    var local_max = neg_inf();
    for (var i = lid; i < params.cols; i += WG) {
        local_max = max(local_max, logits[base + i]);
    }
    let row_max = reduce_max(lid, local_max);

    // Kahan summation: each invocation adds about vocab / 256 terms.
    var sum = 0.0;
    var carry = 0.0;
    for (var i = lid; i < params.cols; i += WG) {
        let term = exp(logits[base + i] - row_max) - carry;
        let next = sum + term;
        carry = (next - sum) - term;
        sum = next;
    }
    let log_sum = log(reduce_sum(lid, sum));

    var chosen_max = neg_inf();
    for (var j = lid; j < params.count; j += WG) {
        let id = ids[j];
        if (id < params.cols) {
            chosen_max = max(chosen_max, logits[base + id]);
        }
    }
    let chosen_top = reduce_max(lid, chosen_max);
    var chosen_sum = 0.0;
    for (var j = lid; j < params.count; j += WG) {
        let id = ids[j];
        if (id < params.cols) {
            chosen_sum += exp(logits[base + id] - chosen_top);
        }
    }
    let chosen_norm = reduce_sum(lid, chosen_sum);

    for (var j = lid; j < params.count; j += WG) {
        let id = ids[j];
        if (id < params.cols) {
            let x = logits[base + id];
            log_probs[j] = (x - row_max) - log_sum;
            probs[j] = exp(x - chosen_top) / chosen_norm;
        } else {
            log_probs[j] = nan();
            probs[j] = nan();
        }
    }
}
