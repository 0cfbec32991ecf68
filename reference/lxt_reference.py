"""LXT 2.1's AttnLRP and CP-LRP on SmolLM2 (the same GGUF weights, float32, eager attention).

LXT 2.1 cannot patch transformers 5.x (its `lxt.efficient` imports helpers removed from
transformers, and it swaps the attention registry for a plain dict, which 5.x no longer reads),
so this script runs in the separate reference environment `cargo xtask setup` creates for it:
the project's interpreter with `PYTHONPATH` set to `.reference/lxt` (transformers 4.52.4, the
version LXT's README says it was tested with, its tokenizers and huggingface-hub, and lxt 2.1;
torch comes from the project's virtualenv). `cargo xtask parity` and
`cargo xtask bench-reference` set that up.

LXT's model maps import torchvision for its ViT patches at import time; LLMs do not use them,
so a stand-in module without code is registered under that name (after transformers has
looked for the real one), and nothing of LXT itself is changed.

Parity (`--out`): for each prompt and rule, the ids, the argmax next token, its logit and the
relevance of every embedding entry (`inputs_embeds * grad`, LXT's recipe) and per token.
Timing (`--bench-out`): one AttnLRP explanation (embed, forward, backward, relevance) per call
at the given token counts, warm-up then timed calls, as `reference/bench_reference.py` times.
Faithfulness (`--faithfulness-out FILE --faithfulness-prompts P.jsonl [--faithfulness-ids A.jsonl]
[--limit N] [--resume]`): LXT's relevance of the argmax logit per token for each prompt, as the
method `lxt_attn_lrp` (or `lxt_cp_lrp`) in the JSONL format of `reference/faithfulness_anchors.py`,
with its costs, for `cargo xtask faithfulness` (docs/faithfulness.md). With `--faithfulness-ids`
(the Captum anchors' JSONL, whose ids the Rust side has checked against its own), each prompt runs
on the ids recorded there for its text: transformers 4.52's GGUF conversion of Gemma 3's
tokenizer splits words that transformers 5 and ours keep whole.

Usage: python reference/lxt_reference.py --gguf PATH --prompts reference/parity_prompts.json
       --rule attn_lrp --out target/parity/lxt/attn_lrp.json [--bench-out FILE --tokens 8,128]
"""

import argparse
import json
import os
import statistics
import sys
import time
import types
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from transformers.models.llama import modeling_llama  # noqa: E402


def stand_in_torchvision():
    """Registers an empty `torchvision.models.vision_transformer` (LXT's ViT map reads
    `vision_transformer.nn.*` at import); the LLM patches never touch it."""
    tv = types.ModuleType("torchvision")
    models = types.ModuleType("torchvision.models")
    vit = types.ModuleType("torchvision.models.vision_transformer")
    vit.nn = torch.nn
    models.vision_transformer = vit
    tv.models = models
    sys.modules.setdefault("torchvision", tv)
    sys.modules.setdefault("torchvision.models", models)
    sys.modules.setdefault("torchvision.models.vision_transformer", vit)


PROMPTS = ["france", "english", "code"]
TEXT = (
    "Attention weights show where a transformer looks when it predicts the next token, and "
    "gradients show which inputs would change that prediction most. Neither is the whole "
    "story, so careful analyses compare several methods on the same text and check whether "
    "the explanations agree. "
)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", required=True, type=Path)
    parser.add_argument("--prompts", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--bench-out", type=Path)
    parser.add_argument("--faithfulness-out", type=Path)
    parser.add_argument("--faithfulness-prompts", type=Path)
    parser.add_argument("--faithfulness-ids", type=Path)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--rule", choices=["attn_lrp", "cp_lrp"], default="attn_lrp")
    parser.add_argument("--tokens", default="5,60,512")
    parser.add_argument("--min-time", type=float, default=3.0)
    parser.add_argument("--min-calls", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=int(os.environ.get("EXPLAINABILITY_THREADS", "2"))
    )
    return parser.parse_args()


def load(gguf, rule):
    """(tokenizer, model) with LXT's patches for `rule` applied to the file's family in
    transformers: Gemma 3 (`gemma3` / `gemma3_text`) or Llama (SmolLM2)."""
    stand_in_torchvision()
    from lxt.efficient import monkey_patch

    folder, name = str(gguf.parent), gguf.name
    model_type = AutoConfig.from_pretrained(folder, gguf_file=name).model_type
    if model_type.startswith("gemma3"):
        from lxt.efficient.models import gemma3 as lxt_family
        from transformers.models.gemma3 import modeling_gemma3 as modeling
    else:
        from lxt.efficient.models import llama as lxt_family

        modeling = modeling_llama
    monkey_patch(modeling, lxt_family.attnLRP if rule == "attn_lrp" else lxt_family.cp_LRP)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, torch_dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return tokenizer, model


def relevance(model, ids):
    """LXT's recipe: relevance = inputs_embeds * grad of the argmax logit."""
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    logits = model(inputs_embeds=embeds, use_cache=False).logits
    target = int(logits[0, -1].argmax())
    value = logits[0, -1, target]
    value.backward()
    r = (embeds * embeds.grad)[0].detach().double()
    return target, float(value.detach()), r


def faithfulness(args, tokenizer, model, rule):
    """One record per prompt in the anchors' JSONL format (`faithfulness_common`)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from faithfulness_common import forward_seconds, read_texts, timed, write_records

    method = f"lxt_{rule}"
    texts = read_texts(args.faithfulness_prompts, args.limit)
    known_ids = {}
    if args.faithfulness_ids is not None:
        for line in args.faithfulness_ids.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line of an interrupted run
            if "text" in record and "ids" in record:
                known_ids[record["text"]] = record["ids"]

    def make_record(index, text):
        if text in known_ids:
            ids = torch.tensor([known_ids[text]])
        else:
            # Special tokens as faithfulness_anchors.py and ours add them (<bos> on Gemma 3).
            ids = tokenizer(text, return_tensors="pt", add_special_tokens=True).input_ids
        record = {"index": index, "text": text, "ids": ids[0].tolist()}
        record["forward_seconds"], record["forward_cpu_seconds"] = forward_seconds(model, ids)
        (target, _, r), seconds, cpu_seconds = timed(lambda: relevance(model, ids))
        record["target_id"] = target
        record["methods"] = {
            method: {
                "scores": r.sum(-1).tolist(),
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
            }
        }
        return record

    write_records(args.faithfulness_out, texts, [method], args.resume, make_record)


def main():
    args = parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    # LXT's patches are global to the process: one rule per run.
    rule = args.rule
    tokenizer, model = load(args.gguf, rule)
    if args.faithfulness_out:
        faithfulness(args, tokenizer, model, rule)
    if args.out:
        prompts = {p["name"]: p["text"] for p in json.loads(args.prompts.read_text())}
        cases = []
        for name in PROMPTS:
            ids = tokenizer(prompts[name], return_tensors="pt").input_ids
            target, value, r = relevance(model, ids)
            cases.append(
                {
                    "name": name,
                    "ids": ids[0].tolist(),
                    "target": target,
                    "logit": value,
                    "per_token": r.sum(-1).tolist(),
                    "per_dimension": r.flatten().tolist(),
                }
            )
        out = {
            "rule": rule,
            "lxt": __import__("importlib.metadata").metadata.version("lxt"),
            "transformers": transformers.__version__,
            "cases": cases,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out))
        print(f"lxt reference ({rule}): {len(cases)} prompts -> {args.out}")
    if args.bench_out:
        # The first n tokens of the text without special tokens, as our criterion bench takes
        # them (5 tokens: "The capital of France is", like its SHORT prompt).
        short = tokenizer("The capital of France is", add_special_tokens=False).input_ids
        long = tokenizer(TEXT * 20, add_special_tokens=False).input_ids
        results = {}
        for n in [int(t) for t in args.tokens.split(",")]:
            ids = torch.tensor([short[:n] if n <= len(short) else long[:n]])
            for _ in range(2):
                relevance(model, ids)
            times = []
            start = time.perf_counter()
            while time.perf_counter() - start < args.min_time or len(times) < args.min_calls:
                t0 = time.perf_counter()
                relevance(model, ids)
                times.append(time.perf_counter() - t0)
            results[f"gradients/{rule}/{n}"] = {
                "median_ms": statistics.median(times) * 1e3,
                "min_ms": min(times) * 1e3,
                "calls": len(times),
                "tokens": int(ids.shape[1]),
            }
            print(f"lxt {rule} {n} tokens: median {statistics.median(times) * 1e3:.1f} ms")
        args.bench_out.parent.mkdir(parents=True, exist_ok=True)
        out = {
            "threads": args.threads,
            "lxt": __import__("importlib.metadata").metadata.version("lxt"),
            "transformers": transformers.__version__,
            "results": results,
        }
        args.bench_out.write_text(json.dumps(out))


if __name__ == "__main__":
    main()
