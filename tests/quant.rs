//! CPU quantization and dequantization checked against the ecosystem's own code:
//! tests/fixtures/quant/quant.bin holds real GGUF blocks and reference quantizations
//! made by gguf-py and ggml (see make_fixture.py there for what and how). No GPU needed.

use safetyj::quant::{dequantize_to_vec, quantize, DType};
use safetyj::Error;

const FIXTURE: &[u8] = include_bytes!("fixtures/quant/quant.bin");

/// Every block type and plain float type safetyj stores.
const ALL: [DType; 10] = DType::ALL;

/// One fixture record: `bytes` are whole blocks of `dtype`, `floats` the values they
/// hold (dequantize: bytes are the input; quantize: floats are the input).
struct Record {
    quantize: bool,
    dtype: DType,
    label: String,
    bytes: Vec<u8>,
    floats: Vec<f32>,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        assert!(self.0.len() >= n, "quant fixture is truncated");
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
    fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take(2).try_into().unwrap())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
}

fn records() -> Vec<Record> {
    let mut r = Reader(FIXTURE);
    assert_eq!(r.take(8), b"SJQFIX01", "quant fixture magic");
    let count = r.u32();
    let records = (0..count)
        .map(|_| {
            let quantize = r.u8() == 1;
            let id = r.u32();
            let dtype = DType::from_gguf_id(id).unwrap_or_else(|| panic!("fixture type id {id}"));
            let label_len = r.u16() as usize;
            let label = String::from_utf8(r.take(label_len).to_vec()).unwrap();
            let byte_len = r.u32() as usize;
            let bytes = r.take(byte_len).to_vec();
            let float_len = r.u32() as usize;
            let floats = r
                .take(4 * float_len)
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            Record {
                quantize,
                dtype,
                label,
                bytes,
                floats,
            }
        })
        .collect();
    assert!(r.0.is_empty(), "quant fixture has trailing bytes");
    records
}

fn assert_every_type_covered(records: &[&Record], what: &str) {
    for dtype in ALL {
        assert!(
            records.iter().any(|r| r.dtype == dtype),
            "fixture has no {what} case for {dtype}"
        );
    }
}

#[test]
fn dequantize_matches_gguf_py_bit_for_bit_on_real_and_random_blocks() {
    let all = records();
    let cases: Vec<&Record> = all.iter().filter(|r| !r.quantize).collect();
    assert_every_type_covered(&cases, "dequantize");
    let mut failures = Vec::new();
    for case in &cases {
        let got = dequantize_to_vec(case.dtype, &case.bytes, case.floats.len()).unwrap();
        if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != case.floats[i].to_bits()) {
            failures.push(format!(
                "{} {}: element {i} is {:e}, gguf-py says {:e}",
                case.dtype, case.label, got[i], case.floats[i]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn quantize_matches_gguf_py_and_ggml_reference_bytes() {
    let all = records();
    let cases: Vec<&Record> = all.iter().filter(|r| r.quantize).collect();
    assert_every_type_covered(&cases, "quantize");
    let mut failures = Vec::new();
    for case in &cases {
        let got = quantize(case.dtype, &case.floats).unwrap();
        assert_eq!(
            got.len(),
            case.bytes.len(),
            "{} {}: length",
            case.dtype,
            case.label
        );
        if let Some(i) = (0..got.len()).find(|&i| got[i] != case.bytes[i]) {
            failures.push(format!(
                "{} {}: byte {i} (block {}) is {:#04x}, reference says {:#04x}",
                case.dtype,
                case.label,
                i / case.dtype.block_bytes(),
                got[i],
                case.bytes[i]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// A small deterministic generator (xorshift64*), so the data does not depend on
/// any crate's stream.
struct Gen(u64);

impl Gen {
    fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    }
    fn gaussian(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
    /// Laplace-distributed (heavier tails than a gaussian, like trained weights), with
    /// a rare large outlier.
    fn weight_like(&mut self) -> f32 {
        let u = self.uniform() - 0.5;
        let laplace = -u.signum() * (1.0 - 2.0 * u.abs()).ln() * 0.02;
        if self.uniform() < 0.002 {
            laplace * 20.0
        } else {
            laplace
        }
    }
}

/// Root mean square error of quantizing `x` to `dtype`, relative to the RMS of `x`.
fn relative_rmse(dtype: DType, x: &[f32]) -> f32 {
    let y = dequantize_to_vec(dtype, &quantize(dtype, x).unwrap(), x.len()).unwrap();
    let err: f64 = x
        .iter()
        .zip(&y)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let rms: f64 = x.iter().map(|a| (*a as f64).powi(2)).sum();
    (err / rms).sqrt() as f32
}

fn real_weights() -> Vec<f32> {
    records()
        .into_iter()
        .filter(|r| !r.quantize && r.label.starts_with("qwen") && r.dtype.block_elems() == 256)
        .flat_map(|r| r.floats)
        .collect()
}

#[test]
fn k_quant_round_trip_error_is_bounded_and_ordered() {
    let mut gen = Gen(0x5eed);
    let n = 256 * 64;
    // Per data set: upper bounds on relative RMSE for Q4_K, Q5_K, Q6_K, Q4_0, Q5_0,
    // Q8_0, about 1.2x what ggml's reference quantizers reach on it. The real weights
    // are partly Q6_K already, hence Q6_K's small error there.
    let data = [
        (
            "gaussian",
            (0..n).map(|_| gen.gaussian() * 0.02).collect::<Vec<_>>(),
            [0.086, 0.044, 0.022, 0.104, 0.052, 0.0065],
        ),
        (
            "weight-like",
            (0..n).map(|_| gen.weight_like()).collect(),
            [0.11, 0.056, 0.033, 0.144, 0.086, 0.012],
        ),
        (
            "real Qwen Q4_K/Q6_K weights",
            real_weights(),
            [0.076, 0.041, 0.012, 0.11, 0.058, 0.0067],
        ),
    ];
    let types = [
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
        DType::Q4_0,
        DType::Q5_0,
        DType::Q8_0,
    ];
    for (name, x, bounds) in &data {
        assert!(x.len() >= 256 * 8, "{name}: too little data");
        let err = |t: DType| relative_rmse(t, x);
        for (&dtype, &bound) in types.iter().zip(bounds) {
            let e = err(dtype);
            assert!(
                e < bound,
                "{name}: {dtype} relative RMSE {e} exceeds {bound}"
            );
        }
        assert!(
            err(DType::Q4_K) < err(DType::Q4_0),
            "{name}: Q4_K should beat Q4_0"
        );
        assert!(
            err(DType::Q5_K) < err(DType::Q5_0),
            "{name}: Q5_K should beat Q5_0"
        );
        assert!(
            err(DType::Q5_K) < err(DType::Q4_K),
            "{name}: Q5_K should beat Q4_K"
        );
        assert!(
            err(DType::Q6_K) < err(DType::Q5_K),
            "{name}: Q6_K should beat Q5_K"
        );
        assert!(
            err(DType::Q8_0) < err(DType::Q6_K),
            "{name}: Q8_0 should beat Q6_K"
        );
    }
}

#[test]
fn requantizing_dequantized_values_reproduces_the_bytes_for_plain_and_legacy_types() {
    // These quantizers send a block's extreme element to the extreme level, so the
    // dequantized block yields the same scale again. (K-quants search for their scales
    // and need not return to the same point.)
    let mut gen = Gen(7);
    let n = 256 * 64;
    let sets = [
        (
            "gaussian",
            (0..n).map(|_| gen.gaussian() * 0.02).collect::<Vec<_>>(),
        ),
        ("weight-like", (0..n).map(|_| gen.weight_like()).collect()),
        ("real", real_weights()),
    ];
    let types = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q8_0,
    ];
    for dtype in types {
        for (name, x) in &sets {
            let bytes = quantize(dtype, x).unwrap();
            let values = dequantize_to_vec(dtype, &bytes, x.len()).unwrap();
            assert!(
                quantize(dtype, &values).unwrap() == bytes,
                "{dtype} {name}: requantizing changed the bytes"
            );
        }
    }
}

#[test]
fn real_gguf_blocks_are_fixed_points_of_quantize() {
    // Every block llama.cpp wrote into the Qwen and SmolLM2 files (Q4_K, Q6_K, Q5_0,
    // Q8_0, Q4_1, F16, F32) comes back byte for byte from its own dequantized values:
    // a check on the real files' bytes, not only on gguf-py's quantizers.
    let all = records();
    let real: Vec<&Record> = all
        .iter()
        .filter(|r| !r.quantize && !r.label.starts_with("random"))
        .collect();
    assert!(
        real.len() >= 30,
        "fixture has only {} real cases",
        real.len()
    );
    for case in real {
        let got = quantize(case.dtype, &case.floats).unwrap();
        assert!(
            got == case.bytes,
            "{} {}: requantizing the real block changed its bytes",
            case.dtype,
            case.label
        );
    }
}

fn quantize_error(dtype: DType, values: &[f32]) -> String {
    match quantize(dtype, values) {
        Err(e @ (Error::Quantize { .. } | Error::Shape { .. })) => e.to_string(),
        other => panic!("{dtype}: expected a quantize error, got {other:?}"),
    }
}

#[test]
fn quantize_rejects_partial_blocks_non_finite_values_and_overflowing_scales() {
    for dtype in ALL {
        assert_eq!(
            quantize(dtype, &[]).unwrap(),
            Vec::<u8>::new(),
            "{dtype}: no values, no bytes"
        );
        let mut block = vec![0.25f32; dtype.block_elems()];
        if dtype.block_elems() > 1 {
            let short = &block[1..];
            let message = quantize_error(dtype, short);
            assert!(
                message.contains("not a whole number") && message.contains(dtype.name()),
                "{message}"
            );
        }
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let last = block.len() - 1;
            block[last] = bad;
            let message = quantize_error(dtype, &block);
            assert!(
                message.contains(&format!("element {last} is {bad}")),
                "{dtype}: {message}"
            );
        }
    }
    for (dtype, big) in [
        (DType::F16, 70000.0),
        (DType::BF16, f32::MAX),
        (DType::Q4_0, 1e6),
        (DType::Q4_1, 1e7),
        (DType::Q5_0, 2e6),
        (DType::Q8_0, 1e7),
        (DType::Q4_K, 1e9),
        (DType::Q5_K, 1e9),
        (DType::Q6_K, 1e9),
    ] {
        let mut values = vec![0.5f32; 2 * dtype.block_elems()];
        let last = values.len() - 1;
        values[last] = big;
        let message = quantize_error(dtype, &values);
        let at = if dtype.block_elems() == 1 {
            format!("element {last}")
        } else {
            "block 1".to_string()
        };
        assert!(
            message.contains(&at) && message.contains("largest finite"),
            "{dtype}: {message}"
        );
    }
}
