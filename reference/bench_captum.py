"""Captum on SmolLM2, timed beside our criterion `gradients` group.

Same GGUF weights (transformers, float32, eager attention), same prompts and settings as
`benches/benches/gradients.rs`: the 5-token prompt "The capital of France is" and the first 60
tokens of bench_reference.py's text; target: log-probability of the argmax next token at the
last position; all-eos baseline. Cases:
- IntegratedGradients on inputs_embeds, Gauss-Legendre, 50 steps (internal_batch_size None,
  Captum's default), at 5 and 60 tokens;
- Saliency and InputXGradient at 5 tokens;
- LLMGradientAttribution(LayerIntegratedGradients on the embedding layer), Gauss-Legendre,
  20 steps, for the 10-token greedy continuation of the 5-token prompt.
Threads: --threads N (default $EXPLAINABILITY_THREADS or 2). Each case: one warm-up call, then
timed calls until both --min-time seconds and --min-iters calls are reached; medians reported.
Writes JSON to --out.

Usage: python reference/bench_captum.py --gguf PATH/TO/model.gguf --out target/x.json
"""

import argparse
import json
import statistics
import time
from pathlib import Path

# First: it configures tqdm before transformers imports it.
from hf_smollm2 import default_threads, load, prepare  # isort: skip

import captum
import torch
import transformers
from bench_reference import TEXT
from captum.attr import (
    InputXGradient,
    IntegratedGradients,
    LayerIntegratedGradients,
    LLMGradientAttribution,
    Saliency,
    TextTokenInput,
)

SHORT = "The capital of France is"
SHORT_IDS = [504, 3575, 282, 4649, 314]
LONG = 60
EOS = 2
CONTINUATION = 10


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", required=True, type=Path, help="the SmolLM2 GGUF file")
    parser.add_argument("--out", required=True, type=Path, help="JSON file to write")
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds of timed calls")
    parser.add_argument("--min-iters", type=int, default=3, help="timed calls at least")
    parser.add_argument("--short", action="store_true", help="leave out the 60-token case")
    return parser.parse_args()


def timed(name, fn, args):
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < args.min_iters or time.perf_counter() - start < args.min_time:
        begin = time.perf_counter()
        fn()
        times.append((time.perf_counter() - begin) * 1e3)
    result = {
        "id": name,
        "iterations": len(times),
        "median_ms": statistics.median(times),
        "min_ms": min(times),
    }
    print(f"bench_captum: {name}: median {result['median_ms']:.1f} ms over {len(times)} calls")
    return result


def main():
    args = parse_args()
    prepare(args.threads)
    torch.use_deterministic_algorithms(False)
    tokenizer, model = load(args.gguf)
    embed = model.get_input_embeddings()
    text = TEXT
    while len(tokenizer(text)["input_ids"]) < LONG:
        text += TEXT
    long_ids = tokenizer(text)["input_ids"][:LONG]
    results = []
    for ids in (SHORT_IDS,) if args.short else (SHORT_IDS, long_ids):
        inputs = torch.tensor([ids])
        with torch.no_grad():
            emb = embed(inputs).detach()
            base = embed(torch.full_like(inputs, EOS)).detach()
            target = int(model(inputs_embeds=emb, use_cache=False).logits[0, -1].argmax())

        def forward(e, target=target):
            logits = model(inputs_embeds=e, use_cache=False).logits
            return torch.log_softmax(logits[:, -1].float(), dim=-1)[:, target]

        ig = IntegratedGradients(forward)
        n = len(ids)
        results.append(timed(f"gradients/ig_gl50/{n}", lambda: ig.attribute(
            emb, baselines=base, n_steps=50, method="gausslegendre",
            return_convergence_delta=True), args))
        if n == len(SHORT_IDS):
            results.append(timed(f"gradients/saliency/{n}",
                                 lambda: Saliency(forward).attribute(emb, abs=False), args))
            results.append(timed(f"gradients/gradient_x_input/{n}",
                                 lambda: InputXGradient(forward).attribute(emb), args))
    inp = TextTokenInput(SHORT, tokenizer, baselines=EOS)
    with torch.no_grad():
        seq = list(SHORT_IDS)
        for _ in range(CONTINUATION):
            seq.append(int(model(input_ids=torch.tensor([seq]), use_cache=False).logits[0, -1]
                           .argmax()))
    continuation = torch.tensor(seq[len(SHORT_IDS):])
    llm = LLMGradientAttribution(
        LayerIntegratedGradients(model, model.get_input_embeddings()), tokenizer)
    results.append(timed(f"gradients/generation_prompt_ig20/{CONTINUATION}", lambda: llm.attribute(
        inp, target=continuation, n_steps=20, method="gausslegendre"), args))
    report = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "captum": captum.__version__,
        "threads": torch.get_num_threads(),
        "attn_implementation": "eager",
        "dtype": "float32",
        "long_prompt_ids": long_ids,
        "continuation": continuation.tolist(),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
