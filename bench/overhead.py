"""Harness overhead on the full synthetic set with an instant model.

Prints u2eval's wall time for `u2eval run --model random` divided by the time it takes just to read the
same TSV files and base64-decode their images (target <= 1.5), and the run's peak RSS (target <= 1 GB),
then the same on the set doubled (peak RSS must stay flat: streaming, not loading).

    python bench/overhead.py [--data DIR] [--skip-double]

The synthetic sets are generated on first use under ./data/ (git-ignored) and reused afterwards.
Exits non-zero when a target is missed.
"""

from __future__ import annotations

import argparse
import base64
import csv
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from u2eval.synth import write_dataset

RATIO_TARGET = 1.5
RSS_TARGET_MB = 1024.0
FLATNESS_TARGET = 1.25  # doubled set's peak RSS / single set's


def ensure_dataset(folder: Path, scale: int) -> Path:
    if not (folder / "an_explanation_of_the_columns.tsv").exists():
        print(f"generating the full synthetic set x{scale} in {folder} ...", flush=True)
        write_dataset(folder, size="full", seed=0, scale=scale)
    return folder


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


# Runs the CLI in a fresh interpreter that reports its own peak RSS, so each set is measured alone.
_CHILD = """
import resource, sys
from u2eval.cli import main
sys.argv = ["u2eval", "run", "--model", "random", "--data", sys.argv[1], "--out", sys.argv[2]]
try:
    main()
except SystemExit as exc:
    if exc.code:
        raise
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def harness(folder: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one `u2eval run --model random` over the whole set."""
    out = Path(tempfile.mkdtemp(prefix="u2eval-overhead-"))
    try:
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-c", _CHILD, str(folder), str(out / "run")],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        elapsed = time.perf_counter() - started
        peak_kb = int(result.stderr.strip().splitlines()[-1])
        return elapsed, peak_kb / 1024
    finally:
        shutil.rmtree(out, ignore_errors=True)


def measure(folder: Path) -> tuple[float, float, float, int]:
    floor, rows, decoded = read_and_decode(folder)
    wall, rss = harness(folder)
    print(
        f"{folder.name}: {rows} cases, {decoded / 1e6:.0f} MB of images | read+decode {floor:.2f} s | "
        f"u2eval run {wall:.2f} s | ratio {wall / floor:.2f} | peak RSS {rss:.0f} MB",
        flush=True,
    )
    return floor, wall, rss, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data"), help="where the synthetic sets live")
    parser.add_argument("--skip-double", action="store_true", help="skip the doubled set (RSS flatness)")
    args = parser.parse_args()
    floor, wall, rss, _ = measure(ensure_dataset(args.data / "full", 1))
    ratio = wall / floor
    ok = ratio <= RATIO_TARGET and rss <= RSS_TARGET_MB
    print(
        f"overhead ratio {ratio:.2f} (target <= {RATIO_TARGET}); peak RSS {rss:.0f} MB (target <= {RSS_TARGET_MB:.0f})"
    )
    if not args.skip_double:
        _, _, rss2, _ = measure(ensure_dataset(args.data / "full-x2", 2))
        flat = rss2 / rss
        ok = ok and flat <= FLATNESS_TARGET
        print(f"peak RSS doubled set / single set = {flat:.2f} (target <= {FLATNESS_TARGET})")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
