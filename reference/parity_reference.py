"""Reference outputs of Hugging Face transformers for the parity test.

Loads SmolLM2 from the same GGUF file our Rust loader reads (transformers dequantises it to
float32), runs the eager attention path on every prompt of parity_prompts.json and tokenizes
every string of tokenizer_corpus.json. `cargo xtask parity` runs it with the paths it needs;
the data contract is in reference/README.md.

Usage: python reference/parity_reference.py --gguf PATH/TO/model.gguf --out target/parity
"""

import argparse
import hashlib
import json
import os
import platform
import sys
from pathlib import Path

# First: it configures tqdm before transformers imports it.
from hf_smollm2 import default_threads, load, prepare  # isort: skip

import safetensors.torch
import torch
import transformers

HERE = Path(__file__).resolve().parent


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", required=True, type=Path, help="the SmolLM2 GGUF file")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--threads",
        type=int,
        default=default_threads(),
        help="torch intra-op threads (default: $EXPLAINABILITY_THREADS or 2)",
    )
    parser.add_argument("--prompts", type=Path, default=HERE / "parity_prompts.json")
    parser.add_argument("--corpus", type=Path, default=HERE / "tokenizer_corpus.json")
    return parser.parse_args()


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path, write):
    """Writes through a temporary file and renames, so a file that exists is complete."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def write_json(path, value):
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(value, f, ensure_ascii=False, indent=1)
            f.write("\n")

    write_atomic(path, write)


def model_outputs(model, name, ids):
    """The tensors of one prompt, keyed as the contract says."""
    with torch.inference_mode():
        out = model(
            input_ids=torch.tensor([ids], dtype=torch.int64),
            output_attentions=True,
            output_hidden_states=True,
            use_cache=False,
        )
        relogits = model.lm_head(out.hidden_states[-1])
    layers = model.config.num_hidden_layers
    if len(out.attentions) != layers or len(out.hidden_states) != layers + 1:
        sys.exit(
            f"{name}: expected {layers} attentions and {layers + 1} hidden states, got "
            f"{len(out.attentions)} and {len(out.hidden_states)}"
        )
    # hidden_states[L] must be after the final norm (ln_final.hook_normalized): the LM head
    # applied to it gives the logits.
    gap = (relogits - out.logits).abs().max().item()
    if gap > 1e-4:
        sys.exit(f"{name}: hidden_states[{layers}] is not the final-norm output (gap {gap})")
    tensors = {
        f"{name}.input_ids": torch.tensor(ids, dtype=torch.int64),
        f"{name}.logits": out.logits[0].float(),
    }
    for layer, pattern in enumerate(out.attentions):
        tensors[f"{name}.attn.{layer}"] = pattern[0].float()
    for index, hidden in enumerate(out.hidden_states):
        tensors[f"{name}.hidden.{index}"] = hidden[0].float()
    # save_file wants contiguous tensors that share no storage.
    return {key: value.contiguous().clone() for key, value in tensors.items()}


def main():
    args = parse_args()
    prepare(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    tokenizer, model = load(args.gguf)
    config = model.config
    prompts = json.loads(args.prompts.read_text(encoding="utf-8"))
    corpus = json.loads(args.corpus.read_text(encoding="utf-8"))

    tensors = {}
    prompt_meta = []
    for prompt in prompts:
        name, text = prompt["name"], prompt["text"]
        ids = tokenizer(text)["input_ids"]
        tensors.update(model_outputs(model, name, ids))
        argmax = int(tensors[f"{name}.logits"][-1].argmax())
        prompt_meta.append(
            {
                "name": name,
                "text": text,
                "num_tokens": len(ids),
                "last_argmax": argmax,
                "last_argmax_token": tokenizer.decode([argmax]),
            }
        )
        print(
            f"parity_reference: {name}: {len(ids)} tokens, next token "
            f"{tokenizer.decode([argmax])!r}"
        )
    reference = args.out / "smollm2_reference.safetensors"
    write_atomic(reference, lambda tmp: safetensors.torch.save_file(tensors, str(tmp)))

    cases = []
    for text in corpus:
        ids = tokenizer(text)["input_ids"]
        cases.append(
            {
                "text": text,
                "ids": ids,
                "tokens": tokenizer.convert_ids_to_tokens(ids),
                "decoded": tokenizer.decode(ids),
            }
        )
    write_json(args.out / "tokenizer_reference.json", {"cases": cases})

    # What the tokenizer's default add_special_tokens=True adds around a text, if anything.
    plain = tokenizer("Hello", add_special_tokens=False)["input_ids"]
    default = tokenizer("Hello")["input_ids"]
    meta = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "model_file": str(args.gguf.resolve()),
        "model_sha256": sha256_file(args.gguf),
        "dtype": "float32",
        "attn_implementation": "eager",
        "threads": args.threads,
        "add_special_tokens_adds": len(default) - len(plain),
        "config": {
            "num_hidden_layers": config.num_hidden_layers,
            "num_attention_heads": config.num_attention_heads,
            "num_key_value_heads": config.num_key_value_heads,
            "hidden_size": config.hidden_size,
            "vocab_size": config.vocab_size,
            "rope_theta": getattr(config, "rope_theta", None)
            or (getattr(config, "rope_parameters", None) or {}).get("rope_theta"),
            "rms_norm_eps": config.rms_norm_eps,
            "tie_word_embeddings": config.tie_word_embeddings,
        },
        "prompts": prompt_meta,
        "tokenizer_cases": len(cases),
    }
    write_json(args.out / "meta.json", meta)
    size = reference.stat().st_size / 2**20
    print(
        f"parity_reference: wrote {len(tensors)} tensors ({size:.0f} MiB), "
        f"{len(cases)} tokenizer cases to {args.out}"
    )


if __name__ == "__main__":
    main()
