"""The run's own judge as the online RL reward (train.rl.reward=judge): RLVR with the instruction checkers (Tulu 3,
Lambert et al. 2024), or RLAIF with an LLM judge, a constitution or an endpoint, scored per rollout batch.

Each optimizer step's rollouts (train.rl.rollout_prompts x num_generations completions) go to `Judge.judge` in one
call, as `Generation` records of their `Prompt` records: the program judge reads the prompt's meta (the IFEval
instruction ids and kwargs), which reach the reward function as dataset columns (TRL's GRPOTrainer and RLOOTrainer
pass every column but the prompt to their reward functions, one value per completion: docs/design.md).

A rollout the judge fails to score (unparseable, an error, an endpoint that did not answer, an empty response an LLM
judge does not judge) is never a 0: its reward is None, which TRL 1.16 turns into NaN, leaves out of the group baseline
and gives an advantage of 0, so it moves the policy by its KL term alone (PPO, ours, masks the rollout out of its
losses). Every rollout's judgement is kept (`rl_judgements.jsonl`) and each step's counts go into TrainResult.rl. A
step whose rollouts all failed has nothing to learn from: that is an error, one line, after writing what was judged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from selfplay.external import EndpointError
from selfplay.judges import Judge, JudgeError
from selfplay.records import Generation, JudgedStep, Judgement, Prompt, write_records

JUDGEMENTS_FILE = "rl_judgements.jsonl"  # every rollout's judgement, beside the policy the steps trained


class NothingToLearnError(JudgeError):
    """Every rollout of a step failed to be scored: no advantage exists, so the step cannot train."""


@dataclass
class JudgeReward:
    """Scores rollouts with `judge`, one batch per step, and keeps what it saw: the judgements and per-step counts.

    `policy`, `max_tokens`, `temperature` and `seed` describe the rollouts in their Generation records (the
    starting policy's directory, train.rl's sampling settings, the trainer's seed); the judgements go to `out_dir`
    (the trained policy's folder)."""

    judge: Judge
    kind: str  # judge.kind, for the messages
    out_dir: Path
    policy: str
    max_tokens: int
    temperature: float
    seed: int
    judgements: list[Judgement] = field(default_factory=list)
    steps: list[JudgedStep] = field(default_factory=list)

    def score(
        self, prompts: Sequence[Prompt], responses: Sequence[str], tokens: Sequence[int], prompt_tokens: Sequence[int]
    ) -> list[float | None]:
        """One step's rewards: the judge's score per response, None where it gave none. `tokens`: each response's
        length in tokens (a response of max_tokens tokens was cut there); `prompt_tokens`: its chat-formatted prompt's."""
        if not (len(prompts) == len(responses) == len(tokens) == len(prompt_tokens)):
            raise ValueError(f"score: {len(prompts)} prompts, {len(responses)} responses, {len(tokens)} token counts")
        step = len(self.steps) + 1
        rollouts = self.rollouts(step, prompts, responses, tokens, prompt_tokens)
        unique = list({p.id: p for p in prompts}.values())
        try:
            given = self.judge.judge(unique, rollouts)
        except EndpointError as err:  # the server did not answer after its retries: this step's rollouts go unscored
            given = [self.failed(g, f"endpoint error: {err}") for g in rollouts]
        per_response = {j.generation_ids[0]: j for j in given if len(j.generation_ids) == 1}
        mine = [per_response.get(g.id) or self.failed(g, "the judge returned no judgement for it") for g in rollouts]
        # Pairwise judges also return their ordered comparisons: kept after the per-response judgements.
        self.judgements += mine + [j for j in given if len(j.generation_ids) != 1]
        scores = [j.score if j.status == "ok" else None for j in mine]
        kept = [s for s in scores if s is not None]
        self.steps.append(
            JudgedStep(
                step=step, scored=len(kept), failed=len(scores) - len(kept), reward_mean=sum(kept) / len(kept) if kept else None
            )
        )
        if not kept:
            first, saved = mine[0], self.save()
            raise NothingToLearnError(
                f"train.rl.reward=judge: the {self.kind} judge scored none of the {len(mine)} rollouts of step {step} "
                f"({first.status}: {first.raw[0][:120] if first.raw else 'no output'}); nothing to learn from "
                f"(every judgement: {saved})"
            )
        return scores

    def rollouts(
        self, step: int, prompts: Sequence[Prompt], responses: Sequence[str], tokens: Sequence[int], prompt_tokens: Sequence[int]
    ) -> list[Generation]:
        """The step's rollouts as Generation records, numbered within their prompt's group: "<prompt>/s<step>r<j>"."""
        seen: dict[str, int] = {}
        out = []
        for p, text, n, m in zip(prompts, responses, tokens, prompt_tokens, strict=True):
            j = seen[p.id] = seen.get(p.id, -1) + 1
            out.append(
                Generation(
                    id=f"{p.id}/s{step}r{j}",
                    prompt_id=p.id,
                    text=text,
                    n_prompt_tokens=m,
                    n_tokens=n,
                    finish_reason="length" if n >= self.max_tokens else "stop",
                    temperature=self.temperature,
                    top_p=1.0,
                    max_tokens=self.max_tokens,
                    seed=self.seed,
                    policy=self.policy,
                    backend="transformers",
                )
            )
        return out

    def failed(self, g: Generation, why: str) -> Judgement:
        return Judgement(
            id=f"{g.id}/j",
            prompt_id=g.prompt_id,
            generation_ids=[g.id],
            judge=self.kind,
            method="rl-reward",
            raw=[why],
            sample_scores=[None],
            score=None,
            status="error",
        )

    def record(self) -> dict:
        """RLStats' judge fields: the counts over all steps, each step's, and the rollouts' judgements (written here)."""
        return dict(
            reward="judge",
            scored=sum(s.scored for s in self.steps),
            failed=sum(s.failed for s in self.steps),
            judged_steps=self.steps,
            judgements=str(self.save()),
        )

    def save(self) -> Path:
        """Writes every rollout's judgement so far; returns the file."""
        path = Path(self.out_dir) / JUDGEMENTS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        write_records(path, self.judgements)
        return path


def judge_columns(prompt: Prompt, prompt_tokens: int) -> dict:
    """A rollout dataset row's columns beside TRL's `prompt`: what `trl_judge_reward` rebuilds the Prompt record from.
    The meta travels as JSON text: a datasets table would give every row's IFEval kwargs the union of their keys."""
    return {
        "prompt_id": prompt.id,
        "prompt_source": prompt.source,
        "prompt_meta": json.dumps(prompt.meta),
        "prompt_tokens": prompt_tokens,
    }


def trl_judge_reward(reward: JudgeReward):
    """`reward` in TRL's reward-function signature. The dataset's columns (`judge_columns`) arrive as kwargs, one value
    per completion, and rebuild each rollout's Prompt record, its meta included."""

    def judge(
        prompts, completions, completion_ids, prompt_id, prompt_source, prompt_meta, prompt_tokens, **kwargs
    ) -> list[float | None]:
        records = [
            Prompt(id=pid, text=message_text(p), source=source, meta=json.loads(meta))
            for pid, p, source, meta in zip(prompt_id, prompts, prompt_source, prompt_meta, strict=True)
        ]
        responses = [message_text(c) for c in completions]
        return reward.score(records, responses, [len(ids) for ids in completion_ids], list(prompt_tokens))

    judge.__name__ = "judge"  # TRL logs rewards/judge/mean
    return judge


def message_text(x) -> str:
    """A TRL prompt or completion as plain text: a string as is; for a conversation, the last user message
    (prompts) or the assistant content (completions)."""
    if isinstance(x, str):
        return x
    users = [m["content"] for m in x if m.get("role") == "user"]
    if users:
        return users[-1]
    return "".join(m["content"] for m in x if m.get("role") == "assistant")
