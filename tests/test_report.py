"""Report generation: the files exist, the HTML embeds every picture, and eval results appear when present."""

from __future__ import annotations

import base64
import re

from selfplay.agreement import Agreement
from selfplay.config import load_config
from selfplay.evaluate import H2HReport, IFEvalIteration, IFEvalScores, IFEvalSummary
from selfplay.rundir import Manifest, Run, StageInfo
from selfplay.monitors import MonitorReport
from selfplay.records import write_json
from selfplay.report import collect, write_report
from selfplay.stats import PairedDiff
from selfplay.records import RLStats, TrainResult

from test_cli_eval import build_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def add_eval_files(run) -> None:
    """Literal eval results, as `selfplay eval` writes them."""
    ev = run.root / "eval"

    def scores(p: float, n: int = 40) -> dict:
        return dict(n_prompts=n, prompt_level_strict=p, instruction_level_strict=p + 0.05, prompt_level_loose=p + 0.04,
                    instruction_level_loose=p + 0.08, prompt_strict_ci=(p - 0.12, p + 0.14))

    summary = IFEvalSummary(
        file="data/ifeval/prompts.jsonl", file_hash="abc", max_tokens=512, echo=IFEvalScores(**scores(0.25)),
        iterations=[IFEvalIteration(**scores(p), iteration=k, policy=f"/m/{k}", mean_tokens=300.0 - 20 * k, cut_at_max=0.5 - 0.1 * k,
                                    vs_base=PairedDiff(n=40, mean_diff=p - 0.2, ci_low=p - 0.3, ci_high=p - 0.1) if k else None)
                    for k, p in ((0, 0.2), (1, 0.24), (2, 0.3))])
    write_json(ev / "ifeval_summary.json", summary.model_dump(mode="json"))
    h2h = {}
    for k, a, w, l, t in ((1, 0, 20, 12, 8), (2, 0, 24, 8, 8), (2, 1, 15, 13, 12)):
        n = w + l + t
        wr = (w + t / 2) / n
        h2h[f"{k}_vs_{a}"] = H2HReport(n=n, wins=w, losses=l, ties=t, win_rate=wr, tie_rate=t / n, ci_low=wr - 0.1, ci_high=wr + 0.1,
                                       iteration=k, against=a, prompts_file="held.jsonl", judge="pairwise@1 on base <b>",
                                       consistent=0.8, first_position_rate=0.55, unparseable=2, identical=1).model_dump(mode="json")
    write_json(ev / "h2h_summary.json", h2h)
    agreement = Agreement(file="seed.jsonl", judge="pairwise@1", n=30, unjudged=0, agree=18, disagree=4, undecided=8,
                          accuracy=22 / 30, accuracy_ci=(0.6, 0.85), kappa=0.41)
    write_json(ev / "agreement.json", agreement.model_dump(mode="json"))


def _embedded_pngs(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_report_without_eval(tmp_path):
    run = build_run(tmp_path)
    files = write_report(run)
    assert files.html == str(run.root / "report" / "index.html")
    html = open(files.html, encoding="utf-8").read()
    pngs = _embedded_pngs(html)
    assert len(pngs) == len(files.pngs) == 3 and all(p.startswith(PNG_MAGIC) for p in pngs)
    for path in files.pngs:  # the files beside the page are the embedded pictures
        assert open(path, "rb").read() in pngs
    assert "selfplay eval RUN --prompts" in html and "Not measured" in html
    assert "<td>1</td>" in html and "0.693 → 0.550" in html  # summary table row of iteration 1


def test_report_with_eval_results(tmp_path):
    run = build_run(tmp_path)
    add_eval_files(run)
    data = collect(run)
    assert [r.iteration for r in data.records] == [1, 2] and data.records[0].scores == [2.0, 4.0, 3.0, 3.5]
    assert [m.iteration for m in data.monitors] == [1, 2] and [(h.iteration, h.against) for h in data.h2h] == [(1, 0), (2, 0), (2, 1)]
    files = write_report(run, tmp_path / "out")
    names = sorted(p.rsplit("/", 1)[1] for p in files.pngs)
    assert names == ["agreement.png", "distributions.png", "ifeval.png", "metrics.png", "monitors.png", "win_rates.png"]
    html = open(files.html, encoding="utf-8").read()
    assert len(_embedded_pngs(html)) == 6
    assert "echo baseline" in html and "+10.0% [+0.0%, +20.0%]" in html  # iteration 2 vs base
    assert "iter 2 vs 1" in html and "[50.0%, 70.0%]" in html
    assert "pairwise@1 on base &lt;b&gt;" in html  # text from files is escaped
    assert "Cohen's κ 0.41" in html


def test_report_reads_monitors_and_kl_from_the_manifest(tmp_path):
    """An RL iteration's KL shows in the monitors table, read from the manifest (train.rl.kl_last), and the
    monitors are the manifest's own: nothing is recomputed from the records (there are none here)."""
    run = Run.create(tmp_path / "runs" / "rl", load_config(None, ["train.algo=ppo"]))
    train = TrainResult(algo="ppo", steps=2, seconds=1.0, loss_first=0.5, loss_last=0.4, policy="/models/iter1",
                        rl=RLStats(prompts=4, kl_last=0.1234))
    monitors = MonitorReport(iteration=1, length_corr=0.25, n_scored=10, length_gap_tokens=3.0, n_pairs=4, position_bias=None,
                             n_pairwise=0, parse_failure=0.1, n_judgements=10, mean_margin=1.5, margin_change=None, kl=None,
                             warnings=["length_gap: recorded by the loop"])
    manifest = Manifest(iteration=1, policy="/models/base", train=train, monitors=monitors,
                        stages={s: StageInfo(status="done", seconds=1.0, count=1)
                                for s in ("prompts", "generate", "judge", "pair", "train")},
                        generation={"count": 10, "mean_tokens": 20.0, "cut_at_max": 0.0},
                        judge={"parse_rate": 0.9, "mean_score": 3.0})
    write_json(run.paths(1).manifest, manifest.model_dump(mode="json"))
    data = collect(run)
    assert [(m.iteration, m.kl, m.length_corr) for m in data.monitors] == [(1, 0.1234, 0.25)]
    html = open(write_report(run).html, encoding="utf-8").read()
    monitors_table = html.split("<h2>Monitors")[1].split("<h2>")[0]
    assert "<td>0.123</td>" in monitors_table  # the KL column
    assert "iteration 1: length_gap: recorded by the loop" in monitors_table
