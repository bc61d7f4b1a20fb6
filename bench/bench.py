"""selfplay benchmarks: every comparison measured side by side in one run (these machines are noisy),
reported as ratios, each part in its own process so peak memory is per part.

    make bench                       # or: python bench/bench.py [--prompts 32] [--parts gen-vllm,gen-hf,...]

Writes bench/results/bench.json. Targets (issue 7, 2-core CPU, default model): generation >= 3x
transformers; judging a response >= 2x faster than generating it; DPO >= 1 pair/s at max length 256
with LoRA.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
PARTS = ("gen-vllm", "gen-hf", "judge-cache", "judge-nocache", "dpo-fp32", "dpo-bf16", "dpo-precompute",
         "rollout-seeded", "rollout-generate")


def _prompts(n: int):
    from selfplay.pool import load_pool

    return load_pool("data/instructions.jsonl")[:n]


def _gen_cfg(backend: str, **kw):
    from selfplay.config import GenerationConfig

    return GenerationConfig(backend=backend, n=4, temperature=0.8, max_tokens=64, **kw)


def part_generate(backend: str, n_prompts: int) -> dict:
    from selfplay.generation import open_generator
    from selfplay.models import ensure_default_model

    started = time.monotonic()
    with open_generator(_gen_cfg(backend), ensure_default_model(), seed=0) as gen:
        ready = time.monotonic()
        records = gen.generate(_prompts(n_prompts), n=4)
        seconds = time.monotonic() - ready
    tokens = sum(r.n_tokens for r in records)
    return {"start_s": round(ready - started, 1), "seconds": round(seconds, 1), "tokens": tokens,
            "tok_per_s": round(tokens / seconds, 1), "responses": len(records), "s_per_response": seconds / len(records)}


def part_judge(prefix_caching: bool, n_prompts: int) -> dict:
    """Logprob self-judging of the default run's responses, with and without vLLM prefix caching."""
    from selfplay.config import JudgeConfig
    from selfplay.generation import open_generator
    from selfplay.judges import make_judge
    from selfplay.models import ensure_default_model

    prompts = _prompts(n_prompts)
    with open_generator(_gen_cfg("vllm", prefix_caching=prefix_caching), ensure_default_model(), seed=0) as gen:
        generations = gen.generate(prompts, n=4)
        started = time.monotonic()
        make_judge(JudgeConfig(method="logprob"), gen).judge(prompts, generations)
        seconds = time.monotonic() - started
    return {"seconds": round(seconds, 1), "responses": len(generations), "s_per_response": seconds / len(generations)}


def dpo_pairs(n_pairs: int) -> list:
    """Pairs of realistic lengths: a ~120-token chosen and a ~60-token rejected answer (max length 256)."""
    from selfplay.records import Pair

    return [Pair(id=f"{p.id}/p", prompt_id=p.id, prompt=p.text, chosen=("A careful, helpful answer. " * 20),
                 rejected=("A short reply. " * 15), chosen_id="c", rejected_id="r", chosen_score=4.0,
                 rejected_score=2.0, margin=2.0, judge="bench") for p in _prompts(n_pairs)]


def part_dpo(precision: str, precompute: bool, n_pairs: int) -> dict:
    import tempfile

    from selfplay.config import TrainConfig
    from selfplay.models import ensure_default_model
    from selfplay.records import TrainInputs
    from selfplay.train.dpo import DPOTrainer

    pairs = dpo_pairs(n_pairs)
    cfg = TrainConfig(precision=precision, dpo={"precompute_ref": precompute}, max_length=256, batch_size=8)
    with tempfile.TemporaryDirectory() as out:
        result = DPOTrainer(cfg, seed=0).train(TrainInputs(pairs=pairs), ensure_default_model(), Path(out))
    return {"seconds": result.seconds, "pairs": len(pairs), "pairs_per_s": round(len(pairs) / result.seconds, 3)}


def part_rollout(seeded: bool, n_prompts: int) -> dict:
    """PPO rollouts on the default model: our per-prompt seeded sampling loop (PPOTrainer._rollout, which makes a
    response independent of its batch) against one transformers generate() call with the same settings."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfplay.config import TrainConfig
    from selfplay.models import ensure_default_model
    from selfplay.train.ppo import PPOTrainer

    cfg = TrainConfig(algo="ppo", rl={"max_new_tokens": 64, "rollout_prompts": n_prompts}, ppo={"minibatch": 1})
    model_dir = ensure_default_model()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompts, trainer = _prompts(n_prompts), PPOTrainer(cfg, seed=0, reward=lambda: None)  # rollouts only: no reward read
    started = time.monotonic()
    if seeded:
        roll = trainer._rollout(model, tokenizer, prompts, list(range(len(prompts))), torch.device("cpu"))
        tokens = int(roll.mask.sum())
    else:
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": p.text}], tokenize=False, add_generation_prompt=True)
                 for p in prompts]
        tokenizer.padding_side = "left"
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        torch.manual_seed(0)
        with torch.no_grad():
            out = model.generate(**enc, do_sample=True, temperature=cfg.rl.temperature, top_k=0, top_p=1.0,
                                 max_new_tokens=cfg.rl.max_new_tokens, pad_token_id=tokenizer.eos_token_id)
        response = out[:, enc["input_ids"].shape[1]:]
        ended = response == tokenizer.eos_token_id
        tokens = int(torch.where(ended.any(1), ended.int().argmax(1) + 1, torch.full_like(ended[:, 0], response.shape[1], dtype=torch.long)).sum())
    seconds = time.monotonic() - started
    return {"seconds": round(seconds, 1), "tokens": tokens, "tok_per_s": round(tokens / seconds, 1)}


def run_part(name: str, args) -> dict:
    match name:
        case "gen-vllm":
            return part_generate("vllm", args.prompts)
        case "gen-hf":
            return part_generate("transformers", args.prompts)
        case "judge-cache":
            return part_judge(True, args.prompts)
        case "judge-nocache":
            return part_judge(False, args.prompts)
        case "dpo-fp32":
            return part_dpo("fp32", False, args.pairs)
        case "dpo-bf16":
            return part_dpo("bf16", False, args.pairs)
        case "dpo-precompute":
            return part_dpo("fp32", True, args.pairs)
        case "rollout-seeded":
            return part_rollout(True, args.prompts)
        case "rollout-generate":
            return part_rollout(False, args.prompts)
    raise SystemExit(f"unknown part {name!r}; one of {', '.join(PARTS)}")


def ratios(r: dict) -> dict:
    def get(part, key):
        return r.get(part, {}).get(key)

    out = {}
    if get("gen-vllm", "tok_per_s") and get("gen-hf", "tok_per_s"):
        out["generation vllm / transformers (target >= 3)"] = round(get("gen-vllm", "tok_per_s") / get("gen-hf", "tok_per_s"), 2)
    if get("gen-vllm", "s_per_response") and get("judge-cache", "s_per_response"):
        out["generate / judge time per response (target >= 2)"] = round(get("gen-vllm", "s_per_response") / get("judge-cache", "s_per_response"), 2)
    if get("judge-cache", "seconds") and get("judge-nocache", "seconds"):
        out["judging speed-up from prefix caching"] = round(get("judge-nocache", "seconds") / get("judge-cache", "seconds"), 2)
    if get("dpo-fp32", "pairs_per_s") and get("dpo-bf16", "pairs_per_s"):
        out["dpo bf16 / fp32"] = round(get("dpo-bf16", "pairs_per_s") / get("dpo-fp32", "pairs_per_s"), 2)
    if get("dpo-fp32", "pairs_per_s") and get("dpo-precompute", "pairs_per_s"):
        out["dpo precomputed ref / per-step ref"] = round(get("dpo-precompute", "pairs_per_s") / get("dpo-fp32", "pairs_per_s"), 2)
    if get("rollout-seeded", "tok_per_s") and get("rollout-generate", "tok_per_s"):
        out["ppo rollout: seeded per-prompt sampling / generate()"] = round(get("rollout-seeded", "tok_per_s") / get("rollout-generate", "tok_per_s"), 2)
    if get("dpo-fp32", "pairs_per_s"):
        out["dpo pairs/s fp32 (target >= 1)"] = get("dpo-fp32", "pairs_per_s")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated parts to run")
    parser.add_argument("--prompts", type=int, default=32, help="prompts for generation/judging (x4 samples)")
    parser.add_argument("--pairs", type=int, default=32, help="pairs for DPO parts")
    parser.add_argument("--part", help=argparse.SUPPRESS)  # internal: run one part in this process
    args = parser.parse_args()
    if args.part:
        result = run_part(args.part, args)
        result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        result["peak_rss_children_mib"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
        print("RESULT " + json.dumps(result), flush=True)
        return
    results = {}
    for name in args.parts.split(","):
        cmd = [sys.executable, __file__, "--part", name, "--prompts", str(args.prompts), "--pairs", str(args.pairs)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
        results[name] = json.loads(line[7:]) if line else {"error": out.stderr.strip().splitlines()[-1:]}
        print(f"{name:15s} {json.dumps(results[name])}", flush=True)
    summary = {"parts": results, "ratios": ratios(results)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench.json").write_text(json.dumps(summary, indent=2) + "\n")
    for key, value in summary["ratios"].items():
        print(f"{key:55s} {value}")


if __name__ == "__main__":
    main()
