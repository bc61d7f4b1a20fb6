"""Self-written prompts with a scripted FakeGenerator: parsing, every filter, provenance, held-out exclusion."""

import json

import pytest

from selfplay.config import PromptsConfig, load_config
from selfplay.records import Prompt
from selfplay.selfinstruct import heldout_prompts, iteration_prompts, parse_task, self_instruct_prompts
from selfplay.templates import TemplateError, load_template

from conftest import FakeGenerator

POOL = [
    "Explain why the sky looks blue during the day.",
    "How do I get a coffee stain out of a white shirt?",
    "Write a short poem about a rainy Monday morning.",
    "Summarize the plot of a heist movie in two sentences.",
    "Give three tips for a first job interview.",
    "What is the difference between weather and climate?",
    "Rewrite this sentence to sound formal: gonna be late, sorry.",
    "List five vegetables that grow well in shade.",
]
HELD_OUT_TEXT = "Describe the water cycle for a ten year old."


@pytest.fixture
def pool_file(tmp_path):
    path = tmp_path / "pool.jsonl"
    lines = [{"id": f"pool-{i}", "prompt": t} for i, t in enumerate(POOL)] + [{"id": "pool-held", "prompt": HELD_OUT_TEXT}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def pool_prompts(pool_file):
    from selfplay.pool import load_pool

    return load_pool(pool_file)


HELD_OUT = [Prompt(id="ifeval-7", text=HELD_OUT_TEXT, source="ifeval"),
            Prompt(id="ifeval-8", text="Name the largest ocean on Earth and explain how it was named.", source="ifeval")]

# reply (after the forced "Task: ") -> what happens to it
SCRIPT = [
    ("Describe how a rainbow forms.\n\nAnswer: Light bends in raindrops...", "kept"),  # the answer is cut off
    ("   ", "empty"),
    ("Hi there", "too_short"),
    ("I'm sorry, but I cannot write new tasks.", "refusal"),
    ("write a short poem about a rainy monday morning", "duplicate_pool"),
    ("Name the largest ocean on Earth and explain how it was named, please.", "duplicate_heldout"),
    ("Describe how a rainbow forms in the sky.", "duplicate_new"),  # every bigram of candidate 0 is in it
    ('"List three fruits that are high in vitamin C."\nTask: Something else entirely', "kept"),
    ("Suggest a name for a bakery that sells only bread.", "over_quota"),
    (" ".join(["word"] * 40), "too_long"),
]


def scripted(replies):
    it = iter(replies)
    return FakeGenerator(replies=lambda text: [next(it)])


def config(pool_file, **extra):
    base = dict(pool=str(pool_file), per_iteration=3, self_instruct_new=2, self_instruct_oversample=5.0,
                self_instruct_shots=3, self_instruct_max_words=30)
    return PromptsConfig(**{**base, **extra})


def test_every_filter_counted_and_kept_prompts_have_provenance(pool_file):
    gen = scripted([r for r, _ in SCRIPT])
    prompts, stats = self_instruct_prompts(gen, pool_prompts(pool_file), config(pool_file), seed=0, iteration=2, exclude=HELD_OUT)
    assert [p.text for p in prompts] == ["Describe how a rainbow forms.", "List three fruits that are high in vitamin C."]
    assert [p.id for p in prompts] == ["si-002-000", "si-002-007"]
    assert stats.attempts == 10 and stats.kept == 2
    reasons = {d.id: d.reason for d in stats.dropped}
    assert reasons == {f"si-002-{i:03d}": want for i, (_, want) in enumerate(SCRIPT) if want != "kept"}
    for reason in ("empty", "too_short", "too_long", "refusal", "duplicate_pool", "duplicate_heldout", "duplicate_new", "over_quota"):
        assert getattr(stats, reason) == 1, reason
    dup = {d.reason: d for d in stats.dropped}
    assert (dup["duplicate_pool"].of, dup["duplicate_pool"].overlap) == ("pool-2", 1.0)
    assert dup["duplicate_heldout"].of == "ifeval-8" and dup["duplicate_new"].of == "si-002-000"
    for p in prompts:
        assert p.source == "self-instruct" and p.meta["policy"] == "fake" and p.meta["iteration"] == 2
        assert len(p.meta["examples"]) == 3 and p.meta["template"] == "self-instruct@1" and p.meta["template_hash"]
    assert stats.examples_available == len(POOL)  # the pool's copy of a held-out prompt is not an example


def test_held_out_prompts_are_never_examples(pool_file):
    gen = scripted(["A brand new task about gardening tools."] * 40)
    prompts, stats = self_instruct_prompts(gen, pool_prompts(pool_file), config(pool_file, self_instruct_shots=8),
                                           seed=3, iteration=1, exclude=HELD_OUT)
    assert len(gen.seen) == stats.attempts == 10
    assert not any(HELD_OUT_TEXT in text for text in gen.seen)
    assert all("pool-held" not in p.meta["examples"] for p in prompts)
    # every example the model saw is a pool prompt, shown after the template's "Task: " marker
    assert sum(text.count("Task: ") for text in gen.seen[:1]) == 8 + 1  # 8 shots + the forced start of the reply


def test_seeded_and_reproducible(pool_file):
    replies = [f"Write a limerick about the number {i} and a cat." for i in range(10)]
    cfg = config(pool_file, self_instruct_max_overlap=1.0, self_instruct_ngram=4)
    a = self_instruct_prompts(scripted(replies), pool_prompts(pool_file), cfg, seed=0, iteration=1)
    b = self_instruct_prompts(scripted(replies), pool_prompts(pool_file), cfg, seed=0, iteration=1)
    c = self_instruct_prompts(scripted(replies), pool_prompts(pool_file), cfg, seed=0, iteration=2)
    assert a == b
    assert [p.meta["examples"] for p in a[0]] != [p.meta["examples"] for p in c[0]]


@pytest.mark.parametrize("reply, want", [
    ("Explain tides.", "Explain tides."),
    ("Explain tides.\nAnswer: The moon...", "Explain tides."),
    ("Explain tides\nin two sentences.\n\nThe moon pulls...", "Explain tides\nin two sentences."),
    ("'Explain tides.'", "Explain tides."),
    ("\n\n\nExplain tides.\n\nThe moon...", "Explain tides."),  # blank lines before the task are skipped
    ("Answer: The moon pulls the sea.", "Answer: The moon pulls the sea."),  # a reply that is not a task passes here; filters judge it
    ("", ""),
])
def test_parse_task(reply, want):
    assert parse_task(load_template("self-instruct"), reply) == want


def test_iteration_prompts_by_source(pool_file):
    def no_engine():
        raise AssertionError("a pool run must not start an engine")

    pool_only, stats = iteration_prompts(config(pool_file, source="pool"), 0, 1, no_engine)
    assert len(pool_only) == 3 and stats is None and all(p.source == "pool" for p in pool_only)
    new, stats = iteration_prompts(config(pool_file, source="self-instruct"), 0, 1, lambda: scripted([r for r, _ in SCRIPT]),
                                   exclude=HELD_OUT)
    assert [p.source for p in new] == ["self-instruct"] * 2 and stats.kept == 2
    mixed, _ = iteration_prompts(config(pool_file, source="mixed"), 0, 1, lambda: scripted([r for r, _ in SCRIPT]))
    assert [p.id for p in mixed[:3]] == [p.id for p in pool_only] and [p.source for p in mixed[3:]] == ["self-instruct"] * 2
    assert len({p.id for p in mixed}) == len(mixed)


def test_bad_input(pool_file):
    gen = scripted(["x"] * 20)
    with pytest.raises(TemplateError, match="self_instruct_template: template self-rewarding@1 is for kind pointwise"):
        self_instruct_prompts(gen, pool_prompts(pool_file), config(pool_file, self_instruct_template="self-rewarding"), 0, 1)
    only_held = [Prompt(id="a", text=HELD_OUT_TEXT)]
    with pytest.raises(ValueError, match="no examples"):
        self_instruct_prompts(gen, only_held, config(pool_file), 0, 1, exclude=HELD_OUT)
    # a model that writes nothing usable: no prompts, every attempt counted
    prompts, stats = self_instruct_prompts(scripted([""] * 10), pool_prompts(pool_file), config(pool_file), 0, 1)
    assert prompts == [] and stats.empty == stats.attempts == 10


def test_heldout_prompts_of_a_run_config(tmp_path):
    held = tmp_path / "held.jsonl"
    held.write_text(json.dumps({"id": "h1", "prompt": "A held-out question?"}) + "\n")
    cfg = load_config(None, [f"eval.prompts={held}"])
    got = heldout_prompts(cfg)
    assert got[0].id == "h1" and any(p.source == "ifeval" for p in got)  # the shipped IFEval set is held out too
    assert all(p.source == "ifeval" for p in heldout_prompts(load_config(None, [])))
    # a run that trains on the IFEval training split: its own prompts are not held out, the held-out split is
    from selfplay.pool import load_pool

    cfg = load_config(None, ["prompts.pool=data/ifeval/train.jsonl", "eval.ifeval=data/ifeval/prompts.jsonl"])
    held_ids = {p.id for p in heldout_prompts(cfg)}
    assert not held_ids & {p.id for p in load_pool("data/ifeval/train.jsonl")}
    assert {p.id for p in load_pool("data/ifeval/heldout.jsonl")} <= held_ids
    # the independent set is held out too, shipped or named by eval.ifeval_independent
    assert {p.id for p in load_pool("data/ifeval/independent.jsonl")} <= held_ids
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"id": "o1", "prompt": "Another held-out question?"}) + "\n")
    assert "o1" in {p.id for p in heldout_prompts(load_config(None, [f"eval.ifeval_independent={other}"]))}
