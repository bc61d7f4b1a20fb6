"""The independent held-out set (data/ifeval/independent.jsonl): loadable, checkable, and phrased apart from every
training pool; and the overlap figures that show it (selfplay.ifeval.overlap) on a case computed by hand."""

import json
from collections import Counter

import pytest
import yaml

from selfplay.config import PROJECT_ROOT
from selfplay.ifeval import INSTRUCTIONS, language_check_available, load_ifeval
from selfplay.ifeval.overlap import main, overlap
from selfplay.pool import load_pool
from selfplay.program_judges import ifeval
from selfplay.records import Prompt
from selfplay.split import IFEVAL_DIR, near_duplicates

INDEPENDENT = IFEVAL_DIR / "independent.jsonl"
TRAIN_POOLS = [IFEVAL_DIR / name for name in ("train.jsonl", "train_formats.jsonl", "val.jsonl")]
# Measured by `python -m selfplay.ifeval.overlap` (data/ifeval/README.md): 2.4% of the independent set's word 4-grams
# occur in the train pools, 9.8% of the held-out split's. The bound leaves room for a few edits, not for our wording.
MAX_PHRASE_OVERLAP = 0.04


def _texts(path) -> list[str]:
    return [p.text for p in load_pool(path)]


# --------------------------------------------------------------------------------------- the shipped file


def test_independent_set_loads_and_every_prompt_is_checkable():
    items = load_ifeval(INDEPENDENT)
    keys = [p.key for p in items]
    assert len(items) == 160 and len(set(keys)) == len(keys)
    assert all(isinstance(k, int) and k >= 200001 for k in keys)  # clear of prompts.jsonl (1..352) and augment (100001..)
    # Every instruction id of our checkers, most prompts one instruction, about a fifth two (as in heldout.jsonl).
    assert {i for p in items for i in p.instruction_id_list} == set(INSTRUCTIONS)
    assert Counter(len(p.instruction_id_list) for p in items) == {1: 133, 2: 27}
    for p in load_pool(INDEPENDENT):
        only_language = p.meta["instruction_id_list"] == ["language:response_language"]
        if only_language and not language_check_available():
            continue  # without langdetect a language check is None (cannot check), never a score
        assert ifeval(p, "some text") is not None, p.id


def test_independent_set_shares_no_sentence_with_any_pool_or_split():
    independent = _texts(INDEPENDENT)
    files = [
        *TRAIN_POOLS,
        IFEVAL_DIR / "heldout.jsonl",
        IFEVAL_DIR / "prompts.jsonl",
        PROJECT_ROOT / "data" / "instructions.jsonl",
    ]
    for config in (PROJECT_ROOT / "configs").glob("*.yaml"):
        pool = (yaml.safe_load(config.read_text()) or {}).get("prompts", {}).get("pool")
        if pool:
            assert "independent" not in pool, f"{config.name} trains on the independent set"
            files.append(PROJECT_ROOT / pool)
    for path in set(files):
        assert near_duplicates(independent, _texts(path)) == [], path  # no shared word 8-gram


def test_independent_phrasing_is_far_from_the_train_pools_and_further_than_heldout():
    pool = [t for path in TRAIN_POOLS for t in _texts(path)]
    independent = overlap(load_pool(INDEPENDENT), pool)
    heldout = overlap(load_pool(IFEVAL_DIR / "heldout.jsonl"), pool)
    assert independent.sharing[8] == 0
    assert independent.phrase_overlap < MAX_PHRASE_OVERLAP
    assert independent.phrase_overlap < heldout.phrase_overlap / 2  # our own split shares our wording; this set does not
    assert max(p.longest for p in independent.per_prompt) < max(p.longest for p in heldout.per_prompt)


# ------------------------------------------------------------------------------------ overlap, by hand

NEW = [
    Prompt(id="a", text="Write a poem about the sea today."),
    Prompt(id="b", text="Hello there."),
    Prompt(id="c", text="Completely novel words here."),
    Prompt(id="d", text="About the sea now, hello there!"),
]
POOL = ["Please write a poem about the sea now.", "hello there"]


def test_overlap_figures_computed_by_hand():
    o = overlap(NEW, POOL, "new.jsonl")
    # a: "write a poem about the sea" (6 words) is inside pool prompt 1. b: the whole of pool prompt 2.
    # c: not one word in common. d: "about the sea now" ends pool prompt 1 and "hello there" is pool prompt 2, but no
    # single pool prompt holds "now hello": n-grams never run across two prompts.
    assert [(p.id, p.longest, p.shared) for p in o.per_prompt] == [
        ("a", 6, "write a poem about the sea"),
        ("b", 2, "hello there"),
        ("c", 0, ""),
        ("d", 4, "about the sea now"),
    ]
    # 6-grams: a shares one; b, shorter than 6 words, is one gram of its words, the same as pool prompt 2's (an
    # identical short text is a near-duplicate, as in selfplay.split). 8-grams: only b; a (7 words) is not pool 1 (8).
    assert o.sharing == {6: 2, 8: 1}
    # 4-grams: a 3 of its 4 (not "about the sea today"), b 1 of 1, c 0 of 1 (its 4 words), d 1 of 3.
    assert o.phrase_overlap == pytest.approx((3 + 1 + 0 + 1) / (4 + 1 + 1 + 3))
    assert (o.n_prompts, o.n_pool, o.file) == (4, 2, "new.jsonl")


def _write(path, texts):
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": t}) + "\n" for i, t in enumerate(texts)))
    return path


def test_overlap_command_prints_the_table_with_the_baseline(tmp_path, capsys):
    new = _write(tmp_path / "new.jsonl", [p.text for p in NEW])
    pool = _write(tmp_path / "pool.jsonl", POOL)
    # Baseline: pool prompt 2 itself; its identical pool prompt is left out of its comparison, so it shares nothing.
    baseline = _write(tmp_path / "base.jsonl", ["hello there"])
    main([str(new), str(pool), "--baseline", str(baseline), "--top", "1"])
    out = capsys.readouterr().out
    assert f"| {new} | 4 | 2 | 3 / 6 | 2 (50.0%) | 1 (25.0%) | 55.6% |" in out
    assert f"| {baseline} (baseline) | 1 | 1 | 0 / 0 | 0 (0.0%) | 0 (0.0%) | 0.0% |" in out
    assert " 6 words  p0: 'write a poem about the sea'" in out and "p3:" not in out


@pytest.mark.parametrize(
    "content, want",
    [
        (None, "no such prompt pool"),
        ('{"id": "x", "prompt": "fine"}\n{"id": "y", "prompt": \n', "pool.jsonl:2: malformed JSON"),
    ],
)
def test_overlap_command_bad_input_is_one_line(tmp_path, capsys, content, want):
    new = _write(tmp_path / "new.jsonl", ["Write a poem."])
    pool = tmp_path / "pool.jsonl"
    if content is not None:
        pool.write_text(content)
    with pytest.raises(SystemExit) as exit_:
        main([str(new), str(pool)])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and want in err and err.count("\n") == 1 and err.startswith("overlap: ")
