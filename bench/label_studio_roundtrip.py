"""Round trip through a real Label Studio: our export in, people's labels (simulated through the API) out, and
Label Studio's JSON, JSON_MIN and CSV exports read back as seed sets. Not a test: Label Studio is a big install.

    python3 -m venv ls-venv && ls-venv/bin/pip install label-studio        # its own venv, never selfplay's
    LABEL_STUDIO_USERNAME=bench@example.com LABEL_STUDIO_PASSWORD=... LABEL_STUDIO_USER_TOKEN=<40 hex> \
        ls-venv/bin/label-studio start --no-browser --internal-host 127.0.0.1 --port 8080 --data-dir /tmp/ls-data \
        --enable-legacy-api-token &     # the first start creates the user; the token is a legacy token
    LABEL_STUDIO_API_KEY=<the same token> python bench/label_studio_roundtrip.py [--run RUN] [--out DIR]

Without --run, a run of six pairs is made in --out. The script creates a project with `selfplay export`'s
labelling config, imports its tasks, annotates them (the judge's side on most, the other side on some, two votes
that tie on one, none on one), exports the three formats and prints what load_seed made of each; it exits 1 when
a format's counts differ from the annotations it made.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from selfplay.config import load_config
from selfplay.export import export_run
from selfplay.records import Pair, Prompt, write_records
from selfplay.rundir import Run
from selfplay.seed import load_seed

EXPORTS = {"JSON": "export.json", "JSON_MIN": "export-min.json", "CSV": "export.csv"}


class LabelStudio:
    """The few endpoints of Label Studio's REST API the round trip needs; a legacy token (40 hex) or a personal
    access token (a JWT refresh token, exchanged for an access token)."""

    def __init__(self, url: str, token: str):
        self.url = url.rstrip("/")
        if token.count(".") == 2:  # a personal access token: POST it to /api/token/refresh for a short-lived one
            access = self._call("POST", "/api/token/refresh", {"refresh": token}, auth=None)["access"]
            self.auth = f"Bearer {access}"
        else:
            self.auth = f"Token {token}"

    def _call(self, method: str, path: str, body: object = None, auth: str | None = "", raw: bool = False):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if auth is not None:
            request.add_header("Authorization", auth or self.auth)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                payload = response.read()
        except urllib.error.HTTPError as err:
            raise SystemExit(f"{method} {path}: HTTP {err.code}: {err.read().decode(errors='replace')[:500]}") from None
        except urllib.error.URLError as err:
            raise SystemExit(f"{method} {self.url}{path}: {err.reason} (is Label Studio running there?)") from None
        return payload if raw else json.loads(payload or b"null")

    def create_project(self, title: str, label_config: str) -> int:
        return self._call("POST", "/api/projects", {"title": title, "label_config": label_config})["id"]

    def import_tasks(self, project: int, tasks: list[dict]) -> None:
        self._call("POST", f"/api/projects/{project}/import?commit_to_project=true", tasks)

    def tasks(self, project: int) -> list[dict]:
        page = self._call("GET", f"/api/tasks?project={project}&page_size=1000&fields=all")
        return page["tasks"] if isinstance(page, dict) else page

    def annotate(self, task: int, from_name: str, selected: str, to_name: str) -> None:
        result = [{"from_name": from_name, "to_name": to_name, "type": "pairwise", "value": {"selected": selected}}]
        self._call("POST", f"/api/tasks/{task}/annotations", {"result": result, "was_cancelled": False})

    def export(self, project: int, export_type: str) -> bytes:
        return self._call("GET", f"/api/projects/{project}/export?exportType={export_type}&download_all_tasks=true", raw=True)


def demo_run(root: Path) -> Run:
    """Six pairs in one iteration: enough for every case the annotations below make."""
    run = Run.create(root, load_config(None))
    pairs = [
        Pair(
            id=f"q{i}/p",
            prompt_id=f"q{i}",
            prompt=f"Question {i}: name a colour.",
            chosen=f"Blue, like case {i}.",
            rejected=f"I cannot say ({i}).",
            chosen_id=f"q{i}/g1",
            rejected_id=f"q{i}/g0",
            chosen_score=4.0,
            rejected_score=2.0,
            margin=2.0,
            judge="pointwise",
        )
        for i in range(6)
    ]
    write_records(run.paths(1).prompts, [Prompt(id=p.prompt_id, text=p.prompt) for p in pairs])
    write_records(run.paths(1).pairs, pairs)
    return run


# Label Studio's stock Pairwise Classification template, as its template gallery gives it (label-studio 1.23.2,
# annotation_templates/ranking-and-scoring/pairwise-classification/config.yml): data keys pairText1 / pairText2,
# shown by Text tags named text1 / text2, no prompt.
PAIRWISE_CLASSIFICATION = """<View>
  <Header>Select one of two items</Header>
  <Pairwise name="pw" toName="text1,text2"/>
  <Text name="text1" value="$pairText1"/>
  <Text name="text2" value="$pairText2"/>
</View>
"""


def round_trip(studio: LabelStudio, title: str, config: str, tasks: list[dict], control: str, out: Path) -> int:
    """One project: import, annotate, export the three formats, load each; the number of formats that mismatched.
    `control` is NAME:LEFT:RIGHT, the Pairwise tag's name and the names of the two Text tags it compares."""
    project = studio.create_project(title, config)
    studio.import_tasks(project, tasks)
    imported = sorted(studio.tasks(project), key=lambda t: t["id"])
    print(f"{title}: project {project}, imported {len(imported)} of {len(tasks)} tasks")

    # The simulated people: the judge's side, but the other side on every third task; task 1 gets two votes that
    # tie, the last none. Expected counts follow from the same rule.
    expected = {"pairs": 0, "ties": 0, "skipped": 0, "agreed": 0}
    name, left, right = control.split(":")  # the Pairwise tag's name and the Text tags it compares
    to_name = f"{left},{right}"  # what Label Studio's editor writes for a Pairwise result
    for n, task in enumerate(imported):
        judge_left = task["meta"]["selfplay"]["chosen"] in ("answer1", "pairText1")
        if n == len(imported) - 1:
            expected["skipped"] += 1
            continue
        if n == 1:
            studio.annotate(task["id"], name, "left", to_name)
            studio.annotate(task["id"], name, "right", to_name)
            expected["ties"] += 1
            continue
        agree = n % 3 != 2
        studio.annotate(task["id"], name, "left" if judge_left == agree else "right", to_name)
        expected["pairs"] += 1
        expected["agreed"] += agree
    print(f"  annotated: {expected}")

    failures = 0
    for export_type, file_name in EXPORTS.items():
        path = out / f"{project}-{file_name}"
        path.write_bytes(studio.export(project, export_type))
        seed = load_seed(path)
        print(f"  {export_type:8s} {seed.summary()}")
        # JSON_MIN and CSV carry the task data only, not its meta: no agreement with the judge from them.
        want = (expected["pairs"], expected["ties"], expected["skipped"])
        got = (len(seed.pairs), seed.ties, seed.skipped)
        if export_type == "JSON":
            want += (expected["agreed"],)
            got += (seed.judge_agreed,)
        if got != want:
            print(f"  MISMATCH: expected {want}, got {got}")
            failures += 1
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a run directory to export (default: a six-pair demo run in --out)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/label-studio"), help="where the files go")
    parser.add_argument("--url", default=os.environ.get("LABEL_STUDIO_URL", "http://127.0.0.1:8080"))
    args = parser.parse_args(argv)
    token = os.environ.get("LABEL_STUDIO_API_KEY")
    if not token:
        parser.error("set LABEL_STUDIO_API_KEY to the Label Studio user's token")
    args.out.mkdir(parents=True, exist_ok=True)
    run = Run.open(args.run) if args.run else demo_run(args.out / f"run-{int(time.time())}")
    exported = export_run(run, "label-studio", args.out / f"export-{run.root.name}", force=True)
    ours = json.loads(Path(exported.out, "tasks.json").read_text())
    config = Path(exported.out, "config.xml").read_text()
    studio = LabelStudio(args.url, token)

    # Our tasks and labelling config as exported; then the same tasks under the stock Pairwise Classification
    # template (data keys pairText1 / pairText2, no prompt), which the loader recognises by those keys.
    failures = round_trip(studio, f"selfplay {run.root.name}", config, ours, "comparison:answer1:answer2", args.out)
    renamed = {"answer1": "pairText1", "answer2": "pairText2"}
    stock = [
        {
            "data": {renamed[key]: t["data"][key] for key in renamed},
            "meta": {"selfplay": {**t["meta"]["selfplay"], "chosen": renamed[t["meta"]["selfplay"]["chosen"]]}},
        }
        for t in ours
    ]
    failures += round_trip(
        studio, f"selfplay {run.root.name} (Pairwise Classification)", PAIRWISE_CLASSIFICATION, stock, "pw:text1:text2", args.out
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
