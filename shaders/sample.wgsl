// Temperature / top-k / top-p sampling of one logits row in a single workgroup, with
// the uniform number u supplied by the caller. Logits are compared as order-preserving
// u32 keys, so both thresholds are exact logit values and ties at a threshold are kept:
//  1. the largest key (the maximum logit m);
//  2. top-k: binary search for the largest key t with count(key >= t) >= k;
//  3. top-p: binary search, between the top-k threshold and m, for the largest key t
//     with mass(key >= t) >= p * mass(key >= top-k threshold), where a token's mass
//     is exp((logit - m) / temperature);
//  4. draw: each invocation sums the kept mass of one contiguous segment of the
//     vocabulary, a scan over the segments finds the one holding u * total, and that
//     invocation walks its segment in token order.

struct Params {
    row: u32,
    cols: u32,
    slot: u32,
    top_k: u32,
    top_p: f32,
    temperature: f32,
    u: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<u32>;

const WG: u32 = 256u;
const NONE: u32 = 0xffffffffu;
var<workgroup> scratch_u: array<u32, WG>;
var<workgroup> scratch_f: array<f32, WG>;
var<workgroup> chosen: atomic<u32>;
var<workgroup> last_kept: atomic<u32>;

// Order-preserving key of a logit: a larger logit has a larger key, and -0 is +0.
// NaN and -inf map to 0 ("never drawn"), so every drawable token has a key >= 1.
fn key_of(x: f32) -> u32 {
    var bits = bitcast<u32>(x);
    if ((bits & 0x7fffffffu) > 0x7f800000u || bits == 0xff800000u) {
        return 0u;
    }
    if (bits == 0x80000000u) {
        bits = 0u;
    }
    if ((bits & 0x80000000u) != 0u) {
        return ~bits;
    }
    return bits | 0x80000000u;
}

// The logit a key stands for, +inf clamped to the largest finite f32.
fn logit_of(key: u32) -> f32 {
    var bits = ~key;
    if ((key & 0x80000000u) != 0u) {
        bits = key & 0x7fffffffu;
    }
    return min(bitcast<f32>(bits), bitcast<f32>(0x7f7fffffu));
}

// Unnormalised probability of a drawable logit x, given the maximum logit m.
fn mass_of(x: f32, m: f32) -> f32 {
    return exp((min(x, bitcast<f32>(0x7f7fffffu)) - m) / params.temperature);
}

fn max_key(lid: u32, base: u32) -> u32 {
    var best = 0u;
    for (var i = lid; i < params.cols; i += WG) {
        best = max(best, key_of(logits[base + i]));
    }
    workgroupBarrier();
    scratch_u[lid] = best;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            scratch_u[lid] = max(scratch_u[lid], scratch_u[lid + stride]);
        }
        workgroupBarrier();
    }
    return workgroupUniformLoad(&scratch_u[0]);
}

// How many tokens have a key of at least `threshold`.
fn count_from(lid: u32, base: u32, threshold: u32) -> u32 {
    var count = 0u;
    for (var i = lid; i < params.cols; i += WG) {
        count += select(0u, 1u, key_of(logits[base + i]) >= threshold);
    }
    workgroupBarrier();
    scratch_u[lid] = count;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            scratch_u[lid] += scratch_u[lid + stride];
        }
        workgroupBarrier();
    }
    return workgroupUniformLoad(&scratch_u[0]);
}

// Total mass of the tokens with a key of at least `threshold` (>= 1).
fn mass_from(lid: u32, base: u32, threshold: u32, m: f32) -> f32 {
    var mass = 0.0;
    for (var i = lid; i < params.cols; i += WG) {
        let x = logits[base + i];
        if (key_of(x) >= threshold) {
            mass += mass_of(x, m);
        }
    }
    workgroupBarrier();
    scratch_f[lid] = mass;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            scratch_f[lid] += scratch_f[lid + stride];
        }
        workgroupBarrier();
    }
    return workgroupUniformLoad(&scratch_f[0]);
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
    let base = params.row * params.cols;
    if (lid == 0u) {
        atomicStore(&chosen, NONE);
        atomicStore(&last_kept, 0u);
    }
    let top = max_key(lid, base);
    if (top == 0u) {
        if (lid == 0u) {
            output[params.slot] = NONE;
        }
        return;
    }
    let m = logit_of(top);

    var threshold = 1u;
    if (params.top_k > 0u) {
        if (count_from(lid, base, 1u) > params.top_k) {
            var lo = 1u;
            var hi = top;
            while (lo < hi) {
                let mid = lo + (hi - lo + 1u) / 2u;
                if (count_from(lid, base, mid) >= params.top_k) {
                    lo = mid;
                } else {
                    hi = mid - 1u;
                }
            }
            threshold = lo;
        }
    }
    if (params.top_p < 1.0) {
        let wanted_mass = params.top_p * mass_from(lid, base, threshold, m);
        var lo = threshold;
        var hi = top;
        while (lo < hi) {
            let mid = lo + (hi - lo + 1u) / 2u;
            if (mass_from(lid, base, mid, m) >= wanted_mass) {
                lo = mid;
            } else {
                hi = mid - 1u;
            }
        }
        threshold = lo;
    }

    // Contiguous segments keep the prefix sums in token order.
    let segment = (params.cols + WG - 1u) / WG;
    let start = min(lid * segment, params.cols);
    let end = min(start + segment, params.cols);
    var segment_mass = 0.0;
    var segment_last = NONE;
    for (var i = start; i < end; i++) {
        let x = logits[base + i];
        if (key_of(x) >= threshold) {
            segment_mass += mass_of(x, m);
            segment_last = i;
        }
    }
    if (segment_last != NONE) {
        atomicMax(&last_kept, segment_last);
    }
    workgroupBarrier();
    scratch_f[lid] = segment_mass;
    workgroupBarrier();
    for (var offset = 1u; offset < WG; offset *= 2u) {
        var earlier = 0.0;
        if (lid >= offset) {
            earlier = scratch_f[lid - offset];
        }
        workgroupBarrier();
        scratch_f[lid] += earlier;
        workgroupBarrier();
    }
    let inclusive = scratch_f[lid];
    var exclusive = 0.0;
    if (lid > 0u) {
        exclusive = scratch_f[lid - 1u];
    }
    let drawn = params.u * scratch_f[WG - 1u];
    if (exclusive <= drawn && drawn < inclusive) {
        var running = exclusive;
        var pick = segment_last;
        for (var i = start; i < end; i++) {
            let x = logits[base + i];
            if (key_of(x) >= threshold) {
                running += mass_of(x, m);
                if (running > drawn) {
                    pick = i;
                    break;
                }
            }
        }
        atomicMin(&chosen, pick);
    }
    workgroupBarrier();
    if (lid == 0u) {
        var token = atomicLoad(&chosen);
        if (token == NONE) {
            // u * total rounded onto the end of the scan: the last kept token.
            token = atomicLoad(&last_kept);
        }
        output[params.slot] = token;
    }
}
