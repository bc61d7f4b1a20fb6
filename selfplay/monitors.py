"""Reward-hacking and bias monitors, one report per iteration, computed from the iteration's records by the
loop and kept in its manifest.json (field `monitors`; `selfplay report` reads them from there).

A policy trained against an AI judge learns whatever the judge rewards, including what it should not:
length (Singhal et al. 2023, "A Long Way to Go"; Dubois et al. 2024, length-controlled AlpacaEval), the
first-presented answer (Zheng et al. 2023, MT-Bench position bias), or drift from the reference policy
(the KL the InstructGPT recipe penalises). Each monitor is a number; a configured threshold crossed is a
one-line warning, and a monitor named in `monitors.stop_on` that warns asks the loop to stop.

    report = monitor_iteration(prompts, generations, judgements, pairs, cfg.monitors, previous=last, kl=kl)
    report.warnings  # ["length_corr: judge score correlates +0.62 with response length (|r| > 0.5) ..."]
    report.stop      # the warning monitors named in stop_on; non-empty = stop after this iteration
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from selfplay.config import MonitorConfig
from selfplay.records import Generation, Judgement, Pair, Prompt
from selfplay.stats import pearson

MONITORS = ("length_corr", "length_gap", "parse_failure", "position_bias", "margin_drop", "kl")


class MonitorReport(BaseModel):
    iteration: int | None = None
    length_corr: float | None  # Pearson r of pointwise judge score with response tokens, -1..1
    n_scored: int  # pointwise judgements with a score (the correlation's sample)
    length_gap_tokens: float | None  # mean (chosen - rejected) response tokens over pairs
    n_pairs: int
    position_bias: float | None  # fraction of decided comparisons won by the first-presented answer; None = no comparisons
    n_pairwise: int  # comparisons with a decided verdict (score != 0.5)
    parse_failure: float | None  # fraction of judge verdicts (ok or unparseable) that did not parse, 0..1
    n_judgements: int  # those verdicts
    mean_margin: float | None  # mean pair margin, judge score units
    margin_change: float | None  # mean_margin minus the previous iteration's
    kl: float | None  # KL(policy || reference), nats per response token, where the trainer recorded it (ppo, rloo, grpo)
    warnings: list[str] = []  # one line each: "<monitor>: what, the threshold, what it may mean"
    stop: list[str] = []  # monitors that warned and are named in stop_on

    @property
    def should_stop(self) -> bool:
        return bool(self.stop)


def is_comparison(j: Judgement) -> bool:
    """An ordered model comparison (selfplay.judges): two generation ids as presented, score = P(first wins).
    Human pair labels have no presentation order, and derived win rates (method "winrate") are no verdicts."""
    return len(j.generation_ids) == 2 and j.method in ("text", "logprob")


def first_presented_won(j: Judgement) -> bool | None:
    """A comparison's verdict by position: True = the first-presented answer won (score > 0.5), False = the
    second (< 0.5), None = a tie (0.5), no verdict, or not a comparison."""
    if not is_comparison(j) or j.score is None or j.score == 0.5:
        return None
    return j.score > 0.5


def position_bias(judgements: Sequence[Judgement]) -> float | None:
    """Fraction of decided comparisons the first-presented response won (0.5 = no bias; Zheng et al. 2023).

    Decided = parsed and not a tie (score != 0.5). None when there is none.
    """
    decided = [won for j in judgements if (won := first_presented_won(j)) is not None]
    return sum(decided) / len(decided) if decided else None


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def monitor_iteration(
    prompts: Sequence[Prompt],
    generations: Sequence[Generation],
    judgements: Sequence[Judgement],
    pairs: Sequence[Pair],
    cfg: MonitorConfig,
    *,
    iteration: int | None = None,
    previous: MonitorReport | None = None,
    kl: float | None = None,
) -> MonitorReport:
    """Pure: the monitors of one iteration from its records, with warnings for crossed thresholds.

    `previous` (the last iteration's report) gives the margin trend; `kl` comes from the trainer where it
    records one (DPO does not; PPO does). `prompts` is accepted for symmetry with the loop's stages and
    to scope the other records to this iteration's prompts.
    """
    prompt_ids = {p.id for p in prompts}
    gens = {g.id: g for g in generations if not prompt_ids or g.prompt_id in prompt_ids}
    judgements = [j for j in judgements if not prompt_ids or j.prompt_id in prompt_ids]
    pairs = [p for p in pairs if not prompt_ids or p.prompt_id in prompt_ids]

    pointwise = [j for j in judgements if len(j.generation_ids) == 1 and j.score is not None and j.generation_ids[0] in gens]
    scores = [j.score for j in pointwise if j.score is not None]  # every one: pointwise keeps only the scored
    lengths = [float(gens[j.generation_ids[0]].n_tokens) for j in pointwise]
    length_corr = pearson(scores, lengths)

    gaps = [
        gens[p.chosen_id].n_tokens - gens[p.rejected_id].n_tokens for p in pairs if p.chosen_id in gens and p.rejected_id in gens
    ]
    decided = sum(first_presented_won(j) is not None for j in judgements)
    # Parse failures: verdicts the judge gave but we could not read. Derived win rates are not verdicts, and
    # an "error" (e.g. an empty response, never judged) is not the judge's failure to keep its format.
    verdicts = [j for j in judgements if j.method != "winrate" and j.status in ("ok", "unparseable")]
    failures = [j for j in verdicts if j.status == "unparseable"]
    mean_margin = _mean([p.margin for p in pairs])
    margin_change = (
        mean_margin - previous.mean_margin
        if previous is not None and previous.mean_margin is not None and mean_margin is not None
        else None
    )

    report = MonitorReport(
        iteration=iteration,
        length_corr=length_corr,
        n_scored=len(scores),
        length_gap_tokens=_mean(gaps),
        n_pairs=len(gaps),
        position_bias=position_bias(judgements),
        n_pairwise=decided,
        parse_failure=len(failures) / len(verdicts) if verdicts else None,
        n_judgements=len(verdicts),
        mean_margin=mean_margin,
        margin_change=margin_change,
        kl=kl,
    )
    warnings = check_thresholds(report, cfg)
    return report.model_copy(
        update={
            "warnings": [line for _, line in warnings],
            "stop": [name for name, _ in warnings if name in cfg.stop_on],
        }
    )


def check_thresholds(r: MonitorReport, cfg: MonitorConfig) -> list[tuple[str, str]]:
    """(monitor, one-line warning) for each configured threshold the report crosses."""
    out: list[tuple[str, str]] = []
    enough = cfg.min_samples
    if (
        cfg.max_abs_length_corr is not None
        and r.length_corr is not None
        and r.n_scored >= enough
        and abs(r.length_corr) > cfg.max_abs_length_corr
    ):
        out.append(
            (
                "length_corr",
                f"length_corr: judge score correlates {r.length_corr:+.2f} with response length "
                f"(|r| > {cfg.max_abs_length_corr}, {r.n_scored} responses): the judge may be rewarding length",
            )
        )
    if (
        cfg.max_length_gap_tokens is not None
        and r.length_gap_tokens is not None
        and r.n_pairs >= enough
        and abs(r.length_gap_tokens) > cfg.max_length_gap_tokens
    ):
        out.append(
            (
                "length_gap",
                f"length_gap: chosen responses are {r.length_gap_tokens:+.0f} tokens longer than rejected "
                f"on average (|gap| > {cfg.max_length_gap_tokens:g}, {r.n_pairs} pairs): training will learn a length preference",
            )
        )
    if (
        cfg.max_parse_failure is not None
        and r.parse_failure is not None
        and r.n_judgements >= enough
        and r.parse_failure > cfg.max_parse_failure
    ):
        out.append(
            (
                "parse_failure",
                f"parse_failure: {r.parse_failure:.0%} of {r.n_judgements} judgements have no score "
                f"(> {cfg.max_parse_failure:.0%}): the judge is not keeping its output format",
            )
        )
    if (
        cfg.max_position_bias is not None
        and r.position_bias is not None
        and r.n_pairwise >= enough
        and max(r.position_bias, 1 - r.position_bias) > cfg.max_position_bias
    ):
        side = "first" if r.position_bias > 0.5 else "second"
        share = max(r.position_bias, 1 - r.position_bias)
        out.append(
            (
                "position_bias",
                f"position_bias: the {side}-presented answer won {share:.0%} of {r.n_pairwise} "
                f"pairwise judgements (> {cfg.max_position_bias:.0%}): verdicts depend on order, not content",
            )
        )
    if cfg.max_margin_drop is not None and r.margin_change is not None and -r.margin_change > cfg.max_margin_drop:
        out.append(
            (
                "margin_drop",
                f"margin_drop: mean pair margin fell by {-r.margin_change:.2f} since the last iteration "
                f"(> {cfg.max_margin_drop:g}): the judge separates responses less (collapse or saturation)",
            )
        )
    if cfg.max_kl is not None and r.kl is not None and r.kl > cfg.max_kl:
        out.append(
            ("kl", f"kl: KL to the reference policy is {r.kl:.3f} nats per token (> {cfg.max_kl:g}): the policy is drifting far")
        )
    return out
