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
# --evaluator-model M" for the AIU meta-evaluation), SAMPLE_ARGS (more `prefs sample`
# flags, e.g. "--label-first --label-temperature 3"), PAIRS_ARGS (more `prefs pairs`
# flags, e.g. "--balance-labels").
#
# A GGUF base is first converted the way every trained round is (dequantized to
# float by transformers, quantized to Q8_0 by safetyj), and that copy is round 0's
# judge, so before and after differ by training alone.
set -euo pipefail
base=$1 split=$2 out=$3 rounds=${4:-1}
PYTHON=${PYTHON:-python3} SAFETYJ=${SAFETYJ:-target/release/safetyj}
K=${K:-4} MAX_TOKENS=${MAX_TOKENS:-128} TEMPERATURE=${TEMPERATURE:-1.0}
STEPS=${STEPS:-20} LR=${LR:-5e-5} MARGIN=${MARGIN:-0.2} SCORE_ARGS=${SCORE_ARGS:---label-only}
SAMPLE_ARGS=${SAMPLE_ARGS:-} PAIRS_ARGS=${PAIRS_ARGS:-}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"

evaluate() { # model tag
    local model=$1 dir=$out/eval-$2
    [[ -f $dir/report.json ]] || "$SAFETYJ" eval label --judge-local "$model" --workers 1 \
        --out "$dir" "$split"/heldout/label/*.jsonl >/dev/null
    "$PYTHON" - "$dir/report.json" "$2" "$out/round$2" <<'PY' >>"$out/rounds.jsonl"
import json, os, sys
r = json.load(open(sys.argv[1]))
row = {"round": int(sys.argv[2]), "heldout": r["overall"], "roc_auc": r["roc_auc"]}
for side in ("before", "after"):
    path = os.path.join(sys.argv[3], f"margin_{side}.json")
    if os.path.exists(path):
        row[f"train_margin_{side}"] = json.load(open(path))["mean_margin"]
print(json.dumps(row))
PY
}

: >"$out/rounds.jsonl"
judge=$base
if [[ -f $base && $base == *.gguf ]]; then
    [[ -f $out/base-hf/model.safetensors ]] || "$PYTHON" "$here/train_dpo.py" --base "$base" --export-base "$out/base-hf"
    [[ -f $out/base.gguf ]] || "$SAFETYJ" quantize "$out/base-hf" -o "$out/base.gguf" --type q8_0
    judge=$out/base.gguf
fi
evaluate "$judge" 0
for ((r = 1; r <= rounds; r++)); do
    dir=$out/round$r
    # shellcheck disable=SC2086
    "$SAFETYJ" prefs sample --model "$judge" --items "$split/train.jsonl" --out "$dir" \
        -k "$K" --temperature "$TEMPERATURE" --seed "$r" --max-tokens "$MAX_TOKENS" $SAMPLE_ARGS
    # shellcheck disable=SC2086
    "$SAFETYJ" prefs score --items "$split/train.jsonl" --out "$dir" $SCORE_ARGS
    # shellcheck disable=SC2086
    "$SAFETYJ" prefs pairs --items "$split/train.jsonl" --out "$dir" --margin "$MARGIN" $PAIRS_ARGS
    [[ -f $dir/margin_before.json ]] ||
        "$SAFETYJ" prefs margin --model "$judge" --pairs "$dir/pairs.jsonl" >"$dir/margin_before.json"
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
print("| round | held-out items | accuracy | recall unsafe | recall safe | F1 (unsafe) | ROC-AUC | "
      "training pairs' margin before → after (nats) |")
print("|---|---|---|---|---|---|---|---|")
f = lambda x: "–" if x is None else f"{x:.3f}"
for r in rows:
    h = r["heldout"]
    margin = ""
    if "train_margin_after" in r:
        margin = f"{r['train_margin_before']:.2f} → {r['train_margin_after']:.2f}"
    print(f"| {r['round']} | {h['items']} | {f(h['accuracy'])} | {f(h['recall_unsafe'])} | {f(h['recall_safe'])} | "
          f"{f(h['f1_unsafe'])} | {f(r['roc_auc'])} | {margin} |")
PY
cat "$out/rounds.md"
