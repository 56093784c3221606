"""What a run cost, from its folder alone: each answer's reported usage at the run's list prices (a batch answer
at the batch price), beside the estimate ``--dry-run`` makes of the same request (from the prompt texts and image
sizes the folder records), per task and in total; and, counted apart, what the active judge's calls cost."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from u2eval.benchmark.tasks import get_task, task_keys
from u2eval.models.estimates import ModelCosting, estimate_request
from u2eval.models.pricing import Price
from u2eval.records import Completion
from u2eval.run.budget import answer_cost
from u2eval.run.estimate import expected_output
from u2eval.run.folder import RunFolder
from u2eval.run.records import Manifest, RunCase
from u2eval.run.sent_prompts import read_texts
from u2eval.run.store import ResponseStore
from u2eval.scoring.cost_records import CostSummary, TaskCost


@dataclass(frozen=True)
class RunCosting:
    """What a run's cost is reckoned with: the list price and the image-token rule of its model."""

    price: Price
    rule: str
    model: str


@dataclass
class _Sums:
    answers: int = 0
    batch: int = 0
    reporting: int = 0
    tokens_in: int = 0
    cached: int = 0
    tokens_out: int = 0
    reasoning: int = 0
    usd: float = 0.0
    estimated_usd: float = 0.0
    estimated_in: int = 0
    estimated_out: int = 0
    estimated: int = 0  # answers with an estimate (their prompt recorded)

    def record(self, task: str, priced: bool) -> TaskCost:
        off = (self.estimated_usd - self.usd) / self.usd if self.usd and self.estimated == self.reporting else None
        return TaskCost(
            task=task,
            answers=self.answers,
            batch_answers=self.batch,
            reporting=self.reporting,
            input_tokens=self.tokens_in,
            cached_input_tokens=self.cached,
            output_tokens=self.tokens_out,
            reasoning_tokens=self.reasoning,
            cost_usd=round(self.usd, 6) if priced else None,
            estimated_usd=round(self.estimated_usd, 6) if priced and self.estimated else None,
            estimated_input_tokens=self.estimated_in,
            estimated_output_tokens=self.estimated_out,
            estimate_off=round(off, 4) if off is not None else None,
        )


def recorded_costing(manifest: Manifest | None) -> RunCosting | None:
    """The prices and image rule a run's manifest records (None: no price was known)."""
    if manifest is None or manifest.price is None or not manifest.image_rule:
        return None
    return RunCosting(manifest.price, manifest.image_rule, manifest.model.model)


def _estimate(
    case: RunCase, completion: Completion, texts: dict[str, str], costing: RunCosting
) -> tuple[int, int] | None:
    """The estimate of the request as the folder recorded it: its texts, its image at the size sent."""
    if case.prompt is None:
        return None
    parts = case.prompt.parts
    text = "\n\n".join(texts.get(p.sha256, "") for p in parts if p.part != "image")
    image = None
    if any(p.part == "image" for p in parts):
        sent = completion.image_sent
        width, height = (
            (sent.width, sent.height) if sent is not None else (case.case.image_width, case.case.image_height)
        )
        if width and height:
            image = (width, height, 0, "image/png")
    request = estimate_request(
        ModelCosting(rule=costing.rule, model=costing.model),
        text,
        image,
        expected_output(case.case, get_task(case.case.task)),
        10**9,
    )
    return request.input_tokens, request.output_tokens


def run_cost(folder: RunFolder, costing: RunCosting, store: ResponseStore | None = None) -> CostSummary:
    """The cost of every answer the folder holds for its cases (infra errors cost nothing and are not counted)."""
    texts = read_texts(folder.path)
    sums: dict[str, _Sums] = {}
    total = _Sums()
    for case, completion in folder.iter_answers(store):
        if completion.is_infra_error:
            continue
        for s in (sums.setdefault(case.case.task, _Sums()), total):
            _add(s, case, completion, texts, costing)
    order = [k for k in task_keys() if k in sums]
    identity = folder.active_judge()
    judge_usd, calls = judge_cost(folder, identity.name, identity.price) if identity is not None else (None, 0)
    return CostSummary(
        price=costing.price.model_dump(mode="json"),
        image_rule=costing.rule,
        tasks={k: sums[k].record(k, True) for k in order},
        total=total.record("total", True),
        judge_usd=judge_usd,
        judge_calls=calls,
    )


def _add(s: _Sums, case: RunCase, completion: Completion, texts: dict[str, str], costing: RunCosting) -> None:
    s.answers += 1
    batch = completion.route == "batch"
    s.batch += batch
    usage = completion.usage
    if usage is None or usage.input_tokens is None:
        return
    s.reporting += 1
    s.tokens_in += usage.input_tokens or 0
    s.cached += usage.cached_input_tokens or 0
    s.tokens_out += usage.output_tokens or 0
    s.reasoning += usage.reasoning_tokens or 0
    s.usd += answer_cost(completion, costing.price) or 0.0
    estimate = _estimate(case, completion, texts, costing)
    if estimate is not None:
        s.estimated += 1
        s.estimated_in += estimate[0]
        s.estimated_out += estimate[1]
        s.estimated_usd += costing.price.cost(*estimate, batch=batch and costing.price.has_batch)


def judge_cost(
    folder: RunFolder, name: str, price: Mapping[str, float | str | None] | None
) -> tuple[float | None, int]:
    """What a judge's stored calls cost at its recorded price (None without one), and how many there were."""
    answers: Sequence[Completion] = list(ResponseStore(folder.judge_path(name), repair=False).answers().values())
    if price is None:
        return None, len(answers)
    judge_price = Price.model_validate(price)
    return round(sum(answer_cost(c, judge_price) or 0.0 for c in answers), 6), len(answers)
