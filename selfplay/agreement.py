"""How well a judge reproduces people's pairwise choices: one record (accuracy, Cohen's kappa, counts) and
one computation, for both places that measure it:

    selfplay.seed       the loop's judge on the seed set every iteration, from its scores; each pair shown in a
                        seeded order (iter_<k>/seed_agreement.json, and the manifest's judge.human_agreement)
    selfplay.evaluate   the evaluation judge on seed pairs, each pair shown in both orders (eval/agreement.json)

Both hand over the same thing: per presented comparison, the side the judge chose and the side the person
chose ("first" / "second"; the judge may also say "tie"), and which pair it presents. A judge label None (an
unparseable output, a missing score) leaves its comparison out and is counted, never a label.

    a = agreement(["first", "tie", None], ["first", "second", "first"])
    (a.n, a.unjudged, a.agree, a.undecided, a.accuracy)   # (2, 1, 1, 1, 0.5)
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from pydantic import BaseModel, model_validator

from selfplay.stats import bootstrap_mean_interval, cohens_kappa

TIE = "tie"  # a judge label that prefers neither response: never a match, never a disagreement


class Agreement(BaseModel):
    file: str | None = None  # the human-labelled pairs; None where the run's config names them (the loop)
    judge: str | None = None  # what judged, e.g. "pairwise@1 on SmolLM2-135M-Instruct"; None as for file
    n: int  # pairs with a verdict in at least one presentation
    unjudged: int  # pairs without any verdict: left out
    agree: int  # pairs where every presentation's verdict named the person's choice
    disagree: int  # pairs where every verdict named the other response
    undecided: int  # the rest of the n: a judge tie, orders that disagree, or an order without a verdict
    accuracy: float | None  # per pair, the share of its verdicts naming the person's choice (a tie is a miss),
    #                         averaged over the n pairs, 0..1; in both orders a pair whose orders disagree counts half
    accuracy_ci: tuple[float, float] | None = None  # 95% percentile bootstrap over the n pairs
    kappa: float | None  # Cohen's kappa, judge vs person, over the presentations with a verdict; None = undefined
    # Pairwise judges in both orders (selfplay eval --seed): the position bias, and the accuracy once it is calibrated
    # out (P(the person's choice wins) averaged over both orders, > 0.5 a hit, 0.5 half; Wang et al. 2023).
    first_position_rate: float | None = None  # verdicts that picked the first-presented response, 0..1
    calibrated_accuracy: float | None = None  # over the pairs with a preference in both orders, 0..1

    @model_validator(mode="before")
    @classmethod
    def _eval_file_before_this_record(cls, data: object) -> object:
        # eval/agreement.json used to hold accuracy as a win rate (ties half) and the undecided pairs as
        # "inconsistent"; every pair counted in n. Read such files as the same numbers.
        if isinstance(data, dict) and isinstance(data.get("accuracy"), dict):
            acc = data["accuracy"]
            ci = (acc["ci_low"], acc["ci_high"]) if acc.get("ci_low") is not None else None
            rest = {k: v for k, v in data.items() if k not in ("accuracy", "inconsistent")}
            data = {
                "unjudged": 0,
                **rest,
                "accuracy": acc.get("win_rate"),
                "accuracy_ci": ci,
                "undecided": data.get("inconsistent", 0),
            }
        return data


def agreement(
    judge_labels: Sequence[Hashable | None],
    human_labels: Sequence[Hashable | None],
    pair_ids: Sequence[Hashable] | None = None,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    file: str | None = None,
    judge: str | None = None,
) -> Agreement:
    """Agreement of a judge with people over presented comparisons, item by item: judge_labels[i] and
    human_labels[i] are comparison i's labels, pair_ids[i] the pair it presents (default: each its own pair).
    An item where either label is None is left out. Kappa (Cohen 1960) discounts the agreement two raters
    would reach by chance from their label frequencies alone; `seed` and `n_boot` drive the bootstrap."""
    if len(judge_labels) != len(human_labels):
        raise ValueError(f"agreement: {len(judge_labels)} judge labels but {len(human_labels)} human labels")
    pair_ids = list(range(len(judge_labels))) if pair_ids is None else list(pair_ids)
    if len(pair_ids) != len(judge_labels):
        raise ValueError(f"agreement: {len(judge_labels)} labels but {len(pair_ids)} pair ids")
    shown: dict[Hashable, list[tuple[Hashable | None, Hashable | None]]] = {}
    for pid, j, h in zip(pair_ids, judge_labels, human_labels, strict=True):
        shown.setdefault(pid, []).append((j, h))
    labelled = [[(j, h) for j, h in items if j is not None and h is not None] for items in shown.values()]
    judged = [items for items in labelled if items]
    complete = [both for both, items in zip(labelled, shown.values(), strict=True) if len(both) == len(items)]
    shares = [sum(j == h for j, h in items) / len(items) for items in judged]
    flat = [pair for items in judged for pair in items]
    agree = sum(all(j == h for j, h in items) for items in complete)
    disagree = sum(all(j != h and j != TIE for j, h in items) for items in complete)
    return Agreement(
        file=file,
        judge=judge,
        n=len(judged),
        unjudged=len(shown) - len(judged),
        agree=agree,
        disagree=disagree,
        undecided=len(judged) - agree - disagree,
        accuracy=sum(shares) / len(shares) if shares else None,
        accuracy_ci=bootstrap_mean_interval(shares, n_boot=n_boot, seed=seed),
        kappa=cohens_kappa([j for j, _ in flat], [h for _, h in flat]) if flat else None,
    )
