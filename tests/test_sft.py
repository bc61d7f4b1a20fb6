"""Rejection-sampling fine-tuning and ReST: skipped steps never fine-tune on nothing; on the tiny local model
the loss is on response tokens only, parameters change, each Improve step starts from the last one's policy,
and every record is written."""

import json
from pathlib import Path

import pytest

from selfplay.config import TrainConfig
from selfplay.filtering import SFTExample
from selfplay.records import FilterStats, Judgement, TrainInputs, TrainResult, read_records
from selfplay.train.sft import ReSTTrainer, RejectionSFTTrainer, too_few

from conftest import make_generation, make_prompt


def judgement(gen_id: str, score: float | None) -> Judgement:
    return Judgement(id=f"{gen_id}/j", prompt_id=gen_id.split("/")[0], generation_ids=[gen_id], judge="program",
                     method="program", raw=["..."], sample_scores=[score], score=score,
                     status="ok" if score is not None else "error")


def grown(table: dict[str, list[tuple[str, float | None]]]):
    prompts = [make_prompt(pid, f"Question {pid}?") for pid in table]
    gens = [make_generation(pid, j, text) for pid, rows in table.items() for j, (text, _) in enumerate(rows)]
    js = [judgement(f"{pid}/g{j}", s) for pid, rows in table.items() for j, (_, s) in enumerate(rows)]
    return prompts, gens, js


LOW = {"a": [("meh", 1.0), ("bad", None), ("", 5.0)], "b": [("hmm", 2.0)]}


def test_threshold_that_keeps_nothing_is_a_recorded_skip(tmp_path):
    cfg = TrainConfig(algo="rejection-sft", sft={"threshold": 4.0})
    policy = tmp_path / "never-loaded"  # a fine-tune would fail to load it: the skip must come first
    result = RejectionSFTTrainer(cfg, seed=0).train(TrainInputs(*grown(LOW)), policy, tmp_path / "out")
    assert result.skipped.startswith("0 of 4 responses kept (score >= 4 and top 1 per prompt; 2 below the threshold, "
                                     "1 without a score, 1 empty) < train.min_examples=1")
    assert (result.algo, result.policy, result.steps, result.sft.examples, result.dpo) == ("rejection-sft", str(policy), 0, 0, None)
    assert result.sft.filtering.per_prompt["a"].unscored == 1 and result.sft.filtering.per_prompt["a"].empty == 1
    assert read_records(tmp_path / "out" / "examples.jsonl", SFTExample) == []
    assert not (tmp_path / "out" / "merged").exists()
    TrainResult.model_validate_json(result.model_dump_json())  # round-trips through train.json


def test_too_few_kept_for_min_examples(tmp_path):
    cfg = TrainConfig(algo="rejection-sft", min_examples=5)
    result = RejectionSFTTrainer(cfg, seed=0).train(TrainInputs(*grown(LOW)), tmp_path / "p", tmp_path / "out")
    assert result.skipped and "2 of 4 responses kept (top 1 per prompt;" in result.skipped and "train.min_examples=5" in result.skipped


def test_rest_with_nothing_scored_skips_every_step(tmp_path):
    table = {"a": [("x", None), ("y", None)]}
    cfg = TrainConfig(algo="rest", rest={"thresholds": [0.5, 0.9]})
    result = ReSTTrainer(cfg, seed=0).train(TrainInputs(*grown(table)), tmp_path / "p", tmp_path / "out")
    assert [s.skipped for s in result.sft.improve] == ["no response of the Grow step has a score; nothing to filter, policy carried over"] * 2
    assert result.skipped.startswith("every Improve step was skipped") and result.policy == str(tmp_path / "p")
    assert all((tmp_path / "out" / f"improve_{i}" / "step.json").exists() for i in (1, 2))


def test_too_few_message_without_a_threshold():
    stats = FilterStats(threshold=None, top_k=None, prompts=0, prompts_kept=0, responses=0, unscored=0, empty=0, below=0,
                        duplicate=0, over_k=0, kept=0, kept_fraction=None, mean_kept_score=None, per_prompt={})
    assert too_few(stats, 1).startswith("0 of 0 responses kept (no filter;")


# --- on the tiny model ---------------------------------------------------------------------------------------


def tiny_cfg(**extra) -> TrainConfig:
    return TrainConfig(**{"batch_size": 2, "max_length": 96, "learning_rate": 1e-3, "epochs": 1.0, "lora": {"r": 4},
                          "precision": "fp32", **extra})


@pytest.fixture(scope="module")
def grow(tiny_model_dir):
    """The Grow step: the tiny model samples 3 responses to 4 prompts; a program judge scores them, and one
    response's judgement is a scorer failure."""
    from selfplay.config import GenerationConfig, JudgeConfig
    from selfplay.generation import open_generator
    from selfplay.judges import make_judge

    prompts = [make_prompt(f"p{i}", t) for i, t in enumerate(["Say hi.", "Name a fruit.", "Count to three.", "Describe rain."])]
    cfg = GenerationConfig(backend="transformers", n=3, max_tokens=10, dtype="float32")
    with open_generator(cfg, tiny_model_dir, seed=0) as gen:
        gens = gen.generate(prompts, n=3)
    judge = make_judge(JudgeConfig(kind="program", program="selfplay.program_judges:length_bounds",
                                   program_args={"min_words": 50, "max_words": 100}), None)
    js = judge.judge(prompts, gens)
    js[0] = js[0].model_copy(update={"score": None, "status": "error", "raw": ["raised RuntimeError: flaky scorer"]})
    return prompts, gens, js


def changed_tensors(before_dir: Path, after_dir: Path) -> list[str]:
    from safetensors.torch import load_file

    before, after = load_file(before_dir / "model.safetensors"), load_file(after_dir / "model.safetensors")
    return [k for k in before if not before[k].to(after[k].dtype).equal(after[k])]


@pytest.mark.slow
def test_loss_is_on_response_tokens_only(tiny_model_dir, tmp_path):
    from selfplay.train.sft import SFTTrainerRunner

    example = SFTExample(id="p/g0/sft", prompt_id="p", prompt="What is two plus two?", completion="Four, of course.",
                         generation_id="p/g0", score=1.0, judge="program")
    trainer = SFTTrainerRunner(tiny_cfg(), seed=0).trainer([example], tiny_model_dir, tmp_path)
    row = trainer.train_dataset[0]
    tok = trainer.processing_class
    trained = [t for t, label in zip(row["input_ids"], row["labels"]) if label != -100]
    assert tok.decode(trained).startswith("Four, of course.<|im_end|>")
    prompt_part = tok.decode(row["input_ids"][:len(row["input_ids"]) - len(trained)])
    assert "What is two plus two?" in prompt_part and prompt_part.rstrip().endswith("<|im_start|>assistant")


@pytest.mark.slow
def test_responses_beyond_max_length_are_a_recorded_skip(tiny_model_dir, tmp_path):
    from selfplay.train.sft import SFTTrainerRunner

    long = SFTExample(id="p/g0/sft", prompt_id="p", prompt="Please read this. " * 40, completion="Done.",
                      generation_id="p/g0", score=1.0, judge="program")
    result = SFTTrainerRunner(tiny_cfg(max_length=32), seed=0).train([long], tiny_model_dir, tmp_path / "out")
    assert result.skipped.startswith("every one of the 1 examples has its response beyond train.max_length=32 tokens")
    assert result.policy == str(tiny_model_dir) and not (tmp_path / "out" / "merged").exists()


@pytest.mark.slow
def test_rejection_sft_end_to_end(grow, tiny_model_dir, tmp_path):
    prompts, gens, js = grow
    out = tmp_path / "policy"
    result = RejectionSFTTrainer(tiny_cfg(algo="rejection-sft", sft={"top_k": 2}), seed=1).train(TrainInputs(prompts, gens, js), tiny_model_dir, out)
    assert result.skipped is None and result.algo == "rejection-sft" and result.steps >= 1 and result.loss_first is not None
    examples = read_records(out / "examples.jsonl", SFTExample)
    f = result.sft.filtering
    assert result.sft.examples == len(examples) == f.kept and f.unscored >= 1
    assert f.per_prompt["p0"].unscored == 1 and all(c.kept <= 2 for c in f.per_prompt.values())
    assert sum(c.responses for c in f.per_prompt.values()) == len(gens) == 12
    assert gens[0].id not in {e.generation_id for e in examples}  # the failed score is excluded
    assert result.policy == str(out / "merged") and (out / "adapter" / "adapter_model.safetensors").exists()
    assert not list(out.rglob("*.bin"))
    assert changed_tensors(tiny_model_dir, out / "merged"), "rejection-sft left every weight unchanged"
    json.loads(result.model_dump_json())


@pytest.mark.slow
def test_rest_end_to_end(grow, tiny_model_dir, tmp_path):
    prompts, gens, js = grow
    scores = sorted({j.score for j in js if j.score is not None})
    assert len(scores) >= 2, "the Grow step needs two distinct scores for this test"
    # three Improve steps: everything scored, the best only, then above the best (keeps nothing: skipped)
    cfg = tiny_cfg(algo="rest", rest={"threshold_mode": "score", "thresholds": [scores[0], scores[-1], scores[-1] + 1.0]})
    out = tmp_path / "policy"
    result = ReSTTrainer(cfg, seed=2).train(TrainInputs(prompts, gens, js), tiny_model_dir, out)
    s1, s2, s3 = result.sft.improve
    assert [s.step for s in result.sft.improve] == [1, 2, 3]
    assert s1.skipped is None and s2.skipped is None and s3.skipped.startswith("0 of 12 responses kept (score >= ")
    assert s1.examples > s2.examples >= 1 and s3.examples == 0
    assert s1.filtering.kept_fraction > s2.filtering.kept_fraction > s3.filtering.kept_fraction == 0
    assert s1.loss_first is not None and s2.loss_last is not None
    # step 2 fine-tuned step 1's policy; the skipped step 3 carried step 2's over
    assert json.loads((out / "improve_2" / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == s1.policy
    assert s3.policy == s2.policy == result.policy == str(out / "improve_2" / "merged")
    assert not Path(s1.policy).exists()  # the intermediate merged copy is dropped; its adapter stays
    assert (out / "improve_1" / "adapter" / "adapter_model.safetensors").exists()
    assert changed_tensors(tiny_model_dir, Path(result.policy))
    for i, step in enumerate(result.sft.improve, start=1):
        assert read_records(out / f"improve_{i}" / "examples.jsonl", SFTExample).__len__() == step.examples
        assert json.loads((out / f"improve_{i}" / "step.json").read_text())["threshold"] == step.threshold
    assert result.steps == s1.steps + s2.steps and result.sft.examples == s2.examples and result.loss_last == s2.loss_last

    # resumed after a crash: finished steps are reused, not retrained (step 1's merged copy is not needed)
    (out / "improve_3" / "step.json").unlink()
    again = ReSTTrainer(cfg, seed=2).train(TrainInputs(prompts, gens, js), tiny_model_dir, out)
    assert again.sft.improve[:2] == result.sft.improve[:2] and again.sft.improve[2].skipped == s3.skipped
    assert again.policy == result.policy and again.steps == result.steps
