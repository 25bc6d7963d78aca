// Decoding of weight rows kept in their GGUF block layout, 32 elements at a time.
// Every quant block splits into whole 32-element groups; float rows are decoded in
// the same 32-wide groups with elements past the row end read as zero.
// The including shader declares `weights: array<u32>`, includes "bytes.wgsl" first,
// and defines exactly one of F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K.
//
// dequant_group(row_byte, group, cols, out): the 32 values of elements
// [32 * group, 32 * group + 32) of the row starting at byte `row_byte` of `weights`,
// which holds `cols` elements.

const GROUP: u32 = 32u;

#ifdef F32
fn dequant_group(row_byte: u32, group: u32, cols: u32, out: ptr<function, array<f32, 32>>) {
    let first = (row_byte >> 2u) + group * GROUP;
    let valid = min(GROUP, cols - group * GROUP);
    for (var i = 0u; i < GROUP; i++) {
        (*out)[i] = select(0.0, bitcast<f32>(weights[first + min(i, valid - 1u)]), i < valid);
    }
}
#endif

#ifdef F16
fn dequant_group(row_byte: u32, group: u32, cols: u32, out: ptr<function, array<f32, 32>>) {
    let first = row_byte + group * GROUP * 2u;
    let valid = min(GROUP, cols - group * GROUP);
    for (var i = 0u; i < GROUP; i++) {
        (*out)[i] = select(0.0, load_f16(first + 2u * min(i, valid - 1u)), i < valid);
    }
}
#endif

#ifdef BF16
fn dequant_group(row_byte: u32, group: u32, cols: u32, out: ptr<function, array<f32, 32>>) {
    let first = row_byte + group * GROUP * 2u;
    let valid = min(GROUP, cols - group * GROUP);
    for (var i = 0u; i < GROUP; i++) {
        (*out)[i] = select(0.0, load_bf16(first + 2u * min(i, valid - 1u)), i < valid);
    }
}
#endif

// Blocks of 18, 22 and 34 bytes start on a word boundary or half-way into a word
// (`mid`). With the block's words loaded, these read its fields.

// The 16 bits at block byte 0 of `word`, the block's first word.
fn half_word(word: u32, mid: bool) -> u32 {
    return select(word & 0xffffu, word >> 16u, mid);
}

// The 32 bits at block byte 4i + 2, given the block's words i and i + 1.
fn word_after_half(word: u32, next: u32, mid: bool) -> u32 {
    return select((word >> 16u) | (next << 16u), next, mid);
}

// The 32 bits at byte 0 (or, when `mid`, byte 2) of `word`, continued into `next`.
fn word_from(word: u32, next: u32, mid: bool) -> u32 {
    return select(word, (word >> 16u) | (next << 16u), mid);
}

#ifdef Q4_0
// 18-byte blocks: f16 d, 16 bytes of nibbles (low nibbles are elements 0..16). A
// block starts on a word or half-word boundary; its 5 words are loaded once.
fn dequant_group(row_byte: u32, group: u32, cols: u32, out: ptr<function, array<f32, 32>>) {
    let base = row_byte + group * 18u;
    let first = base >> 2u;
    let words = array<u32, 5>(weights[first], weights[first + 1u], weights[first + 2u],
                              weights[first + 3u], weights[first + 4u]);
    let mid = (base & 2u) != 0u;
    let d = unpack2x16float(half_word(words[0], mid)).x;
    for (var w = 0u; w < 4u; w++) {
        let word = word_after_half(words[w], words[w + 1u], mid);
        for (var b = 0u; b < 4u; b++) {
            let byte = (word >> (8u * b)) & 0xffu;
            (*out)[4u * w + b] = f32(i32(byte & 0xfu) - 8) * d;
            (*out)[4u * w + b + 16u] = f32(i32(byte >> 4u) - 8) * d;
        }
    }
}
#endif

#ifdef Q4_1
// 20-byte blocks: f16 d, f16 m, 16 bytes of nibbles.
fn dequant_group(row_byte: u32, group: u32, cols: u32, out: ptr<function, array<f32, 32>>) {
    let base = row_byte + group * 20u;
    let d = load_f16(base);
    let m = load_f16(base + 2u);
    for (var w = 0u; w < 4u; w++) {
        let word = load_u32(base + 4u + 4u * w);
        for (var b = 0u; b < 4u; b++) {
            let byte = (word >> (8u * b)) & 0xffu;
            (*out)[4u * w + b] = f32(byte & 0xfu) * d + m;
            (*out)[4u * w + b + 16u] = f32(byte >> 4u) * d + m;
        }
    }
}
#endif

#ifdef Q5_0
// 22-byte blocks: f16 d, u32 of fifth bits, 16 bytes of nibbles. A block starts on a
// word or half-word boundary; its 6 words are loaded once.
fn dequant_group(row_byte: u32, group: u32, cols: u32, out: ptr<function, array<f32, 32>>) {
    let base = row_byte + group * 22u;
    let first = base >> 2u;
    let words = array<u32, 6>(weights[first], weights[first + 1u], weights[first + 2u],
                              weights[first + 3u], weights[first + 4u], weights[first + 5u]);
    let mid = (base & 2u) != 0u;
    let d = unpack2x16float(half_word(words[0], mid)).x;
    let qh = word_after_half(words[0], words[1], mid);
    for (var w = 0u; w < 4u; w++) {
        let word = word_after_half(words[w + 1u], words[w + 2u], mid);
        for (var b = 0u; b < 4u; b++) {
            let j = 4u * w + b;
            let byte = (word >> (8u * b)) & 0xffu;
            let lo = (byte & 0xfu) | (((qh >> j) << 4u) & 0x10u);
            let hi = (byte >> 4u) | ((qh >> (j + 12u)) & 0x10u);
            (*out)[j] = f32(i32(lo) - 16) * d;
            (*out)[j + 16u] = f32(i32(hi) - 16) * d;
        }
    }
}
#endif

#ifdef Q8_0
// 34-byte blocks: f16 d, 32 signed bytes. A block starts on a word or half-word
// boundary; its 9 words are loaded once.
fn dequant_group(row_byte: u32, group: u32, cols: u32, out: ptr<function, array<f32, 32>>) {
    let base = row_byte + group * 34u;
    let first = base >> 2u;
    var words: array<u32, 9>;
    for (var i = 0u; i < 9u; i++) {
        words[i] = weights[first + i];
    }
    let mid = (base & 2u) != 0u;
    let d = unpack2x16float(half_word(words[0], mid)).x;
    for (var w = 0u; w < 8u; w++) {
        let word = bitcast<i32>(word_after_half(words[w], words[w + 1u], mid));
        for (var b = 0u; b < 4u; b++) {
            (*out)[4u * w + b] = f32(extractBits(word, 8u * b, 8u)) * d;
        }
    }
}
#endif

#ifdef Q4_K
// 144-byte blocks of 256: f16 d, f16 dmin, 12 bytes of scales/mins, 128 bytes of
// nibbles; 64-element chunk c takes low then high nibbles of bytes 32c..32c+32.
#define K_SCALES
#define K_BLOCK_WORDS 36u
#define K_NIBBLES_WORD 4u
#endif
#ifdef Q5_K
// 176-byte blocks of 256: like Q4_K plus 32 bytes of fifth bits (bit j of byte l
// belongs to element l of sub-block j) before the nibbles.
#define K_SCALES
#define K_BLOCK_WORDS 44u
#define K_NIBBLES_WORD 12u
#endif

#ifdef K_SCALES
// The 6-bit scale and min of sub-block `j` (0..8) from the 12 packed scale bytes,
// given as three little-endian words.
fn k_scale_min(s0: u32, s1: u32, s2: u32, j: u32) -> vec2<f32> {
    let shift = 8u * (j % 4u);
    let low = (s0 >> shift) & 0xffu;
    let high = (s1 >> shift) & 0xffu;
    if (j < 4u) {
        return vec2<f32>(f32(low & 63u), f32(high & 63u));
    }
    let packed = (s2 >> shift) & 0xffu;
    return vec2<f32>(f32((packed & 0xfu) | ((low >> 6u) << 4u)),
                     f32((packed >> 4u) | ((high >> 6u) << 4u)));
}

// Q4_K and Q5_K: group `group` is sub-block `group % 8` of its block, scaled by
// d * scale and shifted by dmin * min. Blocks are K_BLOCK_WORDS words and rows start
// on a word, so every field is read as words.
fn dequant_group(row_byte: u32, group: u32, cols: u32, out: ptr<function, array<f32, 32>>) {
    let first = (row_byte >> 2u) + (group / 8u) * K_BLOCK_WORDS;
    let sub = group % 8u;
    let d_dmin = unpack2x16float(weights[first]);
    let sm = k_scale_min(weights[first + 1u], weights[first + 2u], weights[first + 3u], sub);
    let scale = d_dmin.x * sm.x;
    let offset = d_dmin.y * sm.y;
    let qs = first + K_NIBBLES_WORD + 8u * (sub / 2u);
    let shift = 4u * (sub % 2u);
    for (var w = 0u; w < 8u; w++) {
        let word = weights[qs + w] >> shift;
#ifdef Q5_K
        let fifth = weights[first + 4u + w] >> sub;
#endif
        for (var b = 0u; b < 4u; b++) {
            var q = (word >> (8u * b)) & 0xfu;
#ifdef Q5_K
            q |= ((fifth >> (8u * b)) & 1u) << 4u;
#endif
            (*out)[4u * w + b] = scale * f32(q) - offset;
        }
    }
}
#endif

#ifdef Q6_K
// 210-byte blocks of 256: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs,
// 16 signed scales (one per 16 elements), f16 d at byte 208. Each 128-element half
// has four 32-element quarters q: low nibbles from ql[32 * (q % 2)..] shifted by
// 4 * (q / 2), high bits from qh shifted by 2 * q. A block starts on a word or
// half-way into one (`mid`); the 8 words of each field are assembled from 9 loads.
fn dequant_group(row_byte: u32, group: u32, cols: u32, out: ptr<function, array<f32, 32>>) {
    let base = row_byte + (group / 8u) * 210u;
    let mid = (base & 2u) != 0u;
    let half = (group % 8u) / 4u;
    let quarter = group % 4u;
    let d = load_f16(base + 208u);
    let ql = (base + 64u * half + 32u * (quarter % 2u)) >> 2u;
    let qh = (base + 128u + 32u * half) >> 2u;
    let low_shift = 4u * (quarter / 2u);
    let high_shift = 2u * quarter;
    let scales = bitcast<i32>(load_u16(base + 192u + 8u * half + 2u * quarter));
    let scale0 = d * f32(extractBits(scales, 0u, 8u));
    let scale1 = d * f32(extractBits(scales, 8u, 8u));
    var low_words: array<u32, 9>;
    var high_words: array<u32, 9>;
    for (var i = 0u; i < 9u; i++) {
        low_words[i] = weights[ql + i];
        high_words[i] = weights[qh + i];
    }
    for (var w = 0u; w < 8u; w++) {
        let low = word_from(low_words[w], low_words[w + 1u], mid) >> low_shift;
        let high = word_from(high_words[w], high_words[w + 1u], mid) >> high_shift;
        let scale = select(scale1, scale0, w < 4u);
        for (var b = 0u; b < 4u; b++) {
            let q = ((low >> (8u * b)) & 0xfu) | (((high >> (8u * b)) & 3u) << 4u);
            (*out)[4u * w + b] = scale * f32(i32(q) - 32);
        }
    }
}
#endif
