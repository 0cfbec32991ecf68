"""Hugging Face transformers' eager forward on SmolLM2, timed like our criterion `forward` group.

Same GGUF weights (dequantised to float32), same token counts (8 and 128, the first tokens of
a fixed text), batch 1, no KV cache, logits for every position; `output_attentions=False`
stands beside our plain forward and `output_attentions=True` beside our forward with every
attention pattern captured. Threads: `--threads N` (default $EXPLAINABILITY_THREADS or 2) goes
to torch.set_num_threads; `cargo xtask bench-reference` also sets OMP_NUM_THREADS=N for both
sides. Each case: warm-up calls, then timed calls until both the minimum time and the minimum
count are reached. Writes JSON to --out; `cargo xtask bench-reference` merges it with
criterion's estimates.

Usage: python reference/bench_reference.py --gguf PATH/TO/model.gguf --out target/x.json
"""

import argparse
import json
import statistics
import time
from pathlib import Path

# First: it configures tqdm before transformers imports it.
from hf_smollm2 import default_threads, load, prepare  # isort: skip

import torch
import transformers

# A fixed English text, repeated until it is long enough; only the token count matters for
# speed, the text keeps the ids realistic.
TEXT = (
    "Attention weights show where a transformer looks when it predicts the next token, and "
    "gradients show which inputs would change that prediction most. Neither is the whole "
    "story, so careful analyses compare several methods on the same text and check whether "
    "the explanations agree. "
)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", required=True, type=Path, help="the SmolLM2 GGUF file")
    parser.add_argument("--out", required=True, type=Path, help="JSON file to write")
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--tokens", type=int, nargs="+", default=[8, 128])
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per case")
    parser.add_argument("--min-time", type=float, default=3.0, help="seconds of timed calls")
    parser.add_argument("--min-iters", type=int, default=10, help="timed calls at least")
    return parser.parse_args()


def token_ids(tokenizer, count):
    text = TEXT
    while len(tokenizer(text)["input_ids"]) < count:
        text += TEXT
    return tokenizer(text)["input_ids"][:count]


def time_case(model, ids, output_attentions, args):
    inputs = torch.tensor([ids], dtype=torch.int64)

    def forward():
        out = model(input_ids=inputs, output_attentions=output_attentions, use_cache=False)
        if output_attentions and len(out.attentions) != model.config.num_hidden_layers:
            raise SystemExit("eager forward returned no attention weights")
        return out

    with torch.inference_mode():
        for _ in range(args.warmup):
            forward()
        times = []
        start = time.perf_counter()
        while len(times) < args.min_iters or time.perf_counter() - start < args.min_time:
            begin = time.perf_counter()
            forward()
            times.append((time.perf_counter() - begin) * 1e3)
    return {
        "tokens": len(ids),
        "output_attentions": output_attentions,
        "iterations": len(times),
        "mean_ms": statistics.fmean(times),
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "stdev_ms": statistics.stdev(times) if len(times) > 1 else 0.0,
    }


def main():
    args = parse_args()
    prepare(args.threads)
    tokenizer, model = load(args.gguf)
    results = []
    for count in args.tokens:
        ids = token_ids(tokenizer, count)
        for output_attentions in (False, True):
            result = time_case(model, ids, output_attentions, args)
            results.append(result)
            print(
                f"bench_reference: {count:>4} tokens, output_attentions={output_attentions!s:<5}: "
                f"mean {result['mean_ms']:.2f} ms over {result['iterations']} calls"
            )
    report = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "attn_implementation": "eager",
        "dtype": "float32",
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
