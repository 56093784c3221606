"""What a prompt template sees, and nothing more: the task, its dataset spec, the anatomy (the row's, or the
dataset's, unless the prompt leaves it out), the structure to locate, the nine locations, and the pixel size
read on its own from the measurement cell. Never the truth.
"""

from __future__ import annotations

import ast
import json
import math

from u2eval.benchmark.sectors import LOCATION_OPTIONS
from u2eval.benchmark.tasks import Capability, DatasetSpec, TaskSpec
from u2eval.errors import DataError
from u2eval.records import Case

# Classification and regression name the organ the task file gives each source dataset, as the official
# prompts hard-code it per dataset: a row's anatomy_location may be the answer itself (the mixed-anatomy
# VRA set) or close to it (the fetal plane labels). Detection and generation name the row's anatomy, as the
# official prompts substitute it.
_ROW_ANATOMY: frozenset[Capability] = frozenset({"detection", "generation"})


# A dataset whose images span many organs: there is no organ to name (it is what the model must say).
_MIXED_ANATOMY = "mixed"


def case_dataset(case: Case, task: TaskSpec) -> DatasetSpec:
    for dataset in task.datasets:
        if dataset.id == case.dataset_id:
            return dataset
    raise DataError(case.case_id, f"dataset {case.dataset_id!r} is not part of task {task.key}")


def template_values(case: Case, task: TaskSpec, dataset: DatasetSpec, name_anatomy: bool) -> dict[str, object]:
    """The only names a template sees. Never the truth: nothing here comes from a ground-truth column
    except the pixel size, read on its own."""
    capability = task.capability
    return {
        "task": task.key,
        "dataset": dataset,
        "anatomy": _organ(case, dataset, capability) if name_anatomy else None,
        "target": _target(case, dataset) if capability == "detection" else None,
        "locations": LOCATION_OPTIONS,
        "pixel_size_mm": _pixel_size_mm(case) if capability == "regression" else None,
    }


def _organ(case: Case, dataset: DatasetSpec, capability: Capability) -> str | None:
    if dataset.anatomy == _MIXED_ANATOMY:
        return None
    row = case.anatomy.strip()
    return row if row and capability in _ROW_ANATOMY else dataset.anatomy


def _target(case: Case, dataset: DatasetSpec) -> str:
    """The structure or landmark to locate: the row's scenario (seg_channel_name, keypoint name), else the
    task file's default for the dataset."""
    target = case.scenario.strip() or dataset.channel or dataset.keypoint
    if not target:
        raise DataError(case.case_id, "no structure name to locate (empty scenario)")
    return target


def _pixel_size_mm(case: Case) -> str | None:
    """``pixel_size_mm`` from the measurement cell, if it holds a positive number; else None (the prompt
    then says nothing about pixel size). Only that key is read: the cell also holds the truth."""
    cell = case.columns.get("measurement")
    if not cell or "pixel_size_mm" not in cell:
        return None
    parsed: object
    try:
        parsed = ast.literal_eval(cell)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        try:
            parsed = json.loads(cell)
        except ValueError:
            return None
    if not isinstance(parsed, dict):
        return None
    value = parsed.get("pixel_size_mm")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if not math.isfinite(number) or number <= 0:
        return None
    return str(number)
