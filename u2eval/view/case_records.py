"""What the case browser shows of each case, as plain JSON-able data: the case, the prompt as sent (texts kept once,
by sha256), the raw answer, what each scoring mode read from it and its verdict (and why it is not counted, and
which quirks made the modes differ), the truth regions and the answer's regions for the detection tasks, the CVE
range and normalised error, the text metrics, the request's error, attempts, latency and tokens.

Everything here is data: the page escapes it (``u2eval.view.page``), since a run folder may come from anyone and
a model may answer with markup.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from pydantic import ValidationError

from u2eval.benchmark.tasks import get_task, task_keys
from u2eval.grounded.boxes import BoxConvention
from u2eval.grounded.placement import truth_boxes, truth_points
from u2eval.grounded.regions import mask_extent
from u2eval.grounded.scorer import GROUNDED_CASES_FILE, answer_regions
from u2eval.grounded.stats import GroundedCase
from u2eval.grounded.truth import read_truths
from u2eval.records import Box, CaseMeta, Completion, Judgement, Mask, Point, Regions, Verdict
from u2eval.run.folder import RunFolder
from u2eval.run.records import Manifest, SentPrompt
from u2eval.run.scoring_pass import judge_answers
from u2eval.run.sent_prompts import read_texts
from u2eval.scoring.judging import judge
from u2eval.scoring.metrics import signed_error
from u2eval.scoring.switches import reading_quirks
from u2eval.view.images import ImageExport
from u2eval.view.judge_records import ActiveJudge, active_judge, judge_part
from u2eval.view.masks import ANSWER_RGB, TRUTH_RGB, mask_data_url

log = logging.getLogger(__name__)

JsonDict = dict[str, object]


def verdict_label(judgement: Judgement, verdict: Verdict) -> str:
    """How the list shows a verdict: right, wrong, scored (a number or a text), or not counted and why."""
    if judgement.outcome == "infra_error":
        return "infra error"
    if not verdict.counted:
        return f"not counted: {verdict.not_counted or 'unknown'}"
    if verdict.correct is None:
        return "scored"
    return "right" if verdict.correct else "wrong"


def _verdict(judgement: Judgement, verdict: Verdict, value_range: tuple[float, float] | None) -> JsonDict:
    out: JsonDict = {
        "label": verdict_label(judgement, verdict),
        "prediction": verdict.prediction,
        "truth": verdict.truth,
        "counted": verdict.counted,
    }
    if verdict.not_counted_detail:
        out["detail"] = verdict.not_counted_detail
    if verdict.changed_by:
        out["changed_by"] = list(verdict.changed_by)
    if verdict.case_metrics:
        out["metrics"] = dict(verdict.case_metrics)
    numbers = isinstance(verdict.prediction, float | int) and isinstance(verdict.truth, float | int)
    if value_range is not None and verdict.counted and numbers:
        error = signed_error(float(verdict.prediction), float(verdict.truth), value_range)  # type: ignore[arg-type]
        out["normalised_error"] = round(error, 6)
    return out


def _boxes(boxes: Sequence[Box]) -> list[list[object]]:
    return [[b.x0, b.y0, b.x1, b.y1, b.label] for b in boxes]


def _points(points: Sequence[Point]) -> list[list[object]]:
    return [[p.x, p.y, p.label] for p in points]


def _regions(regions: Regions | None) -> JsonDict | None:
    if regions is None or not (regions.boxes or regions.points or regions.masks):
        return None
    # A mask's extent is outlined, and its pixels laid over the image (a 1-bit PNG).
    extents = [box for box in (mask_extent(m) for m in regions.masks) if box is not None]
    drawn: JsonDict = {"boxes": _boxes(regions.boxes), "points": _points(regions.points), "masks": _boxes(extents)}
    if (mask := mask_data_url(regions.masks, ANSWER_RGB)) is not None:
        drawn["mask"] = mask
    return drawn


def _answer_regions(case: CaseMeta, completion: Completion, convention: BoxConvention | None) -> JsonDict | None:
    """The regions the answer gave, as the grounded scorer reads them: its own, or those its text writes."""
    try:
        _, regions, _ = answer_regions(case, completion, convention)
    except Exception as exc:  # noqa: BLE001 - an odd answer costs the page its drawing, never the page
        log.warning("%s: its regions cannot be drawn (%s: %s)", case.case_id, type(exc).__name__, exc)
        return None
    return _regions(regions)


def _grounded(folder: Path) -> dict[str, GroundedCase]:
    path = folder / GROUNDED_CASES_FILE
    if not path.is_file():
        return {}
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = GroundedCase.model_validate_json(line)
        except ValidationError:
            continue  # a grounded file of another version: the page shows no grounded figures for the case
        found[record.case_id] = record
    return found


def _prompt(sent: SentPrompt | None) -> list[list[str]]:
    return [] if sent is None else [[p.part, p.sha256] for p in sent.parts if p.part != "image"]


def case_record(
    case: CaseMeta,
    completion: Completion,
    judgement: Judgement,
    sent: SentPrompt | None,
    grounded: GroundedCase | None,
    convention: BoxConvention | None,
    image: Mapping[str, object] | None,
    truth_mask: Mask | None = None,
    judge_view: ActiveJudge | None = None,
) -> JsonDict:
    task = get_task(case.task)
    value_range = task.dataset(case.dataset_id).value_range if task.capability == "regression" else None
    record: JsonDict = {
        "id": case.case_id,
        "task": case.task,
        "dataset": case.dataset_id,
        "anatomy": case.anatomy,
        "scenario": case.scenario,
        "source": f"{case.source_file}:{case.row_index}",
        "outcome": judgement.outcome,
        "answer": completion.text,
        "prompt": _prompt(sent),
        "strict": _verdict(judgement, judgement.strict, value_range),
        "reference": _verdict(judgement, judgement.reference, value_range),
        "attempts": completion.attempts,
        "latency_s": round(completion.latency_s, 3),
    }
    if judge_view is not None:
        judged, extra = judge_part(case, judgement, judge_view)
        record["judged"] = _verdict(judgement, judged, value_range)
        record |= extra
    if value_range is not None:
        record["range"] = list(value_range)
    if completion.error is not None:
        record["error"] = {"kind": completion.error, "message": completion.error_message}
    if completion.usage is not None:
        record["tokens"] = [completion.usage.input_tokens, completion.usage.output_tokens]
    if completion.image_sent is not None and completion.image_sent.resized:
        record["sent_size"] = [completion.image_sent.width, completion.image_sent.height]
    if task.capability == "detection":
        record["truth_regions"] = {
            "boxes": _boxes(truth_boxes(case.columns.get("gt_bbox"))),
            "points": _points(truth_points(case.columns.get("keypoints"))),
        }
        if truth_mask is not None and (drawn := mask_data_url([truth_mask], TRUTH_RGB)) is not None:
            record["truth_regions"]["mask"] = drawn  # type: ignore[index]
    if task.capability == "detection" or completion.regions is not None:
        regions = _answer_regions(case, completion, convention)
        if regions is not None:
            record["answer_regions"] = regions
    if grounded is not None:
        record["grounded"] = grounded.model_dump(
            mode="json", exclude_none=True, exclude={"case_id", "task", "dataset_id"}
        )
    if image is not None:
        record["image"] = dict(image)
    return record


def _label(manifest: Manifest | None, folder: Path) -> str:
    return f"{manifest.model.adapter}/{manifest.model.model}" if manifest is not None else folder.name


def page_header(folder: Path, images: ImageExport | None, folder_b: Path | None = None) -> JsonDict:
    """What the page says of the run (and of run B), besides its cases."""
    manifest = RunFolder(folder).manifest()
    header: JsonDict = {
        "folder": str(folder),
        "model": _label(manifest, folder),
        "prompt_variant": manifest.prompt_variant if manifest is not None else None,
        "quirks": dict(manifest.quirks) if manifest is not None else {},
        "task_order": list(task_keys()),
        "images_missing": dict(images.missing) if images is not None else {},
    }
    if manifest is not None and manifest.control is not None:
        header["control"] = {"name": manifest.control.name, "sends": manifest.control.sends}
    identity = RunFolder(folder).active_judge()
    if identity is not None:
        header["judge"] = f"{identity.name} ({identity.adapter}/{identity.model})"
    if folder_b is not None:
        header["run_b"] = {"folder": str(folder_b), "model": _label(RunFolder(folder_b).manifest(), folder_b)}
    return header


def _answers_of(folder: Path) -> dict[str, tuple[Completion, Judgement]]:
    """Run B's answers and judgements by case id (judged with its own quirk switches)."""
    run = RunFolder(folder)
    manifest = run.manifest()
    answers = run.answers()
    judged = judge_answers(answers, manifest.quirks if manifest is not None else {})
    return {j.case_id: (completion, j) for (_, completion), j in zip(answers, judged, strict=True)}


def _with_b(record: JsonDict, a: Judgement, found: tuple[Completion, Judgement] | None) -> None:
    if found is None:
        record["pair"] = "only in A"
        return
    completion, b = found
    record["pair"] = pair_label(a.strict, b.strict, a.outcome, b.outcome)
    record["b"] = {
        "answer": completion.text,
        "outcome": b.outcome,
        "strict": verdict_label(b, b.strict),
        "reference": verdict_label(b, b.reference),
        "prediction": b.strict.prediction,
    }


def iter_records(folder: Path, images: ImageExport | None = None, folder_b: Path | None = None) -> Iterator[JsonDict]:
    """Each case's record, judged and made one at a time (a page of any size is written as it is read); with
    ``folder_b``, beside run B's answer to it and the McNemar cell it falls in."""
    run = RunFolder(folder)
    manifest = run.manifest()
    quirks = reading_quirks(manifest.quirks if manifest is not None else {})
    grounded = _grounded(folder)
    truths = read_truths(folder)  # the masks a grounded scoring read from the dataset, kept in the folder
    convention = run.grounded_options().convention
    exported = images.images if images is not None else {}
    others = _answers_of(folder_b) if folder_b is not None else None
    judge_view = active_judge(folder)
    for run_case, completion in run.iter_answers():
        case = run_case.case
        judgement = judge(case, completion, get_task(case.task), quirks)
        image = exported.get(case.case_id)
        shown = (
            None if image is None else {"file": image.image, "thumb": image.thumb, "size": [image.width, image.height]}
        )
        truth = truths.get(case.case_id)
        mask = truth.mask if truth is not None and truth.image_sha256 == case.image_sha256 else None
        regions = grounded.get(case.case_id)
        record = case_record(case, completion, judgement, run_case.prompt, regions, convention, shown, mask, judge_view)
        if others is not None:
            _with_b(record, judgement, others.get(case.case_id))
        yield record


def _escaped(text: str) -> str:
    # '<', '>' and '&' as JSON escapes: no text of a case (an answer holding '</script>') can end the
    # <script> element the data sits in, or start markup.
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def write_data(out: TextIO, folder: Path, header: Mapping[str, object], records: Iterable[JsonDict]) -> int:
    """The page's data as JSON, written record by record (``cases``, then the prompt ``texts`` they use, each
    once); returns how many cases were written."""
    body = json.dumps(dict(header), ensure_ascii=True, separators=(",", ":"))
    out.write(_escaped(body[:-1]) + ',"cases":[')
    used: set[str] = set()
    count = 0
    for record in records:
        out.write(("," if count else "") + _escaped(json.dumps(record, ensure_ascii=True, separators=(",", ":"))))
        used.update(sha for _, sha in record["prompt"])  # type: ignore[attr-defined]
        count += 1
    texts = read_texts(folder)
    kept = {sha: texts[sha] for sha in sorted(used) if sha in texts}
    out.write('],"texts":' + _escaped(json.dumps(kept, ensure_ascii=True, separators=(",", ":"))) + "}")
    return count


def pair_label(a: Verdict, b: Verdict | None, a_outcome: str, b_outcome: str | None) -> str:
    """Which McNemar cell a case falls in (strict verdicts): paired when both runs answered and count it."""
    if b is None:
        return "only in A"
    answered = a_outcome != "infra_error" and b_outcome != "infra_error"
    if not (answered and a.counted and b.counted) or a.correct is None or b.correct is None:
        return "not paired"
    if a.correct and b.correct:
        return "right under both"
    if a.correct:
        return "right under A only"  # McNemar's b
    return "right under B only" if b.correct else "wrong under both"  # c, or neither
