"""TransformerLens 4.3 `get_act_patch_resid_pre` on SmolLM2, the anchor of `cargo xtask
bench-circuits` (docs/benchmarks.md, docs/methods-circuits.md).

Default pair: clean "The Eiffel Tower is located in the city of", corrupted "The Colosseum is
located in the city of" (10 tokens each), metric logit(" Paris") - logit(" Rome") at the last
position; 30 layers x 10 positions = 300 patched forwards. With `--ours PATH` (the JSON the
criterion `circuits` bench writes) the ids and metric tokens are read from there, and the
patched metric grid is compared with ours. Timed after one warm-up call; `--repeats` calls,
median reported.

Usage: python reference/bench_circuits.py --gguf PATH/TO/SmolLM2-135M-Instruct.Q4_1.gguf \
    [--ours target/bench-circuits-ours.json] [--out target/bench-circuits-tl.json]
"""

import argparse
import importlib.metadata
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from hf_smollm2 import default_threads, load, prepare  # noqa: E402
from transformer_lens import patching  # noqa: E402
from transformer_lens.model_bridge import TransformerBridge  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gguf", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--ours", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    prepare(args.threads)
    tok, hf = load(args.gguf)
    bridge = TransformerBridge.boot_transformers(
        "HuggingFaceTB/SmolLM2-135M-Instruct", hf_model=hf, tokenizer=tok, device="cpu"
    )
    bridge.eval()
    if args.ours:
        ours = json.loads(args.ours.read_text())
        clean = torch.tensor([ours["clean"]])
        corrupted = torch.tensor([ours["corrupted"]])
        paris, rome = ours["answer"], ours["against"]
    else:
        ours = None
        clean = tok("The Eiffel Tower is located in the city of", return_tensors="pt").input_ids
        corrupted = tok("The Colosseum is located in the city of", return_tensors="pt").input_ids
        paris = tok(" Paris", add_special_tokens=False).input_ids[0]
        rome = tok(" Rome", add_special_tokens=False).input_ids[0]

    def metric(logits):
        return logits[0, -1, paris] - logits[0, -1, rome]

    times = []
    with torch.no_grad():
        _, cache = bridge.run_with_cache(clean)
        bridge(corrupted)
        for _ in range(max(1, args.repeats)):
            start = time.perf_counter()
            result = patching.get_act_patch_resid_pre(bridge, corrupted, cache, metric)
            times.append(time.perf_counter() - start)
        clean_metric = metric(bridge(clean)).item()
        corrupted_metric = metric(bridge(corrupted)).item()
    elapsed = statistics.median(times)
    print(
        f"TransformerLens get_act_patch_resid_pre {tuple(result.shape)}: {elapsed:.2f} s median of "
        f"{len(times)} ({result.numel() / elapsed:.1f} patched runs/s, {args.threads} threads); "
        f"clean {clean_metric:.3f}, corrupted {corrupted_metric:.3f}"
    )
    report = {
        "transformer_lens": importlib.metadata.version("transformer-lens"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": args.threads,
        "shape": list(result.shape),
        "seconds": times,
        "median_ms": elapsed * 1e3,
        "clean_metric": clean_metric,
        "corrupted_metric": corrupted_metric,
    }
    if ours is not None:
        diff = (result.double() - torch.tensor(ours["patched"], dtype=torch.float64)).abs().max()
        report["max_abs_diff_vs_ours"] = diff.item()
        print(f"max |TL - ours| over the patched metrics: {diff.item():.2e}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
