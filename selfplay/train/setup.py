"""What every causal-LM trainer here starts from: the policy's tokenizer (with a pad token), its weights in
fp32 (autocast decides the compute precision), the LoRA config if any, and whether to use bf16."""

from __future__ import annotations

import configparser
import importlib.util
import json
import math
import netrc
import os
from pathlib import Path
from urllib.parse import urlsplit

from selfplay.config import ConfigError, LoggingConfig, LoRASection, TrainConfig
from selfplay.models import bf16_is_fast
from selfplay.policy import base_checkpoint, is_adapter, keep_adapter
from selfplay.records import is_main_process


def load_policy(policy: Path, cfg: TrainConfig):
    """(tokenizer, model, peft LoraConfig or None, use_bf16) for a trainer starting at `policy`.

    A full checkpoint loads with a new LoRA config. An adapter policy (train.lora.serve: the previous iteration kept
    its adapter) loads its base with the adapter trainable, so training goes on in the same adapter and no config is
    returned: TRL's DPO and KTO trainers then copy the loaded adapter as their frozen reference ("ref"), the previous
    policy, as the merged path's reference is.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(policy)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and bf16_is_fast())
    model = load_causal_lm(base_checkpoint(policy), cfg)
    peft_config = lora_config(cfg.lora, model) if cfg.lora.enabled else None
    if is_adapter(policy):
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(policy), is_trainable=cfg.lora.enabled)
        if cfg.lora.enabled:
            peft_config = None  # the loaded adapter trains on
        else:
            model = model.merge_and_unload()  # full fine-tuning from an adapter policy: from its merged weights
    return tokenizer, model, peft_config, use_bf16


def load_causal_lm(policy: Path, cfg: TrainConfig):
    """The policy's weights in fp32 (bf16 under a kept adapter on a GPU), or with train.lora.quantize its frozen base
    in k-bit on this process's GPU, prepared for adapter training by peft (norms in fp32, input gradients on,
    activation checkpointing as train.gradient_checkpointing says)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(policy, **policy_load_args(cfg.lora))
    if cfg.lora.quantize == "none":
        return model
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, **kbit_training_args(cfg))


def policy_load_args(lora: LoRASection) -> dict:
    """from_pretrained's arguments for the policy: fp32 safetensors; with quantize, a bitsandbytes config placing
    the whole model on this process's GPU (LOCAL_RANK under `accelerate launch`, as TRL places k-bit models).
    4bit is QLoRA's recipe (Dettmers et al. 2023): NF4 weights, double quantization, bf16 compute."""
    import torch

    # Where the adapter is kept (train.lora.serve) and bf16 is fast (a GPU), the frozen base loads in bf16: nothing is
    # merged into it, so its rounding cannot erase an update (the adapter's own weights stay fp32, peft's default).
    keep = lora.enabled and keep_adapter(lora.serve)
    dtype = torch.bfloat16 if keep and bf16_is_fast() else torch.float32
    args: dict[str, object] = {"dtype": dtype, "use_safetensors": True}
    if lora.quantize == "none":
        return args
    from transformers import BitsAndBytesConfig

    if lora.quantize == "4bit":
        quantization = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16
        )
    else:
        quantization = BitsAndBytesConfig(load_in_8bit=True)
    return {**args, "quantization_config": quantization, "device_map": {"": int(os.environ.get("LOCAL_RANK", "0"))}}


def kbit_training_args(cfg: TrainConfig) -> dict:
    """peft's prepare_model_for_kbit_training arguments: its activation checkpointing only where the config asks
    (peft turns it on by default), non-reentrant as the TRL trainers' (it works with frozen inputs)."""
    if not cfg.gradient_checkpointing:
        return {"use_gradient_checkpointing": False}
    return {"use_gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False}}


def optim_args(cfg: TrainConfig) -> dict:
    """TrainingArguments' optimiser for train.optim: nothing for adamw (transformers' default AdamW), bitsandbytes'
    8-bit AdamW for adamw_8bit (its name in transformers 5.19: docs/design.md, "TRL 1.16 and its formats")."""
    return {"optim": "adamw_bnb_8bit"} if cfg.optim == "adamw_8bit" else {}


def make_optimizer(params, cfg: TrainConfig):
    """Our PPO's optimiser for train.optim: torch's AdamW, or bitsandbytes' AdamW8bit (no weight decay either way)."""
    if cfg.optim == "adamw_8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=cfg.learning_rate, weight_decay=0.0)
    import torch

    return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0)


def check_bitsandbytes(cfg: TrainConfig) -> None:
    """Preflight: train.lora.quantize and train.optim=adamw_8bit run bitsandbytes' CUDA kernels, so a machine without
    CUDA (or without the package) is refused in one line before anything is written; torch is imported only then."""
    wanted = [f"train.lora.quantize={cfg.lora.quantize}"] if cfg.lora.quantize != "none" else []
    wanted += ["train.optim=adamw_8bit"] if cfg.optim == "adamw_8bit" else []
    if not wanted:
        return
    import torch

    what = " and ".join(wanted)
    if not torch.cuda.is_available():
        raise ConfigError(
            f"{what}: bitsandbytes' k-bit weights and 8-bit optimiser need a CUDA GPU, and torch sees none here; "
            "use train.lora.quantize=none and train.optim=adamw on this machine"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(f"{what}: needs the bitsandbytes package: pip install bitsandbytes")


def is_quantized(model) -> bool:
    """Whether `model` (or the model under its adapter) holds bitsandbytes k-bit weights, as peft tells."""
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def merge_unquantized(adapter_dir: Path):
    """The saved adapter merged into its base loaded unquantized in fp32 (the checkpoint the adapter config names,
    on the CPU): merging into k-bit weights would round the update to k bits, and the next iteration serves fp32."""
    import torch
    from peft import AutoPeftModelForCausalLM

    model = AutoPeftModelForCausalLM.from_pretrained(adapter_dir, dtype=torch.float32, use_safetensors=True)
    return model.merge_and_unload()


def lora_config(lora: LoRASection, model, dropout: float | None = None):
    """The policy's peft LoraConfig (train.lora): every linear layer, or those of the top `lora.layers` decoder
    layers (`model` is read for its layer names then, and only then)."""
    import torch
    from peft import LoraConfig

    targets: str | list[str]
    layers: list[int] | None
    if lora.layers is None:
        targets, layers = "all-linear", None
    else:
        # peft takes layers_to_transform only with named target modules: the linear layers inside the decoder layers.
        targets = sorted(
            {
                name.rsplit(".", 1)[-1]
                for name, module in model.named_modules()
                if isinstance(module, torch.nn.Linear) and ".layers." in name
            }
        )
        total = model.config.num_hidden_layers
        layers = list(range(max(0, total - lora.layers), total))
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        target_modules=targets,
        task_type="CAUSAL_LM",
        lora_dropout=lora.dropout if dropout is None else dropout,
        layers_to_transform=layers,
        layers_pattern="layers" if layers else None,
    )


def save_policy(model, tokenizer, out_dir: Path, adapter: bool, merge: bool = True) -> tuple[Path, Path | None]:
    """Save what the next iteration starts from: the LoRA adapter (when `adapter`) and, when `merge`, the merged model.

    Returns (policy_dir, adapter_dir): the policy is merged/ or, without merging, the adapter folder itself (with the
    tokenizer beside it, so it serves and trains like a checkpoint). The merged weights stay in fp32. A few LoRA steps
    move a weight by less than bf16's rounding step (2.4e-4 at |w| = 0.05), so a bf16 copy silently undoes training:
    rounding the default run's first merged policy to bf16 lost 99% of its update (relative error 0.986, measured).
    """
    import torch

    from selfplay.train.guard import check_finite

    merged_dir, adapter_dir = out_dir / "merged", out_dir / "adapter" if adapter else None
    if not is_main_process():  # a distributed launch: every process holds the same weights, rank 0 saves them
        return (merged_dir if merge or not adapter_dir else adapter_dir), adapter_dir
    if adapter_dir:
        if "ref" in getattr(model, "peft_config", {}):
            model.delete_adapter("ref")  # TRL's frozen copy of a loaded adapter, the reference: not the policy
        check_finite(model)
        model.save_pretrained(adapter_dir, safe_serialization=True)
        if not merge:
            tokenizer.padding_side = "right"
            tokenizer.save_pretrained(adapter_dir)
            return adapter_dir, adapter_dir
        model = merge_unquantized(adapter_dir) if is_quantized(model) else model.merge_and_unload()
    check_finite(model)
    model.to(torch.float32).save_pretrained(merged_dir, safe_serialization=True)
    tokenizer.padding_side = "right"
    tokenizer.save_pretrained(merged_dir)
    return merged_dir, adapter_dir


def checkpointing_args(cfg: TrainConfig) -> dict:
    """TrainingArguments for checkpoints within a train stage (train.save_steps; only the last one is kept)
    and for activation (gradient) checkpointing."""
    args: dict[str, object] = {"gradient_checkpointing": cfg.gradient_checkpointing}
    if cfg.gradient_checkpointing:  # the non-reentrant form needs no input gradients, so it works with LoRA
        args["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    if not cfg.save_steps:
        return {**args, "save_strategy": "no"}
    return {**args, "save_strategy": "steps", "save_steps": cfg.save_steps, "save_total_limit": 1}


def last_checkpoint(folder: Path) -> str | None:
    """The newest complete checkpoint a killed train stage left in `folder` (None = start from step 0).

    The Trainer writes a checkpoint's trainer_state.json after its weights, optimizer and RNG states, and
    not atomically; a kill while saving leaves a newer folder without it (or with half of it). So complete
    means "trainer_state.json reads as JSON" (transformers' get_last_checkpoint takes the newest folder
    whatever it holds, and resuming from a half-written one fails)."""
    if not folder.is_dir():
        return None
    found = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.rsplit("-", 1)[1].isdigit()]
    for checkpoint in sorted(found, key=lambda p: int(p.name.rsplit("-", 1)[1]), reverse=True):
        try:
            json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        return str(checkpoint)
    return None


def train_resumable(trainer, folder: Path) -> int | None:
    """`trainer.train()`, resumed from the newest checkpoint a killed train stage left in `folder`;
    returns the step it resumed at (None = it started from step 0)."""
    from selfplay.train.guard import StepBar

    resume = last_checkpoint(folder)
    trainer.add_callback(StepBar())
    trainer.train(resume_from_checkpoint=resume)
    return checkpoint_step(resume)


def checkpoint_step(checkpoint: str | None) -> int | None:
    """The optimizer step of a Trainer checkpoint folder ("checkpoint-40" -> 40)."""
    return int(Path(checkpoint).name.rsplit("-", 1)[1]) if checkpoint else None


def report_to(cfg: TrainConfig, log_dir: Path) -> str:
    """The trainers' `report_to`, the run's logging.report_to; their logs go under `log_dir`. transformers 5.19
    reads TensorBoard's folder from TENSORBOARD_LOGGING_DIR, not from TrainingArguments; W&B's local files go to
    WANDB_DIR, in the project WANDB_PROJECT (default "selfplay"; W&B's own default would be "huggingface")."""

    backend = cfg.report_backend
    if backend == "tensorboard":
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(log_dir)
    elif backend == "wandb":
        log_dir.mkdir(parents=True, exist_ok=True)
        os.environ["WANDB_DIR"] = str(log_dir)
        os.environ.setdefault("WANDB_PROJECT", "selfplay")
    return backend


def check_reporting(cfg: LoggingConfig) -> None:
    """Preflight: the chosen metrics backend must be importable, and W&B logged in or offline, so a run does not
    fail after generating (wandb.init refuses a run without a login when the first trainer starts)."""
    package = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(cfg.report_to)
    if package and importlib.util.find_spec(package) is None:
        raise ConfigError(f"logging.report_to={cfg.report_to} needs the {package} package: pip install {package}")
    if cfg.report_to == "wandb" and not wandb_can_log():
        raise ConfigError(
            "logging.report_to=wandb: no W&B login (no WANDB_API_KEY, no netrc entry for its server); "
            "run `wandb login`, or set WANDB_MODE=offline to keep the metrics on disk"
        )


WANDB_NO_LOGIN = ("offline", "dryrun", "disabled")  # wandb modes that need no login
# wandb's default servers: api.wandb.ai, and from wandb 0.31 api.forge.coreweave.com, whose login wandb also
# reads from an api.wandb.ai entry.
WANDB_HOSTS = ("api.wandb.ai", "api.forge.coreweave.com")


def wandb_can_log() -> bool:
    """Whether wandb.init would find a login, or need none, looked up as wandb (0.19 to 0.31) looks: WANDB_MODE,
    WANDB_API_KEY or WANDB_IDENTITY_TOKEN_FILE, then its settings files (global, then this directory's
    wandb/settings; `wandb offline` writes mode there, `wandb login --host` base_url), then the netrc file (NETRC,
    else ~/.netrc or ~/_netrc) with an entry for the server, which `wandb login` writes. Without importing wandb:
    that takes 0.3 s, and would fix its settings for this process before the trainers set WANDB_DIR."""
    env, home = os.environ, Path.home()
    settings: dict[str, str] = {}
    for path in (Path(env.get("WANDB_CONFIG_DIR") or home / ".config" / "wandb") / "settings", Path("wandb") / "settings"):
        parser = configparser.ConfigParser()
        try:
            parser.read(path)
        except (OSError, configparser.Error):
            continue  # wandb reads an unreadable settings file as empty
        if parser.has_section("default"):
            settings.update(parser.items("default"))
    mode = env.get("WANDB_MODE") or settings.get("mode", "")  # the environment overrides the files
    if mode.lower() in WANDB_NO_LOGIN or env.get("WANDB_API_KEY") or env.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    if settings.get("api_key"):
        return True
    base = env.get("WANDB_BASE_URL") or settings.get("base_url")
    hosts = [urlsplit(base).netloc] if base else WANDB_HOSTS
    found = next((p for p in (home / ".netrc", home / "_netrc") if p.exists()), home / ".netrc")
    try:
        entries = netrc.netrc(Path(env["NETRC"]).expanduser() if env.get("NETRC") else found)
    except (OSError, netrc.NetrcParseError):
        return False  # wandb too finds no login in a missing or malformed file
    return any((entries.authenticators(host) or ("", "", ""))[2] for host in hosts)


def history_mean(history: list[dict], key: str, last: bool) -> float | None:
    """Mean of a logged metric over the first (or last) few steps of a trainer's log history."""
    values = [h[key] for h in history if isinstance(h.get(key), (int, float)) and math.isfinite(h[key])]
    if not values:
        return None
    size = max(1, min(3, len(values) // 2))  # up to 3 steps, and first and last never overlap
    window = values[-size:] if last else values[:size]
    return sum(window) / len(window)
