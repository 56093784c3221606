"""The Random Guessing baseline, seeded per case so answers do not depend on order or concurrency.

Classification: uniform over the case's own option list. Detection: uniform over the nine sectors (never
``not visible``, as the paper's baseline evidently did, facts §7). Regression: uniform over the dataset's
prompt range, rounded like a plausible answer. Text tasks: the paper reports no baseline ("-", counted as
0 in the U2-Score), so the answer is empty.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from model_adapters._base import Identified
from u2eval.benchmark.sectors import LOCATION_OPTIONS
from u2eval.benchmark.tasks import get_task
from u2eval.models.protocol import AdapterOptions, ModelRequest
from u2eval.records import Case, Completion, ModelInfo

SECTORS: tuple[str, ...] = tuple(o for o in LOCATION_OPTIONS if o != "not visible")


def guess(case: Case, seed: int) -> str:
    """The baseline's answer to one case: a pure function of the seed and the case id."""
    rng = random.Random(f"{seed}\0{case.case_id}")
    task = get_task(case.task)
    if task.capability == "classification":
        options = case.options or task.dataset(case.dataset_id).labels
        return rng.choice(list(options))
    if task.capability == "detection":
        return rng.choice(SECTORS)
    if task.capability == "regression":
        spec = task.dataset(case.dataset_id)
        assert spec.value_range is not None  # guaranteed by TaskSpec validation
        low, high = spec.value_range
        value = rng.uniform(low, high)
        return str(round(value)) if spec.integer_value else f"{value:.2f}"
    return ""


class RandomAdapter(Identified):
    def __init__(self, seed: int) -> None:
        super().__init__(ModelInfo(adapter="random", model="random-guess", revision=f"seed-{seed}"), 64)
        self._seed = seed

    async def generate(self, requests: Sequence[ModelRequest]) -> list[Completion]:
        return [Completion(case_id=r.case.case_id, key=r.key, text=guess(r.case, self._seed)) for r in requests]

    async def aclose(self) -> None:
        return None


def create(model: str, options: AdapterOptions) -> RandomAdapter:
    return RandomAdapter(seed=options.seed)
