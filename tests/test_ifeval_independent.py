"""The overlap figures of selfplay.ifeval.overlap on a case computed by hand."""

import json

import pytest

from selfplay.ifeval.overlap import main, overlap
from selfplay.records import Prompt

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
