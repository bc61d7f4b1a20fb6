import json

import pytest

from selfplay.records import Pair, Prompt, RecordError, atomic_path, derive_seed, read_records, write_records


def test_round_trip(tmp_path):
    path = tmp_path / "prompts.jsonl"
    records = [Prompt(id="a", text="Hi"), Prompt(id="b", text="Über", meta={"k": [1, 2]})]
    write_records(path, records)
    assert read_records(path, Prompt) == records
    assert json.loads(path.read_text().splitlines()[1])["meta"] == {"k": [1, 2]}


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "text": "x"}\n{"id": "b", "text": \n')
    with pytest.raises(RecordError, match=r"p\.jsonl:2: malformed JSON"):
        read_records(path, Prompt)


def test_missing_field_and_unknown_field(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a"}\n')
    with pytest.raises(RecordError, match=r":1: text: Field required"):
        read_records(path, Prompt)
    path.write_text('{"id": "a", "text": "x", "colour": 1}\n')
    with pytest.raises(RecordError, match=r":1: colour"):
        read_records(path, Prompt)


def test_duplicate_id_and_non_utf8(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n')
    with pytest.raises(RecordError, match=r":2: duplicate id 'a'"):
        read_records(path, Prompt)
    path.write_bytes(b'{"id": "a", "text": "\xff"}\n')
    with pytest.raises(RecordError, match="not UTF-8"):
        read_records(path, Prompt)


def test_empty_file_is_no_records(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("")
    assert read_records(path, Prompt) == []


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "p.jsonl"
    write_records(path, [Prompt(id="old", text="x")])
    with pytest.raises(OSError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise OSError("No space left on device")  # the disk filling mid-write
    assert read_records(path, Prompt) == [Prompt(id="old", text="x")]
    assert [p.name for p in tmp_path.iterdir()] == ["p.jsonl"]  # no temp file left behind


def test_derive_seed_is_stable_and_distinct():
    assert derive_seed(0, 1, "pool-0001", 0) == derive_seed(0, 1, "pool-0001", 0)
    assert derive_seed(0, 1, "pool-0001", 0) != derive_seed(0, 1, "pool-0001", 1)
    assert 0 <= derive_seed("x") < 2**31
    assert derive_seed(0, "pool") == 876917159  # fixed forever: changing it changes every run's sampling


def test_pair_to_trl_is_conversational():
    pair = Pair(id="p/p", prompt_id="p", prompt="Q?", chosen="good", rejected="bad", chosen_id="p/g0", rejected_id="p/g1",
                chosen_score=4.0, rejected_score=2.0, margin=2.0, judge="pointwise")
    assert pair.to_trl() == {
        "prompt": [{"role": "user", "content": "Q?"}],
        "chosen": [{"role": "assistant", "content": "good"}],
        "rejected": [{"role": "assistant", "content": "bad"}],
    }
