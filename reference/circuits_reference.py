"""TransformerLens reference for the explain-circuits parity test.

Writes seeded tiny GPT-2-style and Llama-style (grouped-query attention, RMSNorm, tied
embeddings) Hugging Face checkpoints with MiniLM's tokenizer.json beside them, loads each into
TransformerLens 4.3 (`TransformerBridge.boot_transformers(..., hf_model=...)`, raw numerics, no
compatibility mode) and saves, on fixed clean/corrupted ids:

- the logit lens: `transformer_lens.tools.analysis.logit_lens(..., return_type="log_probs")`
  over every position (entries `accumulated_resid(apply_ln=True)`: each block's resid_pre, then
  the final resid_post, through the real ln_final with recomputed statistics);
- direct logit attribution of logit(answer) - logit(against) at the last position, after
  `enable_compatibility_mode(fold_ln=True)` only (final-norm weight folded into W_U, its bias
  into b_U; activations unchanged): `cache.decompose_resid(apply_ln=True)` (embed + pos_embed,
  every attn_out and mlp_out with the final norm scale frozen) through `cache.logit_attrs`,
  and per-head outputs from `blocks.{l}.attn.hook_z` and the checkpoint's W_O pushed through
  the same `apply_ln_to_stack` / `logit_attrs`; the folded bias b_U[answer] - b_U[against];
- activation patching (denoising, metric logit(answer) - logit(against) at the last position):
  `patching.get_act_patch_resid_pre` [layer, pos] and
  `patching.get_act_patch_attn_head_out_by_pos` [layer, pos, head] and the `_q_by_pos`,
  `_k_by_pos`, `_v_by_pos` variants (key/value heads for k and v);
- attribution patching of resid_pre computed here with hooks and autograd
  ((clean - corrupted) activation . gradient on the corrupted run), the AtP of the Rust side.

Usage: python reference/circuits_reference.py --minilm PATH/TO/minilm --out target/parity/circuits
"""

import argparse
import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from arch_reference import randomise  # noqa: E402  (the same seeded weights as there)
from transformer_lens import patching  # noqa: E402
from transformer_lens.model_bridge import TransformerBridge  # noqa: E402
from transformer_lens.tools.analysis.logit_lens import logit_lens  # noqa: E402

VOCAB = 30522
CLEAN = [101, 7592, 2088, 2003, 1037, 3231, 1012]
CORRUPTED = [101, 7592, 2088, 2003, 2178, 3231, 1012]
ANSWER, AGAINST = 2005, 2040


def tiny(kind, seed):
    common = dict(attn_implementation="eager")
    if kind == "gpt2":
        config = transformers.GPT2Config(
            vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=3, n_head=4, **common
        )
        model = transformers.GPT2LMHeadModel(config)
    else:
        config = transformers.LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            tie_word_embeddings=True,
            **common,
        )
        model = transformers.LlamaForCausalLM(config)
    randomise(model, seed)
    return model.eval()


def metric_of(logits):
    last = logits[:, -1, :]
    return (last[:, ANSWER] - last[:, AGAINST]).mean()


def reference(kind, seed, minilm, out):
    folder = out / kind
    folder.mkdir(parents=True, exist_ok=True)
    hf = tiny(kind, seed)
    hf.save_pretrained(folder)
    shutil.copy(minilm / "tokenizer.json", folder / "tokenizer.json")
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm)
    bridge = TransformerBridge.boot_transformers(
        str(folder), hf_model=hf, tokenizer=tokenizer, device="cpu"
    )
    bridge.eval()
    clean = torch.tensor([CLEAN])
    corrupted = torch.tensor([CORRUPTED])
    n_layers, n_heads = bridge.cfg.n_layers, bridge.cfg.n_heads
    d_head = bridge.cfg.d_head
    with torch.no_grad():
        w_o = [hf_w_o(hf, kind, layer, n_heads, d_head).clone() for layer in range(n_layers)]

    with torch.no_grad():
        logits, cache = bridge.run_with_cache(clean)
        hf_logits = hf(clean).logits
        lens = logit_lens(bridge, clean, positions=None, return_type="log_probs", vocab=None)
        lens_lp = lens.values[:, 0]  # [entry, pos, vocab]

        final = logits[0, -1, ANSWER] - logits[0, -1, AGAINST]
        _, clean_cache = bridge.run_with_cache(clean)
        resid_pre = patching.get_act_patch_resid_pre(bridge, corrupted, clean_cache, metric_of)
        head_out = patching.get_act_patch_attn_head_out_by_pos(
            bridge, corrupted, clean_cache, metric_of
        )
        # Queries, keys and values per head and position ([layer, pos, head]; key/value
        # heads for k and v under grouped-query attention).
        head_q = patching.get_act_patch_attn_head_q_by_pos(bridge, corrupted, clean_cache, metric_of)
        head_k = patching.get_act_patch_attn_head_k_by_pos(bridge, corrupted, clean_cache, metric_of)
        head_v = patching.get_act_patch_attn_head_v_by_pos(bridge, corrupted, clean_cache, metric_of)
        clean_metric = metric_of(bridge(clean)).item()
        corrupted_metric = metric_of(bridge(corrupted)).item()

    # AtP of resid_pre, denoising: (clean - corrupted) . dM/da on the corrupted run.
    acts = {}

    def keep(name):
        def hook(tensor, hook):
            tensor.retain_grad()
            acts[name] = tensor
            return tensor

        return hook

    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)]
    with torch.enable_grad():
        patched = bridge.run_with_hooks(corrupted, fwd_hooks=[(n, keep(n)) for n in names])
        metric_of(patched).backward()
    atp = torch.stack(
        [
            ((clean_cache[n] - acts[n].detach()) * acts[n].grad).sum(-1)[0]
            for n in names
        ]
    )  # [layer, pos]
    # DLA in TransformerLens's coordinate system: final-norm weights folded into W_U (and a
    # LayerNorm bias into b_U), nothing else processed, so the cached activations stay those
    # of the raw model.
    bridge.enable_compatibility_mode(
        disable_warnings=True,
        fold_ln=True,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
    )
    with torch.no_grad():
        _, cache = bridge.run_with_cache(clean)
        # logit_attrs applies the frozen final-norm scale (apply_ln_to_stack) itself.
        resid, labels = cache.decompose_resid(pos_slice=-1, return_labels=True)
        attrs = cache.logit_attrs(resid, tokens=ANSWER, incorrect_tokens=AGAINST, pos_slice=-1)
        attrs = dict(zip(labels, attrs.reshape(len(labels)).tolist()))
        heads = []
        for layer in range(n_layers):
            z = cache[f"blocks.{layer}.attn.hook_z"][:, -1]  # [batch, head, d_head]
            heads.append(torch.einsum("bhe,hed->hbd", z, w_o[layer]))
        heads = torch.cat(heads, 0)
        head_attrs = cache.logit_attrs(
            heads, tokens=ANSWER, incorrect_tokens=AGAINST, pos_slice=-1
        )
        b_u = getattr(bridge, "b_U", None)
        bias = 0.0 if b_u is None else (b_u[ANSWER] - b_u[AGAINST]).item()

    result = {
        "clean": CLEAN,
        "corrupted": CORRUPTED,
        "answer": ANSWER,
        "against": AGAINST,
        "hf_vs_bridge_logits": (logits - hf_logits).abs().max().item(),
        "lens_log_probs_last_pos": lens_lp[:, -1].tolist(),
        "lens_log_probs_max_abs_final_vs_model": (
            lens_lp[-1] - torch.log_softmax(logits[0].double(), -1)
        ).abs().max().item(),
        "lens_labels": lens.labels,
        "dla_labels": list(attrs),
        "dla_embed": attrs["embed"] + attrs.get("pos_embed", 0.0),
        "dla_attn_out": [attrs[f"{layer}_attn_out"] for layer in range(n_layers)],
        "dla_mlp_out": [attrs[f"{layer}_mlp_out"] for layer in range(n_layers)],
        "dla_heads": head_attrs.reshape(n_layers, n_heads).tolist(),
        "dla_unembed_bias": bias,
        "logit_diff": final.item(),
        "clean_metric": clean_metric,
        "corrupted_metric": corrupted_metric,
        "patch_resid_pre": resid_pre.tolist(),
        "patch_head_out_by_pos": head_out.tolist(),
        "patch_head_q_by_pos": head_q.tolist(),
        "patch_head_k_by_pos": head_k.tolist(),
        "patch_head_v_by_pos": head_v.tolist(),
        "atp_resid_pre": (corrupted_metric + atp).tolist(),
    }
    # The full lens at every position would be [entries, pos, 30522]; keep the top of each
    # entry and position plus a fixed probe of token ids.
    probe = [0, 100, 101, 1012, 2005, 2040, 7592, 30521]
    result["lens_probe_ids"] = probe
    result["lens_probe"] = lens_lp[:, :, probe].tolist()
    (out / f"{kind}.json").write_text(json.dumps(result))
    dla_sum = (
        result["dla_embed"] + sum(result["dla_attn_out"]) + sum(result["dla_mlp_out"]) + bias
    )
    print(
        f"{kind}: bridge vs HF logits {result['hf_vs_bridge_logits']:.2e}, "
        f"lens final vs model {result['lens_log_probs_max_abs_final_vs_model']:.2e}, "
        f"DLA sum {dla_sum:.4f} vs logit diff {result['logit_diff']:.4f}"
    )


def hf_w_o(hf, kind, layer, n_heads, d_head):
    """W_O of one layer as [head, d_head, d_model] from the Hugging Face module."""
    if kind == "gpt2":
        w = hf.transformer.h[layer].attn.c_proj.weight  # Conv1D: [in, out]
    else:
        w = hf.model.layers[layer].self_attn.o_proj.weight.T  # Linear: [out, in] -> [in, out]
    return w.reshape(n_heads, d_head, -1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--minilm", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_grad_enabled(False)
    for kind, seed in [("gpt2", 21), ("llama", 22)]:
        reference(kind, seed, args.minilm, args.out)


if __name__ == "__main__":
    main()
