#!/usr/bin/env bash
# Builds the web app's engine into www/pkg (settings: wasm-pack.toml). Needs
# wasm-pack and the wasm-bindgen CLI of Cargo.lock on PATH, node and npm.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
exec node "$(dirname "$0")/build.mjs" "$@"
