"""``u2eval run ... --dry-run``: what a run would send and cost, per task and in total, with nothing sent.

Each case of the run is read and its prompt rendered exactly as the run would (its control too); its request is
estimated by ``u2eval.models.estimates`` (text by characters per token, the image by the provider's rule at the size
the preset's image budget lets through, the answer by the task's kind: a report's reference length for RG and CG,
a few tokens for an option, a sector or a number). The cost is the model's list price (the preset's ``price:``, or
``--price``), live and through the provider's batch API. No key is needed and nothing is written.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

from u2eval.benchmark.prompts import render
from u2eval.benchmark.tasks import TaskSpec, select_tasks
from u2eval.data.controls import ControlImages, with_image
from u2eval.data.reader import iter_cases
from u2eval.data.sources import resolve_source
from u2eval.errors import DataError
from u2eval.models.estimates import CHARS_PER_TOKEN, ModelCosting, RequestEstimate, estimate_request, text_tokens
from u2eval.models.image_tokens import rule_for
from u2eval.models.images import ImageBudget
from u2eval.models.pricing import Price
from u2eval.models.registry import merge_args, resolve_model
from u2eval.records import Case, CaseMeta, ImagePart, Prompt
from u2eval.run import options as run_options
from u2eval.run.case_stream import kept
from u2eval.run.options import RunOptions
from u2eval.scoring.cost_report import usd

log = logging.getLogger(__name__)


@dataclass
class TaskEstimate:
    """The estimate of one task's requests (mutable while the cases are added)."""

    task: str
    cases: int = 0
    requests: int = 0  # distinct prompts: identical ones (the same text and image) are asked once
    images: int = 0
    pixels: int = 0
    resized: int = 0
    text_tokens: int = 0
    image_tokens: int = 0
    output_tokens: int = 0
    output_max: int = 0

    @property
    def input_tokens(self) -> int:
        return self.text_tokens + self.image_tokens

    def add_case(self) -> None:
        self.cases += 1

    def add(self, request: RequestEstimate) -> None:
        self.requests += 1
        self.images += request.images
        self.pixels += request.pixels
        self.resized += request.resized
        self.text_tokens += request.text_tokens
        self.image_tokens += request.image_tokens
        self.output_tokens += request.output_tokens
        self.output_max += request.output_max

    def cost(self, price: Price | None, batch: bool = False, at_most: bool = False) -> float | None:
        if price is None or (batch and not price.has_batch):
            return None
        return price.cost(self.input_tokens, self.output_max if at_most else self.output_tokens, batch=batch)


@dataclass
class RunEstimate:
    model: str
    rule: str
    price: Price | None
    max_tokens: int
    tasks: dict[str, TaskEstimate] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)

    @property
    def total(self) -> TaskEstimate:
        total = TaskEstimate("total")
        for t in self.tasks.values():
            for name in ("cases", "requests", "images", "pixels", "resized", "text_tokens", "image_tokens",
                         "output_tokens", "output_max"):  # fmt: skip
                setattr(total, name, getattr(total, name) + getattr(t, name))
        return total


def expected_output(case: Case | CaseMeta, task: TaskSpec) -> int:
    """Tokens a good answer takes: a report as long as its reference, else a short option, sector or number."""
    if task.capability == "generation":
        return text_tokens(case.truth or "") or 60
    if task.capability == "classification":
        longest = max((len(o) for o in case.options), default=12)
        return math.ceil(longest / 4) + 2
    return 4


def costing_of(options: RunOptions) -> tuple[ModelCosting, Price | None, int, str]:
    """The model's image rule and budget, its price (``--price`` over the preset's), its answer budget and name."""
    resolved = resolve_model(options.model)
    preset = resolved.preset
    extra = merge_args(preset.extra if preset else {}, options.model_args)
    budget = ImageBudget.from_extra(extra)
    detail = str(extra.get("image_detail", "high"))
    rule = rule_for(resolved.adapter, resolved.model, preset.image_tokens if preset else None)
    price = options.price or (preset.price if preset else None)
    generation = run_options.generation(options, preset.generation if preset else None)
    costing = ModelCosting(rule=rule, model=resolved.model, budget=budget, detail=detail)
    return costing, price, generation.max_tokens, f"{resolved.adapter}/{resolved.model}"


def _requests(options: RunOptions, tasks: tuple[TaskSpec, ...], unreadable: list[str]) -> Iterator[tuple[Case, Prompt]]:
    source = resolve_source(options.data, revision=options.revision, tasks=tasks)
    by_key = {t.key: t for t in tasks}
    controls = ControlImages(options.control, source, tasks, options.seed) if options.control else None

    def skipped(error: DataError) -> None:
        unreadable.append(str(error))

    for case in iter_cases(source, tasks, on_error=skipped, limit=options.limit):
        if not kept(options, case):
            continue
        try:
            prompt = render(case, by_key[case.task], options.prompt)
        except DataError as exc:
            skipped(exc)
            continue
        own = next((p for p in prompt.parts if isinstance(p, ImagePart)), None)
        if controls is not None and own is not None:
            prompt = with_image(prompt, controls.image(case, own))
        yield case, prompt


def estimate_run(options: RunOptions) -> RunEstimate:
    """The run's requests estimated, case by case, without a model call or a file written. Cases whose prompts
    are identical (the same text and image) are one request, as a run asks them once."""
    tasks = select_tasks(options.tasks)
    costing, price, max_tokens, model = costing_of(options)
    estimate = RunEstimate(model=model, rule=costing.rule, price=price, max_tokens=max_tokens)
    by_key = {t.key: t for t in tasks}
    seen: set[str] = set()
    for case, prompt in _requests(options, tasks, estimate.unreadable):
        row = estimate.tasks.setdefault(case.task, TaskEstimate(case.task))
        row.add_case()
        fingerprint = prompt.fingerprint()  # the store key's part that differs between a run's requests
        if fingerprint in seen:
            continue
        seen.add(fingerprint)
        image = next((p for p in prompt.parts if isinstance(p, ImagePart)), None)
        size = None
        if image is not None:
            own = image.sha256 == case.image_sha256 or not image.sha256
            width, height = (case.image_width, case.image_height) if own else _size(image)
            size = (width, height, len(image.data), image.media_type)
        text = "\n".join(filter(None, [prompt.system, prompt.text]))
        request = estimate_request(costing, text, size, expected_output(case, by_key[case.task]), max_tokens)
        row.add(request)
    return estimate


def _size(image: ImagePart) -> tuple[int, int]:
    """The pixel size of an image a control sends (another case's, or the grey one), read from its header."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(image.data)) as opened:
        return opened.size


ESTIMATE_HEADER = [
    "task", "cases", "requests", "images", "pixels sent", "resized", "input tokens (text + image)",
    "output tokens (expected / at most)", "cost live (expected / at most)", "cost batch (expected)",
]  # fmt: skip


def estimate_rows(estimate: RunEstimate) -> list[list[str]]:
    """The estimate's table: a row per task, then the total."""
    rows = []
    for t in [*estimate.tasks.values(), estimate.total]:
        rows.append(
            [
                t.task.upper() if t.task != "total" else "total",
                f"{t.cases:,}",
                f"{t.requests:,}",
                f"{t.images:,}",
                f"{t.pixels / 1e6:,.1f} MP",
                f"{t.resized:,}",
                f"{t.input_tokens:,} ({t.text_tokens:,} + {t.image_tokens:,})",
                f"{t.output_tokens:,} / {t.output_max:,}",
                f"{usd(t.cost(estimate.price))} / {usd(t.cost(estimate.price, at_most=True))}",
                usd(t.cost(estimate.price, batch=True)),
            ]
        )
    return rows


def estimate_notes(estimate: RunEstimate) -> list[str]:
    """What the figures rest on, said under the table."""
    price = estimate.price
    if price is None:
        priced = "no price is known for this model: give --price in=USD,out=USD (per million tokens) for a cost"
    else:
        batch = f"; batch ${price.batch_input:g} / ${price.batch_output:g}" if price.has_batch else "; no batch price"
        when = f", as of {price.as_of}" if price.as_of else ""
        priced = (
            f"prices ${price.input:g} / ${price.output:g} per million tokens in / out{batch}{when} ({price.source})"
        )
    lines = [
        f"An estimate for {estimate.model}: nothing was sent. Text at {CHARS_PER_TOKEN:g} characters a token; images "
        f"by the {estimate.rule} rule at the size sent; answers as long as the task's (a report as its reference), "
        f"at most {estimate.max_tokens:,} tokens each.",
        priced + ".",
    ]
    if estimate.unreadable:
        lines.append(f"{len(estimate.unreadable)} row(s) or file(s) could not be read and are not counted.")
    return lines
