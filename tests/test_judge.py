"""The judge pass at the wire: a run's answers read by a judge model through the real openai SDK against a local
stand-in (tests/judge_standin.py), the judged mode beside strict and reference, resuming, faults, the judge's
identity, and the judge audits (agreement of two judges, accuracy on the gold set)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import needs_browser
from judge_standin import judge_answer
from openai_server import OpenAIServer

from u2eval.benchmark.tasks import get_task
from u2eval.judges.judge_pass import JudgeOptions, judge_run
from u2eval.judges.prompts import TEMPLATES
from u2eval.records import GenerationConfig, Judgement
from u2eval.run.folder import RunFolder
from u2eval.run.runner import RunOptions, run
from u2eval.run.scoring_pass import score_folder

KEY = "sk-test-key"
MODEL = "gpt-4o-2024-08-06"
JUDGE = "judge-mini-2025-01-01"
OTHER = "judge-other-2025-06-01"
# The model under test hedges: strict reads few of its answers, a judge that takes the last choice named reads more.
HEDGED = (
    "Maybe benign, maybe malignant; on balance malignant. Upper left or lower right, finally lower right. "
    "A 12 mm hypoechoic nodule in the right lobe. The liver shows a coarse echotexture. Lung ultrasound with two "
    "B-lines."
)


def _other_judge(body: dict[str, Any]) -> str:
    """A second judge that reads differently: the first choice named instead of the last, and a difference of
    appearance in every pair it makes (a minor error each)."""
    reply = judge_answer(body)
    text = json.dumps(body)
    if "between the two lines of dashes" in text and "one number" not in text and reply != "NO ANSWER":
        answer = text.split("----------")[1].lower()
        choices = [line[2:] for line in text.split("\\n") if line.startswith("- ")]
        named = sorted((answer.find(c.lower()), c) for c in choices if c.lower() in answer)
        return named[0][1] if named else reply
    if reply.startswith("{"):
        comparison = json.loads(reply)
        pairs = [p | {"differences": sorted({*p["differences"], "appearance"})} for p in comparison["pairs"]]
        return json.dumps(comparison | {"pairs": pairs})
    return reply


def _answer(body: dict[str, Any]) -> str:
    return _other_judge(body) if body.get("model") == OTHER else judge_answer(body)


@pytest.fixture(scope="module")
def answered_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run of every task on the sample (2 cases a dataset), answered by the hedging model."""
    folder = tmp_path_factory.mktemp("judged") / "run"
    server = OpenAIServer(api_key=KEY, models=(MODEL,), answer=lambda body: HEDGED).start()
    saved = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = KEY
    try:
        run(RunOptions(model=f"openai/{MODEL}", base_url=server.url, limit=2, out=folder))
    finally:
        server.stop()
        if saved is None:
            os.environ.pop("OPENAI_API_KEY")
        else:
            os.environ["OPENAI_API_KEY"] = saved
    return folder


@pytest.fixture
def run_dir(answered_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(answered_run, tmp_path / "run"))


@pytest.fixture
def judge_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIServer]:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    server = OpenAIServer(api_key=KEY, models=(JUDGE, OTHER), answer=_answer).start()
    yield server
    server.stop()


def _judgements(folder: Path) -> list[Judgement]:
    lines = (folder / "judgements.jsonl").read_text(encoding="utf-8").splitlines()
    return [Judgement.model_validate_json(line) for line in lines]


def _judge(folder: Path, server: OpenAIServer, model: str = JUDGE, **kwargs: Any) -> Any:
    return judge_run(JudgeOptions(run=folder, model=f"openai/{model}", base_url=server.url, **kwargs))


def test_a_judge_reads_only_what_strict_cannot_and_leaves_strict_and_reference_byte_identical(
    run_dir: Path, judge_server: OpenAIServer
) -> None:
    before = json.loads((run_dir / "summary.json").read_text())
    judgements_before = (run_dir / "judgements.jsonl").read_bytes()
    judgements = _judgements(run_dir)
    extraction = [j for j in judgements if j.outcome == "unparseable" and get_task(j.task).capability != "generation"]
    clinical = [j for j in judgements if get_task(j.task).capability == "generation" and j.strict.counted]
    assert extraction and clinical and len(extraction) < len(judgements)

    result = _judge(run_dir, judge_server)

    assert result.to_judge == {"extraction": len(extraction), "clinical": len(clinical)}
    readings = RunFolder(run_dir).judge_readings(result.identity.name)
    assert set(readings) == {j.case_id for j in extraction + clinical}
    sent = judge_server.case_requests()  # identical prompts (one answer to one question) are asked once
    assert len(sent) == result.asked == len({r.key for r in readings.values()}) < len(readings)
    assert all(HEDGED in json.dumps(r.body) for r in sent)  # the answers, never an image
    assert not any("image_url" in json.dumps(r.body) for r in sent)
    after = json.loads((run_dir / "summary.json").read_text())
    for mode in ("strict", "reference"):
        assert after["modes"][mode] == before["modes"][mode]
    assert (run_dir / "judgements.jsonl").read_bytes() == judgements_before
    assert set(after["modes"]) == {"strict", "reference", "judged"}

    # The judged verdicts, by hand: the stand-in reads the last choice the answer names.
    from u2eval.judges.prompts import choices

    metas = {c.case.case_id: c.case for c in RunFolder(run_dir).cases()}
    right: dict[tuple[str, str], list[bool]] = {}
    for j in judgements:
        if j.task not in ("dd", "vra", "ll", "od", "kd"):
            continue
        correct = bool(j.strict.correct)
        if j in extraction and readings[j.case_id].status == "read":
            assert readings[j.case_id].value in choices(metas[j.case_id])  # one of the case's own
            correct = readings[j.case_id].value == j.strict.truth
        right.setdefault((j.task, j.dataset_id), []).append(correct)
    judged = {(d["task"], d["dataset_id"]): d for d in after["modes"]["judged"]["datasets"]}
    for ref, flags in right.items():
        assert judged[ref]["metrics"]["accuracy"] == pytest.approx(sum(flags) / len(flags))
    rescued = sum(
        1 for j in extraction if readings[j.case_id].status == "read" and readings[j.case_id].value == j.strict.truth
    )
    assert rescued > 0 and after["judge"]["rescued"] == rescued
    assert after["modes"]["judged"]["tasks"]["dd"]["score"] > before["modes"]["strict"]["tasks"]["dd"]["score"]
    markdown = (run_dir / "summary.md").read_text()
    assert "| judged score |" in markdown and "## Judged mode" in markdown and "## Clinical report score" in markdown

    # The clinical score, by hand from the stored comparisons: each case's grade, each dataset's mean.
    from u2eval.scoring.clinical import grade

    by_dataset: dict[tuple[str, str], list[float]] = {}
    for j in clinical:
        comparison = readings[j.case_id].comparison
        assert comparison is not None
        by_dataset.setdefault((j.task, j.dataset_id), []).append(grade(comparison).score)
    reported = {(d["task"], d["dataset_id"]): d for d in after["clinical"]["datasets"]}
    assert set(reported) == set(by_dataset)
    for ref, scores in by_dataset.items():
        assert reported[ref]["score"]["estimate"] == pytest.approx(sum(scores) / len(scores))
        assert reported[ref]["score"]["low"] <= reported[ref]["score"]["estimate"] <= reported[ref]["score"]["high"]
    assert 0 < max(s for scores in by_dataset.values() for s in scores) < 1  # partly right: neither 0 nor 1


def test_a_second_pass_asks_nothing_and_rescoring_reproduces_the_summary(
    run_dir: Path, judge_server: OpenAIServer
) -> None:
    _judge(run_dir, judge_server)
    first = (run_dir / "summary.json").read_bytes()
    asked = len(judge_server.case_requests())
    again = _judge(run_dir, judge_server)
    assert again.asked == 0 and again.reused == asked
    assert len(judge_server.case_requests()) == asked
    assert (run_dir / "summary.json").read_bytes() == first
    score_folder(run_dir)  # `u2eval score`: no model and no judge called
    assert (run_dir / "summary.json").read_bytes() == first


def test_failed_judge_calls_make_the_judged_mode_partial_and_the_next_pass_asks_only_them(
    run_dir: Path, judge_server: OpenAIServer
) -> None:
    judge_server.add_fault("server_error", times=3)
    result = _judge(run_dir, judge_server, max_attempts=1)
    readings = RunFolder(run_dir).judge_readings(result.identity.name)
    failed = {c for c, r in readings.items() if r.status == "failed"}
    assert len({readings[c].key for c in failed}) == 3  # three prompts failed, for every case that shares them
    assert result.failed == len(failed)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["modes"]["judged"]["status"] == "partial"
    assert set(summary["judge"]["not_judged"]) == failed
    assert "Judged mode partial" in (run_dir / "summary.md").read_text()
    asked = len(judge_server.case_requests())
    again = _judge(run_dir, judge_server)
    assert again.asked == 3 and again.failed == 0
    assert len(judge_server.case_requests()) == asked + 3
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["judge"]["not_judged"] == []
    assert summary["modes"]["judged"]["status"] == summary["modes"]["strict"]["status"]


def test_the_judge_identity_is_recorded_and_another_setting_is_another_judge(
    run_dir: Path, judge_server: OpenAIServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    preset = tmp_path / "old-judge.yaml"
    preset.write_text(
        f"name: old-judge\nadapter: openai\nmodel: {JUDGE}\nretires: '2026-12-31'\n"
        "generation: {temperature: 0.0, max_tokens: 900}\n",
        encoding="utf-8",
    )
    with caplog.at_level(logging.WARNING):
        first = judge_run(JudgeOptions(run=run_dir, model=str(preset), base_url=judge_server.url))
    identity = json.loads((first.folder / "identity.json").read_text())
    assert identity["model"] == JUDGE and identity["retires"] == "2026-12-31"
    assert identity["endpoint"] == judge_server.url  # reached at a server of ours: part of who judged
    assert identity["generation"]["max_tokens"] == 2048  # the preset's 900 leaves no room for a comparison
    assert identity["generation"]["temperature"] == 0.0
    for kind in ("extraction", "clinical"):
        assert identity["templates"][kind] == hashlib.sha256((TEMPLATES / f"{kind}.j2").read_bytes()).hexdigest()
    assert any("retires on 2026-12-31" in r.getMessage() for r in caplog.records)
    # When it retires changes no reading: the same judge; its weights do: another judge.
    preset.write_text(preset.read_text().replace("2026-12-31", "2027-06-30"), encoding="utf-8")
    again = judge_run(JudgeOptions(run=run_dir, model=str(preset), base_url=judge_server.url))
    assert again.identity.name == first.identity.name and again.asked == 0
    revised = judge_run(JudgeOptions(run=run_dir, model=str(preset), base_url=judge_server.url, revision="v2"))
    assert revised.identity.name != first.identity.name and revised.identity.revision == "v2"
    second = _judge(run_dir, judge_server, temperature=0.5)
    assert second.identity.name != first.identity.name and second.asked == first.asked
    folder = RunFolder(run_dir)
    assert {j.name for j in folder.judges()} == {first.identity.name, revised.identity.name, second.identity.name}
    active = folder.active_judge()
    assert active is not None and active.name == second.identity.name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["judge"]["identity"]["name"] == second.identity.name


def test_a_reading_of_an_answer_since_replaced_is_not_used(run_dir: Path, judge_server: OpenAIServer) -> None:
    result = _judge(run_dir, judge_server)
    folder = RunFolder(run_dir)
    readings = folder.judge_readings(result.identity.name)
    case_id = next(c for c, r in readings.items() if r.kind == "extraction" and r.status == "read")
    stale = readings[case_id].model_copy(update={"answer_sha256": "0" * 64})
    folder.write_judge_readings(result.identity.name, [*(r for c, r in readings.items() if c != case_id), stale])
    summary, _ = score_folder(run_dir)
    assert summary.judge is not None and summary.judge.not_judged == [case_id]
    assert summary.modes["judged"].status == "partial"


def test_the_cli_says_what_the_judge_did_and_exits_3_while_calls_fail(
    run_dir: Path, judge_server: OpenAIServer
) -> None:
    judge_server.add_fault("server_error", times=2)
    command = [sys.executable, "-m", "u2eval", "judge", str(run_dir), "--model", f"openai/{JUDGE}"]
    command += ["--base-url", judge_server.url, "--max-attempts", "1"]
    env = {**os.environ, "OPENAI_API_KEY": KEY, "COLUMNS": "200"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 3, done.stderr
    assert "judged score" in done.stdout and "their judge call failed" in done.stdout + done.stderr
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert "asked 2," in done.stdout + done.stderr


def test_a_leaderboard_ranks_runs_one_judge_read_and_refuses_others(
    answered_run: Path, judge_server: OpenAIServer, tmp_path: Path
) -> None:
    from u2eval.errors import ConfigError
    from u2eval.reports.leaderboard import BoardOptions, build_board

    runs = [Path(shutil.copytree(answered_run, tmp_path / "board" / name)) for name in ("a", "b")]
    with pytest.raises(ConfigError, match="no judge has read them"):
        build_board([tmp_path / "board"], BoardOptions(mode="judged", resamples=20))
    for folder in runs:
        _judge(folder, judge_server)
    board = build_board([tmp_path / "board"], BoardOptions(mode="judged", resamples=20))
    judged = json.loads((runs[0] / "summary.json").read_text())["modes"]["judged"]
    assert [r.u2.score for r in board.rows] == [pytest.approx(judged["u2_score"])] * 2
    assert any("Judged mode" in note and JUDGE in note for note in board.notes)
    strict = build_board([tmp_path / "board"], BoardOptions(mode="strict", resamples=20))
    assert strict.rows[0].u2.score != board.rows[0].u2.score  # the judge's readings moved the score
    _judge(runs[1], judge_server, OTHER)
    with pytest.raises(ConfigError, match="other judges read them"):
        build_board([tmp_path / "board"], BoardOptions(mode="judged", resamples=20))


def test_score_chooses_the_judge_and_without_one_the_summary_is_as_before_any_judge(
    run_dir: Path, judge_server: OpenAIServer
) -> None:
    before = (run_dir / "summary.json").read_bytes()
    first = _judge(run_dir, judge_server)
    _judge(run_dir, judge_server, OTHER)
    env = {**os.environ, "COLUMNS": "200"}
    score = [sys.executable, "-m", "u2eval", "score", str(run_dir)]
    done = subprocess.run([*score, "--judge", "none"], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert (run_dir / "summary.json").read_bytes() == before
    done = subprocess.run(
        [*score, "--judge", first.identity.name], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0 and "judged" in done.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["judge"]["identity"]["name"] == first.identity.name
    done = subprocess.run([*score, "--judge", "nobody"], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 2 and first.identity.name in done.stderr
    by = subprocess.run(
        [*score, "--by", "task", "--mode", "judged"], capture_output=True, text=True, env=env, check=False
    )
    assert by.returncode == 0 and "(judged;" in by.stdout


@needs_browser
def test_the_case_view_shows_the_judged_verdict_the_reading_and_the_clinical_comparison(
    run_dir: Path, judge_server: OpenAIServer, tmp_path: Path
) -> None:
    from browser import open_page

    from u2eval.view.page import build_view

    result = _judge(run_dir, judge_server)
    page = build_view(run_dir, tmp_path / "view", with_images=False).page
    found = re.search(r'<script id="view-data" type="application/json">(.*?)</script>', page.read_text(), re.S)
    assert found is not None
    data = json.loads(found.group(1))
    cases = data["cases"]
    assert data["judge"].startswith(result.identity.name)
    verdicts = json.loads((run_dir / "summary.json").read_text())["modes"]["judged"]
    assert sum(c["judged"]["label"] == "right" for c in cases) == sum(
        round(d["metrics"]["accuracy"] * d["n_counted"]) for d in verdicts["datasets"] if "accuracy" in d["metrics"]
    )
    rescued = next(c for c in cases if c.get("judge", {}).get("status") == "read" and c["judged"]["label"] == "right"
                   and c["strict"]["label"] == "wrong")  # fmt: skip
    report = next(c for c in cases if c.get("clinical") and c["clinical"]["rows"])
    with open_page(page, 1400, 1000) as browser:
        browser.select_option("#f-judged", "right")
        right = sum(c["judged"]["label"] == "right" for c in cases)
        assert browser.inner_text("#count") == f"{right} of {len(cases)} cases"
        browser.select_option("#f-judged", "")
        browser.fill("#f-q", rescued["id"])
        browser.click("#rows .row")
        verdict_rows = browser.inner_text("#case .verdicts")
        assert "judged" in verdict_rows and "right" in verdict_rows and "wrong" in verdict_rows
        assert str(rescued["judge"]["reading"]) in browser.inner_text("#case")
        browser.fill("#f-q", report["id"])
        browser.click("#rows .row")
        table = browser.inner_text("#case .clinical")
        for row in report["clinical"]["rows"]:
            assert all(cell in table for cell in row if cell)
        assert f"score {report['clinical']['score']:g}" in browser.inner_text("#case")


def test_an_in_process_vllm_engine_can_judge_reading_text_alone(run_dir: Path) -> None:
    from vllm_standin import MODEL as LOCAL
    from vllm_standin import StandinFactory

    from model_adapters._local import parse_settings
    from model_adapters.vllm import VLLMAdapter, VLLMSettings
    from u2eval.models.protocol import AdapterOptions

    factory = StandinFactory()
    settings = parse_settings("vllm", {"chunk_size": 16}, VLLMSettings)
    options = AdapterOptions(generation=GenerationConfig(temperature=0.0, max_tokens=2048, seed=0), text_only=True)
    adapter = VLLMAdapter(LOCAL, options, settings, engine_factory=factory)
    result = judge_run(JudgeOptions(run=run_dir, model=f"vllm/{LOCAL}"), adapter=adapter)
    probe, *conversations = factory.llm.conversations
    assert "Reply OK." in json.dumps(probe) and len(conversations) == result.asked > 0
    # Text only, the preflight's probe too: a model without vision can judge.
    assert all("image_url" not in json.dumps(c) for c in [probe, *conversations])
    readings = RunFolder(run_dir).judge_readings(result.identity.name)
    assert result.identity.adapter == "vllm" and {r.status for r in readings.values()} <= {
        "read",
        "no_answer",
        "unreadable",
    }
    assert all(r.reply for r in readings.values())  # the engine's own words, kept with each reading


def test_a_killed_judge_pass_keeps_what_it_stored_and_the_next_asks_only_the_rest(
    run_dir: Path, judge_server: OpenAIServer
) -> None:
    import signal
    import time

    judge_server.latency_s = 0.05
    command = [sys.executable, "-m", "u2eval", "judge", str(run_dir), "--model", f"openai/{JUDGE}"]
    command += ["--base-url", judge_server.url, "--concurrency", "2"]
    env = {**os.environ, "OPENAI_API_KEY": KEY}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = next(iter((run_dir / "judges").glob("*/responses.jsonl")), None)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        store = (
            next(iter((run_dir / "judges").glob("*/responses.jsonl")), None) if (run_dir / "judges").is_dir() else None
        )
        if store is not None and len(store.read_text().splitlines()) >= 6:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert store is not None
    kept = len(store.read_text().splitlines())
    asked_before = len(judge_server.case_requests())
    assert not (run_dir / "judges" / "active.json").exists()  # the pass never finished: no judged mode yet
    judge_server.latency_s = 0.0
    result = _judge(run_dir, judge_server)
    assert result.reused == kept  # every stored reading is kept, none asked again
    distinct = len({r.key for r in RunFolder(run_dir).judge_readings(result.identity.name).values()})
    assert result.asked + result.reused == distinct
    assert result.asked == distinct - kept  # only what the killed pass had not stored
    assert asked_before - kept <= 2  # at most the requests in flight were lost (concurrency 2)
