#!/usr/bin/env python3
"""DPO on preference pairs from `safetyj prefs pairs`, with TRL's DPOTrainer and a
PEFT LoRA adapter; merges the adapter and saves a Hugging Face checkpoint that
`safetyj quantize` turns into GGUF.

The base is a Hugging Face folder, or a GGUF file: transformers reads GGUF
(`gguf_file=`, through the `gguf` package) and dequantizes every tensor to float, so
a 4-bit base trains as its dequantized float weights. `--export-base DIR` also saves
that float base, so before/after are measured through the same conversion path;
without `--pairs` the script only does that (the untrained judge of round 0).

Runs on the CPU for tiny models and on a GPU when one is present (or several, under
`accelerate launch`).
"""
import argparse
import json
import os
import sys


def load_base(base):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import torch

    if os.path.isfile(base):
        folder, name = os.path.split(os.path.abspath(base))
        kwargs = {"gguf_file": name}
    else:
        folder, kwargs = base, {}
    tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    plain_float(model)
    return model, tokenizer


def plain_float(model):
    """A GGUF-loaded model is already dequantized to float; forget the GGUF
    "quantization" transformers records, so it saves as an ordinary checkpoint."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def read_pairs(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            pair = json.loads(line)
            for field in ("prompt", "chosen", "rejected"):
                if not isinstance(pair.get(field), str) or not pair[field]:
                    sys.exit(f"{path}:{n}: the pair has no {field}")
            rows.append({k: pair[k] for k in ("prompt", "chosen", "rejected")})
    if not rows:
        sys.exit(f"{path}: no pairs to train on")
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="Hugging Face folder or GGUF file")
    p.add_argument("--pairs", help="pairs.jsonl from safetyj prefs pairs (none: only --export-base)")
    p.add_argument("--out", help="folder for the merged checkpoint (with --pairs)")
    p.add_argument("--export-base", help="also save the float base here (the same conversion, untrained)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.pairs is None and args.export_base is None:
        p.error("give --pairs (and --out) to train, or --export-base alone to convert the base")
    if args.pairs is not None and args.out is None:
        p.error("--pairs needs --out, the folder for the trained checkpoint")

    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    pairs = read_pairs(args.pairs) if args.pairs else None
    model, tokenizer = load_base(args.base)
    if args.export_base:
        model.save_pretrained(args.export_base, safe_serialization=True)
        tokenizer.save_pretrained(args.export_base)
    if pairs is None:
        return

    import torch

    cuda = torch.cuda.is_available()
    config = DPOConfig(
        output_dir=os.path.join(args.out, "trainer"),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        learning_rate=args.lr,
        beta=args.beta,
        max_length=args.max_length,
        seed=args.seed,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=not cuda,
        # TRL turns on bf16 autocast and activation checkpointing by default. On a CPU
        # without bf16 instructions the two made a one-pair step of the 0.5B take
        # 357 s instead of 21.5 s (2 cores); checkpointing only trades time for memory
        # a small model does not need. On GPUs both stay on (bf16 where supported).
        bf16=cuda and torch.cuda.is_bf16_supported(),
        activation_checkpointing=cuda,
    )
    lora = LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        task_type="CAUSAL_LM",
    )
    trainer = DPOTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(pairs),
        processing_class=tokenizer,
        peft_config=lora,
    )
    trainer.train()
    merged = trainer.model.merge_and_unload()
    plain_float(merged)
    merged.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    log = [e for e in trainer.state.log_history if "loss" in e]
    with open(os.path.join(args.out, "train_log.json"), "w") as f:
        json.dump({"pairs": len(pairs), "args": vars(args), "log": log}, f, indent=1)
    print(json.dumps({"pairs": len(pairs), "steps": args.steps, "first": log[:1], "last": log[-1:]}))


if __name__ == "__main__":
    main()
