"""What a run cost, as summary.json's ``cost`` holds it: per task and in total, the tokens the answers reported,
their cost at the run's list prices (live and batch answers each at their own), and the estimate ``--dry-run``
would have made of the same answers beside it. Computed by ``u2eval.run.costs``; numbers only here."""

from __future__ import annotations

from u2eval.records import DiskRecord


class TaskCost(DiskRecord):
    task: str
    answers: int  # answers received (not infra errors)
    batch_answers: int  # of them, through the provider's batch API
    reporting: int  # answers that reported their usage
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: float | None  # of the answers reporting usage; None without a price
    estimated_usd: float | None  # the estimate of the same answers (None: their prompts were not recorded)
    estimated_input_tokens: int
    estimated_output_tokens: int
    estimate_off: float | None  # (estimate - actual) / actual: how far the estimate was off


class CostSummary(DiskRecord):
    price: dict[str, float | str | None]  # USD per million tokens, with as_of and source
    image_rule: str
    tasks: dict[str, TaskCost]
    total: TaskCost
    judge_usd: float | None = None  # what the active judge's calls cost (counted apart, never in the run's)
    judge_calls: int = 0
