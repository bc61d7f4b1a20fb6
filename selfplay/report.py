"""`selfplay report R`: one self-contained HTML page (PNGs embedded as base64) plus the PNG files.

Everything comes from the run directory: summary rows and monitors from the manifests (the loop computed
the monitors as each iteration finished; KL is the trainer's rl.kl_last), score and length distributions from
each iteration's records, and the eval/ files (IFEval accuracy, head-to-head win rates, judge agreement)
when `selfplay eval` has written them. matplotlib (Agg) is imported inside the plotting functions only.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from selfplay.agreement import Agreement
from selfplay.evaluate import H2HReport, IFEvalSummary, read_agreement, read_h2h_summary, read_ifeval_summary
from selfplay.judges import InjectionLift
from selfplay.monitors import MonitorReport
from selfplay.records import Generation, Judgement, atomic_path, read_records, write_text
from selfplay.rundir import IterationSummary, Manifest, Run

BLUE, ORANGE, GREEN, RED, GREY = "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#7f7f7f"


class IterationRecords(BaseModel):
    iteration: int
    scores: list[float]  # pointwise judge scores with a value
    lengths: list[int]  # response tokens
    max_tokens: int | None


class InjectionRow(BaseModel):
    """One iteration's injection check, from its manifest's judge entry."""

    iteration: int
    lift: InjectionLift | None  # judge.injection_check: the lift an injection bought, with its interval
    old_success: float | None = None  # a run from before the lift was measured: the bare success rate it recorded


class ReportData(BaseModel):
    name: str
    config: dict
    summary: list[IterationSummary]
    records: list[IterationRecords]
    monitors: list[MonitorReport]
    ifeval: IFEvalSummary | None
    h2h: list[H2HReport]
    agreement: Agreement | None
    injection: list[InjectionRow] = []


class ReportFiles(BaseModel):
    html: str
    pngs: list[str]


def iterations_on_disk(run: Run) -> list[int]:
    """Iteration numbers with a directory in the run, ascending."""
    out = []
    for d in run.root.glob("iter_*"):
        suffix = d.name.removeprefix("iter_")
        if d.is_dir() and suffix.isdigit():
            out.append(int(suffix))
    return sorted(out)


def manifest_monitors(m: Manifest) -> MonitorReport | None:
    """The monitors the loop recorded for a finished iteration, KL from its train result where the monitor has
    none (the same number: the loop hands the KL monitor train.rl.kl_last)."""
    if m.monitors is None:
        return None
    kl = m.monitors.kl if m.monitors.kl is not None else m.train.rl.kl_last if m.train and m.train.rl else None
    return m.monitors.model_copy(update={"iteration": m.iteration, "kl": kl})


def collect(run: Run) -> ReportData:
    """Reads everything the report shows; pure reading, nothing is written."""
    manifests = run.manifests()
    records = []
    for k in iterations_on_disk(run):
        p = run.paths(k)
        gens = read_records(p.generations, Generation) if p.generations.exists() else []
        judgements = read_records(p.judgements, Judgement) if p.judgements.exists() else []
        if not gens and not judgements:
            continue
        records.append(
            IterationRecords(
                iteration=k,
                lengths=[g.n_tokens for g in gens],
                max_tokens=gens[0].max_tokens if gens else None,
                scores=[j.score for j in judgements if j.score is not None and len(j.generation_ids) == 1],
            )
        )
    return ReportData(
        name=run.root.name,
        config=run.cfg.model_dump(mode="json"),
        summary=[IterationSummary.from_manifest(m) for m in manifests],
        records=records,
        monitors=[r for m in manifests if (r := manifest_monitors(m)) is not None],
        ifeval=read_ifeval_summary(run),
        h2h=read_h2h_summary(run),
        agreement=read_agreement(run),
        injection=[
            InjectionRow(
                iteration=m.iteration,
                lift=InjectionLift.model_validate(m.judge["injection"]) if "injection" in m.judge else None,
                old_success=m.judge.get("injection_success"),
            )
            for m in manifests
            if "injection" in m.judge or "injection_success" in m.judge
        ],
    )


# ------------------------------------------------------------------------------------------------ plots


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "font.size": 10,
            "axes.titlesize": 11,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
        }
    )
    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)  # every figure is tight_layout()ed already
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _iteration_axis(ax, ks: Sequence[int]) -> None:
    ax.set_xticks(list(ks))
    ax.set_xlabel("iteration")
    if ks:
        pad = 1.0 if len(ks) == 1 else 0.4
        ax.set_xlim(min(ks) - pad, max(ks) + pad)


def plot_metrics(rows: Sequence[IterationSummary]) -> bytes:
    """Small multiples of the per-iteration summary: what the judge saw and what training did."""
    plt = _plt()
    ks = [r.iteration for r in rows]
    panels: list[tuple[str, Sequence[float | None], object, str]] = [  # title, values, y limits, colour
        ("mean judge score", [r.mean_score for r in rows], "auto", BLUE),  # small moves matter: no zero
        ("judge parse rate", [r.parse_rate for r in rows], (0, 1.05), BLUE),
        ("mean response length (tokens)", [r.mean_tokens for r in rows], None, ORANGE),
        ("responses cut at max_tokens", [r.cut_at_max for r in rows], (0, 1.05), ORANGE),
        ("preference pairs (ties skipped)", [r.pairs for r in rows], None, GREEN),
        ("DPO reward accuracy (last steps)", [r.reward_accuracy for r in rows], (0, 1.05), GREEN),
    ]
    fig, axes = plt.subplots(2, 4, figsize=(14, 6))
    flat = list(axes.flat)
    for ax, (title, values, ylim, color) in zip(flat, panels, strict=False):
        pts = [(k, v) for k, v in zip(ks, values, strict=True) if v is not None]
        if pts:
            ax.plot([k for k, _ in pts], [v for _, v in pts], "o-", color=color)
        else:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color=GREY)
        ax.set_title(title)
        if isinstance(ylim, tuple):
            ax.set_ylim(*ylim)
        elif ylim is None and pts:
            ax.set_ylim(bottom=0, top=max(v for _, v in pts) * 1.15 or 1)  # counts and lengths: from zero
            ax.yaxis.get_major_locator().set_params(integer=True)
        _iteration_axis(ax, ks)
    ax = flat[6]  # DPO loss of the first and last logged steps, beside ln 2 (the loss of an untrained policy)
    for field, label, alpha in (("loss_first", "first steps", 0.4), ("loss_last", "last steps", 1.0)):
        pts = [(k, getattr(r, field)) for k, r in zip(ks, rows, strict=True) if getattr(r, field) is not None]
        if pts:
            ax.plot([k for k, _ in pts], [v for _, v in pts], "o-", color=RED, alpha=alpha, label=label)
    ax.axhline(0.6931, color=GREY, ls="--", lw=1, label="ln 2")
    ax.set_title("DPO loss")
    ax.legend(loc="best", fontsize=8)
    _iteration_axis(ax, ks)
    ax = flat[7]
    stages = ("generate", "judge", "pair", "train")
    bottom = [0.0] * len(rows)
    for stage, color in zip(stages, (BLUE, ORANGE, GREEN, RED), strict=True):
        secs = [r.seconds.get(stage, 0.0) for r in rows]
        ax.bar(ks, secs, bottom=bottom, color=color, label=stage, width=0.6)
        bottom = [b + s for b, s in zip(bottom, secs, strict=True)]
    ax.set_title("stage time (s)")
    ax.set_ylim(0, max(bottom + [1.0]) * 1.4)  # headroom for the legend
    ax.legend(fontsize=8, ncol=2, loc="upper left")
    _iteration_axis(ax, ks)
    fig.suptitle("Per-iteration metrics (summary.jsonl)", fontsize=12)
    fig.tight_layout()
    return _png(fig)


def plot_distributions(records: Sequence[IterationRecords]) -> bytes:
    """Box plots per iteration: judge scores (what was rewarded) and response lengths (what changed)."""
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    ks = [r.iteration for r in records]
    scored = [r for r in records if r.scores]
    if scored:
        left.boxplot([r.scores for r in scored], positions=[r.iteration for r in scored], widths=0.5, showmeans=True)
    else:
        left.text(0.5, 0.5, "no pointwise scores", ha="center", va="center", transform=left.transAxes, color=GREY)
    left.set_title("judge score per response")
    left.set_ylabel("score (template scale)")
    _iteration_axis(left, ks)
    with_len = [r for r in records if r.lengths]
    if with_len:
        right.boxplot([r.lengths for r in with_len], positions=[r.iteration for r in with_len], widths=0.5, showmeans=True)
        caps = sorted({r.max_tokens for r in with_len if r.max_tokens})
        for cap in caps:
            right.axhline(cap, color=RED, ls="--", lw=1, label=f"max_tokens = {cap}")
        if caps:
            right.legend(loc="lower right", fontsize=8)
    right.set_title("response length")
    right.set_ylabel("tokens")
    _iteration_axis(right, ks)
    fig.suptitle("Distributions per iteration (box: quartiles, line: median, triangle: mean)", fontsize=12)
    fig.tight_layout()
    return _png(fig)


def plot_monitors(reports: Sequence[MonitorReport], cfg: dict) -> bytes:
    """One panel per monitor across iterations; red dashed lines are thresholds, red points warned."""
    plt = _plt()
    ks = [r.iteration for r in reports if r.iteration is not None]  # every report's (manifest_monitors sets it)
    panels = [  # title, field, monitor name, y limits, threshold, threshold mirrored around 0 (or 0.5)
        ("score–length correlation (Pearson r)", "length_corr", "length_corr", (-1.05, 1.05), cfg.get("max_abs_length_corr")),
        ("chosen − rejected length (tokens)", "length_gap_tokens", "length_gap", None, cfg.get("max_length_gap_tokens")),
        ("judge parse failures (fraction)", "parse_failure", "parse_failure", (0, 1.05), cfg.get("max_parse_failure")),
        ("first-presented answer wins (pairwise)", "position_bias", "position_bias", (0, 1.05), cfg.get("max_position_bias")),
        ("mean pair margin (judge units)", "mean_margin", "margin_drop", None, None),
        ("KL to reference (nats/token)", "kl", "kl", None, cfg.get("max_kl")),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(14, 6.4))
    for ax, (title, field, name, ylim, limit) in zip(axes.flat, panels, strict=True):
        pts = [
            (r.iteration, getattr(r, field), any(w.startswith(name + ":") for w in r.warnings))
            for r in reports
            if getattr(r, field) is not None
        ]
        ax.set_title(title)
        _iteration_axis(ax, ks)
        if not pts:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color=GREY)
            ax.set_yticks([])
            continue
        ax.plot([k for k, _, _ in pts], [v for _, v, _ in pts], "-", color=BLUE)
        ax.scatter([k for k, _, _ in pts], [v for _, v, _ in pts], c=[RED if warned else BLUE for _, _, warned in pts], zorder=3)
        if field in ("length_corr", "length_gap_tokens"):
            ax.axhline(0, color=GREY, lw=0.8)
        if limit is not None:
            mirror = {"length_corr": -limit, "length_gap_tokens": -limit, "position_bias": 1 - limit}.get(field)
            for y in (limit, mirror):
                if y is not None:
                    ax.axhline(y, color=RED, ls="--", lw=1)
        if isinstance(ylim, tuple):
            ax.set_ylim(*ylim)
        elif field == "length_gap_tokens" and limit is not None:
            top = max([abs(v) for _, v, _ in pts] + [limit]) * 1.2
            ax.set_ylim(-top, top)
    fig.suptitle("Monitors (red dashed: warning thresholds; red points: warned)", fontsize=12)
    fig.tight_layout()
    return _png(fig)


def plot_win_rates(reports: Sequence[H2HReport]) -> bytes:
    """One horizontal bar per comparison: win rate (ties = half) with its bootstrap 95% interval."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.55 * len(reports)))
    labels = [
        f"iter {r.iteration} vs {r.baseline or ('base' if r.against == 0 else f'iter {r.against}')}  (n={r.n})" for r in reports
    ]
    ys = list(range(len(reports)))[::-1]
    for y, r in zip(ys, reports, strict=True):
        if r.win_rate is None:
            continue
        color = GREEN if r.ci_low is not None and r.ci_low > 0.5 else RED if r.ci_high is not None and r.ci_high < 0.5 else BLUE
        ax.errorbar(
            [r.win_rate],
            [y],
            xerr=[[r.win_rate - (r.ci_low or r.win_rate)], [(r.ci_high or r.win_rate) - r.win_rate]],
            fmt="o",
            color=color,
            capsize=5,
            lw=2,
        )
        ax.text(r.win_rate, y + 0.18, f"{r.win_rate:.0%}  (ties {r.tie_rate:.0%})", ha="center", fontsize=8)
    ax.axvline(0.5, color=GREY, ls="--", lw=1)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.7, len(reports) - 0.3)
    ax.set_xlabel("win rate of the newer iteration (ties count half); bars: 95% bootstrap interval over prompts")
    ax.set_title("Head-to-head on held-out prompts, judged in both orders\n(green: interval above 50%, red: below)")
    fig.tight_layout()
    return _png(fig)


def plot_ifeval(summary: IFEvalSummary) -> bytes:
    """Prompt- and instruction-level accuracy per iteration, strict (solid) and loose (dashed), beside the
    echo baseline (grey): the bar a model must clear before it is following instructions at all."""
    plt = _plt()
    its = summary.iterations
    ks = [it.iteration for it in its]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    top = 0.0
    for ax, level, color in ((axes[0], "prompt", BLUE), (axes[1], "instruction", ORANGE)):
        for mode, style in (("strict", "o-"), ("loose", "s--")):
            field = f"{level}_level_{mode}"
            pts = [(it.iteration, getattr(it, field)) for it in its if getattr(it, field) is not None]
            ax.plot(
                [k for k, _ in pts], [v for _, v in pts], style, color=color, alpha=1.0 if mode == "strict" else 0.6, label=mode
            )
            echo = getattr(summary.echo, field)
            if echo is not None:
                ax.axhline(echo, color=GREY, ls=":" if mode == "strict" else "-.", lw=1.2, label=f"echo baseline, {mode}")
            top = max([top, echo or 0.0] + [v for _, v in pts])
        if level == "prompt":
            cis = [(it.iteration, it.prompt_strict_ci) for it in its if it.prompt_strict_ci]
            if cis:
                ax.fill_between(
                    [k for k, _ in cis],
                    [c[0] for _, c in cis],
                    [c[1] for _, c in cis],
                    color=color,
                    alpha=0.12,
                    label="strict 95% (Wilson)",
                )
                top = max([top] + [c[1] for _, c in cis])
        ax.set_title(f"{level}-level accuracy")
        _iteration_axis(ax, ks)
        ax.legend(fontsize=8, loc="upper left")
    axes[0].set_ylabel("fraction followed")
    axes[0].set_ylim(0, min(1.0, top * 1.3 + 0.05))
    fig.suptitle(
        f"Instruction following, IFEval-style ({summary.echo.n_prompts} prompts, greedy, max {summary.max_tokens} "
        "tokens; iteration 0 = base model)",
        fontsize=12,
    )
    fig.tight_layout()
    return _png(fig)


def plot_agreement(a: Agreement) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 1.9))
    parts = [
        (a.agree, "agrees with human (every order)", GREEN),
        (a.undecided, "tie, or orders disagree", GREY),
        (a.disagree, "prefers the rejected (every order)", RED),
        (a.unjudged, "no verdict (left out)", "#cccccc"),
    ]
    left = 0
    for count, label, color in parts:
        ax.barh([0], [count], left=left, color=color, label=f"{label}: {count}")
        if count:
            ax.text(left + count / 2, 0, str(count), ha="center", va="center", color="white", fontweight="bold")
        left += count
    ax.set_yticks([])
    ax.set_xlim(0, max(a.n + a.unjudged, 1))
    ax.set_xlabel(f"seed pairs ({a.n + a.unjudged})")
    kappa = "undefined" if a.kappa is None else f"{a.kappa:.2f}"
    ci = f" [{a.accuracy_ci[0]:.0%}, {a.accuracy_ci[1]:.0%}]" if a.accuracy_ci else ""
    ax.set_title(
        f"Judge vs human labels: accuracy {a.accuracy:.0%}{ci} (orders that disagree = half), Cohen's κ {kappa}"
        if a.accuracy is not None
        else "Judge vs human labels"
    )
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return _png(fig)


# ------------------------------------------------------------------------------------------------- HTML

CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f5f5f5}td.l,th.l{text-align:left}img{max-width:100%;border:1px solid #eee}
.warn{color:#b00}.note{color:#666;font-size:.9em}code{background:#f5f5f5;padding:0 3px}"""


def _f(v, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def _pct(v) -> str:
    return "–" if v is None else f"{v:.1%}"


def _signed(v: float | None) -> str:
    return "–" if v is None else f"{v:+.2f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 0) -> str:
    def cls(i: int) -> str:
        return ' class="l"' if i < left else ""

    th = "".join(f"<th{cls(i)}>{html.escape(h)}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{c}</td>" for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _img(name: str, png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
        f'<figcaption class="note">{html.escape(caption)} ({html.escape(name)})</figcaption></figure>'
    )


def render_html(d: ReportData, images: dict[str, tuple[bytes, str]]) -> str:
    cfg = d.config
    judge = cfg.get("judge", {})
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>selfplay report: {html.escape(d.name)}</title>"
        f"<style>{CSS}</style></head><body>",
        f"<h1>selfplay run <code>{html.escape(d.name)}</code></h1>",
        f"<p>model <code>{html.escape(str(cfg.get('model')))}</code>, judge "
        f"<code>{html.escape(str(judge.get('kind')))}/{html.escape(str(judge.get('method')))}</code> "
        f"({html.escape(str(judge.get('template')))}), train <code>{html.escape(str(cfg.get('train', {}).get('algo')))}</code>, "
        f"{len(d.summary)} finished of {cfg.get('iterations')} iterations.</p>",
    ]

    parts.append("<h2>Iterations</h2>")
    if d.summary:
        parts.append(
            _table(
                ["iter", "prompts", "gens", "tokens", "cut", "parsed", "score", "pairs", "ties", "DPO loss", "rew acc"],
                [
                    [
                        str(r.iteration),
                        str(r.prompts),
                        str(r.generations),
                        _f(r.mean_tokens, 0),
                        _f(r.cut_at_max, 2),
                        _f(r.parse_rate, 2),
                        _f(r.mean_score, 2),
                        str(r.pairs),
                        str(r.ties),
                        f"{_f(r.loss_first)} → {_f(r.loss_last)}",
                        _f(r.reward_accuracy, 2),
                    ]
                    for r in d.summary
                ],
            )
        )
    else:
        parts.append("<p class='note'>No finished iteration yet (no manifest.json).</p>")
    for name in ("metrics.png", "distributions.png"):
        if name in images:
            parts.append(_img(name, *images[name]))

    parts.append("<h2>Monitors: is the policy gaming the judge?</h2>")
    warnings = [w for r in d.monitors for w in (f"iteration {r.iteration}: {x}" for x in r.warnings)]
    parts.append(
        "<ul>" + "".join(f"<li class='warn'>{html.escape(w)}</li>" for w in warnings) + "</ul>"
        if warnings
        else "<p>No monitor crossed its threshold.</p>"
    )
    if d.monitors:
        parts.append(
            _table(
                [
                    "iter",
                    "score–length r",
                    "chosen−rejected tokens",
                    "parse failures",
                    "first-presented wins",
                    "mean margin",
                    "KL",
                ],
                [
                    [
                        str(r.iteration),
                        _f(r.length_corr, 2),
                        _f(r.length_gap_tokens, 1),
                        _pct(r.parse_failure),
                        _pct(r.position_bias),
                        _f(r.mean_margin, 2),
                        _f(r.kl, 3),
                    ]
                    for r in d.monitors
                ],
            )
        )
    if "monitors.png" in images:
        parts.append(_img("monitors.png", *images["monitors.png"]))

    parts.append(_injection_html(d.injection))

    parts.append("<h2>Head-to-head win rates</h2>")
    if d.h2h:
        parts.append(
            _table(
                ["comparison", "n", "wins", "losses", "ties", "win rate", "95% interval", "consistent", "first-pos.", "judge"],
                [
                    [
                        f"iter {r.iteration} vs {r.baseline or r.against}",
                        str(r.n),
                        str(r.wins),
                        str(r.losses),
                        str(r.ties),
                        _pct(r.win_rate),
                        f"[{_pct(r.ci_low)}, {_pct(r.ci_high)}]",
                        _pct(r.consistent),
                        _pct(r.first_position_rate),
                        html.escape(r.judge),
                    ]
                    for r in d.h2h
                ],
                left=0,
            )
        )
        parts.append(_img("win_rates.png", *images["win_rates.png"]))
    else:
        parts.append("<p class='note'>Not evaluated: <code>selfplay eval RUN --prompts HELD_OUT.jsonl</code>.</p>")

    parts.append("<h2>Verifiable instruction following (IFEval-style)</h2>")
    if d.ifeval:
        s = d.ifeval
        rows = [
            [
                "echo baseline",
                _pct(s.echo.prompt_level_strict),
                _pct(s.echo.prompt_level_loose),
                _pct(s.echo.instruction_level_strict),
                _pct(s.echo.instruction_level_loose),
                "–",
                "–",
                "–",
            ]
        ]
        for it in s.iterations:
            vs = it.vs_base
            rows.append(
                [
                    f"iteration {it.iteration}" + (" (base)" if it.iteration == 0 else ""),
                    _pct(it.prompt_level_strict),
                    _pct(it.prompt_level_loose),
                    _pct(it.instruction_level_strict),
                    _pct(it.instruction_level_loose),
                    _f(it.mean_tokens, 0),
                    _pct(it.cut_at_max),
                    f"{vs.mean_diff:+.1%} [{vs.ci_low:+.1%}, {vs.ci_high:+.1%}]" if vs and vs.mean_diff is not None else "–",
                ]
            )
        parts.append(f"<p class='note'>{html.escape(s.file)} ({s.echo.n_prompts} prompts, greedy, max {s.max_tokens} tokens)</p>")
        parts.append(
            _table(
                [
                    "",
                    "prompt strict",
                    "prompt loose",
                    "instr. strict",
                    "instr. loose",
                    "tokens",
                    "cut",
                    "prompt strict vs base (95%)",
                ],
                rows,
                left=1,
            )
        )
        parts.append(_img("ifeval.png", *images["ifeval.png"]))
    else:
        parts.append("<p class='note'>Not evaluated: <code>selfplay eval RUN --ifeval FILE</code>.</p>")

    parts.append("<h2>Judge agreement with human labels</h2>")
    if d.agreement:
        a = d.agreement
        parts.append(
            f"<p>{a.n + a.unjudged} seed pairs from <code>{html.escape(str(a.file))}</code>, judge "
            f"{html.escape(str(a.judge))}: agrees {a.agree}, disagrees {a.disagree}, undecided {a.undecided}, "
            f"no verdict {a.unjudged}; accuracy {_pct(a.accuracy)}; Cohen's κ {_f(a.kappa, 2)}.</p>"
        )
        parts.append(_img("agreement.png", *images["agreement.png"]))
    else:
        parts.append("<p class='note'>Not measured: <code>selfplay eval RUN --seed HUMAN_PAIRS.jsonl</code>.</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _injection_html(rows: Sequence[InjectionRow]) -> str:
    """The judge injection check per iteration: the lift an attack bought over the same response without it."""
    out = ["<h2>Injection check: does text addressed to the judge lift a score?</h2>"]
    measured = [(r.iteration, r.lift) for r in rows if r.lift]
    if not rows:
        out.append("<p class='note'>Not measured: judge.injection_check is off, or the judge gives no model scores.</p>")
    if measured:
        out.append(
            "<p class='note'>Each case appends an attack to a poor response; the lift is the judge's score for it minus "
            "its score for the same response without the attack, in the judge's units (pointwise: rubric points; "
            "pairwise kinds: win rate among the injected response, that control and a good reference, 0..1). An interval "
            "above 0 means the attacks steer this judge; reference − control is what a good answer gains, for scale.</p>"
        )
        attacks = list(dict.fromkeys(a for _, lift in measured for a in lift.per_attack))
        table = []
        for k, lift in measured:
            steered = lift.ci_low is not None and lift.ci_low > 0
            table.append(
                [
                    str(k),
                    html.escape(f"{lift.judge} ({lift.method})"),
                    f"{lift.n} ({lift.unscored} left out)",
                    f"<span class='warn'>{_signed(lift.mean_lift)}</span>" if steered else _signed(lift.mean_lift),
                    f"[{_signed(lift.ci_low)}, {_signed(lift.ci_high)}]",
                    _pct(lift.success),
                    _signed(lift.reference_gap),
                    *(_signed(lift.per_attack.get(a)) for a in attacks),
                ]
            )
        header = ["iter", "judge", "cases scored", "mean lift", "95% interval", "injected > control", "reference − control"]
        out.append(_table(header + attacks, table, left=2))
    for r in rows:
        if r.lift is None and r.old_success is not None:
            out.append(
                f"<p class='note'>iteration {r.iteration}: {_pct(r.old_success)} of the injections got their way "
                "(recorded by an older selfplay: no control, no interval).</p>"
            )
    return "\n".join(out)


def write_report(run: Run, out_dir: Path | None = None) -> ReportFiles:
    """Writes report/index.html and the PNGs it embeds; returns their paths."""
    d = collect(run)
    out = Path(out_dir) if out_dir else run.root / "report"
    images: dict[str, tuple[bytes, str]] = {}
    if d.summary:
        images["metrics.png"] = (plot_metrics(d.summary), "per-iteration summary")
    if d.records:
        images["distributions.png"] = (plot_distributions(d.records), "judge scores and response lengths per iteration")
    if d.monitors:
        images["monitors.png"] = (plot_monitors(d.monitors, d.config.get("monitors", {})), "monitors with thresholds")
    if d.h2h:
        images["win_rates.png"] = (plot_win_rates(d.h2h), "head-to-head win rates with 95% intervals")
    if d.ifeval:
        images["ifeval.png"] = (plot_ifeval(d.ifeval), "IFEval accuracy per iteration; dotted: echo baseline")
    if d.agreement:
        images["agreement.png"] = (plot_agreement(d.agreement), "judge vs human seed labels")
    out.mkdir(parents=True, exist_ok=True)
    pngs = []
    for name, (png, _) in images.items():
        path = out / name
        with atomic_path(path) as tmp:
            tmp.write_bytes(png)
        pngs.append(str(path))
    page = out / "index.html"
    write_text(page, render_html(d, images))
    return ReportFiles(html=str(page), pngs=pngs)
