"""What every trainer starts from: the LoRA config (all layers or the top ones) and the checkpoint options."""

import pytest

from selfplay.config import TrainConfig
from selfplay.train.setup import checkpoint_step, checkpointing_args, last_checkpoint, lora_config


@pytest.mark.slow
def test_lora_on_the_top_layers_only(tiny_model_dir):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    total = model.config.num_hidden_layers
    config = lora_config(TrainConfig(lora={"layers": 1}).lora, model)
    assert config.layers_to_transform == [total - 1] and "q_proj" in config.target_modules
    peft_model = get_peft_model(model, config)
    trained = {name.split(".layers.")[1].split(".")[0] for name, p in peft_model.named_parameters() if p.requires_grad}
    assert trained == {str(total - 1)}  # backward stops at the lowest trained layer
    assert lora_config(TrainConfig().lora, AutoModelForCausalLM.from_pretrained(tiny_model_dir)).target_modules == "all-linear"


def test_checkpointing_args():
    assert checkpointing_args(TrainConfig(save_steps=0)) == {"gradient_checkpointing": False, "save_strategy": "no"}
    args = checkpointing_args(TrainConfig(save_steps=5, gradient_checkpointing=True))
    assert args["save_steps"] == 5 and args["save_total_limit"] == 1
    assert args["gradient_checkpointing_kwargs"] == {"use_reentrant": False}
    assert checkpoint_step("/x/checkpoints/checkpoint-40") == 40 and checkpoint_step(None) is None


def test_last_checkpoint_skips_checkpoints_a_kill_left_half_written(tmp_path):
    assert last_checkpoint(tmp_path / "none") is None
    for step, state in ((1, '{"global_step": 1}'), (2, None), (3, '{"global_st'), (10, '{"global_step": 10}')):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if state is not None:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")  # by step number, not by name
    (tmp_path / "checkpoint-10" / "trainer_state.json").unlink()  # killed while saving step 10
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-1")  # 3 is half-written JSON, 2 has none
    (tmp_path / "checkpoint-1" / "trainer_state.json").unlink()
    assert last_checkpoint(tmp_path) is None
