"""A judge stage that fails keeps what it judged: judgements are saved a chunk of prompts at a time, and the rerun
judges only the chunks without a file, in the same batches as a run that went through."""

import pytest

from selfplay import loop
from selfplay.records import Judgement, read_records

from conftest import make_generation, make_prompt


class CountingJudge:
    """Scores every response 3.0; raises on the prompt named `fail_on` (a server that dies midway)."""

    def __init__(self, fail_on: str | None = None):
        self.calls: list[list[str]] = []
        self.fail_on = fail_on

    def judge(self, prompts, generations):
        self.calls.append([p.id for p in prompts])
        if self.fail_on in {p.id for p in prompts}:
            raise RuntimeError("the judge server went away")
        return [Judgement(id=f"{g.id}/j", prompt_id=g.prompt_id, generation_ids=[g.id], judge="pointwise", method="text",
                          raw=["Score: 3"], sample_scores=[3.0], score=3.0, status="ok") for g in generations]


@pytest.fixture
def records(monkeypatch):
    monkeypatch.setattr(loop, "JUDGE_CHUNK", 2)
    prompts = [make_prompt(f"p{i}") for i in range(5)]
    generations = [make_generation(p.id, j, f"answer {j}") for p in prompts for j in range(2)]
    return prompts, generations


def test_a_failed_judge_stage_keeps_its_finished_chunks(records, tmp_path):
    prompts, generations = records
    progress = tmp_path / "judge_progress" / "abc"
    dying = CountingJudge(fail_on="p3")
    with pytest.raises(RuntimeError, match="went away"):
        loop.judge_in_chunks(dying, prompts, generations, progress)
    assert dying.calls == [["p0", "p1"], ["p2", "p3"]]
    assert sorted(f.name for f in progress.iterdir()) == ["prompts_000000.jsonl"]  # the finished chunk, saved
    again = CountingJudge()
    judged = loop.judge_in_chunks(again, prompts, generations, progress)
    assert again.calls == [["p2", "p3"], ["p4"]]  # the saved chunk is not judged again; the batches are the same
    assert [j.generation_ids[0] for j in judged] == [g.id for g in generations]
    assert read_records(progress / "prompts_000000.jsonl", Judgement) == judged[:4]


def test_judging_through_gives_what_a_resumed_stage_gives(records, tmp_path):
    prompts, generations = records
    through = loop.judge_in_chunks(CountingJudge(), prompts, generations, tmp_path / "a")
    resumed_dir = tmp_path / "b"
    with pytest.raises(RuntimeError):
        loop.judge_in_chunks(CountingJudge(fail_on="p4"), prompts, generations, resumed_dir)
    assert loop.judge_in_chunks(CountingJudge(), prompts, generations, resumed_dir) == through


def test_saved_chunks_belong_to_one_judge(tmp_path):
    """Another judge config or iteration seed reads other chunks (a judge changed by --force starts afresh)."""
    from selfplay.config import load_config

    cfg = load_config(None, [])
    other = load_config(None, ["judge.temperature=0.3"])
    assert loop._judge_digest(cfg, 1) == loop._judge_digest(cfg, 1)
    assert len({loop._judge_digest(cfg, 1), loop._judge_digest(cfg, 2), loop._judge_digest(other, 1)}) == 3
