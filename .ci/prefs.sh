#!/usr/bin/env bash
# CI round of iterative preference learning on a tiny real model: SmolLM2-135M
# samples 2 critiques of each critique-level training dialogue of the committed split, a loopback evaluator with
# known answers scores them, pairs are checked against what those scores imply, TRL
# trains a few DPO steps on the CPU, the merged checkpoint is quantized, loads in
# safetyj, and its log-probability margin of chosen over rejected must have grown.
# SAFETYJ_SKIP_DPO=1 skips the Python training part (nothing else skips).
set -euo pipefail
cd "$(dirname "$0")/.."
models=${SAFETYJ_MODELS_DIR:-${SAFETYJ_CACHE:-$HOME/.cache/safetyj}/models}
base=$models/SmolLM2-135M-Instruct.Q4_1.gguf
venv=${SAFETYJ_PREFS_VENV:-$HOME/.cache/safetyj/venv-prefs}
work=${TMPDIR:-/tmp}/safetyj-prefs-ci
rm -rf "$work" && mkdir -p "$work"
export SAFETYJ_DEVICE=cpu
cargo build -q --bin safetyj
cp "${CARGO_TARGET_DIR:-target}/debug/safetyj" "$work/safetyj"
bin=$work/safetyj
grep '"aius"' data/prefs/en/train.jsonl >"$work/items.jsonl"

python3 tests/prefs/scripted_evaluator.py >"$work/port" &
evaluator=$!
trap 'kill $evaluator' EXIT
for _ in $(seq 50); do [[ -s $work/port ]] && break; sleep 0.1; done
"$bin" prefs sample --model "$base" --items "$work/items.jsonl" --out "$work/round" -k 2 \
    --temperature 1.0 --seed 0 --max-tokens 24
"$bin" prefs score --items "$work/items.jsonl" --out "$work/round" \
    --evaluator-url "http://127.0.0.1:$(cat "$work/port")" --evaluator-model scripted
"$bin" prefs pairs --items "$work/items.jsonl" --out "$work/round" --margin 0.01
python3 tests/prefs/check.py "$work/items.jsonl" "$work/round" 0.01

[[ ${SAFETYJ_SKIP_DPO:-} == 1 ]] && { echo "DPO part skipped (SAFETYJ_SKIP_DPO=1)"; exit 0; }
if ! "$venv/bin/python" -c "import trl" 2>/dev/null; then
    python3 -m venv "$venv"
    start=$SECONDS
    "$venv/bin/pip" install -q -r scripts/requirements-prefs.txt
    echo "training venv installed in $((SECONDS - start)) s"
fi
"$venv/bin/python" scripts/train_dpo.py --base "$base" --pairs "$work/round/pairs.jsonl" \
    --out "$work/after" --export-base "$work/before" --steps 2 --batch 2 --lr 1e-3
"$bin" quantize "$work/before" -o "$work/before.gguf" --type q8_0
"$bin" quantize "$work/after" -o "$work/after.gguf" --type q8_0
"$bin" prefs margin --model "$work/before.gguf" --pairs "$work/round/pairs.jsonl" >"$work/margin_before.json"
"$bin" prefs margin --model "$work/after.gguf" --pairs "$work/round/pairs.jsonl" >"$work/margin_after.json"
python3 - "$work" <<'PY'
import json, sys
b, a = (json.load(open(f"{sys.argv[1]}/margin_{w}.json")) for w in ("before", "after"))
print(f"mean log P(chosen) - log P(rejected): {b['mean_margin']:.3f} before, {a['mean_margin']:.3f} after DPO ({a['pairs']} pairs)")
assert a["mean_margin"] > b["mean_margin"], "DPO did not move the model toward the chosen critiques"
PY
