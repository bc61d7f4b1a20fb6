"""Constitutions: the shipped ones load; bad files are one-line errors; principles are drawn reproducibly."""

from collections import Counter

import pytest

from selfplay.config import JudgeConfig
from selfplay.constitutions import ConstitutionError, constitution_path, load_constitution, parse_constitution
from selfplay.judges import make_judge, preflight_judge
from selfplay.records import derive_seed, file_hash

GOOD = """name: tiny
version: 2
description: two principles
principles:
  - id: short
    critique: Say what is too long.
    revision: Make it shorter.
    comparison: Which is shorter?
  - id: kind
    critique: Say what is unkind.
    revision: Make it kinder.
    comparison: Which is kinder?
"""


@pytest.mark.parametrize("name, at_least", [("helpful-harmless", 12), ("concise", 3), ("follow-instructions", 3)])
def test_shipped_constitutions(name, at_least):
    c = load_constitution(name)
    assert c.name == name and c.version >= 1 and len(c.principles) >= at_least
    assert c.hash == file_hash(constitution_path(name))
    assert all(p.critique.strip() and p.revision.strip() and p.comparison.strip().endswith("?") for p in c.principles)


def test_load_by_path_and_hash(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(GOOD)
    c = load_constitution(str(path))
    assert (c.ref, [p.id for p in c.principles], c.hash) == ("tiny@2", ["short", "kind"], file_hash(path))
    path.write_text(GOOD.replace("Make it kinder.", "Make it kinder, please."))
    assert load_constitution(str(path)).hash != c.hash  # any edit changes the recorded hash


@pytest.mark.parametrize("text, message", [
    ("name: x\nversion: 1\nprinciples: []\n", "no principles; a constitution needs at least one"),
    ("name: x\nversion: 1\n", "no principles"),
    (GOOD.replace("critique: Say what is too long.", "critiq: Say what is too long."), r"principles\.0\.critiq: unknown key"),
    (GOOD.replace("description:", "summary:"), "summary: unknown key"),
    (GOOD.replace("id: kind", "id: short"), "principle id 'short' appears twice"),
    (GOOD.replace("Which is kinder?", "''"), r"principles\.1\.comparison: String should have at least 1 character"),
    (GOOD.replace("version: 2", "version: 0"), "version: Input should be greater than or equal to 1"),
    ("- just\n- a list\n", "expected a mapping"),
    ("name: [unclosed\n", "not valid YAML"),
])
def test_bad_constitutions_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConstitutionError, match=message) as err:
        load_constitution(str(path))
    assert "\n" not in str(err.value) and str(err.value).startswith(str(path))


def test_missing_constitution_and_preflight(tmp_path):
    with pytest.raises(ConstitutionError, match="no such constitution"):
        load_constitution("no-such-one")
    path = tmp_path / "empty.yaml"
    path.write_text("name: e\nversion: 1\nprinciples: []\n")
    with pytest.raises(ConstitutionError, match="no principles"):  # before any engine starts
        preflight_judge(JudgeConfig(kind="constitution-revision", constitution=str(path)))
    with pytest.raises(ConstitutionError, match="no principles"):
        make_judge(JudgeConfig(kind="constitution-pairwise", constitution=str(path)), None)


def test_sampling_is_seeded_and_covers_the_principles():
    c = parse_constitution(GOOD, "tiny.yaml")
    draws = [c.sample(derive_seed(0, f"p{i}/g0")).id for i in range(200)]
    assert draws == [c.sample(derive_seed(0, f"p{i}/g0")).id for i in range(200)]
    counts = Counter(draws)
    assert set(counts) == {"short", "kind"} and min(counts.values()) > 70  # roughly uniform
