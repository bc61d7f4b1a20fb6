import pytest

from selfplay.config import PairingConfig
from selfplay.pairing import make_pairs
from selfplay.records import Judgement

from conftest import make_generation, make_prompt


def judgement(gen_id: str, score: float | None) -> Judgement:
    return Judgement(id=f"{gen_id}/j", prompt_id=gen_id.split("/")[0], generation_ids=[gen_id], judge="pointwise",
                     method="text", raw=["..."], sample_scores=[score], score=score,
                     status="ok" if score is not None else "unparseable")


# prompt id -> scores of its responses g0, g1, ...; expected (chosen, rejected) or None (skipped)
TABLE = [
    ("a", [3.0, 5.0, 1.0, 4.0], ("a/g1", "a/g2")),
    ("b", [2.0, 2.0, 2.0], None),  # all tied
    ("c", [4.0, None, None], None),  # one scored response only
    ("d", [2.5, 2.55], None),  # gap 0.05 below the 0.1 margin
    ("e", [None, 1.0, 2.0], ("e/g2", "e/g1")),  # unparseable responses are not candidates
    ("f", [4.0, 4.0, 1.0], ("f/g0", "f/g2")),  # equal best: the lower id wins, every time
]


def test_best_vs_worst_table():
    prompts = [make_prompt(pid) for pid, _, _ in TABLE]
    gens, judgements = [], []
    for pid, scores, _ in TABLE:
        for j, score in enumerate(scores):
            gens.append(make_generation(pid, j, f"{pid} response {j}"))
            judgements.append(judgement(f"{pid}/g{j}", score))
    pairs, stats = make_pairs(PairingConfig(min_margin=0.1), prompts, gens, judgements)
    got = {p.prompt_id: (p.chosen_id, p.rejected_id) for p in pairs}
    assert got == {pid: want for pid, _, want in TABLE if want}
    assert (stats.pairs, stats.skipped_tie, stats.skipped_few_scored) == (3, 2, 1)
    assert stats.mean_margin == pytest.approx((4.0 + 1.0 + 3.0) / 3)
    a = next(p for p in pairs if p.prompt_id == "a")
    assert (a.chosen, a.rejected, a.margin) == ("a response 1", "a response 2", 4.0)


def test_pairing_is_pure():
    prompts = [make_prompt("a")]
    gens = [make_generation("a", j, str(j)) for j in range(3)]
    js = [judgement(f"a/g{j}", s) for j, s in enumerate([1.0, 3.0, 2.0])]
    assert make_pairs(PairingConfig(), prompts, gens, js) == make_pairs(PairingConfig(), prompts, gens, list(reversed(js)))


def test_length_control_picks_the_widest_pair_within_the_gap():
    prompts = [make_prompt("a"), make_prompt("b")]
    # a: best (5) is 40 tokens long, worst (1) 10: too far apart; (4, 30 tokens) vs (1, 10 tokens) is 20 apart.
    # b: every pair within 20 tokens has a gap under the margin.
    lengths = {"a": [40, 30, 10, 12], "b": [50, 10, 12]}
    scores = {"a": [5.0, 4.0, 1.0, 3.0], "b": [5.0, 1.0, 1.05]}
    gens = [make_generation(pid, j, f"{pid}{j}", n_tokens=n)
            for pid, ns in lengths.items() for j, n in enumerate(ns)]
    js = [judgement(f"{pid}/g{j}", s) for pid, ss in scores.items() for j, s in enumerate(ss)]
    pairs, stats = make_pairs(PairingConfig(min_margin=0.1, max_length_gap=20), prompts, gens, js)
    assert [(p.chosen_id, p.rejected_id, p.margin) for p in pairs] == [("a/g1", "a/g2", 3.0)]
    assert (stats.pairs, stats.skipped_tie) == (1, 1)
    unbounded, _ = make_pairs(PairingConfig(min_margin=0.1), prompts, gens, js)
    assert [(p.chosen_id, p.rejected_id) for p in unbounded] == [("a/g0", "a/g2"), ("b/g0", "b/g1")]
