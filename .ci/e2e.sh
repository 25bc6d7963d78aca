#!/usr/bin/env bash
# End-to-end test of the web app in headless Chromium (tests/e2e/): installs what is
# missing on a Debian 12 machine (Chromium, the wasm32 target, the wasm-bindgen CLI
# of Cargo.lock, wasm-pack, the npm packages of www/ and tests/e2e/), fetches the
# test model, builds the native CLI (the reference) and the web engine, then runs
# the server tests and the browser test. Runs as root, from anywhere. Screenshots go
# to $SAFETYJ_ARTIFACTS (default target/e2e-artifacts).
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
step() {
    echo "e2e.sh: $1 (at $((SECONDS - started)) s)"
}

export DEBIAN_FRONTEND=noninteractive
need_apt=()
# fonts-wqy-microhei: Chinese glyphs for the 中文 screenshots (Chromium shows boxes without a CJK font).
for pkg in mesa-vulkan-drivers chromium fonts-wqy-microhei; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
if ((${#need_apt[@]})); then
    step "installing ${need_apt[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/safetyj-xdg}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"

export PATH="$HOME/.cargo/bin:$PATH"
rustup target list --installed | grep -qx wasm32-unknown-unknown ||
    rustup target add wasm32-unknown-unknown

# wasm-pack runs the wasm-bindgen CLI found on PATH; it must be Cargo.lock's version.
wanted=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print }' Cargo.lock)
installed=$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)
if [[ -n "$wanted" && "$installed" != "$wanted" ]]; then
    step "installing wasm-bindgen-cli $wanted"
    cargo install wasm-bindgen-cli --version "$wanted"
fi
if ! command -v wasm-pack >/dev/null; then
    step "installing wasm-pack"
    cargo install wasm-pack --locked
fi

export SAFETYJ_MODELS_DIR="${SAFETYJ_MODELS_DIR:-${SAFETYJ_CACHE:-$HOME/.cache/safetyj}/models}"
step "fetching the test models"
bash tests/fixtures/fetch_models.sh "$SAFETYJ_MODELS_DIR" qwen2.5-coder-0.5b tinycoder

step "building the native CLI (the reference engine)"
cargo build --bin safetyj

step "building the web engine (www/build.sh)"
[[ -x www/node_modules/.bin/wasm-opt ]] || npm ci --no-audit --no-fund --prefix www
bash www/build.sh

step "installing playwright-core and typescript"
[[ -d tests/e2e/node_modules/playwright-core && -d tests/e2e/node_modules/typescript ]] ||
    npm ci --no-audit --no-fund --prefix tests/e2e

step "type-checking the JS API's declarations (www/pkg/safetyj.d.ts, www/judge-client.d.ts)"
tests/e2e/node_modules/.bin/tsc -p tests/e2e

step "server and app tests (scripted engine)"
node --test tests/e2e/serve.test.mjs tests/e2e/app.test.mjs tests/e2e/judge-stream.test.mjs

step "browser test"
node tests/e2e/e2e.mjs

step "done"
