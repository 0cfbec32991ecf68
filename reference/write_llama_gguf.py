"""Writes a Llama-architecture GGUF file with seeded random quantised weights, tensor by tensor
(the whole file is never in memory), with gguf-py's `GGUFWriter` (the pinned `gguf` package).

The default shape is Llama 2 7B's: 32 layers, d_model 4096, 32 heads (32 kv heads), ffn 11008,
vocab 32000, context 4096; Q4_0 makes that a 3.8 GB file. Projection matrices, the token
embedding and the (untied) head are Q4_0 or Q8_0 blocks of random bytes whose f16 scale is set
so that the weights have a standard deviation of about 0.02 (Llama's initialisation); norm
weights are f32 ones. The tokenizer is a SentencePiece ("llama") vocabulary that loads but is
not meant for text: `<unk>`, `<s>`, `</s>`, the 256 byte tokens, printable ASCII characters
and numbered filler pieces; drive the model with token ids.

`crates/explain-gradients/examples/streamed_7b.rs` runs gradient × input on such a file with
streamed weights (docs/benchmarks.md, "Streamed quantised weights").

Usage: python reference/write_llama_gguf.py --out PATH.gguf [--layers 32] [--d-model 4096]
       [--heads 32] [--kv-heads 32] [--ffn 11008] [--vocab 32000] [--type q4_0|q8_0] [--seed 0]
"""

import argparse
import sys
import time

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, TokenType

# Bytes per block of 32 values: f16 scale + payload.
BLOCK = {"q4_0": 18, "q8_0": 34}
QTYPE = {"q4_0": GGMLQuantizationType.Q4_0, "q8_0": GGMLQuantizationType.Q8_0}
# Standard deviation of one quantised value in units of the scale: Q4_0 holds q - 8 with q
# uniform in 0..15 (sqrt(255/12)); Q8_0 a uniform int8 (sqrt(65535/12)).
UNIT_STD = {"q4_0": (255 / 12) ** 0.5, "q8_0": (65535 / 12) ** 0.5}
WEIGHT_STD = 0.02


def quantised(rng, rows, cols, qtype):
    """Random blocks for a [rows, cols] matrix: uint8 array [rows, cols / 32 * block bytes]."""
    block = BLOCK[qtype]
    blocks = rng.integers(0, 256, size=(rows, cols // 32, block), dtype=np.uint8)
    scale = np.float16(WEIGHT_STD / UNIT_STD[qtype]).tobytes()
    blocks[:, :, 0] = scale[0]
    blocks[:, :, 1] = scale[1]
    return blocks.reshape(rows, -1)


def vocabulary(n):
    """A SentencePiece vocabulary of n pieces: specials, bytes, ASCII, then fillers."""
    tokens = ["<unk>", "<s>", "</s>"]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [TokenType.BYTE] * 256
    for c in ["\u2581"] + [chr(c) for c in range(33, 127)]:
        tokens.append(c)
        types.append(TokenType.NORMAL)
    i = 0
    while len(tokens) < n:
        tokens.append(f"\u2581filler{i}")
        types.append(TokenType.NORMAL)
        i += 1
    tokens, types = tokens[:n], types[:n]
    scores = [0.0] * 3 + [0.0] * 256 + [-float(i) for i in range(n - 259)]
    return tokens, scores[:n], [int(t) for t in types]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--d-model", type=int, default=4096)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=32)
    p.add_argument("--ffn", type=int, default=11008)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--context", type=int, default=4096)
    p.add_argument("--type", choices=sorted(BLOCK), default="q4_0")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    d, h, kv, f, v = a.d_model, a.heads, a.kv_heads, a.ffn, a.vocab
    d_head = d // h
    for name, n in [("d_model", d), ("ffn", f), ("kv width", kv * d_head)]:
        if n % 32:
            sys.exit(f"{name} {n} is not a multiple of the 32-value block")

    w = GGUFWriter(a.out, "llama")
    w.add_name(f"random-llama-{a.layers}x{d}-{a.type}")
    w.add_context_length(a.context)
    w.add_embedding_length(d)
    w.add_block_count(a.layers)
    w.add_feed_forward_length(f)
    w.add_head_count(h)
    w.add_head_count_kv(kv)
    w.add_rope_dimension_count(d_head)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(v)
    w.add_file_type(int(QTYPE[a.type]))
    tokens, scores, types = vocabulary(v)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)

    # (name, rows, cols) of every matrix, in file order; None rows mark an f32 norm of cols.
    layout = [("token_embd.weight", v, d)]
    for l in range(a.layers):
        b = f"blk.{l}."
        layout += [
            (b + "attn_norm.weight", None, d),
            (b + "attn_q.weight", h * d_head, d),
            (b + "attn_k.weight", kv * d_head, d),
            (b + "attn_v.weight", kv * d_head, d),
            (b + "attn_output.weight", d, h * d_head),
            (b + "ffn_norm.weight", None, d),
            (b + "ffn_gate.weight", f, d),
            (b + "ffn_up.weight", f, d),
            (b + "ffn_down.weight", d, f),
        ]
    layout += [("output_norm.weight", None, d), ("output.weight", v, d)]
    qtype, block = QTYPE[a.type], BLOCK[a.type]
    for name, rows, cols in layout:
        if rows is None:
            w.add_tensor_info(name, [cols], np.dtype(np.float32), cols * 4)
        else:
            nbytes = rows * cols // 32 * block
            w.add_tensor_info(name, [rows, cols // 32 * block], np.dtype(np.uint8), nbytes, raw_dtype=qtype)

    start = time.time()
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(a.seed)
    for i, (name, rows, cols) in enumerate(layout):
        if rows is None:
            w.write_tensor_data(np.ones(cols, dtype=np.float32))
        else:
            w.write_tensor_data(quantised(rng, rows, cols, a.type))
        if i % 45 == 0:
            print(f"{i + 1}/{len(layout)} tensors, {time.time() - start:.0f} s", file=sys.stderr)
    w.close()
    print(f"wrote {a.out} in {time.time() - start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
