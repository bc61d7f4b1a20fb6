"""New format instructions on the train split's tasks (selfplay.ifeval.augment), and the shipped pool built by it."""

import json

import pytest

from selfplay.config import PROJECT_ROOT
from selfplay.ifeval import check, load_ifeval
from selfplay.ifeval.augment import FIRST_KEY, FORMATS, augment, main, task_of
from selfplay.ifeval.revise import revise

IFEVAL_DIR = PROJECT_ROOT / "data" / "ifeval"


@pytest.mark.parametrize("prompt, want", [
    ("Explain how tides work. Keep it under 50 words.", "Explain how tides work."),
    ("What is a comet? Answer in lowercase.", "What is a comet?"),
    ("Describe a storm in lowercase letters. End with 'Calm.'", None),  # the first sentence is an instruction too
    ("Explain how tides work.", None),  # nothing follows: the instruction is inside the only sentence
])
def test_task_of(prompt, want):
    assert task_of(prompt) == want


def test_augment_gives_each_task_different_checkable_instructions(tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text(json.dumps({"key": 7, "prompt": "Explain how tides work. Keep it under 50 words.",
                                "instruction_id_list": ["length_constraints:number_words"],
                                "kwargs": [{"num_words": 50, "relation": "less than"}]}) + "\n")
    [p] = load_ifeval(pool)
    records = augment([p], per_task=3, seed=1)
    assert [r["key"] for r in records] == [FIRST_KEY, FIRST_KEY + 1, FIRST_KEY + 2]
    assert len({r["instruction_id_list"][0] for r in records}) == 3
    for r in records:
        assert r["prompt"].startswith("Explain how tides work. ") and r["instruction_id_list"][0] in FORMATS
    assert augment([p], per_task=3, seed=1) == records


@pytest.mark.parametrize("iid, kwargs", [(iid, kw) for iid, choices in FORMATS.items() for _, kw in choices])
def test_every_new_instruction_is_one_the_revision_rules_can_fix(iid, kwargs):
    """So that each new prompt can teach its format through a revision pair."""
    response = ("Tides Rise, And Fall. The Moon Pulls. The Water Follows. It Happens Twice. Sailors Plan For It. "
                "The Sun Pulls Too, But Less. Spring Tides Come When Both Pull Together, Neap Tides When They Pull "
                "Apart. Harbours Post Tables Of The Times. Fishermen Read Them Every Morning Before Going Out.")
    assert check(iid, kwargs, response) is False and revise([iid], [kwargs], response) is not None


def test_the_shipped_pool_is_the_train_split_then_its_tasks_with_new_instructions(tmp_path, capsys):
    rebuilt = tmp_path / "train_formats.jsonl"
    main([str(IFEVAL_DIR / "train.jsonl"), str(rebuilt)])
    assert rebuilt.read_text() == (IFEVAL_DIR / "train_formats.jsonl").read_text()  # reproducible from the split
    train = (IFEVAL_DIR / "train.jsonl").read_text().splitlines()
    lines = rebuilt.read_text().splitlines()
    assert lines[: len(train)] == train and len(lines) > len(train)
    for p in load_ifeval(rebuilt)[len(train):]:
        assert all(check(i, k, "x") is not None for i, k in zip(p.instruction_id_list, p.kwargs))
    with pytest.raises(SystemExit):
        main([str(rebuilt), str(tmp_path / "again.jsonl")])  # an augmented pool is not augmented twice
    assert "already holds keys" in capsys.readouterr().err
