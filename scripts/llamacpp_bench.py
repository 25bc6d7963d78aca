"""Prefill and decode speed of llama.cpp (through llama-cpp-python) on a GGUF model.

Mirrors `safetyj bench`: the same deterministic prompt ids, one untimed warm-up of
both step kinds, then one timed prefill of N tokens (a single `eval` with
n_batch >= N) and M timed single-token greedy decode steps. Prints one JSON object.
"""

import argparse
import json
import os
import platform
import resource
import time

import llama_cpp
import numpy as np


def prompt(n, vocab):
    """The prompt `safetyj bench` uses: n ordinary token ids below min(vocab, 30000)."""
    span = max(1, min(vocab, 30000))
    return [(i * 7919 + 1009) % span for i in range(n)]


def cpu_seconds():
    """User plus system CPU seconds of this process, all threads together."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def greedy(llm):
    """The most likely next token after the last evaluated one (only its logits exist)."""
    logits = np.ctypeslib.as_array(
        llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),)
    )
    return int(np.argmax(logits))


def timed(action):
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = action()
    return result, time.perf_counter() - wall, cpu_seconds() - cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--gen-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    if args.prompt_tokens < 1 or args.gen_tokens < 0 or args.threads < 1:
        parser.error("need at least one prompt token, no negative counts, one thread")

    started = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=args.model,
        n_ctx=args.prompt_tokens + args.gen_tokens + 8,
        n_batch=args.prompt_tokens,
        n_ubatch=args.prompt_tokens,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        n_gpu_layers=0,
        verbose=False,
    )
    load_seconds = time.perf_counter() - started
    tokens = prompt(args.prompt_tokens, llm.n_vocab())

    def prefill():
        llm.reset()
        llm.eval(tokens)
        return greedy(llm)

    def decode(first):
        generated, token = [], first
        for _ in range(args.gen_tokens):
            generated.append(token)
            llm.eval([token])
            token = greedy(llm)
        return generated

    warm = prefill()
    llm.eval([warm])

    first, prefill_wall, prefill_cpu = timed(prefill)
    generated, decode_wall, decode_cpu = timed(lambda: decode(first))

    print(json.dumps({
        "device": cpu_name(),
        "backend": "llama.cpp CPU (ggml) via llama-cpp-python " + llama_cpp.__version__,
        "system_info": llama_cpp.llama_print_system_info().decode().strip(),
        "threads": args.threads,
        "model": args.model,
        "load_seconds": load_seconds,
        "prompt_tokens": args.prompt_tokens,
        "prefill_seconds": prefill_wall,
        "prefill_cpu_seconds": prefill_cpu,
        "prefill_tokens_per_second": args.prompt_tokens / prefill_wall,
        "gen_tokens": args.gen_tokens,
        "decode_seconds": decode_wall,
        "decode_cpu_seconds": decode_cpu,
        "decode_tokens_per_second": args.gen_tokens / decode_wall if args.gen_tokens else 0.0,
        "generated": generated,
    }, indent=2))


if __name__ == "__main__":
    main()
