"""Captum on transformers at one sequence length: time and peak resident memory of one
gradient attribution, the anchor beside `long_context` (explain-gradients example) in
`cargo xtask bench-length`.

Same input as the Rust side: the example's paragraph tokenised without special tokens, repeated
and cut to --tokens ids; target: log-probability of the argmax next token at the last position.
Methods: `saliency` (captum.attr.Saliency, abs=False), `gxi` (InputXGradient), `ig`
(IntegratedGradients, Gauss-Legendre, --ig-steps steps, all-eos baseline, internal_batch_size
1, so memory does not grow with the steps, with the convergence delta as ours reports it) — all on inputs_embeds. Attention: transformers'
default (sdpa) unless --attn eager. One configuration per process so that the peak
(ru_maxrss) is its own. The address space is capped at --cap-gib (RLIMIT_AS): an attribution
that needs more fails with an allocation error, reported as out of memory instead of letting
the kernel kill a process on a shared machine.

Prints one JSON line on stdout.
"""

import argparse
import json
import resource
import sys
import time
from pathlib import Path

# First: it configures tqdm before transformers imports it.
from hf_smollm2 import load, prepare  # isort: skip

import torch
from captum.attr import InputXGradient, IntegratedGradients, Saliency

PARAGRAPH = (
    "The river left its banks in the spring, and the village moved to the hill above the "
    "mill. Old maps still show the lanes that ran down to the water, the bakery by the "
    "bridge, and the school whose bell could be heard across the fields. "
)
EOS = 2


def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", required=True, type=Path)
    parser.add_argument("--method", required=True, choices=["saliency", "gxi", "ig"])
    parser.add_argument("--tokens", required=True, type=int)
    parser.add_argument("--ig-steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    parser.add_argument("--cap-gib", type=float, default=16.0)
    args = parser.parse_args()
    prepare(args.threads)
    torch.use_deterministic_algorithms(False)
    tokenizer, model = load(args.gguf, attn_implementation=args.attn)
    after_load = peak_mib()
    cap = int(args.cap_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    one = tokenizer(PARAGRAPH, add_special_tokens=False)["input_ids"]
    ids = (one * (args.tokens // len(one) + 1))[: args.tokens]
    record = {
        "framework": "captum",
        "method": args.method,
        "tokens": args.tokens,
        "ig_steps": args.ig_steps if args.method == "ig" else None,
        "attn_implementation": args.attn,
        "threads": torch.get_num_threads(),
        "cap_gib": args.cap_gib,
        "peak_rss_after_load_mib": after_load,
    }
    embed = model.get_input_embeddings()
    start = time.perf_counter()
    cpu_start = time.process_time()
    try:
        inputs = torch.tensor([ids])
        with torch.no_grad():
            emb = embed(inputs).detach()
            base = embed(torch.full_like(inputs, EOS)).detach()
            target = int(model(inputs_embeds=emb, use_cache=False).logits[0, -1].argmax())

        def forward(e):
            logits = model(inputs_embeds=e, use_cache=False, logits_to_keep=1).logits
            return torch.log_softmax(logits[:, -1].float(), dim=-1)[:, target]

        if args.method == "saliency":
            scores = Saliency(forward).attribute(emb, abs=False).norm(dim=-1)
        elif args.method == "gxi":
            scores = InputXGradient(forward).attribute(emb).sum(-1)
        else:
            # With the convergence delta, as ours always reports it (F at both ends: the
            # same two forwards on both sides).
            attributions, delta = IntegratedGradients(forward).attribute(
                emb, baselines=base, n_steps=args.ig_steps, method="gausslegendre",
                internal_batch_size=1, return_convergence_delta=True)
            scores = attributions.sum(-1)
            record["convergence_delta"] = float(delta.detach().sum())
        record["seconds"] = time.perf_counter() - start
        record["cpu_seconds"] = time.process_time() - cpu_start
        record["score_sum"] = float(scores.detach().sum())
        record["oom"] = False
    except (RuntimeError, MemoryError) as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        if isinstance(e, MemoryError) or "allocate" in message or "memory" in message.lower():
            record["oom"] = True
            record["error"] = message[:300]
            record["seconds"] = time.perf_counter() - start
        else:
            raise
    record["peak_rss_mib"] = peak_mib()
    print(json.dumps(record))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
