"""Crash safety: a run killed with SIGKILL again and again, a store cut mid-line, a full disk, two runs at once.

Against the OpenAI stand-in in its own process (tests/openai_server.py, answers fixed per image, every case
request logged with its image's sha256), on the synthetic set scaled to ``--cases`` (one image per case):

1. an uninterrupted ``u2eval run``: the reference;
2. the same run killed with SIGKILL at ``--kills`` seeded random points (after a random number of answers,
   the last one after the final answer, while the run finishes), resumed each time, then run to its end, on a
   slow disk (``--fsync-ms``: every fsync that much slower, ``bench/slow_disk``), so that answers arrive
   faster than they can be made durable: a run that asked for more before its answers were stored would
   then lose more than it has in flight, which a fast disk hides.
   After each kill the server's log is compared with the store (read as plain JSON):
   - lost: answers the server gave that the store does not hold. These are the requests in flight at the
     kill (sent but not yet durable: an answer received but not yet written is still in flight). Promise:
     at most ``--concurrency`` per kill;
   - repeated: requests for cases the store already answered when the run started. Promise: 0;
   then: 0 keys stored twice, and summary.json, summary.md and judgements.jsonl byte-identical to the
   reference's;
3. the finished store's last line cut in half: the resumed run names the file and line, asks for exactly
   that one case again, and ends with the reference's summary;
4. a full disk, by a file-size limit (RLIMIT_FSIZE) hit first by the store, then by the case list (and with
   ``--tmpfs``, as root, a small tmpfs: the real ENOSPC): the run stops with one clear line (no traceback)
   and a non-zero exit; every line stored before stays whole (the file after the next run starts with the
   same bytes); the next run, with space again, asks nothing already stored and ends with the reference's
   summary;
5. a second ``u2eval run`` on the folder of a run in progress: refused with a clear error, while the first
   run asks every case once and finishes.

    python bench/crash_safety.py [--cases 2000] [--kills 12] [--seed 0] [--concurrency 16] [--quick] [--tmpfs]

Exits non-zero when a promise is broken.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchlib import (
    Server,
    case_images,
    client_env,
    descendants,
    duplicated_answers,
    load_average,
    run_command,
    run_u2eval,
    same_files,
    stored_answer,
    stored_images,
    survivors,
    synthetic_set,
    verdict,
)

from u2eval.run.store import RESPONSES_FILE

LATENCY_S = 0.02


@dataclass(frozen=True)
class Incarnation:
    target: str  # what the kill waited for
    killed: bool
    seconds: float
    requests: int  # case requests the server got from this process
    answered: int  # ... and answered
    stored_before: int
    stored_after: int
    lost: int  # answered by the server, not in the store after the kill
    repeated: int  # requests for cases stored before this process started
    left_behind: int  # processes the run had started that outlived it by 5 s


def _images(entries: Sequence[dict[str, object]]) -> list[str]:
    return [str(e["image"])[:8] for e in entries]


def incarnation(
    server: Server,
    command: list[str],
    folder: Path,
    n_cases: int,
    answers_to_kill: int | None,
    late_s: float,
    fsync_ms: float = 0.0,
) -> Incarnation:
    """One process of the run: started, killed with SIGKILL after ``answers_to_kill`` new answers (None: once
    every case is answered, after ``late_s`` more seconds; it may finish first), and compared with the log."""
    before = stored_images(folder)
    start = len(server.fetch_log())
    base = server.answered()
    wanted = answers_to_kill if answers_to_kill is not None else n_cases - len(before)
    started = time.perf_counter()
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors, env=client_env(fsync_ms))
        while process.poll() is None and server.answered() - base < wanted:
            time.sleep(0.002)
        deadline = time.monotonic() + (late_s if answers_to_kill is None else 0.0)
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        killed = process.poll() is None
        below = descendants(process.pid)  # e.g. the dataset reader's process
        if killed:
            process.send_signal(signal.SIGKILL)
        returncode = process.wait()
        left = survivors(below)
        if not killed and returncode != 0:
            errors.seek(0)
            raise SystemExit(f"the run failed on its own (exit {returncode}): {errors.read().decode()[-2000:]}")
    seconds = time.perf_counter() - started
    mine = server.settle()[start:]
    after = stored_images(folder)
    answered = {img for e, img in zip(mine, _images(mine), strict=True) if stored_answer(e)}
    return Incarnation(
        target=f"{wanted} answers" + ("" if answers_to_kill is not None else f" + {late_s:.2f} s"),
        killed=killed,
        seconds=seconds,
        requests=len(mine),
        answered=len(answered),
        stored_before=len(before),
        stored_after=len(after),
        lost=len(answered - after),
        repeated=sum(1 for img in _images(mine) if img in before),
        left_behind=len(left),
    )


def kill_loop(
    server: Server,
    data: Path,
    folder: Path,
    n_cases: int,
    kills: int,
    concurrency: int,
    seed: int,
    fsync_ms: float,
    late_s: float,
) -> tuple[list[Incarnation], Incarnation]:
    """Kills at seeded random points (cumulative answers, each leaving at least two rounds of requests to go, so
    it meets a live run), the last within ``late_s`` after the final answer; then to the end."""
    rng = random.Random(seed)
    points = sorted(rng.sample(range(1, n_cases - 2 * concurrency), kills - 1))
    command = run_command(folder, data, server, concurrency=concurrency)
    rows = []
    for point in points:
        stored = len(stored_images(folder))
        rows.append(incarnation(server, command, folder, n_cases, max(1, point - stored), 0.0, fsync_ms))
    rows.append(incarnation(server, command, folder, n_cases, None, rng.uniform(0.0, late_s), fsync_ms))
    final = incarnation(server, command, folder, n_cases, None, 600.0)
    return rows, final


def print_kills(rows: Sequence[Incarnation], final: Incarnation) -> None:
    print(
        f"{'#':>3} {'killed after':>22} {'s':>6} {'requests':>8} {'answered':>8} {'stored':>13} {'lost':>5} "
        f"{'rep.':>5} {'left':>5}"
    )
    for i, row in enumerate((*rows, final), start=1):
        label = row.target if i <= len(rows) else "(runs to its end)"
        if i <= len(rows) and not row.killed:
            label += " (ended first)"
        stored = f"{row.stored_before}->{row.stored_after}"
        print(
            f"{i:>3} {label:>22} {row.seconds:>6.1f} {row.requests:>8} {row.answered:>8} {stored:>13} "
            f"{row.lost:>5} {row.repeated:>5} {row.left_behind:>5}"
        )


def cut_last_line(server: Server, data: Path, source: Path, folder: Path, concurrency: int) -> dict[str, object]:
    """The finished store with its last line cut in half, then resumed."""
    shutil.copytree(source, folder)
    path = folder / RESPONSES_FILE
    raw = path.read_bytes()
    start = raw.rstrip(b"\n").rfind(b"\n") + 1
    cut_image = json.loads(raw[start:])["case_id"].rsplit("/", 1)[1]
    path.write_bytes(raw[: start + (len(raw) - start) // 2])
    lines = raw[:start].count(b"\n") + 1
    server.reset(latency_s=LATENCY_S, answers="varied")
    outcome = run_u2eval(run_command(folder, data, server, concurrency=concurrency))
    asked = _images(server.settle())
    return {
        "returncode": outcome.returncode,
        "named": str(path) in outcome.stderr and str(lines) in outcome.stderr,
        "asked": asked,
        "cut_image": cut_image,
        "message": next((line for line in outcome.stderr.splitlines() if RESPONSES_FILE in line), ""),
    }


@dataclass(frozen=True)
class DiskFull:
    label: str
    returncode: int
    message: str  # the run's last stderr line
    traceback: bool
    stored: int  # answers stored when the disk filled
    whole: bool  # every stored line parses, the file ends with a newline
    kept: bool  # the store after the next run starts with the same bytes
    repeated: int  # requests of the next run for cases stored before
    final_returncode: int
    final_stored: int
    duplicates: int
    differs: list[str]


def full_disk(
    server: Server,
    data: Path,
    folder: Path,
    reference: Path,
    label: str,
    concurrency: int,
    limit: int | None,
    answer_chars: int,
    tmpfs: bool = False,
) -> DiskFull:
    """A run that fills its disk (file-size limit, or a small tmpfs), then the same run with space again."""
    server.reset(latency_s=LATENCY_S, answers="varied", answer_chars=answer_chars)
    command = run_command(folder, data, server, concurrency=concurrency)
    first = run_u2eval(command, file_size_limit=limit)
    server.settle()
    path = folder / RESPONSES_FILE
    raw = path.read_bytes() if path.exists() else b""
    whole = raw.endswith(b"\n") or not raw
    for line in raw.splitlines():
        try:
            json.loads(line)
        except json.JSONDecodeError:
            whole = False
    stored = stored_images(folder)
    if tmpfs:
        subprocess.run(["mount", "-o", "remount,size=256m", str(folder.parent)], check=True)
    start = len(server.fetch_log())
    second = run_u2eval(command)
    asked = _images(server.settle()[start:])
    lines = [line for line in first.stderr.strip().splitlines() if line.strip()]
    return DiskFull(
        label=label,
        returncode=first.returncode,
        message=lines[-1] if lines else "",
        traceback="Traceback" in first.stderr,
        stored=len(stored),
        whole=whole,
        kept=path.read_bytes().startswith(raw),
        repeated=sum(1 for img in asked if img in stored),
        final_returncode=second.returncode,
        final_stored=len(stored_images(folder)),
        duplicates=duplicated_answers(folder),
        differs=same_files(reference, folder) if second.returncode == 0 else ["(the run failed)"],
    )


def mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    return done.returncode == 0


def two_processes(server: Server, data: Path, folder: Path, n_cases: int, concurrency: int) -> dict[str, object]:
    """A second run started on the folder of a run in progress."""
    server.reset(latency_s=0.1, answers="varied")
    command = run_command(folder, data, server, concurrency=concurrency)
    with tempfile.TemporaryFile() as errors:
        first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors, env=client_env())
        while first.poll() is None and server.answered() < 1:
            time.sleep(0.01)
        second = run_u2eval(command)
        first_code = first.wait()
    entries = server.settle()
    lines = [line for line in second.stderr.strip().splitlines() if line.strip()]
    return {
        "second_returncode": second.returncode,
        "second_message": lines[-1] if lines else "",
        "first_returncode": first_code,
        "requests": len(entries),
        "distinct": len(set(_images(entries))),
        "n_cases": n_cases,
        "duplicates": duplicated_answers(folder),
    }


def main() -> int:  # noqa: PLR0915 - one scenario after the other, printed as it goes
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=2000, help="requests of the run (a multiple of 200)")
    parser.add_argument("--kills", type=int, default=12, help="SIGKILLs (>= 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill points")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--fsync-ms", type=float, default=30.0, help="the kill loop's slow disk: ms added to each fsync"
    )
    parser.add_argument("--quick", action="store_true", help="200 cases, 5 kills, one full disk (the smoke test)")
    parser.add_argument("--tmpfs", action="store_true", help="also fill a small tmpfs (needs root)")
    args = parser.parse_args()
    if args.quick:
        args.cases, args.kills, args.concurrency = 200, 5, 8
    data = synthetic_set(args.cases)
    print(f"crash safety: {args.cases} cases from {data}, concurrency {args.concurrency}; load {load_average()}")
    server = Server()
    checks: list[tuple[str, bool]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="u2eval-crash-") as tmp_name:
            tmp = Path(tmp_name)
            server.reset(latency_s=LATENCY_S, answers="varied")
            reference = tmp / "reference"
            ref = run_u2eval(run_command(reference, data, server, concurrency=args.concurrency))
            if ref.returncode != 0:
                raise SystemExit(f"the reference run failed: {ref.stderr[-2000:]}")
            n_cases = len(case_images(reference))
            print(f"\n1. uninterrupted run: {n_cases} cases, {len(server.settle())} requests, {ref.seconds:.1f} s")

            print(
                f"\n2. killed with SIGKILL {args.kills} times (seed {args.seed}), resumed each time; each fsync "
                f"{args.fsync_ms:g} ms slower:"
            )
            server.reset(latency_s=LATENCY_S, answers="varied")
            crashed = tmp / "crashed"
            late_s = 0.1 if args.quick else 0.8  # a small run finishes soon after its last answer
            rows, final = kill_loop(
                server, data, crashed, n_cases, args.kills, args.concurrency, args.seed, args.fsync_ms, late_s
            )
            print_kills(rows, final)
            differs = same_files(reference, crashed)
            lost = [r.lost for r in rows]
            print(
                f"kills that hit a live process: {sum(r.killed for r in rows)}; answers lost (in flight) per kill: "
                f"max {max(lost)}, total {sum(lost)}; requests repeated for stored answers: "
                f"{sum(r.repeated for r in (*rows, final))}; keys stored twice: {duplicated_answers(crashed)}; "
                f"files differing from the reference: {differs or 'none'}"
            )
            checks += [
                (f"{args.kills} kills, all of a live run", sum(r.killed for r in rows) == args.kills),
                (f"answers lost per kill <= requests in flight ({args.concurrency})", max(lost) <= args.concurrency),
                ("0 requests repeated for stored answers", sum(r.repeated for r in (*rows, final)) == 0),
                ("0 answers stored twice", duplicated_answers(crashed) == 0),
                ("no process left behind by a kill", sum(r.left_behind for r in rows) == 0),
                ("every case answered in the end", final.stored_after == n_cases),
                ("summary and judgements byte-identical to the uninterrupted run's", not differs),
            ]

            print("\n3. the store's last line cut mid-write, then resumed:")
            cut = cut_last_line(server, data, crashed, tmp / "cut", args.concurrency)
            print(f"   exit {cut['returncode']}; said: {cut['message']!r}; asked again: {cut['asked']}")
            checks += [
                ("cut line: the file and line are named", bool(cut["named"])),
                ("cut line: exactly that case is asked again", cut["asked"] == [cut["cut_image"]]),
                ("cut line: summary identical", cut["returncode"] == 0 and not same_files(reference, tmp / "cut")),
            ]

            print("\n4. a full disk:")
            server.reset(latency_s=LATENCY_S, answers="varied", answer_chars=4000)
            long_reference = tmp / "reference-long"
            if run_u2eval(run_command(long_reference, data, server, concurrency=args.concurrency)).returncode:
                raise SystemExit("the reference run with long answers failed")
            scenarios = [
                full_disk(
                    server,
                    data,
                    tmp / "fsize-store",
                    long_reference,
                    "file-size limit, hit by the store",
                    args.concurrency,
                    200_000,
                    4000,
                ),
            ]
            if not args.quick:
                scenarios.append(full_disk(
                    server, data, tmp / "fsize-cases", reference, "file-size limit, hit by the case list",
                    args.concurrency, 100_000, 0,
                ))  # fmt: skip
            if args.tmpfs:
                mount = tmp / "tmpfs"
                if mount_tmpfs(mount, "320k"):
                    try:
                        scenarios.append(
                            full_disk(
                                server, data, mount / "run", long_reference, "tmpfs of 320 KB (ENOSPC)",
                                args.concurrency, None, 4000, tmpfs=True,
                            )
                        )  # fmt: skip
                    finally:
                        subprocess.run(["umount", str(mount)], check=False)
                else:
                    print("   (could not mount a tmpfs: not root?)")
            for s in scenarios:
                print(
                    f"   {s.label}: exit {s.returncode}, said {s.message!r}; {s.stored} answers stored, "
                    f"lines whole: {s.whole}, kept by the next run: {s.kept}; next run: exit {s.final_returncode}, "
                    f"repeated {s.repeated}, {s.final_stored} stored, {s.duplicates} twice, "
                    f"differs: {s.differs or 'none'}"
                )
                checks += [
                    (f"{s.label}: one clear line, no traceback, exit 2", s.returncode == 2 and not s.traceback),
                    (f"{s.label}: nothing stored lost or cut", s.whole and s.kept),
                    (f"{s.label}: the next run asks nothing stored and completes", s.repeated == 0
                     and s.final_returncode == 0 and s.final_stored == n_cases and s.duplicates == 0),
                    (f"{s.label}: summary identical", not s.differs),
                ]  # fmt: skip

            print("\n5. a second run on the folder of a run in progress:")
            two = two_processes(server, data, tmp / "two", n_cases, args.concurrency)
            print(
                f"   second: exit {two['second_returncode']}, said {two['second_message']!r}; first: exit "
                f"{two['first_returncode']}, {two['requests']} requests for {two['distinct']} cases, "
                f"{two['duplicates']} stored twice"
            )
            checks += [
                ("two runs: the second is refused with a clear error", two["second_returncode"] == 2
                 and "Traceback" not in str(two["second_message"])),
                ("two runs: every case asked once, none stored twice", two["first_returncode"] == 0
                 and two["requests"] == n_cases and two["duplicates"] == 0),
            ]  # fmt: skip
    finally:
        server.stop()
    return verdict(checks)


if __name__ == "__main__":
    sys.exit(main())
