"""QLoRA and the 8-bit optimiser (train.lora.quantize, train.optim): bitsandbytes runs on CUDA only, so on this
CPU machine the arguments handed to transformers, peft and bitsandbytes are checked as built, the preflight
refusal is checked as a user meets it, and the unquantized merge of a saved adapter runs for real."""

import sys
import types

import pytest
import torch
from safetensors.torch import load_file

from selfplay.config import ConfigError, TrainConfig, load_config
from selfplay.train.dpo import DPOTrainer
from selfplay.train.setup import (
    check_bitsandbytes, is_quantized, kbit_training_args, load_causal_lm, make_optimizer, optim_args, policy_load_args,
    save_policy,
)


def test_quantize_and_optim_are_validated():
    assert load_config(None).train.lora.quantize == "none" and load_config(None).train.optim == "adamw"
    cfg = load_config(None, ["train.lora.quantize=4bit", "train.optim=adamw_8bit"])
    assert cfg.train.lora.quantize == "4bit" and cfg.train.optim == "adamw_8bit"
    with pytest.raises(ConfigError, match=r"^config: train\.lora\.quantize=8bit trains a LoRA adapter on frozen quantized "
                                          r"weights \(QLoRA\); set train\.lora\.enabled=true"):
        load_config(None, ["train.lora.quantize=8bit", "train.lora.enabled=false"])
    with pytest.raises(ConfigError, match=r"train\.optim=adamw_8bit: not supported with train\.algo=rloo"):
        load_config(None, ["train.algo=rloo", "train.optim=adamw_8bit"])
    with pytest.raises(ConfigError, match=r"train\.lora\.quantize=4bit: not supported with train\.algo=grpo"):
        load_config(None, ["train.algo=grpo", "train.lora.quantize=4bit"])
    with pytest.raises(ConfigError, match=r"train\.lora\.quantize: Input should be 'none', '4bit' or '8bit'"):
        load_config(None, ["train.lora.quantize=2bit"])


def test_without_cuda_bitsandbytes_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    check_bitsandbytes(TrainConfig())  # nothing asked for: nothing checked
    for sets, what in [(["train.lora.quantize=4bit"], "train.lora.quantize=4bit"),
                       (["train.optim=adamw_8bit"], "train.optim=adamw_8bit"),
                       (["train.lora.quantize=8bit", "train.optim=adamw_8bit"], "train.lora.quantize=8bit and train.optim=adamw_8bit")]:
        with pytest.raises(ConfigError, match=rf"^{what}: bitsandbytes' k-bit weights and 8-bit optimiser need a CUDA GPU"):
            check_bitsandbytes(load_config(None, sets).train)
    # With CUDA but without the package, the line says what to install.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"^train\.optim=adamw_8bit: needs the bitsandbytes package: pip install bitsandbytes$"):
        check_bitsandbytes(load_config(None, ["train.optim=adamw_8bit"]).train)


def test_the_bitsandbytes_arguments_as_built(monkeypatch, tmp_path):
    lora = load_config(None).train.lora
    assert policy_load_args(lora) == {"dtype": torch.float32, "use_safetensors": True}
    four = policy_load_args(lora.model_copy(update={"quantize": "4bit"}))
    q = four["quantization_config"]
    # QLoRA's recipe: NF4 weights, double quantization, bf16 compute; the whole model on this process's GPU.
    assert (q.load_in_4bit, q.load_in_8bit, q.bnb_4bit_quant_type, q.bnb_4bit_use_double_quant) == (True, False, "nf4", True)
    assert q.bnb_4bit_compute_dtype == torch.bfloat16 and four["device_map"] == {"": 0} and four["dtype"] == torch.float32
    monkeypatch.setenv("LOCAL_RANK", "3")  # under accelerate launch: the process's own GPU
    eight = policy_load_args(lora.model_copy(update={"quantize": "8bit"}))
    assert eight["quantization_config"].load_in_8bit and not eight["quantization_config"].load_in_4bit
    assert eight["device_map"] == {"": 3}
    monkeypatch.delenv("LOCAL_RANK")  # TrainingArguments below would take it for a distributed launch
    # peft's preparation: activation checkpointing only where train.gradient_checkpointing asks.
    assert kbit_training_args(TrainConfig()) == {"use_gradient_checkpointing": False}
    assert kbit_training_args(TrainConfig(gradient_checkpointing=True)) == {
        "use_gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False}}
    # The 8-bit optimiser: TrainingArguments' adamw_bnb_8bit for the TRL trainers, nothing added for adamw.
    assert optim_args(TrainConfig()) == {} and optim_args(TrainConfig(optim="adamw_8bit")) == {"optim": "adamw_bnb_8bit"}
    dpo = DPOTrainer(TrainConfig(algo="dpo", optim="adamw_8bit"), seed=0).trl_config(tmp_path, use_bf16=False)
    assert dpo.optim == "adamw_bnb_8bit"


def test_a_quantized_load_goes_through_peft_prepare_model_for_kbit_training(monkeypatch, tmp_path):
    import peft
    import transformers

    loaded, prepared = {}, {}

    class Fake:
        is_loaded_in_4bit = True

    def from_pretrained(path, **kwargs):
        loaded.update(path=path, **kwargs)
        return Fake()

    def prepare(model, **kwargs):
        prepared.update(model=model, **kwargs)
        return model

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    monkeypatch.setattr(peft, "prepare_model_for_kbit_training", prepare)
    cfg = TrainConfig(lora={"quantize": "4bit"})
    model = load_causal_lm(tmp_path, cfg)
    assert loaded["path"] == tmp_path and loaded["quantization_config"].load_in_4bit and loaded["device_map"] == {"": 0}
    assert prepared == {"model": model, "use_gradient_checkpointing": False} and is_quantized(model)
    prepared.clear()
    loaded.clear()
    load_causal_lm(tmp_path, TrainConfig())  # none: fp32, no quantization and no preparation
    assert prepared == {} and loaded == {"path": tmp_path, "dtype": torch.float32, "use_safetensors": True}


def test_make_optimizer_builds_bitsandbytes_adamw8bit(monkeypatch):
    made = {}

    class AdamW8bit:
        def __init__(self, params, **kwargs):
            made.update(params=params, **kwargs)

    fake = types.ModuleType("bitsandbytes")
    fake.optim = types.SimpleNamespace(AdamW8bit=AdamW8bit)
    monkeypatch.setitem(sys.modules, "bitsandbytes", fake)
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert isinstance(make_optimizer(params, TrainConfig(optim="adamw_8bit", learning_rate=1e-4)), AdamW8bit)
    assert made == {"params": params, "lr": 1e-4, "weight_decay": 0.0}
    plain = make_optimizer(params, TrainConfig(learning_rate=1e-4))
    assert type(plain) is torch.optim.AdamW and plain.defaults["lr"] == 1e-4 and plain.defaults["weight_decay"] == 0.0


@pytest.mark.slow
def test_a_quantized_policy_is_merged_on_its_unquantized_base(tiny_model_dir, tmp_path, one_thread):
    # The k-bit branch of save_policy, on CPU: a model that says it is quantized has its saved adapter merged into
    # the fp32 base its adapter config names, never into its own weights. Here the weights are fp32, so that merge
    # must equal the direct one exactly.
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfplay.train.setup import lora_config

    cfg = TrainConfig(lora={"r": 4})
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), lora_config(cfg.lora, None))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)  # an update to merge (B starts at 0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    direct_dir, _ = save_policy(model, tokenizer, tmp_path / "direct", adapter=True)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), lora_config(cfg.lora, None))
    model.load_adapter(tmp_path / "direct" / "adapter", adapter_name="default", is_trainable=True)
    model.is_loaded_in_4bit = True  # what a bitsandbytes model says (peft reads the same attribute)
    assert is_quantized(model)
    merged_dir, adapter_dir = save_policy(model, tokenizer, tmp_path / "kbit", adapter=True)
    assert adapter_dir == tmp_path / "kbit" / "adapter" and (adapter_dir / "adapter_model.safetensors").exists()
    direct, merged = load_file(direct_dir / "model.safetensors"), load_file(merged_dir / "model.safetensors")
    base = load_file(tiny_model_dir / "model.safetensors")
    assert direct.keys() == merged.keys() and all(merged[k].dtype == torch.float32 for k in merged)
    assert all(torch.equal(direct[k], merged[k]) for k in direct)
    assert any(not torch.equal(base[k], merged[k]) for k in base if k in merged)  # the update is in it
