"""gguf-py's dequantisation of every tensor of a GGUF file: the oracle for our kernels.

For each tensor, `gguf.quants.dequantize(GGUFReader(path).tensors[i].data, tensor_type)` as
float32; writes JSON with, per tensor name, its GGML type (name and id), its shape in torch
order (GGUF dims reversed), the sha256 of the float32 little-endian bytes and the float64 sum;
plus the wall time of the dequantisation calls alone (numpy; hashing excluded) per type and in
total, the best of `--repeat` passes. `crates/explain-models/tests/gguf_parity.rs` compares our
output to the hashes; `cargo xtask bench-dequant` compares the times.

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
