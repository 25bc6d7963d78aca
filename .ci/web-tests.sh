#!/usr/bin/env bash
# Kernel tests in headless Chromium's WebGPU (tests/web.rs): installs what is missing
# on a Debian 12 machine (Chromium, chromedriver, the wasm32 target, and the
# wasm-bindgen test runner matching Cargo.lock), then runs them. Runs as root, from
# anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
need_apt=()
dpkg -s chromium >/dev/null 2>&1 || need_apt+=(chromium)
dpkg -s chromium-driver >/dev/null 2>&1 || need_apt+=(chromium-driver)
if ((${#need_apt[@]})); then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

rustup target list --installed | grep -qx wasm32-unknown-unknown ||
    rustup target add wasm32-unknown-unknown

# The runner must be exactly the wasm-bindgen version the crate links against.
wanted=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print }' Cargo.lock)
if [[ -z "$wanted" ]]; then
    echo "web-tests: no wasm-bindgen version in Cargo.lock" >&2
    exit 1
fi
export PATH="$HOME/.cargo/bin:$PATH"
installed=$(wasm-bindgen-test-runner --version 2>/dev/null | awk '{ print $2 }' || true)
if [[ "$installed" != "$wanted" ]]; then
    cargo install wasm-bindgen-cli --version "$wanted"
fi

export CHROMEDRIVER=/usr/bin/chromedriver
export WASM_BINDGEN_TEST_WEBDRIVER_JSON="$PWD/tests/webdriver.json"
# The whole suite runs in one page; SwiftShader on a shared CPU is slow.
export WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-300}"
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
cargo test --target wasm32-unknown-unknown --no-default-features --features web --test web
