// Causal grouped-query attention over a KV cache ([kv_heads, capacity, head_dim] f32)
// with an online (flash-style) softmax: no [queries, keys] score buffer exists.
// Query row t sits at position first_position + t and sees cache positions 0 ..= that.
// Three entry points, one per define:
//   PREFILL: a workgroup takes ROWS query rows of one kv head (the rows run over
//            (query, head of the group) pairs, so a staged K/V tile serves the whole
//            group) and walks the keys in KEY_TILE tiles staged in workgroup memory.
//   DECODE:  a workgroup takes one (query, head, split) and split_keys keys of it,
//            one key per invocation at a time; it writes (max, sum, unnormalised
//            output) to `partial`.
//   COMBINE: a workgroup per (query, head) merges the splits' partials into `output`.
// HEAD_DIM (and KEY_TILE for PREFILL) are defined by the host.

struct Params {
    queries: u32,
    n_heads: u32,
    group: u32,
    capacity: u32,
    split_keys: u32,
    scale: f32,
}

// Stands in for -infinity: exp(NEG_BIG - m) is 0 for any real m.
const NEG_BIG: f32 = -1.0e30;
const HEAD: u32 = HEAD_DIM;

@group(0) @binding(0) var<uniform> params: Params;
// The position of the first query (see src/ops/position.rs).
@group(0) @binding(1) var<uniform> first_position: vec4<u32>;

// Splits of split_keys keys that the decode kernel cuts the visible keys into.
fn split_count() -> u32 {
    return (first_position.x + params.queries + params.split_keys - 1u) / params.split_keys;
}

#ifdef PREFILL
@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> k_cache: array<f32>;
@group(0) @binding(4) var<storage, read> v_cache: array<f32>;
@group(0) @binding(5) var<storage, read_write> output: array<f32>;

const ROWS: u32 = 8u;
const LANES: u32 = 16u;
const WG: u32 = ROWS * LANES;
const KT: u32 = KEY_TILE;
// Staged K/V rows are padded by one value so that lanes reading different keys at the
// same dimension hit different banks.
const STRIDE: u32 = HEAD + 1u;
const DIMS_PER_LANE: u32 = (HEAD + LANES - 1u) / LANES;

var<workgroup> q_tile: array<f32, ROWS * HEAD>;
var<workgroup> kv_tile: array<f32, KT * STRIDE>;
var<workgroup> scores: array<f32, ROWS * KT>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let total_rows = params.queries * params.group;
    let row_tiles = (total_rows + ROWS - 1u) / ROWS;
    let kv_heads = params.n_heads / params.group;
    let flat = wid.x + wid.y * groups.x;
    if (flat >= row_tiles * kv_heads) {
        return;
    }
    let kv_head = flat / row_tiles;
    let row0 = (flat % row_tiles) * ROWS;
    let kv_base = kv_head * params.capacity * HEAD;

    for (var i = lid; i < ROWS * HEAD; i += WG) {
        let g = row0 + i / HEAD;
        var value = 0.0;
        if (g < total_rows) {
            let head = kv_head * params.group + g % params.group;
            value = q[((g / params.group) * params.n_heads + head) * HEAD + i % HEAD] * params.scale;
        }
        q_tile[i] = value;
    }

    let row = lid / LANES;
    let lane = lid % LANES;
    let g = row0 + row;
    let query_pos = first_position.x + g / params.group;
    let last_row = min(row0 + ROWS, total_rows) - 1u;
    let key_end = first_position.x + last_row / params.group + 1u;

    var m = NEG_BIG;
    var l = 0.0;
    var acc: array<f32, DIMS_PER_LANE>;
    for (var k = 0u; k < DIMS_PER_LANE; k++) {
        acc[k] = 0.0;
    }

    for (var key0 = 0u; key0 < key_end; key0 += KT) {
        let tile_keys = min(KT, key_end - key0);
        workgroupBarrier();
        for (var i = lid; i < KT * HEAD; i += WG) {
            let j = i / HEAD;
            var value = 0.0;
            if (j < tile_keys) {
                value = k_cache[kv_base + key0 * HEAD + i];
            }
            kv_tile[j * STRIDE + i % HEAD] = value;
        }
        workgroupBarrier();
        for (var j = lane; j < KT; j += LANES) {
            var s = 0.0;
            for (var d = 0u; d < HEAD; d++) {
                s += q_tile[row * HEAD + d] * kv_tile[j * STRIDE + d];
            }
            scores[row * KT + j] = select(NEG_BIG, s, key0 + j <= query_pos);
        }
        workgroupBarrier();
        for (var i = lid; i < KT * HEAD; i += WG) {
            let j = i / HEAD;
            var value = 0.0;
            if (j < tile_keys) {
                value = v_cache[kv_base + key0 * HEAD + i];
            }
            kv_tile[j * STRIDE + i % HEAD] = value;
        }
        workgroupBarrier();

        var tile_max = NEG_BIG;
        for (var j = 0u; j < KT; j++) {
            tile_max = max(tile_max, scores[row * KT + j]);
        }
        let new_m = max(m, tile_max);
        let correction = exp(m - new_m);
        l *= correction;
        for (var k = 0u; k < DIMS_PER_LANE; k++) {
            acc[k] *= correction;
        }
        for (var j = 0u; j < tile_keys; j++) {
            let p = exp(scores[row * KT + j] - new_m);
            l += p;
            for (var k = 0u; k < DIMS_PER_LANE; k++) {
                let d = lane + k * LANES;
                if (d < HEAD) {
                    acc[k] += p * kv_tile[j * STRIDE + d];
                }
            }
        }
        m = new_m;
    }

    if (g < total_rows) {
        let head = kv_head * params.group + g % params.group;
        let base = ((g / params.group) * params.n_heads + head) * HEAD;
        for (var k = 0u; k < DIMS_PER_LANE; k++) {
            let d = lane + k * LANES;
            if (d < HEAD) {
                output[base + d] = acc[k] / l;
            }
        }
    }
}
#endif

#ifdef DECODE
@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> k_cache: array<f32>;
@group(0) @binding(4) var<storage, read> v_cache: array<f32>;
@group(0) @binding(5) var<storage, read_write> partial: array<f32>;

const WG: u32 = 128u;
const DIMS_PER_THREAD: u32 = (HEAD + WG - 1u) / WG;

var<workgroup> q_row: array<f32, HEAD>;
var<workgroup> probs: array<f32, WG>;
var<workgroup> scratch: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let flat = wid.x + wid.y * groups.x;
    let splits = split_count();
    if (flat >= params.queries * params.n_heads * splits) {
        return;
    }
    let split = flat % splits;
    let head = (flat / splits) % params.n_heads;
    let t = flat / (splits * params.n_heads);
    let kv_base = (head / params.group) * params.capacity * HEAD;
    let key_begin = split * params.split_keys;
    let key_end = min(key_begin + params.split_keys, first_position.x + t + 1u);

    for (var d = lid; d < HEAD; d += WG) {
        q_row[d] = q[(t * params.n_heads + head) * HEAD + d] * params.scale;
    }
    workgroupBarrier();

    var m = NEG_BIG;
    var l = 0.0;
    var acc: array<f32, DIMS_PER_THREAD>;
    for (var k = 0u; k < DIMS_PER_THREAD; k++) {
        acc[k] = 0.0;
    }

    for (var key0 = key_begin; key0 < key_end; key0 += WG) {
        let key = key0 + lid;
        var s = NEG_BIG;
        if (key < key_end) {
            s = 0.0;
            let row = kv_base + key * HEAD;
            for (var d = 0u; d < HEAD; d++) {
                s += q_row[d] * k_cache[row + d];
            }
        }
        scratch[lid] = s;
        workgroupBarrier();
        for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
            if (lid < stride) {
                scratch[lid] = max(scratch[lid], scratch[lid + stride]);
            }
            workgroupBarrier();
        }
        let new_m = max(m, scratch[0]);
        workgroupBarrier();
        let p = select(0.0, exp(s - new_m), key < key_end);
        probs[lid] = p;
        scratch[lid] = p;
        workgroupBarrier();
        for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
            if (lid < stride) {
                scratch[lid] += scratch[lid + stride];
            }
            workgroupBarrier();
        }
        let correction = exp(m - new_m);
        l = l * correction + scratch[0];
        let tile_keys = min(WG, key_end - key0);
        for (var k = 0u; k < DIMS_PER_THREAD; k++) {
            let d = lid + k * WG;
            if (d < HEAD) {
                var a = acc[k] * correction;
                for (var j = 0u; j < tile_keys; j++) {
                    a += probs[j] * v_cache[kv_base + (key0 + j) * HEAD + d];
                }
                acc[k] = a;
            }
        }
        m = new_m;
        workgroupBarrier();
    }

    let base = flat * (HEAD + 2u);
    if (lid == 0u) {
        partial[base] = m;
        partial[base + 1u] = l;
    }
    for (var k = 0u; k < DIMS_PER_THREAD; k++) {
        let d = lid + k * WG;
        if (d < HEAD) {
            partial[base + 2u + d] = acc[k];
        }
    }
}
#endif

#ifdef COMBINE
@group(0) @binding(2) var<storage, read> partial: array<f32>;
@group(0) @binding(3) var<storage, read_write> output: array<f32>;

const WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let flat = wid.x + wid.y * groups.x;
    if (flat >= params.queries * params.n_heads) {
        return;
    }
    let record = HEAD + 2u;
    let splits = split_count();
    let base = flat * splits * record;
    var m = NEG_BIG;
    for (var s = 0u; s < splits; s++) {
        m = max(m, partial[base + s * record]);
    }
    var l = 0.0;
    for (var s = 0u; s < splits; s++) {
        l += partial[base + s * record + 1u] * exp(partial[base + s * record] - m);
    }
    for (var d = lid; d < HEAD; d += WG) {
        var o = 0.0;
        for (var s = 0u; s < splits; s++) {
            o += partial[base + s * record + 2u + d] * exp(partial[base + s * record] - m);
        }
        output[flat * HEAD + d] = o / l;
    }
}
#endif
