//! A private `XDG_RUNTIME_DIR` when the environment has none.
//!
//! Creating a Vulkan instance makes Mesa's window-system code look for a Wayland
//! display; libwayland then prints `error: XDG_RUNTIME_DIR is invalid or not set in
//! the environment.` (twice, on lavapipe) when the variable is missing, as it is in
//! containers and SSH sessions without a login manager. A new user reads that as
//! the tool failing. Pointing the variable at an empty folder of our own removes
//! the cause: there is no compositor socket in it, so the lookup fails quietly, as
//! it does on any desktop without Wayland.

use std::path::PathBuf;

/// Sets `XDG_RUNTIME_DIR` to `<safetyj cache>/runtime` (made with mode 0700, as the
/// XDG spec asks of a runtime folder) when it is unset or empty. Runs first in
/// `main`, before any thread exists, so changing the environment is sound. Does
/// nothing when no cache folder can be named or made: the message is then only
/// noise, never an error.
pub fn ensure() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|dir| !dir.is_empty()) {
        return;
    }
    if let Some(dir) = private_dir() {
        std::env::set_var("XDG_RUNTIME_DIR", dir);
    }
}

fn private_dir() -> Option<PathBuf> {
    let dir = safetyj::fetch::ModelCache::from_env()
        .ok()?
        .root()
        .join("runtime");
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&dir).ok()?;
    Some(dir)
}
