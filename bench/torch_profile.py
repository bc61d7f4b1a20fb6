"""Profiles (torch.profiler) the two speed targets the 2-core CPU misses (issue 7): DPO pairs/s and judging
vs generating. For each, where the CPU time goes by operator, the share spent in matrix multiplies, and the
rate those multiplies reach, to tell "compute-bound" from "overhead we could remove".

    python bench/torch_profile.py [--parts dpo,judge] [--pairs 4] [--prompts 8]

Writes bench/results/profile-PART.txt (the operator table) and bench/results/profile.json (the summary).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import RESULTS, _prompts  # noqa: E402  (bench.py beside this file)

MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm",
              "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::scaled_dot_product_attention")


def profiled(work) -> tuple[object, float]:
    """Runs `work()` under the torch profiler (CPU, with FLOP counts); returns the profile and wall seconds."""
    from torch.profiler import ProfilerActivity, profile

    started = time.monotonic()
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        work()
    return prof, time.monotonic() - started


def summarise(name: str, prof, wall_s: float) -> dict:
    events = prof.key_averages()
    total_us = sum(e.self_cpu_time_total for e in events)
    # Leaf multiply kernels only (mm, addmm, bmm): aten::linear / matmul are wrappers whose self time is small.
    leaf = [e for e in events if e.key in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")]
    matmul_us = sum(e.self_cpu_time_total for e in leaf)
    flops = sum(e.flops or 0 for e in leaf)
    table = events.table(sort_by="self_cpu_time_total", row_limit=20)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"profile-{name}.txt").write_text(table + "\n")
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:5]
    return {
        "wall_s": round(wall_s, 1),
        "profiled_cpu_s": round(total_us / 1e6, 1),
        "matmul_share": round(matmul_us / total_us, 3) if total_us else None,
        "matmul_gflop": round(flops / 1e9, 1),
        "matmul_gflop_per_s": round(flops / matmul_us / 1e3, 1) if matmul_us else None,
        "top_ops": [(e.key, round(e.self_cpu_time_total / total_us, 3)) for e in top],
    }


def part_dpo(n_pairs: int) -> dict:
    """TRL DPO with LoRA on the default model, max length 256, as bench.py's dpo-fp32 part."""
    import tempfile

    from bench import dpo_pairs
    from selfplay.config import TrainConfig
    from selfplay.models import ensure_default_model
    from selfplay.train.dpo import DPOTrainer

    pairs = dpo_pairs(n_pairs)
    cfg = TrainConfig(precision="fp32", max_length=256, batch_size=min(8, n_pairs), save_steps=0)
    model = ensure_default_model()
    with tempfile.TemporaryDirectory() as out:
        prof, wall = profiled(lambda: DPOTrainer(cfg, seed=0).train(pairs, model, Path(out)))
    return summarise("dpo", prof, wall) | {"pairs": n_pairs}


def part_judge(n_prompts: int) -> dict:
    """Self-judging by log-probability on the vLLM engine (in-process on CPU, so the profiler sees its ops),
    beside generating the same responses."""
    from selfplay.config import JudgeConfig
    from selfplay.generation import open_generator
    from selfplay.judges import make_judge
    from selfplay.models import ensure_default_model

    from bench import _gen_cfg

    prompts = _prompts(n_prompts)
    with open_generator(_gen_cfg("vllm"), ensure_default_model(), seed=0) as gen:
        generations = []
        gen_prof, gen_wall = profiled(lambda: generations.extend(gen.generate(prompts, n=4)))
        judge = make_judge(JudgeConfig(method="logprob"), gen)
        judge_prof, judge_wall = profiled(lambda: judge.judge(prompts, generations))
    tokens = sum(g.n_tokens for g in generations)
    return {"generate": summarise("generate", gen_prof, gen_wall) | {"responses": len(generations), "tokens": tokens},
            "judge": summarise("judge", judge_prof, judge_wall) | {"responses": len(generations)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="dpo,judge")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=8)
    args = parser.parse_args()
    summary = {}
    for name in args.parts.split(","):
        summary[name] = part_dpo(args.pairs) if name == "dpo" else part_judge(args.prompts)
        print(name, json.dumps(summary[name], indent=1), flush=True)
    (RESULTS / "profile.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
