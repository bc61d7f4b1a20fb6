"""Scale-out (selfplay/scale.py): generation and judging sharded over Ray actors must write exactly the records
of a single-process run; DPO data-parallel over 2 CPU processes under accelerate must follow the loss curve of
one process with the same global batch."""

import json
import shutil

import pytest

from selfplay.config import ConfigError, load_config
from selfplay.loop import reward_model_result, run_loop, run_stage
from selfplay.rundir import Run
from selfplay.records import TrainResult, read_record
from selfplay.scale import accelerate_command, check_launcher, shard_bounds
from tests.test_loop_tiny import tiny_config


def test_shard_bounds_are_contiguous_aligned_and_cover_everything():
    assert shard_bounds(10, 2) == [(0, 5), (5, 10)]
    assert shard_bounds(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert shard_bounds(15, 2, align=2) == [(0, 8), (8, 15)]  # starts on batch boundaries; the last batch is short
    assert shard_bounds(5, 4, align=2) == [(0, 2), (2, 4), (4, 5)]  # fewer batches than shards: no empty shard
    assert shard_bounds(0, 3) == []
    assert shard_bounds(3, 2, align=8) == [(0, 3)]


def test_ppo_needs_a_rollout_per_process_and_a_missing_config_file_is_named():
    with pytest.raises(ConfigError, match=r"rl\.rollout_prompts \(2\) must be at least launch\.num_processes \(4\)"):
        check_launcher(load_config(None, ["train.algo=ppo", "launch.launcher=accelerate", "launch.num_processes=4",
                                          "train.rl.rollout_prompts=2", "train.ppo.minibatch=2"]))
    check_launcher(load_config(None, ["train.algo=ppo", "launch.launcher=accelerate", "launch.num_processes=2"]))
    with pytest.raises(ConfigError, match="ppo runs plain data parallel, not DEEPSPEED"):
        check_launcher(load_config(None, ["train.algo=ppo", "launch.launcher=accelerate",
                                          "launch.accelerate_config=configs/accelerate/deepspeed-zero3.yaml"]))
    with pytest.raises(ConfigError, match="no such file nope.yaml"):
        check_launcher(load_config(None, ["launch.launcher=accelerate", "launch.accelerate_config=nope.yaml"]))


def test_accelerate_command_uses_the_config_file_when_given(tmp_path):
    cfg = load_config(None, ["launch.launcher=accelerate", "launch.num_processes=4",
                             "launch.accelerate_config=configs/accelerate/deepspeed-zero2.yaml"]).launch
    cmd = accelerate_command(cfg, tmp_path / "r", 3)
    assert cmd[cmd.index("--config_file") + 1] == "configs/accelerate/deepspeed-zero2.yaml"
    assert cmd[cmd.index("--num_processes") + 1] == "4" and "--multi_gpu" not in cmd
    assert cmd[-3:] == ["selfplay.launched", str(tmp_path / "r"), "3"]


ITERATION_FILES = ("prompts.jsonl", "generations.jsonl", "judgements.jsonl", "pairs.jsonl")


@pytest.mark.slow
def test_ray_sharded_iteration_writes_the_records_of_an_unsharded_one(tiny_model_dir, tmp_path):
    ray = pytest.importorskip("ray")
    # 5 prompts x 3 responses, judged 2 at a time: both the per-prompt sampling and the judge's batches are cut.
    extra = ["iterations=1", "prompts.per_iteration=5", "generation.batch_size=2", "train.save_steps=0"]
    one = Run.create(tmp_path / "one", tiny_config(tiny_model_dir, *extra))
    run_loop(one, log=lambda _: None)
    sharded = Run.create(tmp_path / "two", tiny_config(tiny_model_dir, *extra, "generation.workers=2"))
    try:
        run_loop(sharded, log=lambda _: None)
    finally:
        ray.shutdown()  # the loop keeps Ray up for the next iteration; the rest of the suite does not need it
    for name in ITERATION_FILES:
        assert (sharded.paths(1).dir / name).read_bytes() == (one.paths(1).dir / name).read_bytes(), name
    assert len((one.paths(1).judgements).read_text().splitlines()) == 15


def tensorboard_losses(folder) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    [logs] = {p.parent for p in folder.rglob("events.out.tfevents.*")}
    events = EventAccumulator(str(logs))
    events.Reload()
    return [e.value for e in events.Scalars("train/loss")]


@pytest.mark.slow
def test_dpo_on_two_cpu_processes_follows_one_process_with_the_same_global_batch(tiny_model_dir, tmp_path):
    pytest.importorskip("tensorboard")
    # No dropout: the two processes would draw different masks than the one process does. fp32: bf16 autocast (what
    # precision=auto picks on a CPU with AVX512-BF16) rounds differently when the batch is split, by ~1e-4 here.
    extra = ["iterations=1", "prompts.per_iteration=8", "train.lora.dropout=0.0", "train.save_steps=0", "train.epochs=2",
             "logging.report_to=tensorboard", "train.precision=fp32"]
    one = Run.create(tmp_path / "one", tiny_config(tiny_model_dir, *extra, "train.batch_size=4"))
    run_loop(one, log=lambda _: None)
    two = Run.create(tmp_path / "two", tiny_config(tiny_model_dir, *extra, "train.batch_size=2", "launch.launcher=accelerate",
                                                   "launch.num_processes=2"))
    two.paths(1).dir.mkdir(parents=True, exist_ok=True)
    for name in ITERATION_FILES:  # the same pairs; only the train stage runs
        shutil.copyfile(one.paths(1).dir / name, two.paths(1).dir / name)
    info = run_stage(two, 1, "train")
    result = read_record(two.paths(1).train, TrainResult)

    expected = json.loads(one.paths(1).train.read_text())
    assert result.dpo.pairs == expected["dpo"]["pairs"] >= 4 and result.steps == expected["steps"] >= 2
    assert info.status == "done"
    single, parallel = tensorboard_losses(one.paths(1).policy / "logs"), tensorboard_losses(two.paths(1).policy / "logs")
    assert len(parallel) == len(single) == result.steps
    assert parallel == pytest.approx(single, abs=1e-4)  # measured: within 2e-7
    assert parallel[-1] < parallel[0]  # it learned: the same pairs twice
    assert (two.paths(1).policy / "merged" / "model.safetensors").exists()


@pytest.mark.slow
def test_reward_model_then_rloo_on_two_cpu_processes(tiny_model_dir, tmp_path):
    """The RLHF path under accelerate: the reward model trains data-parallel (its loss curve follows one process
    with the same global batch), rank 0 saves it before the other process loads it, then RLOO trains."""
    pytest.importorskip("tensorboard")
    extra = ["iterations=1", "prompts.per_iteration=8", "train.algo=rloo", "train.rl.steps=1", "train.rl.max_new_tokens=8",
             "train.rl.rollout_prompts=2", "train.rl.num_generations=2", "train.batch_size=2", "train.reward_model.epochs=2",
             "train.reward_model.heldout=0.0", "train.lora.dropout=0.0", "logging.report_to=tensorboard"]
    one = Run.create(tmp_path / "one", tiny_config(tiny_model_dir, *extra, "train.reward_model.batch_size=4"))
    run_loop(one, log=lambda _: None)
    two = Run.create(tmp_path / "two", tiny_config(tiny_model_dir, *extra, "train.reward_model.batch_size=2",
                                                   "launch.launcher=accelerate", "launch.num_processes=2"))
    two.paths(1).dir.mkdir(parents=True, exist_ok=True)
    for name in ITERATION_FILES:
        shutil.copyfile(one.paths(1).dir / name, two.paths(1).dir / name)
    run_stage(two, 1, "train")
    result = read_record(two.paths(1).train, TrainResult)

    rm_one = json.loads((one.paths(1).dir / "reward_model" / "reward_model.json").read_text())
    rm_two = reward_model_result(two, 1)
    assert rm_two is not None and rm_two.steps == rm_one["steps"] >= 2
    single = tensorboard_losses(one.paths(1).dir / "reward_model" / "logs")
    parallel = tensorboard_losses(two.paths(1).dir / "reward_model" / "logs")
    assert parallel == pytest.approx(single, abs=1e-4)
    assert result.algo == "rloo" and result.skipped is None and result.steps == 1
    assert (two.paths(1).policy / "merged" / "model.safetensors").exists()


@pytest.mark.slow
def test_ppo_on_two_cpu_processes_takes_the_steps_of_one_process(tiny_model_dir, tmp_path):
    """Our PPO data-parallel: each process rolls out half of every batch (per-prompt seeds, so the same responses
    as one process), and the summed statistics and gradients make the same PPO steps as one process."""
    extra = ["iterations=1", "prompts.per_iteration=8", "train.algo=ppo", "train.rl.steps=2", "train.rl.max_new_tokens=8",
             "train.rl.rollout_prompts=4", "train.ppo.minibatch=2", "train.ppo.epochs=2", "train.reward_model.heldout=0.0"]
    one = Run.create(tmp_path / "one", tiny_config(tiny_model_dir, *extra))
    run_loop(one, log=lambda _: None)
    # The same reward model (its data-parallel training is tested above), so the rewards are the same too.
    rm_dir = json.loads((one.paths(1).dir / "reward_model" / "reward_model.json").read_text())["model_dir"]
    two = Run.create(tmp_path / "two", tiny_config(tiny_model_dir, *extra, f"train.reward_model.path={rm_dir}",
                                                   "launch.launcher=accelerate", "launch.num_processes=2"))
    two.paths(1).dir.mkdir(parents=True, exist_ok=True)
    for name in ITERATION_FILES:
        shutil.copyfile(one.paths(1).dir / name, two.paths(1).dir / name)
    run_stage(two, 1, "train")
    result = read_record(two.paths(1).train, TrainResult)

    def stats(run):
        return [json.loads(line) for line in (run.paths(1).policy / "ppo_stats.jsonl").read_text().splitlines()]

    single, parallel = stats(one), stats(two)
    assert result.algo == "ppo" and result.skipped is None and result.steps == len(single) == len(parallel) == 2
    for a, b in zip(single, parallel):
        assert b["responses"] == a["responses"] == 4 and b["response_tokens"] == a["response_tokens"]
        for key in ("reward_mean", "kl", "policy_loss", "value_loss", "clip_frac", "approx_kl"):
            assert b[key] == pytest.approx(a[key], abs=1e-4), key
    assert single[1]["kl"] != 0.0  # the first step moved the policy, and both runs moved it the same way
    assert (two.paths(1).policy / "merged" / "model.safetensors").exists()
