"""A full loop on a tiny random llama built locally: transformers generation, the model judging itself by
log-probability, best-vs-worst pairs, real TRL DPO with LoRA, and the next iteration sampling from the
trained policy."""

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from selfplay.config import PROJECT_ROOT, ConfigError, load_config
from selfplay.loop import run_loop
from selfplay.rundir import Run, RunError
from selfplay.records import Generation, Judgement, Pair, Prompt, read_records

pytestmark = pytest.mark.slow


def tiny_config(model_dir, *extra):
    return load_config(None, [
        f"model={model_dir}", "iterations=2", "prompts.per_iteration=3", "generation.backend=transformers",
        "generation.n=3", "generation.max_tokens=12", "train.batch_size=2", "train.max_length=96",
        "train.learning_rate=1e-3", "pairing.min_margin=0.0", "train.min_pairs=1", *extra,
    ])


@pytest.fixture(scope="module")
def finished_run(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs") / "tiny"
    run = Run.create(root, tiny_config(tiny_model_dir))
    rows = run_loop(run, log=lambda _: None)
    return run, rows


def test_records_complete(finished_run):
    run, rows = finished_run
    assert [r.iteration for r in rows] == [1, 2]
    for k in (1, 2):
        p = run.paths(k)
        prompts = read_records(p.prompts, Prompt)
        gens = read_records(p.generations, Generation)
        judgements = read_records(p.judgements, Judgement)
        assert len(prompts) == 3 and len(gens) == 9 and len(judgements) == 9
        assert not (p.dir / "judge_progress").exists()  # the judge stage's chunks go once judgements.jsonl is written
        assert {g.id for g in gens} == {f"{pr.id}/g{j}" for pr in prompts for j in range(3)}
        assert all(j.method == "logprob" and j.score is not None and 1 <= j.score <= 5 for j in judgements)
        pairs = read_records(p.pairs, Pair)
        assert pairs and all(pair.margin > 0 for pair in pairs)
        manifest = json.loads(p.manifest.read_text())
        assert manifest["judge"]["parse_rate"] == 1.0 and manifest["versions"]["trl"] == "1.16.0"
        injection = manifest["judge"]["injection"]  # the shipped injection cases, judged each iteration
        assert injection["n"] + injection["unscored"] == 80 and injection["ci_low"] <= injection["mean_lift"] <= injection["ci_high"]
    # iterations see disjoint prompts while the pool lasts
    ids1 = {p.id for p in read_records(run.paths(1).prompts, Prompt)}
    ids2 = {p.id for p in read_records(run.paths(2).prompts, Prompt)}
    assert not ids1 & ids2
    summary = [json.loads(line) for line in (run.root / "summary.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in summary] == [1, 2]


def test_dpo_changed_the_policy_and_the_next_iteration_uses_it(finished_run, tiny_model_dir):
    run, rows = finished_run
    train = json.loads(run.paths(1).train.read_text())
    assert train["steps"] >= 1 and train["loss_first"] is not None
    merged = run.paths(1).policy / "merged"
    adapter = run.paths(1).policy / "adapter"
    assert (adapter / "adapter_model.safetensors").exists()
    assert not list(run.paths(1).policy.rglob("*.bin"))  # safetensors only
    before, after = load_file(tiny_model_dir / "model.safetensors"), load_file(merged / "model.safetensors")
    changed = [k for k in before if not before[k].to(after[k].dtype).equal(after[k])]
    assert changed, "DPO left every weight unchanged"
    gens2 = read_records(run.paths(2).generations, Generation)
    assert {g.policy for g in gens2} == {str(merged)}
    # Served = trained: iteration 2 serves the fp32 policy whole, and its manifest says so.
    serving = json.loads(run.paths(2).manifest.read_text())["serving"]
    assert serving["start"] == str(tiny_model_dir) and serving["served_dtype"] == "float32"
    assert serving["changed_tensors"] > 0 and serving["rounding_error"] == 0.0 and serving["warning"] is None
    assert json.loads(run.paths(1).manifest.read_text())["serving"]["start"] is None  # the base model: no update


def test_resume_is_free_and_config_changes_are_refused(finished_run):
    run, rows = finished_run
    before = {p: p.stat().st_mtime_ns for p in run.root.rglob("*.jsonl")}
    again = run_loop(Run.open(run.root), log=lambda _: None)
    assert again == rows
    assert {p: p.stat().st_mtime_ns for p in run.root.rglob("*.jsonl") if p.name != "summary.jsonl"} == \
        {p: t for p, t in before.items() if p.name != "summary.jsonl"}
    changed = run.cfg.model_copy(update={"seed": 7})
    with pytest.raises(RunError, match=r"config differs .*seed: 0 -> 7"):
        Run.open(run.root, changed)
    with pytest.raises(RunError, match="already holds a run"):
        Run.create(run.root, run.cfg)
    meta = json.loads((run.root / "run.json").read_text())
    (run.root / "run.json").write_text(json.dumps({**meta, "versions": {**meta["versions"], "trl": "0.9.0"}}))
    try:
        with pytest.raises(RunError, match=r"other versions \(trl 0\.9\.0 -> 1\.16\.0\).*--force"):
            Run.open(run.root, resume=True)
        Run.open(run.root, resume=True, force=True)
        Run.open(run.root)  # viewing an old run is always allowed
    finally:
        (run.root / "run.json").write_text(json.dumps(meta))


def test_transformers_generation_is_reproducible_per_record(finished_run, tiny_model_dir, tmp_path):
    run, _ = finished_run
    from selfplay.generation import open_generator

    prompts = read_records(run.paths(1).prompts, Prompt)
    first = read_records(run.paths(1).generations, Generation)
    from selfplay.records import derive_seed

    with open_generator(run.cfg.generation, tiny_model_dir, derive_seed(run.cfg.seed, 1, "policy")) as gen:
        # a different order and batch composition: each record still depends only on its own seed
        again = gen.generate(list(reversed(prompts)), n=3)
    assert sorted((g.id, g.text) for g in again) == sorted((g.id, g.text) for g in first)


@pytest.mark.parametrize("algo, extra", [
    ("ppo", ["train.rl.rollout_prompts=2", "train.ppo.minibatch=2", "train.ppo.epochs=1"]),
    ("rloo", ["train.rl.rollout_prompts=2", "train.rl.num_generations=2", "train.batch_size=2"]),
])
def test_rlhf_iteration_reward_model_then_rl(tiny_model_dir, tmp_path, algo, extra):
    """One iteration of the second RLHF path: a reward model trained on the iteration's pairs, then RL."""
    cfg = tiny_config(tiny_model_dir, "iterations=1", f"train.algo={algo}", "train.rl.steps=2",
                      "train.rl.max_new_tokens=8", "train.reward_model.epochs=1", "train.reward_model.heldout=0.0", *extra)
    run = Run.create(tmp_path / algo, cfg)
    [row] = run_loop(run, log=lambda _: None)
    manifest = json.loads(run.paths(1).manifest.read_text())
    rm = manifest["reward_model"]
    assert rm["steps"] >= 1 and rm["model_dir"] and (run.paths(1).dir / "reward_model" / "reward_model.json").exists()
    train = json.loads(run.paths(1).train.read_text())
    assert train["skipped"] is None and train["steps"] == 2 and train["rl"]["reward_first"] is not None
    before, after = load_file(tiny_model_dir / "model.safetensors"), load_file(run.paths(1).policy / "merged" / "model.safetensors")
    assert any(not before[k].to(after[k].dtype).equal(after[k]) for k in before)
    assert row.rl_reward_first is not None and row.kl_last is not None


def test_a2c_iteration_against_a_mean_readout_reward_model_of_all_ranked_pairs(tiny_model_dir, tmp_path):
    """One PPO-variant-a2c iteration whose reward model learns every pair of each prompt's 3 judged responses,
    weighted 1/C(3,2), and reads its reward as the mean over the response tokens."""
    from selfplay.loop import read_inputs
    from selfplay.pairing import reward_model_pairs

    cfg = tiny_config(tiny_model_dir, "iterations=1", "train.algo=ppo", "train.ppo.variant=a2c", "train.rl.steps=2",
                      "train.rl.rollout_prompts=2", "train.rl.max_new_tokens=8", "train.reward_model.epochs=1",
                      "train.reward_model.heldout=0.0", "train.reward_model.pairs=all", "train.reward_model.readout=mean")
    run = Run.create(tmp_path / "a2c", cfg)
    run_loop(run, log=lambda _: None)
    rm = json.loads((run.paths(1).dir / "reward_model" / "reward_model.json").read_text())
    pairs, weights = reward_model_pairs(cfg.train.reward_model, cfg.pairing, [read_inputs(run, 1)], None)
    assert len(pairs) > len(read_records(run.paths(1).pairs, Pair))  # more than best-worst: the middle response too
    assert (rm["readout"], rm["pair_mode"], rm["weighted"], rm["pairs"]) == ("mean", "all", True, len(pairs))
    assert rm["steps"] >= 1 and weights == [1 / 3] * len(pairs)
    train = json.loads(run.paths(1).train.read_text())
    stats = [json.loads(line) for line in (run.paths(1).policy / "ppo_stats.jsonl").read_text().splitlines()]
    assert train["steps"] == 2 and all(s["clip_frac"] is None and s["policy_loss"] is not None for s in stats)


def test_cli_train_rm_then_score(finished_run, tmp_path):
    from typer.testing import CliRunner

    from selfplay.cli import app

    run, _ = finished_run
    runner = CliRunner()
    result = runner.invoke(app, ["train", "rm", "--run", str(run.root), "--out", str(tmp_path / "rm"),
                                 "--seed-set", "data/seed_example.jsonl"])
    assert result.exit_code == 0, result.output
    assert "held-out accuracy" in result.output and (tmp_path / "rm" / "reward_model.json").exists()
    assert result.output.startswith("seed set: data/seed_example.jsonl: pairs 30, ties 0, skipped 0\n")
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"prompt": "Say hi", "response": "Hi there!"}\n{"prompt": "Say hi", "response": "No."}\n')
    result = runner.invoke(app, ["score", "--model", str(tmp_path / "rm"), str(rows), "--out", str(tmp_path / "scored.jsonl")])
    assert result.exit_code == 0, result.output
    scored = [json.loads(line) for line in (tmp_path / "scored.jsonl").read_text().splitlines()]
    assert [s["response"] for s in scored] == ["Hi there!", "No."] and all(isinstance(s["reward"], float) for s in scored)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    result = runner.invoke(app, ["score", "--model", str(tmp_path / "rm"), str(bad)])
    assert result.exit_code == 1 and "bad.jsonl:1: expected a JSON object with prompt and response" in result.output


    # A second reward model as the safety model (Llama 2): PPO against the two, the gated fraction recorded.
    cfg = tiny_config(run.cfg.model, "iterations=1", "train.algo=ppo", "train.rl.steps=1", "train.rl.max_new_tokens=8",
                      "train.rl.rollout_prompts=2", "train.ppo.minibatch=2", "train.ppo.epochs=1",
                      "train.reward_model.heldout=0.0", f"train.reward_model.path={tmp_path / 'rm'}", f"train.reward_model.safety_path={tmp_path / 'rm'}",
                      "train.reward_model.safety_threshold=0.99")
    gated = Run.create(tmp_path / "gated", cfg)
    run_loop(gated, log=lambda _: None)
    train = json.loads(gated.paths(1).train.read_text())
    assert train["steps"] == 1 and 0.0 <= train["rl"]["safety_gated"] <= 1.0


def test_revision_sft_trains_on_the_revisions(tiny_model_dir, tmp_path):
    """Constitutional AI's supervised stage through the loop's train stage: SFT on each pair's revision."""
    from selfplay.loop import run_stage
    from selfplay.records import TrainResult, read_record, write_records

    run = Run.create(tmp_path / "cai", tiny_config(tiny_model_dir, "train.algo=revision-sft", "train.epochs=1"))
    pairs = [Pair(id=f"p{i}/g0/p", prompt_id=f"p{i}", prompt=f"Name a colour, item {i}.", chosen="Blue.",
                  rejected="I will not.", chosen_id=f"p{i}/g0/revision", rejected_id=f"p{i}/g0", chosen_score=1.0,
                  rejected_score=0.0, margin=1.0, judge="constitution-revision", principle="helpful")
             for i in range(4)]
    write_records(run.paths(1).pairs, pairs)
    assert run_stage(run, 1, "train").status == "done"
    result = read_record(run.paths(1).train, TrainResult)
    assert result.algo == "revision-sft" and result.steps >= 1 and result.skipped is None
    examples = [json.loads(line) for line in (run.paths(1).policy / "examples.jsonl").read_text().splitlines()]
    assert [e["completion"] for e in examples] == ["Blue."] * 4
    assert (run.paths(1).policy / "merged" / "model.safetensors").exists()


def test_full_fine_tuning_dpo(tiny_model_dir, tmp_path):
    """train.lora.enabled=false: every weight is trainable, no adapter is written, the policy still changes."""
    run = Run.create(tmp_path / "full", tiny_config(tiny_model_dir, "iterations=1", "train.lora.enabled=false"))
    run_loop(run, log=lambda _: None)
    train = json.loads(run.paths(1).train.read_text())
    assert train["steps"] >= 1 and train["adapter"] is None and not (run.paths(1).policy / "adapter").exists()
    before, after = load_file(tiny_model_dir / "model.safetensors"), load_file(run.paths(1).policy / "merged" / "model.safetensors")
    assert sum(not before[k].to(after[k].dtype).equal(after[k]) for k in before) > len(before) // 2


def test_dpo_with_an_sft_term_adds_the_chosen_nll(finished_run, tiny_model_dir, tmp_path):
    """train.dpo.sft_weight (RPO): the loss is DPO plus the chosen responses' per-token NLL. DPO alone starts at
    ln 2 (policy = reference); a random tiny model's NLL over a 49k vocabulary is near ln 49152 = 10.8."""
    run, _ = finished_run
    assert json.loads(run.paths(1).train.read_text())["loss_first"] < 0.8
    rpo = Run.create(tmp_path / "rpo", tiny_config(tiny_model_dir, "iterations=1", "train.dpo.sft_weight=1.0"))
    run_loop(rpo, log=lambda _: None)
    train = json.loads(rpo.paths(1).train.read_text())
    assert train["steps"] >= 1 and 0.693 + 8 < train["loss_first"] < 0.693 + 13


def test_lora_dpo_with_gradient_checkpointing(tiny_model_dir, tmp_path):
    run = Run.create(tmp_path / "gc", tiny_config(tiny_model_dir, "iterations=1", "train.gradient_checkpointing=true"))
    run_loop(run, log=lambda _: None)
    train = json.loads(run.paths(1).train.read_text())
    assert train["steps"] >= 1 and train["loss_first"] is not None
    before, after = load_file(tiny_model_dir / "model.safetensors"), load_file(run.paths(1).policy / "merged" / "model.safetensors")
    assert any(not before[k].to(after[k].dtype).equal(after[k]) for k in before)


def test_seed_warmup_trains_iteration_0_and_agreement_is_measured_each_iteration(tiny_model_dir, tmp_path):
    seed_file = PROJECT_ROOT / "data" / "seed_example.jsonl"
    run = Run.create(tmp_path / "seeded", tiny_config(tiny_model_dir, "iterations=1", f"human.seed_set={seed_file}",
                                                       "human.seed_warmup=dpo"))
    rows = run_loop(run, log=lambda _: None)
    warmup = json.loads((run.seed_policy / "train.json").read_text())
    assert warmup["algo"] == "dpo" and warmup["dpo"]["pairs"] == 30 and warmup["steps"] >= 1
    # Iteration 1 samples from the policy the seed set trained, not from the base model.
    assert {g.policy for g in read_records(run.paths(1).generations, Generation)} == {warmup["policy"]}
    agreement = json.loads((run.paths(1).dir / "seed_agreement.json").read_text())
    assert agreement["n"] + agreement["unjudged"] == 30
    assert rows[0].human_accuracy == agreement["accuracy"] and 0.0 <= rows[0].human_accuracy <= 1.0
    assert rows[0].human_kappa == agreement["kappa"]


def test_seed_warmup_by_sft_on_the_chosen_responses(tiny_model_dir, tmp_path):
    seed_file = PROJECT_ROOT / "data" / "seed_example.jsonl"
    run = Run.create(tmp_path / "seeded-sft", tiny_config(tiny_model_dir, "iterations=1", f"human.seed_set={seed_file}",
                                                           "human.seed_warmup=sft", "judge.kind=program",
                                                           "judge.program=selfplay.program_judges:length_bounds"))
    run_loop(run, log=lambda _: None)
    warmup = json.loads((run.seed_policy / "train.json").read_text())
    assert warmup["algo"] == "seed-sft" and warmup["sft"]["examples"] == 30 and warmup["steps"] >= 1
    before, after = load_file(tiny_model_dir / "model.safetensors"), load_file(run.seed_policy / "merged" / "model.safetensors")
    assert any(not before[k].to(after[k].dtype).equal(after[k]) for k in before)
    # a program judge scores the seed pairs too: agreement is measured whatever the judge kind
    assert json.loads((run.paths(1).dir / "seed_agreement.json").read_text())["n"] >= 1


def test_seed_warmup_needs_a_seed_set():
    with pytest.raises(ConfigError, match="seed_warmup=sft needs human.seed_set"):
        load_config(None, ["human.seed_warmup=sft"])


def test_tensorboard_gets_trainer_and_iteration_metrics(tiny_model_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = Run.create(tmp_path / "tb", tiny_config(tiny_model_dir, "iterations=1", "logging.report_to=tensorboard"))
    run_loop(run, log=lambda _: None)

    def scalars(folder):
        events = EventAccumulator(str(folder))
        events.Reload()
        return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}

    [trainer_logs] = {p.parent for p in (run.paths(1).policy / "logs").rglob("events.out.tfevents.*")}
    assert len(scalars(trainer_logs)["train/loss"]) >= 1  # TRL's per-step DPO loss
    ours = scalars(run.root / "tensorboard")
    row = json.loads((run.root / "summary.jsonl").read_text().splitlines()[0])
    assert ours["selfplay/pairs"] == [row["pairs"]] and ours["selfplay/mean_score"] == [pytest.approx(row["mean_score"])]
    assert "selfplay/seconds/train" in ours


def wandb_history(run_file: Path) -> list[dict]:
    """The logged rows of a W&B offline run file. wandb ships no public reader for it; the file is a LevelDB
    log (a 7-byte file header, then 32 KiB blocks of chunks, each with a 7-byte header: crc, length, type)
    of wandb's Record protobufs."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, block, pos, chunks, rows = run_file.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if kind == 0:
            break
        chunks += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL, or LAST of FIRST/MIDDLE/LAST
            record = Record()
            record.ParseFromString(chunks)
            chunks = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
    return rows


def test_wandb_offline_gets_trainer_and_iteration_metrics(tiny_model_dir, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")  # local files only: no account, no network
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = Run.create(tmp_path / "wb", tiny_config(tiny_model_dir, "iterations=2", "logging.report_to=wandb"))
    run_loop(run, log=lambda _: None)

    rows = [json.loads(line) for line in (run.root / "summary.jsonl").read_text().splitlines()]
    # One offline segment per iteration, all with the same run id, so `wandb sync` makes them one run.
    segments = sorted((run.root / "wandb").rglob("offline-run-*/run-*.wandb"))
    assert len({f.name for f in segments}) == 1
    ours = [row for f in segments for row in wandb_history(f)]
    assert [r["iteration"] for r in ours] == [1, 2]
    assert [r["selfplay/pairs"] for r in ours] == [r["pairs"] for r in rows]
    assert ours[0]["selfplay/seconds/train"] == pytest.approx(rows[0]["seconds"]["train"])
    for k in (1, 2):  # TRL's per-step DPO loss through the trainer's report_to, in that iteration's folder
        [trainer] = (run.paths(k).policy / "logs").rglob("offline-run-*/run-*.wandb")
        assert any("train/loss" in r for r in wandb_history(trainer))


def test_cli_run_ends_with_before_and_after_on_held_out_prompts(tiny_model_dir, tmp_path):
    """`selfplay run` on the default config (the verifiable recipe, eval.after_run): the run's output ends by
    evaluating iteration 0 against the last iteration on the held-out set, in one line with the interval."""
    from typer.testing import CliRunner

    from selfplay.cli import app

    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text("".join(json.dumps(line) + "\n" for line in [
        {"key": 1, "prompt": "Describe rain in lowercase only.", "instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]},
        {"key": 2, "prompt": "Say hello without commas.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
    ]))
    sets = [f"model={tiny_model_dir}", "iterations=1", "prompts.per_iteration=3", "generation.backend=transformers",
            "generation.n=2", "generation.max_tokens=12", "train.max_length=96", "train.min_pairs=1",
            f"eval.ifeval={heldout}", "eval.ifeval_independent=null", "eval.max_tokens=8"]
    result = CliRunner().invoke(app, ["run", "--name", "story", *[arg for s in sets for arg in ("--set", s)]])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("run: ") and "judge program, train dpo" in lines[0]
    matches = [line for line in lines if line.startswith("held-out (")]
    assert len(matches) == 1, result.output
    before_after = matches[0]
    assert before_after.startswith("held-out (heldout.jsonl, 2 prompts), prompt-level strict: ")
    assert "at iteration 0 -> " in before_after and "at iteration 1, " in before_after
    assert before_after.endswith(("improved", "worse", "no measurable change"))
    assert lines.index(before_after) > next(i for i, line in enumerate(lines) if line.startswith("records: "))
