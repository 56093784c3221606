"""A judge's reply read as a :class:`~u2eval.scoring.judge_records.JudgeReading`.

Extraction: the reply's one line is read by the same strict parser as the model's answers (an option of the
case, one of the positions, a number), so a judge can only give a reading strict mode would accept; "NO ANSWER"
is the judge finding none; anything else is the judge's reply unreadable (kept, not retried: asking again gets
the same reply at temperature 0). Clinical: the reply's JSON object, validated as a ClinicalComparison and
checked gradeable. A failed judge call is ``failed``, asked again by the next judge pass.
"""

from __future__ import annotations

import json
import re

from pydantic import ValidationError

from u2eval.benchmark.tasks import get_task
from u2eval.judges.prompts import choices
from u2eval.records import CaseMeta, Completion
from u2eval.scoring.clinical import MalformedComparison, grade
from u2eval.scoring.judge_records import ClinicalComparison, JudgeKind, JudgeReading, answer_sha256
from u2eval.scoring.strict import Parsed, parse_location, parse_number, parse_option

_NO_ANSWER = re.compile(r"^\W*no[\s_-]+answer\W*$", re.IGNORECASE)
_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def _extraction(reply: str, case: CaseMeta) -> Parsed:
    capability = get_task(case.task).capability
    if capability == "classification":
        return parse_option(reply, choices(case))
    if capability == "detection":
        return parse_location(reply)
    ds = get_task(case.task).dataset(case.dataset_id)
    return parse_number(reply, nullable=ds.nullable)


def _comparison(reply: str) -> ClinicalComparison:
    """The JSON object in the reply (a fenced block or bare), as a gradeable comparison; ValueError if none."""
    found = _JSON_OBJECT.search(reply)
    if found is None:
        raise ValueError("no JSON object in the reply")
    try:
        comparison = ClinicalComparison.model_validate(json.loads(found.group(0)))
    except json.JSONDecodeError as exc:
        raise ValueError(f"the reply's JSON does not parse ({exc.msg} at {exc.pos})") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValueError(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from exc
    try:
        grade(comparison)
    except MalformedComparison as exc:
        raise ValueError(str(exc)) from exc
    return comparison


def read_reply(kind: JudgeKind, case: CaseMeta, answer: str | None, completion: Completion) -> JudgeReading:
    """What the judge's stored completion says about ``answer``."""
    base = {"case_id": case.case_id, "kind": kind, "key": completion.key, "answer_sha256": answer_sha256(answer)}
    if completion.error is not None:
        status = "failed" if completion.is_infra_error else "unreadable"  # a judge's refusal or empty reply
        why = f"{completion.error}: {completion.error_message or ''}".strip(": ")
        return JudgeReading(**base, status=status, reply=completion.text, detail=why)
    reply = (completion.text or "").strip()
    if kind == "clinical":
        try:
            return JudgeReading(**base, status="read", comparison=_comparison(reply), reply=reply)
        except ValueError as exc:
            return JudgeReading(**base, status="unreadable", reply=reply, detail=str(exc))
    if _NO_ANSWER.match(reply):
        return JudgeReading(**base, status="no_answer", reply=reply)
    parsed = _extraction(reply, case)
    if parsed.ok:
        return JudgeReading(**base, status="read", value=parsed.value, reply=reply)
    return JudgeReading(**base, status="unreadable", reply=reply, detail=f"not one reading ({parsed.outcome})")
