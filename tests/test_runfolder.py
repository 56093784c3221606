"""The run folder's guards, end to end: one run per folder, a full disk as one clear line, and the resume
of a finished run that does not read the dataset again (and does whenever its inputs changed)."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from openai_server import OpenAIServer

from u2eval.errors import ConfigError
from u2eval.resources import sample_dir
from u2eval.run.locks import exclusive
from u2eval.run.resume import STAMP_FILE
from u2eval.run.runner import RunOptions, run
from u2eval.run.store import RESPONSES_FILE

KEY = "sk-test-key-runfolder"
MODEL = "gpt-4o-2024-08-06"
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock and RLIMIT_FSIZE are POSIX")


def _sample_copy(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(sample_dir(), data)
    return data


def test_a_second_run_on_a_folder_in_use_is_refused_and_the_lock_goes_with_its_process(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    with exclusive(folder), pytest.raises(ConfigError, match="in use by another u2eval process") as info:
        run(RunOptions(model="random", out=folder, tasks=("kd",)))
    assert str(os.getpid()) in str(info.value)
    assert not (folder / RESPONSES_FILE).exists()  # refused before anything was asked or written
    # A holder killed with SIGKILL leaves the lock file behind, but not the lock.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from u2eval.run.locks import exclusive\n"
         "with exclusive(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)", str(folder)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(ConfigError, match=f"pid {holder.pid}"):
        run(RunOptions(model="random", out=folder, tasks=("kd",)))
    holder.kill()
    holder.wait()
    result = run(RunOptions(model="random", out=folder, tasks=("kd",)))
    assert result.requested == result.manifest.n_cases > 0


def test_a_folder_that_cannot_hold_a_lock_is_one_line(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "notes.txt"
    not_a_folder.write_text("mine")
    lock = exclusive(not_a_folder)
    with pytest.raises(ConfigError, match=r"cannot use .*notes.txt as a run folder: Not a directory"):
        lock.__enter__()


def _holder(folder: Path, how: str) -> subprocess.Popen[str]:
    """Another process holding ``folder`` with ``exclusive`` (as a run does) or ``reading`` (as a merge does)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import sys, time; from pathlib import Path; from u2eval.run.locks import {how}\n"
         f"with {how}(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)", str(folder)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def _released(holder: subprocess.Popen[str]) -> None:
    holder.kill()
    holder.wait()


def test_score_and_merge_wait_for_no_run_and_merges_do_not_block_each_other(tmp_path: Path) -> None:
    from u2eval.run.merge import merge_runs

    shards = [tmp_path / f"s{i}" for i in range(2)]
    for i, folder in enumerate(shards):
        run(RunOptions(model="random", out=folder, tasks=("kd",), shard=(i, 2)))
    summary = (shards[0] / "summary.json").read_bytes()
    writer = _holder(shards[0], "exclusive")  # a run still answering shard 0
    try:
        score = subprocess.run(
            [sys.executable, "-m", "u2eval", "score", str(shards[0])], capture_output=True, text=True, check=False
        )
        assert score.returncode == 2 and f"in use by another u2eval process (pid {writer.pid})" in score.stderr
        assert len(score.stderr.strip().splitlines()) == 1
        with pytest.raises(ConfigError, match=f"pid {writer.pid}"):
            merge_runs(shards, tmp_path / "merged")
        assert not (tmp_path / "merged" / "summary.json").exists()
    finally:
        _released(writer)
    assert (shards[0] / "summary.json").read_bytes() == summary  # nothing was rewritten meanwhile
    reader = _holder(shards[1], "reading")  # another merge reading shard 1
    try:
        merged = merge_runs(shards, tmp_path / "merged")  # readers share
        assert merged.summary.subset == []  # the shards were subsets; their merge is not
        # a run on a folder being read is refused, and the message does not blame the run that made it
        with pytest.raises(ConfigError, match="in use by another u2eval process \\(a reader, such as u2eval merge\\)"):
            run(RunOptions(model="random", out=shards[1], tasks=("kd",), shard=(1, 2)))
    finally:
        _released(reader)
    again = merge_runs(shards, tmp_path / "merged")  # the merged folder's own lock does not block a re-merge
    assert again.summary == merged.summary


def _cli_run(folder: Path, server: OpenAIServer, limit: int | None) -> subprocess.CompletedProcess[str]:
    """`u2eval run` against the stand-in in a process of its own, every file it writes capped at ``limit``."""

    def cap() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    command = [sys.executable, "-m", "u2eval", "run", "--model", f"openai/{MODEL}", "--base-url", server.url]
    command += ["--tasks", "dd,ll", "--concurrency", "2", "--out", str(folder)]
    env = {**os.environ, "OPENAI_API_KEY": KEY}
    return subprocess.run(command, capture_output=True, text=True, preexec_fn=cap, env=env, check=False, timeout=120)


def test_a_full_disk_is_one_clear_line_and_keeps_every_stored_answer(tmp_path: Path) -> None:
    # Answers of 3 KB: the store reaches the 12 KB cap after 4 of them, the case list (~1 KB a case) later.
    server = OpenAIServer(api_key=KEY, models=(MODEL,), answer=lambda body: "benign. " * 400).start()
    try:
        folder = tmp_path / "run"
        full = _cli_run(folder, server, limit=12_000)
        assert full.returncode == 2, full.stderr
        lines = [line for line in full.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, full.stderr  # nothing more when the half-written case list is closed
        message = lines[0]
        assert f"cannot write {folder / RESPONSES_FILE}: File too large" in message
        assert "make room, then run the same command again to resume" in message
        stored = (folder / RESPONSES_FILE).read_bytes()
        kept = [json.loads(line)["case_id"] for line in stored.splitlines()]  # whole lines only
        assert len(kept) >= 1 and stored.endswith(b"\n")
        asked_before = len(server.case_requests())
        resumed = _cli_run(folder, server, limit=None)
        assert resumed.returncode == 0, resumed.stderr
        assert (folder / RESPONSES_FILE).read_bytes().startswith(stored)  # append-only, byte for byte
        asked_again = [r.body for r in server.case_requests()[asked_before:]]
        n_cases = len((folder / "cases.jsonl").read_text(encoding="utf-8").splitlines())
        assert n_cases == 72 and len(asked_again) == n_cases - len(kept)  # the stored ones are not asked again
    finally:
        server.stop()


def test_a_finished_run_resumes_without_reading_the_dataset(tmp_path: Path) -> None:
    data = _sample_copy(tmp_path)
    options = RunOptions(model="random", data=str(data), out=tmp_path / "run", tasks=("dd", "cve"))
    first = run(options)
    summary = (tmp_path / "run" / "summary.json").read_bytes()
    assert (tmp_path / "run" / STAMP_FILE).exists()
    # Garbage in place of a file, its size and modification time kept: a resume that read the data would
    # report a corrupt file; one that trusts the stamp does not look.
    tsv = data / "disease_diagnosis" / "21.tsv"
    info = tsv.stat()
    tsv.write_bytes(b"x" * info.st_size)
    os.utime(tsv, ns=(info.st_atime_ns, info.st_mtime_ns))
    judged = (tmp_path / "run" / "judgements.jsonl").stat().st_mtime_ns
    again = run(options)
    assert again.requested == 0 and again.reused == first.manifest.n_cases
    assert again.data_errors == () and again.manifest.case_ids_sha256 == first.manifest.case_ids_sha256
    assert again.manifest.dispatch["requests"] == 0 and again.manifest.dispatch["reused"] == first.manifest.n_cases
    assert again.summary == first.summary and (tmp_path / "run" / "summary.json").read_bytes() == summary
    # Nothing the scores are made from changed: they are not made again.
    assert (tmp_path / "run" / "judgements.jsonl").stat().st_mtime_ns == judged
    # A score file gone (or edited): scored again, from the stored answers, to the same bytes.
    (tmp_path / "run" / "summary.md").unlink()
    third = run(options)
    assert third.requested == 0 and third.summary == first.summary
    assert (tmp_path / "run" / "summary.md").exists() and (tmp_path / "run" / "summary.json").read_bytes() == summary


def test_a_changed_input_makes_the_resume_read_the_dataset_again(tmp_path: Path) -> None:
    data = _sample_copy(tmp_path)
    options = RunOptions(model="random", data=str(data), out=tmp_path / "run", tasks=("dd",))
    first = run(options)
    tsv = data / "disease_diagnosis" / "21.tsv"
    tsv.write_text("not\ta\tu2-bench\theader\n", encoding="utf-8")  # changed: size and time
    reread = run(options)
    assert any("21.tsv" in e for e in reread.data_errors)
    assert reread.manifest.n_cases < first.manifest.n_cases and reread.requested == 0
    other = RunOptions(model="random", data=str(data), out=tmp_path / "run", tasks=("dd",), seed=1, force=True)
    other_settings = run(other)  # another run in the folder: only with --force
    assert other_settings.requested == other_settings.manifest.n_cases  # a new seed: new keys, all asked


def test_a_finished_run_with_infra_errors_is_read_and_retried(tmp_path: Path) -> None:
    options = RunOptions(model="random", out=tmp_path / "run", tasks=("kd",))
    first = run(options)
    path = tmp_path / "run" / RESPONSES_FILE
    lines = path.read_text(encoding="utf-8").splitlines()
    failed = json.loads(lines[0]) | {"error": "server", "error_message": "HTTP 503"}
    failed.pop("text", None)
    path.write_text("\n".join([*lines, json.dumps(failed)]) + "\n", encoding="utf-8")  # the latest line wins
    again = run(options)
    assert again.requested == 1 and again.reused == first.manifest.n_cases - 1 and again.infra_errors == 0


def test_a_full_disk_met_by_the_case_list_is_one_line_too(tmp_path: Path) -> None:
    """The case list fills the disk first (random answers are short): still one line, and nothing printed
    again when the half-written case list is closed or collected."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    command = [sys.executable, "-m", "u2eval", "run", "--model", "random", "--out", str(tmp_path / "run")]
    done = subprocess.run(command, capture_output=True, text=True, preexec_fn=cap, check=False, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: cannot write {tmp_path / 'run' / 'cases.jsonl.part'}: File too large")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_the_case_list_meets_a_full_disk_at_a_write_and_never_at_its_close() -> None:
    """What a run writes its case list with: on a full device the write raises (and names the disk's
    error), and closing raises nothing, so a case list left half-written by a full disk is not reported
    a second time, as an ignored exception, when the generator holding it is collected."""
    from u2eval.run.locks import LineFile

    with LineFile(Path("/dev/full")) as out, pytest.raises(OSError) as info:
        out.write('{"case": 1}\n')
    assert info.value.errno == 28 and info.value.filename == "/dev/full"
    buffered = Path("/dev/full").open("w", encoding="utf-8")  # noqa: SIM115 - the contrast: a buffered file
    buffered.write('{"case": 1}\n')  # accepted into the buffer...
    with pytest.raises(OSError):
        buffered.close()  # ...and the error comes at the close


# ---------------------------------------------------------------------------------- the typed owner


def test_the_run_folder_reads_its_manifest_typed_and_says_what_it_cannot_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from u2eval.run.folder import MANIFEST_FILE, RunFolder

    folder = RunFolder(tmp_path / "run")
    run(RunOptions(model="random", out=folder.path, tasks=("kd",)))
    manifest = folder.require_manifest()
    assert manifest.n_cases == len(folder.cases()) and manifest.grounded is False
    # Recording a grounded scoring changes those two fields and nothing else.
    options = folder.grounded_options("internvl")
    assert folder.record_grounded(options.__class__(enabled=True, convention=options.convention))
    after = folder.require_manifest()
    assert (after.grounded, after.box_convention) == (True, "internvl")
    assert after.model_copy(update={"grounded": False, "box_convention": None}) == manifest
    # A damaged manifest: scoring goes on without it (said, naming the file); a leaderboard refuses it.
    (folder.path / MANIFEST_FILE).write_text('{"u2eval_version": 3}', encoding="utf-8")
    with caplog.at_level("WARNING"):
        assert folder.manifest() is None
    assert f"{folder.path / MANIFEST_FILE} cannot be read" in caplog.text
    with pytest.raises(
        ConfigError, match=r"manifest.json cannot be read: u2eval_version: Input should be a valid string"
    ):
        folder.require_manifest()
    assert not folder.record_grounded(options)  # nothing to record it in


def test_a_damaged_case_record_is_named_by_its_line(tmp_path: Path) -> None:
    from u2eval.run.folder import CASES_FILE, RunFolder

    folder = RunFolder(tmp_path / "run")
    run(RunOptions(model="random", out=folder.path, tasks=("kd",)))
    lines = (folder.path / CASES_FILE).read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2][:40]
    (folder.path / CASES_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"{CASES_FILE}:3: unreadable case record"):
        folder.cases()
