"""The records a case travels through: Case -> Prompt -> Completion -> Judgement, and the run manifest.

Records that go to disk are pydantic models with ``extra="forbid"`` so a typo or a stale field is an error,
not a silent default. In-memory records are frozen dataclasses. Every record carries ``case_id``: stages
are joined by key, never by position.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    JsonValue,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_serializer,
)

# A task's key: the name of its file in tasks/ (the task files are the one list of tasks: u2eval.benchmark.tasks).
TaskKey = str

ErrorKind = Literal[
    "rate_limit",
    "server",
    "timeout",
    "bad_request",
    "auth",
    "malformed",
    "connection",
    "missing",
    "refused",
    "empty",
    "recorded_failure",  # replayed answers: the file holds a failed call's message instead of an answer
    "budget",  # not asked: the run's --max-cost budget was reached (asked by the next run with a higher one)
]
# Failures of the infrastructure, never the model's answer: excluded from scores, retried by the next run.
INFRA_ERROR_KINDS: frozenset[str] = frozenset(
    {
        "rate_limit",
        "server",
        "timeout",
        "bad_request",
        "auth",
        "malformed",
        "connection",
        "missing",
        "recorded_failure",
        "budget",
    }
)

Outcome = Literal["ok", "unparseable", "refused", "empty", "infra_error"]
ScoringMode = Literal["reference", "strict", "judged"]
# The modes every run is scored in; ``judged`` (strict plus a judge's readings) only once a judge has read it.
SCORING_MODES: tuple[ScoringMode, ...] = ("strict", "reference")


class DiskRecord(BaseModel):
    """Base for every record written to disk: frozen, and unknown fields are an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def without_unset(data: dict[str, object], names: tuple[str, ...]) -> dict[str, object]:
    """A record's dump without the fields ``names`` where they are None: fields added later are written only when
    set, so files written before them read (and re-write) byte for byte the same."""
    for name in names:
        if data.get(name) is None:
            data.pop(name, None)
    return data


def short_hash(data: bytes, length: int = 10) -> str:
    """A short, stable hex digest used inside ids."""
    return hashlib.sha256(data).hexdigest()[:length]


@dataclass(frozen=True)
class Case:
    """One U2-Bench row, with its ground truth still in the dataset's own encoding.

    ``columns`` keeps the raw text cells the task reads (never the images): ground truth is parsed by the
    scorer, per scoring mode, because the reference and strict modes read it differently.
    """

    case_id: str
    task: TaskKey
    dataset_id: str
    dataset_name: str
    source_file: str
    row_index: int
    anatomy: str
    scenario: str
    truth: str | None
    options: tuple[str, ...]
    image: bytes
    image_format: str
    columns: Mapping[str, str | None] = field(default_factory=lambda: MappingProxyType({}))
    image_digest: str = ""  # sha256 hex of ``image``, filled by the loader so it is computed once
    image_width: int = 0  # pixels; 0 when unknown (cases built by hand)
    image_height: int = 0
    image_b64: str = field(default="", repr=False, compare=False)  # ``image`` as strict base64, when the row held it

    @property
    def image_sha256(self) -> str:
        return self.image_digest or hashlib.sha256(self.image).hexdigest()

    @property
    def dataset_prompt(self) -> str | None:
        return self.columns.get("prompt")

    def meta(self) -> CaseMeta:
        """The case without its image: what a run folder keeps so it can be re-scored offline."""
        return CaseMeta(
            case_id=self.case_id,
            task=self.task,
            dataset_id=self.dataset_id,
            dataset_name=self.dataset_name,
            source_file=self.source_file,
            row_index=self.row_index,
            anatomy=self.anatomy,
            scenario=self.scenario,
            truth=self.truth,
            options=list(self.options),
            image_sha256=self.image_sha256,
            image_width=self.image_width or None,
            image_height=self.image_height or None,
            columns=dict(self.columns),
        )


class CaseMeta(DiskRecord):
    """A Case minus its image bytes (``cases.jsonl`` in a run folder)."""

    case_id: str
    task: TaskKey
    dataset_id: str
    dataset_name: str
    source_file: str
    row_index: int
    anatomy: str
    scenario: str
    truth: str | None
    options: list[str]
    image_sha256: str
    image_width: int | None = None  # pixels: grounded answers in absolute coordinates are read against it
    image_height: int | None = None
    columns: dict[str, str | None]


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class ImagePart:
    data: bytes
    media_type: str  # "image/png", "image/jpeg", ...
    sha256: str = ""  # hex digest of ``data`` when already known, so hashing happens once per image
    # ``data`` as standard base64 when the source already held exactly that (U2-Bench cells do): APIs want
    # base64, and encoding ~200 KB again costs ~0.6 ms a request.
    b64: str = field(default="", repr=False, compare=False)

    def base64_text(self) -> str:
        """``data`` as standard base64 (RFC 4648, padded, no line breaks)."""
        return self.b64 or base64.b64encode(self.data).decode("ascii")


ContentPart = TextPart | ImagePart


@dataclass(frozen=True)
class Prompt:
    """A rendered, provider-neutral prompt: optional system text plus ordered user parts."""

    case_id: str
    system: str | None
    parts: tuple[ContentPart, ...]
    template: str
    template_sha256: str
    # The named pieces the text part was made of, in order (role, instruction, format; or the dataset's own
    # prompt): the text sent is them joined by a blank line.
    sections: tuple[tuple[str, str], ...] = ()

    @property
    def text(self) -> str:
        """All text parts joined, for logs, hashes and text-only adapters."""
        return "\n".join(p.text for p in self.parts if isinstance(p, TextPart))

    def fingerprint(self) -> str:
        """sha256 over everything a model sees: system text, every part in order, image bytes."""
        digest = hashlib.sha256()
        digest.update(b"system\0" + (self.system or "").encode())
        for part in self.parts:
            if isinstance(part, TextPart):
                digest.update(b"\0text\0" + part.text.encode())
            else:
                digest.update(b"\0image\0" + part.media_type.encode() + b"\0")
                digest.update((part.sha256 or hashlib.sha256(part.data).hexdigest()).encode())
        return digest.hexdigest()


class GenerationConfig(DiskRecord):
    """Sampling settings sent with every request; part of the store key."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 1024
    seed: int | None = None


class ModelInfo(DiskRecord):
    """Who answered: goes into the manifest and the store key."""

    adapter: str
    model: str
    revision: str | None = None


class Usage(DiskRecord):
    """Tokens as the provider reported them for one answer. ``cached_input_tokens`` are part of ``input_tokens``
    (served from the provider's prompt cache, billed lower); ``reasoning_tokens`` part of ``output_tokens``."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    reasoning_tokens: int | None = None

    @model_serializer(mode="wrap")
    def _without_unreported(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        return without_unset(handler(self), ("cached_input_tokens", "reasoning_tokens"))


class ImageSent(DiskRecord):
    """What the model actually received, after any budgeted resize."""

    width: int
    height: int
    bytes: int
    media_type: str
    resized: bool = False


# Regions are typed here, not checked: a model's region may be anything (NaN, outside the image, a mask whose
# runs do not add up), and a stored answer must always load, its text scored as it was. Whether a region can
# be placed is decided by the grounded scorer (``u2eval.grounded.regions.region_problem``), per case.
# Non-finite numbers are written as NaN / Infinity, which read back as they were (``null`` would not).
_REGION_CONFIG = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")


class Box(DiskRecord):
    """An axis-aligned box in normalised image coordinates: 0-1, origin top left, x right, y down."""

    model_config = _REGION_CONFIG

    x0: float
    y0: float
    x1: float
    y1: float
    label: str | None = None
    score: float | None = None


class Point(DiskRecord):
    """A point in normalised image coordinates (0-1, origin top left)."""

    model_config = _REGION_CONFIG

    x: float
    y: float
    label: str | None = None


class Mask(DiskRecord):
    """A binary mask as run lengths over its row-major pixels, the first run counting zeros (may be 0).

    Stored this way so a 1-megapixel mask is a few hundred integers, never a giant list of pixels;
    ``u2eval.grounded.regions`` converts to and from arrays.
    """

    width: int
    height: int
    counts: list[int]
    label: str | None = None


class Regions(DiskRecord):
    """Where a model says something is: boxes, masks and points, however it expressed them.

    ``source`` is ``native`` when the model returned them as data (a segmentation head) and ``text`` when
    they were read from its answer under ``convention`` (a preset's box convention, never guessed).
    """

    boxes: list[Box] = []
    masks: list[Mask] = []
    points: list[Point] = []
    source: Literal["native", "text"] = "native"
    convention: str | None = None
    notes: list[str] = []  # what was left out and why (e.g. a Gemini mask without the image size)
    unreadable: str | None = None  # set instead of the regions when the stored ones did not even load

    @property
    def empty(self) -> bool:
        return not (self.boxes or self.masks or self.points)


class OfficialAnswer(DiskRecord):
    """What the official pipeline reads for this row from replayed prediction files, joined by position as its
    scorers join them (``u2eval.scoring.official_files``). The reference mode scores this instead of the completion's
    own answer, which strict reads (joined by what identifies the row)."""

    answer: JsonValue = None  # the record's `response`, as the file holds it (a JSON number stays a number)
    record: str | None = None  # file:line of the record paired with this row
    stage_a: bool = True  # stage (a) rewrote the answer (the record's question gave it the options)
    first_space_dropped: bool = False  # the official removes the answer's first space (its LLaVA-1.5-13B-HF case)
    missing: str | None = None  # no record is paired with this row, and why
    skip: str | None = None  # the official scorer skips this dataset's whole file, and why


class Completion(DiskRecord):
    """A model's answer to one case, or a classified failure. One line of ``responses.jsonl``."""

    case_id: str
    key: str
    text: str | None = None
    error: ErrorKind | None = None
    error_message: str | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    latency_s: float = 0.0
    attempts: int = 1
    image_sent: ImageSent | None = None
    regions: Regions | None = None  # what a grounded model returned besides its text (masks, boxes, points)
    official: OfficialAnswer | None = None  # replays only: what the official pipeline reads for this row
    route: Literal["batch"] | None = None  # how it came: through the provider's batch API (None: a live call)

    @model_serializer(mode="wrap")
    def _route_only_when_batch(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        return without_unset(handler(self), ("route",))  # a live answer's line: as before batches existed

    @field_validator("regions", mode="wrap")
    @classmethod
    def _regions_never_lose_the_answer(cls, value: object, handler: ValidatorFunctionWrapHandler) -> object:
        """Regions that do not load (a hand-edited or foreign line) leave the answer as it is: they become
        ``Regions(unreadable=why)``, which the grounded scorer calls ungroundable, and the text is scored."""
        try:
            return handler(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "regions"
            return Regions(unreadable=f"stored regions do not load ({where}: {first['msg']})")

    @property
    def is_infra_error(self) -> bool:
        return self.error is not None and self.error in INFRA_ERROR_KINDS


Value = str | float | None

# Why a case is left out of a mode's denominator (``Verdict.not_counted``): no case leaves a score unexplained.
NotCounted = Literal[
    "infra_error",  # the request failed: there is no answer to score
    "truth_missing",  # the truth cell is empty (27's null IMT: not measurable)
    "truth_unreadable",  # the truth cell is there but cannot be read
    "truth_not_an_option",  # the label is not among the row's options: no answer could be right
    "dropped_by_official",  # reference: the official scorer leaves this answer out of its denominator
    "dataset_skipped",  # reference: the official scorer skips this dataset's whole file
    "no_official_record",  # reference: the official kit's file has no record at this row
]


class Verdict(DiskRecord):
    """One scoring mode's view of a case: what it parsed, the truth it compared against, and whether the
    case counts in that mode's denominator; when it does not, why (``not_counted`` and a detail)."""

    prediction: Value
    truth: Value
    counted: bool
    correct: bool | None = None
    skips_dataset: bool = False  # reference only: the official pipeline could not read this answer (facts §10.6)
    not_counted: NotCounted | None = None
    not_counted_detail: str | None = None
    # reference only: judged from a replayed file's record as the official pipeline pairs it, which the official
    # scored whatever it held (a failure message included): counted even where strict sees an infra error
    from_official_file: bool = False
    # reference only: the quirk switches that, each turned off alone, change this verdict
    changed_by: list[str] = []
    # RG / CG: this case's own text metrics (BLEU-4 and ROUGE-L x 100, as the scorer computes them on one case)
    case_metrics: dict[str, float] = {}


class Judgement(DiskRecord):
    """The judged case: raw answer, parse outcome, and a verdict per scoring mode (``judgements.jsonl``)."""

    case_id: str
    task: TaskKey
    dataset_id: str
    anatomy: str
    answer: str | None
    outcome: Outcome
    strict: Verdict
    reference: Verdict
    error: ErrorKind | None = None  # the completion's error kind (an infra error's, or the model's refusal / empty)
    error_message: str | None = None  # and its words (what the provider or the replay source said)
    source: str | None = None  # where the case's row is: "task_folder/file.tsv:row"
    image_sha256: str | None = None  # the image's bytes, as read from that row
    usage: Usage | None = None  # the tokens the answer cost, as the provider reported them


def freeze_columns(columns: Mapping[str, str | None]) -> Mapping[str, str | None]:
    """An immutable view of a column mapping, for Case.columns."""
    return MappingProxyType(dict(columns))
