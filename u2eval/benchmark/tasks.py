"""Task specifications, loaded from the closed-schema YAML files in ``tasks/``.

A task file names its capability, parser, metrics, official weight, templates and the source datasets it
covers (with label sets and value ranges). It holds data only: behaviour lives in named parsers and metrics.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from u2eval.errors import ConfigError, did_you_mean
from u2eval.records import TaskKey
from u2eval.resources import resource_dir

Capability = Literal["classification", "detection", "regression", "generation"]
ParserName = Literal["option", "location", "number", "text"]


class _Closed(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


OfficialScorer = Literal["cla", "seg", "measurement", "report"]


class Replacement(_Closed):
    """Another task's dataset the official table averages in this one's place, under a named quirk."""

    task: str
    dataset: str
    quirk: str


class OfficialDataset(_Closed):
    """How the official kit knows a dataset (all optional: a dataset it never had has none of them)."""

    key: str | None = None  # its key in the kit's files and prompts where it differs from our id ('28' for 28_1)
    options: tuple[str, ...] = ()  # the options stage (a) extracts from its official prompt, spelled as it does
    extra_options: tuple[str, ...] = ()  # options its substring rule adds when the prompt mentions them ('other')
    left_out_by: str | None = None  # the reference quirk under which the official table leaves it out
    taken_by: Replacement | None = None  # the official table averages another dataset here instead


class OfficialTask(_Closed):
    """How the official kit treats a task: the reference mode reproduces it."""

    scorer: OfficialScorer  # the kit's scorer, and the folder of its prediction files
    # How stage (a) reads the options of the official prompt: the dataset's own list (dataset_prompt), the ten
    # locations (location_list), the ten locations plus words the row's anatomy and target bring in
    # (location_with_target), or none at all (none).
    options: Literal["dataset_prompt", "location_list", "location_with_target", "none"]
    published_column: str  # the task's column in the paper's leaderboard (benchmark/published.csv)
    join_by_scenario: bool = False  # rows sharing an image are told apart by the structure the row names


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
    official: OfficialDataset = OfficialDataset()

    @property
    def official_key(self) -> str:
        return self.official.key or self.id


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
    order: int  # its place in the official order: tables list tasks so, and the U2 sum adds them so
    weight: float = Field(gt=0.0, le=1.0)  # its share of the U2-Score; the weights of all tasks sum to 1
    parser: ParserName
    truth_column: str
    primary_metric: str
    metrics: tuple[str, ...]
    templates: TemplateNames
    datasets: tuple[DatasetSpec, ...]
    # Where a case's scenario comes from: the row's scenario cell (else the dataset's classification_task or
    # channel), the first key of its keypoints cell (else the dataset's keypoint), the dataset's
    # measurement_key, or nothing. Unset: by capability (cell; regression: measurement; generation: none).
    scenario_from: Literal["cell", "keypoints", "measurement", "none"] | None = None
    official: OfficialTask | None = None  # None: a task the official kit never had

    @property
    def scenario_source(self) -> str:
        if self.scenario_from is not None:
            return self.scenario_from
        return {"regression": "measurement", "generation": "none"}.get(self.capability, "cell")

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


TASKS_DIR_ENV = "U2EVAL_TASKS_DIR"  # a folder of task files used instead of the shipped tasks/


def tasks_dir() -> Path:
    """The folder the task files come from: ``$U2EVAL_TASKS_DIR`` when set, else the shipped ``tasks/``."""
    override = os.environ.get(TASKS_DIR_ENV, "").strip()
    return _resolved(override) if override else resource_dir("tasks")


@cache  # every task lookup asks where the tasks are: resolving the path each time cost more than the lookup
def _resolved(folder: str) -> Path:
    return Path(folder).expanduser().resolve()


def _one_line(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors())


@cache
def _load_folder(folder: Path) -> dict[str, tuple[TaskSpec, str]]:
    """Every ``*.yaml`` of ``folder`` as a task, checked, in the order the files give."""
    paths = sorted(folder.glob("*.yaml"))
    if not paths:
        raise ConfigError(f"no task files (*.yaml) in {folder}")
    found: list[tuple[TaskSpec, str]] = []
    for path in paths:
        raw = path.read_bytes()
        try:
            spec = TaskSpec.model_validate(yaml.safe_load(raw))
        except yaml.YAMLError as exc:
            raise ConfigError(f"invalid task file {path}: not YAML ({exc})") from exc
        except ValidationError as exc:
            raise ConfigError(f"invalid task file {path}: {_one_line(exc)}") from exc
        if spec.key != path.stem:
            raise ConfigError(f"{path} declares key {spec.key!r}: a task's key is its file's name ({path.stem!r})")
        found.append((spec, hashlib.sha256(raw).hexdigest()))
    orders = Counter(spec.order for spec, _ in found)
    if shared := [f"{spec.key} (order {spec.order})" for spec, _ in found if orders[spec.order] > 1]:
        raise ConfigError(f"tasks in {folder} share a place in the order: {', '.join(shared)}")
    found.sort(key=lambda item: item[0].order)
    total = sum(spec.weight for spec, _ in found)
    if abs(total - 1.0) > 1e-9:
        weights = ", ".join(f"{spec.key} {spec.weight:g}" for spec, _ in found)
        raise ConfigError(f"task weights in {folder} sum to {total:g}, not 1 ({weights}): set them to sum to 1")
    return {spec.key: (spec, sha) for spec, sha in found}


def _load_all() -> dict[str, tuple[TaskSpec, str]]:
    return _load_folder(tasks_dir())


def task_keys() -> tuple[str, ...]:
    """The task keys in the official order (dd, vra, ll, od, kd, cve, rg, cg for U2-Bench)."""
    return tuple(_load_all())


def all_tasks() -> tuple[TaskSpec, ...]:
    """Every task, in the official order."""
    return tuple(spec for spec, _ in _load_all().values())


def get_task(key: str) -> TaskSpec:
    specs = _load_all()
    if key not in specs:
        hint = did_you_mean(key, list(specs))
        raise ConfigError(f"unknown task {key!r}{hint}; choose from {', '.join(specs)}")
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
        raise ConfigError("no task named: give task keys, e.g. --tasks dd,ll (or leave --tasks out for all of them)")
    for key in wanted:
        get_task(key)
    return tuple(t for t in all_tasks() if t.key in wanted)
