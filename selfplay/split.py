"""The held-out split of our instruction-following prompts, made once by a fixed seed and committed.

Training pools never hold a held-out prompt or a near-duplicate of one (word 8-gram overlap); a test
checks every shipped pool against `data/ifeval/heldout.jsonl`. Tune on `val.jsonl`, never on held-out.

    python -m selfplay.split        # rewrites data/ifeval/{train,val,heldout}.jsonl and split.json
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable

from selfplay.config import PROJECT_ROOT
from selfplay.filtering import word_ngrams

SPLIT_SEED = 20261125  # fixed once; changing it would leak held-out prompts into earlier training runs
N_HELDOUT = 120
N_VAL = 32
IFEVAL_DIR = PROJECT_ROOT / "data" / "ifeval"


def near_duplicates(candidates: Iterable[str], reference: Iterable[str], n: int = 8) -> list[tuple[str, str]]:
    """(candidate, reference) text pairs sharing any word n-gram: the same sentence of 8+ words, or the same
    text (case and punctuation aside) when it is shorter than that."""
    index: dict[tuple[str, ...], str] = {}
    for text in reference:
        for gram in word_ngrams(text, n):
            index.setdefault(gram, text)
    hits = []
    for text in candidates:
        shared = next((index[g] for g in word_ngrams(text, n) if g in index), None)
        if shared is not None:
            hits.append((text, shared))
    return hits


def make_split(lines: list[str], seed: int = SPLIT_SEED) -> dict[str, list[str]]:
    """Shuffle once by the fixed seed: the first N_HELDOUT lines are held out, the next N_VAL validate."""
    order = list(range(len(lines)))
    random.Random(seed).shuffle(order)
    heldout, val, train = order[:N_HELDOUT], order[N_HELDOUT : N_HELDOUT + N_VAL], order[N_HELDOUT + N_VAL :]
    return {name: [lines[i] for i in sorted(idx)] for name, idx in (("heldout", heldout), ("val", val), ("train", train))}


def main() -> None:
    lines = [line for line in (IFEVAL_DIR / "prompts.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    parts = make_split(lines)
    for name, part in parts.items():
        (IFEVAL_DIR / f"{name}.jsonl").write_text("\n".join(part) + "\n", encoding="utf-8")
    record = {
        "seed": SPLIT_SEED,
        "source": "prompts.jsonl",
        **{name: sorted(json.loads(line)["key"] for line in part) for name, part in parts.items()},
    }
    (IFEVAL_DIR / "split.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print({name: len(part) for name, part in parts.items()})


if __name__ == "__main__":
    main()
