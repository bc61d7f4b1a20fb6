"""More training prompts for the formats a small model never follows: the tasks of an IFEval-format pool, each
given new checkable instructions, in our own wording.

    python -m selfplay.ifeval.augment data/ifeval/train.jsonl data/ifeval/train_formats.jsonl

Why: with program revision (pairing.revise) every prompt can teach its format, but our 200 training prompts hold
only 17 lowercase, 10 end-phrase and 6 JSON prompts, and three iterations of 32 prompts drew 5 lowercase revision
pairs in all (docs/method.md, attempt 4): too few examples to learn from. Each task here (a prompt's first
sentence, when that sentence holds no instruction of its own) gets `per_task` prompts, each with one instruction
drawn from FORMATS. The output pool holds the original prompts first, then the new ones, keys from 100001 on.
Tasks come only from the input pool, so a pool built from the train split stays as far from the held-out split
as the train split is (tests/test_split.py checks every configured pool).
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

from selfplay.ifeval.accuracy import IFEvalPrompt, load_ifeval
from selfplay.ifeval.checkers import validate_kwargs

FIRST_KEY = 100001
# Words that mark a sentence as an instruction rather than the task ("... in lowercase", "... under 50 words").
_CUES = re.compile(
    r"\b(lowercase|lower case|capital|upper ?case|words?|sentences?|paragraphs?|bullets?|points?|quot\w*|"
    r"json|comma|title|section|highlight|end (with|your)|start|repeat|language|letters?|mention|"
    r"include|avoid|without|placeholder|p\.s|postscript|format|exactly)\b",
    re.IGNORECASE,
)

# instruction id -> (wording, kwargs) choices, the wording already carrying the kwargs (a phrase, a count).
FORMATS: dict[str, list[tuple[str, dict]]] = {
    "change_case:english_lowercase": [
        ("Write your whole answer in lowercase letters only.", {}),
        ("Use no capital letters anywhere in your reply.", {}),
    ],
    "change_case:english_capital": [("Write your entire reply in capital letters.", {})],
    "startend:quotation": [("Put your whole reply inside double quotation marks.", {})],
    "startend:end_checker": [
        (f"Finish your reply with the exact words '{phrase}'", {"end_phrase": phrase})
        for phrase in ("That is all.", "Hope this helps!", "Thanks for reading.", "Any questions?")
    ],
    "punctuation:no_comma": [("Do not use a single comma in your reply.", {})],
    "detectable_format:title": [("Start with a title in double angular brackets, like <<a title>>.", {})],
    "detectable_format:json_format": [("Give the whole reply as valid JSON.", {})],
    "detectable_format:number_bullet_lists": [
        (f"Reply with exactly {n} markdown bullet points.", {"num_bullets": n}) for n in (2, 3, 4)
    ],
    "detectable_format:number_highlighted_sections": [
        (f"Highlight at least {n} key phrase{'s' * (n > 1)} with markdown asterisks, like *this*.", {"num_highlights": n})
        for n in (1, 2)
    ],
    # Attempt 6: word and sentence limits and words in capitals, common in the train split and missing here before.
    "length_constraints:number_words": [
        (f"Keep the whole reply under {n} words.", {"num_words": n, "relation": "less than"}) for n in (30, 40, 50)
    ],
    "length_constraints:number_sentences": [
        (f"Say it in fewer than {n} sentences.", {"num_sentences": n, "relation": "less than"}) for n in (3, 4)
    ],
    "change_case:capital_word_frequency": [
        (f"Write at least {n} words in ALL CAPITALS for emphasis.", {"capital_frequency": n, "capital_relation": "at least"})
        for n in (2, 3)
    ],
}


def task_of(prompt: str) -> str | None:
    """The prompt's first sentence, if another sentence follows it and it holds no instruction cue; else None."""
    match = re.match(r"(.+?[.?!])\s+\S", prompt.strip())
    if not match or _CUES.search(match.group(1)):
        return None
    return match.group(1)


def augment(prompts: list[IFEvalPrompt], per_task: int, seed: int) -> list[dict]:
    """`per_task` new IFEval-format records per usable task, each with one instruction of a different kind."""
    rng = random.Random(seed)
    records, key = [], FIRST_KEY
    for p in prompts:
        task = task_of(p.prompt)
        if task is None:
            continue
        for instruction_id in rng.sample(sorted(FORMATS), per_task):
            wording, kwargs = rng.choice(FORMATS[instruction_id])
            validate_kwargs(instruction_id, kwargs)
            records.append(
                {"key": key, "prompt": f"{task} {wording}", "instruction_id_list": [instruction_id], "kwargs": [kwargs]}
            )
            key += 1
    return records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pool", type=Path, help="IFEval-format JSONL whose tasks are reused (the train split)")
    parser.add_argument("out", type=Path, help="output pool: the input prompts, then the new ones")
    parser.add_argument("--per-task", type=int, default=3, help="new prompts per usable task (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    prompts = load_ifeval(args.pool)
    if any(isinstance(p.key, int) and p.key >= FIRST_KEY for p in prompts):
        parser.error(f"{args.pool} already holds keys from {FIRST_KEY}: augment the original pool, not an augmented one")
    new = augment(prompts, args.per_task, args.seed)
    lines = args.pool.read_text(encoding="utf-8").splitlines() + [json.dumps(r) for r in new]
    args.out.write_text("\n".join(line for line in lines if line.strip()) + "\n", encoding="utf-8")
    print(f"{args.out}: {len(prompts)} prompts from {args.pool}, then {len(new)} new ones from {len(new) // args.per_task} tasks")


if __name__ == "__main__":
    main()
