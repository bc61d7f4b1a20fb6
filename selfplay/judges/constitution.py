"""Constitution revision judge: critique, then revise, under a sampled principle (Constitutional AI)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from selfplay.config import JudgeConfig
from selfplay.constitutions import Constitution
from selfplay.generation import Generator, chat_ids
from selfplay.judges.base import EMPTY, is_empty
from selfplay.records import Generation, Judgement, Prompt, derive_seed
from selfplay.templates import Template


@dataclass
class ConstitutionRevisionJudge:
    """Constitutional AI's supervised stage (Bai et al. 2022, §3.1): per response a principle is drawn
    (seeded by the response id), the judge model critiques the response under it, then revises it.

    A judgement has no score: raw = [critique output, revision output, revision as parsed] and status
    ok when both parsed. `constitutions.revision_pairs` turns them into revision (chosen) vs original
    (rejected) pairs. Both model calls are batched across responses.
    """

    gen: Generator
    critique: Template
    revision: Template
    constitution: Constitution
    cfg: JudgeConfig
    seed: int = 0

    def principle(self, generation_id: str):
        return self.constitution.sample(derive_seed(self.seed, generation_id))

    def inputs(
        self, prompts: Sequence[Prompt], generations: Sequence[Generation], critiques: Mapping[str, str] = {}
    ) -> dict[str, str]:
        """Judge messages by id: "<gen>/critique" for every non-empty response, and "<gen>/revision" for
        those whose critique is given (`critiques`: generation id -> parsed critique)."""
        by_id = {p.id: p for p in prompts}
        out = {}
        for g in generations:
            if is_empty(g):
                continue
            principle, prompt = self.principle(g.id), by_id[g.prompt_id].text
            out[f"{g.id}/critique"] = self.critique.render(prompt=prompt, response=g.text, critique_request=principle.critique)
            if g.id in critiques:
                out[f"{g.id}/revision"] = self.revision.render(
                    prompt=prompt, response=g.text, critique=critiques[g.id], revision_request=principle.revision
                )
        return out

    def _complete(self, texts: list[str]) -> list[str]:
        if not texts:
            return []
        ids = [chat_ids(self.gen.tokenizer, t) for t in texts]
        return [outs[0] for outs in self.gen.complete(ids, n=1, temperature=self.cfg.temperature, max_tokens=self.cfg.max_tokens)]

    def judge(self, prompts: Sequence[Prompt], generations: Sequence[Generation]) -> list[Judgement]:
        first = self.inputs(prompts, generations)
        critique_raw = dict(zip((k.rsplit("/", 1)[0] for k in first), self._complete(list(first.values())), strict=True))
        critiques = {gid: c for gid, raw in critique_raw.items() if (c := self.critique.parse_verdict(raw))}
        second = {k: v for k, v in self.inputs(prompts, generations, critiques).items() if k.endswith("/revision")}
        revision_raw = dict(zip((k.rsplit("/", 1)[0] for k in second), self._complete(list(second.values())), strict=True))
        out = []
        for g in generations:
            if is_empty(g):
                raw, status = [EMPTY], "error"
            elif g.id not in critiques:
                raw, status = [critique_raw[g.id]], "unparseable"  # no critique: nothing to revise by
            else:
                revised = self.revision.parse_verdict(revision_raw[g.id])
                raw = [critique_raw[g.id], revision_raw[g.id]] + ([revised] if revised else [])
                status = "ok" if revised else "unparseable"  # an empty revision is a recorded failure, no pair
            out.append(
                Judgement(
                    id=f"{g.id}/j",
                    prompt_id=g.prompt_id,
                    generation_ids=[g.id],
                    judge="constitution-revision",
                    method="revision",
                    raw=raw,
                    sample_scores=[],
                    score=None,
                    status=status,
                    template=f"{self.critique.ref}+{self.revision.ref}",
                    template_hash=f"{self.critique.hash}+{self.revision.hash}",
                    constitution_hash=self.constitution.hash,
                    principle=self.principle(g.id).id,
                )
            )
        return out
