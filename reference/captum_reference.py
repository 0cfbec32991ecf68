"""Captum reference numbers for crates/explain-gradients (feature `parity` test).

Loads SmolLM2 from the same GGUF with transformers (float32, eager attention), then on
"The capital of France is" with target log p(" Paris") at the last position computes, on
`inputs_embeds`:
- IntegratedGradients, all-eos baseline, with the convergence delta: Gauss-Legendre at 10 and 50
  steps, and the four Riemann rules (riemann_left/right/middle/trapezoid) at 20 steps;
- InputXGradient, summed over d_model per token;
- Saliency with abs=False, reduced per token like ours: L2 norm, L1 norm and signed sum over
  d_model;
and LLMGradientAttribution(LayerIntegratedGradients on the embedding layer, Gauss-Legendre,
20 steps, TextTokenInput with the eos token as baseline) for the 10-token greedy continuation,
its token_attr matrix [10, 5] plus per-row convergence deltas computed as Captum defines them
(sum of the row minus F_t(input) - F_t(baseline), F_t = log p(y_t | prompt, y_<t)). Writes JSON.

Usage: python reference/captum_reference.py --gguf PATH/TO/model.gguf --out target/captum.json
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from captum.attr import (  # noqa: E402
    InputXGradient,
    IntegratedGradients,
    LayerIntegratedGradients,
    LLMGradientAttribution,
    Saliency,
    TextTokenInput,
)

import hf_smollm2  # noqa: E402

PROMPT = "The capital of France is"
PROMPT_IDS = [504, 3575, 282, 4649, 314]
PARIS = 7042
EOS = 2
RIEMANN_STEPS = 20
GENERATION_TOKENS = 10
GENERATION_STEPS = 20


def greedy(model, ids, count):
    """`count` greedy tokens after `ids` (no cache, full forward each step, like ours)."""
    out = []
    seq = list(ids)
    with torch.no_grad():
        for _ in range(count):
            logits = model(input_ids=torch.tensor([seq]), use_cache=False).logits
            nxt = int(logits[0, -1].argmax())
            out.append(nxt)
            seq.append(nxt)
    return out


def row_log_probs(model, prompt, continuation):
    """[T]: log p(y_t | prompt, y_<t) in one forward pass."""
    seq = torch.tensor([list(prompt) + list(continuation)])
    with torch.no_grad():
        logits = model(input_ids=seq, use_cache=False).logits[0].float()
    p, t_out = len(prompt), len(continuation)
    lp = torch.log_softmax(logits[p - 1 : p - 1 + t_out], dim=-1)
    return lp[torch.arange(t_out), torch.tensor(continuation)].tolist()


def generation(model, tokenizer):
    """Captum's LLMGradientAttribution with LayerIntegratedGradients on the embeddings."""
    inp = TextTokenInput(PROMPT, tokenizer, baselines=EOS)
    if inp.inp_tensor[0].tolist() != PROMPT_IDS:
        raise SystemExit(f"tokenizer gave {inp.inp_tensor[0].tolist()}, expected {PROMPT_IDS}")
    continuation = greedy(model, PROMPT_IDS, GENERATION_TOKENS)
    lig = LayerIntegratedGradients(model, model.get_input_embeddings())
    llm = LLMGradientAttribution(lig, tokenizer)
    result = llm.attribute(
        inp, target=torch.tensor(continuation), n_steps=GENERATION_STEPS,
        method="gausslegendre",
    )
    attr = result.token_attr.detach().double()  # [T, prompt]
    f_input = row_log_probs(model, PROMPT_IDS, continuation)
    f_base = row_log_probs(model, [EOS] * len(PROMPT_IDS), continuation)
    deltas = [
        attr[t].sum().item() - (f_input[t] - f_base[t]) for t in range(len(continuation))
    ]
    return {
        "continuation": continuation,
        "n_steps": GENERATION_STEPS,
        "method": "gausslegendre",
        "token_attr": attr.tolist(),
        "f_input": f_input,
        "f_baseline": f_base,
        "deltas": deltas,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gguf", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--threads", type=int, default=hf_smollm2.default_threads())
    args = parser.parse_args()
    hf_smollm2.prepare(args.threads)
    torch.use_deterministic_algorithms(False)
    tokenizer, model = hf_smollm2.load(args.gguf)
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
    for rule in ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"):
        attr, delta = ig.attribute(
            emb, baselines=base, n_steps=RIEMANN_STEPS, method=rule,
            return_convergence_delta=True,
        )
        report[f"ig_{rule}_scores"] = attr.sum(-1)[0].tolist()
        report[f"ig_{rule}_delta"] = delta.item()
    report["riemann_steps"] = RIEMANN_STEPS
    ixg = InputXGradient(forward).attribute(emb)
    report["input_x_gradient_scores"] = ixg.sum(-1)[0].tolist()
    grad = Saliency(forward).attribute(emb, abs=False)[0]
    report["saliency_l2_scores"] = grad.norm(dim=-1).tolist()
    report["saliency_l1_scores"] = grad.abs().sum(-1).tolist()
    report["saliency_sum_scores"] = grad.sum(-1).tolist()
    report["generation"] = generation(model, tokenizer)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
