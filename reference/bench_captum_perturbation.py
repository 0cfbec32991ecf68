"""Captum's FeatureAblation on SmolLM2, timed beside our criterion `perturbation` group.

Reads the ids, target and baseline our bench used (`--ours`, written by
`benches/benches/perturbation.rs` through EXPLAINABILITY_BENCH_OUT), so both sides perturb the
same inputs: the target is log p(target | ids) at the last position (float32 log-softmax), a
perturbed token is replaced by the baseline id (Captum's default baseline 0). Cases:
- `loo_replace0`: FeatureAblation with one feature per token;
- `windows4_replace0`: FeatureAblation with a feature_mask of consecutive 4-token spans;
each with Captum's default `perturbations_per_eval=1` and with 32 (our batch size). Every
call's attributions are written, and the largest difference from ours is printed.

Threads: --threads N (default $EXPLAINABILITY_THREADS or 2). Each case: one warm-up call (its
attributions are the ones compared), then timed calls until both --min-time seconds and
--min-iters calls are reached; medians reported. Writes JSON to --out.

Usage: python reference/bench_captum_perturbation.py --gguf PATH --ours target/x.json --out y.json
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
from captum.attr import FeatureAblation


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", required=True, type=Path, help="the SmolLM2 GGUF file")
    parser.add_argument("--ours", required=True, type=Path, help="our bench's attributions")
    parser.add_argument("--out", required=True, type=Path, help="JSON file to write")
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds of timed calls")
    parser.add_argument("--min-iters", type=int, default=3, help="timed calls at least")
    return parser.parse_args()


def timed(name, fn, args):
    first = fn()
    times = []
    start = time.perf_counter()
    while len(times) < args.min_iters or time.perf_counter() - start < args.min_time:
        begin = time.perf_counter()
        fn()
        times.append((time.perf_counter() - begin) * 1e3)
    print(
        f"bench_captum_perturbation: {name}: median {statistics.median(times):.0f} ms "
        f"over {len(times)} calls"
    )
    return first, {
        "id": name,
        "iterations": len(times),
        "median_ms": statistics.median(times),
        "min_ms": min(times),
    }


def main():
    args = parse_args()
    prepare(args.threads)
    torch.use_deterministic_algorithms(False)
    ours = json.loads(args.ours.read_text())
    ids, target, baseline = ours["ids"], ours["target"], ours["baseline_id"]
    window, batch = ours["window"], ours["batch_size"]
    n = len(ids)
    _, model = load(args.gguf)
    inputs = torch.tensor([ids])

    def forward(x):
        logits = model(input_ids=x, use_cache=False).logits
        return torch.log_softmax(logits[:, -1].float(), dim=-1)[:, target]

    ablation = FeatureAblation(forward)
    masks = {
        "loo_replace0": torch.arange(n).unsqueeze(0),
        "windows4_replace0": (torch.arange(n) // window).unsqueeze(0),
    }
    results = []
    attributions = {}
    for name, mask in masks.items():
        for per_eval in (1, batch):
            case = f"perturbation/{name}/{n}/captum_per_eval_{per_eval}"

            def call(mask=mask, per_eval=per_eval):
                with torch.no_grad():
                    return ablation.attribute(
                        inputs,
                        baselines=baseline,
                        feature_mask=mask,
                        perturbations_per_eval=per_eval,
                    )

            attr, result = timed(case, call, args)
            # one score per feature: the first token of each feature carries it
            first = [int(i) for i in torch.unique(mask[0], return_inverse=False)]
            starts = [int((mask[0] == f).nonzero()[0]) for f in first]
            scores = attr[0, starts].double().tolist()
            diff = max(abs(a - b) for a, b in zip(scores, ours[name]["scores"]))
            result["max_abs_diff_vs_ours"] = diff
            result["features"] = len(scores)
            print(f"bench_captum_perturbation: {case}: max |captum - ours| = {diff:.2e}")
            attributions[case] = scores
            results.append(result)
    report = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "captum": captum.__version__,
        "threads": args.threads,
        "tokens": n,
        "target": target,
        "results": results,
        "attributions": attributions,
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
