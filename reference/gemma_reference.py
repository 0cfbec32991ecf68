"""Reference outputs of Hugging Face transformers on the real Gemma 3 270M Q4_K_M GGUF file.

transformers dequantises the file to float32 (≈ 77 s on one thread) and runs its eager
attention path; for each prompt this writes the input ids, the logits, every layer's attention
probabilities and every hidden state (`{name}.input_ids`, `{name}.logits`, `{name}.attn.{l}`,
`{name}.hidden.{i}`, as parity_reference.py does for SmolLM2) to gemma3_reference.safetensors,
and the top-5 next tokens to gemma3_meta.json. `cargo xtask parity` runs it.

Usage: python reference/gemma_reference.py --gguf PATH/TO/gemma-3-270m-q4_k_m.gguf --out DIR
"""

import argparse
import json
import time
from pathlib import Path

from hf_smollm2 import default_threads, load, prepare  # isort: skip

import safetensors.torch
import torch
import transformers
from parity_reference import model_outputs, write_atomic, write_json

PROMPTS = [
    ("capital", "The capital of France is"),
    ("gold", "The chemical symbol for gold is"),
    # Longer than the 512-token sliding window would be too slow here; 40 tokens still
    # exercise every layer kind (the window only bites beyond 512 tokens on this model).
    ("story", "Once upon a time, in a small village at the edge of a great forest, there lived "
              "an old clockmaker who"),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--threads", type=int, default=default_threads())
    args = parser.parse_args()
    prepare(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tokenizer, model = load(args.gguf)
    load_seconds = time.perf_counter() - start
    tensors, prompts = {}, []
    for name, text in PROMPTS:
        ids = tokenizer(text)["input_ids"]
        tensors.update(model_outputs(model, name, ids))
        logits = tensors[f"{name}.logits"][-1]
        logp = torch.log_softmax(logits.double(), -1)
        top = torch.topk(logits, 5).indices.tolist()
        prompts.append(
            {
                "name": name,
                "text": text,
                "ids": ids,
                "top5": [
                    {"id": i, "token": tokenizer.decode([i]), "logit": float(logits[i]),
                     "logprob": float(logp[i])}
                    for i in top
                ],
            }
        )
        print(f"gemma_reference: {name}: top-5 {[p['token'] for p in prompts[-1]['top5']]}")
    path = args.out / "gemma3_reference.safetensors"
    write_atomic(path, lambda tmp: safetensors.torch.save_file(tensors, str(tmp)))
    write_json(
        args.out / "gemma3_meta.json",
        {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "threads": args.threads,
            "load_seconds": load_seconds,
            "prompts": prompts,
        },
    )
    print(f"gemma_reference: transformers loaded the file in {load_seconds:.1f} s")


if __name__ == "__main__":
    main()
