"""The anchors' own attributions for the faithfulness-versus-cost benchmark (`cargo xtask
faithfulness`, docs/faithfulness.md).

SmolLM2 from the same GGUF with transformers (float32, eager attention), every prompt of a JSONL
file (objects with a "text" or "prompt" field; --limit N takes N evenly spaced ones), the target log p(argmax next token | prompt) — the target
our evaluator scores — explained by Captum 0.9 as its documentation shows users to:

- `captum_ig`: IntegratedGradients on `inputs_embeds`, Captum's defaults (zero baseline,
  50 Gauss-Legendre steps), scores summed over the embedding dimension;
- `captum_layer_ig`: LLMGradientAttribution(LayerIntegratedGradients on the embedding layer)
  with TextTokenInput (Captum's default baseline), `seq_attr`;
- `captum_feature_ablation`, `captum_shapley_sampling` (25 permutations),
  `captum_kernel_shap` (25 samples), `captum_lime` (50 samples): LLMAttribution with
  TextTokenInput (tokens replaced by id 0, Captum's default baseline), `seq_attr`, Captum's
  default interpretable models (scikit-learn) and seeds fixed per prompt.

Each record also has the wall time and the process CPU time of each method and of one no-grad
forward of the prompt (the median of 5), so that cost is comparable across frameworks in
forward-equivalents; with one thread, CPU time is the work done whatever else the machine runs
(a shared machine stretches wall times, not CPU times). One thread
unless --threads says otherwise.

Usage: python reference/faithfulness_anchors.py --gguf MODEL.gguf --prompts P.jsonl --out A.jsonl
       [--limit N] [--methods a,b]
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from captum.attr import (  # noqa: E402
    FeatureAblation,
    IntegratedGradients,
    KernelShap,
    LayerIntegratedGradients,
    Lime,
    LLMAttribution,
    LLMGradientAttribution,
    ShapleyValueSampling,
    TextTokenInput,
)

import hf_smollm2  # noqa: E402
from faithfulness_common import forward_seconds, read_texts, timed, write_records  # noqa: E402

METHODS = [
    "captum_ig",
    "captum_layer_ig",
    "captum_feature_ablation",
    "captum_shapley_sampling",
    "captum_kernel_shap",
    "captum_lime",
]


def explain(method, model, tokenizer, text, ids, target, seed):
    """Per-token scores of `method` for log p(target | ids)."""
    torch.manual_seed(seed)
    target_tensor = torch.tensor([target])
    if method == "captum_ig":
        embeds = model.get_input_embeddings()(ids).detach()

        def log_prob(inputs_embeds):
            logits = model(inputs_embeds=inputs_embeds).logits[:, -1]
            return torch.log_softmax(logits, dim=-1)[:, target]

        attr = IntegratedGradients(log_prob).attribute(embeds, internal_batch_size=10)
        return attr.sum(-1)[0].tolist()
    if method == "captum_layer_ig":
        lig = LayerIntegratedGradients(model, model.get_input_embeddings())
        result = LLMGradientAttribution(lig, tokenizer).attribute(
            TextTokenInput(text, tokenizer), target=target_tensor
        )
        return result.seq_attr.tolist()
    kinds = {
        "captum_feature_ablation": (FeatureAblation, {}),
        "captum_shapley_sampling": (ShapleyValueSampling, {"n_samples": 25}),
        "captum_kernel_shap": (KernelShap, {"n_samples": 25}),
        "captum_lime": (Lime, {"n_samples": 50}),
    }
    kind, kwargs = kinds[method]
    llm = LLMAttribution(kind(model), tokenizer)
    result = llm.attribute(
        TextTokenInput(text, tokenizer), target=target_tensor, use_cached_outputs=False, **kwargs
    )
    return result.seq_attr.tolist()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gguf", type=Path, required=True)
    parser.add_argument("--prompts", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the complete records already in --out (same index and text) and append the rest",
    )
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        sys.exit(f"unknown methods {unknown}; known: {METHODS}")

    hf_smollm2.prepare(args.threads)
    # Captum's samplers draw from torch; deterministic kernels are not needed for timing.
    torch.use_deterministic_algorithms(False)
    tokenizer, model = hf_smollm2.load(args.gguf)
    texts = read_texts(args.prompts, args.limit)

    def make_record(index, text):
        # The tokenizer's own special tokens, as ours adds them: none for SmolLM2, <bos> for
        # Gemma 3 (the Rust side checks that the ids agree).
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=True).input_ids
        with torch.no_grad():
            target = int(model(input_ids=ids).logits[0, -1].argmax())
        record = {"index": index, "text": text, "ids": ids[0].tolist(), "target_id": target}
        record["forward_seconds"], record["forward_cpu_seconds"] = forward_seconds(model, ids)
        record["methods"] = {}
        for method in methods:
            scores, seconds, cpu_seconds = timed(
                lambda: explain(method, model, tokenizer, text, ids, target, seed=index)
            )
            record["methods"][method] = {
                "scores": scores,
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
            }
        return record

    write_records(args.out, texts, methods, args.resume, make_record)


if __name__ == "__main__":
    main()
