"""Task specifications, loaded from the closed-schema YAML files in ``tasks/``.

A task file names its capability, parser, metrics, official weight, templates and the source datasets it
covers (with label sets and value ranges). It holds data only: behaviour lives in named parsers and metrics.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from u2eval.errors import ConfigError, did_you_mean
from u2eval.records import TASK_KEYS, TaskKey
from u2eval.resources import resource_dir

Capability = Literal["classification", "detection", "regression", "generation"]
ParserName = Literal["option", "location", "number", "text"]


class _Closed(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DatasetSpec(_Closed):
    """One source dataset inside a task."""

    id: str
    source: str
    anatomy: str
    n_full: int
    classification_task: str | None = None
    labels: tuple[str, ...] = ()
    int_labels: bool = False
    truth_format: Literal["plain", "anatomy_dict"] = "plain"
    channel: str | None = None
    keypoint: str | None = None
    measurement_key: str | None = None
    quantity: str | None = None
    unit: str | None = None
    value_range: tuple[float, float] | None = None
    integer_value: bool = False
    nullable: bool = False


class TemplateNames(_Closed):
    role: str
    instruction: str
    format: str


class TaskSpec(_Closed):
    key: TaskKey
    name: str
    folder: str
    capability: Capability
    version: int
    weight: float
    parser: ParserName
    truth_column: str
    primary_metric: str
    metrics: tuple[str, ...]
    templates: TemplateNames
    datasets: tuple[DatasetSpec, ...]

    @model_validator(mode="after")
    def _check(self) -> TaskSpec:
        ids = [d.id for d in self.datasets]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate dataset ids in task {self.key}: {ids}")
        if self.primary_metric not in self.metrics:
            raise ValueError(f"primary_metric {self.primary_metric!r} is not in metrics {self.metrics}")
        for d in self.datasets:
            if self.capability == "classification" and not d.labels:
                raise ValueError(f"classification dataset {self.key}/{d.id} has no labels")
            if self.capability == "regression" and (d.value_range is None or d.measurement_key is None):
                raise ValueError(f"regression dataset {self.key}/{d.id} needs value_range and measurement_key")
        return self

    def dataset(self, dataset_id: str) -> DatasetSpec:
        for d in self.datasets:
            if d.id == dataset_id:
                return d
        raise KeyError(f"task {self.key} has no dataset {dataset_id!r}")

    @property
    def dataset_ids(self) -> tuple[str, ...]:
        return tuple(d.id for d in self.datasets)


def tasks_dir() -> Path:
    return resource_dir("tasks")


@cache
def _load_all() -> dict[str, tuple[TaskSpec, str]]:
    specs: dict[str, tuple[TaskSpec, str]] = {}
    for key in TASK_KEYS:
        path = tasks_dir() / f"{key}.yaml"
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"task file missing: {path} ({exc.strerror})") from exc
        try:
            spec = TaskSpec.model_validate(yaml.safe_load(raw))
        except (yaml.YAMLError, ValidationError) as exc:
            raise ConfigError(f"invalid task file {path}: {exc}") from exc
        if spec.key != key:
            raise ConfigError(f"{path} declares key {spec.key!r}, expected {key!r}")
        specs[key] = (spec, hashlib.sha256(raw).hexdigest())
    total = sum(spec.weight for spec, _ in specs.values())
    if abs(total - 1.0) > 1e-9:
        raise ConfigError(f"task weights sum to {total}, not 1")
    return specs


def all_tasks() -> tuple[TaskSpec, ...]:
    """Every task in the official order dd, vra, ll, od, kd, cve, rg, cg."""
    return tuple(spec for spec, _ in _load_all().values())


def get_task(key: str) -> TaskSpec:
    specs = _load_all()
    if key not in specs:
        hint = did_you_mean(key, TASK_KEYS)
        raise ConfigError(f"unknown task {key!r}{hint}; choose from {', '.join(TASK_KEYS)}")
    return specs[key][0]


def task_sha256(key: str) -> str:
    """sha256 of the task file's bytes, recorded in the manifest."""
    get_task(key)
    return _load_all()[key][1]


def select_tasks(keys: Iterable[str] | None) -> tuple[TaskSpec, ...]:
    """The tasks named (comma lists already split), in official order; all of them when ``keys`` is None."""
    if keys is None:
        return all_tasks()
    wanted = {k.strip().lower() for k in keys if k.strip()}
    if not wanted:
        raise ConfigError("no task named: give task keys, e.g. --tasks dd,ll (or leave --tasks out for all 8)")
    for key in wanted:
        get_task(key)
    return tuple(t for t in all_tasks() if t.key in wanted)


def task_by_folder(folder: str) -> TaskSpec:
    for spec in all_tasks():
        if spec.folder == folder:
            return spec
    raise ConfigError(f"unknown task folder {folder!r}")
