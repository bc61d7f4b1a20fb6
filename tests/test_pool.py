"""Prompt pools from every format we read (JSONL, Parquet, CSV, a datasets folder), with a column mapping, and
the errors that name the file, the column and the columns it has."""

import json

import pytest

from selfplay.config import PROJECT_ROOT, PromptsConfig
from selfplay.ifeval import check
from selfplay.pool import load_pool, pool_prompts, sample_prompts
from selfplay.records import RecordError

ROWS = [
    {"qid": "a1", "question": "Name a prime number.", "topic": "maths"},
    {"qid": "a2", "question": "Say hello in French.", "topic": "language"},
    {"qid": "a3", "question": "What colour is the sky?", "topic": "science"},
]


def write_table(tmp_path, kind, rows=ROWS):
    from datasets import Dataset

    table = Dataset.from_list(rows)
    match kind:
        case "parquet":
            table.to_parquet(str(tmp_path / "pool.parquet"))
            return tmp_path / "pool.parquet"
        case "csv":
            table.to_csv(str(tmp_path / "pool.csv"), index=False)
            return tmp_path / "pool.csv"
        case "datasets":
            table.save_to_disk(str(tmp_path / "pool-ds"))
            return tmp_path / "pool-ds"
        case "jsonl":
            (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            return tmp_path / "pool.jsonl"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["parquet", "csv", "datasets", "jsonl"])
def test_every_format_with_a_column_mapping(tmp_path, kind):
    path = write_table(tmp_path, kind)
    prompts = load_pool(path, column="question", id_column="qid")
    assert [(p.id, p.text, p.source, p.meta) for p in prompts] == [
        ("a1", "Name a prime number.", "pool", {"topic": "maths"}),
        ("a2", "Say hello in French.", "pool", {"topic": "language"}),
        ("a3", "What colour is the sky?", "pool", {"topic": "science"}),
    ]
    # The config's mapping is the one the loop samples with.
    cfg = PromptsConfig(pool=str(path), column="question", id_column="qid", per_iteration=2)
    assert pool_prompts(cfg) == prompts
    assert {p.id for p in sample_prompts(cfg, seed=0, iteration=1)} < {"a1", "a2", "a3"}


@pytest.mark.parametrize("kind", ["parquet", "csv", "datasets"])
def test_a_table_without_an_id_column_numbers_its_rows(tmp_path, kind):
    path = write_table(tmp_path, kind, [{"prompt": r["question"]} for r in ROWS])
    assert [(p.id, p.text) for p in load_pool(path)] == [
        ("pool-00001", "Name a prime number."),
        ("pool-00002", "Say hello in French."),
        ("pool-00003", "What colour is the sky?"),
    ]


@pytest.mark.parametrize("kind", ["parquet", "csv", "datasets"])
def test_a_missing_column_names_the_file_the_column_and_its_columns(tmp_path, kind):
    path = write_table(tmp_path, kind)
    with pytest.raises(RecordError) as info:
        load_pool(path)  # the default column, "prompt"
    assert str(info.value) == (
        f"{path}: no column 'prompt' (it has qid, question, topic); set prompts.column / prompts.id_column"
    )
    with pytest.raises(RecordError, match=r"no column 'key' \(it has qid, question, topic\)"):
        load_pool(path, column="question", id_column="key")


def test_a_jsonl_row_without_the_mapped_column_names_its_line(tmp_path):
    path = write_table(tmp_path, "jsonl")
    with pytest.raises(RecordError, match=r"pool\.jsonl:1: expected the columns 'prompt_text' and 'qid' \(no 'prompt_text'\)"):
        load_pool(path, column="prompt_text", id_column="qid")


def test_jsonl_pools_read_as_before():
    # Our pool format and IFEval's: ids, meta and the IFEval kwargs exactly as in the file.
    pool = load_pool("data/instructions.jsonl")
    first = json.loads((PROJECT_ROOT / "data" / "instructions.jsonl").read_text().splitlines()[0])
    assert (pool[0].id, pool[0].text, pool[0].meta) == (first["id"], first["prompt"], {"category": first["category"]})
    ifeval = load_pool("data/ifeval/heldout.jsonl")
    raw = [json.loads(line) for line in (PROJECT_ROOT / "data" / "ifeval" / "heldout.jsonl").read_text().splitlines()]
    assert [p.id for p in ifeval] == [f"ifeval-{r['key']}" for r in raw]
    assert [p.meta for p in ifeval] == [{"instruction_id_list": r["instruction_id_list"], "kwargs": r["kwargs"]} for r in raw]
    assert all(p.source == "ifeval" for p in ifeval)


def test_ifeval_rows_in_parquet_keep_their_checks(tmp_path):
    raw = [json.loads(line) for line in (PROJECT_ROOT / "data" / "ifeval" / "heldout.jsonl").read_text().splitlines()[:5]]
    path = write_table(tmp_path, "parquet", raw)
    prompts = load_pool(path)
    assert [p.id for p in prompts] == [f"ifeval-{r['key']}" for r in raw]
    for p, r in zip(prompts, raw, strict=True):
        assert p.meta["instruction_id_list"] == r["instruction_id_list"]
        # Arrow may give every kwargs dict the union of keys, the missing ones None; the checkers drop None.
        assert [{k: v for k, v in kw.items() if v is not None} for kw in p.meta["kwargs"]] == r["kwargs"]
        for instruction, kwargs, given in zip(r["instruction_id_list"], p.meta["kwargs"], r["kwargs"], strict=True):
            for response in ("A short answer, no more.", "WORDS IN CAPITALS <<title>>"):
                assert check(instruction, kwargs, response) == check(instruction, given, response)


def test_our_prompt_records_and_trl_prompts_are_pools(tmp_path):
    # A run's prompts.jsonl (Prompt records: the text under "text") and TRL's conversational prompt-only rows.
    records = tmp_path / "prompts.jsonl"
    records.write_text(json.dumps({"id": "p1", "text": "Hi there.", "source": "pool", "meta": {}}) + "\n")
    assert [(p.id, p.text) for p in load_pool(records)] == [("p1", "Hi there.")]
    path = write_table(tmp_path, "parquet", [{"id": "c1", "prompt": [{"role": "user", "content": "Count to 3."}]}])
    assert [(p.id, p.text) for p in load_pool(path)] == [("c1", "Count to 3.")]
    multi = write_table(
        tmp_path,
        "datasets",
        [{"id": "c2", "prompt": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}]}],
    )
    with pytest.raises(RecordError, match=r"row 1: a conversational prompt must be one user message, got system, user"):
        load_pool(multi)


def test_unreadable_tables_are_one_line(tmp_path):
    (tmp_path / "broken.parquet").write_text("not parquet")
    with pytest.raises(RecordError, match=r"broken\.parquet: cannot read the prompt pool as Parquet \(ArrowInvalid: ") as info:
        load_pool(tmp_path / "broken.parquet")
    assert "\n" not in str(info.value)
    (tmp_path / "empty-dir").mkdir()
    with pytest.raises(RecordError, match=r"empty-dir: cannot read the prompt pool \(Is a directory\)"):
        load_pool(tmp_path / "empty-dir")
    empty = write_table(tmp_path, "parquet", [{"prompt": "Fine."}, {"prompt": " "}])
    with pytest.raises(RecordError, match=r"pool\.parquet: row 2: empty prompt"):
        load_pool(empty)
    dupes = write_table(tmp_path, "parquet", [{"id": "x", "prompt": "a"}, {"id": "x", "prompt": "b"}])
    with pytest.raises(RecordError, match=r"pool\.parquet: row 2: duplicate id 'x'"):
        load_pool(dupes)
