"""The self-improvement loop: one function per iteration, the stages named values flowing into each other.

    prompts -> generations (the policy samples) -> judgements -> pairs -> train result -> next iteration's policy

`run_iteration` is the method; each stage is produced, or reused when its records exist, through one
`Stages` helper that records its status and timing, so `selfplay run --resume` after a crash redoes only
the unfinished stage. The run directory (paths, manifest, summary) is selfplay/rundir.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, overload

from pydantic import BaseModel

from selfplay.config import RunConfig, used
from selfplay.constitutions import revision_pairs
from selfplay.errors import SelfplayError
from selfplay.evol import evol_iteration_prompts, preflight_evol
from selfplay.external import open_external, preflight_endpoint
from selfplay.generation import SEEDING, Generator, open_generator
from selfplay.judges import (
    InjectionLift,
    Judge,
    injection_lift,
    judge_seed,
    load_injection_cases,
    make_judge,
    needs_generator,
    pairwise_stats,
    preflight_judge,
)
from selfplay.judges.program import program_reviser
from selfplay.metrics import report_iteration
from selfplay.models import resolve_model
from selfplay.monitors import monitor_iteration
from selfplay.pairing import make_pairs, reward_model_pairs
from selfplay.policy import lineage
from selfplay.progress import Bar
from selfplay.records import (
    Generation,
    Judgement,
    JudgeTeaching,
    Pair,
    PairingStats,
    Prompt,
    RecordError,
    RewardResult,
    TrainInputs,
    TrainResult,
    derive_seed,
    read_record,
    read_records,
    utc_now,
    write_json,
    write_records,
)
from selfplay.rundir import IterationSummary, Manifest, Run, RunError, StageInfo, versions
from selfplay.scale import check_launcher, launch_train, under_launch
from selfplay.seed import SeedError, SeedSet, judge_seed_agreement, load_seed
from selfplay.selfinstruct import heldout_prompts, iteration_prompts, preflight_prompts
from selfplay.serving import check_serving, served_dtype
from selfplay.teaching import check_teaching, teach_judge
from selfplay.train import make_trainer
from selfplay.train.dpo import DPOTrainer
from selfplay.train.hir import check_hir
from selfplay.train.judge_reward import JudgeReward
from selfplay.train.kto import KTOTrainer
from selfplay.train.ppo import Reward, RewardFn
from selfplay.train.reward import RESULT_FILE, RewardModel, SafetyGatedReward, check_reward_model, train_reward_model
from selfplay.train.setup import check_bitsandbytes, check_reporting
from selfplay.train.sft import ChosenSFTTrainer

R = TypeVar("R", bound=BaseModel)

# Side records of the prompts and judge stages, beside their JSONL (read back into the manifest on resume too).
PROMPT_STATS = "prompt_stats.json"  # self-instruct / mixed / evol: where every written prompt went
AGREEMENT = "seed_agreement.json"  # human.seed_set: the judge's agreement with the human labels
INJECTION = "injection_check.json"  # judge.injection_check: how far the shipped injections lift a score (InjectionLift)
JUDGE_PROGRESS = "judge_progress"  # the judge stage's finished chunks while it runs; removed once judgements.jsonl exists
JUDGE_CHUNK = 64  # prompts judged (and saved) at a time: big enough for the engine's batching, small enough to lose little


def run_iteration(run: Run, k: int, log: Callable[[str], None] = print) -> IterationSummary:
    """Iteration k: sample from the current policy, judge, pair, train the next policy; manifest.json last."""
    cfg, p = run.cfg, run.paths(k)
    if p.manifest.exists():  # finished before: nothing to redo
        return IterationSummary.from_manifest(read_record(p.manifest, Manifest))
    policy = run.policy_for(k)
    log(f"iteration {k}: policy {policy}")
    start = run.policy_start(k)
    serving = check_serving(policy, start, served_dtype(cfg.generation.dtype, policy))
    if serving.warning:
        log(f"warning: {serving.warning}")
    manifest = Manifest(
        iteration=k,
        policy=str(policy),
        serving=serving,
        lineage=lineage(policy, start),
        versions=versions(),
        config_digest=cfg.digest(),
        config_changes=run.config_changes(),
    )
    stage = Stages(manifest)

    with Engines(run, policy, k) as engines:  # opened on first use; closed before training
        prompts = stage("prompts", p.prompts, Prompt, lambda: write_prompts(run, k, engines))
        generations = stage("generate", p.generations, Generation, lambda: engines.policy().generate(prompts, n=cfg.generation.n))
        judgements = judge_stage(stage, run, k, engines, prompts, generations)
    generation = generation_stats(prompts, generations, cfg.generation.backend)
    if generation["too_long"]:
        log(
            f"warning: {len(generation['too_long'])} prompt(s) longer than generation.max_model_len="
            f"{cfg.generation.max_model_len} tokens got no responses: {', '.join(generation['too_long'][:5])}"
        )
    made, pairing = pair_responses(cfg, prompts, generations, judgements)  # pure: recomputed exactly on resume
    pairs = stage("pair", p.pairs, Pair, lambda: made)
    inputs = TrainInputs(prompts=prompts, generations=generations, judgements=judgements, pairs=pairs)
    result = stage("train", p.train, TrainResult, lambda: train_policy(run, k, inputs))

    previous = run.paths(k - 1).manifest
    monitors = monitor_iteration(
        prompts,
        generations,
        judgements,
        pairs,
        cfg.monitors,
        iteration=k,
        previous=read_record(previous, Manifest).monitors if k > 1 and previous.exists() else None,
        kl=result.rl.kl_last if result.rl else None,
    )
    for line in monitors.warnings:
        log(f"warning: {line}")
    manifest = manifest.model_copy(
        update=dict(
            prompts=_side_record(p.dir / PROMPT_STATS) or {},
            generation=generation,
            judge=judge_summary(judgements, p.dir),
            pairing=pairing,
            train=result,
            reward_model=reward_model_result(run, k),
            monitors=monitors,
            finished=utc_now(),
        )
    )
    write_json(p.manifest, manifest.model_dump(mode="json"))
    run.rebuild_summary()
    row = IterationSummary.from_manifest(manifest)
    report_iteration(run, row)
    return row


def run_loop(
    run: Run, log: Callable[[str], None] = print, on_iteration: Callable[[IterationSummary], None] | None = None
) -> list[IterationSummary]:
    """Every iteration of the run, holding the run's lock; stops early where a monitor in stop_on warned."""
    rows = []
    with run.writing():
        seed_warmup(run, log)
        teach_stage(run, log)
        for k in range(1, run.cfg.iterations + 1):
            row = run_iteration(run, k, log)
            rows.append(row)
            if on_iteration:
                on_iteration(row)
            if row.stopped_by:
                log(f"stopping after iteration {k}: {', '.join(row.stopped_by)} warned (monitors.stop_on)")
                break
    return rows


# ---------------------------------------------------------------------------------------------------------------
# The stage helper and the engines


@dataclass
class Stages:
    """Produces a stage's output, or reuses it when its file exists (resume), and records the stage's status,
    timing and count in the manifest. A `.jsonl` path holds a list of records, a `.json` path one record."""

    manifest: Manifest

    @overload
    def __call__(self, name: str, path: Path, cls: type[R], produce: Callable[[], list[R]]) -> list[R]: ...

    @overload
    def __call__(self, name: str, path: Path, cls: type[TrainResult], produce: Callable[[], TrainResult]) -> TrainResult: ...

    def __call__(self, name, path, cls, produce):
        started, records = time.monotonic(), path.suffix == ".jsonl"
        if path.exists():
            value = read_records(path, cls) if records else read_record(path, cls)
            status, seconds = "reused", 0.0
        else:
            value = produce()
            if records:
                write_records(path, value)
            else:
                write_json(path, value.model_dump(mode="json"))
            status = "skipped" if getattr(value, "skipped", None) else "done"
            seconds = round(time.monotonic() - started, 1)
        count = len(value) if records else value.count
        self.manifest.stages[name] = StageInfo(status=status, seconds=seconds, count=count)
        return value


class Engines:
    """Opens the policy's (and, if separate, the judge's) generator on first use; at most one at a time, so two
    engines never hold memory together; all closed on exit, before training."""

    def __init__(self, run: Run, policy: Path, k: int):
        self.run, self.policy_dir, self.k = run, policy, k
        self._open: tuple[str, Generator, ExitStack] | None = None

    def __enter__(self) -> Engines:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    def _close(self) -> None:
        if self._open:
            self._open[2].close()
            self._open = None

    def _get(self, key: str, model_dir: Path) -> Generator:
        if self._open and self._open[0] == key:
            return self._open[1]
        self._close()
        stack = ExitStack()
        gen = stack.enter_context(open_generator(self.run.cfg.generation, model_dir, derive_seed(self.run.cfg.seed, self.k, key)))
        self._open = (key, gen, stack)
        return gen

    def policy(self) -> Generator:
        return self._get("policy", self.policy_dir)

    def judge(self) -> Generator:
        if self.run.cfg.judge.endpoint:  # an OpenAI-compatible server: no local engine
            return open_external(self.run.cfg.judge, self.run.root)  # replies cached under the run
        if self.run.cfg.judge.model is None:  # self-rewarding: the policy judges its own responses
            return self.policy()
        if self.run.cfg.train.judge_data:  # the judge model as taught before iteration 1
            return self._get("judge", self.run.taught_judge())
        return self._get("judge", resolve_model(self.run.cfg.judge.model))


# ---------------------------------------------------------------------------------------------------------------
# The stages' work


def write_prompts(run: Run, k: int, engines: Engines) -> list[Prompt]:
    """Iteration k's prompts: from the pool, written by the policy (self-instruct), or rewritten from the pool (evol);
    the writer's engine opens only then."""
    cfg = run.cfg
    exclude = heldout_prompts(cfg) if cfg.prompts.source != "pool" else []
    stats: BaseModel | None
    if cfg.prompts.source == "evol":  # the policy, or the judge's model, rewrites pool prompts (selfplay/evol.py)
        writer = engines.judge if cfg.prompts.evol_writer == "judge" else engines.policy
        prompts, stats = evol_iteration_prompts(cfg.prompts, cfg.seed, k, writer, exclude)
    else:
        prompts, stats = iteration_prompts(cfg.prompts, cfg.seed, k, engines.policy, exclude)
    if stats:
        write_json(run.paths(k).dir / PROMPT_STATS, stats.model_dump(mode="json"))
    return prompts


def judge_stage(
    stage: Stages, run: Run, k: int, engines: Engines, prompts: Sequence[Prompt], generations: Sequence[Generation]
) -> list[Judgement]:
    """The judge stage: judgements.jsonl produced (or reused), then the chunks it was saved in while it ran dropped."""
    judgements = stage(
        "judge", run.paths(k).judgements, Judgement, lambda: judge_responses(run, k, engines, prompts, generations)
    )
    shutil.rmtree(run.paths(k).dir / JUDGE_PROGRESS, ignore_errors=True)  # judgements.jsonl holds it all now
    return judgements


def judge_responses(
    run: Run, k: int, engines: Engines, prompts: Sequence[Prompt], generations: Sequence[Generation]
) -> list[Judgement]:
    """The judge's verdicts on every response; with the same judge, its agreement with the human seed set and
    how far the shipped injections lift a response's score (side records beside judgements.jsonl)."""
    cfg, folder = run.cfg, run.paths(k).dir
    # Program and human judges read no model: no engine is started for them.
    judge = make_judge(cfg.judge, engines.judge() if needs_generator(cfg.judge) else None, judge_seed(cfg.seed, k))
    judgements = judge_in_chunks(judge, prompts, generations, folder / JUDGE_PROGRESS / _judge_digest(cfg, k))
    if cfg.human.seed_set and cfg.judge.kind != "constitution-revision":  # a revision judge gives no scores
        agreement = judge_seed_agreement(judge, load_seed(Path(cfg.human.seed_set)).pairs, derive_seed(cfg.seed, k, "agreement"))
        write_json(folder / AGREEMENT, agreement.model_dump())
    if cfg.judge.injection_check and needs_generator(cfg.judge) and cfg.judge.kind != "constitution-revision":
        lift = injection_lift(judge, load_injection_cases()[: cfg.judge.injection_cases], derive_seed(cfg.seed, k, "injection"))
        write_json(folder / INJECTION, lift.model_dump(mode="json"))
    return judgements


def judge_in_chunks(
    judge: Judge, prompts: Sequence[Prompt], generations: Sequence[Generation], progress: Path
) -> list[Judgement]:
    """judge.judge over the prompts JUDGE_CHUNK at a time, each chunk's judgements saved as it finishes, so a judge
    stage that fails (a dead server, a kill) keeps what it judged: the rerun judges only the chunks without a file.
    A prompt's judgements depend on its own responses only, and the chunks are cut from the whole prompt list, so a
    resumed stage judges the same batches as one that ran through."""
    by_prompt: dict[str, list[Generation]] = {}
    for g in generations:
        by_prompt.setdefault(g.prompt_id, []).append(g)
    out: list[Judgement] = []
    with Bar("judge", total=len(generations), unit="response") as bar:
        for start in range(0, len(prompts), JUDGE_CHUNK):
            done = progress / f"prompts_{start:06d}.jsonl"
            chunk = prompts[start : start + JUDGE_CHUNK]
            responses = [g for p in chunk for g in by_prompt.get(p.id, [])]
            if done.exists():
                judged = read_records(done, Judgement)
            else:
                judged = judge.judge(chunk, responses)
                write_records(done, judged)
            out += judged
            bar.advance(len(responses))
    return out


def _judge_digest(cfg: RunConfig, k: int) -> str:
    """Saved chunks are reused only by the same judge: its config and the iteration's judge seed."""
    return hashlib.sha256(f"{cfg.judge.model_dump_json()}|{judge_seed(cfg.seed, k)}".encode()).hexdigest()[:12]


def pair_responses(
    cfg: RunConfig, prompts: Sequence[Prompt], generations: Sequence[Generation], judgements: Sequence[Judgement]
) -> tuple[list[Pair], PairingStats]:
    """Preference pairs from the judgements: best vs worst by score, with a revision of the best where
    pairing.revise is set; a constitution-revision judge pairs each revision (chosen) with its original."""
    if cfg.judge.kind == "constitution-revision":
        return revision_pairs(prompts, generations, judgements)
    reviser = program_reviser(cfg.pairing.revise, cfg.judge, cfg.pairing.revise_trim_cut) if cfg.pairing.revise else None
    return make_pairs(cfg.pairing, prompts, generations, judgements, reviser)


def train_policy(run: Run, k: int, inputs: TrainInputs) -> TrainResult:
    """The next policy, by train.algo. With launch.launcher=accelerate this process launches the data-parallel
    processes, each of which runs this function (`selfplay.launched`); rank 0 writes train.json."""
    cfg = run.cfg
    if cfg.launch.launcher == "accelerate" and not under_launch():
        launch_train(cfg.launch, run.root, k)
        return read_record(run.paths(k).train, TrainResult)
    seed = derive_seed(cfg.seed, k, "train")
    # With train.rl.reward=judge an LLM judge's engine is open while the policy trains (it scores every step's
    # rollouts); it opens only when the trainer asks for its reward, and closes when training ends.
    with Engines(run, run.policy_for(k), k) as engines:
        trainer = make_trainer(cfg.train, seed, reward=lambda: reward_function(run, k, engines, seed))
        return trainer.train(inputs, run.policy_for(k), run.paths(k).policy)


def train_launched(run: Run, k: int) -> None:
    """Iteration k's train stage in one process of an `accelerate launch` (launch.launcher=accelerate)."""
    p = run.paths(k)
    result = train_policy(run, k, read_inputs(run, k))
    write_json(p.train, result.model_dump(mode="json"))  # rank 0 only: every process trained the same weights


# ---------------------------------------------------------------------------------------------------------------
# Reward models (ppo / rloo / grpo)


def reward_model_home(run: Run, k: int) -> Path:
    """Where iteration k's reward model lives: iteration 1's with train.reward_model.mode=frozen, else its own."""
    frozen = used(run.cfg.train.reward_model, "train.reward_model").mode == "frozen"
    return run.paths(1 if frozen else k).dir / "reward_model"


def reward_model_dir(run: Run, k: int) -> Path | None:
    """The reward model iteration k optimises against: train.reward_model.path as given; with mode frozen the
    one trained in iteration 1; else one retrained on every pair so far (plus the seed set). None when there
    is nothing to train it on."""
    cfg, rm = run.cfg, used(run.cfg.train.reward_model, "train.reward_model")
    if rm.path:
        return Path(rm.path)
    home = reward_model_home(run, k)
    if (home / RESULT_FILE).exists():
        result = read_record(home / RESULT_FILE, RewardResult)
    else:
        seed = load_seed(Path(cfg.human.seed_set)) if cfg.human.seed_set else None
        pairs, weights = reward_model_pairs(rm, cfg.pairing, [read_inputs(run, j) for j in range(1, k + 1)], seed)
        base = resolve_model(rm.base or cfg.model)
        result = train_reward_model(pairs, base, home, cfg.train, derive_seed(cfg.seed, k, "reward"), weights)
    return Path(result.model_dir) if result.model_dir else None


def reward_model_result(run: Run, k: int) -> RewardResult | None:
    """For the manifest: the reward model iteration k trained or reused (None: none, or a given path)."""
    rm = run.cfg.train.reward_model
    if rm is None or rm.path:
        return None
    path = reward_model_home(run, k) / RESULT_FILE
    return read_record(path, RewardResult) if path.exists() else None


def reward_function(run: Run, k: int, engines: Engines, seed: int) -> Reward | None:
    """What the RL algorithms maximise in iteration k: with train.rl.reward=judge the run's own judge; else the reward
    model's score, gated by the safety reward model where train.reward_model.safety_path is set (Llama 2)."""
    if used(run.cfg.train.rl, "train.rl").reward == "judge":
        return judge_reward(run, k, engines, seed)
    rm = used(run.cfg.train.reward_model, "train.reward_model")
    rm_dir = reward_model_dir(run, k)
    if rm_dir is None:
        return None
    reward: RewardFn = RewardModel.load(rm_dir, readout=rm.readout)  # a model trained here reads its own readout
    if rm.safety_path:
        reward = SafetyGatedReward(reward, RewardModel.load(Path(rm.safety_path), readout=rm.readout), rm.safety_threshold)
    return reward


def judge_reward(run: Run, k: int, engines: Engines, seed: int) -> JudgeReward:
    """Iteration k's judge as the RL reward: the judge the judge stage uses (its engine: judge.model, the taught judge,
    the endpoint, or without judge.model the iteration's starting policy, frozen while its copy trains)."""
    cfg, rl = run.cfg, used(run.cfg.train.rl, "train.rl")
    judge = make_judge(cfg.judge, engines.judge() if needs_generator(cfg.judge) else None, judge_seed(cfg.seed, k))
    return JudgeReward(
        judge,
        cfg.judge.kind,
        out_dir=run.paths(k).policy,
        policy=str(run.policy_for(k)),
        max_tokens=rl.max_new_tokens,
        temperature=rl.temperature,
        seed=seed,
    )


# ---------------------------------------------------------------------------------------------------------------
# Iteration 0, single stages, preflight


def seed_warmup(run: Run, log: Callable[[str], None] = print) -> TrainResult | None:
    """Iteration 0 (human.seed_warmup): the first policy, trained on the human seed set before any AI feedback.
    Its train.json is written last, so a warm-up killed midway is redone on resume; None when not configured."""
    human, out = run.cfg.human, run.seed_policy
    if human.seed_warmup == "none":
        return None
    if (out / "train.json").exists():
        return read_record(out / "train.json", TrainResult)
    assert human.seed_set is not None  # the config refuses a warm-up without a seed set
    labels = load_seed(Path(human.seed_set))
    if lacking := warmup_lacks(labels, human.seed_warmup, human.seed_set):
        raise RunError(lacking)
    log(f"iteration 0: {human.seed_warmup} on the human seed set: {labels.summary()}")
    cfg, seed, base = run.cfg.train, derive_seed(run.cfg.seed, 0, "train"), resolve_model(run.cfg.model)
    if human.seed_warmup == "kto":  # KTO learns from the pointwise lines themselves, not the pairs made of them
        result = KTOTrainer(cfg, seed).train_scored(labels.scored, base, out)
    else:
        trainer = DPOTrainer(cfg, seed) if human.seed_warmup == "dpo" else ChosenSFTTrainer(cfg, seed, algo="seed-sft")
        result = trainer.train(TrainInputs(pairs=labels.pairs), base, out)
    write_json(out / "train.json", result.model_dump(mode="json"))
    return result


def warmup_lacks(labels: SeedSet, warmup: str, source: str) -> str | None:
    """Why the seed set cannot warm up the policy by `warmup` (kto trains on its scored lines, dpo and sft on its
    pairs); None when it can."""
    if warmup == "kto":
        return None if labels.scored else f"human.seed_warmup=kto: {source} holds no scored lines (prompt, response, score)"
    return None if labels.pairs else f"human.seed_warmup={warmup}: {source} holds no pairs to train on"


def teach_stage(run: Run, log: Callable[[str], None] = print) -> JudgeTeaching | None:
    """Before iteration 1 (train.judge_data): the judge taught from labelled judgements; None when not configured."""
    if not run.cfg.train.judge_data:
        return None
    policy = run.untaught_start()
    base = resolve_model(run.cfg.judge.model) if run.cfg.judge.model else policy
    return teach_judge(run.cfg, base, policy, run.judge_teaching, log)


def run_stage(run: Run, k: int, name: str) -> StageInfo:
    """One stage of iteration k on its own (`selfplay generate|judge|pair|train`), from the earlier stages'
    records on disk; its output is written as in a run, the manifest is not."""
    check_stage_inputs(run, k, name)
    p, cfg = run.paths(k), run.cfg
    policy = run.policy_for(k)
    stage = Stages(Manifest(iteration=k, policy=str(policy)))
    inputs = read_inputs(run, k)
    with run.writing(), Engines(run, policy, k) as engines:
        match name:
            case "prompts":
                stage("prompts", p.prompts, Prompt, lambda: write_prompts(run, k, engines))
            case "generate":
                stage(
                    "generate", p.generations, Generation, lambda: engines.policy().generate(inputs.prompts, n=cfg.generation.n)
                )
            case "judge":
                judge_stage(stage, run, k, engines, inputs.prompts, inputs.generations)
            case "pair":
                stage(
                    "pair", p.pairs, Pair, lambda: pair_responses(cfg, inputs.prompts, inputs.generations, inputs.judgements)[0]
                )
            case "train":
                stage("train", p.train, TrainResult, lambda: train_policy(run, k, inputs))
            case _:
                raise RunError(f"unknown stage {name!r}; one of prompts, generate, judge, pair, train")
    return stage.manifest.stages[name]


def read_inputs(run: Run, k: int) -> TrainInputs:
    """Iteration k's records as far as they exist on disk."""
    p = run.paths(k)

    def read(path: Path, cls: type[R]) -> list[R]:
        return read_records(path, cls) if path.exists() else []

    return TrainInputs(
        prompts=read(p.prompts, Prompt),
        generations=read(p.generations, Generation),
        judgements=read(p.judgements, Judgement),
        pairs=read(p.pairs, Pair),
    )


def check_stage_inputs(run: Run, k: int, name: str) -> None:
    """For single-stage commands: the earlier stages' outputs must exist."""
    p = run.paths(k)
    judged = [p.prompts, p.generations, p.judgements]
    needs = {
        "generate": [p.prompts],
        "judge": [p.prompts, p.generations],
        "pair": judged,
        "train": judged if run.cfg.train.algo in ("rejection-sft", "rest", "kto", "hir") else [p.pairs],
    }
    for path in needs.get(name, []):
        if not path.exists():
            raise RecordError(f"{path}: missing; run the earlier stages first (selfplay run --resume runs them all)")


def preflight(cfg: RunConfig) -> None:
    """Checks everything the run will read before anything is written, each failure one SelfplayError line: the
    model and judge checkpoints, prompt pool, templates, the judge and its server, the human seed set, the reward
    models, the held-out eval files, the metrics backend and the launcher. Bad input fails in a second, not after
    an engine has started: nothing here loads weights or starts an engine (the default model, converted on first
    use, is left to the run)."""
    human, rm = cfg.human, cfg.train.reward_model
    _checkpoint("model", cfg.model)
    preflight_prompts(cfg.prompts)
    preflight_evol(cfg.prompts)
    if cfg.prompts.source != "pool":  # the policy writes prompts: the held-out eval prompts are kept out of them
        heldout_prompts(cfg)
    preflight_judge(cfg.judge)
    check_teaching(cfg)
    check_hir(cfg)
    if needs_generator(cfg.judge):  # program and human judges read no model
        _checkpoint("judge.model", cfg.judge.model)
        if cfg.judge.endpoint:
            preflight_endpoint(cfg.judge)  # reachable, serving endpoint_model, speaking endpoint_api
    if cfg.pairing.revise:
        program_reviser(cfg.pairing.revise, cfg.judge)  # imports it and checks it takes (prompt, response)
    if human.seed_set:
        with _naming("human.seed_set"):
            seed = load_seed(Path(human.seed_set))
        if human.seed_warmup != "none" and (lacking := warmup_lacks(seed, human.seed_warmup, human.seed_set)):
            raise SeedError(lacking)
    if rm:
        for key, path in (("train.reward_model.path", rm.path), ("train.reward_model.safety_path", rm.safety_path)):
            if path:
                with _naming(key):
                    check_reward_model(Path(path))
        if not rm.path:  # the base is read only where a reward model is trained
            _checkpoint("train.reward_model.base", rm.base)
    check_reporting(cfg.logging)
    check_bitsandbytes(cfg.train)
    check_launcher(cfg)


def _checkpoint(key: str, name: str | None) -> None:
    if name and name != "default":  # the default is converted on first use, inside the run
        with _naming(key):
            resolve_model(name)


@contextmanager
def _naming(key: str) -> Iterator[None]:
    """A check's one-line error, prefixed with the config key that named the file."""
    try:
        yield
    except SelfplayError as err:
        raise type(err)(f"{key}: {err}") from None


# ---------------------------------------------------------------------------------------------------------------
# What the manifest says of the records


def generation_stats(prompts: Sequence[Prompt], generations: Sequence[Generation], backend: str) -> dict:
    n = len(generations)
    answered = {g.prompt_id for g in generations}
    return {
        "count": n,
        "empty": sum(1 for g in generations if not g.text.strip()),
        "mean_tokens": round(sum(g.n_tokens for g in generations) / n, 1) if n else None,
        "cut_at_max": round(sum(g.finish_reason == "length" for g in generations) / n, 3) if n else None,
        "seeding": SEEDING[backend],
        # Prompts longer than generation.max_model_len get no responses (generation.within_context).
        "too_long": [p.id for p in prompts if p.id not in answered],
    }


def judge_stats(judgements: Sequence[Judgement]) -> dict:
    """Parse rate and mean score over per-response judgements; pairwise comparisons reported apart."""
    per_response = [j for j in judgements if len(j.generation_ids) == 1]
    n = len(per_response)
    # A revision judgement carries no score by design: its success is the status.
    usable = [j for j in per_response if j.score is not None or (j.method == "revision" and j.status == "ok")]
    scores = [j.score for j in per_response if j.score is not None]
    by_status: dict[str, int] = {}
    for j in per_response:
        by_status[j.status] = by_status.get(j.status, 0) + 1
    stats: dict = {
        "count": n,
        "by_status": by_status,
        "parse_rate": round(len(usable) / n, 3) if n else None,
        "mean_score": round(sum(scores) / len(scores), 3) if scores else None,
        "templates": sorted({f"{j.template}#{j.template_hash}" for j in judgements if j.template}),
    }
    if len(per_response) < len(judgements):
        stats["pairwise"] = pairwise_stats(judgements)
    return stats


def judge_summary(judgements: Sequence[Judgement], folder: Path) -> dict:
    """judge_stats plus the judge stage's side records (injection check, agreement with the seed set)."""
    stats = judge_stats(judgements)
    checked, agreement = _side_record(folder / INJECTION), _side_record(folder / AGREEMENT)
    if checked and "injection_success" in checked:  # written before the lift was measured: a bare rate, no control
        stats["injection_success"] = checked["injection_success"]
    elif checked:
        stats["injection"] = read_record(folder / INJECTION, InjectionLift).model_dump(mode="json")
    if agreement:
        stats["human_agreement"] = agreement
    return stats


def _side_record(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise RecordError(f"{path}: malformed JSON; delete it to recompute the stage") from None
