//! `safetyj synth`: header-only skeletons and random-weight models with a real
//! model's exact layout, made from tiny-qwen2 written as GGUF.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use safetyj::formats::{FileSource, GgufFile, MmapSource};
use safetyj::model::load::GgufWeights;
use safetyj::model::synth::{synth_gguf, SynthOptions};
use safetyj::model::{Logits, Model};

use common::ctx;

/// A folder for this test binary's files.
fn dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("safetyj-synth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// tiny-qwen2 (Q/K/V biases) as a Q8_0 GGUF file, written once per test binary.
fn tiny_gguf() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| common::fixture_gguf("tiny-qwen2"))
}

fn synth(like: &Path, name: &str, seed: u64, header_only: bool) -> PathBuf {
    let out = dir().join(name);
    let report = synth_gguf(like, &out, &SynthOptions { seed, header_only }).unwrap();
    assert_eq!(report.bytes, std::fs::metadata(&out).unwrap().len());
    out
}

fn header(path: &Path) -> GgufFile {
    GgufFile::read_header_only(&FileSource::open(path).unwrap()).unwrap()
}

#[test]
fn a_header_only_file_keeps_every_metadata_pair_and_tensor_info() {
    let real = GgufFile::read(&FileSource::open(tiny_gguf()).unwrap()).unwrap();
    let skeleton_path = synth(tiny_gguf(), "skeleton.gguf", 0, true);
    let skeleton = header(&skeleton_path);
    assert_eq!(skeleton.metadata(), real.metadata());
    assert_eq!(skeleton.tensors(), real.tensors());
    assert_eq!(skeleton.file_len(), skeleton.data_offset());
    assert!(skeleton.file_len() < real.file_len() / 4);
}

#[test]
fn a_header_only_file_is_refused_by_the_model_loader_with_a_clear_error() {
    let skeleton = synth(tiny_gguf(), "refused.gguf", 0, true);
    let err = match GgufWeights::new(Box::new(MmapSource::open(&skeleton).unwrap())) {
        Ok(_) => panic!("a header-only file was accepted as a model"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("refused.gguf"), "{err}");
    assert!(err.contains("runs past the end of the file"), "{err}");
    assert!(err.contains("a header-only skeleton"), "{err}");
    let file = header(&skeleton);
    let first = &file.tensors()[0].name;
    let err = file
        .read_tensor(&FileSource::open(&skeleton).unwrap(), first)
        .unwrap_err()
        .to_string();
    assert!(err.contains("runs past the end of the file"), "{err}");
}

#[test]
fn a_synthetic_model_loads_and_gives_finite_logits() {
    let path = synth(tiny_gguf(), "model.gguf", 1, false);
    let real = GgufFile::read(&FileSource::open(tiny_gguf()).unwrap()).unwrap();
    let file = GgufFile::read(&FileSource::open(&path).unwrap()).unwrap();
    assert_eq!(file.tensors(), real.tensors());
    assert_eq!(file.file_len(), real.file_len());

    let ctx = ctx();
    let weights = GgufWeights::new(Box::new(MmapSource::open(&path).unwrap())).unwrap();
    let model = Model::load(ctx, &weights, |_, _| {}).unwrap();
    let mut session = model.new_session(ctx, 16).unwrap();
    let prompt = [1, 17, 42, 300, 5];
    let logits = model
        .forward(ctx, &mut session, &prompt, Logits::All)
        .unwrap()
        .read_f32(ctx)
        .unwrap();
    assert_eq!(logits.len(), prompt.len() * model.config.vocab);
    assert!(logits.iter().all(|v| v.is_finite()), "non-finite logits");
    let next = model
        .forward(ctx, &mut session, &[7], Logits::Last)
        .unwrap()
        .read_f32(ctx)
        .unwrap();
    assert!(
        next.iter().all(|v| v.is_finite()),
        "non-finite decode logits"
    );
    let spread =
        next.iter().fold(f32::MIN, |m, &v| m.max(v)) - next.iter().fold(f32::MAX, |m, &v| m.min(v));
    assert!(spread > 0.0, "constant logits");
}

#[test]
fn norms_are_near_one_and_the_same_seed_gives_the_same_bytes_from_a_skeleton() {
    let skeleton = synth(tiny_gguf(), "seed-skeleton.gguf", 0, true);
    let from_real = synth(tiny_gguf(), "seed-a.gguf", 5, false);
    let from_skeleton = synth(&skeleton, "seed-b.gguf", 5, false);
    let other_seed = synth(&skeleton, "seed-c.gguf", 6, false);
    let a = std::fs::read(&from_real).unwrap();
    assert!(
        a == std::fs::read(&from_skeleton).unwrap(),
        "same seed, different bytes"
    );
    assert!(
        a != std::fs::read(&other_seed).unwrap(),
        "different seeds, same bytes"
    );

    let source = FileSource::open(&from_real).unwrap();
    let file = GgufFile::read(&source).unwrap();
    let norm = file.read_tensor(&source, "output_norm.weight").unwrap();
    let values: &[f32] = bytemuck::cast_slice(&norm);
    assert!(values.iter().all(|v| (0.9..=1.1).contains(v)), "{values:?}");
    let bias = file.read_tensor(&source, "blk.0.attn_q.bias").unwrap();
    let values: &[f32] = bytemuck::cast_slice(&bias);
    assert!(values.iter().all(|v| v.abs() <= 0.02), "{values:?}");
}

#[test]
fn bad_inputs_and_unwritable_outputs_are_clear_errors() {
    let dir = dir();
    let error = |like: &Path, out: &Path| {
        synth_gguf(like, out, &SynthOptions::default())
            .unwrap_err()
            .to_string()
    };
    let out = dir.join("never.gguf");

    let text = dir.join("notes.txt");
    std::fs::write(&text, "these are not the weights you are looking for").unwrap();
    let err = error(&text, &out);
    assert!(
        err.contains("notes.txt") && err.contains("not a GGUF file"),
        "{err}"
    );

    let bytes = std::fs::read(tiny_gguf()).unwrap();
    let cut = dir.join("cut.gguf");
    std::fs::write(&cut, &bytes[..200]).unwrap();
    let err = error(&cut, &out);
    assert!(
        err.contains("cut.gguf") && err.contains("truncated"),
        "{err}"
    );

    let err = error(&dir.join("absent.gguf"), &out);
    assert!(err.contains("absent.gguf"), "{err}");
    assert!(!out.exists());

    let unwritable = dir.join("no-such-folder").join("model.gguf");
    let err = error(tiny_gguf(), &unwritable);
    assert!(
        err.starts_with("writing ") && err.contains("no-such-folder"),
        "{err}"
    );
}
