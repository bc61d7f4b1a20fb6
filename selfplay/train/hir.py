"""Hindsight instruction relabelling (HIR; Zhang et al. 2023, "The Wisdom of Hindsight Makes Language Models Better
Instruction Followers"), through TRL's SFTTrainer.

A response that failed its IFEval instruction still followed some instruction: the one with the value the checker
measured on it ("exactly 5 bullet points" for a reply with 5 where 3 were asked). Each failed response whose failed
instructions all have a relabel rule (selfplay/ifeval/relabel.py) becomes an SFT example on the relabelled prompt,
beside the responses that passed as they were (train.hir.keep_originals). Every relabelled example passes the
checkers with its new kwargs: the hindsight label is true by construction, and checked.

The instruction checkers decide, not the judge: HIR needs per-instruction verdicts and the measured values, which
only the checkers have. So it needs prompts with IFEval instruction ids (an IFEval-format pool); any other prompt is
counted as not relabellable (`no_instruction_ids`). An echo of the prompt (selfplay.program_judges.is_echo) passes
checks it should not and is never used; a response cut at max_tokens is left out with train.hir.skip_cut.

On disk, in the iteration's policy/ directory: examples.jsonl (originals and relabelled, what was trained on),
relabels.jsonl (one `Relabel` per relabelled response: the original and new prompt, the changed kwargs), adapter/,
merged/. The counts go to train.json's sft.hir (`HIRStats`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from selfplay.config import ConfigError, HIRSection, RunConfig, TrainConfig, used
from selfplay.filtering import SFTExample
from selfplay.ifeval.relabel import RULE_IDS, hindsight
from selfplay.pool import pool_prompts
from selfplay.program_judges import is_echo
from selfplay.records import Generation, HIRStats, Prompt, Relabel, SFTStats, TrainInputs, TrainResult, write_records
from selfplay.train.sft import SFTTrainerRunner

RELABELS = "relabels.jsonl"
ORIGINAL = "ifeval-checkers"  # SFTExample.judge of an original that followed its instructions
RELABELLED = "hindsight"  # SFTExample.judge of a relabelled one


def hir_examples(
    prompts: Sequence[Prompt], generations: Sequence[Generation], hir: HIRSection
) -> tuple[list[SFTExample], list[Relabel], HIRStats]:
    """The fine-tuning examples (per prompt: its originals, then its relabelled responses), the relabels and the
    counts. Responses are taken in id order; a prompt's repeated response text is used once. Pure."""
    allowed = set(hir.instructions) if hir.instructions is not None else None
    by_prompt: dict[str, list[Generation]] = defaultdict(list)
    for g in generations:
        by_prompt[g.prompt_id].append(g)
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    relabelled_ids: Counter[str] = Counter()
    failed_ids: Counter[str] = Counter()
    examples: list[SFTExample] = []
    relabels: list[Relabel] = []
    for prompt in prompts:
        ids, kwargs = prompt.meta.get("instruction_id_list") or [], prompt.meta.get("kwargs") or []
        seen: set[str] = set()
        made = 0
        for g in sorted(by_prompt.get(prompt.id, []), key=lambda g: g.id):
            counts["responses"] += 1
            text = g.text.strip()
            if not text:
                counts["empty"] += 1
            elif is_echo(prompt.text, g.text):
                counts["echo"] += 1
            elif hir.skip_cut and g.finish_reason == "length":
                counts["cut"] += 1
            elif not ids:
                counts["not_relabellable"] += 1
                reasons["no_instruction_ids"] += 1
            else:
                h = hindsight(prompt.text, ids, kwargs, g.text, allowed)
                failed_ids.update(h.failed)
                if h.outcome == "passed":
                    counts["passed"] += 1
                    if hir.keep_originals and text not in seen:
                        seen.add(text)
                        counts["originals"] += 1
                        examples.append(_example(g, prompt, prompt.text, ORIGINAL, "sft"))
                elif h.outcome != "relabelled" or h.prompt is None:
                    counts["not_relabellable"] += 1
                    reasons[h.outcome] += 1
                elif made >= hir.max_per_prompt or text in seen:
                    counts["over_max"] += 1
                else:
                    seen.add(text)
                    made += 1
                    counts["relabelled"] += 1
                    relabelled_ids.update(c.instruction_id for c in h.changes)
                    examples.append(_example(g, prompt, h.prompt, RELABELLED, "hir"))
                    relabels.append(
                        Relabel(
                            id=f"{g.id}/hir",
                            prompt_id=prompt.id,
                            generation_id=g.id,
                            original_prompt=prompt.text,
                            prompt=h.prompt,
                            instruction_id_list=h.instruction_id_list,
                            kwargs=h.kwargs,
                            changes=[c.model_dump() for c in h.changes],
                        )
                    )
    failed = counts["relabelled"] + counts["over_max"] + counts["not_relabellable"]
    stats = HIRStats(
        responses=counts["responses"],
        **{k: counts[k] for k in ("empty", "echo", "cut", "passed", "originals", "relabelled", "over_max", "not_relabellable")},
        reasons=dict(sorted(reasons.items())),
        relabelled_per_instruction=dict(sorted(relabelled_ids.items())),
        failed_per_instruction=dict(sorted(failed_ids.items())),
        relabel_rate=round((counts["relabelled"] + counts["over_max"]) / failed, 4) if failed else None,
    )
    return examples, relabels, stats


def _example(g: Generation, prompt: Prompt, text: str, judge: str, suffix: str) -> SFTExample:
    # score 1.0: the share of the (possibly relabelled) prompt's instructions the response follows, all of them
    return SFTExample(
        id=f"{g.id}/{suffix}", prompt_id=prompt.id, prompt=text, completion=g.text, generation_id=g.id, score=1.0, judge=judge
    )


def check_hir(cfg: RunConfig) -> None:
    """Preflight for train.algo=hir: the ids it may relabel have a rule, and the prompts carry IFEval ids."""
    if cfg.train.algo != "hir":
        return
    hir = used(cfg.train.hir, "train.hir")
    for instruction_id in hir.instructions or []:
        if instruction_id not in RULE_IDS:
            raise ConfigError(
                f"train.hir.instructions: {instruction_id!r} has no relabel rule; those with one: {', '.join(sorted(RULE_IDS))}"
            )
    if cfg.prompts.source == "self-instruct":
        raise ConfigError(
            "train.algo=hir relabels IFEval instructions, and prompts.source=self-instruct writes prompts without them; "
            "use prompts.source pool (or mixed) on an IFEval-format pool"
        )
    if not any(p.meta.get("instruction_id_list") for p in pool_prompts(cfg.prompts)):
        raise ConfigError(
            f"train.algo=hir: the pool {cfg.prompts.pool} has no prompt with IFEval instruction ids (instruction_id_list); "
            "hir needs an IFEval-format pool such as data/ifeval/train_formats.jsonl"
        )


@dataclass
class HIRTrainer:
    """Fine-tunes the policy on one iteration's originals and hindsight-relabelled responses (judgements unused)."""

    cfg: TrainConfig
    seed: int

    def train(self, inputs: TrainInputs, policy: Path, out_dir: Path) -> TrainResult:
        cfg, out_dir = self.cfg, Path(out_dir)
        examples, relabels, stats = hir_examples(inputs.prompts, inputs.generations, used(cfg.hir, "train.hir"))
        write_records(out_dir / RELABELS, relabels)
        write_records(out_dir / "examples.jsonl", examples)
        if len(examples) < cfg.min_examples:
            why = (
                f"{stats.originals} originals and {stats.relabelled} relabelled of {stats.responses} responses "
                f"({stats.not_relabellable} not relabellable, {stats.empty} empty, {stats.echo} echoes, {stats.cut} cut) "
                f"< train.min_examples={cfg.min_examples}: fine-tune skipped, policy carried over"
            )
            return TrainResult.skip("hir", policy, why, sft=SFTStats(examples=len(examples), hir=stats))
        result = SFTTrainerRunner(cfg, self.seed).train(examples, policy, out_dir, algo="hir")
        sft = result.sft or SFTStats(examples=0)
        return result.model_copy(update={"sft": sft.model_copy(update={"hir": stats})})
