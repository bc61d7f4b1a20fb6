"""Rejection-sampling filters, ReST threshold schedules and n-gram dedupe, as literal tables."""

import shlex

import pytest

from selfplay.config import ConfigError, load_config
from selfplay.filtering import (
    dedupe, ngram_overlap, quantile, rejection_sft_examples, response_scores, rest_schedule, word_ngrams,
)
from selfplay.records import Judgement

from conftest import make_generation, make_prompt


def judgement(gen_id: str, score: float | None, judge: str = "pointwise") -> Judgement:
    return Judgement(id=f"{gen_id}/j", prompt_id=gen_id.split("/")[0], generation_ids=[gen_id], judge=judge,
                     method="text", raw=["..."], sample_scores=[score], score=score,
                     status="ok" if score is not None else "unparseable")


# prompt id -> responses (text, score); "" = empty response, None = the scorer failed on it
TABLE = {
    "a": [("a0", 3.0), ("a1", 5.0), ("a2", 1.0), ("a3", 4.0)],
    "b": [("b0", 2.0), ("b1", 2.5)],  # all below a threshold of 3
    "c": [("c0", None), ("c1", 4.0), ("", 5.0)],  # unscored; empty text never kept, whatever its score
    "d": [("same", 4.0), (" same ", 4.5), ("other", 3.0)],  # a duplicate text of the best is not kept twice
    "e": [("e0", 4.0), ("e1", 4.0)],  # equal scores: the lower id first
}


def records(table=TABLE):
    prompts = [make_prompt(pid, f"prompt {pid}") for pid in table]
    gens, js = [], []
    for pid, rows in table.items():
        for j, (text, score) in enumerate(rows):
            gens.append(make_generation(pid, j, text))
            js.append(judgement(f"{pid}/g{j}", score))
    return prompts, gens, js


# (top_k, threshold) -> kept generation ids, in order; per-prompt (kept, below, over_k, unscored, empty, duplicate) of a, c, d
CASES = [
    ((1, None), ["a/g1", "b/g1", "c/g1", "d/g1", "e/g0"], {"a": (1, 0, 3, 0, 0, 0), "c": (1, 0, 0, 1, 1, 0), "d": (1, 0, 1, 0, 0, 1)}),
    ((2, None), ["a/g1", "a/g3", "b/g1", "b/g0", "c/g1", "d/g1", "d/g2", "e/g0", "e/g1"],
     {"a": (2, 0, 2, 0, 0, 0), "c": (1, 0, 0, 1, 1, 0), "d": (2, 0, 0, 0, 0, 1)}),
    ((1, 3.0), ["a/g1", "c/g1", "d/g1", "e/g0"], {"a": (1, 1, 2, 0, 0, 0), "c": (1, 0, 0, 1, 1, 0), "d": (1, 0, 1, 0, 0, 1)}),
    ((None, 4.0), ["a/g1", "a/g3", "c/g1", "d/g1", "e/g0", "e/g1"],
     {"a": (2, 2, 0, 0, 0, 0), "c": (1, 0, 0, 1, 1, 0), "d": (1, 1, 0, 0, 0, 1)}),
    ((3, 9.0), [], {"a": (0, 4, 0, 0, 0, 0), "c": (0, 1, 0, 1, 1, 0), "d": (0, 3, 0, 0, 0, 0)}),
]


@pytest.mark.parametrize("args, want, counts", CASES)
def test_top_k_above_threshold_table(args, want, counts):
    top_k, threshold = args
    examples, stats = rejection_sft_examples(*records(), top_k=top_k, threshold=threshold)
    assert [e.generation_id for e in examples] == want
    for pid, (kept, below, over_k, unscored, empty, duplicate) in counts.items():
        c = stats.per_prompt[pid]
        assert (c.kept, c.below, c.over_k, c.unscored, c.empty, c.duplicate) == (kept, below, over_k, unscored, empty, duplicate)
        assert c.responses == len(TABLE[pid]) == c.kept + c.below + c.over_k + c.unscored + c.empty + c.duplicate
    assert stats.kept == len(want) and stats.responses == 14 and stats.unscored == 1 and stats.empty == 1
    assert stats.kept_fraction == pytest.approx(len(want) / 14)
    assert stats.prompts_kept == len({w.split("/")[0] for w in want})


def test_examples_carry_text_score_and_trl_format():
    examples, stats = rejection_sft_examples(*records(), top_k=1, threshold=4.5)
    assert [(e.id, e.prompt, e.completion, e.score, e.judge) for e in examples] == [
        ("a/g1/sft", "prompt a", "a1", 5.0, "pointwise"), ("d/g1/sft", "prompt d", " same ", 4.5, "pointwise")]
    assert examples[0].to_trl() == {"prompt": [{"role": "user", "content": "prompt a"}],
                                    "completion": [{"role": "assistant", "content": "a1"}]}
    assert stats.mean_kept_score == pytest.approx(4.75)


def test_filter_is_pure_and_ignores_comparisons():
    prompts, gens, js = records()
    # a pairwise comparison judgement (two ids) is not a per-response score
    comparison = Judgement(id="a/g2|a/g1", prompt_id="a", generation_ids=["a/g2", "a/g1"], judge="pairwise", method="logprob",
                           raw=["."], sample_scores=[1.0], score=1.0, status="ok")
    once = rejection_sft_examples(prompts, gens, js + [comparison], top_k=1, threshold=None)
    again = rejection_sft_examples(prompts, list(reversed(gens)), list(reversed(js)), top_k=1, threshold=None)
    assert once[0] == sorted(again[0], key=lambda e: [p.id for p in prompts].index(e.prompt_id))
    assert response_scores([comparison]) == {}


def test_no_responses_and_bad_top_k():
    examples, stats = rejection_sft_examples([make_prompt("x")], [], [], top_k=1, threshold=None)
    assert examples == [] and stats.kept_fraction is None and stats.per_prompt["x"].responses == 0
    with pytest.raises(ValueError, match="top_k"):
        rejection_sft_examples([], [], [], top_k=0, threshold=None)


# --- ReST schedules ---

@pytest.mark.parametrize("values, q, want", [
    ([1.0, 2.0, 3.0, 4.0, 5.0], 0.5, 3.0),
    ([1.0, 2.0, 3.0, 4.0, 5.0], 0.75, 4.0),
    ([1.0, 2.0, 3.0, 4.0], 0.5, 2.5),  # halfway between the middle two
    ([4.0, 1.0, 3.0, 2.0], 0.9, 3.7),  # unsorted input; 0.9 * 3 = 2.7 -> 3 + 0.7
    ([2.0], 0.3, 2.0),
    ([1.0, 5.0], 0.0, 1.0),
    ([1.0, 5.0], 1.0, 5.0),
])
def test_quantile_table(values, q, want):
    assert quantile(values, q) == pytest.approx(want)


SCORES = [1.0, 2.0, 3.0, 4.0, 5.0]


@pytest.mark.parametrize("thresholds, mode, want", [
    ([3.0, 3.5, 4.0], "score", [3.0, 3.5, 4.0]),
    ([3.0, 3.0], "score", [3.0, 3.0]),  # staying is allowed: another pass on the same data
    ([0.5, 0.75, 1.0], "quantile", [3.0, 4.0, 5.0]),
    ([0.0], "quantile", [1.0]),
])
def test_rest_schedule_table(thresholds, mode, want):
    assert rest_schedule(SCORES, thresholds, mode) == pytest.approx(want)


@pytest.mark.parametrize("scores, thresholds, mode, match", [
    (SCORES, [4.0, 3.0], "score", "must rise"),
    (SCORES, [], "score", "at least one"),
    ([], [0.5], "quantile", "scored response"),
    (SCORES, [1.5], "quantile", "outside 0..1"),
])
def test_rest_schedule_bad(scores, thresholds, mode, match):
    with pytest.raises(ValueError, match=match):
        rest_schedule(scores, thresholds, mode)


def test_rising_thresholds_keep_nested_subsets():
    prompts, gens, js = records()
    scores = [j.score for j in js if j.score is not None]
    kept = [{e.generation_id for e in rejection_sft_examples(prompts, gens, js, top_k=None, threshold=t)[0]}
            for t in rest_schedule(scores, [0.25, 0.5, 0.9], "quantile")]
    assert kept[0] >= kept[1] >= kept[2] and kept[2]


@pytest.mark.parametrize("overrides, match", [
    (["train.algo=rest", "train.rest.thresholds=[4.0, 3.0]", "train.rest.threshold_mode=score"], "must rise"),
    (["train.algo=rest", "train.rest.thresholds=[0.5, 2.0]"], "quantiles in 0..1"),
    (["train.algo=rest", "train.rest.thresholds=[]"], r"train\.rest\.thresholds"),
    (["train.algo=rejection-sft", "train.sft.top_k=0"], r"train\.sft\.top_k"),
    (["train.algo=rest-sft"], "train.algo"),
    (["prompts.self_instruct_min_words=20", "prompts.self_instruct_max_words=10"], "min_words"),
    (["prompts.source=invented"], "prompts.source"),
])
def test_bad_config(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, overrides)


def test_config_accepts_the_algorithms():
    cfg = load_config(None, ["train.algo=rest", "train.rest.thresholds=[3.0, 3.5, 4.0]", "train.rest.threshold_mode=score",
                             "prompts.source=mixed"])
    assert (cfg.train.algo, cfg.train.rest.thresholds, cfg.train.rest.threshold_mode, cfg.prompts.source) == \
        ("rest", [3.0, 3.5, 4.0], "score", "mixed")
    cfg = load_config(None, ["train.algo=rejection-sft", "train.sft.threshold=3.5", "train.sft.top_k=null"])
    assert (cfg.train.algo, cfg.train.sft.threshold, cfg.train.sft.top_k) == ("rejection-sft", 3.5, None)
    assert load_config(None, ["train.algo=rejection-sft"]).train.algo == "rejection-sft"


def documented_runs(path) -> dict[str, list[str]]:
    """The `selfplay run` commands in a config's header comment: run name -> its --set overrides."""
    runs = {}
    for line in path.read_text().replace("\\\n#", " ").splitlines():  # a command continued with a backslash
        if line.lstrip("# ").startswith("selfplay run "):
            words = shlex.split(line.lstrip("# "))
            runs[words[words.index("--name") + 1]] = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    return runs


@pytest.mark.parametrize("name, algo", [("cmp-dpo", "dpo"), ("cmp-rsft", "rejection-sft"), ("cmp-rest", "rest")])
def test_comparison_config_differs_only_in_the_algorithm(name, algo):
    from selfplay.config import ALGO_SECTIONS, PROJECT_ROOT

    path = PROJECT_ROOT / "configs" / "compare-dpo-sft-rest.yaml"
    runs = documented_runs(path)
    assert sorted(runs) == ["cmp-dpo", "cmp-rest", "cmp-rsft"]
    cfg, base = load_config(path, runs[name]), load_config(path)
    per_algo = {"algo", *ALGO_SECTIONS}  # a run holds its own algorithm's section only
    assert cfg.model_dump(exclude={"train": per_algo}) == base.model_dump(exclude={"train": per_algo})
    assert cfg.train.algo == algo and "heldout" in cfg.eval.ifeval and "heldout" not in cfg.prompts.pool
    section = {"dpo": cfg.train.dpo, "rejection-sft": cfg.train.sft, "rest": cfg.train.rest}[algo].model_dump()
    assert section == {"dpo": {"beta": 0.1, "sft_weight": 0.0, "precompute_ref": False, "loss": "sigmoid",
                               "label_smoothing": 0.0},
                       "rejection-sft": {"top_k": 1, "threshold": 1.0},
                       "rest": {"thresholds": [0.5, 1.0], "threshold_mode": "score", "top_k": None}}[algo]


# --- n-gram dedupe ---

def test_word_ngrams():
    assert word_ngrams("Write a poem, about CATS!", 2) == {("write", "a"), ("a", "poem"), ("poem", "about"), ("about", "cats")}
    assert word_ngrams("Hello there", 3) == {("hello", "there")}  # shorter than n: one gram of all its words
    assert word_ngrams("  ...  ", 2) == frozenset()


@pytest.mark.parametrize("a, b, want", [
    ("Write a poem about cats.", "write a poem about cats", 1.0),  # case and punctuation aside: identical
    ("Write a poem about cats.", "Write a short poem about cats.", 0.75),  # 3 of the shorter's 4 bigrams
    ("Write a poem about cats.", "Please write a poem about cats for my daughter.", 1.0),  # contained
    ("Write a poem about cats.", "Write a poem about dogs.", 0.75),  # Self-Instruct would call this a near-copy too
    ("Explain photosynthesis simply.", "List three uses of copper.", 0.0),
    ("", "anything at all", 0.0),
])
def test_ngram_overlap_table(a, b, want):
    assert ngram_overlap(word_ngrams(a, 2), word_ngrams(b, 2)) == pytest.approx(want)


def test_dedupe_near_duplicates():
    pool = ["Write a poem about cats.", "How do I boil an egg?"]
    candidates = [
        "write a poem about cats!!",  # 0: copy of pool[0]
        "Give me three tips for sleeping better at night.",  # 1: new
        "Give me three tips for sleeping better.",  # 2: near-copy of candidate 1
        "How do I boil an egg quickly?",  # 3: near-copy of pool[1] (4/4 of pool's bigrams)
        "Describe the water cycle to a ten year old.",  # 4: new
        "Give me three tips for sleeping better at night.",  # 5: exact copy of 1
    ]
    got = dedupe(candidates, pool, n=2, max_overlap=0.7)
    assert [(d.of, d.index) if d else None for d in got] == [
        ("against", 0), None, ("earlier", 1), ("against", 1), None, ("earlier", 1)]
    assert got[0].overlap == 1.0 and got[2].overlap == 1.0
    # containment: a text whose every n-gram occurs in another is a copy at any bar
    assert [(d.of, d.index) if d else None for d in dedupe(candidates, pool, n=3, max_overlap=1.0)] == \
        [("against", 0), None, ("earlier", 1), ("against", 1), None, ("earlier", 1)]
    # a new topic in the same frame: a near-copy by bigrams (3/4), not by trigrams (2/3)
    assert dedupe(["Write a poem about dogs."], pool, n=2, max_overlap=0.7)[0].overlap == 0.75
    assert dedupe(["Write a poem about dogs."], pool, n=3, max_overlap=0.7) == [None]
    with pytest.raises(ValueError, match="n-gram"):
        dedupe(["a"], n=0)


def test_dedupe_compares_only_with_kept_candidates():
    # B duplicates A, C duplicates B but not A: C is compared with the kept A only, so it survives.
    a, b, c = "one two three four", "three four five six", "five six seven eight"
    assert dedupe([a, b, c], n=2, max_overlap=0.3) == [None, dedupe([a, b], n=2, max_overlap=0.3)[1], None]
