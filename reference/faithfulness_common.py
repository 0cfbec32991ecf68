"""What the anchors' scripts of the faithfulness benchmark share (`faithfulness_anchors.py` for
Captum, `lxt_reference.py --faithfulness-out` for LXT): the prompt selection the Rust side also
makes, the cost of one forward, and the JSONL of one record per prompt that a rerun resumes.
"""

import json
import statistics
import sys
import time

import torch


def read_texts(path, limit):
    """The "text" (or "prompt") of every line of a JSONL file; with `limit`, that many evenly
    spaced ones (every category of a sorted file), as the Rust side picks them."""
    texts = []
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            texts.append(record["text"] if "text" in record else record["prompt"])
    if limit is not None and limit < len(texts):
        texts = [texts[i * len(texts) // limit] for i in range(limit)]
    return texts


def forward_seconds(model, ids):
    """Median wall time and median process CPU time of one no-grad forward of `ids` over 5 runs
    (after one warm-up)."""
    with torch.no_grad():
        model(input_ids=ids)
        wall, cpu = [], []
        for _ in range(5):
            start, start_cpu = time.perf_counter(), time.process_time()
            model(input_ids=ids)
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def timed(work):
    """(result, wall seconds, process CPU seconds) of `work()`."""
    start, start_cpu = time.perf_counter(), time.process_time()
    result = work()
    return result, time.perf_counter() - start, time.process_time() - start_cpu


def write_records(out, texts, methods, resume, make_record):
    """Writes one JSON line per prompt to `out`: `make_record(index, text)` returns the record
    (with "index", "text", "forward_cpu_seconds" and "methods"). With `resume`, the complete
    records already in `out` for the same prompts (every method of `methods`, CPU times
    included) are kept and only the others are computed; a torn last line (a killed run) is
    dropped and redone. Nothing else an earlier run computed is dropped: a complete record of
    another run (another prompt set, limit or method list) stops this one with its line number,
    the file unchanged."""
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {}
    if resume and out.exists():
        lines = out.read_text().splitlines()
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines):
                    continue  # a torn last line: redone
                sys.exit(f"{out}: line {number} is not a complete JSON line; nothing was changed")
            index = record.get("index")
            if (
                isinstance(index, int)
                and 0 <= index < len(texts)
                and record.get("text") == texts[index]
                and "forward_cpu_seconds" in record
                and all("cpu_seconds" in record.get("methods", {}).get(m, {}) for m in methods)
            ):
                done[index] = line
            else:
                sys.exit(
                    f"{out}: line {number} (index {index}) belongs to another run (a different "
                    "prompt set, limit or method list); nothing was changed: move the file away "
                    "or choose another output"
                )
    # Rewrite the kept records atomically, then append.
    partial = out.with_suffix(out.suffix + ".partial")
    partial.write_text("".join(done[index] + "\n" for index in sorted(done)))
    partial.replace(out)
    with out.open("a") as sink:
        if done:
            print(f"resuming: {len(done)} of {len(texts)} records kept", file=sys.stderr)
        for index, text in enumerate(texts):
            if index in done:
                continue
            sink.write(json.dumps(make_record(index, text)) + "\n")
            sink.flush()
            print(f"{index + 1}/{len(texts)}", file=sys.stderr, flush=True)
