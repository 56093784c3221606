"""``u2eval judge-check --model JUDGE``: a judge measured on a small hand-made gold set before it is trusted.

The gold set (``gold/extraction.jsonl``, ``gold/reports.jsonl``) was written by us: answers whose intended reading
is known (a committed option in other words, a hedge between two, a refusal, a number among others) and report
pairs whose clinical grading is known (the same report, a missed or invented finding, a flipped negation, another
side, another grade, a size outside the tolerance, a different echo pattern). The judge reads each through the
same prompts, dispatcher and store as a judge pass (``--out`` keeps its store, so a second check asks nothing),
and is scored: extraction accuracy (its reading is the known one), and for reports the share whose matched,
significant and minor counts are all the known ones, and the mean absolute error of the clinical score.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import JsonValue

from u2eval.benchmark.tasks import get_task
from u2eval.errors import ConfigError
from u2eval.judges.judge_pass import case_of
from u2eval.judges.prompts import KINDS, judge_prompt
from u2eval.judges.replies import read_reply
from u2eval.models.protocol import ModelAdapter, ModelRequest
from u2eval.records import CaseMeta, Completion, DiskRecord, GenerationConfig
from u2eval.run.dispatch import Dispatcher
from u2eval.run.pacing import DispatchOptions
from u2eval.run.store import ResponseStore, request_key
from u2eval.scoring.clinical import MINOR_WEIGHT, MalformedComparison, grade
from u2eval.scoring.judge_records import JudgeKind
from u2eval.scoring.judging import label_key

GOLD = Path(__file__).resolve().parent / "gold"
NO_ANSWER = "NO ANSWER"


class GoldItem(DiskRecord):
    id: str
    task: str
    dataset_id: str
    answer: str
    anatomy: str | None = None
    reference: str | None = None  # reports: the reference text
    expected: JsonValue  # extraction: the option, sector or number, or "NO ANSWER"; reports: the counts


class GoldResult(DiskRecord):
    id: str
    kind: JudgeKind
    expected: str
    got: str
    right: bool


class GoldReport(DiskRecord):
    judge: str
    extraction_accuracy: float | None
    extraction_n: int
    reports_exact: float | None  # share of report pairs with every count as known
    reports_score_mae: float | None  # mean |clinical score - the known score|
    reports_n: int
    failed: int  # judge calls that failed: not counted above, asked again by the next check
    results: list[GoldResult]


def load_gold(kind: JudgeKind) -> list[GoldItem]:
    path = GOLD / ("extraction.jsonl" if kind == "extraction" else "reports.jsonl")
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                items.append(GoldItem.model_validate_json(line))
            except ValueError as exc:
                raise ConfigError(f"{path}:{number}: not a gold item ({exc})") from exc
    return items


def gold_case(item: GoldItem) -> CaseMeta:
    """The case a gold item stands for: its task and dataset (the options and quantity come from there)."""
    task = get_task(item.task)
    ds = task.dataset(item.dataset_id)
    columns: dict[str, str | None] = {task.truth_column: item.reference} if item.reference is not None else {}
    return CaseMeta(
        case_id=f"gold/{item.id}",
        task=task.key,
        dataset_id=ds.id,
        dataset_name=ds.source,
        source_file="gold",
        row_index=0,
        anatomy=item.anatomy or ds.anatomy,
        scenario="",
        truth=item.reference,
        options=list(ds.labels),
        image_sha256="",
        columns=columns,
    )


def known_score(counts: dict[str, int]) -> float:
    matched, significant, minor = counts["matched"], counts["significant"], counts["minor"]
    if matched + significant + minor == 0:
        return 1.0
    return matched / (matched + significant + MINOR_WEIGHT * minor)


def _same_reading(expected: JsonValue, status: str, value: object) -> bool:
    if expected == NO_ANSWER:
        return status == "no_answer"
    if status != "read":
        return False
    if isinstance(expected, int | float) and isinstance(value, int | float):
        return math.isclose(float(expected), float(value), rel_tol=1e-9, abs_tol=1e-9)
    return isinstance(value, str) and label_key(value) == label_key(str(expected))


@dataclass(frozen=True)
class _Asked:
    kind: JudgeKind
    item: GoldItem
    meta: CaseMeta
    request: ModelRequest


def _requests(adapter: ModelAdapter, generation: GenerationConfig) -> list[_Asked]:
    asked = []
    for kind in KINDS:
        for item in load_gold(kind):
            meta = gold_case(item)
            prompt = judge_prompt(kind, meta, item.answer)
            request = ModelRequest(key=request_key(adapter.info, generation, prompt), case=case_of(meta), prompt=prompt)
            asked.append(_Asked(kind, item, meta, request))
    return asked


def check_judge(
    adapter: ModelAdapter, generation: GenerationConfig, dispatch: DispatchOptions, store_folder: Path, judge: str
) -> GoldReport:
    """Ask the judge about every gold item its store lacks, then score every reading against the known one."""
    store_folder.mkdir(parents=True, exist_ok=True)
    asked = _requests(adapter, generation)
    with ResponseStore(store_folder) as store:
        pending = [a.request for a in asked if not store.answered(a.request.key)]

        async def go() -> None:
            try:
                await Dispatcher(adapter, dispatch).run(pending, store.append)
            finally:
                await adapter.aclose()

        asyncio.run(go())
        completions = {a.request.key: store.get(a.request.key) for a in asked}
    return _score(judge, asked, completions)


def _score(judge: str, asked: Sequence[_Asked], completions: dict[str, Completion | None]) -> GoldReport:
    results: list[GoldResult] = []
    errors: list[float] = []
    failed = 0
    for a in asked:
        completion = completions[a.request.key]
        if completion is None or completion.is_infra_error:
            failed += 1
            continue
        reading = read_reply(a.kind, a.meta, a.item.answer, completion)
        if a.kind == "extraction":
            got = str(reading.value) if reading.status == "read" else reading.status.replace("_", " ").upper()
            right = _same_reading(a.item.expected, reading.status, reading.value)
            results.append(GoldResult(id=a.item.id, kind=a.kind, expected=str(a.item.expected), got=got, right=right))
            continue
        expected = a.item.expected if isinstance(a.item.expected, dict) else {}
        counts = {k: int(v) for k, v in expected.items() if isinstance(v, int | float)}
        try:
            graded = grade(reading.comparison) if reading.comparison is not None else None
        except MalformedComparison:
            graded = None
        got_counts = (
            {"matched": graded.matched, "significant": graded.significant, "minor": graded.minor} if graded else {}
        )
        if graded is not None:
            errors.append(abs(graded.score - known_score(counts)))
        right = got_counts == counts
        results.append(
            GoldResult(
                id=a.item.id,
                kind=a.kind,
                expected=json.dumps(counts, sort_keys=True),
                got=json.dumps(got_counts, sort_keys=True) if graded else f"{reading.status}: {reading.detail}",
                right=right,
            )
        )
    extraction = [r for r in results if r.kind == "extraction"]
    reports = [r for r in results if r.kind == "clinical"]
    return GoldReport(
        judge=judge,
        extraction_accuracy=sum(r.right for r in extraction) / len(extraction) if extraction else None,
        extraction_n=len(extraction),
        reports_exact=sum(r.right for r in reports) / len(reports) if reports else None,
        reports_score_mae=sum(errors) / len(errors) if errors else None,
        reports_n=len(reports),
        failed=failed,
        results=results,
    )


def render_gold(report: GoldReport) -> str:
    def fmt(value: float | None) -> str:
        return "–" if value is None else f"{value:.3f}"

    right = {kind: sum(r.right for r in report.results if r.kind == kind) for kind in KINDS}
    lines = [
        f"# Judge check: {report.judge} on u2eval's hand-made gold set",
        "",
        f"- answer extraction: {right['extraction']} of {report.extraction_n} readings as known (accuracy "
        f"{fmt(report.extraction_accuracy)})",
        f"- reports and captions: {right['clinical']} of {report.reports_n} pairs with every count as known (share "
        f"{fmt(report.reports_exact)}); clinical score mean absolute error {fmt(report.reports_score_mae)}",
    ]
    if report.failed:
        lines.append(f"- {report.failed} judge call(s) failed: not counted; run the check again to ask them")
    wrong = [r for r in report.results if not r.right]
    if wrong:
        lines += ["", "| item | kind | known | the judge's |", "|---|---|---|---|"]
        lines += [f"| {r.id} | {r.kind} | {r.expected} | {r.got} |" for r in wrong]
    return "\n".join(lines) + "\n"
