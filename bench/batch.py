"""The batch path (``u2eval run --batch``, docs/batch.md): how many cases one OpenAI batch file holds, what the
path costs over a live run, and that a run killed anywhere loses nothing and submits nothing twice.

Against the OpenAI stand-in in its own process (tests/openai_server.py, its Batch API in tests/openai_batches.py;
answers fixed per image):

1. **fit**: each case of the set as the line of an OpenAI batch file (``custom_id`` = a 32-character store key,
   the live body as ``encode_request`` makes it), split as the run splits them (200 MB, 50,000 requests): the
   bytes of a line and the cases a file holds;
2. **overhead**: the same cases answered by a live ``u2eval run`` (``--concurrency``, no latency) and by ``u2eval
   run --batch --wait --poll-interval 0`` with the stand-in ending each batch at its first poll: wall times, the
   run's own answer and score times, and the summaries compared byte for byte;
3. **kills**: ``u2eval run --batch --wait`` with ``--batch-size`` (many batches), each batch in progress for a few
   polls and every call of the batch API slowed a little, killed with SIGKILL ``--kills`` times at seeded random
   points of submit (after the k-th batch is recorded), poll (all submitted, none collected) and collect (after
   the k-th is collected), each a random few milliseconds later, resumed each time, then run to its end. After
   each kill: answers stored before are still stored. At the end: batches made = batch ids recorded, no request
   in two batches, no key stored twice, summary.json / summary.md / judgements.jsonl byte-identical to an
   unkilled batch run's.

    python bench/batch.py [--cases 2000] [--kills 10] [--batch-size 100] [--full] [--quick]

Exits non-zero when a promise is broken.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from benchlib import (
    MODEL,
    Server,
    client_env,
    duplicated_answers,
    full_set,
    load_average,
    run_command,
    run_u2eval,
    same_files,
    stored_images,
    synthetic_set,
    verdict,
    wait_for_idle,
)

from u2eval.run.batch_ledger import submissions
from u2eval.run.folder import RunFolder

# -- 1. fit ----------------------------------------------------------------------------------------------------


def fit(data: Path) -> dict[str, Any]:
    """Every case's batch line, split within OpenAI's limits as the run splits them."""
    from model_adapters.openai_batch import LIMITS
    from u2eval.benchmark.prompts import PromptOptions, render
    from u2eval.benchmark.tasks import select_tasks
    from u2eval.data.reader import iter_cases
    from u2eval.data.sources import resolve_source
    from u2eval.models.protocol import AdapterOptions, ModelRequest
    from u2eval.models.registry import create_adapter, resolve_model

    tasks = select_tasks(None)
    by_key = {t.key: t for t in tasks}
    source = resolve_source(str(data), tasks=tasks)
    adapter = create_adapter(resolve_model(f"openai/{MODEL}"), AdapterOptions(base_url="http://127.0.0.1:9/v1"))
    sizes = []
    for case in iter_cases(source, tasks, on_error=lambda error: None):
        prompt = render(case, by_key[case.task], PromptOptions())
        sizes.append(len(adapter.batch_item(ModelRequest("0" * 32, case, prompt))) + 1)  # type: ignore[attr-defined]
    files, size, count = [], 0, 0
    for line in sizes:
        if count and (count >= LIMITS.max_requests or size + line > LIMITS.max_bytes):
            files.append(count)
            size, count = 0, 0
        size, count = size + line, count + 1
    files.append(count)
    return {"cases": len(sizes), "line_mean": statistics.mean(sizes), "line_max": max(sizes), "files": files}


# -- 2. overhead -----------------------------------------------------------------------------------------------


def _children_cpu_s() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def timed_run(command: list[str]) -> tuple[float, dict[str, Any]]:
    """Wall seconds and the manifest, with the run's CPU seconds (its processes: the reader's too) and its spans."""
    cpu = _children_cpu_s()
    outcome = run_u2eval(command, timeout_s=3600)
    cpu = _children_cpu_s() - cpu
    if outcome.returncode != 0:
        raise SystemExit(f"the run failed (exit {outcome.returncode}): {outcome.stderr[-2000:]}")
    folder = Path(command[command.index("--out") + 1])
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    return outcome.seconds, manifest | {"spans": _spans(folder), "cpu_s": cpu}


def _spans(folder: Path) -> dict[str, float]:
    """Seconds between the batch lines of a run (none for a live run): submitting (from the first announced to the
    last recorded), then to the first collected (polls, and reading the first batch's requests again), then
    collecting (to the last collected)."""
    times: dict[str, list[float]] = {}
    for event in RunFolder(folder).batch_events():
        times.setdefault(event.event, []).append(datetime.fromisoformat(event.at).timestamp())
    if not times.get("collected"):
        return {}
    submitted = max(times["submitted"])
    return {
        "submit": submitted - min(times["submitting"]),
        "poll": min(times["collected"]) - submitted,
        "collect": max(times["collected"]) - min(times["collected"]),
    }


def overhead(server: Server, data: Path, root: Path, concurrency: int) -> dict[str, Any]:
    server.reset(answers="varied")
    wait_for_idle()
    live_s, live = timed_run(run_command(root / "live", data, server, concurrency=concurrency))
    server.reset(answers="varied")
    wait_for_idle()
    extra = ["--batch", "--wait", "--poll-interval", "0"]
    batch_s, batch = timed_run(run_command(root / "batch", data, server, concurrency=concurrency, extra=extra))
    return {
        "live_s": live_s,
        "batch_s": batch_s,
        "live": live["timings"] | {"cpu_s": live["cpu_s"]},
        "batch": batch["timings"] | {"spans": batch["spans"], "cpu_s": batch["cpu_s"]},
        "batches": batch["dispatch"].get("batch.batches"),
        "requests": batch["dispatch"].get("batch.submitted"),
        "differing": same_files(root / "live", root / "batch"),
        "server": server.call("/_stats")["batches"],
    }


# -- 3. kills --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kill:
    phase: str  # where it was aimed: submit, poll or collect
    at: str  # what it waited for
    killed: bool
    seconds: float
    recorded: tuple[int, int]  # batches submitted and collected, as batches.jsonl says after the kill
    stored: tuple[int, int]  # answers stored before and after
    kept: bool  # every answer stored before is stored after


def _progress(folder: Path) -> tuple[int, int]:
    """(batches submitted, batches collected) as batches.jsonl says."""
    events = RunFolder(folder).batch_events() if folder.is_dir() else []
    return sum(e.event == "submitted" for e in events), sum(e.event == "collected" for e in events)


def _retrieves(server: Server) -> int:
    return int(server.call("/_stats")["batches"]["retrieves"])


def _reached(server: Server, folder: Path, phase: str, k: int, polled: int) -> bool:
    """Whether the process has come to its point: the k-th batch recorded, its first poll, the k-th collected."""
    submitted, collected = _progress(folder)
    if phase == "submit":
        return submitted >= k
    if phase == "poll":
        return collected == 0 and _retrieves(server) > polled
    return collected >= k


def incarnation(server: Server, command: list[str], folder: Path, phase: str, k: int, delay_s: float) -> Kill:
    """One process of the run, killed ``delay_s`` after it reaches its point (phase "end": runs to its end)."""
    before = stored_images(folder)
    time.sleep(0.3)  # a killed run's last calls may still be on their way to the server
    polled = _retrieves(server)
    started = time.perf_counter()
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors, env=client_env())
        while process.poll() is None and (phase == "end" or not _reached(server, folder, phase, k, polled)):
            time.sleep(0.005)
        deadline = time.monotonic() + delay_s
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        killed = process.poll() is None
        if killed:
            process.send_signal(signal.SIGKILL)
        code = process.wait()
        if not killed and code != 0:
            errors.seek(0)
            raise SystemExit(f"the run failed on its own (exit {code}): {errors.read().decode()[-2000:]}")
    after = stored_images(folder)
    at = "its end" if phase == "end" else ("its first poll" if phase == "poll" else f"{phase} #{k}")
    return Kill(
        phase, at, killed, time.perf_counter() - started, _progress(folder), (len(before), len(after)), before <= after
    )


def kill_loop(server: Server, data: Path, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    settings = {"answers": "varied", "batch_polls": args.polls, "batch_latency_s": args.api_latency}
    extra = ["--batch", "--wait", "--poll-interval", str(args.poll_interval), "--batch-size", str(args.batch_size)]
    server.reset(**settings)
    reference = run_command(root / "reference", data, server, concurrency=8, extra=extra)
    timed_run(reference)
    batches = int(server.call("/_stats")["batches"]["created"])
    server.reset(**settings)
    rng = random.Random(args.seed)
    # Points in the order a run meets them: after the k-th batch recorded, all submitted, after the k-th collected.
    points = (
        [("submit", k) for k in range(1, batches + 1)] + [("poll", 0)] * 3 + [("collect", k) for k in range(1, batches)]
    )
    chosen = sorted(rng.sample(range(len(points)), min(args.kills, len(points))))
    command = run_command(root / "killed", data, server, concurrency=8, extra=extra)
    rows = []
    for index in chosen:
        phase, k = points[index]
        delay = rng.uniform(0.0, 0.5) if phase == "poll" else rng.uniform(0.0, 0.05)
        rows.append(incarnation(server, command, root / "killed", phase, k, delay))
    final = incarnation(server, command, root / "killed", "end", 0, 0.0)
    recorded = {s.batch_id for s in submissions(RunFolder(root / "killed")).values() if s.batch_id}
    return {
        "batches": batches,
        "rows": rows,
        "final": final,
        "server": server.call("/_stats")["batches"],
        "recorded_ids": len(recorded),
        "stored_twice": duplicated_answers(root / "killed"),
        "differing": same_files(root / "reference", root / "killed"),
    }


def print_kills(result: dict[str, Any]) -> None:
    print(
        f"{'#':>3} {'aimed at':>8} {'killed after':>14} {'s':>6} {'submitted':>9} {'collected':>9} "
        f"{'stored':>11} {'kept':>5}"
    )
    for i, row in enumerate((*result["rows"], result["final"]), start=1):
        label = row.at + ("" if row.killed or row.phase == "end" else " (ended first)")
        stored = f"{row.stored[0]}->{row.stored[1]}"
        print(
            f"{i:>3} {row.phase:>8} {label:>14} {row.seconds:>6.1f} {row.recorded[0]:>9} {row.recorded[1]:>9} "
            f"{stored:>11} {'yes' if row.kept else 'NO':>5}"
        )


def report_fit(sized: dict[str, Any], name: str) -> None:
    files = sized["files"]
    print(f"\n1. fit: {sized['cases']} cases of {name} as OpenAI batch lines")
    print(f"   bytes a line: mean {sized['line_mean'] / 1e3:,.0f} KB, max {sized['line_max'] / 1e3:,.0f} KB")
    full = files[:-1] or files  # the last file holds what is left
    print(
        f"   cases per OpenAI batch file (200 MB): median {statistics.median(full):,.0f}, "
        f"{min(full):,} to {max(full):,} ({len(files)} file(s): {files})"
    )


def report_overhead(result: dict[str, Any]) -> list[tuple[str, bool]]:
    print(f"\n2. overhead: {result['requests']} requests, {result['batches']} batch(es), each ended at its first poll")
    for name in ("live", "batch"):
        timings = result[name]
        print(
            f"   {name:>5} run: {result[name + '_s']:6.1f} s  (answer {timings['answer_s']:.1f} s, "
            f"score {timings['score_s']:.1f} s; the client's CPU {timings['cpu_s']:.1f} s)"
        )
    spans = result["batch"]["spans"]
    print(
        f"   batch run's steps: submit {spans['submit']:.1f} s (reading, building and uploading as it goes), "
        f"to the first collected {spans['poll']:.1f} s, collect {spans['collect']:.1f} s"
    )
    extra = result["batch_s"] - result["live_s"]
    print(
        f"   batch path overhead, submit to scored: {extra:+.1f} s ({result['batch_s'] / result['live_s']:.2f}x live)"
    )
    print(f"   files differing from the live run: {', '.join(result['differing']) or 'none'}")
    return [("a batch run's summary, summary.md and judgements equal a live run's", not result["differing"])]


def report_kills(killed: dict[str, Any], args: argparse.Namespace) -> list[tuple[str, bool]]:
    print(
        f"\n3. kills: {args.cases} cases in {killed['batches']} batches of {args.batch_size}, {args.polls} polls each, "
        f"{args.api_latency * 1000:.0f} ms a batch API call"
    )
    print_kills(killed)
    rows, stats = killed["rows"], killed["server"]
    hit = Counter(r.phase for r in rows if r.killed)
    lost = sum(1 for r in rows if not r.kept)
    print(
        f"kills that hit a live process: {sum(hit.values())} "
        f"(submit {hit['submit']}, poll {hit['poll']}, collect {hit['collect']})"
    )
    print(f"kills that lost stored answers: {lost}")
    print(
        f"batches made: {stats['created']}; batch ids recorded: {killed['recorded_ids']}; "
        f"an unkilled run's: {killed['batches']}"
    )
    print(f"requests in two batches: {stats['items_repeated']}")
    print(f"keys stored twice: {killed['stored_twice']}")
    print(f"files differing from the unkilled batch run: {', '.join(killed['differing']) or 'none'}")
    made = stats["created"] == killed["recorded_ids"] == killed["batches"]
    return [
        ("at least 2 kills met a live process", sum(hit.values()) >= 2),
        ("no kill lost a stored answer", lost == 0),
        (
            "batches made = batch ids recorded = an unkilled run's; no request in two batches",
            made and not stats["items_repeated"],
        ),
        (
            "no key stored twice; the scores equal an unkilled run's",
            not killed["stored_twice"] and not killed["differing"],
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=2000, help="cases of the run (a multiple of 200)")
    parser.add_argument("--full", action="store_true", help="the fit and the overhead on the full set (7,241 cases)")
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=32, help="the live run's requests in flight")
    parser.add_argument("--batch-size", type=int, default=100, help="the killed run's requests a batch")
    parser.add_argument("--polls", type=int, default=3, help="retrieves a batch says in_progress")
    parser.add_argument("--poll-interval", type=float, default=0.2)
    parser.add_argument("--api-latency", type=float, default=0.02, help="seconds every batch API call takes")
    parser.add_argument("--quick", action="store_true", help="200 cases, 4 kills (the smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.cases, args.kills, args.batch_size = 200, 4, 40
    data = full_set() if args.full else synthetic_set(args.cases)
    print(f"load average before: {load_average()}")
    checks: list[tuple[str, bool]] = []
    server = Server()
    root = Path(tempfile.mkdtemp(prefix="u2eval-batch-bench-"))
    try:
        report_fit(fit(data), data.name)
        checks += report_overhead(overhead(server, data, root / "overhead", args.concurrency))
        shutil.rmtree(root / "overhead", ignore_errors=True)
        checks += report_kills(kill_loop(server, synthetic_set(args.cases), root / "kills", args), args)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    sys.exit(verdict(checks))


if __name__ == "__main__":
    os.environ.setdefault("COLUMNS", "200")
    main()
