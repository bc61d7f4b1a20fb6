"""The human-labelled seed set: importing it, labelling pairs in the terminal, and measuring a judge against it.

Accepted files (every problem is a SeedError naming the file and line, or the task in a Label Studio export):

  JSONL, pairwise   {"prompt", "chosen", "rejected"}   optional: id, prompt_id, label, labeler, note, margin
  JSONL, pointwise  {"prompt", "response", "score"}    optional: id, prompt_id, labeler, note
  JSONL, ranking    {"prompt", "ranking": [...]}       K responses best first; an entry that is a list holds responses
                                                       tied at that rank. optional: id, prompt_id, labeler, note
  Label Studio      an export of preference tasks, as JSON (.json: tasks with data and annotations), JSON_MIN (.json:
                    one flat row per annotation) or CSV (.csv: the same rows). Task data holds the prompt and the
                    two texts: the keys of the RLHF preference template (prompt / answer1 / answer2) or of Pairwise
                    Classification (pairText1 / pairText2, or text1 / text2 in older versions; no prompt) are
                    recognised, others are named (LabelStudioKeys, --keys). Each annotation's Pairwise result
                    selects "left" or "right"; annotators' votes are counted (docs/design.md, "Data in and out").

A pairwise line's optional `label` is what `label_pairs` writes: the person's verdict on the pair as shown,
"chosen" (agrees; the default), "rejected" (prefers the other text: the pair is swapped), "tie" or "skip"
(counted, never a pair). Pointwise lines become pairs too: per prompt, the best-scored response against the worst
(pairs_from_scored), and so do ranking lines: the first response against the last (pairs_from_rankings); a reward
model with train.reward_model.pairs=all learns from every pair of a ranking instead (selfplay.pairing). Pairs from
people carry judge="human" and scores 1 (chosen) / 0 (rejected), or margin / 0 with an explicit margin, or the two
scores of a pointwise pair, or for a ranking line its tiers counted from the bottom (K-1 .. 0).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from selfplay.agreement import TIE, Agreement, agreement
from selfplay.errors import SelfplayError
from selfplay.judges.human import HumanLabel
from selfplay.judges.injection import given_response
from selfplay.records import Pair, Prompt, Record, derive_seed, read_records

PAIRWISE_KEYS = {"prompt", "chosen", "rejected"}
PAIRWISE_OPTIONAL = {"id", "prompt_id", "label", "labeler", "note", "margin"}
POINTWISE_KEYS = {"prompt", "response", "score"}
POINTWISE_OPTIONAL = {"id", "prompt_id", "labeler", "note"}
RANKING_KEYS = {"prompt", "ranking"}
RANKING_OPTIONAL = {"id", "prompt_id", "labeler", "note"}
LABELS = ("chosen", "rejected", "tie", "skip")


class SeedError(SelfplayError, ValueError):
    """A seed file that cannot be used; one line naming the file and line (or task)."""


class ScoredResponse(Record):
    """A pointwise human label: one response and its score."""

    id: str
    prompt_id: str
    prompt: str
    response: str
    score: float  # on the labeller's own scale, as given (e.g. 1..5)
    labeler: str | None = None
    note: str | None = None


class RankedResponses(Record):
    """A ranking line: a person's order of K responses to one prompt, best first, ties sharing a tier."""

    id: str
    prompt_id: str
    prompt: str
    tiers: list[list[str]]  # best first; the responses of one tier are tied
    labeler: str | None = None
    note: str | None = None


class SeedSet(BaseModel):
    source: str  # the file it was read from
    pairs: list[Pair]  # every preference, chosen = the person's: pairwise labels, then the pairs from pointwise scores
    scored: list[ScoredResponse]  # pointwise labels
    rankings: list[RankedResponses] = []  # ranking lines
    from_scored: int = 0  # how many of `pairs` (after the pairwise lines') came from pointwise scores (pairs_from_scored)
    from_ranked: int = 0  # how many of `pairs` (the last ones) came from ranking lines (pairs_from_rankings)
    ties: int = 0  # labels that preferred neither text (tie lines; Label Studio tasks whose annotators split evenly)
    skipped: int = 0  # skip lines; Label Studio tasks without a usable annotation
    judge_compared: int = 0  # Label Studio tasks from `selfplay export` (meta holds the run judge's choice) people decided
    judge_agreed: int = 0  # ... of which the people's majority chose what the run's judge chose
    notes: list[str] = []  # what the reader assumed, e.g. a template without a prompt

    def summary(self) -> str:
        """One line for a load message: what became pairs, and from what."""
        text = f"{self.source}: pairs {len(self.pairs)}"
        made = [f"{n} from {what}" for n, what in ((self.from_scored, "scored lines"), (self.from_ranked, "rankings")) if n]
        if made:
            text += f" ({', '.join(made)})"
        text += f", ties {self.ties}, skipped {self.skipped}"
        if self.judge_compared:
            text += f"; people chose as the run's judge did on {self.judge_agreed} of {self.judge_compared} exported pairs"
        return "; ".join([text, *self.notes])

    def given_pairs(self) -> list[Pair]:
        """The pairs labelled as pairs (pairwise lines, Label Studio tasks), without those made from scores or rankings."""
        return self.pairs[: len(self.pairs) - self.from_scored - self.from_ranked]


class LabelStudioKeys(BaseModel):
    """Which task data keys hold the prompt and the two texts shown left and right."""

    prompt: str  # "" = the tasks have no prompt (Pairwise Classification): the pairs' prompt is empty
    left: str
    right: str

    @classmethod
    def parse(cls, text: str) -> LabelStudioKeys:
        """--keys PROMPT,LEFT,RIGHT, e.g. prompt,answer1,answer2 (an empty PROMPT: the tasks have none)."""
        parts = [part.strip() for part in text.split(",")]
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise SeedError(f"--keys {text!r}: expected PROMPT,LEFT,RIGHT data keys, e.g. prompt,answer1,answer2")
        return cls(prompt=parts[0], left=parts[1], right=parts[2])


# Label Studio's stock preference templates, told apart by their data keys (docs/design.md, "Data in and out").
RLHF_KEYS = LabelStudioKeys(prompt="prompt", left="answer1", right="answer2")  # "Human Preference collection for RLHF"
PAIRWISE_TEXT_KEYS = (("pairText1", "pairText2"), ("text1", "text2"))  # "Pairwise Classification", newer and older


def _short_hash(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:12]


def _text(obj: dict, key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise SeedError(f"{where}: {key!r} must be a non-empty string")
    return value


def _optional_text(obj: dict, key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise SeedError(f"{where}: {key!r} must be a string")
    return value


def _number(obj: dict, key: str, where: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SeedError(f"{where}: {key!r} must be a finite number, got {value!r}")
    return float(value)


def human_pair(pair_id: str, prompt_id: str, prompt: str, chosen: str, rejected: str, margin: float = 1.0) -> Pair:
    return Pair(
        id=pair_id,
        prompt_id=prompt_id,
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        chosen_id=f"{pair_id}/chosen",
        rejected_id=f"{pair_id}/rejected",
        chosen_score=margin,
        rejected_score=0.0,
        margin=margin,
        judge="human",
    )


def load_seed(path: Path, keys: LabelStudioKeys | None = None) -> SeedSet:
    """A seed set from a JSONL file, or from a Label Studio export (.json: JSON or JSON_MIN; .csv: CSV); `keys`
    names a Label Studio export's data keys where they are not a stock template's."""
    path = Path(path)
    if not path.exists():
        raise SeedError(f"{path}: no such file")
    if path.is_dir():
        raise SeedError(f"{path}: is a directory; expected a seed file (JSONL, or a Label Studio .json / .csv export)")
    if path.suffix.lower() in (".json", ".csv"):
        return load_label_studio(path, keys)
    if keys is not None:
        raise SeedError(f"{path}: --keys names a Label Studio export's data keys; a JSONL seed file has fixed keys")
    return load_seed_jsonl(path)


def load_seed_jsonl(path: Path) -> SeedSet:
    path = Path(path)
    try:
        raw = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise SeedError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    pairs: list[Pair] = []
    scored: list[ScoredResponse] = []
    rankings: list[RankedResponses] = []
    ties = skipped = 0
    seen: dict[str, int] = {}  # id -> line

    def claim(rid: str, lineno: int, derived: bool) -> None:
        if rid in seen:
            what = "the same texts as" if derived else "the same id as"
            raise SeedError(f"{path}:{lineno}: duplicate {'record' if derived else f'id {rid!r}'} ({what} line {seen[rid]})")
        seen[rid] = lineno

    for lineno, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise SeedError(f"{where}: malformed JSON ({err.msg})") from None
        if not isinstance(obj, dict):
            raise SeedError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        keys = set(obj)
        if keys & {"chosen", "rejected"}:
            required, optional, kind = PAIRWISE_KEYS, PAIRWISE_OPTIONAL, "pairwise"
        elif keys & {"response", "score"}:
            required, optional, kind = POINTWISE_KEYS, POINTWISE_OPTIONAL, "pointwise"
        elif "ranking" in keys:
            required, optional, kind = RANKING_KEYS, RANKING_OPTIONAL, "ranking"
        else:
            raise SeedError(
                f"{where}: neither pairwise (prompt, chosen, rejected) nor pointwise (prompt, response, score) nor a "
                "ranking (prompt, ranking)"
            )
        missing = sorted(required - keys)
        if missing:
            raise SeedError(f"{where}: {kind} line is missing {', '.join(repr(k) for k in missing)}")
        unknown = sorted(keys - required - optional)
        if unknown:
            raise SeedError(
                f"{where}: unknown key {unknown[0]!r} ({kind} lines take {', '.join(sorted(required))}, "
                f"and optionally {', '.join(sorted(optional))})"
            )
        prompt = _text(obj, "prompt", where)
        given_id = _optional_text(obj, "id", where)
        prompt_id = _optional_text(obj, "prompt_id", where) or f"seed-{_short_hash(prompt)}"
        labeler, note = _optional_text(obj, "labeler", where), _optional_text(obj, "note", where)
        if kind == "ranking":
            tiers = _tiers(obj.get("ranking"), where)
            rid = given_id or f"seed-{_short_hash(prompt, *(t for tier in tiers for t in tier))}"
            claim(rid, lineno, derived=given_id is None)
            line_ranking = RankedResponses(id=rid, prompt_id=prompt_id, prompt=prompt, tiers=tiers, labeler=labeler, note=note)
            if len(tiers) < 2:
                ties += 1  # every response tied: no preference
            rankings.append(line_ranking)
            continue
        if kind == "pointwise":
            response, score = _text(obj, "response", where), _number(obj, "score", where)
            rid = given_id or f"seed-{_short_hash(prompt, response)}"
            claim(rid, lineno, derived=given_id is None)
            scored.append(
                ScoredResponse(
                    id=rid, prompt_id=prompt_id, prompt=prompt, response=response, score=score, labeler=labeler, note=note
                )
            )
            continue
        chosen, rejected = _text(obj, "chosen", where), _text(obj, "rejected", where)
        if chosen == rejected:
            raise SeedError(f"{where}: chosen and rejected are the same text; a preference needs two different responses")
        rid = given_id or f"seed-{_short_hash(prompt, chosen, rejected)}"
        claim(rid, lineno, derived=given_id is None)
        label = obj.get("label", "chosen")
        if label not in LABELS:
            raise SeedError(f"{where}: label must be one of {', '.join(LABELS)}, got {label!r}")
        margin = _number(obj, "margin", where) if "margin" in obj else 1.0
        if margin <= 0:
            raise SeedError(f"{where}: margin must be > 0 (how much better chosen is), got {margin}")
        if label == "tie":
            ties += 1
        elif label == "skip":
            skipped += 1
        elif label == "chosen":
            pairs.append(human_pair(rid, prompt_id, prompt, chosen, rejected, margin))
        else:  # the person preferred the text recorded as rejected
            pairs.append(human_pair(rid, prompt_id, prompt, rejected, chosen, margin))
    if not pairs and not scored and not rankings and not ties and not skipped:
        raise SeedError(f"{path}: no records")
    from_scored, from_ranked = pairs_from_scored(scored), pairs_from_rankings(rankings)
    return SeedSet(
        source=str(path),
        pairs=pairs + from_scored + from_ranked,
        scored=scored,
        rankings=rankings,
        from_scored=len(from_scored),
        from_ranked=len(from_ranked),
        ties=ties,
        skipped=skipped,
    )


def _tiers(value: object, where: str) -> list[list[str]]:
    """A ranking line's `ranking`: a list of responses best first, each a non-empty string or a list of them (tied);
    at least two responses in all, each text once."""
    if not isinstance(value, list) or not value:
        raise SeedError(f"{where}: 'ranking' must be a list of responses, best first (a list inside it holds a tie)")
    tiers = []
    for entry in value:
        tier = entry if isinstance(entry, list) else [entry]
        if not tier or not all(isinstance(t, str) and t.strip() for t in tier):
            raise SeedError(f"{where}: each 'ranking' entry must be a non-empty string, or a list of them (a tie); got {entry!r}")
        tiers.append(list(tier))
    texts = [t for tier in tiers for t in tier]
    if len(texts) < 2:
        raise SeedError(f"{where}: a ranking needs at least two responses, got {len(texts)}")
    if len(set(texts)) != len(texts):
        raise SeedError(f"{where}: 'ranking' holds the same response twice; each response is ranked once")
    return tiers


@dataclass
class _Task:
    """One Label Studio task as an export gives it: its data, and the votes of its annotations."""

    where: str  # for errors: the file and the task (JSON) or its first row (JSON_MIN, CSV)
    id: object  # Label Studio's task id; None where the export has none
    data: dict
    votes: Counter[str] = field(default_factory=Counter)  # "left" / "right" -> annotations selecting it
    judge_side: str | None = None  # `selfplay export`'s meta: the data key holding the run judge's choice


def load_label_studio(path: Path, keys: LabelStudioKeys | None = None) -> SeedSet:
    """A Label Studio export of preference tasks (JSON, JSON_MIN or CSV). Each non-cancelled annotation votes left
    or right; the majority is chosen; an even split counts as a tie; a task with no vote is skipped. Without
    `keys`, the data keys of Label Studio's stock templates are recognised."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")  # Label Studio's CSV may start with a byte-order mark
    except UnicodeDecodeError as err:
        raise SeedError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    tasks = list(_csv_tasks(path, text) if path.suffix.lower() == ".csv" else _json_tasks(path, text))
    if not tasks:
        raise SeedError(f"{path}: no tasks")
    notes: list[str] = []
    if keys is None:
        keys = _stock_keys(tasks[0])
        if not keys.prompt:
            notes.append(
                f"the tasks hold no prompt (data keys {keys.left}, {keys.right}: Label Studio's Pairwise Classification); "
                "their pairs' prompt is empty"
            )
    pairs: list[Pair] = []
    ties = skipped = compared = agreed = 0
    seen: dict[str, str] = {}
    for task in tasks:
        for key in (keys.prompt, keys.left, keys.right):
            if key and key not in task.data:
                raise SeedError(
                    f"{task.where}: data has no {key!r} (it has {', '.join(sorted(task.data)) or 'nothing'}); "
                    "name the data keys with --keys PROMPT,LEFT,RIGHT"
                )
        prompt = _text(task.data, keys.prompt, task.where) if keys.prompt else ""
        left, right = _text(task.data, keys.left, task.where), _text(task.data, keys.right, task.where)
        if not task.votes:
            skipped += 1
            continue
        if task.votes["left"] == task.votes["right"]:
            ties += 1
            continue
        left_won = task.votes["left"] > task.votes["right"]
        chosen, rejected = (left, right) if left_won else (right, left)
        if chosen == rejected:
            raise SeedError(f"{task.where}: the two texts are identical; a preference needs two different responses")
        if task.judge_side in (keys.left, keys.right):
            compared += 1
            agreed += task.judge_side == (keys.left if left_won else keys.right)
        rid = f"ls-{task.id}" if task.id is not None else f"ls-{_short_hash(prompt, left, right)}"
        if rid in seen:
            raise SeedError(f"{task.where}: duplicate task (same id as {seen[rid].rpartition(': ')[2]})")
        seen[rid] = task.where
        pairs.append(human_pair(rid, f"seed-{_short_hash(prompt)}", prompt, chosen, rejected))
    return SeedSet(
        source=str(path),
        pairs=pairs,
        scored=[],
        ties=ties,
        skipped=skipped,
        judge_compared=compared,
        judge_agreed=agreed,
        notes=notes,
    )


def _stock_keys(task: _Task) -> LabelStudioKeys:
    """The keys of the stock template whose data keys the (first) task has."""
    data = task.data
    if RLHF_KEYS.left in data and RLHF_KEYS.right in data:
        return RLHF_KEYS
    for left, right in PAIRWISE_TEXT_KEYS:
        if left in data and right in data:
            return LabelStudioKeys(prompt="prompt" if "prompt" in data else "", left=left, right=right)
    raise SeedError(
        f"{task.where}: data has no 'prompt' (it has {', '.join(sorted(data)) or 'nothing'}), nor the keys of a stock "
        "Label Studio template (prompt, answer1, answer2 or pairText1, pairText2); "
        "name the data keys with --keys PROMPT,LEFT,RIGHT"
    )


def _vote(selected: object, where: str) -> str:
    if selected not in ("left", "right"):
        raise SeedError(f"{where}: pairwise result selected {selected!r}, expected 'left' or 'right'")
    return str(selected)


def _json_tasks(path: Path, text: str) -> Iterator[_Task]:
    """JSON (tasks with data and annotations) or JSON_MIN (one flat row per annotation) export."""
    try:
        items = json.loads(text)
    except json.JSONDecodeError as err:
        raise SeedError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from None
    if not isinstance(items, list):
        raise SeedError(f"{path}: expected a Label Studio JSON export (a list of tasks), got {type(items).__name__}")
    if items and isinstance(items[0], dict) and not ({"data", "annotations"} & set(items[0])):
        yield from _flat_tasks(path, ((f"{path}: item #{i}", item) for i, item in enumerate(items)), parse=False)
        return
    for index, task in enumerate(items):
        where = f"{path}: task #{index}" + (f" (id {task.get('id')})" if isinstance(task, dict) and "id" in task else "")
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise SeedError(f"{where}: not a Label Studio task (no 'data' object)")
        votes: Counter[str] = Counter()
        for annotation in task.get("annotations") or []:
            if not isinstance(annotation, dict) or annotation.get("was_cancelled"):
                continue
            for result in annotation.get("result") or []:
                if isinstance(result, dict) and result.get("type") == "pairwise":
                    votes[_vote((result.get("value") or {}).get("selected"), where)] += 1
        ours = (task.get("meta") or {}).get("selfplay") if isinstance(task.get("meta"), dict) else None
        side = ours.get("chosen") if isinstance(ours, dict) else None
        yield _Task(where, task.get("id"), task["data"], votes, side if isinstance(side, str) else None)


# JSON_MIN and CSV rows carry these beside the task's data and the control tags' results (Label Studio's converter).
ROW_FIELDS = {"id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time", "agreement", "history"}


def _flat_tasks(path: Path, rows: Iterator[tuple[str, object]], parse: bool) -> Iterator[_Task]:
    """JSON_MIN / CSV rows, one per annotation (or per task without one), grouped into tasks by id. A row's
    Pairwise result is the value [{"selected": ...}] under the control's name (in CSV, that JSON as text)."""
    tasks: dict[object, _Task] = {}
    for where, row in rows:
        if not isinstance(row, dict):
            raise SeedError(f"{where}: not a Label Studio JSON_MIN row (a JSON object), got {type(row).__name__}")
        data, selected = {}, []
        for key, value in row.items():
            result = _pairwise_result(value, parse)
            if result is not None:
                selected += result
            elif key not in ROW_FIELDS:
                data[key] = value
        tid = row.get("id") if row.get("id") not in (None, "") else where
        task = tasks.get(tid)
        if task is None:
            task = tasks[tid] = _Task(f"{where} (task {tid})" if tid != where else where, row.get("id"), data)
        elif task.data != data:
            raise SeedError(f"{where}: task {tid} has other data than in {task.where.rpartition(': ')[2]}")
        for value in selected:
            task.votes[_vote(value, where)] += 1
    yield from tasks.values()


def _pairwise_result(value: object, parse: bool) -> list[object] | None:
    """The selections in a JSON_MIN / CSV cell holding a Pairwise result, else None (the cell is data)."""
    if parse:  # CSV: results are JSON text; data cells are plain text
        if not isinstance(value, str) or not value.startswith(("[{", "{")) or '"selected"' not in value:
            return None
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    regions = value if isinstance(value, list) else [value]
    if regions and all(isinstance(r, dict) and "selected" in r for r in regions):
        return [r["selected"] for r in regions if isinstance(r, dict)]
    return None


def _csv_tasks(path: Path, text: str) -> Iterator[_Task]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        if not reader.fieldnames:
            raise SeedError(f"{path}: no header row; expected a Label Studio CSV export")
        rows = [(f"{path}:{reader.line_num}", row) for row in reader]
    except csv.Error as err:
        raise SeedError(f"{path}:{reader.line_num}: not CSV ({err})") from None
    if any(None in row for _, row in rows):  # DictReader files the cells past the header under None
        where = next(w for w, row in rows if None in row)
        raise SeedError(f"{where}: more cells than the header has columns")
    yield from _flat_tasks(path, iter(rows), parse=True)


def pairs_from_scored(scored: Sequence[ScoredResponse], min_margin: float = 0.0) -> list[Pair]:
    """Best vs worst response per prompt from pointwise human scores; gaps of min_margin or less are ties,
    skipped (as our pairing does for judge scores)."""
    by_prompt: dict[str, list[ScoredResponse]] = {}
    for s in scored:
        by_prompt.setdefault(s.prompt_id, []).append(s)
    pairs = []
    for prompt_id, group in by_prompt.items():
        best, worst = max(group, key=lambda s: s.score), min(group, key=lambda s: s.score)
        if best.score - worst.score <= min_margin or best.response == worst.response:
            continue
        pairs.append(
            Pair(
                id=f"{prompt_id}/p",
                prompt_id=prompt_id,
                prompt=best.prompt,
                chosen=best.response,
                rejected=worst.response,
                chosen_id=best.id,
                rejected_id=worst.id,
                chosen_score=best.score,
                rejected_score=worst.score,
                margin=best.score - worst.score,
                judge="human",
            )
        )
    return pairs


def pairs_from_rankings(rankings: Sequence[RankedResponses]) -> list[Pair]:
    """Best vs worst of each ranking line: the first response of its top tier against the first of its bottom one
    (a line whose responses are all tied gives none). Scored by tier from the bottom, so the margin is the tiers
    between them."""
    pairs = []
    for line in rankings:
        if len(line.tiers) < 2:
            continue
        top = float(len(line.tiers) - 1)
        pairs.append(
            Pair(
                id=f"{line.id}/p",
                prompt_id=line.prompt_id,
                prompt=line.prompt,
                chosen=line.tiers[0][0],
                rejected=line.tiers[-1][0],
                chosen_id=f"{line.id}/r0.0",
                rejected_id=f"{line.id}/r{len(line.tiers) - 1}.0",
                chosen_score=top,
                rejected_score=0.0,
                margin=top,
                judge="human",
            )
        )
    return pairs


# ---------------------------------------------------------------------------------------------------------------
# Agreement between a judge and people (the computation and its record: selfplay.agreement)


def judge_human_agreement(
    pairs: Sequence[Pair],
    chosen_scores: Sequence[float | None],
    rejected_scores: Sequence[float | None],
    seed: int,
    tie_margin: float = 0.0,
) -> Agreement:
    """How well a judge's scores reproduce people's pairwise choices. `pairs` are human-labelled (chosen = the
    person's preference); the scores are the judge's for each pair's chosen and rejected response.

    Each pair is shown in a seeded order, first/second, before comparing: with the person's choice always in
    one slot, the human labels would be constant and kappa would be 0 whatever the judge did. A score gap of
    tie_margin or less is a judge tie; a missing score leaves the pair out (counted as unjudged)."""
    if not len(pairs) == len(chosen_scores) == len(rejected_scores):
        raise ValueError("judge_human_agreement: pairs, chosen_scores and rejected_scores differ in length")
    judge_labels: list[str | None] = []
    human_labels: list[str] = []
    for pair, cs, rs in zip(pairs, chosen_scores, rejected_scores, strict=True):
        chosen_first = derive_seed(seed, "agreement-order", pair.id) % 2 == 0
        human_labels.append("first" if chosen_first else "second")
        if cs is None or rs is None:
            judge_labels.append(None)
            continue
        gap = cs - rs  # > 0: the judge prefers the person's choice
        judge_labels.append(TIE if abs(gap) <= tie_margin else ("first" if (gap > 0) == chosen_first else "second"))
    return agreement(judge_labels, human_labels, seed=seed)


def judge_seed_agreement(judge, pairs: Sequence[Pair], seed: int) -> Agreement:
    """Run a loop judge (judges.Judge) on human-labelled pairs and measure its agreement with the people: each
    pair's two texts are judged as the responses to its prompt (pairwise kinds compare them in both orders)."""
    prompts, generations = [], []
    for i, pair in enumerate(pairs):
        pid = f"seed-{i:04d}"  # one prompt per pair, so a pairwise judge compares exactly the pair's two texts
        prompts.append(Prompt(id=pid, text=pair.prompt, source="seed"))
        generations += [given_response(pid, 0, pair.chosen, "human-seed"), given_response(pid, 1, pair.rejected, "human-seed")]
    scores = {j.generation_ids[0]: j.score for j in judge.judge(prompts, generations) if len(j.generation_ids) == 1}
    return judge_human_agreement(
        pairs, [scores.get(f"{p.id}/g0") for p in prompts], [scores.get(f"{p.id}/g1") for p in prompts], seed
    )


# ---------------------------------------------------------------------------------------------------------------
# Labelling in the terminal


class LabelSession(BaseModel):
    labelled: int  # labels written in this session (tie and skip included)
    already: int  # pairs found labelled in out_path and not shown again
    remaining: int  # pairs still unlabelled (the session was quit)
    counts: dict[str, int]  # this session's labels: chosen / rejected / tie / skip


def label_pairs(
    pairs: Sequence[Pair],
    out_path: Path,
    input_fn: Callable[[str], str] = input,
    output_fn: Callable[[str], None] = print,
    labeler: str | None = None,
    seed: int = 0,
) -> LabelSession:
    """Shows each pair's prompt and its two responses (as A and B, in a seeded order, so the position gives
    nothing away) and asks which is better: a, b, t (tie), s (skip), q (quit). Each answer is appended to
    out_path at once, so quitting or a crash loses nothing; running again skips pairs already in out_path.
    out_path is a seed file: `load_seed` reads it."""
    out_path = Path(out_path)
    done = {label.id for label in read_records(out_path, HumanLabel)} if out_path.exists() else set()
    todo = [p for p in pairs if p.id not in done]
    counts = {label: 0 for label in LABELS}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    for i, pair in enumerate(todo):
        chosen_is_a = derive_seed(seed, "label-order", pair.id) % 2 == 0
        a, b = (pair.chosen, pair.rejected) if chosen_is_a else (pair.rejected, pair.chosen)
        output_fn(f"\n[{i + 1}/{len(todo)}] {pair.id}\n--- prompt ---\n{pair.prompt}\n--- A ---\n{a}\n--- B ---\n{b}")
        while True:
            try:
                answer = input_fn("Which is better? [a] A, [b] B, [t] tie, [s] skip, [q] quit: ").strip().lower()
            except EOFError:
                answer = "q"
            if answer in ("a", "b", "t", "s", "q"):
                break
            output_fn(f"  {answer!r}? type a, b, t, s or q")
        if answer == "q":
            return LabelSession(
                labelled=sum(counts.values()), already=len(pairs) - len(todo), remaining=len(todo) - i, counts=counts
            )
        if answer in ("a", "b"):
            label = "chosen" if (answer == "a") == chosen_is_a else "rejected"
        else:
            label = "tie" if answer == "t" else "skip"
        line = HumanLabel(
            id=pair.id,
            prompt_id=pair.prompt_id,
            prompt=pair.prompt,
            chosen=pair.chosen,
            rejected=pair.rejected,
            label=label,
            labeler=labeler,
        )
        with out_path.open("a", encoding="utf-8") as out:  # only the fields a pair line has: load_seed reads it back
            out.write(line.model_dump_json(exclude_none=True) + "\n")
        counts[label] += 1
    return LabelSession(labelled=sum(counts.values()), already=len(pairs) - len(todo), remaining=0, counts=counts)
