"""Human judge: scores or pairs from a labels file."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from selfplay.config import resolve_data_path
from selfplay.judges.base import JudgeError
from selfplay.records import Generation, Judgement, Prompt


class HumanLabel(BaseModel):
    """One line of a human labels file: a score for a response, or a person's verdict on two responses. The
    human judge reads such files (judge.labels), as does the seed set (selfplay.seed.load_seed, which also
    takes Label Studio exports); `selfplay label` (seed.label_pairs) writes pair lines with ids and verdict."""

    model_config = ConfigDict(extra="ignore", frozen=True)  # note, margin, ... are the labeller's own fields

    prompt: str = Field(min_length=1)
    response: str | None = None
    score: float | None = Field(None, allow_inf_nan=False)  # on the labeller's own scale, as given (e.g. 1..5)
    chosen: str | None = None  # as written, e.g. the AI judge's preference; `label` says whether the person agrees
    rejected: str | None = None
    label: Literal["chosen", "rejected", "tie", "skip"] | None = None  # pair lines: None = chosen; rejected = the
    #                                                                      person prefers the `rejected` text
    id: str | None = None  # label_pairs: the pair's id
    prompt_id: str | None = None
    labeler: str | None = None

    @model_validator(mode="after")
    def _score_or_pair(self) -> HumanLabel:
        is_score = self.response is not None and self.score is not None
        is_pair = self.chosen is not None and self.rejected is not None
        if is_score == is_pair:
            raise ValueError("expected {prompt, response, score} or {prompt, chosen, rejected}")
        if self.chosen is not None and self.rejected is not None and self.chosen.strip() == self.rejected.strip():
            raise ValueError("chosen and rejected are the same text")
        if is_score and self.label is not None:
            raise ValueError("label is a verdict on a pair; a score line takes none")
        return self


def load_labels(path: str | Path) -> list[tuple[int, HumanLabel]]:
    """(line number, label) for every line; any bad line is a JudgeError naming file and line."""
    path = resolve_data_path(str(path))
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except FileNotFoundError:
        raise JudgeError(f"{path}: no such labels file") from None
    except UnicodeDecodeError as err:
        raise JudgeError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    labels = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            labels.append((lineno, HumanLabel.model_validate_json(line)))
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            msg = str(first["msg"]).removeprefix("Value error, ")
            raise JudgeError(f"{path}:{lineno}: {where + ': ' if where else ''}{msg}") from None
    if not labels:
        raise JudgeError(f"{path}: no labels")
    return labels


@dataclass
class HumanJudge:
    """Human labels keyed by prompt text and response text (whitespace at the ends ignored). Labels of
    prompts not in this batch are ignored (one file may cover many iterations); a label naming a
    response that is not among its prompt's generations is an error. Score labels: score = their mean.
    Pair labels: score = win rate over the labelled pairs a response is in (0..1), the person's preferred
    text winning (label "rejected" swaps the pair); tie and skip lines prefer neither and are passed over."""

    path: str
    labels: list[tuple[int, HumanLabel]]

    def judge(self, prompts: Sequence[Prompt], generations: Sequence[Generation]) -> list[Judgement]:
        prompt_by_text = {p.text.strip(): p for p in prompts}
        gens_by_text: dict[tuple[str, str], list[Generation]] = defaultdict(list)
        for g in generations:
            gens_by_text[(g.prompt_id, g.text.strip())].append(g)
        got: dict[str, tuple[list[str], list[float]]] = defaultdict(lambda: ([], []))
        kinds: dict[str, set[str]] = defaultdict(set)

        def find(lineno: int, prompt: Prompt, text: str) -> list[Generation]:
            found = gens_by_text.get((prompt.id, text.strip()))
            if not found:
                n = sum(g.prompt_id == prompt.id for g in generations)
                raise JudgeError(
                    f"{self.path}:{lineno}: response {text.strip()[:60]!r} is not among the {n} generations of prompt {prompt.id}"
                )
            return found

        for lineno, label in self.labels:
            prompt = prompt_by_text.get(label.prompt.strip())
            if prompt is None:
                continue
            line = label.model_dump_json(exclude_none=True)
            if label.score is not None and label.response is not None:  # a score label has its response (validated)
                kinds[prompt.id].add("score")
                for g in find(lineno, prompt, label.response):
                    got[g.id][0].append(line)
                    got[g.id][1].append(label.score)
            elif label.chosen is not None and label.rejected is not None and label.label not in ("tie", "skip"):
                kinds[prompt.id].add("pair")
                preferred, other = (label.rejected, label.chosen) if label.label == "rejected" else (label.chosen, label.rejected)
                for text, win in ((preferred, 1.0), (other, 0.0)):
                    for g in find(lineno, prompt, text):
                        got[g.id][0].append(line)
                        got[g.id][1].append(win)
            if len(kinds[prompt.id]) > 1:
                raise JudgeError(
                    f"{self.path}:{lineno}: prompt {prompt.id} has both score and pair labels; their scales differ, "
                    "use one kind per prompt"
                )
        out = []
        for g in generations:
            raw, values = got.get(g.id, (["no human label"], []))
            out.append(
                Judgement(
                    id=f"{g.id}/j",
                    prompt_id=g.prompt_id,
                    generation_ids=[g.id],
                    judge="human",
                    method="label",
                    raw=raw,
                    sample_scores=list(values),
                    score=sum(values) / len(values) if values else None,
                    status="ok" if values else "unparseable",
                )
            )
        return out
