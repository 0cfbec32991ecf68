"""TransformerLens 4.3 `get_act_patch_resid_pre` on SmolLM2 (for docs/methods-circuits.md):
clean "The Eiffel Tower is located in the city of", corrupted "The Colosseum is located in the
city of" (10 tokens each), metric logit(" Paris") - logit(" Rome") at the last position;
30 layers x 10 positions = 300 patched forwards, timed after one warm-up forward.

Usage: python reference/bench_circuits.py --gguf PATH/TO/SmolLM2-135M-Instruct.Q4_1.gguf
"""

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from hf_smollm2 import default_threads, load, prepare  # noqa: E402
from transformer_lens import patching  # noqa: E402
from transformer_lens.model_bridge import TransformerBridge  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gguf", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=default_threads())
    args = parser.parse_args()
    prepare(args.threads)
    tok, hf = load(args.gguf)
    bridge = TransformerBridge.boot_transformers(
        "HuggingFaceTB/SmolLM2-135M-Instruct", hf_model=hf, tokenizer=tok, device="cpu"
    )
    bridge.eval()
    clean = tok("The Eiffel Tower is located in the city of", return_tensors="pt").input_ids
    corrupted = tok("The Colosseum is located in the city of", return_tensors="pt").input_ids
    paris = tok(" Paris", add_special_tokens=False).input_ids[0]
    rome = tok(" Rome", add_special_tokens=False).input_ids[0]

    def metric(logits):
        return logits[0, -1, paris] - logits[0, -1, rome]

    with torch.no_grad():
        _, cache = bridge.run_with_cache(clean)
        bridge(corrupted)
        start = time.perf_counter()
        result = patching.get_act_patch_resid_pre(bridge, corrupted, cache, metric)
        elapsed = time.perf_counter() - start
        print(
            f"TransformerLens get_act_patch_resid_pre {tuple(result.shape)}: {elapsed:.2f} s "
            f"({result.numel() / elapsed:.1f} patched runs/s, {args.threads} threads); "
            f"clean {metric(bridge(clean)).item():.3f}, corrupted {metric(bridge(corrupted)).item():.3f}"
        )


if __name__ == "__main__":
    main()
