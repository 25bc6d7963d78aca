//! The `safetyj` binary as a new user meets it: output free of other programs' noise.

use std::process::Command;

/// Without `XDG_RUNTIME_DIR` (containers, SSH sessions), Mesa's Wayland lookup
/// prints "error: XDG_RUNTIME_DIR is invalid or not set" when the Vulkan instance is
/// created; the CLI gives it a private folder first, so stderr stays clean.
#[test]
fn devices_without_xdg_runtime_dir_prints_no_runtime_dir_error() {
    let cache = std::env::temp_dir().join(format!("safetyj-cli-test-{}", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_safetyj"))
        .arg("devices")
        .env_remove("XDG_RUNTIME_DIR")
        .env("SAFETYJ_CACHE", &cache)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let _ = std::fs::remove_dir_all(&cache);
    assert!(
        output.status.success(),
        "safetyj devices failed: {stderr}{stdout}"
    );
    assert!(
        !stderr.contains("XDG_RUNTIME_DIR"),
        "stderr mentions XDG_RUNTIME_DIR:\n{stderr}"
    );
    assert!(stdout.contains("selected GPU:"), "{stdout}");
    assert!(stdout.contains("runs on: "), "{stdout}");
}
