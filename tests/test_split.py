"""The held-out split is fixed, disjoint, and no training pool holds a held-out prompt or a near-duplicate."""

import json

import yaml

from selfplay.config import PROJECT_ROOT
from selfplay.split import IFEVAL_DIR, make_split, near_duplicates

HELDOUT = [json.loads(line)["prompt"] for line in (IFEVAL_DIR / "heldout.jsonl").read_text().splitlines()]


def _prompts(path) -> list[str]:
    return [json.loads(line)["prompt"] for line in path.read_text().splitlines() if line.strip()]


def test_split_is_reproducible_and_disjoint():
    lines = [line for line in (IFEVAL_DIR / "prompts.jsonl").read_text().splitlines() if line.strip()]
    parts = make_split(lines)
    for name, part in parts.items():
        assert (IFEVAL_DIR / f"{name}.jsonl").read_text().splitlines() == part, name
    keys = {name: {json.loads(line)["key"] for line in part} for name, part in parts.items()}
    assert len(keys["heldout"]) >= 100
    assert not keys["heldout"] & keys["train"] and not keys["heldout"] & keys["val"] and not keys["val"] & keys["train"]
    recorded = json.loads((IFEVAL_DIR / "split.json").read_text())
    assert set(recorded["heldout"]) == keys["heldout"]


def test_near_duplicates_literal():
    ref = ["Write a short poem about the sea in exactly four lines please."]
    assert near_duplicates(["write a short poem about the sea in exactly four lines, thanks"], ref)
    assert not near_duplicates(["Write a short poem about the mountains in exactly four lines."], ref)
    # shorter than 8 words: only the same text (case and punctuation aside) is a duplicate
    assert near_duplicates(["Name a colour!"], ["name a colour"])
    assert not near_duplicates(["Name a colour."], ["Name a colour, then a shape."])


def test_no_training_pool_holds_a_heldout_prompt():
    pools = [IFEVAL_DIR / "train.jsonl", IFEVAL_DIR / "val.jsonl", PROJECT_ROOT / "data" / "instructions.jsonl"]
    for config in (PROJECT_ROOT / "configs").glob("*.yaml"):
        pool = (yaml.safe_load(config.read_text()) or {}).get("prompts", {}).get("pool")
        if pool:
            assert "heldout" not in pool, f"{config.name} trains on the held-out split"
            pools.append(PROJECT_ROOT / pool)
    for pool in set(pools):
        assert not near_duplicates(_prompts(pool), HELDOUT), pool
    seed = [json.loads(line)["prompt"] for line in (PROJECT_ROOT / "data" / "seed_example.jsonl").read_text().splitlines()]
    assert not near_duplicates(seed, HELDOUT)
