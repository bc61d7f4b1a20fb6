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


# ---------------------------------------------------------------------------------------------------------------
# K-way rankings for the reward model (train.reward_model.pairs=all)

from selfplay.config import RewardModelSection  # noqa: E402
from selfplay.pairing import Ranked, ranking_pairs, reward_model_pairs  # noqa: E402
from selfplay.records import TrainInputs  # noqa: E402
from selfplay.seed import load_seed  # noqa: E402


def test_a_ranking_of_k_gives_every_ordered_pair_and_skips_ties():
    # Scores a 3, b 2, c 2, d 1: C(4,2) = 6 pairs, less the tie b-c: a>b, a>c, a>d, b>d, c>d, in rank order.
    ranked = [Ranked("d", "D", 1.0), Ranked("b", "B", 2.0), Ranked("a", "A", 3.0), Ranked("c", "C", 2.0)]
    pairs = ranking_pairs("q", "Q?", ranked, min_margin=0.0, judge="j")
    assert [(p.chosen_id, p.rejected_id) for p in pairs] == [("a", "b"), ("a", "c"), ("a", "d"), ("b", "d"), ("c", "d")]
    assert [p.margin for p in pairs] == [1.0, 1.0, 2.0, 1.0, 1.0]
    assert [p.id for p in pairs] == ["q/p0-1", "q/p0-2", "q/p0-3", "q/p1-3", "q/p2-3"]
    assert all(p.chosen_score > p.rejected_score and p.prompt == "Q?" for p in pairs)
    # A gap below min_margin is a tie too: 3 vs 2.8 goes, each of them vs 1 stays.
    close = [Ranked("a", "A", 3.0), Ranked("b", "B", 2.8), Ranked("c", "C", 1.0)]
    assert [(p.chosen_id, p.rejected_id) for p in ranking_pairs("q", "Q?", close, 0.5, "j")] == [("a", "c"), ("b", "c")]
    # max_length_gap keeps only pairs whose lengths are that close (10 and 12 tokens: yes; 10 and 40: no).
    sized = [Ranked("a", "A", 3.0, 10), Ranked("b", "B", 2.0, 12), Ranked("c", "C", 1.0, 40)]
    assert [(p.chosen_id, p.rejected_id) for p in ranking_pairs("q", "Q?", sized, 0.0, "j", max_length_gap=5)] == [("a", "b")]
    # Equal texts are no preference; two responses give the one best-worst pair.
    assert ranking_pairs("q", "Q?", [Ranked("a", "same", 2.0), Ranked("b", "same", 1.0)], 0.0, "j") == []
    assert len(ranking_pairs("q", "Q?", [Ranked("a", "A", 2.0), Ranked("b", "B", 1.0)], 0.0, "j")) == 1


def iteration(table) -> TrainInputs:
    prompts, gens, judgements = [], [], []
    for pid, scores in table:
        prompts.append(make_prompt(pid))
        for j, score in enumerate(scores):
            gens.append(make_generation(pid, j, f"{pid} response {j}"))
            judgements.append(judgement(f"{pid}/g{j}", score))
    pairs, _ = make_pairs(PairingConfig(min_margin=0.1), prompts, gens, judgements)
    return TrainInputs(prompts=prompts, generations=gens, judgements=judgements, pairs=pairs)


def test_reward_model_pairs_from_judged_rankings_with_instructgpt_weights():
    it1 = iteration([(pid, scores) for pid, scores, _ in TABLE])  # a: 4 scored (6 pairs), b: all tied, c: one scored, d: below the margin, e: 2, f: 3 (one tie)
    it2 = iteration([("g", [1.0, 2.0, 3.0, 4.0, 5.0])])  # 5 scored: C(5,2) = 10 pairs
    all_pairs = RewardModelSection(pairs="all")
    pairs, weights = reward_model_pairs(all_pairs, PairingConfig(min_margin=0.1), [it1, it2], None)
    by_prompt = {pid: [(p.chosen_id, p.rejected_id) for p in pairs if p.prompt_id == pid] for pid in "abcdefg"}
    assert by_prompt["a"] == [("a/g1", "a/g3"), ("a/g1", "a/g0"), ("a/g1", "a/g2"), ("a/g3", "a/g0"), ("a/g3", "a/g2"),
                              ("a/g0", "a/g2")]  # scores 5, 4, 3, 1
    assert by_prompt["b"] == by_prompt["c"] == by_prompt["d"] == []
    assert by_prompt["e"] == [("e/g2", "e/g1")]
    assert by_prompt["f"] == [("f/g0", "f/g2"), ("f/g1", "f/g2")]  # f/g0 and f/g1 tie at 4
    assert len(by_prompt["g"]) == 10
    # Each comparison weighs 1/C(K,2) of its prompt's K scored responses (ties count in K, and add no pair).
    want = {"a": 1 / 6, "e": 1.0, "f": 1 / 3, "g": 1 / 10}
    assert weights == pytest.approx([want[p.prompt_id] for p in pairs])
    # pair_weight=pair: the same pairs, unweighted; best-worst: the iterations' own pairs.
    assert reward_model_pairs(RewardModelSection(pairs="all", pair_weight="pair"), PairingConfig(min_margin=0.1),
                              [it1, it2], None) == (pairs, None)
    best_worst, none = reward_model_pairs(RewardModelSection(), PairingConfig(min_margin=0.1), [it1, it2], None)
    assert best_worst == list(it1.pairs) + list(it2.pairs) and none is None and len(best_worst) == 4


def test_reward_model_pairs_from_a_seed_sets_rankings(tmp_path):
    path = tmp_path / "seed.jsonl"
    path.write_text("\n".join([
        '{"prompt": "P", "chosen": "good", "rejected": "bad"}',
        '{"prompt": "Q", "ranking": ["q1", ["q2a", "q2b"], "q3"]}',  # 4 responses, q2a and q2b tied
        '{"id": "r-1", "prompt": "R", "response": "r1", "score": 5}',
        '{"id": "r-2", "prompt": "R", "response": "r2", "score": 3}',
        '{"id": "r-3", "prompt": "R", "response": "r3", "score": 3}',
        '{"prompt": "S", "ranking": [["s1", "s2"]]}',  # every response tied: a tie, no pair
    ]) + "\n")
    seed = load_seed(path)
    # Best vs worst: the pairwise line, R's best vs worst (5 vs 3), Q's first vs last tier.
    assert [(p.chosen, p.rejected) for p in seed.pairs] == [("good", "bad"), ("r1", "r2"), ("q1", "q3")]
    assert (seed.from_scored, seed.from_ranked, seed.ties) == (1, 1, 1) and seed.pairs[-1].margin == 2.0
    assert [(p.chosen, p.rejected) for p in seed.given_pairs()] == [("good", "bad")]
    assert "pairs 3 (1 from scored lines, 1 from rankings)" in seed.summary()

    pairs, weights = reward_model_pairs(RewardModelSection(pairs="all"), PairingConfig(), [], seed)
    got = [(p.chosen, p.rejected, p.margin) for p in pairs]
    assert got == [("good", "bad", 1.0),
                   ("r1", "r2", 2.0), ("r1", "r3", 2.0),  # r2 and r3 tie: skipped (equal scores: by id)
                   ("q1", "q2a", 1.0), ("q1", "q2b", 1.0), ("q1", "q3", 2.0), ("q2a", "q3", 1.0), ("q2b", "q3", 1.0)]
    assert weights == pytest.approx([1.0, 1 / 3, 1 / 3] + [1 / 6] * 5)
    assert {p.judge for p in pairs} == {"human"}


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "P", "ranking": "a"}', "'ranking' must be a list of responses"),
    ('{"prompt": "P", "ranking": ["a"]}', "a ranking needs at least two responses, got 1"),
    ('{"prompt": "P", "ranking": ["a", 3]}', "each 'ranking' entry must be a non-empty string"),
    ('{"prompt": "P", "ranking": ["a", []]}', "each 'ranking' entry must be a non-empty string"),
    ('{"prompt": "P", "ranking": ["a", ["b", "a"]]}', "holds the same response twice"),
    ('{"prompt": "P", "ranking": ["a", "b"], "by": "me"}', "unknown key 'by' \\(ranking lines take prompt, ranking"),
])
def test_bad_ranking_lines_are_one_line_errors(tmp_path, line, message):
    from selfplay.seed import SeedError

    path = tmp_path / "seed.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(SeedError, match=rf"seed\.jsonl:1: .*{message}"):
        load_seed(path)
