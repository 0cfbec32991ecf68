"""Reference token ids of Hugging Face transformers for the GGUF tokenizer parity tests.

For every string of tokenizer_corpus.json, writes the ids transformers gives:
1. for Gemma 3 270M (SentencePiece in GGUF metadata),
   `AutoTokenizer.from_pretrained(folder, gguf_file=name)`;
2. for two small byte-level BPE GGUF files this script writes itself with gguf-py, because no
   real Llama 3 or Qwen2 GGUF is in the model cache: a vocabulary trained on the corpus with
   the `tokenizers` BPE trainer under the Llama 3 split regex (`tokenizer.ggml.pre =
   "llama-bpe"`) and one under the Qwen2 regex (`"qwen2"`), with control tokens and a BOS.
   transformers reads them back with `TokenizersBackend.from_pretrained(folder, gguf_file=name)`,
   exactly as it would read a real file, and the Rust test reads the same files.
`cargo xtask parity` runs it with the paths it needs; the data contract is in
reference/README.md.

Usage: python reference/tokenizer_reference.py --gemma PATH/TO/gemma.gguf --out target/parity/tokenizer
"""

import argparse
import importlib.metadata
import json
import os
import platform
import sys
import time
from pathlib import Path

import gguf
import tokenizers
import transformers
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
from transformers import AutoTokenizer
from transformers.tokenization_utils_tokenizers import TokenizersBackend

HERE = Path(__file__).resolve().parent

# The split regexes transformers installs for these `tokenizer.ggml.pre` values
# (`integrations/gguf/gguf_tokenizer_mapping.py`); used here only to train the small vocabularies.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# name -> (tokenizer.ggml.pre, split regex, control tokens, bos, eos)
BYTE_LEVEL_FILES = {
    "llama3_tiny": (
        "llama-bpe",
        LLAMA3_SPLIT,
        ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>"],
        "<|begin_of_text|>",
        "<|end_of_text|>",
    ),
    "qwen2_tiny": (
        "qwen2",
        QWEN2_SPLIT,
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "<|im_start|>",
        "<|im_end|>",
    ),
}
TINY_VOCAB_SIZE = 800


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gemma", required=True, type=Path, help="the Gemma 3 270M GGUF file")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--corpus", type=Path, default=HERE / "tokenizer_corpus.json")
    return parser.parse_args()


def write_json(path, value):
    """Writes through a temporary file and renames, so a file that exists is complete."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=False, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def cases(tokenizer, corpus):
    """The contract's cases: default add_special_tokens, special tokens kept on decode."""
    out = []
    for text in corpus:
        ids = tokenizer(text)["input_ids"]
        out.append(
            {
                "text": text,
                "ids": ids,
                "tokens": tokenizer.convert_ids_to_tokens(ids),
                "decoded": tokenizer.decode(ids),
            }
        )
    return out


def train_byte_level(split, controls, corpus):
    """A small byte-level BPE vocabulary trained on the corpus under `split`: (tokens, merges)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    model = json.loads(tokenizer.to_str())["model"]
    by_id = sorted(model["vocab"].items(), key=lambda item: item[1])
    tokens = [token for token, _ in by_id] + controls
    merges = [" ".join(pair) if isinstance(pair, list) else pair for pair in model["merges"]]
    return tokens, merges


def write_byte_level_gguf(path, pre, tokens, merges, controls, bos, eos):
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types([3 if token in controls else 1 for token in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokens.index(bos))
    writer.add_eos_token_id(tokens.index(eos))
    writer.add_add_bos_token(True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main():
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    corpus = json.loads(args.corpus.read_text(encoding="utf-8"))
    meta = {
        "python": platform.python_version(),
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "gguf": importlib.metadata.version("gguf"),
        "corpus_strings": len(corpus),
        "files": {},
    }

    start = time.perf_counter()
    gemma = AutoTokenizer.from_pretrained(str(args.gemma.parent), gguf_file=args.gemma.name)
    load_seconds = time.perf_counter() - start
    write_json(args.out / "gemma3_reference.json", {"cases": cases(gemma, corpus)})
    meta["files"]["gemma3"] = {
        "model_file": str(args.gemma),
        "class": type(gemma).__name__,
        "load_seconds": round(load_seconds, 2),
    }
    print(f"tokenizer_reference: gemma3 tokenizer loaded in {load_seconds:.1f} s", file=sys.stderr)

    for name, (pre, split, controls, bos, eos) in BYTE_LEVEL_FILES.items():
        tokens, merges = train_byte_level(split, controls, corpus)
        path = args.out / f"{name}.gguf"
        write_byte_level_gguf(path, pre, tokens, merges, controls, bos, eos)
        tokenizer = TokenizersBackend.from_pretrained(str(args.out), gguf_file=path.name)
        write_json(args.out / f"{name}_reference.json", {"cases": cases(tokenizer, corpus)})
        meta["files"][name] = {
            "pre": pre,
            "tokens": len(tokens),
            "merges": len(merges),
            "class": type(tokenizer).__name__,
        }
        print(
            f"tokenizer_reference: {name}: {len(tokens)} tokens, {len(merges)} merges",
            file=sys.stderr,
        )

    write_json(args.out / "meta.json", meta)
    print(f"tokenizer_reference: {len(corpus)} strings per file written to {args.out}")


if __name__ == "__main__":
    main()
