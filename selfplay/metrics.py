"""Our per-iteration metrics to TensorBoard or Weights & Biases (logging.report_to), beside the trainers' own
step metrics, which the trainers write through their `report_to` under each iteration's policy/logs."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from selfplay.rundir import IterationSummary, Run


def report_iteration(run: Run, row: IterationSummary) -> None:
    """Writes a finished iteration's summary row to the configured backend (none: nothing)."""
    match run.cfg.logging.report_to:
        case "tensorboard":
            write_tensorboard(run.root / "tensorboard", row)
        case "wandb":
            write_wandb(run, row)


def stage_scalars(row: IterationSummary) -> dict[str, float]:
    """An iteration's numeric summary fields and stage seconds, named as the metrics backends show them."""
    values = {
        name: value
        for name, value in row.model_dump().items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and name != "iteration"
    }
    values.update({f"seconds/{stage}": value for stage, value in row.seconds.items()})
    return {f"selfplay/{name}": value for name, value in values.items()}


def write_tensorboard(folder: Path, row: IterationSummary) -> None:
    """Our per-iteration metrics beside the trainers' step metrics (those go under iter_NNN/policy/logs):
    `tensorboard --logdir runs/NAME`. Step = iteration; written once, when the iteration finishes."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(folder)) as writer:
        for name, value in stage_scalars(row).items():
            writer.add_scalar(name, value, row.iteration)


def write_wandb(run: Run, row: IterationSummary) -> None:
    """Our per-iteration metrics to Weights & Biases: one W&B run per selfplay run (a stable id, resumed each
    iteration), x-axis `iteration`, local files under runs/NAME/wandb. The trainers' step metrics go to W&B
    runs of their own (files under iter_NNN/policy/logs). WANDB_MODE=offline keeps it all local for
    `wandb sync`."""
    import wandb

    if wandb.run is not None:  # the trainer's run: transformers leaves it open after training
        wandb.finish()
    folder = run.root / "wandb"
    folder.mkdir(exist_ok=True)
    # W&B ids allow letters, digits, dashes and underscores; the hash tells two runs of the same name apart.
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in run.root.name)
    run_id = f"{name[:40]}-{hashlib.sha256(str(run.root.resolve()).encode()).hexdigest()[:8]}"
    with wandb.init(
        project=os.environ.get("WANDB_PROJECT", "selfplay"),
        id=run_id,
        name=run.root.name,
        resume="allow",
        dir=str(folder),
        group=run.root.name,
        job_type="iterations",
        config=run.cfg.model_dump(mode="json"),
    ) as wb:
        wb.define_metric("iteration")
        wb.define_metric("selfplay/*", step_metric="iteration")
        wb.log({"iteration": row.iteration, **stage_scalars(row)})
    wandb.teardown()  # W&B reads WANDB_DIR once per process setup: the next iteration's trainer gets its own folder
