"""Checks a CI round of .ci/prefs.sh: every score equals what the scripted
evaluator's rules imply for the critique it was given, and pairs.jsonl holds exactly
the pairs the rule of `safetyj prefs pairs` makes from those scores.

    check.py ITEMS ROUND_DIR MARGIN
"""
import json
import sys

from scripted_evaluator import claim_is_correct, sentences

items_file, round_dir, margin = sys.argv[1], sys.argv[2], float(sys.argv[3])
read = lambda p: [json.loads(l) for l in open(p) if l.strip()]
items = {i["key"]: i for i in read(items_file)}
samples = read(f"{round_dir}/samples.jsonl")
scores = {s["sample"]: s for s in read(f"{round_dir}/scores.jsonl")}
pairs = read(f"{round_dir}/pairs.jsonl")


def prf(s, item):
    aius = sentences(s["meta"]["critique"])
    supported = sum(claim_is_correct(a) for a in aius)
    recalled = sum(claim_is_correct(a) for a in item.get("aius", []))
    p = supported / len(aius) if aius else 0.0
    r = recalled / len(item["aius"]) if item.get("aius") else 0.0
    f = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return p, r, f


expected_pairs = []
by_key = {}
for sample in samples:
    by_key.setdefault(sample["key"], []).append(sample)
for key, group in by_key.items():
    item = items[key]
    group.sort(key=lambda s: s["index"])
    q = []
    for sample in group:
        score = scores[sample["sample"]]
        p, r, f = prf(score, item)
        assert score["meta"]["critique_aius"] == sentences(score["meta"]["critique"]), sample["sample"]
        assert abs(score["precision"] - p) < 1e-12 and abs(score["f1"] - f) < 1e-12, (sample["sample"], score, p, f)
        gold = item.get("label")
        assert score["label_correct"] == (None if gold is None else sample["label"] == gold)
        q.append((f, score["label_correct"]))
    right = [i for i in range(len(q)) if q[i][1] is not False]
    if not right:
        continue
    chosen = max(right, key=lambda i: (q[i][0], -i))
    wrong = [i for i in range(len(q)) if q[i][1] is False]
    if wrong:
        rejected, reason = min(wrong, key=lambda i: (q[i][0], i)), "wrong_label"
    else:
        others = [i for i in range(len(q)) if i != chosen]
        rejected, reason = min(others, key=lambda i: (q[i][0], i)), "quality"
        gap = q[chosen][0] - q[rejected][0]
        if not (gap > 0 and gap >= margin):
            continue
    if group[chosen]["output"] == group[rejected]["output"]:
        continue
    expected_pairs.append((item["id"], group[chosen]["output"], group[rejected]["output"], reason))

got = [(p["id"], p["chosen"], p["rejected"], p["reason"]) for p in pairs]
assert sorted(got) == sorted(expected_pairs), f"pairs differ:\n got {got}\n want {expected_pairs}"
assert got, "the round made no pair; the DPO step needs at least one"
print(f"{len(samples)} samples, {len(got)} pairs: as the scripted scores imply")
