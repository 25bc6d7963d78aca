#!/usr/bin/env bash
# Prepares .devbench/, what a lent GPU machine (no internet, no Rust toolchain, 64 MiB
# of carried files) needs to run scripts/device-bench.sh:
#   safetyj              the release CLI (stripped)
#   lib-tests            the release lib test binary: the kernel tests vs CPU references
#   *.skel.gguf          header-only skeletons of the benchmarked models (metadata,
#                        tokenizer, tensor infos; no weights): device-bench.sh synthesizes
#                        random weights of exactly their tensor types from them
#   gl/*.deb             the Vulkan/GL loaders, unpacked there when the machine lacks them
# then prints the total size (it must stay under 60 MiB) and the exact `run` call.
#
# Usage: scripts/prepare-device-bench.sh
# Environment: DEVBENCH_MODELS (presets to make skeletons of, space-separated;
# default "qwen2.5-coder-1.5b qwen2.5-coder-0.5b"; fetched into the model cache on
# first use), SKIP_GL=1 to skip downloading the loader debs.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
dest=.devbench
models="${DEVBENCH_MODELS:-qwen2.5-coder-1.5b qwen2.5-coder-0.5b}"
limit_mib=60

echo "building the release CLI and lib test binary" >&2
cargo build --release --bin safetyj >&2
tests_bin="$(cargo test --release --lib --no-run --message-format=json |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        print(m["executable"])')"
if [[ -z "$tests_bin" || ! -x "$tests_bin" ]]; then
    echo "cargo did not report the lib test binary (run cargo test --release --lib --no-run)" >&2
    exit 1
fi

mkdir -p "$dest"
rm -f "$dest"/*.skel.gguf
cp target/release/safetyj "$dest/safetyj"
cp "$tests_bin" "$dest/lib-tests"
strip "$dest/safetyj" "$dest/lib-tests"

for model in $models; do
    echo "header-only skeleton of $model" >&2
    "$dest/safetyj" synth --like "$model" --out "$dest/$model.skel.gguf" --header-only
done

if [[ -z "${SKIP_GL:-}" ]]; then
    echo "downloading the Vulkan/GL loader debs (amd64) into $dest/gl" >&2
    lists=/tmp/devbench-apt-amd64
    mkdir -p "$dest/gl" "$lists/partial"
    apt_arch=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$lists")
    apt-get "${apt_arch[@]}" update >&2
    # apt's sandbox user must be able to write where the debs land.
    debs="$(mktemp -d)"
    chmod 777 "$debs"
    (cd "$debs" && apt-get "${apt_arch[@]}" download \
        libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 >&2)
    rm -f "$dest"/gl/*.deb
    mv "$debs"/*.deb "$dest/gl/"
    rmdir "$debs"
fi

total_bytes="$(du -sb "$dest" | cut -f1)"
total_mib=$(( (total_bytes + (1 << 20) - 1) >> 20 ))
du -sh "$dest"/* "$dest"/gl 2>/dev/null >&2 || true
echo "total $total_mib MiB in $dest (limit $limit_mib MiB)"
if (( total_mib >= limit_mib )); then
    echo "$dest is too large to travel with the working tree" >&2
    exit 1
fi
cat <<EOF

Run it on the lent GPU from the checkout the device tool sends (this script must
have run in that checkout, so that .devbench is there), in one call; the script keeps
itself inside ~7 minutes:
  run(command="bash scripts/device-bench.sh", carry=[".devbench"], timeout_s=540)
Every bench JSON, the kernel-test log and the summary land in \$OUT; call give_back after.
EOF
