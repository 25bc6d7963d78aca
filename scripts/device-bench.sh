#!/usr/bin/env bash
# The real-GPU speed check, in one call on a lent GPU machine (no internet, no Rust):
# run from the repo root after scripts/prepare-device-bench.sh filled .devbench/, with
# .devbench carried. Steps, each under `timeout`, all inside BUDGET_S seconds:
#   1. the Vulkan loaders from .devbench/gl, if the machine has none (and the NVIDIA
#      ICD named explicitly if no GPU adapter shows up without it);
#   2. `safetyj devices` (and nvidia-smi's clocks when present);
#   3. the kernel tests vs CPU references (lib test binary, TEST_FILTERS);
#   4. per model: synthesize random weights of the skeleton's exact tensor types on
#      local disk, then `safetyj bench --json --profile` at each size.
# Every result is written to $OUT as soon as it exists (nothing is lost if the call
# is cut off); stdout gets a one-screen summary. $OUT gets 4 files plus one JSON per
# bench run; the device tool brings back 8 at most, so keep to 4 bench runs.
#
# Environment (defaults for the H200; shrink them to try the chain on lavapipe):
#   OUT            where results go (the device tool sets it; /tmp/devbench-out otherwise)
#   DEVBENCH_DIR   what prepare-device-bench.sh made (.devbench)
#   BENCH_MODEL    skeleton of the main model (.devbench/qwen2.5-coder-1.5b.skel.gguf)
#   BENCH_SIZES    prompt x generated tokens for it ("512x128 64x32")
#   BENCH_MODEL2   a second skeleton, run if time allows (.devbench/qwen2.5-coder-0.5b.skel.gguf;
#                  empty to skip)
#   BENCH_SIZES2   sizes for the second model ("512x128")
#   BENCH_PROFILE  1 to add --profile (per-op GPU times; needs timestamp queries), 0 not (1)
#   TEST_FILTERS   lib test filters ("ops:: gpu::"; empty to skip the kernel tests)
#   BUDGET_S       seconds the whole script may take (420)
#   WORK_DIR       local disk for the synthesized models (/tmp/devbench-work)
set -uo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
dir="${DEVBENCH_DIR:-.devbench}"
out="${OUT:-/tmp/devbench-out}"
model1="${BENCH_MODEL-$dir/qwen2.5-coder-1.5b.skel.gguf}"
sizes1="${BENCH_SIZES-512x128 64x32}"
model2="${BENCH_MODEL2-$dir/qwen2.5-coder-0.5b.skel.gguf}"
sizes2="${BENCH_SIZES2-512x128}"
profile="${BENCH_PROFILE:-1}"
filters="${TEST_FILTERS-ops:: gpu::}"
budget="${BUDGET_S:-420}"
work="${WORK_DIR:-/tmp/devbench-work}"
safetyj="$dir/safetyj"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/xdg}"
mkdir -p "$out" "$work" "$XDG_RUNTIME_DIR"
log="$out/steps.log"
summary="$out/summary.txt"
: >"$log"
: >"$summary"

say() { echo "$*" | tee -a "$summary"; }
left() { echo $((budget - SECONDS)); }

# run_step NAME MAX_SECONDS OUTFILE COMMAND...: runs COMMAND under timeout (at most
# what is left of the budget), its stdout appended to OUTFILE and its stderr to
# steps.log; says how it ended.
run_step() {
    local name="$1" max="$2" outfile="$3"
    shift 3
    local limit
    limit=$(left)
    ((limit > max)) && limit=$max
    if ((limit < 5)); then
        say "skip  $name: the budget is spent"
        return 124
    fi
    echo "== $name (timeout ${limit}s)" >>"$log"
    local started=$SECONDS rc=0
    timeout "$limit" "$@" >>"$outfile" 2>>"$log" || rc=$?
    local took=$((SECONDS - started))
    if ((rc == 0)); then
        say "ok    $name (${took}s)"
    elif ((rc == 124)); then
        say "TIME  $name: stopped after ${limit}s"
    else
        say "FAIL  $name: exit $rc after ${took}s (see steps.log)"
    fi
    return $rc
}

for tool in "$safetyj" "$dir/lib-tests"; do
    if [[ ! -x "$tool" ]]; then
        say "no $tool: run scripts/prepare-device-bench.sh first and carry $dir"
        exit 2
    fi
done

# 1. Loaders.
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; then
    if compgen -G "$dir/gl/*.deb" >/dev/null; then
        for f in "$dir"/gl/*.deb; do dpkg -x "$f" /; done
        ldconfig
        say "ok    unpacked $(ls "$dir"/gl/*.deb | wc -l) loader debs"
    else
        say "no libvulkan on this machine and no debs in $dir/gl"
    fi
fi

# 2. Adapters.
devices="$out/devices.txt"
: >"$devices"
run_step "safetyj devices" 60 "$devices" "$safetyj" devices
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if ! grep -qE '\((Vulkan|Gl), (DiscreteGpu|IntegratedGpu)\)' "$devices" && [[ -f "$nvidia_icd" ]]; then
    export VK_DRIVER_FILES="$nvidia_icd"
    export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
    say "no GPU adapter seen: retrying with VK_DRIVER_FILES=$nvidia_icd"
    : >"$devices"
    run_step "safetyj devices (NVIDIA ICD)" 60 "$devices" "$safetyj" devices
fi
if command -v nvidia-smi >/dev/null; then
    timeout 20 nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,memory.total \
        --format=csv >>"$devices" 2>&1
fi
grep -E '^\[|^selected' "$devices" | tee -a "$summary"

# 3. Kernel tests.
if [[ -n "$filters" ]]; then
    tests_log="$out/kernel-tests.log"
    # shellcheck disable=SC2086
    : >"$tests_log"
    run_step "kernel tests ($filters)" 150 "$tests_log" "$dir/lib-tests" $filters
    grep -E '^test result|^    [a-z_:]+$|panicked at' "$tests_log" | head -20 | tee -a "$summary"
fi

# 4. Benchmarks: synthesize a model from its skeleton, bench it at each size.
bench_model() {
    local skeleton="$1" sizes="$2"
    [[ -z "$skeleton" ]] && return 0
    if [[ ! -f "$skeleton" ]]; then
        say "no skeleton $skeleton"
        return 0
    fi
    local name
    name="$(basename "$skeleton" .skel.gguf)"
    local model="$work/$name.synth.gguf"
    run_step "synth $name" 120 "$log" "$safetyj" synth --like "$skeleton" --out "$model" --seed 1 || return 0
    local flags=(--json)
    [[ "$profile" == 1 ]] && flags+=(--profile)
    for size in $sizes; do
        local p="${size%x*}" g="${size#*x}"
        local json="$out/bench-$name-p$p-g$g.json"
        : >"$json"
        if run_step "bench $name prompt $p gen $g" 180 "$json" "$safetyj" bench --model "$model" \
            --prompt-tokens "$p" --gen-tokens "$g" "${flags[@]}"; then
            summarize "$json" | tee -a "$summary"
        fi
    done
    rm -f "$model"
}

# One bench JSON in a few lines: speeds against the measured ceilings, top decode ops.
summarize() {
    python3 - "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"  {r['model'].split('/')[-1]} on {r['adapter']} ({r['backend']}), load {r['load_seconds']:.1f} s")
print(f"  prefill {r['prompt_tokens']:>4} tok: {r['prefill_tokens_per_second']:9.1f} tok/s, "
      f"{r['prefill_flops_per_second']/1e9:9.1f} GFLOP/s = {100*r['prefill_matmul_fraction']:5.1f}% of GEMM ceiling "
      f"({r['matmul_flops_per_second']/1e9:.1f} GFLOP/s)")
print(f"  decode  {r['gen_tokens']:>4} tok: {r['decode_tokens_per_second']:9.1f} tok/s, "
      f"{r['weight_bytes_per_token']*r['decode_tokens_per_second']/1e9:7.1f} GB/s = "
      f"{100*r['decode_bandwidth_fraction']:5.1f}% of copy bandwidth ({r['copy_bandwidth_bytes_per_second']/1e9:.0f} GB/s)")
verdict = r.get("verdict")
if verdict:
    print(f"  time to verdict {verdict['cold_ms']:.0f} ms cold ({verdict['cold_prompt_tokens']} tokens), "
          f"{verdict['warm_ms']:.0f} ms with the template cached")
per_token = r.get("decode_host_cpu_seconds_per_token")
if per_token is not None:
    print(f"  host CPU {1e3*per_token:.3f} ms per decode step, {r['timed_bind_groups_created']} bind groups made while timed")
profile = r.get("profile")
if profile:
    for step in ("decode", "prefill"):
        top = ", ".join(f"{o['op']} {100*o['fraction']:.0f}%" for o in profile[step][:4])
        print(f"  {step} ops: {top}")
PY
}

bench_model "$model1" "$sizes1"
if [[ -n "$model2" ]] && (($(left) > 90)); then
    bench_model "$model2" "$sizes2"
elif [[ -n "$model2" ]]; then
    say "skip  $(basename "$model2" .skel.gguf): $(left)s of the budget left"
fi
say "done in ${SECONDS}s; results in $out"
