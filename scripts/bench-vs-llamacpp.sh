#!/usr/bin/env bash
# safetyj and llama.cpp (CPU) side by side on the same GGUF model and machine.
#
# Builds llama.cpp from PyPI's llama-cpp-python sdist into a venv (reused when
# present; ~20 min on 2 cores the first time), runs `safetyj bench --json` and
# scripts/llamacpp_bench.py with the same prompt and generation lengths, and prints
# one JSON object: both results, the ratios safetyj / llama.cpp, and each side's
# device and backend.
#
# Usage: scripts/bench-vs-llamacpp.sh [MODEL.gguf]
# Environment: PROMPT_TOKENS (64), GEN_TOKENS (16), THREADS (all cores) for both
# (RAYON_NUM_THREADS for safetyj's CPU engine), DEVICE (cpu, or gpu: safetyj's
# engine), VENV (target/llamacpp-venv), PYTHON (python3) to create the venv.
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION=0.3.36
root="$(cd "$(dirname "$0")/.." && pwd)"
model="${1:-$HOME/.cache/safetyj/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf}"
prompt_tokens="${PROMPT_TOKENS:-64}"
gen_tokens="${GEN_TOKENS:-16}"
threads="${THREADS:-$(nproc)}"
device="${DEVICE:-cpu}"
venv="${VENV:-$root/target/llamacpp-venv}"
out="$root/target/bench-vs-llamacpp"

if [[ ! -f "$model" ]]; then
    echo "no model at $model (pass a GGUF path)" >&2
    exit 2
fi
mkdir -p "$out"

if ! "$venv/bin/python" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LLAMA_CPP_PYTHON_VERSION')" 2>/dev/null; then
    echo "building llama-cpp-python $LLAMA_CPP_PYTHON_VERSION (CPU) into $venv" >&2
    "${PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip >&2
    CMAKE_ARGS="-DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_BLAS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
        CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
        "$venv/bin/pip" install --no-binary llama-cpp-python \
        "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" >&2
fi

echo "building safetyj (release)" >&2
(cd "$root" && cargo build --release --quiet --bin safetyj)

echo "safetyj bench --device $device: $prompt_tokens prompt tokens, $gen_tokens generated" >&2
RAYON_NUM_THREADS="$threads" "$root/target/release/safetyj" bench --model "$model" --json \
    --device "$device" --prompt-tokens "$prompt_tokens" --gen-tokens "$gen_tokens" \
    >"$out/safetyj.json"

echo "llama.cpp: same lengths, $threads threads" >&2
"$venv/bin/python" "$root/scripts/llamacpp_bench.py" --model "$model" \
    --prompt-tokens "$prompt_tokens" --gen-tokens "$gen_tokens" \
    --threads "$threads" >"$out/llamacpp.json"

"$venv/bin/python" - "$out/safetyj.json" "$out/llamacpp.json" <<'PY'
import json
import sys

with open(sys.argv[1]) as f:
    ours = json.load(f)
with open(sys.argv[2]) as f:
    theirs = json.load(f)


def ratio(a, b):
    return a / b if a and b else None


def per_cpu_second(tokens, cpu_seconds):
    return tokens / cpu_seconds if tokens and cpu_seconds else None


# The CPU engine's report names its engine and threads; the WGSL engine's its
# adapter, backend and CPU seconds.
cpu_engine = "engine" in ours
safetyj = {
    "device": ours["engine"] if cpu_engine else ours["adapter"],
    "backend": "safetyj CPU engine" if cpu_engine else "safetyj wgpu " + ours["backend"],
    "threads": ours.get("threads"),
    "prefill_tokens_per_second": ours["prefill_tokens_per_second"],
    "prefill_tokens_per_cpu_second": per_cpu_second(ours["prompt_tokens"], ours.get("prefill_cpu_seconds")),
    "decode_tokens_per_second": ours["decode_tokens_per_second"],
    "decode_tokens_per_cpu_second": per_cpu_second(ours["gen_tokens"], ours.get("decode_cpu_seconds")),
    "report": ours,
}
llamacpp = {
    "device": theirs["device"],
    "backend": theirs["backend"],
    "threads": theirs["threads"],
    "prefill_tokens_per_second": theirs["prefill_tokens_per_second"],
    "prefill_tokens_per_cpu_second": per_cpu_second(theirs["prompt_tokens"], theirs["prefill_cpu_seconds"]),
    "decode_tokens_per_second": theirs["decode_tokens_per_second"],
    "decode_tokens_per_cpu_second": per_cpu_second(theirs["gen_tokens"], theirs["decode_cpu_seconds"]),
    "report": theirs,
}
print(json.dumps({
    "model": ours["model"],
    "prompt_tokens": ours["prompt_tokens"],
    "gen_tokens": ours["gen_tokens"],
    "safetyj": safetyj,
    "llamacpp": llamacpp,
    "ratios_safetyj_over_llamacpp": {
        key: ratio(safetyj[key], llamacpp[key])
        for key in [
            "prefill_tokens_per_second",
            "prefill_tokens_per_cpu_second",
            "decode_tokens_per_second",
            "decode_tokens_per_cpu_second",
        ]
    },
}, indent=2))
PY
