"""Reference outputs of Hugging Face transformers for the architecture parity test.

(a) Runs the real all-MiniLM-L6-v2 folder on a padded batch of sentences and saves every
hidden state, every attention pattern and the sentence-transformers embeddings (mean pooling
over real tokens, L2 normalisation). (b) Creates seeded tiny random GPT-2, Qwen2,
BertForSequenceClassification, Gemma 3 (sliding window shorter than the rows), Qwen3 and Llama 3
(llama3 RoPE scaling) checkpoints (safetensors, with MiniLM's tokenizer.json beside
them), and saves their logits and attentions on fixed ids. Eager attention throughout.

Usage: python reference/arch_reference.py --minilm PATH/TO/minilm --out target/parity/arch
"""

import argparse
import json
import shutil
from pathlib import Path

import safetensors.torch
import torch
import transformers

SENTENCES = [
    "A man is playing a guitar.",
    "Someone plays an instrument.",
    "The stock market fell sharply today.",
]
IDS = [[101, 7592, 2088, 2003, 1037, 3231, 1012, 102], [101, 2064, 2017, 2393, 102, 0, 0, 0]]
MASK = [[1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0, 0]]
VOCAB = 30522


def randomise(model, seed):
    """Larger-than-default random weights so attention patterns are far from uniform."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=generator)
            if p.ndim >= 2:
                p.copy_(noise * (1.0 if "wte" in name or "embed" in name else 0.2))
            elif "norm" in name.lower() or "ln_" in name:
                p.copy_(1.0 + 0.1 * noise if name.endswith("weight") else 0.1 * noise)
            else:
                p.copy_(0.1 * noise)


def tiny(kind, folder, minilm, seed):
    common = dict(attn_implementation="eager")
    if kind == "gpt2":
        config = transformers.GPT2Config(
            vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4, **common
        )
        model = transformers.GPT2LMHeadModel(config)
    elif kind == "gemma3":
        # Sliding window 3 on 5 of every 6 layers, shorter than the 8-token rows: local and
        # global layers both bite. Zero-centred norm weights as Gemma stores them.
        config = transformers.Gemma3TextConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=6,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            max_position_embeddings=64,
            sliding_window=3,
            query_pre_attn_scalar=8,
            **common,
        )
        model = transformers.Gemma3ForCausalLM(config)
    elif kind == "qwen3":
        config = transformers.Qwen3Config(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=64,
            tie_word_embeddings=True,
            **common,
        )
        model = transformers.Qwen3ForCausalLM(config)
    elif kind == "llama3":
        # Llama 3.1's RoPE rule with a short original context (64) so that all three
        # frequency bands occur at head_dim 16: wavelength 6.3 < 64/4 kept, 33 interpolated,
        # 172 and beyond > 64/1 divided by 8.
        config = transformers.LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=64,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
            tie_word_embeddings=False,
            **common,
        )
        model = transformers.LlamaForCausalLM(config)
    elif kind == "qwen2":
        config = transformers.Qwen2Config(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            tie_word_embeddings=False,
            **common,
        )
        model = transformers.Qwen2ForCausalLM(config)
    else:
        config = transformers.BertConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=48,
            max_position_embeddings=64,
            num_labels=3,
            **common,
        )
        model = transformers.BertForSequenceClassification(config)
    randomise(model, seed)
    model.eval()
    model.save_pretrained(folder, safe_serialization=True)
    shutil.copy(minilm / "tokenizer.json", folder / "tokenizer.json")
    ids = torch.tensor(IDS)
    mask = torch.tensor(MASK)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_attentions=True)
    tensors = {f"{kind}_logits": out.logits.float()}
    for layer, attn in enumerate(out.attentions):
        tensors[f"{kind}_attn_{layer}"] = attn.float()
    return tensors


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minilm", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    torch.set_num_threads(2)
    args.out.mkdir(parents=True, exist_ok=True)

    tokenizer = transformers.AutoTokenizer.from_pretrained(args.minilm)
    model = transformers.AutoModel.from_pretrained(args.minilm, attn_implementation="eager")
    model.eval()
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True, output_attentions=True)
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (out.last_hidden_state * mask).sum(1) / mask.sum(1)
    tensors = {
        "minilm_ids": batch["input_ids"],
        "minilm_mask": batch["attention_mask"],
        "minilm_embeddings": torch.nn.functional.normalize(pooled, dim=-1),
        "ids": torch.tensor(IDS),
        "mask": torch.tensor(MASK),
    }
    for layer, hidden in enumerate(out.hidden_states):
        tensors[f"minilm_hidden_{layer}"] = hidden
    for layer, attn in enumerate(out.attentions):
        tensors[f"minilm_attn_{layer}"] = attn

    for seed, kind in enumerate(["gpt2", "qwen2", "bert_cls", "gemma3", "qwen3", "llama3"]):
        folder = args.out / kind
        folder.mkdir(parents=True, exist_ok=True)
        tensors.update(tiny(kind, folder, args.minilm, 1000 + seed))

    tensors = {k: v.contiguous() for k, v in tensors.items()}
    safetensors.torch.save_file(tensors, str(args.out / "arch_reference.safetensors"))
    meta = {"sentences": SENTENCES, "transformers": transformers.__version__}
    (args.out / "arch_meta.json").write_text(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
