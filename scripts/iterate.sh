#!/usr/bin/env bash
# Iterative preference learning: N rounds of sample → score → pairs → train (DPO) →
# quantize → held-out eval, each round's judge the previous round's output. Every
# step is skipped when its output exists (and the Rust steps resume their journals),
# so a killed run goes on where it stopped. One row of held-out metrics per round
# goes to $OUT/rounds.jsonl and $OUT/rounds.md.
#
#   scripts/iterate.sh BASE.gguf SPLIT_DIR OUT_DIR [ROUNDS]
#
# Environment: PYTHON (a venv with scripts/requirements-prefs.txt; default python3),
# SAFETYJ (the CLI; default target/release/safetyj), K (samples per dialogue, 4),
# MAX_TOKENS (per critique, 128), TEMPERATURE (1.0), STEPS (DPO steps, 20), LR (5e-5),
# MARGIN (0.2), SCORE_ARGS (default --label-only; e.g. "--evaluator-url U
# --evaluator-model M" for the AIU meta-evaluation).
set -euo pipefail
base=$1 split=$2 out=$3 rounds=${4:-1}
PYTHON=${PYTHON:-python3} SAFETYJ=${SAFETYJ:-target/release/safetyj}
K=${K:-4} MAX_TOKENS=${MAX_TOKENS:-128} TEMPERATURE=${TEMPERATURE:-1.0}
STEPS=${STEPS:-20} LR=${LR:-5e-5} MARGIN=${MARGIN:-0.2} SCORE_ARGS=${SCORE_ARGS:---label-only}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"

evaluate() { # model tag
    local model=$1 dir=$out/eval-$2
    [[ -f $dir/report.json ]] || "$SAFETYJ" eval label --judge-local "$model" --workers 1 \
        --out "$dir" "$split"/heldout/label/*.jsonl >/dev/null
    "$PYTHON" - "$dir/report.json" "$2" <<'PY' >>"$out/rounds.jsonl"
import json, sys
r = json.load(open(sys.argv[1]))
o = r["overall"] if "overall" in r else r
print(json.dumps({"round": sys.argv[2], "heldout": o}))
PY
}

: >"$out/rounds.jsonl"
judge=$base
evaluate "$judge" 0
for ((r = 1; r <= rounds; r++)); do
    dir=$out/round$r
    "$SAFETYJ" prefs sample --model "$judge" --items "$split/train.jsonl" --out "$dir" \
        -k "$K" --temperature "$TEMPERATURE" --seed "$r" --max-tokens "$MAX_TOKENS"
    # shellcheck disable=SC2086
    "$SAFETYJ" prefs score --items "$split/train.jsonl" --out "$dir" $SCORE_ARGS
    "$SAFETYJ" prefs pairs --items "$split/train.jsonl" --out "$dir" --margin "$MARGIN"
    [[ -f $dir/hf/model.safetensors ]] || "$PYTHON" "$here/train_dpo.py" --base "$judge" \
        --pairs "$dir/pairs.jsonl" --out "$dir/hf" --steps "$STEPS" --lr "$LR"
    [[ -f $dir/judge.gguf ]] || "$SAFETYJ" quantize "$dir/hf" -o "$dir/judge.gguf" --type q8_0
    "$SAFETYJ" prefs margin --model "$dir/judge.gguf" --pairs "$dir/pairs.jsonl" >"$dir/margin_after.json"
    judge=$dir/judge.gguf
    evaluate "$judge" "$r"
done
"$PYTHON" - "$out/rounds.jsonl" <<'PY' >"$out/rounds.md"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| round | held-out items | accuracy | F1 (unsafe) |\n|---|---|---|---|")
for r in rows:
    h = r["heldout"]
    print(f"| {r['round']} | {h.get('items', h.get('n', '?'))} | {h.get('accuracy', '?')} | {h.get('f1_unsafe', h.get('f1', '?'))} |")
PY
cat "$out/rounds.md"
