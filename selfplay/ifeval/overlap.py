"""How much a prompt file shares its wording with training pools, in word n-grams (selfplay.filtering.word_ngrams).

    python -m selfplay.ifeval.overlap data/ifeval/independent.jsonl \\
        data/ifeval/train.jsonl data/ifeval/train_formats.jsonl data/ifeval/val.jsonl

Per prompt of NEW: the longest word n-gram it shares with any pool prompt. Over NEW: the prompts sharing any word
6-gram, any word 8-gram (the near-duplicate test of selfplay.split), and the phrase overlap: of NEW's word 4-grams
(each prompt's distinct ones, summed), the share that occur in some pool prompt. The same figures for a baseline
file against the same pools (by default data/ifeval/heldout.jsonl, written by the hands that wrote the train pools)
show what sharing our wording looks like. Pool prompts identical to a baseline prompt are left out of the baseline's
comparison: prompts.jsonl, the source the held-out split was cut from, would otherwise match it word for word.
Files are read as prompt pools (ours or IFEval's format); only the prompt texts count.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from selfplay.errors import SelfplayError
from selfplay.filtering import word_ngrams
from selfplay.pool import load_pool
from selfplay.records import Prompt

PHRASE_N = 4  # a 4-gram is a phrase ("in double quotation marks"); shorter ones are common English
NEAR_N = (6, 8)  # 8 = selfplay.split's near-duplicate test; 6 catches a shared clause below it


class PromptOverlap(BaseModel):
    id: str
    longest: int  # words in the longest word n-gram shared with a pool prompt; 0 = not one word shared
    shared: str  # that n-gram, its words joined by spaces ("" when none)


class Overlap(BaseModel):
    file: str
    n_prompts: int
    n_pool: int  # pool prompts compared against
    per_prompt: list[PromptOverlap]  # in file order
    sharing: dict[int, int]  # n (6, 8) -> prompts sharing any word n-gram with a pool prompt
    phrase_overlap: float  # 0..1: of the prompts' word 4-grams (each prompt's distinct ones, summed), share in the pools


def overlap(prompts: Sequence[Prompt], pool: Sequence[str], file: str = "") -> Overlap:
    """The figures of the module doc for `prompts` against the pool texts. Pure."""
    cache: dict[int, frozenset[tuple[str, ...]]] = {}

    def pool_grams(n: int) -> frozenset[tuple[str, ...]]:
        if n not in cache:
            cache[n] = frozenset().union(*(word_ngrams(t, n) for t in pool))
        return cache[n]

    per_prompt = []
    for p in prompts:
        best: tuple[str, ...] = ()
        n = 1
        # Sharing an n-gram implies sharing every shorter one, so grow n until nothing is shared.
        while shared := word_ngrams(p.text, n) & pool_grams(n):
            best = min(shared)  # the alphabetically first, so the figure is reproducible
            if len(best) < n:  # the whole text is shorter than n words and a pool prompt is that same text
                break
            n += 1
        per_prompt.append(PromptOverlap(id=p.id, longest=len(best), shared=" ".join(best)))
    phrases = [word_ngrams(p.text, PHRASE_N) for p in prompts]
    found = sum(len(g & pool_grams(PHRASE_N)) for g in phrases)
    total = sum(len(g) for g in phrases)
    return Overlap(
        file=file,
        n_prompts=len(prompts),
        n_pool=len(pool),
        per_prompt=per_prompt,
        sharing={n: sum(bool(word_ngrams(p.text, n) & pool_grams(n)) for p in prompts) for n in NEAR_N},
        phrase_overlap=found / total if total else 0.0,
    )


def _norm(text: str) -> str:
    return " ".join(text.split())


def table(rows: Sequence[tuple[str, Overlap]]) -> str:
    """A markdown table, one row per (label, figures)."""
    lines = [
        "| file | prompts | pool prompts | longest shared n-gram, words: median / max | sharing a 6-gram "
        "| sharing an 8-gram | 4-gram phrase overlap |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, o in rows:
        longest = [p.longest for p in o.per_prompt]
        share = {n: f"{o.sharing[n]} ({o.sharing[n] / o.n_prompts:.1%})" for n in NEAR_N}
        lines.append(
            f"| {label} | {o.n_prompts} | {o.n_pool} | {statistics.median(longest):g} / {max(longest)} | {share[6]} "
            f"| {share[8]} | {o.phrase_overlap:.1%} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("new", type=Path, metavar="NEW.jsonl", help="the prompts to measure (pool or IFEval format)")
    parser.add_argument("pools", type=Path, nargs="+", metavar="POOL.jsonl", help="the pools to measure against")
    parser.add_argument(
        "--baseline",
        type=Path,
        default=Path("data/ifeval/heldout.jsonl"),  # load_pool finds it from the project root too
        help="a file measured against the same pools for comparison (default: data/ifeval/heldout.jsonl)",
    )
    parser.add_argument("--top", type=int, default=5, help="list this many of NEW's prompts with the longest shared n-grams")
    args = parser.parse_args(argv)
    try:
        new = load_pool(args.new)
        pool = [p.text for path in args.pools for p in load_pool(path)]
        baseline = load_pool(args.baseline)
    except SelfplayError as err:
        print(f"overlap: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    own = {_norm(p.text) for p in baseline}
    rows = [
        (str(args.new), overlap(new, pool, str(args.new))),
        (f"{args.baseline} (baseline)", overlap(baseline, [t for t in pool if _norm(t) not in own], str(args.baseline))),
    ]
    print(f"against {len(args.pools)} pool file(s): {', '.join(map(str, args.pools))}\n")
    print(table(rows))
    top = sorted(rows[0][1].per_prompt, key=lambda p: -p.longest)[: args.top]
    if top:
        print(f"\nlongest shared n-grams of {args.new}:")
        for p in top:
            print(f"  {p.longest:2d} words  {p.id}: {p.shared!r}")


if __name__ == "__main__":
    main()
