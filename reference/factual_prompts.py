"""Factual prompts from packaged data nobody in this project wrote.

Writes one JSON object per line (sorted keys, UTF-8, "\\n" line ends), deterministically:

- country -> capital from `countryinfo` 1.0.1 (`countryinfo.all_countries()`, `.name()`,
  `.capital()`): "The capital of {country} is" -> " {capital}";
- element -> symbol from `periodictable` 2.1.0 (`periodictable.elements`, numbers 1-118):
  "The chemical symbol of {Element} is" -> " {symbol}";
- US state -> capital from `us` 4.0.0 (`us.states.STATES`, the 50 states):
  "The capital of the state of {state} is" -> " {capital}".

Fields: `category` (country_capital, element_symbol, state_capital), `subject`, `answer` (with
its leading space: the continuation), `prompt`, and `subject_start` / `subject_end`, the
subject's UTF-8 byte range in `prompt` (tokenizer-independent; the Rust loader maps it to token
positions). Entries without an answer, duplicates (first kept, by category then subject) and
subjects or answers with characters outside printable text are dropped. Nothing here ranks or
filters by a model: explain-eval's `FactualPrompts::top1` keeps the prompts a model gets right.

Usage: python reference/factual_prompts.py --out crates/explain-eval/data/factual_prompts.jsonl
`cargo xtask parity` regenerates the file into the target folder and checks it is byte-identical
to the committed one.
"""

import argparse
import json

import countryinfo
import periodictable
import us

TEMPLATES = {
    "country_capital": "The capital of {} is",
    "element_symbol": "The chemical symbol of {} is",
    "state_capital": "The capital of the state of {} is",
}


def clean(text):
    if not isinstance(text, str):
        return None
    text = " ".join(text.split())
    if not text or not text.isprintable():
        return None
    return text


def pairs():
    for country in countryinfo.all_countries():
        yield "country_capital", clean(country.name()), clean(country.capital())
    for element in periodictable.elements:
        if 1 <= element.number <= 118:
            yield "element_symbol", clean(element.name.capitalize()), clean(element.symbol)
    for state in us.states.STATES:
        yield "state_capital", clean(state.name), clean(state.capital)


def records():
    seen = set()
    out = []
    for category, subject, answer in sorted(pairs(), key=lambda p: (p[0], p[1] or "", p[2] or "")):
        if subject is None or answer is None or (category, subject) in seen:
            continue
        seen.add((category, subject))
        head, _, _ = TEMPLATES[category].partition("{}")
        prompt = TEMPLATES[category].format(subject)
        start = len(head.encode("utf-8"))
        end = start + len(subject.encode("utf-8"))
        assert prompt.encode("utf-8")[start:end] == subject.encode("utf-8")
        out.append(
            {
                "category": category,
                "subject": subject,
                "answer": " " + answer,
                "prompt": prompt,
                "subject_start": start,
                "subject_end": end,
            }
        )
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    lines = [json.dumps(r, sort_keys=True, ensure_ascii=False) for r in records()]
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{len(lines)} factual prompts -> {args.out}")


if __name__ == "__main__":
    main()
