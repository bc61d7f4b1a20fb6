"""Served = trained: `dtype: auto` keeps a trained fp32 policy in fp32 on bf16 hardware, the manifest's check
measures how much of an update rounding loses, and a trained update reaches the served outputs."""

import json

import pytest
import torch
from safetensors.torch import save_file

from selfplay import serving
from selfplay.config import GenerationConfig, TrainConfig
from selfplay.serving import check_serving, served_dtype


def checkpoint(folder, tensors, dtype_name):
    folder.mkdir()
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"dtype": dtype_name}))
    return folder


@pytest.fixture
def bf16_hardware(monkeypatch):
    monkeypatch.setattr(serving, "bf16_is_fast", lambda: True)


def test_auto_serves_a_checkpoint_at_its_own_precision(tmp_path, bf16_hardware, monkeypatch):
    fp32 = checkpoint(tmp_path / "fp32", {"w": torch.zeros(2)}, "float32")
    bf16 = checkpoint(tmp_path / "bf16", {"w": torch.zeros(2, dtype=torch.bfloat16)}, "bfloat16")
    assert served_dtype("auto", fp32) == "float32"  # a trained policy: rounding it would undo training
    assert served_dtype("auto", bf16) == "bfloat16"  # nothing to lose, and bf16 is fast here
    assert served_dtype("bfloat16", fp32) == "bfloat16"  # an explicit choice stands (and the check says what it costs)
    monkeypatch.setattr(serving, "bf16_is_fast", lambda: False)
    assert served_dtype("auto", bf16) == "float32"


def test_check_measures_the_update_lost_to_rounding(tmp_path):
    base = torch.full((64,), 0.05)
    start = checkpoint(tmp_path / "start", {"w": base, "frozen": torch.ones(3)}, "float32")
    # An update of 1e-5 per weight, far below bf16's rounding step at 0.05 (2.4e-4): bf16 serving erases it.
    trained = checkpoint(tmp_path / "trained", {"w": base + 1e-5, "frozen": torch.ones(3)}, "float32")
    lossless = check_serving(trained, start, "float32")
    assert lossless.changed_tensors == 1 and lossless.rounding_error == 0.0 and lossless.warning is None
    assert lossless.update_norm == pytest.approx(8e-5, rel=1e-2)  # sqrt(64) * 1e-5
    rounded = check_serving(trained, start, "bfloat16")
    # bf16(0.05 + 1e-5) is bf16(0.05): the error is the distance to that value, over the update's norm.
    expected = (base + 1e-5 - (base + 1e-5).to(torch.bfloat16).float()).norm() / (8e-5)
    assert rounded.rounding_error == pytest.approx(expected.item(), rel=1e-3)
    assert rounded.rounding_error > 1 and "generation.dtype=float32" in rounded.warning


def test_no_update_no_error(tmp_path):
    same = checkpoint(tmp_path / "m", {"w": torch.ones(2)}, "float32")
    for start in (None, same):
        check = check_serving(same, start, "bfloat16")
        assert check.changed_tensors == 0 and check.rounding_error is None and check.warning is None


@pytest.mark.slow
def test_a_small_trained_update_is_what_the_engine_serves(tiny_model_dir, tmp_path, bf16_hardware, one_thread):
    """DPO at a small learning rate moves the tiny model by less than bf16's rounding step; on bf16 hardware
    the served policy must still give the trainer's own log-probabilities, not the untrained model's."""
    from transformers import AutoModelForCausalLM

    from selfplay.generation import open_generator
    from selfplay.records import Pair, TrainInputs
    from selfplay.train.dpo import DPOTrainer

    pairs = [Pair(id=f"p{i}", prompt_id=f"q{i}", prompt=f"Say something about {topic}.", chosen=f"{topic} is good.",
                  rejected=f"No {topic}.", chosen_id=f"q{i}/g0", rejected_id=f"q{i}/g1", chosen_score=5.0,
                  rejected_score=1.0, margin=4.0, judge="program")
             for i, topic in enumerate(["rain", "tea", "maps", "salt"])]
    cfg = TrainConfig(learning_rate=2e-5, batch_size=2, max_length=64, save_steps=0, precision="fp32")
    result = DPOTrainer(cfg, seed=0).train(TrainInputs(pairs=pairs), tiny_model_dir, tmp_path / "policy")
    trained = tmp_path / "policy" / "merged"
    check = check_serving(trained, tiny_model_dir, served_dtype("auto", trained))
    assert check.changed_tensors > 0 and check.served_dtype == "float32" and check.rounding_error == 0.0
    # The same update served in bf16 would be mostly rounding: what the check exists to catch.
    assert check_serving(trained, tiny_model_dir, "bfloat16").rounding_error > 0.5

    prompts_ids: list | None = None
    vocab = list(range(0, 2000, 7))
    served = {}
    for name, model_dir in (("trained", trained), ("untrained", tiny_model_dir)):
        with open_generator(GenerationConfig(backend="transformers", dtype="auto"), model_dir, seed=0) as gen:
            if prompts_ids is None:
                prompts_ids = [gen.tokenizer(p.prompt)["input_ids"] for p in pairs]
            served[name] = gen.next_token_logprobs(prompts_ids, vocab)
    own = AutoModelForCausalLM.from_pretrained(result.policy, dtype=torch.float32).eval()
    with torch.no_grad():
        trainer_logprobs = [torch.log_softmax(own(torch.tensor([ids])).logits[0, -1].float(), -1) for ids in prompts_ids]

    def gap(a, b):
        return max(abs(x[t] - y[t]) for x, y in zip(a, b) for t in vocab)

    as_trainer = max(abs(row[t] - lp[t].item()) for row, lp in zip(served["trained"], trainer_logprobs) for t in vocab)
    from_untrained = gap(served["trained"], served["untrained"])
    assert from_untrained > 1e-4, "the served policy answers as the untrained model does: the update was lost"
    assert as_trainer < from_untrained / 20, (as_trainer, from_untrained)
