"""The records of a run folder's own files: its manifest (what produced the numbers), each case of its case list,
and what each case's request held (``prompts.jsonl`` keeps each text once). Read and written by
``u2eval.run.folder``; the records every stage shares are ``u2eval.records``.
"""

from __future__ import annotations

from typing import Literal

from u2eval.models.pricing import Price
from u2eval.records import CaseMeta, DiskRecord, GenerationConfig, ModelInfo


class ControlRecord(DiskRecord):
    """A control run (``u2eval run --control``, ``u2eval ablate --controls``): what each case was sent in place of
    its own image (``u2eval.data.controls``). The scores are still against each case's own truth."""

    name: str  # no-image | text-only | other-image
    sends: str  # the same in words
    seed: int | None = None  # other-image: the seed that chose each case's partner
    not_controlled: list[str] = []  # case ids sent their own image anyway: their dataset has no other image


class Manifest(DiskRecord):
    """Provenance of a run: enough to say exactly what produced its numbers."""

    u2eval_version: str
    git_sha: str | None
    git_dirty: bool | None
    dataset: dict[str, str | None]
    case_ids_sha256: str
    n_cases: int
    tasks: dict[str, str]
    templates: dict[str, str]
    prompt_source: str
    prompt_variant: str
    model: ModelInfo
    generation: GenerationConfig
    seed: int
    limit: int | None
    scoring_modes: list[str]
    started_at: str
    finished_at: str | None = None
    timings: dict[str, float] = {}
    dispatch: dict[str, int] = {}
    data_errors: list[str] = []
    grounded: bool = False  # grounded scoring is part of the run (grounded.json): `u2eval score` redoes it
    box_convention: str | None = None  # how answers write boxes (u2eval.grounded.boxes), so re-scoring reads them alike
    quirks: dict[str, bool] = {}  # reference quirks switched by hand (--quirk NAME=off), redone by every re-scoring
    control: ControlRecord | None = None  # a control run: the image was not the case's own (None: it was)
    # What its cost is reckoned with (u2eval.run.costs): the model's list prices and image-token rule, when known;
    # and what it cost by the answers' reported usage, beside the estimate of the same requests.
    price: Price | None = None
    image_rule: str | None = None
    cost_usd: float | None = None
    estimated_usd: float | None = None


class SentPart(DiskRecord):
    """One piece of what was sent: a text section by the sha256 of its text (``prompts.jsonl`` holds each text
    once), or the image by the sha256 of its bytes as read (a resize is recorded with the answer)."""

    part: str  # role | instruction | format | dataset | image
    sha256: str


class SentPrompt(DiskRecord):
    """Exactly what a case's request held: the template identity, then its parts in the order sent."""

    template: str
    template_sha256: str
    parts: list[SentPart]


class RunCase(DiskRecord):
    """One line of a run's ``cases.jsonl``: the case without its image, the store key of its request, and what
    the request held (``prompt``; runs made before it was recorded have none)."""

    key: str
    case: CaseMeta
    prompt: SentPrompt | None = None


BatchEventKind = Literal["submitting", "submitted", "collected", "abandoned"]


class BatchEvent(DiskRecord):
    """One line of a run's ``batches.jsonl`` (``u2eval run --batch``, ``u2eval.run.batch``), appended and fsynced
    before the step it announces goes on: ``submitting`` (our label and the chunk's request keys, before the
    provider is asked), ``submitted`` (the provider's batch id), ``collected`` (its answers are in the store),
    ``abandoned`` (a submission that never became a batch: its keys are free to be asked again)."""

    event: BatchEventKind
    label: str  # our own name for the submission, given to the provider so a killed run finds its batch
    at: str  # UTC time of the line
    keys: list[str] = []  # submitting: the store keys of the chunk's requests, in the order sent
    bytes: int | None = None  # submitting: the payload's size (its items, a newline after each)
    batch_id: str | None = None  # submitted, collected: the provider's id of the batch
    state: str | None = None  # collected: how the batch ended (ended, expired, failed, cancelled)
    answers: int | None = None  # collected: answers stored (not infra errors)
    errors: int | None = None  # collected: infra errors stored (asked again by the next run)
    detail: str | None = None  # the provider's words (a failed batch), or why a submission was abandoned
