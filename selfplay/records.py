"""Typed records that cross every stage boundary, and their JSONL files on disk.

Every file is written to a temporary name and renamed, so a killed run leaves either the old file or
the new one, never half of one. Reading is strict: a malformed line is a `RecordError` naming the file
and line, never a silently skipped record.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, TypeVar

import jsonlines
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from selfplay.agreement import Agreement
from selfplay.errors import SelfplayError

RECORDS_VERSION = 1  # bump when a record's meaning changes; old run directories are then refused


class RecordError(SelfplayError, ValueError):
    """A record file that cannot be read: the message names the file and line."""


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Prompt(Record):
    id: str  # unique within a run, e.g. "pool-0042"
    text: str  # the user's instruction, without any chat template
    source: str = "pool"  # pool | ifeval | self-instruct | evol | seed
    meta: dict = {}  # e.g. the IFEval instruction ids and kwargs of a checkable prompt


class Generation(Record):
    id: str  # "<prompt_id>/g<j>"
    prompt_id: str
    text: str
    n_prompt_tokens: int  # chat-templated prompt length, tokens
    n_tokens: int  # response length, tokens
    finish_reason: str  # "stop" (end token) | "length" (hit max_tokens)
    temperature: float
    top_p: float
    max_tokens: int
    seed: int  # engine seed (vLLM) or per-record seed (transformers); see manifest "seeding"
    policy: str  # the model directory that produced it
    backend: Literal["vllm", "transformers"]


class Judgement(Record):
    id: str  # "<generation_id>/j" for pointwise, "<id_a>|<id_b>" for pairwise
    prompt_id: str
    generation_ids: list[str]  # one for pointwise, two (in presented order) for pairwise
    judge: str  # judge kind, e.g. "pointwise"
    method: str  # text (parsed judge text) | logprob (expected score) | program | winrate | revision | label
    raw: list[str]  # every raw judge output, kept even when unparseable
    sample_scores: list[float | None]  # parsed score per raw output; None = unparseable
    score: float | None  # the judgement; pointwise 1..5 (rubric scale); None = no usable score
    status: Literal["ok", "unparseable", "error"]
    template: str | None = None  # template name@version
    template_hash: str | None = None  # sha256 of the template file, first 12 hex
    constitution_hash: str | None = None
    principle: str | None = None


class Pair(Record):
    id: str  # "<prompt_id>/p"
    prompt_id: str
    prompt: str
    chosen: str
    rejected: str
    chosen_id: str
    rejected_id: str
    chosen_score: float
    rejected_score: float
    margin: float  # chosen_score - rejected_score, > 0
    judge: str  # judge kind that produced the scores
    template_hash: str | None = None
    constitution_hash: str | None = None
    principle: str | None = None  # the constitution principle the chosen response was judged under

    def to_trl(self) -> dict:
        """TRL's conversational preference format; the trainer applies the model's chat template."""
        return {
            "prompt": [{"role": "user", "content": self.prompt}],
            "chosen": [{"role": "assistant", "content": self.chosen}],
            "rejected": [{"role": "assistant", "content": self.rejected}],
        }


class PromptCounts(BaseModel):
    """What happened to one prompt's responses. responses = unscored + empty + below + duplicate + over_k + kept."""

    responses: int
    unscored: int = 0  # no usable score (unparseable, the scorer failed, not judged): excluded
    empty: int = 0  # empty text: never fine-tuned on, whatever its score
    below: int = 0  # scored under the threshold
    duplicate: int = 0  # same text (ends stripped) as a better-ranked response of the prompt
    over_k: int = 0  # at or above the threshold, but beyond the top-k
    kept: int = 0


class FilterStats(BaseModel):
    threshold: float | None  # kept responses score >= this, judge units; None = no threshold
    top_k: int | None  # at most this many kept per prompt; None = no limit
    prompts: int
    prompts_kept: int  # prompts with at least one kept response
    responses: int
    unscored: int
    empty: int
    below: int
    duplicate: int
    over_k: int
    kept: int
    kept_fraction: float | None  # kept / responses; None when there are no responses
    mean_kept_score: float | None
    per_prompt: dict[str, PromptCounts]  # prompt id -> counts (the manifest's per-prompt record)


class ImproveStep(BaseModel):
    """One ReST Improve step: the grown dataset filtered at `threshold`, and the fine-tune on what passed."""

    step: int  # 1-based
    threshold: (
        float | None
    )  # judge units (in quantile mode, the score at `quantile` of the grown dataset); None = nothing was scored
    quantile: float | None = None  # 0..1, quantile mode only
    filtering: FilterStats
    examples: int  # responses that passed the filter: the fine-tune's examples
    steps: int = 0  # optimizer steps
    loss_first: float | None = None  # mean SFT loss (nats per response token), first logged steps
    loss_last: float | None = None
    seconds: float = 0.0
    policy: str  # the policy after this step (the one it started from, when skipped)
    adapter: str | None = None
    skipped: str | None = None  # why no fine-tune ran, if it did not

    def summary(self) -> dict:
        """The summary.jsonl view: threshold, kept fraction and losses (per-prompt counts stay in the manifest)."""
        return {
            "step": self.step,
            "threshold": self.threshold,
            "quantile": self.quantile,
            "examples": self.examples,
            "kept_fraction": self.filtering.kept_fraction,
            "loss_first": self.loss_first,
            "loss_last": self.loss_last,
            "skipped": self.skipped,
        }


# What training produced. Common fields at the top; what only one family of algorithms measures lives in its
# sub-record (dpo / rl / sft), so no algorithm fills another's fields with None.
class PreferenceStats(Record):
    """dpo, orpo, simpo: training on preference pairs."""

    pairs: int  # pairs trained on
    reward_accuracy: float | None = None  # fraction of pairs whose implicit reward prefers the chosen side, last logged steps
    reward_margin: float | None = None  # mean (chosen - rejected) implicit reward, last logged steps
    loss: dict[str, float] | None = None  # dpo: TRL loss type -> weight (train.dpo.loss, sft_weight); orpo / simpo: None


class KTOStats(Record):
    """kto: training on single responses, each desirable (score >= threshold) or undesirable."""

    examples: int  # responses trained on: desirable + undesirable
    desirable: int
    undesirable: int
    threshold: float | None  # the cut, in the scores' units (the judge's; the seed warm-up: the labellers'); None = none scored
    unscored: int = 0  # responses without a usable score: left out
    empty: int = 0  # empty responses: left out
    desirable_weight: float | None = None  # the loss weights trained with (None: not trained)
    undesirable_weight: float | None = None
    kl_last: float | None = None  # TRL's batch KL estimate (KTO's reference point), nats per response, last logged steps
    reward_margin: float | None = None  # mean desirable - undesirable implicit reward, last logged steps


class JudgedStep(Record):
    """train.rl.reward=judge: one rollout batch (optimizer step) as the judge scored it."""

    step: int  # 1-based
    scored: int  # rollouts the judge scored
    failed: int  # rollouts it gave no score (unparseable, error, endpoint error, empty): left out of the advantage
    reward_mean: float | None  # mean judge score of the scored ones, judge units; None = none scored


class RLStats(Record):
    """ppo, rloo, grpo: online RL against a reward model, or the run's judge (train.rl.reward=judge). Rewards are
    its scores per response."""

    prompts: int  # distinct prompts the rollouts were drawn from
    reward_first: float | None = None  # mean score of the first logged steps' responses
    reward_last: float | None = None  # ... of the last logged steps' responses
    kl_last: float | None = None  # KL(policy || reference), nats per response token, last logged steps (every algorithm)
    kl_coef: float | None = None  # ppo: the adaptive KL coefficient at the end; rloo / grpo: the fixed beta
    safety_gated: float | None = None  # with train.reward_model.safety_path: fraction of rollouts rewarded by the safety model
    skipped_steps: int = 0  # ppo: rollout batches that did not update the policy (non-finite reward, or every gradient)
    stats: str | None = None  # per-step stats JSONL (reward, KL, coefficient, losses)
    reward: Literal["reward_model", "judge"] = "reward_model"  # train.rl.reward: what scored the rollouts
    scored: int | None = None  # reward=judge: rollouts the judge scored, all steps
    failed: int | None = None  # reward=judge: rollouts it failed to score, excluded from the advantage
    judged_steps: list[JudgedStep] | None = None  # reward=judge: per step, scored, failed and the mean reward
    judgements: str | None = None  # reward=judge: every rollout's judgement (rl_judgements.jsonl), raw outputs kept


class HIRStats(BaseModel):
    """hir: where every response went. responses = empty + echo + cut + passed + relabelled + over_max +
    not_relabellable (passed = originals + duplicates of an original's text)."""

    responses: int
    empty: int = 0  # empty text: never fine-tuned on
    echo: int = 0  # the prompt repeated (selfplay.program_judges.is_echo): passes checks it should not, never used
    cut: int = 0  # stopped at max_tokens, with train.hir.skip_cut: an unfinished answer is not a target
    passed: int = 0  # followed every instruction as asked
    originals: int = 0  # of those, fine-tuned on with their own prompt (train.hir.keep_originals; distinct texts)
    relabelled: int = 0  # failed, and fine-tuned on with the prompt relabelled to what they did
    over_max: int = 0  # relabellable, beyond train.hir.max_per_prompt for their prompt (or a repeated text)
    not_relabellable: int = 0  # failed with no true relabel; why in `reasons`
    reasons: dict[str, int] = {}  # not_relabellable by reason: no_instruction_ids, no_rule, text_not_found, ...
    relabelled_per_instruction: dict[str, int] = {}  # instruction id -> relabelled instructions of that id
    failed_per_instruction: dict[str, int] = {}  # instruction id -> failed instructions of that id (any outcome)
    relabel_rate: float | None = None  # (relabelled + over_max) / the responses that failed; None = none failed


class SFTStats(Record):
    """rejection-sft, rest, revision-sft, seed-sft, hir: supervised fine-tuning on chosen responses."""

    examples: int  # responses fine-tuned on, after TRL drops any wholly beyond max_length (rest: the last step that trained)
    filtering: FilterStats | None = None  # rejection-sft: kept / dropped responses, in total and per prompt
    improve: list[ImproveStep] | None = None  # rest: per Improve step, its threshold, kept fraction and losses
    hir: HIRStats | None = None  # hir: originals, relabels and the responses that could not be relabelled


class Relabel(Record):
    """relabels.jsonl (hir): one response and the prompt it did follow (hindsight instruction relabelling)."""

    id: str  # "<generation_id>/hir"
    prompt_id: str
    generation_id: str
    original_prompt: str
    prompt: str  # the relabelled text: the instruction's number (or case word) rewritten to what the response did
    instruction_id_list: list[str]  # the relabelled prompt's IFEval ids
    kwargs: list[dict]  # its kwargs, one per id: every one passes the checkers on the response
    changes: list[dict]  # per rewritten instruction: instruction_id, old_kwargs, new_kwargs, measured


class TrainResult(Record):
    """train.json: one train stage's outcome; `policy` is what the next iteration generates with."""

    algo: str
    policy: str
    adapter: str | None = None  # the LoRA adapter directory, when trained with LoRA
    steps: int = 0  # optimizer steps
    seconds: float = 0.0
    loss_first: float | None = None  # the algorithm's own loss, mean of the first logged steps (dpo: 0.693 = ln 2 at the start)
    loss_last: float | None = None
    nan_steps: int = 0  # optimizer steps skipped because a gradient was NaN/inf
    resumed_at_step: int | None = None  # the checkpoint a killed train stage resumed from (train.save_steps)
    skipped: str | None = None  # why training did not run, if it did not; the policy is then carried over
    dpo: PreferenceStats | None = None
    kto: KTOStats | None = None
    rl: RLStats | None = None
    sft: SFTStats | None = None

    @classmethod
    def skip(cls, algo: str, policy: Path | str, why: str, **details: object) -> TrainResult:
        """Training did not run: the starting policy is carried over, and `why` says so."""
        return cls(algo=algo, policy=str(policy), skipped=why, **details)

    @property
    def count(self) -> int:
        """What it trained on: pairs (dpo, orpo, simpo), prompts (rl) or responses (sft, kto)."""
        if self.kto:
            return self.kto.examples
        return self.dpo.pairs if self.dpo else self.rl.prompts if self.rl else self.sft.examples if self.sft else 0

    @model_validator(mode="before")
    @classmethod
    def _flat_train_json(cls, data: object) -> object:
        """train.json files written before the sub-records (one flat record of every algorithm's fields)."""
        if not isinstance(data, dict) or "pairs" not in data:
            return data
        flat = dict(data)

        def pick(*keys: str) -> dict:
            return {k: flat.pop(k) for k in keys if k in flat}

        pairs, prompts, examples = flat.pop("pairs"), flat.pop("prompts", None), flat.pop("examples", None)
        dpo = pick("reward_accuracy", "reward_margin")
        rl = pick("reward_first", "reward_last", "kl_last", "kl_coef", "safety_gated", "skipped_steps", "stats")
        sft = pick("filtering", "improve")
        if flat.get("algo") == "ppo":
            rl.pop("kl_last", None)  # then nats per response; kl_last is now per token, and the old value cannot be converted
        if prompts is not None:
            flat["rl"] = {"prompts": prompts, **rl}
        elif examples is not None:
            flat["sft"] = {"examples": examples, **sft}
        elif flat.get("algo") == "dpo":
            flat["dpo"] = {"pairs": pairs, **dpo}
        return flat


class JudgeQuality(BaseModel):
    """One judge on one set of responses, against the instruction checkers (and the human seed set, if any)."""

    judge: str  # the model directory that judged
    responses: int  # responses judged
    scored: int  # of them with a score
    spearman_checkers: float | None  # rank correlation of the judge's score with the checker score
    checker_agreement: Agreement | None  # pairs of responses to one prompt that the checkers rank apart
    seed_agreement: Agreement | None  # the human seed set's pairs (accuracy, Cohen's kappa); None without one
    score_length_r: float | None  # rank correlation of the judge's score with the response length, tokens
    checker_length_r: float | None  # the same for the checker score: what length is worth by the checkers
    length_bias: float | None  # score_length_r - checker_length_r: the judge's pull toward length beyond that


TEACHING_FILE = "teaching.json"  # <run>/judge_teaching/: the judge-teaching record, written last


class JudgeTeaching(BaseModel):
    """<run>/judge_teaching/teaching.json: what the judge was taught from, and how it judges before and after."""

    target: str  # "policy" (self-rewarding: the taught model answers and judges) or "judge" (judge.model)
    base: str  # the checkpoint taught
    taught: str  # the taught model (merged), what judges from iteration 1 on
    template: str  # ref of the template whose format was taught
    sources: list[str]  # train.judge_data
    checker_prompts: int  # train-pool prompts whose responses the checkers labelled
    from_checkers: int  # examples labelled by the checkers
    from_seed: int  # examples from the human seed set
    label_counts: dict[str, int]  # verdict -> examples ("1".."5", or "A"/"B")
    train: TrainResult
    measured_on: str | None  # the prompts whose responses measured the judge
    before: JudgeQuality | None
    after: JudgeQuality | None
    seconds: float


class PairingStats(BaseModel):
    """The manifest's pairing entry: what pairing made of an iteration's judgements (selfplay.pairing)."""

    prompts: int  # prompts considered
    pairs: int
    skipped_few_scored: int  # fewer than two responses with a score
    skipped_tie: int  # best - worst below the minimum margin (with max_length_gap: no pair within it reached the margin)
    mean_margin: float | None  # over the pairs made, judge score units
    revised: int = 0  # pairs whose chosen side is a revision (pairing.revise)


class RewardResult(BaseModel):
    """reward_model/result.json: a reward model trained on the pairs (ppo / rloo / grpo, `selfplay train rm`)."""

    pairs: int  # pairs given
    train_pairs: int  # pairs trained on: given minus held out minus those over max_length
    too_long: int  # training pairs dropped by TRL because chosen or rejected exceeded max_length tokens
    heldout: int  # pairs held out (whole prompts, seeded)
    heldout_accuracy: float | None  # 0..1, fraction of held-out pairs with r(chosen) > r(rejected); None = none held out
    heldout_margin: float | None  # mean r(chosen) - r(rejected) on held-out pairs, reward units
    train_accuracy: float | None  # 0..1, last logged training steps
    loss_first: float | None  # Bradley-Terry loss, first logged steps (ln 2 = 0.693 at chance)
    loss_last: float | None
    steps: int
    nan_steps: int = 0  # optimizer steps skipped because a gradient was NaN/inf
    seconds: float
    base: str  # the checkpoint the reward model started from
    model_dir: str | None  # the saved reward model; None when skipped
    lora: bool
    margin: bool  # trained with the pair margin in the loss
    max_length: int  # tokens; longer inputs are scored on their last max_length tokens
    skipped: str | None = None  # why training did not run, if it did not
    readout: Literal["last", "mean"] = "last"  # the sequence's reward: last token's score, or the response tokens' mean
    pair_mode: Literal["best-worst", "all"] = "best-worst"  # train.reward_model.pairs it was trained with
    weighted: bool = False  # trained with per-pair weights (pairs=all, pair_weight=prompt: 1/C(K,2) per comparison)


@dataclass(frozen=True)
class TrainInputs:
    """One iteration's records; each algorithm learns from the part it needs (pairs, judged responses, prompts)."""

    prompts: Sequence[Prompt] = ()
    generations: Sequence[Generation] = ()
    judgements: Sequence[Judgement] = ()
    pairs: Sequence[Pair] = ()


R = TypeVar("R", bound=BaseModel)


def utc_now() -> str:
    """The time records are stamped with: UTC, ISO 8601, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from any parts, stable across processes and Python versions (unlike hash())."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yields a temporary path beside `path`; renames it over `path` only if the block succeeds."""
    path = Path(path)
    if path.is_dir():  # os.replace would fail only after the block's work, with an OSError
        raise RecordError(f"{path}: is a directory; give a file name to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_main_process() -> bool:
    """False in every process but rank 0 of a distributed launch (accelerate / torchrun set RANK)."""
    return int(os.environ.get("RANK", "0")) == 0


def write_text(path: Path, text: str) -> None:
    """Atomically; the other processes of a distributed launch write nothing (rank 0 writes for all)."""
    if not is_main_process():
        return
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, obj: object) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_records(path: Path, records: Iterable[BaseModel]) -> None:
    if not is_main_process():  # as write_text
        return
    with atomic_path(path) as tmp, jsonlines.open(tmp, mode="w") as out:
        for record in records:
            out.write(record.model_dump(mode="json"))


def append_record(path: Path, record: BaseModel) -> None:
    """Appends one line; used for summary.jsonl, where each row is written once, at iteration end."""
    with jsonlines.open(path, mode="a") as out:
        out.write(record.model_dump(mode="json"))


def read_records(path: Path, cls: type[R], *, unique_ids: bool = True) -> list[R]:
    """Reads a JSONL file of `cls` records; any bad line is a RecordError naming file and line."""
    path = Path(path)
    if not path.exists():
        raise RecordError(f"{path}: no such file")
    records: list[R] = []
    seen: set[str] = set()
    try:
        raw = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise RecordError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:  # a directory, no permission
        raise RecordError(f"{path}: cannot read ({err.strerror})") from None
    for lineno, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise RecordError(f"{path}:{lineno}: malformed JSON ({err.msg})") from None
        try:
            record = cls.model_validate(obj)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "record"
            raise RecordError(f"{path}:{lineno}: {where}: {first['msg']}") from None
        rid = getattr(record, "id", None)
        if unique_ids and rid is not None:
            if rid in seen:
                raise RecordError(f"{path}:{lineno}: duplicate id {rid!r}")
            seen.add(rid)
        records.append(record)
    return records


def read_record(path: Path, cls: type[R]) -> R:
    """Reads one JSON record (train.json, manifest.json, ...); a missing, truncated or malformed file is a
    RecordError naming it."""
    path = Path(path)
    try:
        return cls.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise RecordError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise RecordError(f"{path}: a directory, not a JSON file") from None
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "record"
        raise RecordError(f"{path}: {where}: {first['msg']}") from None
