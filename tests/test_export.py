"""`selfplay export`: every format read back with the libraries other tools use (json, datasets, pyarrow), the
chosen and rejected sides checked, Label Studio tasks labelled and read back as a seed set, and TRL's DPOTrainer
taking a step on the exported pairs."""

import json
import xml.etree.ElementTree as ET

import pytest
from conftest import make_generation
from typer.testing import CliRunner

from selfplay.cli import app
from selfplay.config import load_config
from selfplay.export import ExportError, export_run
from selfplay.pool import load_pool
from selfplay.records import Pair, Prompt, write_records
from selfplay.rundir import Run
from selfplay.seed import load_seed

runner = CliRunner()


def make_pair(k, i):
    pid = f"q{i}"
    return Pair(
        id=f"{pid}/p",
        prompt_id=pid,
        prompt=f"Question {i} of iteration {k}?",
        chosen=f"good answer {k}.{i}",
        rejected=f"bad answer {k}.{i}",
        chosen_id=f"{pid}/g1",
        rejected_id=f"{pid}/g0",
        chosen_score=4.0 + i,
        rejected_score=1.0,
        margin=3.0 + i,
        judge="pointwise",
    )


@pytest.fixture
def run(tmp_path):
    """Two iterations of three prompts, two responses each, and a pair per prompt."""
    the_run = Run.create(tmp_path / "runs" / "demo", load_config(None))
    for k in (1, 2):
        paths = the_run.paths(k)
        pairs = [make_pair(k, i) for i in range(3)]
        write_records(paths.prompts, [Prompt(id=p.prompt_id, text=p.prompt) for p in pairs])
        write_records(
            paths.generations,
            [g for p in pairs for g in (make_generation(p.prompt_id, 0, p.rejected), make_generation(p.prompt_id, 1, p.chosen))],
        )
        write_records(paths.pairs, pairs)
    return the_run


def trl_pair(k, i):
    pair = make_pair(k, i)
    return {
        "prompt": [{"role": "user", "content": pair.prompt}],
        "chosen": [{"role": "assistant", "content": pair.chosen}],
        "rejected": [{"role": "assistant", "content": pair.rejected}],
        "id": pair.id,
        "prompt_id": pair.prompt_id,
        "iteration": k,
        "judge": "pointwise",
        "chosen_score": pair.chosen_score,
        "rejected_score": 1.0,
        "margin": pair.margin,
    }


EXPECTED_PAIRS = [trl_pair(k, i) for k in (1, 2) for i in range(3)]


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_trl_rows_are_trls_conversational_formats(run, tmp_path):
    result = export_run(run, "trl", tmp_path / "out")
    out = tmp_path / "out"
    assert result.iterations == [1, 2] and result.rows == {"pairs.jsonl": 6, "prompts.jsonl": 6, "generations.jsonl": 12}
    assert read_jsonl(out / "pairs.jsonl") == EXPECTED_PAIRS
    prompts = read_jsonl(out / "prompts.jsonl")
    assert prompts[0] == {
        "prompt": [{"role": "user", "content": "Question 0 of iteration 1?"}],
        "id": "q0",
        "iteration": 1,
        "source": "pool",
    }
    generations = read_jsonl(out / "generations.jsonl")
    assert generations[1]["prompt"] == prompts[0]["prompt"] and generations[1]["iteration"] == 1
    assert generations[1]["completion"] == [{"role": "assistant", "content": "good answer 1.0"}]
    assert (generations[1]["id"], generations[1]["finish_reason"]) == ("q0/g1", "stop")


def test_hf_and_parquet_hold_the_same_rows(run, tmp_path):
    import datasets
    import pyarrow.parquet as pq

    export_run(run, "hf", tmp_path / "hf")
    export_run(run, "parquet", tmp_path / "pq")
    export_run(run, "trl", tmp_path / "trl")
    for kind in ("pairs", "prompts", "generations"):
        rows = read_jsonl(tmp_path / "trl" / f"{kind}.jsonl")
        assert datasets.load_from_disk(str(tmp_path / "hf" / kind)).to_list() == rows, kind
        assert pq.read_table(tmp_path / "pq" / f"{kind}.parquet").to_pylist() == rows, kind
    assert datasets.load_from_disk(str(tmp_path / "hf" / "pairs"))[4]["chosen"][0]["content"] == "good answer 2.1"


@pytest.mark.parametrize("fmt, prompts", [("trl", "prompts.jsonl"), ("hf", "prompts"), ("parquet", "prompts.parquet")])
def test_exported_prompts_are_a_pool_again(run, tmp_path, fmt, prompts):
    export_run(run, fmt, tmp_path / fmt, iteration=2)
    pool = load_pool(tmp_path / fmt / prompts)
    assert [(p.id, p.text) for p in pool] == [(f"q{i}", f"Question {i} of iteration 2?") for i in range(3)]


def test_label_studio_tasks_config_and_the_labels_read_back(run, tmp_path):
    result = export_run(run, "label-studio", tmp_path / "ls")
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    assert result.rows == {"tasks.json": 6} and len(tasks) == 6
    pairs = {f"iter_{k:03d}/q{i}/p": make_pair(k, i) for k in (1, 2) for i in range(3)}
    for task in tasks:
        data, meta = task["data"], task["meta"]["selfplay"]
        pair = pairs[data["pair_id"]]
        other = "answer2" if meta["chosen"] == "answer1" else "answer1"
        assert (data["prompt"], data[meta["chosen"]], data[other]) == (pair.prompt, pair.chosen, pair.rejected)
        assert (meta["pair_id"], meta["judge"], meta["margin"]) == (data["pair_id"], "pointwise", pair.margin)
    sides = [task["meta"]["selfplay"]["chosen"] for task in tasks]
    assert set(sides) == {"answer1", "answer2"}  # seeded per pair, so neither side always holds the judge's choice
    export_run(run, "label-studio", tmp_path / "again")
    assert json.loads((tmp_path / "again" / "tasks.json").read_text()) == tasks  # the same seed, the same sides

    # The labelling config shows the prompt and both answers, with a Pairwise choice between the answers.
    view = ET.fromstring((tmp_path / "ls" / "config.xml").read_text())
    assert {t.get("name"): t.get("value") for t in view.iter("Text")} == {
        "prompt": "$prompt",
        "answer1": "$answer1",
        "answer2": "$answer2",
    }
    (pairwise,) = view.iter("Pairwise")
    assert pairwise.get("toName") == "answer1,answer2"

    # People label the tasks in Label Studio (here: its JSON export written by hand): they pick the judge's choice
    # on all but the first task. The export is a seed set, and its meta measures the agreement with the judge.
    for n, task in enumerate(tasks):
        judge_left = task["meta"]["selfplay"]["chosen"] == "answer1"
        picked_left = judge_left if n else not judge_left
        task.update(
            id=n + 1,
            annotations=[
                {
                    "id": n,
                    "was_cancelled": False,
                    "result": [
                        {
                            "from_name": "comparison",
                            "to_name": "answer1,answer2",
                            "type": "pairwise",
                            "value": {"selected": "left" if picked_left else "right"},
                        }
                    ],
                }
            ],
        )
    export = tmp_path / "labelled.json"
    export.write_text(json.dumps(tasks))
    seed = load_seed(export)
    assert (seed.judge_compared, seed.judge_agreed) == (6, 5)
    by_prompt = {p.prompt: p for p in seed.pairs}
    first = pairs[tasks[0]["data"]["pair_id"]]
    assert (by_prompt[first.prompt].chosen, by_prompt[first.prompt].rejected) == (first.rejected, first.chosen)
    for task in tasks[1:]:
        pair = pairs[task["data"]["pair_id"]]
        assert (by_prompt[pair.prompt].chosen, by_prompt[pair.prompt].rejected) == (pair.chosen, pair.rejected)


def test_one_iteration_and_the_refusals(run, tmp_path):
    assert export_run(run, "trl", tmp_path / "k2", iteration=2).iterations == [2]
    assert read_jsonl(tmp_path / "k2" / "pairs.jsonl") == EXPECTED_PAIRS[3:]
    with pytest.raises(ExportError, match=r"iter_009/pairs\.jsonl: missing; iteration 9 has no pairs to export"):
        export_run(run, "trl", tmp_path / "k9", iteration=9)
    with pytest.raises(ExportError, match=r"--format 'csv': unknown; use one of trl, hf, parquet, label-studio"):
        export_run(run, "csv", tmp_path / "x")
    # A non-empty target is never overwritten without force; with it, only the export's own files are replaced.
    (tmp_path / "k2" / "notes.txt").write_text("mine")
    (tmp_path / "k2" / "pairs.jsonl").write_text("stale\n")
    with pytest.raises(ExportError, match=r"k2: exists and is not empty; pass --force"):
        export_run(run, "trl", tmp_path / "k2")
    assert (tmp_path / "k2" / "pairs.jsonl").read_text() == "stale\n"
    export_run(run, "trl", tmp_path / "k2", force=True)
    assert read_jsonl(tmp_path / "k2" / "pairs.jsonl") == EXPECTED_PAIRS and (tmp_path / "k2" / "notes.txt").read_text() == "mine"
    export_run(run, "hf", tmp_path / "hf")
    export_run(run, "hf", tmp_path / "hf", iteration=1, force=True)  # a datasets folder replaced by a new one
    import datasets

    assert datasets.load_from_disk(str(tmp_path / "hf" / "pairs")).to_list() == EXPECTED_PAIRS[:3]
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ExportError, match=r"afile: is a file"):
        export_run(run, "trl", tmp_path / "afile")
    empty = Run.create(tmp_path / "runs" / "empty", load_config(None))
    with pytest.raises(ExportError, match=r"empty: no iteration has pairs\.jsonl yet"):
        export_run(empty, "trl", tmp_path / "none")


def test_the_command_defaults_to_the_run_folder(run):
    result = runner.invoke(app, ["export", "demo", "--format", "label-studio", "-k", "1"])
    assert result.exit_code == 0, result.output
    out = run.root / "export" / "label-studio"
    assert result.output == f"exported iteration 1 as label-studio: tasks.json (3 tasks) -> {out}\n"
    assert len(json.loads((out / "tasks.json").read_text())) == 3 and (out / "config.xml").exists()
    again = runner.invoke(app, ["export", "demo", "--format", "label-studio"])
    assert (
        again.exit_code == 1
        and again.stderr == f"error: {out}: exists and is not empty; pass --force to replace an earlier export there\n"
    )


@pytest.mark.slow
def test_trls_dpo_trainer_takes_a_step_on_the_exported_pairs(run, tmp_path, tiny_model_dir, one_thread):
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    export_run(run, "trl", tmp_path / "trl")
    dataset = datasets.Dataset.from_json(str(tmp_path / "trl" / "pairs.jsonl"), cache_dir=str(tmp_path / "cache"))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    before = [p.detach().clone() for p in model.parameters()]
    args = DPOConfig(
        output_dir=str(tmp_path / "dpo"),
        max_steps=1,
        per_device_train_batch_size=2,
        learning_rate=1e-2,
        max_length=64,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = DPOTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=AutoTokenizer.from_pretrained(tiny_model_dir)
    )
    trainer.train()
    (step,) = [log for log in trainer.state.log_history if "loss" in log]
    # Before the first update the policy is its own reference: every implicit reward is 0, the loss -log sigmoid(0).
    assert step["loss"] == pytest.approx(0.6931, abs=1e-3) and trainer.state.global_step == 1
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, trainer.model.parameters(), strict=True))
