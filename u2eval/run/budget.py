"""``--max-cost USD``: a run never lets what it has spent plus what is in flight pass its budget.

Before a request is sent, its cost at most is reserved: its input tokens estimated from above (the text at
half again its estimate, the image by the provider's rule) and its whole answer budget (``max_tokens``), at the
price it will be billed (live, or the batch price). Once answered, the reservation is replaced by what the
provider reports it used. A request whose reservation would pass the budget is not sent, nor is any after it:
each becomes a ``budget`` infra error (stored, never scored, asked by the next run), so the run stops cleanly with
everything answered so far kept; run it again with a higher budget to go on. What the folder's stored answers
cost already counts as spent: the budget is the run's whole cost, across resumes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from u2eval.models.estimates import ModelCosting, estimate_request
from u2eval.models.pricing import Price
from u2eval.models.protocol import ModelRequest
from u2eval.records import Completion, ImagePart

TEXT_MARGIN = 1.5  # the text estimate (characters per token) times this bounds it from above


def request_ceiling(
    costing: ModelCosting, price: Price, max_tokens: int, batch: bool = False
) -> Callable[[ModelRequest], float]:
    """The most one request can cost: its input estimated from above and its whole answer budget."""

    def ceiling(request: ModelRequest) -> float:
        prompt = request.prompt
        image = next((p for p in prompt.parts if isinstance(p, ImagePart)), None)
        size = None
        if image is not None:
            own = image.sha256 in ("", request.case.image_sha256)
            width, height = (request.case.image_width, request.case.image_height) if own else (0, 0)
            size = (width, height, len(image.data), image.media_type) if width and height else None
        text = "\n".join(filter(None, [prompt.system, prompt.text]))
        estimate = estimate_request(costing, text, size, max_tokens, max_tokens)
        tokens_in = estimate.text_tokens * TEXT_MARGIN + estimate.image_tokens
        if image is not None and size is None:  # an image of unknown size (a control's): a generous bound
            tokens_in += 2 * max_tokens
        return price.cost(tokens_in, max_tokens, batch=batch and price.has_batch)

    return ceiling


@dataclass
class CostBudget:
    max_usd: float
    price: Price
    ceiling: Callable[[ModelRequest], float]
    spent_usd: float = 0.0  # what the folder's stored answers cost before this run
    reserved_usd: float = 0.0
    stopped: bool = False
    not_asked: int = 0
    _held: dict[int, float] = field(default_factory=dict)

    def reserve(self, batch: Sequence[ModelRequest]) -> bool:
        """Reserve the batch's ceiling; False (and no request after it) when that would pass the budget."""
        need = sum(self.ceiling(r) for r in batch)
        if self.stopped or self.spent_usd + self.reserved_usd + need > self.max_usd:
            self.stopped = True
            self.not_asked += len(batch)
            return False
        self.reserved_usd += need
        self._held[id(batch)] = need
        return True

    def settle(self, batch: Sequence[ModelRequest], completions: Iterable[Completion]) -> None:
        """Replace the batch's reservation by what its answers used (an answer reporting no usage keeps its
        share of the reservation as spent: nothing is assumed free)."""
        held = self._held.pop(id(batch), 0.0)
        self.reserved_usd -= held
        answered = list(completions)
        share = held / len(batch) if batch else 0.0
        for completion in answered:
            if completion.is_infra_error:
                continue  # a failed call is not billed
            used = answer_cost(completion, self.price)
            self.spent_usd += share if used is None else used

    def refusal(self, batch: Sequence[ModelRequest]) -> list[Completion]:
        """The batch's requests as not asked: the budget stops the run before them."""
        message = (
            f"not asked: the --max-cost budget of ${self.max_usd:,.2f} would be passed "
            f"(${self.spent_usd:,.4f} spent, ${max(0.0, self.reserved_usd):,.4f} in flight)"
        )
        return [Completion(case_id=r.case.case_id, key=r.key, error="budget", error_message=message) for r in batch]


def stored_cost(answers: Iterable[Completion], price: Price) -> float:
    """What answers already stored cost, by the usage each reports (batch answers at the batch price)."""
    return sum(answer_cost(c, price) or 0.0 for c in answers if not c.is_infra_error)


def answer_cost(completion: Completion, price: Price) -> float | None:
    """One answer's cost by the usage it reports, at the price of the way it came (batch or live)."""
    if completion.usage is None:
        return None
    return price.usage_cost(completion.usage, batch=completion.route == "batch" and price.has_batch)
