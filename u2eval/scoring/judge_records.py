"""The records a judge pass leaves in a run folder (``judges/<name>/``): who judged (:class:`JudgeIdentity`) and
what the judge read in each answer it was sent (:class:`JudgeReading`), including, for a report or caption, the
findings it listed and matched (:class:`ClinicalComparison`). Written by ``u2eval.judges``, read by the scoring
pass (the ``judged`` mode and the clinical score) and the case view, through ``u2eval.run.folder``.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from u2eval.records import DiskRecord, GenerationConfig, Value

JudgeKind = Literal["extraction", "clinical"]
# read: the judge named one valid reading; no_answer: it found none in the answer; unreadable: its own reply
# was not a reading (kept as the judge's result, not retried); failed: the judge call failed (an infra error:
# the next `u2eval judge` asks again).
ReadingStatus = Literal["read", "no_answer", "unreadable", "failed"]
Difference = Literal["location", "category", "measurement", "appearance"]


class JudgeIdentity(DiskRecord):
    """Everything that could make a judge read an answer differently: another of these is another judge."""

    name: str  # the judge's folder under judges/: the model's name and a hash of all of this
    adapter: str
    model: str
    revision: str | None = None  # the weights revision (--revision), else what the adapter knows of its weights
    endpoint: str | None = None  # the server it was reached at (--base-url), when not the provider's own
    retires: str | None = None  # when its provider retires it (ISO date or month), from the preset: not identity
    generation: GenerationConfig
    templates: dict[str, str]  # kind -> sha256 of the judge prompt template
    model_args: dict[str, object] = {}
    price: dict[str, float | str | None] | None = None  # its list prices when read (the preset's): not identity


class Finding(DiskRecord):
    """One finding of a report or caption as the judge lists it."""

    structure: str  # organ or structure, e.g. "thyroid nodule", "gallbladder"
    location: str | None = None  # e.g. "right lobe, lower pole"
    size_mm: float | None = None  # the largest dimension given, in millimetres
    appearance: str | None = None  # echogenicity and morphology, e.g. "hypoechoic, irregular margin"
    category: str | None = None  # a grading system's category, e.g. "TI-RADS 4", "BI-RADS 3", "LUS 2"
    present: bool = True  # False: the text says it is absent ("no gallstones")


class FindingPair(DiskRecord):
    """A reference finding and the answer's finding the judge matched to it, with what differs between them."""

    reference: int  # index into ClinicalComparison.reference
    answer: int  # index into ClinicalComparison.answer
    differences: list[Difference] = []


class ClinicalComparison(DiskRecord):
    """The judge's structured comparison of an answer with its reference (what the clinical score counts)."""

    reference: list[Finding]
    answer: list[Finding]
    pairs: list[FindingPair]


class JudgeReading(DiskRecord):
    """What the judge made of one case's answer (one line of ``judges/<name>/readings.jsonl``)."""

    case_id: str
    kind: JudgeKind
    key: str  # the judge request's store key (``judges/<name>/responses.jsonl``)
    answer_sha256: str  # the answer it read (a reading of an answer since replaced is not used)
    status: ReadingStatus
    value: Value = None  # extraction, read: the option, the sector or the number the judge read
    comparison: ClinicalComparison | None = None  # clinical, read
    reply: str | None = None  # the judge's own words, as it answered
    detail: str | None = None  # unreadable / failed: why


def answer_sha256(answer: str | None) -> str:
    """What a reading is tied to: the answer text it was made from."""
    return hashlib.sha256((answer or "").encode("utf-8")).hexdigest()
