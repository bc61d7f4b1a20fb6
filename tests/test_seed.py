"""The human seed set: importing JSONL and Label Studio exports, errors that name the line, agreement numbers
worked out by hand, and terminal labelling driven by scripted input."""

import json

import pytest

from selfplay.agreement import agreement
from selfplay.config import PROJECT_ROOT
from selfplay.judges.human import HumanLabel
from selfplay.records import Pair
from selfplay.seed import (
    LabelStudioKeys, SeedError, judge_human_agreement, judge_seed_agreement, label_pairs, load_label_studio, load_seed,
    pairs_from_scored,
)


def write_jsonl(path, rows):
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def test_shipped_example_seed_file_loads_and_says_it_is_an_example():
    seed = load_seed(PROJECT_ROOT / "data" / "seed_example.jsonl")
    assert len(seed.pairs) >= 10 and not seed.scored
    assert all(p.judge == "human" and p.margin == 1.0 and p.chosen != p.rejected for p in seed.pairs)
    assert len({p.id for p in seed.pairs}) == len(seed.pairs)
    assert all("example" in line for line in (PROJECT_ROOT / "data" / "seed_example.jsonl").read_text().splitlines())


def test_pairwise_and_pointwise_lines(tmp_path):
    path = write_jsonl(tmp_path / "seed.jsonl", [
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
        {"id": "mine", "prompt_id": "q7", "prompt": "Capital of France?", "chosen": "Paris", "rejected": "Lyon",
         "labeler": "ann", "note": "easy", "margin": 3},
        {"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away.", "label": "rejected"},  # the person preferred "Go away."
        {"prompt": "Pick", "chosen": "x", "rejected": "y", "label": "tie"},
        {"prompt": "Pick", "chosen": "x", "rejected": "z", "label": "skip"},
        "",
        {"prompt": "Rate me", "response": "An answer.", "score": 4},
        {"id": "r2", "prompt": "Rate me", "response": "A worse answer.", "score": 2.5, "labeler": "bob"},
    ])
    seed = load_seed(path)
    # The pairwise lines' pairs, then one from the pointwise lines: the best-scored response against the worst.
    assert [p.chosen for p in seed.pairs] == ["4", "Paris", "Go away.", "An answer."] and seed.from_scored == 1
    assert (seed.pairs[3].rejected, seed.pairs[3].margin) == ("A worse answer.", 1.5)
    assert seed.pairs[2].rejected == "Hello!" and seed.ties == 1 and seed.skipped == 1
    mine = seed.pairs[1]
    assert (mine.id, mine.prompt_id, mine.margin, mine.chosen_score, mine.rejected_score) == ("mine", "q7", 3.0, 3.0, 0.0)
    assert seed.pairs[0].id.startswith("seed-") and seed.pairs[0].chosen_id == seed.pairs[0].id + "/chosen"
    assert [(s.response, s.score, s.labeler) for s in seed.scored] == [("An answer.", 4.0, None), ("A worse answer.", 2.5, "bob")]
    assert seed.scored[0].prompt_id == seed.scored[1].prompt_id  # same prompt text, same derived prompt id
    # The same file read twice gives the same ids (derived from the texts, not from line numbers).
    assert load_seed(path) == seed


@pytest.mark.parametrize("rows, message", [
    ([{"prompt": "p", "chosen": "a"}], r"seed\.jsonl:1: pairwise line is missing 'rejected'"),
    ([{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "response": "r"}],
     r"seed\.jsonl:2: pointwise line is missing 'score'"),
    ([{"prompt": "p", "chosen": "a", "rejected": "b", "choosen": "c"}], r":1: unknown key 'choosen' \(pairwise lines take"),
    ([{"id": "x", "prompt": "p", "chosen": "a", "rejected": "b"}, {"id": "x", "prompt": "q", "chosen": "a", "rejected": "b"}],
     r":2: duplicate id 'x' \(the same id as line 1\)"),
    ([{"prompt": "p", "chosen": "a", "rejected": "b"}, "", {"prompt": "p", "chosen": "a", "rejected": "b"}],
     r":3: duplicate record \(the same texts as line 1\)"),
    (['{"prompt": "p", "chosen": "a",'], r":1: malformed JSON"),
    (["[1, 2]"], r":1: expected a JSON object, got list"),
    ([{"prompt": "p", "text": "a"}], r":1: neither pairwise .* nor pointwise"),
    ([{"prompt": "p", "chosen": "same", "rejected": "same"}], r":1: chosen and rejected are the same text"),
    ([{"prompt": "", "chosen": "a", "rejected": "b"}], r":1: 'prompt' must be a non-empty string"),
    ([{"prompt": "p", "chosen": 3, "rejected": "b"}], r":1: 'chosen' must be a non-empty string"),
    ([{"prompt": "p", "response": "r", "score": "high"}], r":1: 'score' must be a finite number"),
    (['{"prompt": "p", "response": "r", "score": NaN}'], r":1: 'score' must be a finite number"),
    ([{"prompt": "p", "chosen": "a", "rejected": "b", "label": "better"}], r":1: label must be one of chosen, rejected"),
    ([{"prompt": "p", "chosen": "a", "rejected": "b", "margin": 0}], r":1: margin must be > 0"),
    ([], r"seed\.jsonl: no records"),
])
def test_bad_seed_lines_are_one_line_errors_naming_the_line(tmp_path, rows, message):
    path = write_jsonl(tmp_path / "seed.jsonl", rows)
    with pytest.raises(SeedError, match=message) as info:
        load_seed(path)
    assert "\n" not in str(info.value)


def test_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(SeedError, match="no such file"):
        load_seed(tmp_path / "nope.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"prompt": "caf\xe9"}\n')
    with pytest.raises(SeedError, match="not UTF-8"):
        load_seed(tmp_path / "latin1.jsonl")


def ls_task(tid, votes, data=None, cancelled=()):
    annotations = [{"id": 100 + i, "was_cancelled": i in cancelled,
                    "result": [{"id": "r", "from_name": "pw", "to_name": "text1", "type": "pairwise", "origin": "manual",
                                "value": {"selected": v}}]}
                   for i, v in enumerate(votes)]
    return {"id": tid, "data": data or {"prompt": f"Prompt {tid}", "text1": f"left {tid}", "text2": f"right {tid}"},
            "annotations": annotations}


def test_label_studio_pairwise_export(tmp_path):
    tasks = [
        ls_task(1, ["left"]),
        ls_task(2, ["right", "right", "left"]),  # majority right
        ls_task(3, ["left", "right"]),  # annotators split evenly: a tie
        ls_task(4, []),  # not annotated: skipped
        ls_task(5, ["left", "right"], cancelled=(0,)),  # the cancelled vote does not count: right
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks))
    seed = load_seed(path)
    assert [(p.id, p.chosen, p.rejected) for p in seed.pairs] == [
        ("ls-1", "left 1", "right 1"), ("ls-2", "right 2", "left 2"), ("ls-5", "right 5", "left 5")]
    assert seed.ties == 1 and seed.skipped == 1 and all(p.judge == "human" for p in seed.pairs)
    # Other data keys are named explicitly.
    custom = tmp_path / "custom.json"
    custom.write_text(json.dumps([ls_task(9, ["right"], data={"question": "Q", "a": "A", "b": "B"})]))
    with pytest.raises(SeedError, match=r"task #0 \(id 9\): data has no 'prompt' \(it has a, b, question\)"):
        load_seed(custom)
    (pair,) = load_label_studio(custom, LabelStudioKeys(prompt="question", left="a", right="b")).pairs
    assert (pair.prompt, pair.chosen, pair.rejected) == ("Q", "B", "A")


def test_label_studio_bad_exports(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"tasks": []}))
    with pytest.raises(SeedError, match="expected a Label Studio JSON export"):
        load_seed(path)
    path.write_text(json.dumps([ls_task(1, ["up"])]))
    with pytest.raises(SeedError, match=r"task #0 \(id 1\): pairwise result selected 'up'"):
        load_seed(path)
    path.write_text(json.dumps([ls_task(1, ["left"]), ls_task(1, ["right"])]))
    with pytest.raises(SeedError, match=r"task #1 \(id 1\): duplicate task"):
        load_seed(path)


# Label Studio's three export shapes of the same five tasks, for its two stock preference templates. The shapes follow
# Label Studio's converter (label_studio_sdk.converter): JSON keeps tasks with their annotations; JSON_MIN and CSV
# have one row per non-cancelled annotation (a task without one: a row without the result), the task data flattened
# beside the Pairwise control's result [{"selected": ...}] (in CSV as JSON text) and the annotation's fields.
VOTES = {1: ["left"], 2: ["right", "right", "left"], 3: ["left", "right"], 4: [], 5: ["right"]}
TEMPLATES = {  # template -> (control name, data of task t)
    "rlhf": ("comparison", lambda t: {"prompt": f"Prompt {t}", "answer1": f"left {t}", "answer2": f"right {t}"}),
    "pairwise": ("pw", lambda t: {"pairText1": f"left {t}", "pairText2": f"right {t}"}),
}


def ls_json(template):
    name, data = TEMPLATES[template]
    tasks = []
    for t, votes in VOTES.items():
        annotations = [{"id": 10 * t + i, "was_cancelled": False, "completed_by": 1,
                        "result": [{"id": "r", "from_name": name, "to_name": "a,b", "type": "pairwise",
                                    "value": {"selected": v}}]} for i, v in enumerate(votes)]
        if t == 5:  # a cancelled (skipped) annotation: never a vote
            annotations.insert(0, {"id": 99, "was_cancelled": True, "result": [
                {"from_name": name, "to_name": "a,b", "type": "pairwise", "value": {"selected": "left"}}]})
        tasks.append({"id": t, "data": data(t), "annotations": annotations, "predictions": [], "project": 3})
    return tasks


def ls_min_rows(template):
    name, data = TEMPLATES[template]
    rows = []
    for t, votes in VOTES.items():
        base = {**data(t), "id": t}
        rows += [{**base, name: [{"selected": v}], "annotator": 1, "annotation_id": 10 * t + i,
                  "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-01T00:00:00Z", "lead_time": 2.5}
                 for i, v in enumerate(votes)] or [{**base, "annotator": None, "annotation_id": None}]
    return rows


def ls_csv(path, template):
    import csv

    rows = [{k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()} for row in ls_min_rows(template)]
    columns = sorted({k for row in rows for k in row})
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=columns, quoting=csv.QUOTE_NONNUMERIC)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.mark.parametrize("template", ["rlhf", "pairwise"])
@pytest.mark.parametrize("shape", ["json", "json_min", "csv"])
def test_label_studio_exports_of_both_stock_templates(tmp_path, template, shape):
    match shape:
        case "json":
            path = tmp_path / "export.json"
            path.write_text(json.dumps(ls_json(template)))
        case "json_min":
            path = tmp_path / "export.json"
            path.write_text(json.dumps(ls_min_rows(template)))
        case _:
            path = ls_csv(tmp_path / "export.csv", template)
    seed = load_seed(path)
    prompt = (lambda t: f"Prompt {t}") if template == "rlhf" else (lambda t: "")
    assert [(p.id, p.prompt, p.chosen, p.rejected) for p in seed.pairs] == [
        ("ls-1", prompt(1), "left 1", "right 1"), ("ls-2", prompt(2), "right 2", "left 2"),
        ("ls-5", prompt(5), "right 5", "left 5")]
    assert (seed.ties, seed.skipped) == (1, 1) and all(p.judge == "human" for p in seed.pairs)
    # Pairwise Classification has no prompt: the pairs' prompt is empty, and the load message says so.
    assert bool(seed.notes) == (template == "pairwise")
    assert ("pairs' prompt is empty" in seed.summary()) == (template == "pairwise")
    assert seed.summary().startswith(f"{path}: pairs 3, ties 1, skipped 1")


def test_label_studio_keys_are_named_from_the_command_line(tmp_path):
    rows = [{"id": 1, "question": "Q", "a": "A", "b": "B", "choice": [{"selected": "right"}]}]
    (tmp_path / "min.json").write_text(json.dumps(rows))
    with pytest.raises(SeedError, match=r"item #0 \(task 1\): data has no 'prompt' .*--keys PROMPT,LEFT,RIGHT"):
        load_seed(tmp_path / "min.json")
    (pair,) = load_seed(tmp_path / "min.json", LabelStudioKeys.parse("question,a,b")).pairs
    assert (pair.prompt, pair.chosen, pair.rejected) == ("Q", "B", "A")
    (pair,) = load_seed(tmp_path / "min.json", LabelStudioKeys.parse(",a,b")).pairs  # no prompt key: an empty prompt
    assert (pair.prompt, pair.chosen) == ("", "B")
    with pytest.raises(SeedError, match=r"data has no 'answer1' \(it has a, b, question\)"):
        load_seed(tmp_path / "min.json", LabelStudioKeys.parse("question,answer1,answer2"))
    for bad in ("prompt,answer1", "prompt,,answer2", "a,b,c,d"):
        with pytest.raises(SeedError, match=r"expected PROMPT,LEFT,RIGHT data keys"):
            LabelStudioKeys.parse(bad)
    seed_jsonl = write_jsonl(tmp_path / "seed.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    with pytest.raises(SeedError, match=r"a JSONL seed file has fixed keys"):
        load_seed(seed_jsonl, LabelStudioKeys.parse("prompt,answer1,answer2"))


def test_label_studio_meta_measures_agreement_with_the_run_judge(tmp_path):
    tasks = ls_json("rlhf")
    # selfplay export records which answer the run's judge chose; people chose left (answer1) on 1, right on 2 and 5.
    for task, judge_chose in zip(tasks, ["answer1", "answer1", "answer2", "answer1", "answer2"], strict=True):
        task["meta"] = {"selfplay": {"chosen": judge_chose, "pair_id": f"iter_001/q{task['id']}/p"}}
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks))
    seed = load_seed(path)
    # Decided tasks 1, 2, 5: the judge agrees on 1 (answer1) and 5 (answer2), not on 2; the tie and the skip are not counted.
    assert (seed.judge_compared, seed.judge_agreed) == (3, 2)
    assert "people chose as the run's judge did on 2 of 3 exported pairs" in seed.summary()


@pytest.mark.parametrize("text, message", [
    ("", r"export\.csv: no header row"),
    ('id,prompt,answer1,answer2,comparison\n1,p,a,b,"[{""selected"": ""up""}]"\n',
     r"export\.csv:2: pairwise result selected 'up'"),
    ("id,prompt,answer1,answer2\n1,p,a,b,extra\n", r"export\.csv:2: more cells than the header has columns"),
    ("id,prompt,answer1,answer2\n1,p,a,b\n1,p,a,c\n", r"export\.csv:3: task 1 has other data than in"),
    ("id,prompt,answer1,answer2\n1,,a,b\n", r"export\.csv:2 \(task 1\): 'prompt' must be a non-empty string"),
])
def test_bad_label_studio_csv_is_one_line(tmp_path, text, message):
    path = tmp_path / "export.csv"
    path.write_text(text)
    with pytest.raises(SeedError, match=message) as info:
        load_seed(path)
    assert "\n" not in str(info.value)


def test_pairs_from_pointwise_scores(tmp_path):
    path = write_jsonl(tmp_path / "scores.jsonl", [
        {"prompt": "A?", "response": "a1", "score": 2}, {"prompt": "A?", "response": "a2", "score": 5},
        {"prompt": "A?", "response": "a3", "score": 3},
        {"prompt": "B?", "response": "b1", "score": 4}, {"prompt": "B?", "response": "b2", "score": 4.5},
        {"prompt": "C?", "response": "c1", "score": 1},
    ])
    pairs = pairs_from_scored(load_seed(path).scored, min_margin=1.0)
    # A: best 5 vs worst 2, margin 3. B: 4.5 vs 4 is within the 1.0 tie margin. C: a single response.
    assert [(p.chosen, p.rejected, p.margin) for p in pairs] == [("a2", "a1", 3.0)]


def test_pointwise_lines_are_pairs_wherever_a_seed_set_is_read(tmp_path):
    from selfplay.config import load_config
    from selfplay.loop import preflight

    scores = write_jsonl(tmp_path / "scores.jsonl", [
        {"prompt": "A?", "response": "no", "score": 2}, {"prompt": "A?", "response": "a longer answer", "score": 5}])
    seed = load_seed(scores)
    assert seed.summary() == f"{scores}: pairs 1 (1 from scored lines), ties 0, skipped 0"
    # The warm-up (and preflight before it) has a pair to train on; the loop's agreement check judges it.
    preflight(load_config(None, [f"human.seed_set={scores}", "human.seed_warmup=dpo"]))
    result = judge_seed_agreement(LengthJudge(), seed.pairs, seed=0)
    assert (result.n, result.accuracy) == (1, 1.0)


def accuracy_kappa(a):
    return a.accuracy, a.kappa


def test_agreement_by_hand():
    judge = ["A", "A", "B", "B", "tie", "A"]
    human = ["A", "B", "B", "B", "A", None]  # the last item is unlabelled: left out
    # 5 items; matches on items 1, 3, 4: p_o = 3/5 = 0.6.
    # Judge frequencies A 2/5, B 2/5, tie 1/5; human A 2/5, B 3/5.
    # p_e = (2*2 + 2*3 + 1*0) / 25 = 10/25 = 0.4;  kappa = (0.6 - 0.4) / (1 - 0.4) = 1/3
    accuracy, kappa = accuracy_kappa(agreement(judge, human))
    assert accuracy == pytest.approx(0.6) and kappa == pytest.approx(1 / 3)
    assert accuracy_kappa(agreement(["A", "B"], ["A", "B"])) == (1.0, 1.0)
    # Opposite on two balanced items: p_o = 0, p_e = 0.5, kappa = -1.
    assert accuracy_kappa(agreement(["A", "B"], ["B", "A"])) == (0.0, -1.0)
    assert accuracy_kappa(agreement(["A", "A"], ["A", "A"])) == (1.0, None)  # p_e = 1: kappa undefined
    assert accuracy_kappa(agreement([None], ["A"])) == (None, None)
    with pytest.raises(ValueError, match="2 judge labels but 1 human"):
        agreement(["A", "B"], ["A"])


def test_agreement_counts_per_pair():
    # Pairs p (shown twice), q (twice), r (once), s (twice, no verdict at all).
    judge = ["first", "second", "first", "first", "tie", None, None]
    human = ["first", "second", "first", "second", "first", "first", "second"]
    a = agreement(judge, human, ["p", "p", "q", "q", "r", "s", "s"], n_boot=200, seed=1)
    # p agrees in both orders; q's orders disagree (half); r is a tie (a miss); s is left out.
    assert (a.n, a.unjudged, a.agree, a.disagree, a.undecided) == (3, 1, 1, 0, 2)
    assert a.accuracy == pytest.approx((1 + 0.5 + 0) / 3)
    assert a.accuracy_ci is not None and a.accuracy_ci[0] <= a.accuracy <= a.accuracy_ci[1]
    assert agreement(["second", "first"], ["first", "second"], ["p", "p"]).disagree == 1  # the other response in both orders
    with pytest.raises(ValueError, match="2 labels but 1 pair ids"):
        agreement(["A", "B"], ["A", "B"], ["p"])


def human_pairs(n):
    return [Pair(id=f"h{i}", prompt_id=f"q{i}", prompt=f"Q{i}", chosen=f"good {i}", rejected=f"bad {i}", chosen_id="c",
                 rejected_id="r", chosen_score=1.0, rejected_score=0.0, margin=1.0, judge="human") for i in range(n)]


def test_judge_human_agreement():
    pairs = human_pairs(12)
    agree = judge_human_agreement(pairs, [4.0] * 12, [2.0] * 12, seed=0)
    # Always prefers the person's choice. The seeded A/B order puts that choice in both slots, so kappa is 1;
    # with it always in one slot the human labels would be constant and kappa undefined.
    assert (agree.n, agree.accuracy, agree.kappa) == (12, 1.0, 1.0)
    contrary = judge_human_agreement(pairs, [1.0] * 12, [3.0] * 12, seed=0)
    assert contrary.accuracy == 0.0 and contrary.kappa < 0
    # Equal scores are judge ties: never a match, and kappa 0 (a tie label the people never used: p_e = 0).
    ties = judge_human_agreement(pairs, [3.0] * 12, [3.2] * 12, seed=0, tie_margin=0.5)
    assert ties.accuracy == 0.0 and ties.kappa == 0.0
    # A missing judge score is left out and counted, never a label.
    missing = judge_human_agreement(pairs[:3], [4.0, None, 4.0], [2.0, 2.0, None], seed=0)
    assert (missing.n, missing.unjudged, missing.accuracy) == (1, 2, 1.0)


class LengthJudge:
    """Scores a response by its length, like a judge with a pure length prior; records what it was shown."""

    def __init__(self):
        self.seen = []

    def judge(self, prompts, generations):
        from types import SimpleNamespace

        self.seen = [(p.text, [g.text for g in generations if g.prompt_id == p.id]) for p in prompts]
        return [SimpleNamespace(generation_ids=[g.id], score=float(len(g.text))) for g in generations]


def test_judge_seed_agreement_runs_the_judge_on_each_pair():
    pairs = human_pairs(4)
    # Make the person's choice the longer text in 3 pairs of 4.
    pairs = [p.model_copy(update={"chosen": p.chosen + " and more words", "rejected": p.rejected}) for p in pairs[:3]] + \
        [pairs[3].model_copy(update={"chosen": "no", "rejected": "a much longer answer"})]
    judge = LengthJudge()
    result = judge_seed_agreement(judge, pairs, seed=0)
    assert (result.n, result.unjudged, result.accuracy) == (4, 0, 0.75)
    # Each pair is its own prompt holding exactly its two texts.
    assert judge.seen == [(p.prompt, [p.chosen, p.rejected]) for p in pairs]


def scripted(answers):
    answers = list(answers)
    prompts_seen = []

    def input_fn(prompt):
        prompts_seen.append(prompt)
        if not answers:
            raise EOFError
        return answers.pop(0)
    return input_fn, prompts_seen


def shown_a(output: str) -> str:
    return output.split("--- A ---\n")[1].split("\n--- B ---")[0]


def test_label_pairs_writes_labels_as_you_go_and_resumes(tmp_path):
    pairs = human_pairs(3)
    out = tmp_path / "labels" / "seed.jsonl"
    shown: list[str] = []
    input_fn, asked = scripted(["maybe", "a", "t", "q"])
    session = label_pairs(pairs, out, input_fn=input_fn, output_fn=shown.append, labeler="ann")
    # "maybe" is re-asked; a labels pair 1, t labels pair 2, q stops before pair 3.
    assert len(asked) == 4 and any("'maybe'?" in line for line in shown)
    assert (session.labelled, session.already, session.remaining) == (2, 0, 1)
    labels = [HumanLabel.model_validate_json(line) for line in out.read_text().splitlines()]
    assert [(lab.id, lab.labeler) for lab in labels] == [("h0", "ann"), ("h1", "ann")]
    a_text = shown_a(shown[0])
    assert labels[0].label == ("chosen" if a_text == "good 0" else "rejected") and labels[1].label == "tie"

    # Running again shows only the unlabelled pair; B this time.
    shown2: list[str] = []
    input_fn, _ = scripted(["b"])
    session = label_pairs(pairs, out, input_fn=input_fn, output_fn=shown2.append)
    assert (session.labelled, session.already, session.remaining) == (1, 2, 0) and "h2" in shown2[0]
    assert "h0" not in "".join(shown2)

    # The labels file is a seed file: the person's choices become pairs, the tie is counted.
    seed = load_seed(out)
    assert seed.ties == 1 and [p.id for p in seed.pairs] == ["h0", "h2"]
    assert seed.pairs[0].chosen == a_text  # answered "a"
    assert seed.pairs[1].chosen != shown_a(shown2[0])  # answered "b"

    # End of input is a quit, not a crash; everything is labelled now, so nothing is asked.
    input_fn, asked = scripted([])
    assert label_pairs(pairs, out, input_fn=input_fn, output_fn=lambda s: None).already == 3 and not asked


def test_label_pairs_end_of_input_quits_cleanly(tmp_path):
    input_fn, asked = scripted([])  # e.g. stdin closed
    session = label_pairs(human_pairs(2), tmp_path / "labels.jsonl", input_fn=input_fn, output_fn=lambda s: None)
    assert (session.labelled, session.remaining) == (0, 2) and len(asked) == 1
    assert not (tmp_path / "labels.jsonl").exists()
