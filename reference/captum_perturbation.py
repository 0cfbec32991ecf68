"""Captum reference numbers for crates/explain-perturbation (feature `parity` test).

Loads SmolLM2 from the same GGUF with transformers (float32, eager attention) and explains
log p(" Paris" | "The capital of France is") with Captum's LLMAttribution:
- FeatureAblation on TextTokenInput with token id 0 as the baseline (ours: Replace(0) over
  single tokens);
- FeatureAblation and ShapleyValues (exact: Captum evaluates every one of the 4! orders) on
  TextTemplateInput("The{}{}{}{}") with the four word
  segments as features and the empty string as baseline (ours: Delete over token spans 1..5;
  the script checks that each ablated text tokenises to the id-space deletion, so the two
  perturb the same inputs);
- FeatureAblation on TextTokenInput (baseline id 0) for the 3-token greedy continuation: its
  seq_attr and token_attr (per continuation token; ours: `explain_continuation`), decoded
  without the KV cache (`use_cached_outputs=False`): Captum's default cached decoding gives
  other rows after the first on transformers 5.24 (written as `..._kv_cache` for the record);
- KernelShap and Lime with injected keep-masks (the same masks are written to the JSON for
  the Rust side), Captum's own similarity kernels (KernelShap: 1e6 on the full and empty
  coalitions, 1 elsewhere; Lime: exp(-d^2/2) on the cosine distance), and an exact weighted
  least-squares interpretable model in float64 (scikit-learn, which Captum's default
  interpretable models wrap, is not part of the reference stack).

Usage: python reference/captum_perturbation.py --gguf PATH/TO/model.gguf --out target/perturbation.json
"""

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from captum._utils.models.model import Model  # noqa: E402
from captum.attr import (  # noqa: E402
    FeatureAblation,
    KernelShap,
    Lime,
    LLMAttribution,
    ShapleyValues,
    TextTemplateInput,
    TextTokenInput,
)
from captum.attr._core.lime import get_exp_kernel_similarity_function  # noqa: E402

import hf_smollm2  # noqa: E402

PROMPT = "The capital of France is"
PROMPT_IDS = [504, 3575, 282, 4649, 314]
PARIS = 7042
BASELINE_ID = 0
CONTINUATION_TOKENS = 3
TEMPLATE = "The{}{}{}{}"
SEGMENTS = [" capital", " of", " France", " is"]
# Keep-masks over the five tokens (1: kept); full rank with the intercept, none full or empty.
MASKS = [
    [1, 0, 1, 1, 0],
    [0, 1, 1, 0, 1],
    [1, 1, 0, 1, 1],
    [0, 0, 1, 1, 1],
    [1, 0, 0, 0, 1],
    [0, 1, 0, 1, 0],
    [1, 1, 1, 0, 0],
    [0, 0, 0, 1, 1],
    [1, 0, 1, 0, 1],
    [0, 1, 1, 1, 0],
    [1, 1, 0, 0, 1],
    [0, 0, 1, 0, 0],
]


class WeightedLeastSquares(Model):
    """Exact weighted least squares with an intercept, in float64."""

    def __init__(self):
        self.coef = None
        self.intercept = None

    def fit(self, train_data, **kwargs):
        x, y, w = next(iter(train_data))
        x = x.double()
        y = y.double().reshape(-1)
        w = w.double().reshape(-1)
        design = torch.cat([torch.ones(x.shape[0], 1, dtype=torch.float64), x], dim=1)
        root = w.sqrt().unsqueeze(1)
        solution = torch.linalg.lstsq(design * root, y.unsqueeze(1) * root).solution[:, 0]
        self.intercept = solution[0].item()
        self.coef = solution[1:]
        return {}

    def representation(self):
        return self.coef.float().reshape(1, -1)

    def __call__(self, x):
        return x.double() @ self.coef + self.intercept


def injected(masks, prefix=()):
    """A Lime perturb_func yielding `prefix` then `masks`, as [1, n] tensors."""

    def generator(original_inp, **kwargs):
        for m in list(prefix) + list(masks):
            yield torch.tensor([m], dtype=torch.long)

    return generator


def greedy(model, ids, count):
    """`count` greedy tokens after `ids` (full forward each step)."""
    seq = list(ids)
    with torch.no_grad():
        for _ in range(count):
            logits = model(input_ids=torch.tensor([seq]), use_cache=False).logits
            seq.append(int(logits[0, -1].argmax()))
    return seq[len(ids):]


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gguf", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--threads", type=int, default=hf_smollm2.default_threads())
    args = parser.parse_args()
    hf_smollm2.prepare(args.threads)
    torch.use_deterministic_algorithms(False)
    tokenizer, model = hf_smollm2.load(args.gguf)
    target = torch.tensor([PARIS])

    tokens = TextTokenInput(PROMPT, tokenizer, baselines=BASELINE_ID)
    if tokens.inp_tensor[0].tolist() != PROMPT_IDS:
        raise SystemExit(f"tokenizer gave {tokens.inp_tensor[0].tolist()}, expected {PROMPT_IDS}")
    template = TextTemplateInput(TEMPLATE, values=SEGMENTS)
    # Captum deletes segments in text space and re-tokenises; check that this equals deleting
    # the segments' tokens (token i + 1 is segment i), for every subset of segments.
    for keep in itertools.product([0, 1], repeat=len(SEGMENTS)):
        text = template.to_model_input(torch.tensor([keep]))
        ids = tokenizer.encode(text)
        expected = [PROMPT_IDS[0]] + [PROMPT_IDS[i + 1] for i, k in enumerate(keep) if k]
        if ids != expected:
            raise SystemExit(f"{text!r} tokenises to {ids}, not the deletion {expected}")

    with torch.no_grad():
        logits = model(input_ids=torch.tensor([PROMPT_IDS]), use_cache=False).logits
        f_input = torch.log_softmax(logits[0, -1].float(), -1)[PARIS].item()

    report = {
        "ids": PROMPT_IDS,
        "target": PARIS,
        "baseline_id": BASELINE_ID,
        "template_spans": [[1, 2], [2, 3], [3, 4], [4, 5]],
        "masks": MASKS,
        "f_input": f_input,
        "seconds": {},
    }
    runs = {
        "feature_ablation_tokens": (FeatureAblation(model), tokens, {}),
        "feature_ablation_template": (FeatureAblation(model), template, {}),
        "shapley_template": (ShapleyValues(model), template, {}),
    }
    for name, (method, inp, kwargs) in runs.items():
        llm = LLMAttribution(method, tokenizer)
        result, seconds = timed(lambda: llm.attribute(inp, target=target, **kwargs))
        report[name] = result.seq_attr.double().tolist()
        report["seconds"][name] = seconds

    continuation = greedy(model, PROMPT_IDS, CONTINUATION_TOKENS)
    llm = LLMAttribution(FeatureAblation(model), tokenizer)
    result, seconds = timed(
        lambda: llm.attribute(
            tokens, target=torch.tensor(continuation), use_cached_outputs=False
        )
    )
    report["continuation"] = continuation
    report["continuation_seq_attr"] = result.seq_attr.double().tolist()
    report["continuation_token_attr"] = result.token_attr.double().tolist()
    report["seconds"]["continuation"] = seconds
    # Captum's default decodes with the KV cache; with transformers 5.24 its rows after the
    # first differ from teacher forcing without the cache (kept here to document it).
    cached = llm.attribute(tokens, target=torch.tensor(continuation))
    report["continuation_token_attr_kv_cache"] = cached.token_attr.double().tolist()

    n = len(PROMPT_IDS)
    kernel_shap = KernelShap(model)
    kernel_shap.perturb_func = injected(MASKS, prefix=([1] * n, [0] * n))
    kernel_shap.interpretable_model = WeightedLeastSquares()
    llm = LLMAttribution(kernel_shap, tokenizer)
    result, seconds = timed(
        lambda: llm.attribute(tokens, target=target, n_samples=len(MASKS) + 2)
    )
    report["kernel_shap_tokens"] = result.seq_attr.double().tolist()
    report["seconds"]["kernel_shap_tokens"] = seconds

    lime = Lime(
        model,
        interpretable_model=WeightedLeastSquares(),
        similarity_func=get_exp_kernel_similarity_function("cosine", kernel_width=1.0),
        perturb_func=injected(MASKS),
    )
    llm = LLMAttribution(lime, tokenizer)
    result, seconds = timed(lambda: llm.attribute(tokens, target=target, n_samples=len(MASKS)))
    report["lime_tokens"] = result.seq_attr.double().tolist()
    report["lime_intercept"] = llm.attr_method.interpretable_model.intercept
    report["seconds"]["lime_tokens"] = seconds

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
