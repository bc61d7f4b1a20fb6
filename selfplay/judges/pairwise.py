"""Pairwise judge: an LLM compares two responses, in both orders; score = win rate. Also the statistics
of its ordered comparisons (order agreement; position bias is the monitor's, selfplay.monitors)."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from selfplay.config import JudgeConfig
from selfplay.constitutions import Constitution
from selfplay.generation import Generator, chat_ids
from selfplay.judges.base import EMPTY, JudgeError, is_empty
from selfplay.monitors import is_comparison, position_bias
from selfplay.records import Generation, Judgement, Prompt, derive_seed
from selfplay.templates import Template, TemplateError

Verdict = Literal["first", "second"] | None  # the presented response a comparison prefers; None = no verdict or a dead heat


def comparison_order(
    generations: Sequence[Generation], mode: Literal["round-robin", "anchor"]
) -> list[tuple[Generation, Generation]]:
    """Ordered (first, second) comparisons among one prompt's non-empty responses, each pair in both orders.

    round-robin: every pair, N(N-1) comparisons. anchor: the first non-empty response against each other
    one, 2(N-1) comparisons: cheaper, but only the anchor's score uses more than one opponent.
    """
    live = [g for g in generations if not is_empty(g)]
    match mode:
        case "round-robin":
            pairs = [(a, b) for i, a in enumerate(live) for b in live[i + 1 :]]
        case "anchor":
            pairs = [(live[0], b) for b in live[1:]] if live else []
    return [order for a, b in pairs for order in ((a, b), (b, a))]


def win_rates(comparisons: Sequence[Judgement]) -> dict[str, tuple[list[str], list[float | None]]]:
    """Generation id -> (ids of the comparisons it took part in, its win value in each; None = unparsed).

    A comparison's score is P(first presented wins); the second's win value is 1 - score. Pure.
    """
    out: dict[str, tuple[list[str], list[float | None]]] = defaultdict(lambda: ([], []))
    for c in comparisons:
        first, second = c.generation_ids
        for gid, win in ((first, c.score), (second, None if c.score is None else 1.0 - c.score)):
            out[gid][0].append(c.id)
            out[gid][1].append(win)
    return dict(out)


def _winner(a: str, b: str, p_first: float) -> str:
    return a if p_first > 0.5 else b if p_first < 0.5 else "tie"


def order_agreement(judgements: Sequence[Judgement]) -> float | None:
    """Fraction of response pairs, judged in both orders with both parsed, whose two verdicts name the
    same winner (or both a tie). None when no pair has both orders parsed."""
    scores = {tuple(j.generation_ids): j.score for j in judgements if is_comparison(j) and j.score is not None}
    agree = total = 0
    for (a, b), s in scores.items():
        if a < b and (b, a) in scores:
            total += 1
            agree += _winner(a, b, s) == _winner(b, a, scores[(b, a)])
    return agree / total if total else None


def pairwise_stats(judgements: Sequence[Judgement]) -> dict:
    """For the manifest: comparisons made and parsed, position bias, order agreement."""
    comparisons = [j for j in judgements if is_comparison(j)]
    bias, agree = position_bias(comparisons), order_agreement(comparisons)
    return {
        "comparisons": len(comparisons),
        "comparisons_parsed": sum(j.score is not None for j in comparisons),
        "position_bias": None if bias is None else round(bias, 3),
        "order_agreement": None if agree is None else round(agree, 3),
    }


def verdict_win(verdict: str | None) -> float | None:
    """P(first wins) from a template's parsed verdict: A (or 1, FIRST) 1.0, B (2, SECOND) 0.0, else None.
    Case, surrounding space and brackets, asterisks or a full stop ("[a]", "**B**.") are ignored, so a template
    whose regex captures a little more than the letter still parses."""
    v = (verdict or "").strip().strip("[]()*.").upper()
    return 1.0 if v in ("A", "1", "FIRST") else 0.0 if v in ("B", "2", "SECOND") else None


def verdict_token_ids(tokenizer) -> dict[int, str]:
    """token id -> 'A' or 'B' for every single-token spelling ('A' and ' A')."""
    ids: dict[int, str] = {}
    for verdict in ("A", "B"):
        for spelling in (verdict, f" {verdict}"):
            tokens = tokenizer(spelling, add_special_tokens=False)["input_ids"]
            if len(tokens) == 1:
                ids[tokens[0]] = verdict
    return ids


@dataclass
class PairwiseJudge:
    """Pairwise LLM judge; with a constitution, each prompt's comparisons ask one sampled principle's
    question. One principle per prompt (not per comparison) keeps a prompt's win rates on one scale
    and lets its pair name the principle that produced it."""

    gen: Generator
    template: Template
    cfg: JudgeConfig
    seed: int = 0
    constitution: Constitution | None = None

    @property
    def name(self) -> str:
        """What judged, for reports: "pairwise@1 on <model dir name>"."""
        return f"{self.template.ref} on {Path(self.gen.model_dir).name}"

    def _question(self, prompt_id: str) -> tuple[str | None, str | None]:
        if self.constitution is None:
            return None, None
        principle = self.constitution.sample(derive_seed(self.seed, prompt_id))
        return principle.id, principle.comparison

    def _render(self, prompt_id: str, prompt: str, first: str, second: str) -> str:
        _, question = self._question(prompt_id)
        extra = {"question": question} if question is not None else {}
        return self.template.render(prompt=prompt, response_a=first, response_b=second, **extra)

    def _plan(
        self, prompts: Sequence[Prompt], generations: Sequence[Generation]
    ) -> list[tuple[Prompt, Generation, Generation, str]]:
        """(prompt, first, second, rendered judge message) for every ordered comparison."""
        by_prompt: dict[str, list[Generation]] = defaultdict(list)
        for g in generations:
            by_prompt[g.prompt_id].append(g)
        return [
            (p, a, b, self._render(p.id, p.text, a.text, b.text))
            for p in prompts
            for a, b in comparison_order(by_prompt[p.id], self.cfg.pairwise_mode)
        ]

    def _verdicts(self, rendered: list[str]) -> list[tuple[list[str], list[float | None]]]:
        """Per judge message: the raw outputs and, per output, P(first wins) (None = unparseable)."""
        match self.cfg.method:
            case "text":
                return self._by_text(rendered)
            case "logprob":
                return self._by_logprob(rendered)

    def compare(self, prompt: str, first: str, second: str) -> Verdict:
        return self.compare_many([(prompt, first, second)])[0][0]

    def compare_many(self, items: Sequence[tuple[str, str, str]]) -> list[tuple[Verdict, str]]:
        """Comparisons of given texts, (prompt, first, second) each, rather than of one prompt's sampled
        responses (evaluation compares two policies' answers this way): per comparison, the verdict as
        presented and the judge's raw output. One output each, so judge.samples must be 1. With a
        constitution, the principle is drawn per prompt text."""
        out: list[tuple[Verdict, str]] = []
        for score, raw in self.preferences(items):
            verdict: Verdict = None if score is None or score == 0.5 else "first" if score > 0.5 else "second"
            out.append((verdict, raw))
        return out

    def preferences(self, items: Sequence[tuple[str, str, str]]) -> list[tuple[float | None, str]]:
        """As compare_many, but per comparison P(the first-presented response wins) instead of the verdict:
        P(A) / (P(A) + P(B)) after the forced prefix with the logprob method, 1 or 0 with text (None = none).
        Evaluation averages it over both presentations, which cancels a constant pull toward one position."""
        if self.cfg.samples != 1:
            raise JudgeError(
                f"comparing given texts reads one verdict per comparison; judge.samples is {self.cfg.samples}, not 1"
            )
        judged = self._verdicts([self._render(prompt, prompt, a, b) for prompt, a, b in items])
        return [(scores[0] if scores else None, raws[0] if raws else "") for raws, scores in judged]

    def inputs(self, prompts: Sequence[Prompt], generations: Sequence[Generation]) -> dict[str, str]:
        """Comparison id "<first>|<second>" -> the exact user message the judge model reads."""
        return {f"{a.id}|{b.id}": text for _, a, b, text in self._plan(prompts, generations)}

    def judge(self, prompts: Sequence[Prompt], generations: Sequence[Generation]) -> list[Judgement]:
        plan = self._plan(prompts, generations)
        judged = self._verdicts([text for *_, text in plan])
        const_hash = self.constitution.hash if self.constitution else None
        common = dict(
            judge=self.cfg.kind, template=self.template.ref, template_hash=self.template.hash, constitution_hash=const_hash
        )
        comparisons = []
        for (p, a, b, _), (raw, scores) in zip(plan, judged, strict=True):
            parsed = [s for s in scores if s is not None]
            comparisons.append(
                Judgement(
                    id=f"{a.id}|{b.id}",
                    prompt_id=p.id,
                    generation_ids=[a.id, b.id],
                    method=self.cfg.method,
                    raw=raw,
                    sample_scores=scores,
                    score=sum(parsed) / len(parsed) if parsed else None,
                    status="ok" if parsed else "unparseable",
                    principle=self._question(p.id)[0],
                    **common,
                )
            )
        rates = win_rates(comparisons)
        per_response = []
        for g in generations:
            principle = self._question(g.prompt_id)[0]
            if is_empty(g) or g.id not in rates:
                reason = EMPTY if is_empty(g) else "no other non-empty response to compare with"
                per_response.append(
                    Judgement(
                        id=f"{g.id}/j",
                        prompt_id=g.prompt_id,
                        generation_ids=[g.id],
                        method="winrate",
                        raw=[reason],
                        sample_scores=[None],
                        score=None,
                        status="error",
                        principle=principle,
                        **common,
                    )
                )
                continue
            ids, wins = rates[g.id]
            parsed = [w for w in wins if w is not None]
            # raw = the comparisons this win rate came from; sample_scores = its win value in each.
            per_response.append(
                Judgement(
                    id=f"{g.id}/j",
                    prompt_id=g.prompt_id,
                    generation_ids=[g.id],
                    method="winrate",
                    raw=ids,
                    sample_scores=wins,
                    score=sum(parsed) / len(parsed) if parsed else None,
                    status="ok" if parsed else "unparseable",
                    principle=principle,
                    **common,
                )
            )
        return comparisons + per_response

    def _by_text(self, rendered: list[str]) -> list[tuple[list[str], list[float | None]]]:
        ids = [chat_ids(self.gen.tokenizer, text) for text in rendered]
        outputs = self.gen.complete(ids, n=self.cfg.samples, temperature=self.cfg.temperature, max_tokens=self.cfg.max_tokens)
        return [(raws, [verdict_win(self.template.parse_verdict(r)) for r in raws]) for raws in outputs]

    def _by_logprob(self, rendered: list[str]) -> list[tuple[list[str], list[float | None]]]:
        if not self.template.score_prefix:
            raise TemplateError(f"template {self.template.ref}: logprob judging needs score_prefix (e.g. 'Verdict: ')")
        verdicts = verdict_token_ids(self.gen.tokenizer)
        ids = [chat_ids(self.gen.tokenizer, text, assistant_prefix=self.template.score_prefix) for text in rendered]
        out = []
        for logprobs in self.gen.next_token_logprobs(ids, list(verdicts)):
            probs = {"A": 0.0, "B": 0.0}
            for token, lp in logprobs.items():
                probs[verdicts[token]] += math.exp(lp)
            total = probs["A"] + probs["B"]
            score = probs["A"] / total if total > 0 else None  # P(first wins), renormalised over A and B
            out.append(([json.dumps({"verdict_token_probs": {k: round(v, 6) for k, v in probs.items()}})], [score]))
        return out
