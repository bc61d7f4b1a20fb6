"""Weights: safetensors or refusal. A model directory with pickle weight files is refused unless the user accepts
it explicitly, and an empty decoy `*.safetensors` beside a pickle is no checkpoint."""

import json

import pytest

from selfplay.models import ALLOW_PICKLE_ENV, ModelError, check_checkpoint, resolve_model
from selfplay.train.reward import RewardModel, RewardModelError


def model_dir(tmp_path, *files, architecture="LlamaForCausalLM"):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": [architecture], "model_type": "llama", "num_labels": 1}))
    (folder / "tokenizer.json").write_text("{}")
    for name in files:
        (folder / name).write_bytes(b"\x80\x04")  # a pickle's first bytes
    return folder


def test_a_decoy_safetensors_beside_a_pickle_is_refused(tmp_path):
    folder = model_dir(tmp_path, "decoy.safetensors", "pytorch_model.bin")
    with pytest.raises(ModelError, match="no model.safetensors .* other weight formats are refused"):
        resolve_model(str(folder))


@pytest.mark.parametrize("pickle", ["pytorch_model.bin", "weights.pt", "model.pth", "last.ckpt", "state.pkl"])
def test_pickle_weights_beside_safetensors_need_an_explicit_yes(tmp_path, monkeypatch, pickle):
    folder = model_dir(tmp_path, "model.safetensors", pickle)
    with pytest.raises(ModelError, match=rf"pickle weight files beside the safetensors \({pickle}\) can run code.*{ALLOW_PICKLE_ENV}=1"):
        check_checkpoint(folder)
    monkeypatch.setenv(ALLOW_PICKLE_ENV, "1")
    assert check_checkpoint(folder) == folder


def test_safetensors_alone_and_sharded_are_accepted(tmp_path):
    assert check_checkpoint(model_dir(tmp_path, "model.safetensors"))
    (tmp_path / "m" / "model.safetensors").rename(tmp_path / "m" / "model-00001-of-00001.safetensors")
    (tmp_path / "m" / "model.safetensors.index.json").write_text("{}")
    assert check_checkpoint(tmp_path / "m")


def test_a_reward_model_with_pickle_weights_is_refused(tmp_path):
    folder = model_dir(tmp_path, "model.safetensors", "pytorch_model.bin", architecture="LlamaForSequenceClassification")
    with pytest.raises(RewardModelError, match="pickle weight files beside the safetensors"):
        RewardModel.load(folder)
