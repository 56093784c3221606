"""One request's estimated tokens before it is sent: its text by a characters-per-token rule, its image by the
provider's rule (``u2eval.models.image_tokens``) at the size the preset's image budget lets through, and its
answer by what the task's answers are like. Offline and deterministic: the same request, the same estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from u2eval.models.image_tokens import image_tokens
from u2eval.models.images import ImageBudget

CHARS_PER_TOKEN = 4.0  # English prose in the GPT tokenizers, the providers' own rule of thumb
MESSAGE_OVERHEAD = 7  # the tokens a chat template adds around one user message (role markers, separators)


@dataclass(frozen=True)
class ModelCosting:
    """What the estimate needs of a model: its image-token rule and model id, and its image budget."""

    rule: str
    model: str
    budget: ImageBudget | None = None
    detail: str = "high"


@dataclass(frozen=True)
class RequestEstimate:
    text_tokens: int
    image_tokens: int
    images: int
    pixels: int  # as sent, after the budget
    resized: bool
    output_tokens: int  # expected
    output_max: int  # the answer's budget (max_tokens)

    @property
    def input_tokens(self) -> int:
        return self.text_tokens + self.image_tokens


def text_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN) + MESSAGE_OVERHEAD if text else 0


def sent_size(width: int, height: int, size: int, media_type: str, budget: ImageBudget | None) -> tuple[int, int]:
    """The pixels an image goes out with: as it is, or the size the budget resizes it to."""
    if budget is None or budget.fits(width, height, size, media_type):
        return width, height
    return budget.target_size(width, height)


def estimate_request(
    costing: ModelCosting,
    text: str,
    image: tuple[int, int, int, str] | None,
    output_tokens: int,
    max_tokens: int,
) -> RequestEstimate:
    """``image``: (width, height, bytes, media type) as read, or None for a request without one."""
    if image is None:
        return RequestEstimate(text_tokens(text), 0, 0, 0, False, min(output_tokens, max_tokens), max_tokens)
    width, height, size, media_type = image
    sent = sent_size(width, height, size, media_type, costing.budget)
    tokens = image_tokens(costing.rule, costing.model, *sent, costing.detail)
    return RequestEstimate(
        text_tokens=text_tokens(text),
        image_tokens=tokens,
        images=1,
        pixels=sent[0] * sent[1],
        resized=sent != (width, height),
        output_tokens=min(output_tokens, max_tokens),
        output_max=max_tokens,
    )
