"""Captum reference numbers for crates/explain-gradients (feature `captum` test).

Loads SmolLM2 from the same GGUF with transformers (float32, eager attention), then on
"The capital of France is" with target log p(" Paris") at the last position computes, on
`inputs_embeds`: Captum IntegratedGradients (Gauss-Legendre, 50 steps, all-eos baseline, with
the convergence delta) and InputXGradient, both summed over d_model per token. Writes JSON.

Usage: python reference/captum_reference.py --gguf PATH/TO/model.gguf --out target/captum.json
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from captum.attr import InputXGradient, IntegratedGradients  # noqa: E402

import hf_smollm2  # noqa: E402

PROMPT_IDS = [504, 3575, 282, 4649, 314]
PARIS = 7042
EOS = 2


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gguf", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--threads", type=int, default=hf_smollm2.default_threads())
    args = parser.parse_args()
    hf_smollm2.prepare(args.threads)
    torch.use_deterministic_algorithms(False)
    _, model = hf_smollm2.load(args.gguf)
    embed = model.get_input_embeddings()
    ids = torch.tensor([PROMPT_IDS])
    with torch.no_grad():
        emb = embed(ids).detach()
        base = embed(torch.full_like(ids, EOS)).detach()

    def forward(e):
        logits = model(inputs_embeds=e, use_cache=False).logits
        return torch.log_softmax(logits[:, -1].float(), dim=-1)[:, PARIS]

    report = {"ids": PROMPT_IDS, "target": PARIS, "baseline_token": EOS}
    with torch.no_grad():
        report["f_input"] = forward(emb).item()
        report["f_baseline"] = forward(base).item()
    ig = IntegratedGradients(forward)
    for steps in (10, 50):
        attr, delta = ig.attribute(
            emb, baselines=base, n_steps=steps, method="gausslegendre",
            return_convergence_delta=True,
        )
        report[f"ig_gl{steps}_scores"] = attr.sum(-1)[0].tolist()
        report[f"ig_gl{steps}_delta"] = delta.item()
    ixg = InputXGradient(forward).attribute(emb)
    report["input_x_gradient_scores"] = ixg.sum(-1)[0].tolist()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
