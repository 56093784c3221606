"""The case browser at full scale: ``u2eval view`` of a 7,241-case run of the full synthetic set.

Prints, over several repetitions (min / median / max): the time to build the view (images read from the dataset
and written once; a second build reuses them) against ``u2eval score`` of the same run, the size of what is
written, the peak memory of the building process for the sample (200 cases) and the full run, and the time
from the page's navigation start in headless Chromium until its case list is usable (rows drawn). Targets: the list
usable in under 2 s; peak memory that does not grow with the cases beyond what reading the run's answers
takes (the full run's build under ``u2eval score``'s own peak).

    python bench/view.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import full_set

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the headless browser helper lives there

USABLE_S = 2.0


# Runs one command as its only child and prints that child's peak RSS (and its children's: the image workers).
_PEAK = (
    "import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(done.returncode)"
)


def _timed(command: list[str]) -> tuple[float, int]:
    """Seconds and peak RSS (MB) of one command (the largest of its processes)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _PEAK, *command], capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr[-2000:]}")
    return seconds, int(done.stdout.strip().splitlines()[-1]) // 1024


def _usable(page: Path) -> float:
    """Seconds from the page's navigation start until its case list is drawn (the browser's own clock)."""
    from browser import open_page

    with open_page(page) as browser:
        browser.wait_for_selector("#rows .row")
        return float(browser.evaluate("Number(document.body.dataset.listReadyMs)")) / 1000


def _spread(values: list[float], unit: str = "s") -> str:
    return f"min {min(values):.2f} {unit}, median {statistics.median(values):.2f} {unit}, max {max(values):.2f} {unit}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    u2eval = [sys.executable, "-m", "u2eval"]
    data = full_set()
    with tempfile.TemporaryDirectory(prefix="u2eval-view-") as tmp_name:
        tmp = Path(tmp_name)
        sample_run, full_run = tmp / "sample", tmp / "full"
        _timed([*u2eval, "run", "--model", "random", "--out", str(sample_run)])
        _timed([*u2eval, "run", "--model", "random", "--data", str(data), "--out", str(full_run)])
        _, sample_peak = _timed([*u2eval, "view", str(sample_run), "--out", str(tmp / "sample-view")])
        first, full_peak = _timed([*u2eval, "view", str(full_run), "--out", str(tmp / "view")])
        again = [_timed([*u2eval, "view", str(full_run), "--out", str(tmp / "view")])[0] for _ in range(args.repeat)]
        fresh = []
        for _ in range(args.repeat):
            shutil.rmtree(tmp / "fresh", ignore_errors=True)
            fresh.append(_timed([*u2eval, "view", str(full_run), "--out", str(tmp / "fresh")])[0])
        scored = [_timed([*u2eval, "score", str(full_run)]) for _ in range(args.repeat)]
        score, score_peak = [t for t, _ in scored], max(p for _, p in scored)
        page = tmp / "view" / "index.html"
        size = sum(p.stat().st_size for p in (tmp / "view").rglob("*") if p.is_file())
        page_size = page.stat().st_size
        usable = [_usable(page) for _ in range(args.repeat)]
    print(
        f"u2eval view, 7,241 cases: images written {_spread(fresh)} (first build {first:.2f} s); "
        f"images already there {_spread(again)}"
    )
    print(f"u2eval score, same run: {_spread(score)}")
    print(f"written: {size / 1e6:.1f} MB (the page {page_size / 1e6:.1f} MB, the rest images and thumbnails)")
    print(
        f"peak memory of the build: sample (200 cases) {sample_peak} MB, full (7,241) {full_peak} MB; "
        f"u2eval score of the full run {score_peak} MB"
    )
    print(f"case list usable in headless Chromium: {_spread(usable)} (target median <= {USABLE_S:g} s)")
    ok = statistics.median(usable) <= USABLE_S and full_peak <= score_peak
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
