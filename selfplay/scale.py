"""Scale-out on engines people already operate: Ray actors share generation and judging, accelerate (torchrun)
runs training data-parallel. No scheduler of our own: Ray places the actors, accelerate starts the processes.

Generation and judging: `generation.workers = N` gives every engine the loop opens (policy or judge) N Ray
actors, each holding its own generator for the same model. A call's inputs are cut into N contiguous shards
in order and the outputs are joined back in order, so records keep their ids, order and seeds. With the
transformers backend each record's randomness depends on (seed, prompt id) or on its batch's position in
the whole list, and shards start on batch boundaries, so a sharded run writes exactly the records of an
unsharded one. vLLM engines are seeded per engine, so a sharded vLLM run samples differently (same seeds
recorded), as would one engine given the prompts in another order.

Training: `launch.launcher = accelerate` with `launch.num_processes = N` runs the train stage of an iteration
under `accelerate launch` (`python -m selfplay.launched RUN K`); the TRL trainers (DPO, reward model, SFT,
RLOO/GRPO) then train data-parallel, and only the main process writes the policy and train.json.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from selfplay.config import ConfigError, GenerationConfig, LaunchConfig, RunConfig, used
from selfplay.records import Generation, Prompt


def shard_bounds(count: int, shards: int, align: int = 1) -> list[tuple[int, int]]:
    """`shards` contiguous [start, stop) ranges covering range(count), as even as `align` allows (every start a
    multiple of it); empty ranges are dropped."""
    blocks = -(-count // align)  # ceil: whole aligned blocks, the last possibly short
    bounds, start_block = [], 0
    for i in range(shards):
        stop_block = start_block + blocks // shards + (1 if i < blocks % shards else 0)
        start, stop = start_block * align, min(stop_block * align, count)
        if stop > start:
            bounds.append((start, stop))
        start_block = stop_block
    return bounds


class _Worker:
    """One Ray actor: a whole generator for the model (vLLM or transformers), built inside the actor by
    `open_one` (generation.open_generator, passed in: generation imports this module, not the reverse)."""

    def __init__(self, model_dir: str, cfg: dict, seed: int, open_one: Callable):
        self._context = open_one(GenerationConfig.model_validate(cfg), Path(model_dir), seed)
        self.gen = self._context.__enter__()

    def call(self, method: str, args: tuple, kwargs: dict):
        return getattr(self.gen, method)(*args, **kwargs)

    def close(self) -> None:
        self._context.__exit__(None, None, None)


def start_ray(cfg: GenerationConfig) -> None:
    """Join `cfg.ray_address`, or start a Ray runtime on this machine sized for the workers (Ray will not
    place an actor it has no CPU for, so a small machine is declared as large as the workers need)."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("generation.workers > 1 needs Ray: pip install 'selfplay[scale]'") from exc
    if ray.is_initialized():
        return
    if cfg.ray_address:
        ray.init(address=cfg.ray_address, log_to_driver=False)
    else:
        ray.init(
            num_cpus=max(os.cpu_count() or 1, math.ceil(cfg.workers * cfg.worker_cpus)),
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=256 * 2**20,
        )  # records are small: no multi-GiB store


class RayShardedGenerator:
    """The Generator protocol over `cfg.workers` Ray actors (see the module docstring)."""

    def __init__(self, model_dir: Path, cfg: GenerationConfig, seed: int, open_one: Callable):
        start_ray(cfg)
        import ray
        from transformers import AutoTokenizer

        self.cfg, self.seed, self.model_dir = cfg, seed, str(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)  # judges render chat prompts here, in the driver
        one = cfg.model_copy(update={"workers": 1}).model_dump(mode="json")
        actor = ray.remote(num_cpus=cfg.worker_cpus, num_gpus=cfg.worker_gpus)(_Worker)
        self.workers = [actor.remote(self.model_dir, one, seed, open_one) for _ in range(cfg.workers)]
        # transformers samples `batch_size` prompts per call with one seed: shards start on batch boundaries.
        self.align = cfg.batch_size if cfg.backend == "transformers" else 1

    def _sharded(self, method: str, items: Sequence, offsets: bool = False, **kwargs) -> list:
        import ray

        bounds = shard_bounds(len(items), len(self.workers), self.align)
        calls = [
            worker.call.remote(method, (list(items[start:stop]),), {**kwargs, **({"offset": start} if offsets else {})})
            for worker, (start, stop) in zip(self.workers, bounds, strict=False)
        ]
        return [out for part in ray.get(calls) for out in part]

    def generate(self, prompts: Sequence[Prompt], n: int) -> list[Generation]:
        return self._sharded("generate", prompts, n=n)

    def complete(self, prompt_ids, *, n, temperature, max_tokens):
        return self._sharded(
            "complete",
            prompt_ids,
            offsets=self.cfg.backend == "transformers",
            n=n,
            temperature=temperature,
            max_tokens=max_tokens,
        )

    def next_token_logprobs(self, prompt_ids, token_ids):
        return self._sharded("next_token_logprobs", prompt_ids, token_ids=list(token_ids))

    def close(self) -> None:
        import ray

        ray.get([worker.close.remote() for worker in self.workers])
        for worker in self.workers:
            ray.kill(worker)
        self.workers = []


def check_launcher(cfg: RunConfig) -> None:
    """Preflight for launch.launcher=accelerate: the config file exists; PPO has a rollout for every process and
    no DeepSpeed or FSDP config (it is data-parallel only)."""
    launch, train = cfg.launch, cfg.train
    if launch.launcher != "accelerate":
        return
    rollout = used(train.rl, "train.rl").rollout_prompts if train.algo == "ppo" else 0
    if train.algo == "ppo" and rollout < launch.num_processes:
        raise ConfigError(
            f"launch.launcher=accelerate with ppo: train.rl.rollout_prompts ({rollout}) must be "
            f"at least launch.num_processes ({launch.num_processes}), one rollout shard per process"
        )
    if launch.accelerate_config and not Path(launch.accelerate_config).is_file():
        raise ConfigError(f"launch.accelerate_config: no such file {launch.accelerate_config}")
    if train.algo == "ppo" and launch.accelerate_config:
        kind = (yaml.safe_load(Path(launch.accelerate_config).read_text()) or {}).get("distributed_type")
        if kind in ("DEEPSPEED", "FSDP"):  # our PPO sums gradients itself; it would silently not shard
            raise ConfigError(
                f"launch.accelerate_config: ppo runs plain data parallel, not {kind}; drop the config "
                "file, or use rloo or grpo (TRL trainers) with it"
            )


def accelerate_command(cfg: LaunchConfig, run_root: Path, k: int) -> list[str]:
    """`accelerate launch` for one iteration's train stage. Without a config file: torchrun's launcher (accelerate
    calls it --multi_gpu) with cfg.num_processes processes, on the CPU (gloo) where there is no GPU."""
    import torch

    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if cfg.accelerate_config:
        cmd += ["--config_file", cfg.accelerate_config]
    else:
        cmd += ["--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += ["--num_processes", str(cfg.num_processes)]
    if not cfg.accelerate_config and not torch.cuda.is_available():
        cmd += ["--main_process_port", str(free_port())]
    return cmd + ["-m", "selfplay.launched", str(run_root), str(k)]


def free_port() -> int:

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_train(cfg: LaunchConfig, run_root: Path, k: int) -> None:
    """Run iteration k's train stage under accelerate and wait; the processes write train.json and the policy."""
    import torch

    env = dict(os.environ)
    if not torch.cuda.is_available():
        env["ACCELERATE_USE_CPU"] = "true"  # every process trains on the CPU; gradients all-reduce over gloo
    done = subprocess.run(accelerate_command(cfg, run_root, k), env=env)
    if done.returncode != 0:
        raise RuntimeError(
            f"accelerate launch of iteration {k}'s train stage failed (exit {done.returncode}); its output is above"
        )


def under_launch() -> bool:
    """True in a process that torchrun / accelerate launch started."""
    return "LOCAL_RANK" in os.environ
