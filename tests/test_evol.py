"""Evolved prompts with a scripted FakeGenerator: every filter, provenance, held-out exclusion, the template's
checks; then one tiny-model iteration with prompts.source=evol."""

import json

import pytest

from selfplay.config import PROJECT_ROOT, ConfigError, PromptsConfig, load_config
from selfplay.evol import evolve_prompts, load_evol_template, preflight_evol
from selfplay.records import Prompt
from selfplay.templates import TemplateError

from conftest import FakeGenerator

POOL = [
    Prompt(id="p0", text="Explain why the sky looks blue during the day."),
    Prompt(id="p1", text="How do I get a coffee stain out of a white shirt?"),
    Prompt(id="p2", text="Write a short poem about a rainy Monday morning."),
    Prompt(id="p3", text="Give three tips for a first job interview."),
]
HELD_OUT = [Prompt(id="held-1", text="Describe the water cycle for a ten year old.", source="ifeval")]
CONSTRAINT = "Explain why the sky looks blue during the day, in exactly three sentences a child could follow."

# reply (after the forced "Rewritten request: ") -> what happens to it; parents come in turn: p0 p1 p2 p3 p0 ...
SCRIPT = [
    (CONSTRAINT + "\n\nAnswer: Because of Rayleigh scattering...", "kept"),  # the answer after it is cut off
    ("   ", "empty"),
    (" ".join(["word"] * 40), "too_long"),
    ("As an AI language model, I cannot rewrite requests.", "refusal"),
    ("explain why the sky looks BLUE during the day!", "copy_of_parent"),
    ("Please write a short poem about a rainy Monday morning.", "duplicate_pool"),  # parent p1, copies p2
    ("Describe the water cycle for a ten year old, with a diagram.", "duplicate_heldout"),
    ("Here is the rewritten request: give tips for a job interview.", "template_words"),
    ("Explain why the sky looks blue during the day in exactly three sentences a child could follow!", "duplicate_new"),
    ("What causes coffee stains to set into cotton, and which household methods remove them best, and why?", "kept"),
    ("Write a short poem about a rainy Monday morning in a busy Tokyo train station, in four rhyming lines.", "over_quota"),
]


def scripted(replies):
    it = iter(replies)
    return FakeGenerator(replies=lambda text: [next(it)])


def config(**extra) -> PromptsConfig:
    base = dict(pool="data/instructions.jsonl", source="evol", evol_new=2, evol_oversample=5.5, evol_max_words=30)
    return PromptsConfig(**{**base, **extra})


def test_every_filter_counted_and_kept_prompts_have_their_parent_and_operation():
    gen = scripted([r for r, _ in SCRIPT])
    prompts, stats = evolve_prompts(gen, POOL + HELD_OUT, POOL, config(), seed=0, iteration=2, exclude=HELD_OUT)
    assert [p.text for p in prompts] == [CONSTRAINT, SCRIPT[9][0]]
    assert [p.id for p in prompts] == ["evol-002-000", "evol-002-009"]
    assert [p.meta["parent"] for p in prompts] == ["p0", "p1"] and all(p.source == "evol" for p in prompts)
    ops = set(load_evol_template("evol").operations)
    assert ops == {"add_constraint", "deepen", "concretise", "increase_reasoning"}
    assert all(p.meta["operation"] in ops and p.meta["template"] == "evol@1" and p.meta["iteration"] == 2 for p in prompts)
    assert stats.attempts == 11 and stats.kept == 2 and stats.parents_available == 4  # the held-out one is no parent
    reasons = {d.id: d.reason for d in stats.dropped}
    assert reasons == {f"evol-002-{i:03d}": want for i, (_, want) in enumerate(SCRIPT) if want != "kept"}
    for reason in ("empty", "too_long", "refusal", "template_words", "copy_of_parent", "duplicate_pool",
                   "duplicate_heldout", "duplicate_new", "over_quota"):
        assert getattr(stats, reason) == 1, reason
    dropped = {d.reason: d for d in stats.dropped}
    assert (dropped["duplicate_pool"].of, dropped["duplicate_heldout"].of, dropped["duplicate_new"].of) == ("p2", "held-1", "evol-002-000")
    assert dropped["copy_of_parent"].of == "p0" and dropped["copy_of_parent"].overlap == 1.0
    assert sum(c.attempts for c in stats.operations.values()) == 11 and sum(c.kept for c in stats.operations.values()) == 2
    # each request showed its parent inside the operation's template, and no held-out prompt was shown
    assert all(POOL[i % 4].text in seen for i, seen in enumerate(gen.seen))
    assert not any(HELD_OUT[0].text in seen for seen in gen.seen)


def test_two_rewrites_of_one_parent_compare_what_they_added():
    """Rewrites of one parent share its words; they are duplicates only when they add the same thing."""
    replies = [
        "Explain why the sky looks blue during the day, for a physics student, citing Rayleigh scattering.",
        "Explain why the sky looks blue during the day and red at sunset, step by step, with the reasons.",
    ]
    prompts, stats = evolve_prompts(scripted(replies), POOL[:1], POOL, config(evol_new=2, evol_oversample=1.0), seed=0,
                                    iteration=1)
    assert len(prompts) == 2 and stats.duplicate_new == 0


def test_operations_subset_and_seeded_draws():
    replies = lambda text: ["Explain the blue sky to a sailor on the open sea, and how it changes in a storm."]
    cfg = config(evol_operations=["deepen"], evol_new=1, evol_oversample=1.0)
    prompts, stats = evolve_prompts(FakeGenerator(replies=replies), POOL, POOL, cfg, seed=0, iteration=1)
    assert prompts[0].meta["operation"] == "deepen" and list(stats.operations) == ["deepen"]
    draws = [evolve_prompts(FakeGenerator(replies=replies), POOL, POOL, config(evol_new=4, evol_oversample=2.0), seed=3,
                            iteration=1)[1].dropped for _ in range(2)]
    assert [d.operation for d in draws[0]] == [d.operation for d in draws[1]]  # same seed, same operations


def test_evolving_only_held_out_prompts_is_refused():
    with pytest.raises(ValueError, match="every parent prompt is a held-out"):
        evolve_prompts(scripted([]), HELD_OUT, POOL, config(), seed=0, iteration=1, exclude=HELD_OUT)


HEAD = "name: mine\nversion: 1\nkind: evol\noutput_format: x\nscore_prefix: 'R: '\n"
VARS = "variables: [prompt, operation]\n"
BODY = "template: 'Rewrite {prompt}: {operation}'\n"


@pytest.mark.parametrize("text, expected", [
    (HEAD + VARS + "parse: '(.*)'\n" + BODY, "operations: none defined"),
    (HEAD + VARS + "operations: {a: harder}\n" + BODY, "parse: Field required"),
    (HEAD + VARS + "parse: '(.*)'\noperations: {a: harder}\n", "template: Field required"),
    (HEAD + VARS + "parse: '(.*)'\noperations: {a: harder}\ntemplate: 'Rewrite {prompt}'\n",
     "variable(s) operation declared but not used in the template"),
    (HEAD + "variables: [prompt]\nparse: '(.*)'\noperations: {a: harder}\ntemplate: 'Rewrite {prompt}'\n",
     "variables ['prompt'], but a evol judge fills ['operation', 'prompt']"),
    (HEAD + VARS + "parse: '.*'\noperations: {a: harder}\n" + BODY, "parse: Value error, parse regex needs one capture group"),
    (HEAD + VARS + "parse: '(.*)'\noperations: {a: ' '}\n" + BODY, "operations.a is empty"),
    (HEAD.replace("kind: evol", "kind: pointwise") + VARS + "parse: '(.*)'\noperations: {a: harder}\n" + BODY,
     "is for kind pointwise, not evol"),
])
def test_template_errors_are_one_line(tmp_path, text, expected):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(TemplateError) as err:
        load_evol_template(str(path))
    assert expected in str(err.value) and "\n" not in str(err.value) and str(err.value).startswith("prompts.evol_template:"), err.value


def test_preflight_checks_the_operations_and_the_config_its_fields():
    preflight_evol(config())
    with pytest.raises(TemplateError, match="'simplify' is not an operation of evol@1"):
        preflight_evol(config(evol_operations=["simplify"]))
    with pytest.raises(TemplateError, match="no such template"):
        preflight_evol(config(evol_template="nope"))
    with pytest.raises(ConfigError, match="names an operation twice"):
        load_config(None, ["prompts.source=evol", "prompts.evol_operations=[deepen, deepen]"])


def test_shipped_config_preflights():
    from selfplay.loop import preflight

    cfg = load_config(PROJECT_ROOT / "configs" / "evol.yaml")
    assert cfg.prompts.source == "evol"
    preflight(cfg)


@pytest.mark.slow
def test_one_evol_iteration_on_the_tiny_model(tiny_model_dir, tmp_path):
    """The policy rewrites the iteration's pool prompts; kept rewrites are sampled, judged and trained on beside
    their parents, and the manifest holds the statistics."""
    from selfplay.loop import run_loop
    from selfplay.records import Generation, read_records
    from selfplay.rundir import Run

    cfg = load_config(None, [
        f"model={tiny_model_dir}", "iterations=1", "prompts.per_iteration=3", "prompts.source=evol", "prompts.evol_new=3",
        "prompts.evol_oversample=2.0", "prompts.evol_max_tokens=16", "generation.backend=transformers", "generation.n=2",
        "generation.max_tokens=8", "train.batch_size=2", "train.max_length=96", "pairing.min_margin=0.0",
        "train.min_pairs=1", "judge.injection_check=false",
    ])
    run = Run.create(tmp_path / "evol", cfg)
    run_loop(run, log=lambda _: None)
    p = run.paths(1)
    prompts = read_records(p.prompts, Prompt)
    stats = json.loads((p.dir / "prompt_stats.json").read_text())
    manifest = json.loads(p.manifest.read_text())
    assert manifest["prompts"] == stats and stats["attempts"] == 6
    assert stats["attempts"] == stats["kept"] + len(stats["dropped"])
    evolved = [q for q in prompts if q.source == "evol"]
    parents = [q for q in prompts if q.source == "pool"]
    assert len(parents) == 3 and len(evolved) == stats["kept"]
    assert all(q.meta["parent"] in {x.id for x in parents} and q.meta["operation"] for q in evolved)
    gens = read_records(p.generations, Generation)
    assert {g.prompt_id for g in gens} == {q.id for q in prompts}
