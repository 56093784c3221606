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
from collections.abc import Mapping, Sequence
from pathlib import Path

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
from u2eval.run.records import Manifest, RunCase, SentPrompt
from u2eval.run.scoring_pass import judge_answers
from u2eval.run.sent_prompts import read_texts
from u2eval.scoring.metrics import signed_error
from u2eval.view.images import ImageExport
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
    # A mask is drawn by its extent here; its pixels stay with the answer (grounded.json scores them).
    extents = [box for box in (mask_extent(m) for m in regions.masks) if box is not None]
    return {"boxes": _boxes(regions.boxes), "points": _points(regions.points), "masks": _boxes(extents)}


def _answer_regions(case: CaseMeta, completion: Completion, convention: BoxConvention | None) -> JsonDict | None:
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
            masks = completion.regions.masks if completion.regions is not None else []
            if (drawn := mask_data_url(masks, ANSWER_RGB)) is not None:
                regions["mask"] = drawn
    if grounded is not None:
        record["grounded"] = grounded.model_dump(
            mode="json", exclude_none=True, exclude={"case_id", "task", "dataset_id"}
        )
    if image is not None:
        record["image"] = dict(image)
    return record


Judged = tuple[Manifest | None, list[RunCase], list[tuple[CaseMeta, Completion]], list[Judgement]]


def _judged(folder: Path) -> Judged:
    """A run folder read and judged as its manifest says (its quirk switches)."""
    run = RunFolder(folder)
    manifest = run.manifest()
    answers = run.answers()
    return manifest, run.cases(), answers, judge_answers(answers, manifest.quirks if manifest is not None else {})


def view_data(folder: Path, images: ImageExport | None = None, judged: Judged | None = None) -> JsonDict:
    """Everything the page of one run shows, from its folder (and its images, when they were exported)."""
    run = RunFolder(folder)
    manifest, run_cases, answers, judgements = judged if judged is not None else _judged(folder)
    switches = manifest.quirks if manifest is not None else {}
    sent = {rc.case.case_id: rc.prompt for rc in run_cases}
    grounded = _grounded(folder)
    truths = read_truths(folder)  # the masks a grounded scoring read from the dataset, kept in the folder
    convention = run.grounded_options().convention
    exported = images.images if images is not None else {}
    records = []
    for (case, completion), judgement in zip(answers, judgements, strict=True):
        image = exported.get(case.case_id)
        shown = (
            None if image is None else {"file": image.image, "thumb": image.thumb, "size": [image.width, image.height]}
        )
        truth = truths.get(case.case_id)
        mask = truth.mask if truth is not None and truth.image_sha256 == case.image_sha256 else None
        prompt, regions = sent.get(case.case_id), grounded.get(case.case_id)
        records.append(case_record(case, completion, judgement, prompt, regions, convention, shown, mask))
    texts = read_texts(folder)
    used = {sha for r in records for _, sha in r["prompt"]}  # type: ignore[attr-defined]
    model = manifest.model if manifest is not None else None
    return {
        "folder": str(folder),
        "model": f"{model.adapter}/{model.model}" if model is not None else folder.name,
        "prompt_variant": manifest.prompt_variant if manifest is not None else None,
        "quirks": dict(switches),
        "task_order": list(task_keys()),
        "texts": {sha: texts[sha] for sha in sorted(used) if sha in texts},
        "images_missing": dict(images.missing) if images is not None else {},
        "cases": records,
    }


def data_json(data: Mapping[str, object]) -> str:
    """The data as JSON that can sit inside a <script> element: '<', '>' and '&' escaped, so no text of a case
    (an answer with '</script>' in it) can end the element or start markup."""
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"), sort_keys=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


PAIR_LABELS = ("right under both", "right under A only", "right under B only", "wrong under both")


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


def paired_view_data(folder_a: Path, folder_b: Path, images: ImageExport | None = None) -> JsonDict:
    """Run A's page data with, on each case, run B's answer and verdicts and the McNemar cell it falls in."""
    judged_a = _judged(folder_a)
    data = view_data(folder_a, images, judged_a)
    manifest_b, _, answers_b, judgements_b = _judged(folder_b)
    judged_b = {j.case_id: (c, j) for (_, c), j in zip(answers_b, judgements_b, strict=True)}
    by_id = {j.case_id: j for j in judged_a[3]}
    for record in data["cases"]:  # type: ignore[attr-defined]
        a = by_id[record["id"]]
        found = judged_b.get(record["id"])
        if found is None:
            record["pair"] = "only in A"
            continue
        completion, b = found
        record["pair"] = pair_label(a.strict, b.strict, a.outcome, b.outcome)
        record["b"] = {
            "answer": completion.text,
            "outcome": b.outcome,
            "strict": verdict_label(b, b.strict),
            "reference": verdict_label(b, b.reference),
            "prediction": b.strict.prediction,
        }
    model_b = manifest_b.model if manifest_b is not None else None
    data["run_b"] = {
        "folder": str(folder_b),
        "model": f"{model_b.adapter}/{model_b.model}" if model_b else folder_b.name,
    }
    return data
