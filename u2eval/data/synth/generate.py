"""Deterministic synthetic U2-Bench data, in the exact layout of the Hugging Face dataset
``DolphinAI/u2-bench``: one folder per task holding ``.tsv`` files (here one per source dataset), plus the
root file ``an_explanation_of_the_columns.tsv``. Every TSV has the 17 published columns in order, and every
cell uses the real encodings (base64 PNG/JPEG images, Python-literal dicts with single quotes, ...).

Two sizes: ``sample`` (4 small cases per dataset id, bundled in ``u2eval/sample`` for the default run and the
tests) and ``full`` (``n_full`` cases per dataset id, 7,241 in all, realistic image sizes, for benchmarks).

Why the odd machinery: the bundled sample must be byte-identical when regenerated anywhere, so every random
number comes from numpy's PCG64 raw stream (stable by NEP 19, unlike Generator methods), pixels are made with
integer arithmetic only, and the sample's PNGs use stored (uncompressed) deflate blocks written here, so no
zlib build can change a byte. JPEGs come from Pillow's libjpeg (integer DCT, stable in practice). The full set
uses zlib level 1: fast, and deterministic for one zlib build, which is all a benchmark needs.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from u2eval.benchmark.tasks import DatasetSpec, all_tasks
from u2eval.data.sources import SYNTH_CARD, SYNTH_MARKER
from u2eval.data.synth.images import Size
from u2eval.data.synth.rows import COLUMNS, dataset_context, planned_counts, row_cells
from u2eval.errors import ConfigError
from u2eval.records import TaskKey
from u2eval.resources import sample_dir

if TYPE_CHECKING:
    import _csv

EXPLANATION_FILE = "an_explanation_of_the_columns.tsv"
# The description row of the explanation file. 'base64 encoded image' (20 chars) and the seg_data text
# (32 chars) are the minimum cell lengths the HF viewer reports for those columns.
EXPLANATION_ROW: Mapping[str, str] = {
    "dataset_name": "Example dataset name",
    "img_data": "base64 encoded image",
    "patient_id": "patient identifier",
    "prompt": "prompt used for the assessment",
    "anatomy_location": "anatomical location",
    "demographic": "demographics",
    "classification_task": "type of classification task",
    "class_label": "classification label",
    "options": "classification options",
    "seg_data": "base64 encoded segmentation mask",
    "seg_channel_name": "segmentation channel name",
    "gt_bbox": "ground-truth bounding box",
    "keypoints": "anatomical keypoints",
    "measurement": "clinical measurements",
    "caption": "caption",
    "report": "report text",
    "notes": "notes",
}
# The card marks a folder as ours: write_dataset only rewrites folders that carry it (or empty ones), and runs on
# it are marked synthetic (u2eval.data.sources.is_synthetic).
CARD_FILE, CARD_MARKER = SYNTH_CARD, SYNTH_MARKER


@dataclass(frozen=True)
class SynthReport:
    """What write_dataset wrote: rows per task and dataset id, files and bytes."""

    root: Path
    size: Size
    seed: int
    scale: int
    counts: Mapping[str, Mapping[str, int]]
    n_files: int
    n_bytes: int
    seconds: float

    @property
    def n_cases(self) -> int:
        return sum(sum(per.values()) for per in self.counts.values())

    def summary(self) -> str:
        lines = [
            f"wrote {self.n_cases} synthetic cases ({self.size}, seed {self.seed}, scale {self.scale}) "
            f"to {self.root}: {self.n_files} files, {self.n_bytes / 1e6:.1f} MB in {self.seconds:.1f} s"
        ]
        for task, per in self.counts.items():
            lines.append(f"  {task}: {sum(per.values())} cases in {len(per)} datasets")
        return "\n".join(lines)


@dataclass(frozen=True)
class _Job:
    task: TaskKey
    dataset_id: str
    n_rows: int
    size: Size
    seed: int
    path: Path


# ---------------------------------------------------------------------------------------------- files


def _tsv_writer(fh: TextIO) -> _csv.Writer:
    """How pandas' to_csv(sep='\\t', index=False) writes: excel-tab, minimal quoting, '\\n' line ends."""
    return csv.writer(fh, dialect="excel-tab", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")


def file_name(spec: DatasetSpec) -> str:
    """One TSV per source dataset, named after the source id (`21.tsv`, `18_1.tsv`, `anatomy.tsv`)."""
    return spec.source.split(".", 1)[0] + ".tsv"


def _run_job(job: _Job) -> tuple[TaskKey, str, int, int]:
    """Write one dataset's TSV (to a .part file first, so an interrupted run leaves no half file)."""
    ctx = dataset_context(job.task, job.dataset_id, job.size, job.seed)
    part = job.path.with_name(job.path.name + ".part")
    with part.open("w", encoding="utf-8", newline="") as fh:
        writer = _tsv_writer(fh)
        writer.writerow(COLUMNS)
        for row in range(job.n_rows):
            writer.writerow(row_cells(ctx, row))
    part.replace(job.path)
    return job.task, job.dataset_id, job.n_rows, job.path.stat().st_size


def _plan(root: Path, size: Size, seed: int, scale: int) -> list[_Job]:
    counts = planned_counts(size, scale)
    return [
        _Job(task.key, spec.id, counts[task.key][spec.id], size, seed, root / task.folder / file_name(spec))
        for task in all_tasks()
        for spec in task.datasets
    ]


def _prepare_root(root: Path) -> None:
    """Refuse to write into a folder we did not make; clear the TSVs of one we did (a stale file would be read)."""
    root.mkdir(parents=True, exist_ok=True)
    card = root / CARD_FILE
    ours = card.is_file() and CARD_MARKER in card.read_text(encoding="utf-8", errors="replace")
    if any(root.iterdir()) and not ours:
        raise ConfigError(f"refusing to write synthetic data into {root}: it is not empty and not made by u2eval synth")
    for task in all_tasks():
        folder = root / task.folder
        if folder.is_dir():
            for stale in folder.iterdir():
                if stale.suffix in (".tsv", ".part") and stale.is_file():
                    stale.unlink()
        folder.mkdir(exist_ok=True)


def _write_explanation(root: Path) -> None:
    with (root / EXPLANATION_FILE).open("w", encoding="utf-8", newline="") as fh:
        writer = _tsv_writer(fh)
        writer.writerow(COLUMNS)
        writer.writerow([EXPLANATION_ROW[c] for c in COLUMNS])


def _write_card(root: Path, size: Size, seed: int, scale: int, counts: Mapping[str, Mapping[str, int]]) -> None:
    lines = [
        "# Synthetic U2-Bench data",
        "",
        f"This folder was {CARD_MARKER} (size={size}, seed={seed}, scale={scale}). It is NOT real patient data:",
        "images are random speckle, texts come from templates. Folder layout, the 17 columns and the cell",
        "encodings follow the Hugging Face dataset DolphinAI/u2-bench, so the same loader reads both.",
        "",
        "| task | datasets | cases |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {task} | {len(per)} | {sum(per.values())} |" for task, per in counts.items()]
    (root / CARD_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _execute(jobs: Sequence[_Job], workers: int) -> Iterator[tuple[TaskKey, str, int, int]]:
    if workers <= 1:
        yield from map(_run_job, jobs)
        return
    # Biggest first keeps the workers evenly busy; results are keyed, so order does not matter.
    ordered = sorted(jobs, key=lambda j: -j.n_rows)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from (done.result() for done in as_completed([pool.submit(_run_job, job) for job in ordered]))


def write_dataset(
    root: Path,
    *,
    size: Size = "sample",
    seed: int = 0,
    scale: int = 1,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SynthReport:
    """Write the synthetic set under ``root``; the same (size, seed, scale) always gives the same bytes.

    ``scale`` multiplies the rows per dataset (x2 the full set for the memory-flatness benchmark); the first
    rows of a scaled set equal the unscaled set. ``workers`` defaults to 1 for the sample, all CPUs for full.
    ``progress(cases written, cases planned)`` is called as each dataset's file is done.
    """
    if seed < 0 or scale < 1:
        raise ConfigError(f"seed must be >= 0 and scale >= 1 (got seed={seed}, scale={scale})")
    started = time.perf_counter()
    counts = planned_counts(size, scale)
    root = Path(root)
    _prepare_root(root)
    jobs = _plan(root, size, seed, scale)
    if workers is None:
        workers = 1 if size == "sample" else min(os.cpu_count() or 1, 8)
    planned, written, n_bytes = sum(job.n_rows for job in jobs), 0, 0
    for _, _, n_rows, nbytes in _execute(jobs, workers):
        written, n_bytes = written + n_rows, n_bytes + nbytes
        if progress is not None:
            progress(written, planned)
    _write_explanation(root)
    _write_card(root, size, seed, scale, counts)
    n_bytes += (root / EXPLANATION_FILE).stat().st_size + (root / CARD_FILE).stat().st_size
    return SynthReport(
        root=root,
        size=size,
        seed=seed,
        scale=scale,
        counts=counts,
        n_files=len(jobs) + 2,
        n_bytes=n_bytes,
        seconds=time.perf_counter() - started,
    )


def synth_command(
    out: Path | str,
    *,
    full: bool = False,
    seed: int = 0,
    scale: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> SynthReport:
    """What `u2eval data synth [--full] [--seed N] [--scale N] --out DIR` runs."""
    return write_dataset(Path(out), size="full" if full else "sample", seed=seed, scale=scale, progress=progress)


def regenerate_sample() -> SynthReport:
    """Rewrite the bundled sample (u2eval/sample) after a deliberate change to the generator."""
    target = sample_dir()
    if target.exists():
        shutil.rmtree(target)
    return write_dataset(target, size="sample", seed=0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m u2eval.data.synth.generate", description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="the full-size set (7,241 cases)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--out", type=Path, help="output folder (default: rewrite the bundled sample)")
    args = parser.parse_args(argv)
    if args.out is None and not args.full and args.seed == 0 and args.scale == 1:
        report = regenerate_sample()
    elif args.out is None:
        parser.error("--out is required unless regenerating the bundled sample")
    else:
        report = synth_command(args.out, full=args.full, seed=args.seed, scale=args.scale)
    print(report.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
