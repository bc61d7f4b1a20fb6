"""Pointwise judge: an LLM rates each response on a rubric (Self-Rewarding LMs, Yuan et al. 2024)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from selfplay.config import JudgeConfig
from selfplay.generation import Generator, chat_ids
from selfplay.judges.base import EMPTY, is_empty
from selfplay.records import Generation, Judgement, Prompt
from selfplay.templates import Template, TemplateError


def parse_score(template: Template, text: str) -> float | None:
    """The template's verdict as a number inside its scale, else None."""
    verdict = template.parse_verdict(text)
    if verdict is None:
        return None
    try:
        value = float(verdict)
    except ValueError:
        return None
    lo, hi = template.scale or (-math.inf, math.inf)
    return value if lo <= value <= hi else None


def score_token_ids(tokenizer, scale: tuple[float, float]) -> dict[int, int]:
    """token id -> score for every single-token spelling of each integer score ('3' and ' 3')."""
    ids: dict[int, int] = {}
    for value in range(int(scale[0]), int(scale[1]) + 1):
        for spelling in (str(value), f" {value}"):
            tokens = tokenizer(spelling, add_special_tokens=False)["input_ids"]
            if len(tokens) == 1:
                ids[tokens[0]] = value
    return ids


def expected_score(logprobs: dict[int, float], values: dict[int, int]) -> float | None:
    """Probability-weighted mean score over the score tokens, renormalised; None if none was seen."""
    mass: dict[int, float] = {}
    for token, logprob in logprobs.items():
        if token in values:
            mass[values[token]] = mass.get(values[token], 0.0) + math.exp(logprob)
    total = sum(mass.values())
    if total <= 0.0:
        return None
    return sum(v * p for v, p in mass.items()) / total


@dataclass
class PointwiseJudge:
    gen: Generator
    template: Template
    cfg: JudgeConfig

    def inputs(self, prompts: Sequence[Prompt], generations: Sequence[Generation]) -> dict[str, str]:
        """Judgement id -> the exact user message the judge model reads (before its chat template)."""
        by_id = {p.id: p for p in prompts}
        return {
            f"{g.id}/j": self.template.render(prompt=by_id[g.prompt_id].text, response=g.text)
            for g in generations
            if not is_empty(g)
        }

    def judge(self, prompts: Sequence[Prompt], generations: Sequence[Generation]) -> list[Judgement]:
        rendered = self.inputs(prompts, generations)
        match self.cfg.method:
            case "text":
                judged = self._by_text(list(rendered.values()))
            case "logprob":
                judged = self._by_logprob(list(rendered.values()))
        results = dict(zip(rendered, judged, strict=True))
        out = []
        for g in generations:
            raw, scores = results.get(f"{g.id}/j", ([EMPTY], [None]))
            parsed = [s for s in scores if s is not None]
            status = "ok" if parsed else ("error" if f"{g.id}/j" not in results else "unparseable")
            out.append(
                Judgement(
                    id=f"{g.id}/j",
                    prompt_id=g.prompt_id,
                    generation_ids=[g.id],
                    judge="pointwise",
                    method=self.cfg.method,
                    raw=raw,
                    sample_scores=scores,
                    score=sum(parsed) / len(parsed) if parsed else None,
                    status=status,
                    template=self.template.ref,
                    template_hash=self.template.hash,
                )
            )
        return out

    def _by_text(self, rendered: list[str]) -> list[tuple[list[str], list[float | None]]]:
        ids = [chat_ids(self.gen.tokenizer, text) for text in rendered]
        outputs = self.gen.complete(ids, n=self.cfg.samples, temperature=self.cfg.temperature, max_tokens=self.cfg.max_tokens)
        return [(raws, [parse_score(self.template, r) for r in raws]) for raws in outputs]

    def _by_logprob(self, rendered: list[str]) -> list[tuple[list[str], list[float | None]]]:
        if not self.template.score_prefix or not self.template.scale:
            raise TemplateError(f"template {self.template.ref}: logprob scoring needs score_prefix and scale")
        values = score_token_ids(self.gen.tokenizer, self.template.scale)
        ids = [chat_ids(self.gen.tokenizer, text, assistant_prefix=self.template.score_prefix) for text in rendered]
        out = []
        for logprobs in self.gen.next_token_logprobs(ids, list(values)):
            score = expected_score(logprobs, values)
            # Raw = the score-token probabilities the expectation came from, for inspection.
            probs: dict[int, float] = {}
            for token, lp in logprobs.items():
                probs[values[token]] = round(probs.get(values[token], 0.0) + math.exp(lp), 6)
            out.append(([json.dumps({"score_token_probs": dict(sorted(probs.items()))})], [score]))
        return out
