// Byte-addressed reads from a weight buffer bound as array<u32>. GGUF blocks are
// bound unchanged, so fields sit at any byte offset; these helpers hide that.
// The including shader declares `weights: array<u32>` before including this file.

fn load_u8(byte: u32) -> u32 {
    return (weights[byte >> 2u] >> ((byte & 3u) * 8u)) & 0xffu;
}

// A little-endian u16 at an even byte offset.
fn load_u16(byte: u32) -> u32 {
    return (weights[byte >> 2u] >> ((byte & 2u) * 8u)) & 0xffffu;
}

// A little-endian u32 at any byte offset.
fn load_u32(byte: u32) -> u32 {
    let shift = (byte & 3u) * 8u;
    let lo = weights[byte >> 2u];
    if (shift == 0u) {
        return lo;
    }
    let hi = weights[(byte >> 2u) + 1u];
    return (lo >> shift) | (hi << (32u - shift));
}

fn load_f16(byte: u32) -> f32 {
    return unpack2x16float(load_u16(byte)).x;
}

fn load_bf16(byte: u32) -> f32 {
    return bitcast<f32>(load_u16(byte) << 16u);
}
