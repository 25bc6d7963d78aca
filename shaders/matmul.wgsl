// output[m, first_row + n] = sum_k input[m, k] * weight[n, k] (+ bias[first_row + n])
// for the rows n of one weight chunk, decoded from GGUF blocks 32 elements at a time.
// GEMV: a workgroup per GEMV_COLS output columns and up to GEMV_ROWS input rows;
// the threads of each column split its K by 32-element groups, then sum.
// GEMM: a workgroup per GEMM_ROWS×64 output tile (GEMM_ROWS 32 or 64); each K step
// decodes a 64×32 weight tile and loads a GEMM_ROWS×32 input tile into workgroup
// memory once, and every thread accumulates GEMM_ROWS / 32 4×4 register tiles. With INPUT_VEC4 (K a multiple of 4) both read
// the input four values per load.

struct Params {
    m: u32,
    k: u32,
    n_total: u32,
    first_row: u32,
    chunk_rows: u32,
    row_bytes: u32,
    groups: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
#ifdef INPUT_VEC4
@group(0) @binding(1) var<storage, read> input4: array<vec4<f32>>;
#else
@group(0) @binding(1) var<storage, read> input: array<f32>;
#endif
@group(0) @binding(2) var<storage, read> weights: array<u32>;
@group(0) @binding(3) var<storage, read_write> output: array<f32>;
#ifdef BIAS
@group(0) @binding(4) var<storage, read> bias: array<f32>;
#endif

#include "bytes.wgsl"
#include "dequant.wgsl"

// The input value at flat index i.
fn input_at(i: u32) -> f32 {
#ifdef INPUT_VEC4
    return input4[i / 4u][i % 4u];
#else
    return input[i];
#endif
}

// Input values i..i+4, of which the first `left` (at least 1) exist; the rest read
// as zero. With INPUT_VEC4, i is a multiple of 4 and all four exist.
fn input_vec4(i: u32, left: u32) -> vec4<f32> {
#ifdef INPUT_VEC4
    return input4[i / 4u];
#else
    var x = vec4<f32>();
    for (var c = 0u; c < 4u; c++) {
        if (c < left) {
            x[c] = input[i + c];
        }
    }
    return x;
#endif
}

fn bias_at(column: u32) -> f32 {
#ifdef BIAS
    return bias[column];
#else
    return 0.0;
#endif
}

#ifdef GEMV
// Each workgroup computes WG_COLS output columns; THREADS_PER_COL threads share one
// column's K, taking every THREADS_PER_COL-th 32-element group, so K = 896 (28
// groups) keeps nearly every thread busy. One barrier, then one thread per
// (column, input row) sums its column's partials.
const WG: u32 = 64u;
const WG_COLS: u32 = GEMV_COLS;
const THREADS_PER_COL: u32 = WG / WG_COLS;
const ROWS: u32 = GEMV_ROWS;
var<workgroup> partial: array<f32, ROWS * WG>;

// sum_i w[i] * input[x + i] over the first `valid` of the group's 32 elements
// (x is a multiple of 4 when INPUT_VEC4 is defined).
fn group_dot(w: ptr<function, array<f32, 32>>, x: u32, valid: u32) -> f32 {
    var sum = vec4<f32>();
    if (valid == GROUP) {
        for (var i = 0u; i < GROUP; i += 4u) {
            sum += vec4<f32>((*w)[i], (*w)[i + 1u], (*w)[i + 2u], (*w)[i + 3u]) * input_vec4(x + i, 4u);
        }
    } else {
        for (var i = 0u; i < valid; i++) {
            sum.x += (*w)[i] * input_at(x + i);
        }
    }
    return sum.x + sum.y + sum.z + sum.w;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>,
#ifdef SUBGROUPS
        @builtin(subgroup_size) subgroup_size: u32,
#endif
        @builtin(local_invocation_index) lid: u32) {
    let col_base = (wid.x + wid.y * num.x) * WG_COLS;
    let lane = lid % THREADS_PER_COL;
    let n = col_base + lid / THREADS_PER_COL;
    let m0 = wid.z * ROWS;
    let rows = min(ROWS, params.m - m0);
    var acc = array<f32, ROWS>();
    var w: array<f32, 32>;
    if (n < params.chunk_rows) {
        let row_byte = n * params.row_bytes;
        for (var g = lane; g < params.groups; g += THREADS_PER_COL) {
            dequant_group(row_byte, g, params.k, &w);
            let k0 = g * GROUP;
            let valid = min(GROUP, params.k - k0);
            for (var r = 0u; r < ROWS; r++) {
                if (r < rows) {
                    acc[r] += group_dot(&w, (m0 + r) * params.k + k0, valid);
                }
            }
        }
    }
#ifdef SUBGROUPS
    // A column's lanes are consecutive invocations: butterfly-sum them within each
    // subgroup, leaving one partial per `span` lanes (subgroup sizes are powers of
    // two, so segments never straddle a subgroup).
    let span = min(subgroup_size, THREADS_PER_COL);
    for (var r = 0u; r < ROWS; r++) {
        var sum = acc[r];
        for (var offset = span / 2u; offset > 0u; offset /= 2u) {
            sum += subgroupShuffleXor(sum, offset);
        }
        acc[r] = sum;
    }
    let partials = THREADS_PER_COL / span;
    if (lane % span == 0u) {
        let column_slot = (lid / THREADS_PER_COL) * partials + lane / span;
        for (var r = 0u; r < ROWS; r++) {
            partial[r * WG + column_slot] = acc[r];
        }
    }
#else
    let partials = THREADS_PER_COL;
    for (var r = 0u; r < ROWS; r++) {
        partial[r * WG + lid] = acc[r];
    }
#endif
    workgroupBarrier();
    // Thread lid sums column lid % WG_COLS for input row lid / WG_COLS.
    let r = lid / WG_COLS;
    let c = lid % WG_COLS;
    let column_n = col_base + c;
    if (r < rows && column_n < params.chunk_rows) {
        var total = 0.0;
        for (var t = 0u; t < partials; t++) {
            total += partial[r * WG + c * partials + t];
        }
        let column = params.first_row + column_n;
        output[(m0 + r) * params.n_total + column] = total + bias_at(column);
    }
}
#endif

#ifdef GEMM
const BM: u32 = GEMM_ROWS;
const BN: u32 = 64u;
const WG: u32 = 128u;
// Input rows per register sub-tile: each thread accumulates BM / 32 4×4 tiles, rows
// 4 * (lid / 16) + 32 * s for s < BM / 32.
const SUB_TILES: u32 = BM / 32u;
// Input loaders (the upper 64 threads) per tile row, and the values each loads.
const LOADERS_PER_ROW: u32 = 64u / BM;
const LOAD_SPAN: u32 = GROUP / LOADERS_PER_ROW;
// Tiles are stored k-major in vec4s of consecutive rows: a_tile[kk * BM / 4 + m / 4]
// holds input rows m..m+4 at k step kk, b_tile[kk * BN / 4 + n / 4] weight rows n..n+4,
// so each thread reads its 4×4 operands with two vector loads per k.
var<workgroup> a_tile: array<vec4<f32>, BM * 8u>;
var<workgroup> b_tile: array<vec4<f32>, 512>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let n_base = (wid.x + wid.y * num.x) * BN;
    if (n_base >= params.chunk_rows) {
        return;
    }
    let m_base = wid.z * BM;
    let tm4 = lid / 16u;
    let tn4 = lid % 16u;
    var acc = array<vec4<f32>, SUB_TILES * 4u>();
    var w: array<f32, 32>;
    for (var g = 0u; g < params.groups; g++) {
        if (lid < BN) {
            // Half the threads decode one weight row's group each.
            let n = n_base + lid;
            if (n < params.chunk_rows) {
                dequant_group(n * params.row_bytes, g, params.k, &w);
            } else {
                w = array<f32, 32>();
            }
            for (var i = 0u; i < GROUP; i++) {
                b_tile[i * (BN / 4u) + lid / 4u][lid % 4u] = w[i];
            }
        } else {
            // The other half load LOAD_SPAN input values each.
            let t = lid - BN;
            let m = t / LOADERS_PER_ROW;
            let kk0 = (t % LOADERS_PER_ROW) * LOAD_SPAN;
            let row = m_base + m;
            for (var i = 0u; i < LOAD_SPAN; i += 4u) {
                let k = g * GROUP + kk0 + i;
                var x = vec4<f32>();
                if (row < params.m && k < params.k) {
                    x = input_vec4(row * params.k + k, params.k - k);
                }
                for (var c = 0u; c < 4u; c++) {
                    a_tile[(kk0 + i + c) * (BM / 4u) + m / 4u][m % 4u] = x[c];
                }
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < GROUP; kk++) {
            let b = b_tile[kk * (BN / 4u) + tn4];
            for (var s = 0u; s < SUB_TILES; s++) {
                let a = a_tile[kk * (BM / 4u) + tm4 + 8u * s];
                acc[4u * s] += a.x * b;
                acc[4u * s + 1u] += a.y * b;
                acc[4u * s + 2u] += a.z * b;
                acc[4u * s + 3u] += a.w * b;
            }
        }
        workgroupBarrier();
    }
    let tn = tn4 * 4u;
    for (var i = 0u; i < SUB_TILES * 4u; i++) {
        let row = m_base + tm4 * 4u + 32u * (i / 4u) + i % 4u;
        for (var j = 0u; j < 4u; j++) {
            let n = n_base + tn + j;
            if (row < params.m && n < params.chunk_rows) {
                let column = params.first_row + n;
                output[row * params.n_total + column] = acc[i][j] + bias_at(column);
            }
        }
    }
}
#endif
