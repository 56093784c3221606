"""End to end on the bundled sample: run, resume, re-score, infra errors, partial runs, shared answers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from model_adapters.random import guess
from u2eval.errors import AdapterError, ConfigError
from u2eval.models.protocol import ModelRequest
from u2eval.records import Completion, ModelInfo
from u2eval.run.folder import RunFolder
from u2eval.run.runner import RunOptions, run
from u2eval.run.scoring_pass import score_folder
from u2eval.run.store import ResponseStore


def test_same_seed_gives_byte_identical_summaries_and_score_reproduces_them(tmp_path: Path) -> None:
    first = run(RunOptions(model="random", out=tmp_path / "a", seed=3))
    second = run(RunOptions(model="random", out=tmp_path / "b", seed=3))
    a = (tmp_path / "a" / "summary.json").read_bytes()
    assert a == (tmp_path / "b" / "summary.json").read_bytes()
    assert first.summary.status == "complete" and first.summary.subset == []
    assert set(first.summary.tasks_run) == {
        "dd",
        "vra",
        "ll",
        "od",
        "kd",
        "cve",
        "rg",
        "cg",
    }
    assert first.summary.modes["strict"].u2_score is not None
    (tmp_path / "a" / "summary.json").unlink()
    score_folder(tmp_path / "a")
    assert (tmp_path / "a" / "summary.json").read_bytes() == a
    assert first.manifest.case_ids_sha256 == second.manifest.case_ids_sha256
    other = run(RunOptions(model="random", out=tmp_path / "c", seed=4))
    assert other.summary != first.summary  # the seed matters


def test_resume_asks_for_nothing_already_stored(tmp_path: Path) -> None:
    first = run(RunOptions(model="random", out=tmp_path / "r", tasks=("dd", "ll")))
    assert first.requested == first.manifest.n_cases and first.reused == 0
    again = run(RunOptions(model="random", out=tmp_path / "r", tasks=("dd", "ll")))
    assert again.requested == 0 and again.reused == first.manifest.n_cases
    assert again.summary == first.summary


def test_partial_run_is_labelled_and_names_the_missing_tasks(tmp_path: Path) -> None:
    result = run(RunOptions(model="random", out=tmp_path / "p", tasks=("dd", "ll"), limit=2))
    strict = result.summary.modes["strict"]
    assert result.summary.status == "partial"
    assert set(strict.missing_tasks) == {"vra", "od", "kd", "cve", "rg", "cg"}
    assert strict.u2_score is None and strict.u2_over_present_tasks is not None
    counts: dict[str, int] = {}
    for case in RunFolder(tmp_path / "p").cases():
        key = f"{case.case.task}/{case.case.dataset_id}"
        counts[key] = counts.get(key, 0) + 1
    assert max(counts.values()) == 2  # --limit is per source dataset
    assert "# u2eval summary" in (tmp_path / "p" / "summary.md").read_text()


@pytest.mark.parametrize(
    ("selection", "reasons", "every_task"),
    [
        ({"limit": 1}, ["limit 1 per dataset"], True),
        ({"limit": 2, "shard": (2, 3)}, ["limit 2 per dataset", "shard=2/3"], True),
        ({"anatomy": ("breast",)}, ["anatomy=breast"], False),  # breast cases exist for some tasks only
    ],
)
def test_a_run_over_part_of_the_cases_is_never_labelled_complete(
    tmp_path: Path, selection: dict[str, Any], reasons: list[str], every_task: bool
) -> None:
    # with every task present, only the selection makes a run partial: a leaderboard or a script reading
    # summary.json must not take it for a full result
    folder = tmp_path / "s"
    result = run(RunOptions(model="random", out=folder, **selection))
    assert result.summary.status == "partial" and result.summary.subset == reasons
    assert (result.summary.modes["strict"].missing_tasks == []) is every_task
    summary_md = (folder / "summary.md").read_text()
    assert f"Subset run ({'; '.join(reasons)})" in summary_md
    assert ("Partial run" in summary_md) is not every_task
    stored = (folder / "summary.json").read_bytes()
    score_folder(folder)  # re-scoring reads the selection back from the manifest
    assert (folder / "summary.json").read_bytes() == stored


class FlakyRandom:
    """Answers like the random baseline, but fails the cases named in ``failing`` with a 503."""

    def __init__(self, failing: set[str]) -> None:
        self.failing = failing
        self.asked: list[str] = []

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(adapter="flaky", model="flaky-random")

    @property
    def max_batch_size(self) -> int:
        return 1

    async def generate(self, requests: Sequence[ModelRequest]) -> list[Completion]:
        request = requests[0]
        self.asked.append(request.case.case_id)
        await asyncio.sleep(0)
        if request.case.case_id in self.failing:
            raise AdapterError("HTTP 503 service unavailable", kind="server", retryable=False)
        return [Completion(case_id=request.case.case_id, key=request.key, text=guess(request.case, 0))]

    async def aclose(self) -> None:
        return None


def test_infra_errors_are_excluded_listed_and_retried_by_the_next_run(tmp_path: Path) -> None:
    options = RunOptions(model="flaky", out=tmp_path / "f", tasks=("dd",), limit=2)
    probe = run(options, adapter=FlakyRandom(set()))
    cases = [c.case.case_id for c in RunFolder(tmp_path / "f").cases()]
    clean_summary = probe.summary
    folder = tmp_path / "g"
    failing = set(cases[:3])
    flaky = FlakyRandom(failing)
    first = run(RunOptions(model="flaky", out=folder, tasks=("dd",), limit=2), adapter=flaky)
    assert first.infra_errors == 3
    assert sorted(first.summary.infra_error_case_ids) == sorted(failing)
    assert first.summary.parse["dd"].outcomes["infra_error"] == 3
    counted = sum(d.n_counted for d in first.summary.modes["strict"].datasets)
    assert counted == len(cases) - 3  # never scored as answers
    healed = FlakyRandom(set())
    second = run(RunOptions(model="flaky", out=folder, tasks=("dd",), limit=2), adapter=healed)
    assert sorted(healed.asked) == sorted(failing)  # only the failed ones are asked again
    assert second.infra_errors == 0
    assert second.summary == clean_summary


def test_a_run_folder_without_cases_is_refused(tmp_path: Path) -> None:
    from u2eval.errors import ConfigError

    with pytest.raises(ConfigError, match="not a u2eval run folder"):
        score_folder(tmp_path)


def test_replay_of_a_run_reproduces_its_scores(tmp_path: Path) -> None:
    original = run(RunOptions(model="random", out=tmp_path / "orig", tasks=("dd", "cve"), seed=5))
    replayed = run(RunOptions(model=f"replay/{tmp_path / 'orig'}", out=tmp_path / "replay", tasks=("dd", "cve")))
    assert replayed.infra_errors == 0
    assert replayed.summary == original.summary


def test_responses_hold_no_images_and_cases_hold_no_images(tmp_path: Path) -> None:
    run(RunOptions(model="random", out=tmp_path / "r", tasks=("ll",), limit=1))
    for name in ("responses.jsonl", "cases.jsonl", "judgements.jsonl"):
        text = (tmp_path / "r" / name).read_text()
        assert "iVBORw0KGgo" not in text and "/9j/" not in text  # base64 PNG / JPEG starts
    store = ResponseStore(tmp_path / "r")
    assert len(store) == len(RunFolder(tmp_path / "r").cases())
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["dataset"]["kind"] == "sample" and manifest["model"]["adapter"] == "random"
    assert set(manifest["templates"]) == {"ll"} and manifest["limit"] == 1


def test_a_lost_dataset_makes_the_run_partial_and_is_listed(tmp_path: Path) -> None:
    import shutil

    from u2eval.resources import sample_dir

    data = tmp_path / "data"
    shutil.copytree(sample_dir(), data)
    (data / "disease_diagnosis" / "21.tsv").write_text("not\ta\tu2-bench\theader\n1\t2\t3\t4\n")
    result = run(RunOptions(model="random", data=str(data), out=tmp_path / "run", tasks=("dd",)))
    strict = result.summary.modes["strict"]
    assert strict.missing_datasets == {"dd": ["21"]}
    assert result.summary.status == "partial"
    assert any("21.tsv" in error for error in result.data_errors)
    markdown = (tmp_path / "run" / "summary.md").read_text()
    assert "no cases for datasets DD 21" in markdown and "Unreadable input" in markdown


def test_default_folders_keep_quick_runs_apart_from_full_ones(tmp_path: Path) -> None:
    from u2eval.run.runner import default_folder

    full = default_folder(RunOptions(model="random", results_root=tmp_path))
    quick = default_folder(RunOptions(model="random", results_root=tmp_path, tasks=("ll", "dd"), limit=1))
    assert full != quick and quick.name.endswith("__dd+ll__limit1")
    assert default_folder(RunOptions(model="random", results_root=tmp_path, seed=2)) != full


def test_a_folder_belongs_to_one_run_another_is_refused_in_one_line_unless_forced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import os
    import subprocess
    import sys

    folder = tmp_path / "run"
    run(RunOptions(model="random", tasks=("dd",), limit=1, out=folder, seed=1))
    assert "the summary now covers" not in caplog.text
    run(RunOptions(model="random", tasks=("dd", "ll"), limit=2, out=folder, seed=1))  # extending it: the same run
    assert "the summary now covers this command's 36 cases (it covered 13 before)" in caplog.text  # and said so
    expected = r"holds another run \(.*generation.seed 1 there, 2 now; seed 1 there, 2 now\); use another --out"
    with pytest.raises(ConfigError, match=expected):
        run(RunOptions(model="random", tasks=("dd",), limit=1, out=folder, seed=2))
    args = [sys.executable, "-m", "u2eval", "run", "--model", "random", "--tasks", "dd", "--limit", "1"]
    done = subprocess.run([*args, "--seed", "2", "--out", str(folder)], capture_output=True, text=True, check=False,
                          env={**os.environ, "COLUMNS": "200"}, timeout=120)  # fmt: skip
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "--force" in done.stderr
    forced = run(RunOptions(model="random", tasks=("dd",), limit=1, out=folder, seed=2, force=True))
    assert forced.manifest.seed == 2 and forced.reused == 0  # afresh: nothing of the seed-1 run is left
    assert len(ResponseStore(folder)) == forced.requested


class RefusedModel(FlakyRandom):
    """A model name the provider does not know: its preflight is refused, so nothing is ever stored."""

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(adapter="flaky", model="a-typo")

    async def preflight(self) -> None:
        raise AdapterError("HTTP 404 model not found", kind="bad_request", retryable=False)


def test_a_folder_whose_run_stored_nothing_is_taken_over_by_the_next_run(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    with pytest.raises(ConfigError, match="preflight call was refused"):
        run(RunOptions(model="flaky", tasks=("dd",), limit=1, out=folder), adapter=RefusedModel(set()))
    assert (folder / "identity.json").is_file()  # claimed when it started...
    fixed = run(RunOptions(model="flaky", tasks=("dd",), limit=1, out=folder), adapter=FlakyRandom(set()))
    assert fixed.manifest.model.model == "flaky-random" and fixed.infra_errors == 0  # ...but it held no answer
    with pytest.raises(ConfigError, match="holds another run"):  # this one did
        run(RunOptions(model="flaky", tasks=("dd",), limit=1, out=folder), adapter=RefusedModel(set()))


def test_judgements_point_at_the_row_and_image_and_carry_text_metrics(tmp_path: Path) -> None:
    result = run(RunOptions(model="random", tasks=("rg", "dd"), limit=1, out=tmp_path / "run"))
    judgements = [json.loads(line) for line in (result.folder / "judgements.jsonl").read_text().splitlines()]
    cases = {rc.case.case_id: rc.case for rc in RunFolder(result.folder).cases()}
    for j in judgements:
        case = cases[j["case_id"]]
        assert j["source"] == f"{case.source_file}:{case.row_index}" and j["image_sha256"] == case.image_sha256
        text = j["task"] == "rg"
        assert (set(j["strict"]["case_metrics"]) == {"bleu4", "rouge_l"}) is text


class Metered(FlakyRandom):
    """The flaky random model, reporting token usage on every other answer (some providers report none)."""

    async def generate(self, requests: Sequence[ModelRequest]) -> list[Completion]:
        from u2eval.records import Usage

        (done,) = await super().generate(requests)
        row = requests[0].case.row_index
        return (
            [done.model_copy(update={"usage": Usage(input_tokens=100 + row, output_tokens=5)})]
            if row % 2 == 0
            else [done]
        )


def test_the_end_of_a_run_says_tokens_used_and_infra_errors_by_kind(tmp_path: Path) -> None:
    probe = run(RunOptions(model="m", out=tmp_path / "p", tasks=("dd", "ll"), limit=2), adapter=Metered(set()))
    cases = [c.case for c in RunFolder(tmp_path / "p").cases()]
    result = run(
        RunOptions(model="m", out=tmp_path / "r", tasks=("dd", "ll"), limit=2), adapter=Metered({cases[1].case_id})
    )
    usage = result.summary.usage
    even = [c for c in cases if c.row_index % 2 == 0]
    assert (
        usage["total"].input_tokens == sum(100 + c.row_index for c in even) == probe.summary.usage["total"].input_tokens
    )
    assert usage["total"].output_tokens == 5 * len(even) and usage["total"].cases == len(cases)
    assert usage["dd"].cases_reporting == sum(1 for c in even if c.task == "dd")
    assert result.summary.infra_errors_by_kind == {"server": 1}
    markdown = (result.folder / "summary.md").read_text(encoding="utf-8")
    assert (
        "By kind: 1 server." in markdown
        and "## Tokens" in markdown
        and f"| **total** | {usage['total'].input_tokens:,} |" in markdown
    )


def test_rows_the_run_could_not_read_make_it_partial(tmp_path: Path) -> None:
    import csv
    import shutil

    from u2eval.resources import sample_dir

    data = tmp_path / "data"
    shutil.copytree(sample_dir(), data)
    path = data / "disease_diagnosis" / "21.tsv"
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, dialect="excel-tab"))
    rows[1][rows[0].index("img_data")] = "not base64 at all!"
    with path.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh, dialect="excel-tab", lineterminator="\n").writerows(rows)
    result = run(RunOptions(model="random", data=str(data), out=tmp_path / "run"))
    assert result.summary.unreadable_rows == 1 and result.summary.status == "partial"
    assert result.summary.modes["strict"].status == "complete"  # every task and dataset is there: one row is not
    again, _ = score_folder(result.folder)  # re-scored from the folder: the same
    assert again.unreadable_rows == 1
