"""Long contexts whose answer sits in one sentence, for the faithfulness benchmark's question
"which sentence gets the credit?" (`cargo xtask faithfulness`, docs/faithfulness.md).

Each context is 60 true distractor facts from the packaged data of the factual prompt set
(element symbols from `periodictable` 2.1.0, US state capitals from `us` 4.0.0: "The chemical
symbol of Gold is Au.", "The capital of the state of Ohio is Columbus.") with one *counterfactual*
country capital from `countryinfo` 1.0.1 placed among them ("The capital of Peru is Oslo.": a
capital of another country), then the question ("The capital of Peru is"). A model that answers
" Oslo" can only have read it from that one sentence: it is the gold sentence, and an attribution
method should credit it. About 600 SmolLM2 tokens per context. (An earlier design with 64
counterfactual capitals and no other distractors was answered from the context in 1 of 40
contexts by SmolLM2-135M: too hard for it to be a test of attribution.) The Rust side keeps the
contexts the model answers from the context (argmax = the answer's first token) and reports how
many (SmolLM2-135M: 11 of the first 40).

Writes one JSON object per line (sorted keys): `id`, `prompt` (the whole text), `subject`,
`answer` (with its leading space), `gold` (index of the supporting sentence among the context's
sentences; the question follows the last), `sentences` (number of context sentences, 61). Deterministic (seeded).

Usage: python reference/long_contexts.py --out crates/explain-eval/data/long_contexts.jsonl
"""

import argparse
import json
import random

import countryinfo
import periodictable
import us

CONTEXTS = 100
DISTRACTORS = 60
SEED = 20261130


def clean(text):
    if not isinstance(text, str):
        return None
    text = " ".join(text.split())
    if not text or not text.isprintable() or "." in text:
        return None
    return text


def capitals():
    seen = {}
    for country in countryinfo.all_countries():
        name, capital = clean(country.name()), clean(country.capital())
        if name and capital and name not in seen:
            seen[name] = capital
    return sorted(seen.items())


def distractors():
    out = []
    for element in periodictable.elements:
        name, symbol = clean(element.name.capitalize()), clean(element.symbol)
        if 1 <= element.number <= 118 and name and symbol:
            out.append(f"The chemical symbol of {name} is {symbol}.")
    for state in us.states.STATES:
        name, capital = clean(state.name), clean(state.capital)
        if name and capital:
            out.append(f"The capital of the state of {name} is {capital}.")
    return sorted(set(out))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    pairs = capitals()
    facts = distractors()
    rng = random.Random(SEED)
    lines = []
    for index in range(CONTEXTS):
        (subject, own), (_, answer) = rng.sample(pairs, 2)
        assert own != answer
        sentences = rng.sample(facts, DISTRACTORS)
        gold = rng.randrange(DISTRACTORS + 1)
        sentences.insert(gold, f"The capital of {subject} is {answer}.")
        prompt = " ".join(sentences) + f" The capital of {subject} is"
        lines.append(
            json.dumps(
                {
                    "answer": " " + answer,
                    "gold": gold,
                    "id": f"long-{index:02d}",
                    "prompt": prompt,
                    "sentences": len(sentences),
                    "subject": subject,
                },
                sort_keys=True,
                ensure_ascii=False,
            )
        )
    with open(args.out, "w", encoding="utf-8", newline="\n") as out:
        out.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
