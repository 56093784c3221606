"""Deterministic fake models for leaderboard and ablation tests: they know the truth and answer it with a
chosen probability, so scores, intervals and paired differences have something to show."""

from __future__ import annotations

import random
from collections.abc import Sequence

from model_adapters.random import guess
from u2eval.benchmark.tasks import get_task
from u2eval.data.truth import location_truth, measurement_truth
from u2eval.models.protocol import ModelRequest
from u2eval.records import Case, Completion, ModelInfo
from u2eval.scoring.judging import truth_cell


def true_answer(case: Case) -> str:
    """What a perfect model would answer, in the form the strict parsers read."""
    task = get_task(case.task)
    cell = truth_cell(case.meta(), task.truth_column)
    if task.capability == "detection":
        return location_truth(cell) or "not visible"
    if task.capability == "regression":
        value = measurement_truth(cell, task.dataset(case.dataset_id))
        return "null" if value is None else str(value)
    return (cell or "").strip()


class Oracle:
    """Right with probability ``skill`` per (case, prompt), otherwise the random baseline's guess (for text:
    each word of the reference kept with probability ``skill``). With ``anatomy_skill`` set, a prompt that
    does not name the case's anatomy is answered with that lower skill instead."""

    def __init__(self, skill: float = 0.6, seed: int = 0, anatomy_skill: float | None = None) -> None:
        self.skill, self.seed, self.anatomy_skill = skill, seed, anatomy_skill

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(adapter="oracle", model=f"oracle-{self.skill}", revision=f"seed-{self.seed}")

    @property
    def max_batch_size(self) -> int:
        return 64

    def answer(self, request: ModelRequest) -> str:
        case = request.case
        rng = random.Random(f"{self.seed}/{case.case_id}")  # the same draw under every prompt: a paired design
        skill = self.skill
        if self.anatomy_skill is not None and case.anatomy.lower() not in request.prompt.text.lower():
            skill = self.anatomy_skill
        if get_task(case.task).capability == "generation":
            words = [w for w in true_answer(case).split() if rng.random() < skill]
            return " ".join(words) or "no finding"
        return true_answer(case) if rng.random() < skill else guess(case, self.seed)

    async def generate(self, requests: Sequence[ModelRequest]) -> list[Completion]:
        return [Completion(case_id=r.case.case_id, key=r.key, text=self.answer(r)) for r in requests]

    async def aclose(self) -> None:
        return None
