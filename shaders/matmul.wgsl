// output[m, first_row + n] = sum_k input[m, k] * weight[n, k] (+ bias[first_row + n])
// for the rows n of one weight chunk, decoded from GGUF blocks 32 elements at a time.
// GEMV: a workgroup per output column and up to GEMV_ROWS input rows; threads split
// K by 32-element groups, then a tree reduction. GEMM: a workgroup per 32×64 output
// tile; each K step decodes a 64×32 weight tile and loads a 32×32 input tile into
// workgroup memory once, and every thread accumulates a 4×4 register tile.

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
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read> weights: array<u32>;
@group(0) @binding(3) var<storage, read_write> output: array<f32>;
#ifdef BIAS
@group(0) @binding(4) var<storage, read> bias: array<f32>;
#endif

#include "bytes.wgsl"
#include "dequant.wgsl"

fn bias_at(column: u32) -> f32 {
#ifdef BIAS
    return bias[column];
#else
    return 0.0;
#endif
}

#ifdef GEMV
const WG: u32 = 64u;
const ROWS: u32 = GEMV_ROWS;
var<workgroup> partial: array<f32, ROWS * WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let n = wid.x + wid.y * num.x;
    if (n >= params.chunk_rows) {
        return;
    }
    let m0 = wid.z * ROWS;
    let rows = min(ROWS, params.m - m0);
    var acc = array<f32, ROWS>();
    var w: array<f32, 32>;
    let row_byte = n * params.row_bytes;
    for (var g = lid; g < params.groups; g += WG) {
        dequant_group(row_byte, g, params.k, &w);
        let k0 = g * GROUP;
        let valid = min(GROUP, params.k - k0);
        for (var r = 0u; r < rows; r++) {
            let x = (m0 + r) * params.k + k0;
            var sum = 0.0;
            for (var i = 0u; i < valid; i++) {
                sum += w[i] * input[x + i];
            }
            acc[r] += sum;
        }
    }
    for (var r = 0u; r < ROWS; r++) {
        partial[r * WG + lid] = acc[r];
    }
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            for (var r = 0u; r < ROWS; r++) {
                partial[r * WG + lid] += partial[r * WG + lid + stride];
            }
        }
        workgroupBarrier();
    }
    if (lid < rows) {
        let column = params.first_row + n;
        output[(m0 + lid) * params.n_total + column] = partial[lid * WG] + bias_at(column);
    }
}
#endif

#ifdef GEMM
const BM: u32 = 32u;
const BN: u32 = 64u;
const WG: u32 = 128u;
// Tiles are stored k-major: a_tile[kk * BM + m], b_tile[kk * BN + n].
var<workgroup> a_tile: array<f32, 1024>;
var<workgroup> b_tile: array<f32, 2048>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let n_base = (wid.x + wid.y * num.x) * BN;
    if (n_base >= params.chunk_rows) {
        return;
    }
    let m_base = wid.z * BM;
    let tm = (lid / 16u) * 4u;
    let tn = (lid % 16u) * 4u;
    var acc = array<f32, 16>();
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
                b_tile[i * BN + lid] = w[i];
            }
        } else {
            // The other half load 16 input values each.
            let t = lid - BN;
            let m = t / 2u;
            let kk0 = (t % 2u) * 16u;
            let row = m_base + m;
            for (var i = 0u; i < 16u; i++) {
                let k = g * GROUP + kk0 + i;
                var x = 0.0;
                if (row < params.m && k < params.k) {
                    x = input[row * params.k + k];
                }
                a_tile[(kk0 + i) * BM + m] = x;
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < GROUP; kk++) {
            let a = vec4<f32>(a_tile[kk * BM + tm], a_tile[kk * BM + tm + 1u],
                              a_tile[kk * BM + tm + 2u], a_tile[kk * BM + tm + 3u]);
            let b = vec4<f32>(b_tile[kk * BN + tn], b_tile[kk * BN + tn + 1u],
                              b_tile[kk * BN + tn + 2u], b_tile[kk * BN + tn + 3u]);
            for (var i = 0u; i < 4u; i++) {
                acc[i * 4u] += a[i] * b.x;
                acc[i * 4u + 1u] += a[i] * b.y;
                acc[i * 4u + 2u] += a[i] * b.z;
                acc[i * 4u + 3u] += a[i] * b.w;
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let row = m_base + tm + i;
        for (var j = 0u; j < 4u; j++) {
            let n = n_base + tn + j;
            if (row < params.m && n < params.chunk_rows) {
                let column = params.first_row + n;
                output[row * params.n_total + column] = acc[i * 4u + j] + bias_at(column);
            }
        }
    }
}
#endif
