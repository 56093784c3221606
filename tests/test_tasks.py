"""Task specs: the closed schema rejects mistakes, and the facts they encode match the benchmark."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from u2eval.benchmark.tasks import TaskSpec, all_tasks, get_task, select_tasks, tasks_dir
from u2eval.errors import ConfigError

OFFICIAL_WEIGHTS = {
    "dd": 0.20,
    "vra": 0.20,
    "ll": 0.07,
    "od": 0.27,
    "kd": 0.07,
    "cve": 0.07,
    "rg": 0.08,
    "cg": 0.04,
}


def test_eight_tasks_in_official_order_with_official_weights() -> None:
    assert {t.key: t.weight for t in all_tasks()} == OFFICIAL_WEIGHTS
    assert [t.key for t in all_tasks()] == list(OFFICIAL_WEIGHTS)


def test_full_size_counts_add_up_to_the_published_total() -> None:
    assert sum(d.n_full for t in all_tasks() for d in t.datasets) == 7241


def test_semantic_dataset_mapping() -> None:
    assert "28_1" in get_task("dd").dataset_ids and "28" not in get_task("dd").dataset_ids
    assert "28" in get_task("vra").dataset_ids
    assert get_task("ll").dataset_ids == ("04", "17", "23", "32", "64")
    assert "09" in get_task("od").dataset_ids and len(get_task("od").datasets) == 13
    assert get_task("cg").dataset_ids == ("10", "44")
    assert get_task("cve").dataset_ids == ("18", "27", "31", "50", "57")


def test_unknown_field_is_rejected() -> None:
    raw = yaml.safe_load((tasks_dir() / "kd.yaml").read_text())
    raw["wieght"] = 0.07
    with pytest.raises(ValidationError, match="wieght"):
        TaskSpec.model_validate(raw)


def test_classification_dataset_without_labels_is_rejected() -> None:
    raw = yaml.safe_load((tasks_dir() / "dd.yaml").read_text())
    raw["datasets"][0]["labels"] = []
    with pytest.raises(ValidationError, match="has no labels"):
        TaskSpec.model_validate(raw)


def test_select_tasks_keeps_official_order_and_rejects_unknown() -> None:
    assert [t.key for t in select_tasks(["ll", "DD"])] == ["dd", "ll"]
    with pytest.raises(ConfigError, match="unknown task 'xx'"):
        select_tasks(["dd", "xx"])
