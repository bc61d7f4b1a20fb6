"""A run's records for other tools (`selfplay export`): TRL's dataset formats, a `datasets` folder, Parquet, and
Label Studio tasks with their labelling config. What each format holds (docs/design.md, "Data in and out"):

    trl           pairs.jsonl        TRL's conversational preference rows: prompt (a user message), chosen, rejected
                  prompts.jsonl      conversational prompt-only rows: prompt
                  generations.jsonl  conversational prompt-completion rows: prompt, completion
    hf            pairs/ prompts/ generations/    the same rows, each a datasets folder (Dataset.save_to_disk)
    parquet       pairs.parquet prompts.parquet generations.parquet    the same rows, one Parquet file each
    label-studio  tasks.json         one preference task per pair: data prompt / answer1 / answer2 (and pair_id), the
                                     side holding the judge's choice seeded per pair and kept in the task's meta
                  config.xml         the labelling config: the prompt, both answers, a Pairwise choice between them

Beside TRL's columns every row keeps where it came from (id, iteration, scores), so a trainer can ignore them and
a person can trace a row back to `selfplay show`. Exported prompts are a pool again (prompts.column=prompt reads
TRL's conversational prompt), and Label Studio's exports of the tasks are a seed set (selfplay.seed).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from pydantic import BaseModel

from selfplay.errors import SelfplayError
from selfplay.pool import quiet_datasets
from selfplay.records import Generation, Pair, Prompt, derive_seed, read_records, write_text
from selfplay.rundir import Run
from selfplay.seed import RLHF_KEYS

FORMATS = ("trl", "hf", "parquet", "label-studio")
KINDS = ("pairs", "prompts", "generations")  # what trl, hf and parquet write; label-studio writes pairs only

# The labelling config of our tasks: the layout of Label Studio's "Human Preference collection for RLHF" template
# (Pairwise over answer1, answer2), without its styling. Its data keys are the ones selfplay.seed recognises.
LABEL_STUDIO_CONFIG = f"""<View>
  <Header value="Which answer is better?"/>
  <Text name="{RLHF_KEYS.prompt}" value="${RLHF_KEYS.prompt}"/>
  <Pairwise name="comparison" toName="{RLHF_KEYS.left},{RLHF_KEYS.right}"/>
  <Text name="{RLHF_KEYS.left}" value="${RLHF_KEYS.left}"/>
  <Text name="{RLHF_KEYS.right}" value="${RLHF_KEYS.right}"/>
</View>
"""


class ExportError(SelfplayError, ValueError):
    """An export that cannot be written as asked; one line saying why."""


class ExportResult(BaseModel):
    format: str
    out: str  # the folder written
    iterations: list[int]  # the iterations whose records were exported
    rows: dict[str, int]  # file or folder name -> rows (tasks for label-studio) written


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def pair_row(pair: Pair, k: int) -> dict:
    """TRL's conversational preference row (Pair.to_trl, what our DPO trains on) and where the pair came from."""
    provenance = {"chosen_score": pair.chosen_score, "rejected_score": pair.rejected_score, "margin": pair.margin}
    return {**pair.to_trl(), "id": pair.id, "prompt_id": pair.prompt_id, "iteration": k, "judge": pair.judge, **provenance}


def prompt_row(prompt: Prompt, k: int) -> dict:
    return {"prompt": _user(prompt.text), "id": prompt.id, "iteration": k, "source": prompt.source}


def generation_row(generation: Generation, prompt_text: str, k: int) -> dict:
    return {
        "prompt": _user(prompt_text),
        "completion": [{"role": "assistant", "content": generation.text}],
        "id": generation.id,
        "prompt_id": generation.prompt_id,
        "iteration": k,
        "finish_reason": generation.finish_reason,
        "n_tokens": generation.n_tokens,
    }


def label_studio_tasks(pairs: list[tuple[int, Pair]], seed: int) -> list[dict]:
    """One task per pair. Which answer holds the judge's choice is seeded per pair, so annotators cannot learn a
    side; the task's meta says which, and load_label_studio counts how often people chose the same."""
    tasks = []
    for k, pair in pairs:
        ref = f"iter_{k:03d}/{pair.id}"
        chosen_first = derive_seed(seed, "label-studio", ref) % 2 == 0
        first, second = (pair.chosen, pair.rejected) if chosen_first else (pair.rejected, pair.chosen)
        side = RLHF_KEYS.left if chosen_first else RLHF_KEYS.right
        tasks.append(
            {
                "data": {RLHF_KEYS.prompt: pair.prompt, RLHF_KEYS.left: first, RLHF_KEYS.right: second, "pair_id": ref},
                "meta": {
                    "selfplay": {"pair_id": ref, "iteration": k, "chosen": side, "judge": pair.judge, "margin": pair.margin}
                },
            }
        )
    return tasks


def _iterations(run: Run, iteration: int | None) -> list[int]:
    if iteration is not None:
        if not run.paths(iteration).pairs.exists():
            raise ExportError(f"{run.paths(iteration).pairs}: missing; iteration {iteration} has no pairs to export")
        return [iteration]
    ks = sorted(int(path.parent.name.removeprefix("iter_")) for path in run.root.glob("iter_*/pairs.jsonl"))
    if not ks:
        raise ExportError(f"{run.root}: no iteration has pairs.jsonl yet; nothing to export")
    return ks


def run_rows(run: Run, ks: list[int]) -> dict[str, list[dict]]:
    """Rows of every kind from iterations `ks`; prompts and generations where the iteration has them."""
    rows: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    for k in ks:
        paths = run.paths(k)
        rows["pairs"] += [pair_row(p, k) for p in read_records(paths.pairs, Pair)]
        prompts = {p.id: p for p in read_records(paths.prompts, Prompt)} if paths.prompts.exists() else {}
        rows["prompts"] += [prompt_row(p, k) for p in prompts.values()]
        if paths.generations.exists():
            generations = read_records(paths.generations, Generation)
            rows["generations"] += [
                generation_row(g, prompts[g.prompt_id].text, k) for g in generations if g.prompt_id in prompts
            ]
    return rows


def export_run(run: Run, fmt: str, out: Path | None = None, iteration: int | None = None, force: bool = False) -> ExportResult:
    """Write the pairs (and, but for label-studio, the prompts and generations) of the run's iterations with pairs,
    or of `iteration`, in `fmt` into `out` (default: RUN/export/FORMAT). A non-empty `out` is refused unless
    `force`, which replaces only the files this export writes."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: unknown; use one of {', '.join(FORMATS)}")
    out = Path(out) if out is not None else run.root / "export" / fmt
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: is a file; give a folder to export into")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ExportError(f"{out}: exists and is not empty; pass --force to replace an earlier export there")
    ks = _iterations(run, iteration)
    if fmt == "label-studio":
        tasks = label_studio_tasks([(k, p) for k in ks for p in read_records(run.paths(k).pairs, Pair)], run.cfg.seed)
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "tasks.json", json.dumps(tasks, ensure_ascii=False, indent=1) + "\n")
        write_text(out / "config.xml", LABEL_STUDIO_CONFIG)
        return ExportResult(format=fmt, out=str(out), iterations=ks, rows={"tasks.json": len(tasks)})
    rows = run_rows(run, ks)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for kind in KINDS:
        if not rows[kind]:
            continue
        name = {"trl": f"{kind}.jsonl", "hf": kind, "parquet": f"{kind}.parquet"}[fmt]
        if fmt == "trl":
            write_text(out / name, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows[kind]))
        else:
            _write_table(rows[kind], out / name, fmt)
        written[name] = len(rows[kind])
    return ExportResult(format=fmt, out=str(out), iterations=ks, rows=written)


def _write_table(rows: list[dict], target: Path, fmt: str) -> None:
    """A datasets folder or a Parquet file, written beside `target` and moved there once complete."""
    from datasets import Dataset

    with quiet_datasets(), tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as tmp:
        staged = Path(tmp) / target.name
        table = Dataset.from_list(rows)
        if fmt == "hf":
            table.save_to_disk(str(staged))
        else:
            table.to_parquet(str(staged))
        if target.is_dir():
            shutil.rmtree(target)  # an earlier export's folder of the same name (--force)
        staged.replace(target)
