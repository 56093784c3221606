"""Generate the full-size synthetic set and time the case reader against a plain read + base64 decode.

    python bench/make_full.py --out /tmp/u2-full [--scale 2] [--workers 2] [--skip-generate]

Prints: generation time and size; then, on a warm page cache, the throughput (MB of TSV per second) of
(a) csv row by row + base64-decoding img_data, the floor any reader pays, and (b) u2eval.data.reader.iter_cases,
plus their ratio and the peak RSS. The target is ratio <= 1.5.
"""

from __future__ import annotations

import argparse
import base64
import csv
import resource
import sys
import time
from pathlib import Path

from u2eval.benchmark.tasks import all_tasks
from u2eval.data.reader import iter_cases
from u2eval.data.sources import resolve_source
from u2eval.data.synth.generate import write_dataset
from u2eval.errors import DataError


def _tsv_bytes(root: Path) -> int:
    return sum(p.stat().st_size for t in all_tasks() for p in (root / t.folder).glob("*.tsv"))


def plain_read(root: Path) -> int:
    """The floor: every row parsed by csv, every image cell base64-decoded, nothing else."""
    csv.field_size_limit(2**31 - 1)
    n = 0
    for task in all_tasks():
        for path in sorted((root / task.folder).glob("*.tsv")):
            with path.open(encoding="utf-8", newline="") as fh:
                reader = csv.reader(fh, dialect="excel-tab")
                column = next(reader).index("img_data")
                for row in reader:
                    base64.b64decode(row[column])
                    n += 1
    return n


def harness_read(root: Path) -> int:
    errors: list[DataError] = []
    n = sum(1 for _ in iter_cases(resolve_source(str(root)), all_tasks(), on_error=errors.append))
    if errors:
        raise SystemExit(f"unexpected data errors: {errors[:3]}")
    return n


def _timed(label: str, fn: object, root: Path, mb: float) -> float:
    assert callable(fn)
    started = time.perf_counter()
    n = fn(root)
    seconds = time.perf_counter() - started
    print(f"{label:>22}: {n} cases in {seconds:6.2f} s = {mb / seconds:7.1f} MB/s")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--skip-generate", action="store_true")
    args = parser.parse_args()
    if not args.skip_generate:
        report = write_dataset(args.out, size="full", scale=args.scale, workers=args.workers)
        print(report.summary())
    mb = _tsv_bytes(args.out) / 1e6
    print(f"TSV data: {mb:.0f} MB")
    plain_read(args.out)  # warm the page cache so both timings read from memory
    base = _timed("csv + b64decode", plain_read, args.out, mb)
    ours = _timed("u2eval iter_cases", harness_read, args.out, mb)
    print(f"ratio: {ours / base:.2f}x   peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
