"""Human judge: scores or pairs from a labels file."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from selfplay.config import resolve_data_path
from selfplay.judges.base import JudgeError
from selfplay.records import Generation, Judgement, Prompt


class HumanLabel(BaseModel):
    """One line of a labels file: a score for a response, or a preference between two responses."""

    model_config = ConfigDict(extra="ignore", frozen=True)  # labeler, note, ... are the labeller's own fields

    prompt: str = Field(min_length=1)
    response: str | None = None
    score: float | None = Field(None, allow_inf_nan=False)
    chosen: str | None = None
    rejected: str | None = None

    @model_validator(mode="after")
    def _score_or_pair(self) -> HumanLabel:
        is_score = self.response is not None and self.score is not None
        is_pair = self.chosen is not None and self.rejected is not None
        if is_score == is_pair:
            raise ValueError("expected {prompt, response, score} or {prompt, chosen, rejected}")
        if is_pair and self.chosen.strip() == self.rejected.strip():
            raise ValueError("chosen and rejected are the same text")
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
    Pair labels: score = win rate over the labelled pairs a response is in (0..1)."""

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
                raise JudgeError(f"{self.path}:{lineno}: response {text.strip()[:60]!r} is not among the {n} generations of prompt {prompt.id}")
            return found

        for lineno, label in self.labels:
            prompt = prompt_by_text.get(label.prompt.strip())
            if prompt is None:
                continue
            line = label.model_dump_json(exclude_none=True)
            if label.score is not None:
                kinds[prompt.id].add("score")
                for g in find(lineno, prompt, label.response):
                    got[g.id][0].append(line)
                    got[g.id][1].append(label.score)
            else:
                kinds[prompt.id].add("pair")
                for text, win in ((label.chosen, 1.0), (label.rejected, 0.0)):
                    for g in find(lineno, prompt, text):
                        got[g.id][0].append(line)
                        got[g.id][1].append(win)
            if len(kinds[prompt.id]) > 1:
                raise JudgeError(f"{self.path}:{lineno}: prompt {prompt.id} has both score and pair labels; their scales differ, use one kind per prompt")
        out = []
        for g in generations:
            raw, values = got.get(g.id, (["no human label"], []))
            out.append(Judgement(
                id=f"{g.id}/j", prompt_id=g.prompt_id, generation_ids=[g.id], judge="human", method="label", raw=raw,
                sample_scores=list(values), score=sum(values) / len(values) if values else None,
                status="ok" if values else "unparseable",
            ))
        return out
