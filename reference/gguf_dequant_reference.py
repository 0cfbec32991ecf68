"""gguf-py's dequantisation of every tensor of a GGUF file: the oracle for our kernels.

For each tensor, `gguf.quants.dequantize(GGUFReader(path).tensors[i].data, tensor_type)` as
float32; writes JSON with, per tensor name, its GGML type (name and id), its shape in torch
order (GGUF dims reversed), the sha256 of the float32 little-endian bytes and the float64 sum;
plus the wall time of the dequantisation calls alone (numpy; hashing excluded) per type and in
total, the best of `--repeat` passes. `crates/explain-models/tests/gguf_parity.rs` compares our
output to the hashes; `cargo xtask bench-dequant` compares the times.

The file holds only some types, so the JSON also carries `random_blocks`: for each of Q2_K,
Q3_K, Q4_K, Q5_K, Q6_K, Q5_0, Q5_1 and IQ4_NL, 64 blocks of seeded random bytes (hex) whose f16
scale fields are, every other block, one of ±0, subnormals, the largest finite value, ±inf and
NaNs, with the sha256 of the float32 output (NaNs canonicalised to 0x7FC00000, as their payloads
are no part of the format).

Usage: python reference/gguf_dequant_reference.py --gguf PATH/TO/model.gguf --out out.json
       [--repeat N] [--no-hash]
"""

import argparse
import hashlib
import json
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def gguf_version():
    from importlib.metadata import version

    return version("gguf")


# Type name -> byte offsets of its f16 fields (d, then dmin or m).
F16_FIELDS = {
    "Q2_K": (80, 82),
    "Q3_K": (108,),
    "Q4_K": (0, 2),
    "Q5_K": (0, 2),
    "Q6_K": (208,),
    "Q5_0": (0,),
    "Q5_1": (0, 2),
    "IQ4_NL": (0,),
}
SPECIAL_F16 = (0x0000, 0x8000, 0x0001, 0x03FF, 0x8200, 0x7BFF, 0x7C00, 0xFC00, 0x7E00, 0xFC01)
RANDOM_BLOCKS = 64


def canonical_sha256(values):
    """sha256 of float32 little-endian values with every NaN written as 0x7FC00000."""
    flat = np.ascontiguousarray(values, dtype="<f4").reshape(-1).copy()
    bits = flat.view("<u4")
    bits[np.isnan(flat)] = 0x7FC00000
    return hashlib.sha256(bits.tobytes()).hexdigest()


def random_blocks():
    """Seeded random blocks of every type without a tensor in the Gemma file, and their hashes."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    rng = np.random.default_rng(20261129)
    out = {}
    for name, fields in F16_FIELDS.items():
        qtype = GGMLQuantizationType[name]
        _, type_size = GGML_QUANT_SIZES[qtype]
        blocks = rng.integers(0, 256, size=(RANDOM_BLOCKS, type_size), dtype=np.uint8)
        for b in range(0, RANDOM_BLOCKS, 2):
            for k, at in enumerate(fields):
                special = SPECIAL_F16[(b // 2 + 3 * k) % len(SPECIAL_F16)]
                blocks[b, at : at + 2] = np.frombuffer(np.uint16(special).tobytes(), np.uint8)
        with np.errstate(all="ignore"):
            values = dequantize(blocks.reshape(1, -1), qtype)
        out[name] = {
            "ggml_type": int(qtype),
            "hex": blocks.tobytes().hex(),
            "n_elements": int(values.size),
            "sha256": canonical_sha256(values),
            "nan": int(np.isnan(values).sum()),
        }
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", type=Path, required=True, help="the GGUF file")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--repeat", type=int, default=1, help="timing passes (best is kept)")
    parser.add_argument("--no-hash", action="store_true", help="timing only: skip the hashes")
    args = parser.parse_args()

    reader = GGUFReader(args.gguf)
    per_type = defaultdict(lambda: {"seconds": float("inf"), "elements": 0, "tensors": 0})
    tensors = {}
    best_total = float("inf")
    for rep in range(max(1, args.repeat)):
        seconds = defaultdict(float)
        for t in reader.tensors:
            start = time.perf_counter()
            values = dequantize(t.data, t.tensor_type)
            seconds[t.tensor_type.name] += time.perf_counter() - start
            if rep == 0:
                entry = per_type[t.tensor_type.name]
                entry["elements"] += int(t.n_elements)
                entry["tensors"] += 1
                record = {
                    "type": t.tensor_type.name,
                    "ggml_type": int(t.tensor_type),
                    "shape": [int(d) for d in reversed(t.shape.tolist())],
                    "n_elements": int(t.n_elements),
                }
                if not args.no_hash:
                    flat = np.ascontiguousarray(values, dtype="<f4").reshape(-1)
                    if flat.size != t.n_elements:
                        sys.exit(f"{t.name}: {flat.size} values, expected {t.n_elements}")
                    record["sha256"] = hashlib.sha256(flat.tobytes()).hexdigest()
                    record["sum"] = float(flat.sum(dtype=np.float64))
                tensors[t.name] = record
        for name, s in seconds.items():
            per_type[name]["seconds"] = min(per_type[name]["seconds"], s)
        best_total = min(best_total, sum(seconds.values()))

    result = {
        "file": str(args.gguf),
        "gguf": gguf_version(),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "tensors": tensors,
        "random_blocks": {} if args.no_hash else random_blocks(),
        "timing": {
            "repeat": max(1, args.repeat),
            "total_seconds": best_total,
            "per_type": dict(per_type),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    for name, entry in sorted(per_type.items()):
        print(
            f"{name:7} {entry['tensors']:4} tensors {entry['elements']:>11} values "
            f"{entry['seconds']:8.3f} s",
            file=sys.stderr,
        )
    print(f"total {best_total:.3f} s for {len(tensors)} tensors", file=sys.stderr)


if __name__ == "__main__":
    main()
