"""What the reference scripts share: determinism, threads, and loading SmolLM2 from its GGUF
file with Hugging Face transformers (dequantised to float32, eager attention)."""

import os
import random

# transformers' GGUF loader draws tqdm bars; they are noise in CI logs.
os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402


def default_threads():
    """$EXPLAINABILITY_THREADS, else 2 (the CI machine's cores)."""
    return int(os.environ.get("EXPLAINABILITY_THREADS", "2"))


def prepare(threads):
    """Seeds every generator, asks for deterministic kernels, fixes the intra-op threads."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)
    transformers.logging.disable_progress_bar()


def load(gguf, attn_implementation="eager"):
    """(tokenizer, model) from a GGUF file, float32, eager attention (or the one given), in
    eval mode."""
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32, attn_implementation=attn_implementation
    )
    model.eval()
    return tokenizer, model
