//! Helpers shared by the native integration tests: one GPU context per test binary,
//! the real model files from package-registry weights, and fixture parsing.
//!
//! Each test binary compiles this module on its own and uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use safetyj::gpu::Context;

/// The GPU context of this test binary, created on first use.
pub fn ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        Context::new_blocking().expect("a GPU adapter (install mesa-vulkan-drivers)")
    })
}

/// Where tests/fixtures/fetch_models.sh puts the real GGUF files:
/// `SAFETYJ_MODELS_DIR`, default `~/.cache/safetyj/models`.
pub fn models_dir() -> PathBuf {
    match std::env::var_os("SAFETYJ_MODELS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/safetyj/models"),
    }
}

/// The path of a real model file, or `None` (the caller skips) when it is absent
/// outside CI; under CI a missing file fails the test.
pub fn real_model(file: &str) -> Option<PathBuf> {
    let path = models_dir().join(file);
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI needs {} (run tests/fixtures/fetch_models.sh)",
        path.display()
    );
    eprintln!(
        "skipping: {} not found (run tests/fixtures/fetch_models.sh)",
        path.display()
    );
    None
}

/// The Safety-J data shipped in the project (`data/safety-j/<sub>`).
pub fn safety_j_data(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/safety-j")
        .join(sub)
}

/// The path of a file under tests/fixtures.
pub fn fixture_path(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

/// A fixture checkpoint (`tests/fixtures/models/<name>`) converted to a Q8_0 GGUF
/// file by `safetyj quantize`'s library function, once per test binary.
pub fn fixture_gguf(name: &str) -> PathBuf {
    static MADE: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut made = MADE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, path)) = made.iter().find(|(n, _)| n == name) {
        return path.clone();
    }
    let dir = std::env::temp_dir().join(format!("safetyj-fixtures-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!("{name}.gguf"));
    safetyj::model::convert::quantize_checkpoint(
        &fixture_path(&format!("models/{name}")),
        &out,
        safetyj::quant::DType::Q8_0,
        &mut |_, _, _| {},
    )
    .unwrap();
    made.push((name.to_string(), out.clone()));
    out
}

/// A JSON fixture under tests/fixtures.
pub fn json_fixture(path: &str) -> serde_json::Value {
    let path = fixture_path(path);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A JSON array of token ids.
pub fn ids(value: &serde_json::Value) -> Vec<u32> {
    value
        .as_array()
        .expect("an array of token ids")
        .iter()
        .map(|v| v.as_u64().expect("a token id") as u32)
        .collect()
}
