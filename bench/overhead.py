"""Speed on the full synthetic set with an instant model: overhead, memory, resume and re-scoring.

Prints, for ``u2eval run --model random`` on the full synthetic set (7,241 cases, 2.4 GB of TSV):

- harness time / read-and-decode time: the run's wall time (a fresh interpreter, imports included) over the
  time it takes just to read the same TSV files row by row and base64-decode their images (target <= 1.5);
- peak RSS of the run's process tree (the run and its dataset reader, sampled every 50 ms; target <= 1 GB),
  and the same on the set doubled (target: <= 1.25 x, i.e. flat: streaming, not loading);
- the resume of the finished run: model calls (target 0) and wall time over the first run's (target <= 10%);
- ``u2eval score`` of the run (7,241 answers) and of the same cases with answers of realistic length (full
  sentences, reports as long as the references, so BLEU and ROUGE-L have work): wall time (target <= 3 s).

    python bench/overhead.py [--data DIR] [--skip-double] [--quick]

The synthetic sets are generated on first use under ./data/ (git-ignored) and reused afterwards. ``--quick``
runs on the 200-case sample instead: the functional promises are checked (0 model calls on resume, the
same summary from ``score``), the timing and memory targets are printed but not judged (they are about the
full set). Exits non-zero when a promise is broken.
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchlib import DATA_ROOT, descendants, full_set, load_average, synthetic_set, verdict, wait_for_idle

from u2eval.records import Completion
from u2eval.run.store import ResponseStore

RATIO_TARGET = 1.5
RSS_TARGET_MB = 1024.0
FLATNESS_TARGET = 1.25  # doubled set's peak RSS / single set's
RESUME_TARGET = 0.10  # resume wall time / first run's
SCORE_TARGET_S = 3.0


def read_and_decode(folder: Path) -> tuple[float, int, int]:
    """The floor: read every task TSV row by row and base64-decode its image."""
    csv.field_size_limit(sys.maxsize)
    started = time.perf_counter()
    rows = decoded = 0
    for path in sorted(folder.glob("*/*.tsv")):
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle, delimiter="\t")
            column = next(reader).index("img_data")
            for row in reader:
                decoded += len(base64.b64decode(row[column]))
                rows += 1
    return time.perf_counter() - started, rows, decoded


@dataclass(frozen=True)
class Timed:
    seconds: float
    peak_mb: float  # the process tree's RSS, summed, at its sampled peak


def _tree_rss_kb(pid: int) -> int:
    total = 0
    for each in (pid, *descendants(pid)):
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def u2eval(*args: str) -> Timed:
    """One `u2eval` command in a fresh interpreter: wall time and peak RSS of its process tree."""
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "u2eval", *args], stdout=subprocess.DEVNULL, stderr=errors)
        peak = 0
        while process.poll() is None:
            peak = max(peak, _tree_rss_kb(process.pid))
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        if process.returncode != 0:
            errors.seek(0)
            message = errors.read().decode(errors="replace")[-2000:]
            raise SystemExit(f"u2eval {' '.join(args)} failed (exit {process.returncode}): {message}")
    return Timed(seconds, peak / 1024)


def realistic_answers(run: Path, out: Path, seed: int = 0) -> Path:
    """The run's cases with answers of realistic length: sentences naming an option or a sector, numbers with
    units, and for report and caption cases the reference text of another case of the same task."""
    out.mkdir(parents=True)
    shutil.copy(run / "cases.jsonl", out / "cases.jsonl")
    shutil.copy(run / "manifest.json", out / "manifest.json")
    rng = random.Random(seed)
    cases = [json.loads(line) for line in (run / "cases.jsonl").open(encoding="utf-8")]
    texts: dict[str, list[str]] = {}
    for record in cases:
        if record["case"]["task"] in ("rg", "cg") and record["case"]["truth"]:
            texts.setdefault(record["case"]["task"], []).append(record["case"]["truth"])
    sectors = ("upper left", "center", "lower right", "middle left", "not visible")
    answers = []
    for record in cases:
        case = record["case"]
        if case["task"] in ("rg", "cg"):
            text = rng.choice(texts[case["task"]])
        elif case["task"] == "cve":
            text = f"The measurement is approximately {rng.uniform(0, 80):.1f}, within the normal range."
        elif case["options"] and case["task"] in ("dd", "vra"):
            text = f"Based on the echotexture and margins, the most likely answer is **{rng.choice(case['options'])}**."
        else:
            text = f"The structure is located in the {rng.choice(sectors)} region of the image."
        answers.append(Completion(case_id=case["case_id"], key=record["key"], text=text))
    with ResponseStore(out) as store:
        store.append(answers)
    return out


def main() -> int:  # noqa: PLR0915 - measurements in order, printed as they come
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA_ROOT, help="where the synthetic sets live")
    parser.add_argument("--skip-double", action="store_true", help="skip the doubled set (RSS flatness)")
    parser.add_argument("--quick", action="store_true", help="the 200-case sample; timing targets not judged")
    args = parser.parse_args()
    folder = synthetic_set(200, args.data) if args.quick else full_set(args.data, 1)
    settle: Callable[[], None] = (lambda: None) if args.quick else wait_for_idle  # quick: no timing is judged
    print(f"speed on {folder}; load {load_average()}")
    read_and_decode(folder)  # warm the page cache, so both timings read from memory
    settle()
    floor, rows, decoded = read_and_decode(folder)
    with tempfile.TemporaryDirectory(prefix="u2eval-speed-") as tmp_name:
        run = Path(tmp_name) / "run"
        command = ("run", "--model", "random", "--data", str(folder), "--out", str(run))
        settle()
        first = u2eval(*command)
        summary = (run / "summary.json").read_bytes()
        settle()
        resume = u2eval(*command)
        dispatch = json.loads((run / "manifest.json").read_text(encoding="utf-8"))["dispatch"]
        same_resume = (run / "summary.json").read_bytes() == summary
        settle()
        score = u2eval("score", str(run))
        same_score = (run / "summary.json").read_bytes() == summary
        realistic = realistic_answers(run, Path(tmp_name) / "realistic")
        settle()
        score_real = u2eval("score", str(realistic))
    ratio = first.seconds / floor
    print(f"{rows} cases, {decoded / 1e6:.0f} MB of images")
    print(f"  read + decode           {floor:7.2f} s")
    print(f"  u2eval run              {first.seconds:7.2f} s   ratio {ratio:.2f} (target <= {RATIO_TARGET})")
    print(f"  peak RSS                {first.peak_mb:7.0f} MB  (target <= {RSS_TARGET_MB:.0f})")
    print(
        f"  resume (finished run)   {resume.seconds:7.2f} s   {resume.seconds / first.seconds:.1%} of the first run "
        f"(target <= {RESUME_TARGET:.0%}); model calls {dispatch['requests']}, reused {dispatch['reused']}"
    )
    print(f"  u2eval score            {score.seconds:7.2f} s   (random answers; target <= {SCORE_TARGET_S:g})")
    print(f"  u2eval score            {score_real.seconds:7.2f} s   (realistic answers, BLEU and ROUGE on reports)")
    checks = [
        ("resume: 0 model calls, every case reused", dispatch["requests"] == 0 and dispatch["reused"] == rows),
        ("resume and score reproduce the summary byte for byte", same_resume and same_score),
    ]
    timing = [
        (f"overhead ratio <= {RATIO_TARGET}", ratio <= RATIO_TARGET),
        (f"peak RSS <= {RSS_TARGET_MB:.0f} MB", first.peak_mb <= RSS_TARGET_MB),
        (f"resume <= {RESUME_TARGET:.0%} of the first run", resume.seconds <= RESUME_TARGET * first.seconds),
        (f"u2eval score <= {SCORE_TARGET_S:g} s (both)", max(score.seconds, score_real.seconds) <= SCORE_TARGET_S),
    ]
    if args.quick:
        print("  (--quick: timing and memory targets are for the full set, not judged here)")
    else:
        checks += timing
    if not args.skip_double and not args.quick:
        doubled = full_set(args.data, 2)
        read_and_decode(doubled)
        settle()
        floor2, rows2, _ = read_and_decode(doubled)
        with tempfile.TemporaryDirectory(prefix="u2eval-speed-") as tmp_name:
            settle()
            second = u2eval("run", "--model", "random", "--data", str(doubled), "--out", str(Path(tmp_name) / "run"))
        flat = second.peak_mb / first.peak_mb
        print(
            f"doubled set: {rows2} cases | read + decode {floor2:.2f} s | u2eval run {second.seconds:.2f} s | "
            f"ratio {second.seconds / floor2:.2f} | peak RSS {second.peak_mb:.0f} MB = {flat:.2f} x (target <= "
            f"{FLATNESS_TARGET})"
        )
        checks.append((f"peak RSS flat on the doubled set (<= {FLATNESS_TARGET} x)", flat <= FLATNESS_TARGET))
    return verdict(checks)


if __name__ == "__main__":
    sys.exit(main())
